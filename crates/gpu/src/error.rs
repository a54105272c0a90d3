use thiserror::Error;

/// Everything that can go wrong between asking for a GPU and reading a result back.
/// Messages are written for the person who has to act on them.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GpuError {
    #[error("no GPU adapter found ({reason}). In a browser, use a WebGPU-capable one (Chrome or Edge 113+, Safari 26+, Firefox 141+ on Windows); natively, install a Vulkan, Metal or DX12 driver (on Linux without a GPU: mesa-vulkan-drivers)")]
    NoAdapter { reason: String },

    #[error("the GPU adapter lacks the feature `{feature}`, which {needed_for}")]
    FeatureMissing { feature: &'static str, needed_for: &'static str },

    #[error("the GPU adapter's {limit} is {have}, but {need} is needed ({needed_for})")]
    LimitTooSmall { limit: &'static str, have: u64, need: u64, needed_for: &'static str },

    #[error("the GPU refused to open a device: {0}")]
    DeviceRequest(String),

    #[error("the GPU reported an error: {0}")]
    Validation(String),

    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("reading a result back from the GPU failed: {0}")]
    Readback(String),

    /// The device is gone (a driver reset, the browser reclaiming the GPU, `destroy`): nothing
    /// made on it can be used again; open a new one and load the model again.
    #[error("the GPU device was lost ({0}): it has to be opened again")]
    DeviceLost(String),
}
