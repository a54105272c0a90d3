//! Darkroom's GPU engine: the device, tensors, one wrapper per WGSL kernel in `shaders/`, and
//! CPU reference implementations of every op. It knows nothing about models.

pub mod device;
pub mod error;
pub mod ops;
pub mod pool;
pub mod profile;
pub mod quant;
pub mod reference;
pub mod selftest;
pub mod shaders;
pub mod tensor;
pub mod tolerance;
pub mod weight;

pub use device::{Capabilities, GemmTiles, Gpu, Requirements};
pub use error::GpuError;
pub use pool::PoolStats;
pub use profile::KernelTime;
pub use quant::{PackedWeight, WeightFormat};
pub use tensor::{DType, Tensor};
pub use tolerance::{compare, max_abs_diff, relative_rms_error, Comparison, Tolerance};
pub use weight::Weight;
pub use wgpu;
