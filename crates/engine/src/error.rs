use darkroom_gpu::GpuError;
use darkroom_pipeline::PipelineError;

/// What went wrong, by kind. `Input` is the caller's to fix and names the recipe field when one
/// is at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("another job is still running: wait for it or cancel it")]
    Busy,
    #[error("cancelled")]
    Cancelled,
    #[error("{message}")]
    Input { field: Option<&'static str>, message: String },
    /// The model's files are missing, damaged or of an unsupported kind.
    #[error("{0}")]
    Model(String),
    /// No usable GPU, a missing feature or limit, or an error the GPU reported.
    #[error("{0}")]
    Gpu(String),
    /// Writing to or reading from the model store failed (a full disk, an exceeded quota).
    #[error("{0}")]
    Storage(String),
    /// The GPU device is gone (driver reset, the browser reclaiming it): the front end drops the
    /// device and every model on it, and the next job opens a new one.
    #[error("the GPU device was lost ({0}); running again opens it anew and reloads the model")]
    DeviceLost(String),
}

impl EngineError {
    pub fn input(message: impl Into<String>) -> EngineError {
        EngineError::Input { field: None, message: message.into() }
    }
}

impl From<GpuError> for EngineError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::DeviceLost(why) => EngineError::DeviceLost(why),
            e => EngineError::Gpu(e.to_string()),
        }
    }
}

impl From<PipelineError> for EngineError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Input(message) => EngineError::Input { field: None, message },
            PipelineError::Recipe(e) => EngineError::Input { field: Some(e.field), message: e.message },
            PipelineError::Cancelled => EngineError::Cancelled,
            PipelineError::Gpu(e) => e.into(),
            PipelineError::Model(darkroom_models::ModelError::Gpu(e)) => e.into(),
            other => EngineError::Model(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_errors_keep_their_kind_and_field() {
        let recipe = darkroom_pipeline::RecipeError { field: "steps", message: "steps must be …".into() };
        assert_eq!(
            EngineError::from(PipelineError::Recipe(recipe)),
            EngineError::Input { field: Some("steps"), message: "steps must be …".into() }
        );
        assert_eq!(EngineError::from(PipelineError::Cancelled), EngineError::Cancelled);
        assert!(matches!(EngineError::from(PipelineError::Files("no unet".into())), EngineError::Model(_)));
        let gpu = GpuError::Validation("out of memory".into());
        assert!(matches!(EngineError::from(PipelineError::Gpu(gpu)), EngineError::Gpu(_)));
        let lost = GpuError::DeviceLost("destroyed".into());
        assert_eq!(
            EngineError::from(PipelineError::Gpu(lost.clone())),
            EngineError::DeviceLost("destroyed".into())
        );
        let in_model = PipelineError::Model(darkroom_models::ModelError::Gpu(lost));
        assert_eq!(EngineError::from(in_model), EngineError::DeviceLost("destroyed".into()));
    }
}
