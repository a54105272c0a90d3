//! Weights delivery: model manifests, reading safetensors as a stream (header first, then
//! tensors as their bytes arrive), and the resumable, verified chunked download into a store
//! (IndexedDB in the browser, a cache folder natively).

#[cfg(feature = "browser")]
pub mod browser;
pub mod checkpoint;
pub mod embedding;
pub mod fetch;
pub mod lora;
pub mod manifest;
pub mod pth;
pub mod safetensors;
pub mod tensor_subset;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
/// Test helpers (a fault-injecting file server, safetensors builders), for this crate's and the
/// CLI's tests only: behind the `testing` feature, so no product build carries them.
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

pub use manifest::{FileEntry, Manifest, ManifestError, ModelKind};
pub use safetensors::{
    decode_f32, Dtype, Header, SafetensorsError, SafetensorsFile, SafetensorsStream, TensorInfo,
};
