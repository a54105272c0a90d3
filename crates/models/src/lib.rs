//! Stable Diffusion's modules, one struct per diffusers module, on darkroom-gpu.

pub mod config;
