//! Weights delivery: reading safetensors as a stream (header first, then tensors as their bytes
//! arrive), and later manifests, quantization, the blob store and resumable fetch.

pub mod safetensors;

pub use safetensors::{decode_f32, Dtype, Header, SafetensorsError, SafetensorsFile, TensorInfo};
