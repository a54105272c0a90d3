//! txt2img, img2img and inpainting with diffusers' numerics: the same model, settings and seed
//! give diffusers' image (one `torch.Generator("cpu").manual_seed(seed + i)` per image i, as
//! A1111 numbers a batch). Denoising stays on the GPU; the host sees progress between steps
//! and can cancel there.

use darkroom_gpu::ops::{ColorMap, Rgba8Image};
use darkroom_gpu::{Gpu, Tensor};

use crate::model::StableDiffusion;
use crate::request::{Generated, Image, ProgressFn, Request, Stage};
use crate::schedulers::Denoiser;
use crate::stages;
use crate::PipelineError;

/// The largest buffer a whole-image VAE decode of `width` x `height` makes: a map at full
/// size, as wide as the last up block's input (the upsampled output of the block before, with
/// the second channel count: 256 for SD's VAE) or its own output, whichever is wider.
pub fn whole_decode_buffer(model: &StableDiffusion, width: usize, height: usize) -> u64 {
    whole_decode_bytes(&model.vae_config, model.vae_dtype, width, height)
}

/// [`whole_decode_buffer`] for a VAE of `config` running in `dtype`.
pub fn whole_decode_bytes(
    config: &darkroom_models::vae::AutoencoderKLConfig,
    dtype: darkroom_gpu::DType,
    width: usize,
    height: usize,
) -> u64 {
    let top = config.block_out_channels.iter().take(2).max().copied().unwrap_or(256) as u64;
    top * (width * height) as u64 * dtype.size_bytes() as u64
}

/// The tile (latent pixels) the VAE decodes this request with, or None for the whole image.
pub fn decode_tile(gpu: &Gpu, model: &StableDiffusion, request: &Request) -> Option<usize> {
    let r = &request.recipe;
    let fits =
        whole_decode_buffer(model, r.width, r.height) <= gpu.capabilities().max_storage_buffer_binding_size;
    request.vae_tiling.tile_for(r.width, r.height, model.vae_dtype.size_bytes(), fits)
}

