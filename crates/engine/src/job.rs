//! Running a recipe: its batch count as runs one after another (seeds continuing), each run's
//! progress reported with its place among the runs, and cancellation between steps.

use darkroom_gpu::Gpu;
use darkroom_models::taesd::TaesdDecoder;
use darkroom_pipeline::{Generated, PipelineError, Progress, Request, StableDiffusion};

use crate::EngineError;

/// One progress report of a job.
pub struct Event<'a, 'b> {
    /// Which run of the batch count (0-based), of how many.
    pub run: usize,
    pub runs: usize,
    pub progress: &'a Progress<'b>,
}

/// Makes every image of `request`'s recipe: `batch_count` runs of `batch_size` images. `on_event`
/// returns `false` to cancel (at the next step); what is done is lost then, as each run's images
/// arrive only at its end. A draft recipe's images are decoded by `taesd`, which it needs.
pub async fn generate(
    gpu: &Gpu,
    model: &StableDiffusion,
    taesd: Option<&TaesdDecoder>,
    request: &Request,
    on_event: &mut dyn FnMut(&Event) -> bool,
) -> Result<Vec<Generated>, EngineError> {
    let draft = match (request.recipe.draft, taesd) {
        (true, None) => {
            return Err(PipelineError::Input(
                "drafts are decoded by TAESD: download it (the `taesd` model) or leave drafts off".into(),
            )
            .into())
        }
        (true, taesd) => taesd,
        (false, _) => None,
    };
    let runs = request.recipe.batch_count.max(1);
    let mut images = Vec::new();
    for run in 0..runs {
        let this = Request { recipe: request.recipe.run(run), ..request.clone() };
        let mut progress = |p: &Progress| on_event(&Event { run, runs, progress: p });
        images.extend(match draft {
            Some(taesd) => darkroom_pipeline::draft(gpu, model, taesd, &this, &mut progress).await?,
            None => darkroom_pipeline::generate(gpu, model, &this, &mut progress).await?,
        });
    }
    Ok(images)
}
