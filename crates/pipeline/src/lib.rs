//! From a prompt and settings to an image: prompts, seeds, schedulers and the denoising loop.

pub mod control;
pub mod depth;
pub mod draft;
pub mod dynamic;
pub mod generate;
pub mod grid;
pub mod host;
pub mod latent_preview;
pub mod metadata;
pub mod model;
pub mod preprocess;
pub mod preset;
pub mod prompt;
pub mod recipe;
pub mod request;
pub mod rng;
pub mod schedulers;
pub mod scorer;
pub mod scores;
pub mod stages;
pub mod text;
pub mod text_encoder;
pub mod tokenizer;
pub mod upscale;

pub use control::{Control, ControlNet, ControlUnit};
pub use dynamic::Dynamic;
pub use generate::{draft, finish, generate, preview, sample};
pub use model::{
    short_hash, AppliedLora, Folder, FolderQuantCache, ModelFiles, Precision, StableDiffusion, TextEncoders,
};
pub use preprocess::Preprocessor;
pub use recipe::{Hires, ImageRef, ModelInfo, Recipe, RecipeError, SdUpscale};
pub use request::{
    outpaint_canvas, Generated, Image, Progress, ProgressFn, Request, Stage, VaeTiling, OUTPAINT_OVERLAP,
};
pub use schedulers::Sampler;

/// Everything that can stop a generation. `Input` is the caller's to fix (bad size, flag,
/// image); `Files` a model folder's problem.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Input(String),
    #[error("model files: {0}")]
    Files(String),
    #[error(transparent)]
    Model(#[from] darkroom_models::ModelError),
    #[error(transparent)]
    Gpu(#[from] darkroom_gpu::GpuError),
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    #[error("cancelled")]
    Cancelled,
}
