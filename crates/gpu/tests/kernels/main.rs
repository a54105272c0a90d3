//! Every kernel and variant on a real wgpu device (Mesa lavapipe in CI, which has shader-f16)
//! against its CPU reference, on odd sizes.

mod attention;
mod common;
mod conv;
mod elementwise;
mod embedding;
mod layout;
mod matmul;
mod naive;
mod norm;
mod profile;
mod selftest;
