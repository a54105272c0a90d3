//! Running a recipe: its batch count as runs one after another (seeds continuing), each run's
//! progress reported with its place among the runs, and cancellation between steps.

use darkroom_gpu::Gpu;
use darkroom_models::taesd::TaesdDecoder;
use darkroom_models::upscale::Upscaler;
use darkroom_pipeline::{Generated, PipelineError, Progress, Request, StableDiffusion};

use crate::EngineError;

/// One progress report of a job.
pub struct Event<'a, 'b> {
    /// Which run of the batch count (0-based), of how many.
    pub run: usize,
    pub runs: usize,
    pub progress: &'a Progress<'b>,
}

/// The models a job may need beside the Stable Diffusion model: TAESD to decode drafts, and the
/// upscaler model a hires fix names.
#[derive(Default, Clone, Copy)]
pub struct Helpers<'a> {
    pub taesd: Option<&'a TaesdDecoder>,
    pub upscaler: Option<&'a Upscaler>,
}

/// Makes every image of `request`'s recipe: `batch_count` runs of `batch_size` images. `on_event`
/// returns `false` to cancel (at the next step); what is done is lost then, as each run's images
/// arrive only at its end. A draft recipe's images are decoded by `helpers.taesd`, which it
/// needs; a hires fix with an upscaler model upscales with `helpers.upscaler`.
pub async fn generate(
    gpu: &Gpu,
    model: &StableDiffusion,
    helpers: Helpers<'_>,
    request: &Request,
    on_event: &mut dyn FnMut(&Event) -> bool,
) -> Result<Vec<Generated>, EngineError> {
    let draft = match (request.recipe.draft, helpers.taesd) {
        (true, None) => {
            return Err(PipelineError::Input(
                "drafts are decoded by TAESD: download it (the `taesd` model) or leave drafts off".into(),
            )
            .into())
        }
        (true, taesd) => taesd,
        (false, _) => None,
    };
    if request.recipe.hires.is_some() && draft.is_none() {
        return hires(gpu, model, helpers.upscaler, request, on_event).await;
    }
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

/// A first pass's image for the hires fix: its pixels, or its latents ([1, C, h, w]) for a
/// latent upscale.
pub enum FirstPass {
    Image(darkroom_pipeline::Image),
    Latents(Vec<f32>, [usize; 4]),
}

/// A1111's hires fix: each run's images made at the recipe's size, then each one upscaled — a
/// Lanczos resize of its pixels, an upscaler model (then Lanczos to the exact size), or its
/// latents resized (`Latent`, `Latent (nearest)`) — and redrawn by an img2img pass at the larger
/// size with its own seed, recorded with the recipe that asked for it.
async fn hires(
    gpu: &Gpu,
    model: &StableDiffusion,
    upscaler: Option<&Upscaler>,
    request: &Request,
    on_event: &mut dyn FnMut(&Event) -> bool,
) -> Result<Vec<Generated>, EngineError> {
    let recipe = &request.recipe;
    let Some(h) = recipe.hires.clone() else { return Ok(Vec::new()) };
    recipe.validate(&model.info()).map_err(PipelineError::from)?;
    let latent = h.latent().is_some();
    if !runs_hires(&h) && upscaler.is_none() {
        return Err(PipelineError::Input(format!(
            "the hires upscaler {} is a model that is not loaded: download it, or pick Lanczos or Latent",
            h.upscaler
        ))
        .into());
    }
    let base = darkroom_pipeline::Recipe { hires: None, ..recipe.clone() };
    let runs = recipe.batch_count.max(1);
    let mut out = Vec::new();
    for run in 0..runs {
        let this = Request { recipe: base.run(run), ..request.clone() };
        let mut progress = |p: &Progress| on_event(&Event { run, runs, progress: p });
        let seed = this.recipe.seed.unwrap_or_default();
        let firsts: Vec<(u64, FirstPass)> = if latent {
            let (values, shape) = darkroom_pipeline::sample(gpu, model, &this, &mut progress).await?;
            let [_, c, lh, lw] = shape[..] else {
                return Err(PipelineError::Input(format!("latents of shape {shape:?}")).into());
            };
            values
                .chunks_exact(c * lh * lw)
                .enumerate()
                .map(|(i, v)| {
                    (
                        darkroom_pipeline::recipe::seed_at(seed, i as u64, 1),
                        FirstPass::Latents(v.to_vec(), [1, c, lh, lw]),
                    )
                })
                .collect()
        } else {
            darkroom_pipeline::generate(gpu, model, &this, &mut progress)
                .await?
                .into_iter()
                .map(|g| (g.params.seed, FirstPass::Image(g.image)))
                .collect()
        };
        for (image_seed, first) in firsts {
            out.extend(
                hires_second_pass(gpu, model, upscaler, request, image_seed, first, &mut progress).await?,
            );
        }
    }
    Ok(out)
}

/// Whether the hires fix `h` upscales without a model: Lanczos and the latent upscalers (else
/// [`generate`] needs the upscaler model it names in its [`Helpers`]).
pub fn runs_hires(h: &darkroom_pipeline::Hires) -> bool {
    h.latent().is_some() || h.upscaler.trim().eq_ignore_ascii_case(darkroom_pipeline::recipe::HIRES_LANCZOS)
}

/// The hires fix's second pass for one first-pass image (of seed `image_seed`): upscaled —
/// its latents resized, or its pixels by `upscaler` (when the hires fix names a model) or
/// Lanczos — and redrawn by img2img at the larger size; `request` is the run's, its recipe the
/// one that asks for the hires fix (it is recorded).
pub async fn hires_second_pass(
    gpu: &Gpu,
    model: &StableDiffusion,
    upscaler: Option<&Upscaler>,
    request: &Request,
    image_seed: u64,
    first: FirstPass,
    progress: &mut darkroom_pipeline::ProgressFn<'_>,
) -> Result<Vec<Generated>, EngineError> {
    let recipe = &request.recipe;
    let Some(h) = recipe.hires.clone() else {
        return Err(PipelineError::Input("the recipe asks for no hires fix".into()).into());
    };
    let second = darkroom_pipeline::recipe::hires_second_pass(recipe, &h, image_seed);
    let size = (second.width, second.height);
    let mut pass =
        Request { recipe: second, init_image: None, init_latents: None, mask: None, ..request.clone() };
    match first {
        FirstPass::Latents(values, shape) => {
            pass.init_latents = Some(darkroom_pipeline::upscale::hires_latents(&h, &values, shape, size)?)
        }
        FirstPass::Image(image) => {
            use darkroom_pipeline::preprocess::resize_lanczos;
            pass.init_image = Some(match upscaler.filter(|_| !runs_hires(&h)) {
                Some(up) => {
                    // As the CLI's upscale: the model's scale, then Lanczos to the exact size.
                    let mut tiles = |_: usize, _: usize| true;
                    let big =
                        darkroom_pipeline::upscale::upscale(gpu, up, up.dtype, &image, None, &mut tiles)
                            .await?;
                    if (big.width, big.height) == size {
                        big
                    } else {
                        resize_lanczos(&big, size.0, size.1)
                    }
                }
                None => resize_lanczos(&image, size.0, size.1),
            })
        }
    }
    let mut made = darkroom_pipeline::generate(gpu, model, &pass, progress).await?;
    for image in &mut made {
        image.params = recipe.to_params(&model.name, 0);
        image.params.seed = image_seed;
    }
    Ok(made)
}
