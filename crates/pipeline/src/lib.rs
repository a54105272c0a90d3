//! From a prompt and settings to an image: prompts, seeds, schedulers and the denoising loop.

pub mod metadata;
pub mod prompt;
pub mod rng;
pub mod schedulers;
pub mod tokenizer;
