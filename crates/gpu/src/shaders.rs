//! The WGSL sources in the repository's `shaders/` folder, embedded at build time.
//! Every file in that folder must be listed here; a test checks it.

pub const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");

/// (file name, source) of every shader, for validation and the pipeline cache.
pub const ALL: &[(&str, &str)] = &[("matmul.wgsl", MATMUL)];
