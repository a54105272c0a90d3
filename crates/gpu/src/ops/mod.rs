//! One Rust wrapper per WGSL kernel.

pub mod matmul;

pub use matmul::matmul;