/// The largest buffers for a size, against the adapter's binding limit.
fn check_fits(gpu: &Gpu, model: &StableDiffusion, request: &Request) -> Result<(), PipelineError> {
    let limit = gpu.capabilities().max_storage_buffer_binding_size;
    let bytes = model.vae_dtype.size_bytes() as u64;
    let r = &request.recipe;
    let (w, h) = (r.width as u64, r.height as u64);
    let latent_pixels = (w / 8) * (h / 8);
    let rows = r.batch_size as u64 * 2;
    let widest = *model.vae_config.block_out_channels.iter().max().unwrap_or(&512) as u64;
    let vae = match decode_tile(gpu, model, request) {
        // A tile with its border at the top level, at the widest channel count (an upper bound).
        Some(tile) => {
            let side = (tile * model.vae_config.scale() + 2) as u64;
            widest * side * side * bytes
        }
        None => whole_decode_buffer(model, r.width, r.height),
    };
    let largest = [
        vae,
        widest * latent_pixels * bytes, // the VAE mid block, whole at latent size
        rows * model.unet.config().block_out_channels[0] as u64
            * latent_pixels
            * 4
            * model.precision.activations.size_bytes() as u64,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if largest > limit {
        return Err(PipelineError::Input(format!(
            "{}x{} (batch {}) is too large for this GPU: it needs a {} MiB buffer and the adapter binds at most {} MiB",
            r.width,
            r.height,
            r.batch_size,
            largest >> 20,
            limit >> 20
        )));
    }
    Ok(())
}

fn validate(gpu: &Gpu, model: &StableDiffusion, request: &Request) -> Result<(), PipelineError> {
    let r = &request.recipe;
    r.validate(&model.info())?;
    if r.seed.is_none() {
        return Err(PipelineError::Input("the recipe has no seed: draw one for this run first".into()));
    }
    for (what, image) in [("init image", &request.init_image), ("mask", &request.mask)] {
        if let Some(img) = image {
            if img.width != r.width || img.height != r.height {
                return Err(PipelineError::Input(format!(
                    "the {what} is {}x{} but the image to make is {}x{}; resize it or pass --width/--height to match",
                    img.width, img.height, r.width, r.height
                )));
            }
        }
    }
    let init = request.init_image.is_some() || request.init_latents.is_some();
    if init != r.init.is_some() || request.mask.is_some() != (r.mask.is_some() || r.outpaint.is_some()) {
        return Err(PipelineError::Input("the recipe's init image and mask did not arrive with it".into()));
    }
    if let Some(latents) = &request.init_latents {
        let scale = model.vae_config.scale();
        let want = r.batch_size * model.vae_config.latent_channels * (r.height / scale) * (r.width / scale);
        if request.init_image.is_some() || request.mask.is_some() || latents.len() != want {
            return Err(PipelineError::Input(format!(
                "img2img from latents takes {want} values for {}x{} and no init image or mask; got {}",
                r.width,
                r.height,
                latents.len()
            )));
        }
    }
    check_fits(gpu, model, request)
}

/// Makes `request.recipe.batch_size` images: conditioning → initial latents → denoising (with
/// inpainting's blend as a step hook) → decoding, each stage's working buffers returned to the
/// GPU before the next allocates its own, so the pool peaks at the largest stage.
pub async fn generate(
    gpu: &Gpu,
    model: &StableDiffusion,
    request: &Request,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Generated>, PipelineError> {
    if request.recipe.draft {
        return Err(PipelineError::Input("a draft recipe is decoded by TAESD: make it with `draft`".into()));
    }
    let latents = sample(gpu, model, request, progress).await?;
    let tile = decode_tile(gpu, model, request);
    stages::decode(gpu, model, &request.recipe, latents, tile, progress).await
}

/// Drafts of `request.recipe.batch_size` images: the same sampling as [`generate`], each image's
/// final latents decoded by `taesd` and kept in the result ([`Generated::kept`]) for
/// [`finish`].
pub async fn draft(
    gpu: &Gpu,
    model: &StableDiffusion,
    taesd: &darkroom_models::taesd::TaesdDecoder,
    request: &Request,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Generated>, PipelineError> {
    let recipe = crate::Recipe { draft: true, ..request.recipe.clone() };
    let (values, shape) = sample(gpu, model, request, progress).await?;
    let [b, c, h, w] = shape[..] else {
        return Err(PipelineError::Input(format!("latents of shape {shape:?} are not [B, C, h, w]")));
    };
    let mut out = Vec::with_capacity(b);
    for (k, chunk) in values.chunks_exact(c * h * w).enumerate() {
        stages::report(progress, Stage::Decoding, k, b, None, None)?;
        let z = Tensor::from_f32(gpu, &[1, c, h, w], chunk, model.precision.activations)?;
        let rgb = taesd.forward(gpu, &z)?;
        let rgba = Rgba8Image::from_tensor(gpu, &rgb, ColorMap::RGB)?.read(gpu).await?;
        out.push(Generated {
            image: Image { width: recipe.width, height: recipe.height, rgba },
            params: recipe.to_params(&model.name, k),
            kept: Some(crate::draft::Kept {
                recipe: recipe.clone(),
                index: k,
                shape: [1, c, h, w],
                values: chunk.to_vec(),
            }),
        });
    }
    stages::report(progress, Stage::Decoding, b, b, None, None)?;
    Ok(out)
}

/// A draft finished: its kept latents decoded by the full VAE, with the parameters of the
/// recipe without drafts — the image [`generate`] makes directly. `tiling` as the request's.
pub async fn finish(
    gpu: &Gpu,
    model: &StableDiffusion,
    kept: &crate::draft::Kept,
    tiling: crate::VaeTiling,
    progress: &mut ProgressFn<'_>,
) -> Result<Generated, PipelineError> {
    let recipe = kept.final_recipe();
    let want = [1, model.vae_config.latent_channels, recipe.height / 8, recipe.width / 8];
    if kept.shape != want {
        return Err(PipelineError::Input(format!(
            "the draft's latents are {:?} but {} makes {want:?}: finish it with the model that made it ({})",
            kept.shape, model.name, recipe.model
        )));
    }
    let request = Request {
        recipe: recipe.clone(),
        init_image: None,
        init_latents: None,
        mask: None,
        live_preview: false,
        vae_tiling: tiling,
        controls: Vec::new(),
        embeddings: Vec::new(),
    };
    check_fits(gpu, model, &request)?;
    let tile = decode_tile(gpu, model, &request);
    let mut made =
        stages::decode(gpu, model, &recipe, (kept.values.clone(), kept.shape.to_vec()), tile, progress)
            .await?;
    let mut one = made.pop().ok_or_else(|| PipelineError::Input("the VAE made no image".into()))?;
    one.params = recipe.to_params(&model.name, kept.index);
    Ok(one)
}

/// Validates the request and runs it up to its final latents (scaled; on the CPU), every
/// working buffer returned to the pool.
pub async fn sample(
    gpu: &Gpu,
    model: &StableDiffusion,
    request: &Request,
    progress: &mut ProgressFn<'_>,
) -> Result<(Vec<f32>, Vec<usize>), PipelineError> {
    validate(gpu, model, request)?;
    let recipe = &request.recipe;
    let guided = recipe.cfg_scale > 1.0;
    let mut denoiser =
        Denoiser::new(recipe.sampler, &model.schedule, recipe.steps, recipe.effective_strength())
            .map_err(PipelineError::Input)?;
    let mut seeds = stages::Seeds::new(recipe.seed.unwrap_or_default(), recipe.batch_size);

    stages::report(progress, Stage::Encoding, 0, 1, None, None)?;
    let conditioning = stages::conditioning(gpu, model, request, guided).await?;
    gpu.trim_pool();

    let rows = if guided { 2 * recipe.batch_size } else { recipe.batch_size };
    let time_ids = stages::time_ids(recipe, rows);
    let controls = crate::control::prepare(
        gpu,
        model,
        &recipe.controls,
        &request.controls,
        (recipe.width, recipe.height),
        rows,
    )?;
    let start = stages::initial_latents(gpu, model, request, &denoiser, &mut seeds).await?;
    let mut hooks: Vec<Box<dyn stages::StepHook>> = Vec::new();
    if let Some(blend) = stages::InpaintBlend::for_start(&start, model) {
        hooks.push(Box::new(blend));
    }
    let job = stages::Denoising {
        latents: start.latents.clone(),
        context: &conditioning.context,
        added: conditioning.pooled.as_ref().map(|pooled| (pooled, time_ids.as_slice())),
        unet_extra: start.unet_extra.as_ref(),
        guided,
        cfg_scale: recipe.cfg_scale,
        live_preview: request.live_preview,
        controls: &controls,
    };
    let latents = stages::denoise(gpu, model, job, &mut denoiser, &mut seeds, &mut hooks, progress).await?;
    // Everything but the final latents (on the CPU now) goes back before the VAE allocates.
    drop((hooks, start, conditioning, controls));
    gpu.trim_pool();
    Ok(latents)
}

/// A live preview of image `index` of the latents a denoising step reports: TAESD decodes them
/// on the GPU (milliseconds, where the VAE takes seconds) and only the small RGBA image is read
/// back.
pub async fn preview(
    gpu: &Gpu,
    taesd: &darkroom_models::taesd::TaesdDecoder,
    latents: &Tensor,
    index: usize,
) -> Result<Image, PipelineError> {
    let [batch, c, h, w] = *latents.shape() else {
        return Err(PipelineError::Input(format!(
            "latents of shape {:?} are not [B, C, h, w]",
            latents.shape()
        )));
    };
    if index >= batch {
        return Err(PipelineError::Input(format!("no image {index} in a batch of {batch}")));
    }
    let one = if batch == 1 {
        latents.clone()
    } else {
        let values = latents.read_f32(gpu).await?;
        let n = c * h * w;
        Tensor::from_f32(gpu, &[1, c, h, w], &values[index * n..(index + 1) * n], latents.dtype())?
    };
    let rgb = taesd.forward(gpu, &one)?;
    let (height, width) = (rgb.shape()[2], rgb.shape()[3]);
    let rgba = Rgba8Image::from_tensor(gpu, &rgb, ColorMap::RGB)?.read(gpu).await?;
    Ok(Image { width, height, rgba })
}
