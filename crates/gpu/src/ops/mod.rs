//! One Rust wrapper per WGSL kernel.

pub mod attention;
pub mod conv;
pub mod elementwise;
pub mod embedding;
pub mod image;
pub mod layout;
pub mod matmul;
pub mod naive;
pub mod norm;
pub mod region;

pub use attention::{attention, attention_rows};
pub use conv::{conv2d, conv2d_fused, Conv2d, Padding};
pub use elementwise::{add, cfg_combine, geglu, lincomb, mul, prelu, unary, Unary};
pub use embedding::{embed_tokens, timestep_embedding};
pub use image::{ColorMap, Rgba8Image};
pub use layout::{
    concat, pixel_shuffle, pixel_unshuffle, resize_bilinear, transpose, upsample2x, upsample_nearest,
};
pub use matmul::{linear, matmul};
pub use norm::{group_norm, layer_norm, Fused, GroupStats};
pub use region::{copy_region, Region};
