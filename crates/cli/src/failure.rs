//! How a command fails: a message, and whether the user can fix it (exit code 2) or not (1).

use darkroom_engine::EngineError;
use darkroom_pipeline::PipelineError;

/// A failure and whether it is the user's to fix (exit code 2) or not (1).
pub struct Failure {
    pub message: String,
    pub usage: bool,
}

/// The flag that sets a recipe field.
fn flag(field: &str) -> String {
    match field {
        "cfg_scale" => "--cfg".into(),
        "negative_prompt" => "--negative".into(),
        "batch_size" => "--batch".into(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

impl From<EngineError> for Failure {
    /// The user's to fix (exit code 2): bad settings, files, models; not (1): the GPU, a cancel.
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Input { field: Some(field), message } => {
                Failure { message: format!("{}: {message}", flag(field)), usage: true }
            }
            EngineError::Input { field: None, message } | EngineError::Model(message) => {
                Failure { message, usage: true }
            }
            other => Failure { message: other.to_string(), usage: false },
        }
    }
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        EngineError::from(e).into()
    }
}

/// The user's to fix: exit code 2.
pub fn usage(message: String) -> Failure {
    Failure { message, usage: true }
}
