//! Stable Diffusion's modules, one struct per diffusers module, on darkroom-gpu.

pub mod aesthetic;
pub mod clip;
pub mod clip_vision;
pub mod config;
pub mod depth_anything;
pub mod held;
pub mod layers;
pub mod loader;
pub mod taesd;
pub mod tiles;
pub mod unet;
pub mod upscale;
pub mod vae;

pub use loader::{
    is_merged_key, LoraMerge, MemoryCache, ModelError, NoCache, QuantCache, QuantPolicy, StageStats, Stager,
    Vb, WeightStore,
};
