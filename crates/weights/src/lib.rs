//! Weights delivery: reading safetensors as a stream (header first, then tensors as their bytes
//! arrive), and later manifests, quantization, the blob store and resumable fetch.

pub mod safetensors;

pub use safetensors::{Dtype, Header, SafetensorsError, TensorInfo};
