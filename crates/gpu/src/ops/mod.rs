//! One Rust wrapper per WGSL kernel.

pub mod matmul;

pub use matmul::{linear, matmul};
