//! The stages of a generation, in diffusers' order and numerics: conditioning (the text
//! encoder) → initial latents (noise, or the VAE-encoded init image noised to the first step) →
//! the denoising loop, with hooks after each step (inpainting's blend; ControlNet and others
//! plug in the same way) → decoding. [`crate::generate`] composes them.

use darkroom_gpu::ops::{self, ColorMap, Rgba8Image};
use darkroom_gpu::{Gpu, Tensor};
use darkroom_models::unet::{AddedConditions, UNetInput};

use crate::model::StableDiffusion;
use crate::recipe::Recipe;
use crate::request::{Generated, Image, Progress, ProgressFn, Request, Stage};
use crate::rng::TorchGenerator;
use crate::schedulers::Denoiser;
use crate::text;
use crate::PipelineError;

/// Per-image generators (`torch.Generator("cpu").manual_seed(seed + i)` for image i, as A1111
/// numbers a batch); draws concatenate image 0's values, then image 1's, …
pub struct Seeds(Vec<TorchGenerator>);

impl Seeds {
    pub fn new(seed: u64, images: usize) -> Seeds {
        Seeds(
            (0..images)
                .map(|i| TorchGenerator::manual_seed(crate::recipe::seed_at(seed, i as u64, 1)))
                .collect(),
        )
    }

    fn draw(&mut self, per_image: usize) -> Vec<f32> {
        self.0.iter_mut().flat_map(|g| g.randn(per_image)).collect()
    }
}

/// Tells the caller where the work is; `Err(Cancelled)` when it asks to stop.
pub fn report(
    progress: &mut ProgressFn<'_>,
    stage: Stage,
    step: usize,
    total: usize,
    latents: Option<&Tensor>,
    latent_values: Option<&[f32]>,
) -> Result<(), PipelineError> {
    if progress(&Progress { stage, step, total, latents, latent_values }) {
        Ok(())
    } else {
        Err(PipelineError::Cancelled)
    }
}

/// Stage 1: the prompt and negative prompt encoded (the negative only with CFG), batch rows;
/// for SDXL also the pooled embeddings. Taken from the model's [`text::TextCache`] when a recent
/// run encoded the same.
pub async fn conditioning(
    gpu: &Gpu,
    model: &StableDiffusion,
    request: &Request,
    guided: bool,
) -> Result<text::Conditioning, PipelineError> {
    let recipe = &request.recipe;
    let (prompt, negative, batch) = (&recipe.prompt, &recipe.negative_prompt, recipe.batch_size);
    let key = text::ConditioningKey::new(prompt, negative, batch, guided, &request.embeddings);
    if let Some(kept) = model.text_cache.get(&key) {
        return Ok(kept);
    }
    let made = encode_prompts(gpu, model, request, guided).await?;
    model.text_cache.keep(key, &made);
    Ok(made)
}

async fn encode_prompts(
    gpu: &Gpu,
    model: &StableDiffusion,
    request: &Request,
    guided: bool,
) -> Result<text::Conditioning, PipelineError> {
    let recipe = &request.recipe;
    let (prompt, negative, batch) = (&recipe.prompt, &recipe.negative_prompt, recipe.batch_size);
    let vocabulary = model.vocabulary(&request.embeddings);
    match &model.xl {
        Some(xl) => {
            let encoders = (&model.tokenizer, &model.clip);
            text::encode_sdxl(gpu, encoders, xl, &vocabulary, prompt, negative, batch, guided).await
        }
        None => {
            let (tokenizer, clip) = (&model.tokenizer, &model.clip);
            let context =
                text::encode(gpu, tokenizer, clip, &vocabulary, prompt, negative, batch, guided).await?;
            Ok(text::Conditioning { context, pooled: None })
        }
    }
}

/// SDXL's micro-conditioning for every row: original size, crop top-left (0, 0) and target
/// size, (height, width) each, the image being made's size as diffusers defaults them.
pub fn time_ids(recipe: &Recipe, rows: usize) -> Vec<f32> {
    let (h, w) = (recipe.height as f32, recipe.width as f32);
    [h, w, 0.0, 0.0, h, w].repeat(rows)
}

/// The mask as diffusers' mask processor reads it: grey (PIL's weights), ≥ ½ repaints.
fn binarize(mask: &Image) -> Vec<f32> {
    mask.rgba
        .chunks_exact(4)
        .map(|p| {
            let grey = (p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16;
            if grey as f32 / 255.0 >= 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Planar [3, H, W] in [-1, 1] from RGBA bytes; pixels under the mask zeroed when `keep` is given.
fn to_signed_planar(image: &Image, keep: Option<&[f32]>) -> Vec<f32> {
    let n = image.width * image.height;
    let mut out = vec![0.0f32; 3 * n];
    for (i, p) in image.rgba.chunks_exact(4).enumerate() {
        let k = keep.map_or(1.0, |m| if m[i] < 0.5 { 1.0 } else { 0.0 });
        for c in 0..3 {
            out[c * n + i] = (p[c] as f32 / 255.0 * 2.0 - 1.0) * k;
        }
    }
    out
}

/// What stage 2 hands on.
pub struct Start {
    /// The latents the first step denoises, [B, C, h, w].
    pub latents: Tensor,
    /// The start noise (inpainting re-noises the original with it).
    pub noise: Tensor,
    /// The init image's (scaled) latents, for img2img and inpainting.
    pub image_latents: Option<Tensor>,
    /// The mask at latent resolution, [1, 1, h, w], for inpainting.
    pub latent_mask: Option<Tensor>,
    /// A 9-channel inpainting UNet's extra input channels (mask, masked-image latents), CFG rows.
    pub unet_extra: Option<Tensor>,
}

/// Stage 2: the initial latents. Draw order as diffusers: the image latents, the start noise,
/// the masked-image latents.
pub async fn initial_latents(
    gpu: &Gpu,
    model: &StableDiffusion,
    request: &Request,
    denoiser: &Denoiser,
    seeds: &mut Seeds,
) -> Result<Start, PipelineError> {
    let recipe = &request.recipe;
    let dtype = model.precision.activations;
    let b = recipe.batch_size;
    let scale = model.vae_config.scale();
    let (lh, lw) = (recipe.height / scale, recipe.width / scale);
    let lc = model.vae_config.latent_channels;
    let per_image = lc * lh * lw;
    let latent_shape = [b, lc, lh, lw];
    let vae_scale = model.vae_config.scaling_factor;
    let strength = recipe.effective_strength();
    let inpaint = request.mask.is_some();
    let nine = model.is_inpainting();

    // The VAE encoder's latent distribution of an image, sampled per image with its generator.
    // The encoder is uploaded at its first use here and freed when the latents are made.
    let encoder = std::cell::OnceCell::new();
    let encoder = &encoder;
    let mean_std = |planar: Vec<f32>| async move {
        let x = Tensor::from_f32(gpu, &[1, 3, recipe.height, recipe.width], &planar, model.vae_dtype)?;
        let vae = match encoder.get() {
            Some(vae) => vae,
            None => {
                let uploaded = model.vae_encoder.on_gpu(gpu)?;
                encoder.get_or_init(|| uploaded)
            }
        };
        let moments = vae.forward(gpu, &x)?.read_f32(gpu).await?;
        let (mean, logvar) = moments.split_at(per_image);
        let std: Vec<f32> = logvar.iter().map(|&l| (0.5 * l.clamp(-30.0, 20.0)).exp()).collect();
        Ok::<_, PipelineError>((mean.to_vec(), std))
    };
    let sample = |seeds: &mut Seeds, (mean, std): &(Vec<f32>, Vec<f32>)| -> Result<Tensor, PipelineError> {
        let eps = seeds.draw(per_image);
        let values: Vec<f32> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| (mean[i % per_image] + std[i % per_image] * e) * vae_scale)
            .collect();
        Ok(Tensor::from_f32(gpu, &latent_shape, &values, dtype)?)
    };

    let mask_pixels = request.mask.as_ref().map(binarize);
    let init_moments = match &request.init_image {
        Some(_) if request.init_latents.is_some() => None,
        Some(img) if !inpaint || !nine || strength < 1.0 => {
            Some(mean_std(to_signed_planar(img, None)).await?)
        }
        _ => None,
    };
    let masked_moments = match (&request.init_image, &mask_pixels) {
        (Some(img), Some(m)) => Some(mean_std(to_signed_planar(img, Some(m))).await?),
        _ => None,
    };

    // Latents given (the hires fix's latent upscale) are the image as they are: no encoder
    // sample is drawn, as diffusers takes a 4-channel `image` as latents.
    let image_latents = match (&request.init_latents, &init_moments) {
        (Some(values), _) => Some(Tensor::from_f32(gpu, &latent_shape, values, dtype)?),
        (None, Some(mom)) => Some(sample(seeds, mom)?),
        (None, None) => None,
    };
    let noise = Tensor::from_f32(gpu, &latent_shape, &seeds.draw(per_image), dtype)?;
    let masked_latents = match &masked_moments {
        Some(mom) => Some(sample(seeds, mom)?),
        None => None,
    };
    let first = denoiser.step_indices().start;
    let latents = match &image_latents {
        // img2img always starts from the noised image; inpainting at strength 1 from noise.
        Some(x0) if !(inpaint && strength >= 1.0) => {
            let (a, s) = denoiser.noise_coefficients(first);
            ops::lincomb(gpu, &[(a as f32, x0), (s as f32, &noise)])?
        }
        _ => ops::lincomb(gpu, &[(denoiser.init_noise_sigma() as f32, &noise)])?,
    };

    // The mask at latent resolution, nearest-neighbour as diffusers' interpolate.
    let latent_mask = match &mask_pixels {
        Some(m) => {
            let values: Vec<f32> =
                (0..lh * lw).map(|i| m[(i / lw) * scale * recipe.width + (i % lw) * scale]).collect();
            Some(Tensor::from_f32(gpu, &[1, 1, lh, lw], &values, dtype)?)
        }
        None => None,
    };
    let guided = recipe.cfg_scale > 1.0;
    let rows = if guided { 2 * b } else { b };
    let unet_extra = match (nine, &latent_mask, &masked_latents) {
        (true, Some(mask), Some(masked)) => {
            let mask = text::repeat_batch(gpu, mask, rows)?;
            let masked = if guided { ops::concat(gpu, masked, masked, 0)? } else { masked.clone() };
            Some(ops::concat(gpu, &mask, &masked, 1)?)
        }
        _ => None,
    };
    Ok(Start { latents, noise, image_latents, latent_mask, unet_extra })
}

/// Runs after every denoising step on the stepped latents.
pub trait StepHook {
    /// `i` is the step just taken (an index into the full schedule).
    fn after_step(
        &mut self,
        gpu: &Gpu,
        denoiser: &Denoiser,
        i: usize,
        latents: Tensor,
    ) -> Result<Tensor, PipelineError>;
}

/// Inpainting with an ordinary (4-channel) UNet: after each step the original, re-noised to the
/// next step's level, is put back outside the mask, as diffusers' inpainting pipeline does.
pub struct InpaintBlend {
    image_latents: Tensor,
    noise: Tensor,
    mask: Tensor,
}

impl InpaintBlend {
    /// The hook a start needs: a mask and image latents on a model without inpainting channels.
    pub fn for_start(start: &Start, model: &StableDiffusion) -> Option<InpaintBlend> {
        if model.is_inpainting() {
            return None;
        }
        Some(InpaintBlend {
            image_latents: start.image_latents.clone()?,
            noise: start.noise.clone(),
            mask: start.latent_mask.clone()?,
        })
    }
}

impl StepHook for InpaintBlend {
    fn after_step(
        &mut self,
        gpu: &Gpu,
        denoiser: &Denoiser,
        i: usize,
        latents: Tensor,
    ) -> Result<Tensor, PipelineError> {
        let x0 = &self.image_latents;
        let original = if i + 1 < denoiser.step_indices().end {
            let (a, s) = denoiser.noise_coefficients(i + 1);
            ops::lincomb(gpu, &[(a as f32, x0), (s as f32, &self.noise)])?
        } else {
            x0.clone()
        };
        let inside = ops::mul(gpu, &ops::lincomb(gpu, &[(1.0, &latents), (-1.0, &original)])?, &self.mask)?;
        Ok(ops::add(gpu, &inside, &original)?)
    }
}

/// What the loop denoises and with what.
pub struct Denoising<'a> {
    pub latents: Tensor,
    pub context: &'a Tensor,
    /// SDXL's added conditioning: pooled text embeddings [rows, P] and six time ids per row.
    pub added: Option<(&'a Tensor, &'a [f32])>,
    /// Extra UNet input channels (9-channel inpainting), already in CFG rows.
    pub unet_extra: Option<&'a Tensor>,
    pub guided: bool,
    pub cfg_scale: f32,
    /// Read the latents back every step for the progress callback.
    pub live_preview: bool,
    /// ControlNet units, their images embedded in the loop's rows.
    pub controls: &'a [crate::control::PreparedControl],
}

/// Stage 3: the denoising loop. Returns the final latents on the CPU (scaled, [B, C, h, w]).
pub async fn denoise(
    gpu: &Gpu,
    model: &StableDiffusion,
    job: Denoising<'_>,
    denoiser: &mut Denoiser,
    seeds: &mut Seeds,
    hooks: &mut [Box<dyn StepHook>],
    progress: &mut ProgressFn<'_>,
) -> Result<(Vec<f32>, Vec<usize>), PipelineError> {
    let Denoising { mut latents, context, added, unet_extra, guided, cfg_scale, live_preview, controls } =
        job;
    let shape = latents.shape().to_vec();
    let per_image: usize = shape[1..].iter().product();
    let rows = if guided { 2 * shape[0] } else { shape[0] };
    let steps: Vec<usize> = denoiser.step_indices().collect();
    let total = steps.len();
    let mut live: Option<Vec<f32>> = None;
    if live_preview {
        live = Some(latents.read_f32(gpu).await?);
    }
    for (done, &i) in steps.iter().enumerate() {
        report(progress, Stage::Denoising, done, total, Some(&latents), live.as_deref())?;
        let t = denoiser.timestep(i) as f32;
        let mut input = if guided { ops::concat(gpu, &latents, &latents, 0)? } else { latents.clone() };
        let s = denoiser.input_scale(i);
        if s != 1.0 {
            input = ops::lincomb(gpu, &[(s as f32, &input)])?;
        }
        let timesteps = vec![t; rows];
        let added = added.map(|(text_embeds, time_ids)| AddedConditions { text_embeds, time_ids });
        // ControlNets see the latents before a 9-channel UNet's extra channels, as diffusers.
        let control_input =
            UNetInput { sample: &input, timesteps: &timesteps, context, control: None, added };
        let control = crate::control::residuals(gpu, controls, (done, total), &control_input)?;
        if let Some(extra) = unet_extra {
            input = ops::concat(gpu, &input, extra, 1)?;
        }
        let unet_input = UNetInput {
            sample: &input,
            timesteps: &timesteps,
            context,
            control: control.as_ref().map(|c| c.residuals()),
            added,
        };
        let out = model.unet.forward_input(gpu, &unet_input)?;
        let out = if guided { ops::cfg_combine(gpu, &out, cfg_scale)? } else { out };
        let step_noise = if denoiser.needs_noise(i) {
            Some(Tensor::from_f32(gpu, &shape, &seeds.draw(per_image), latents.dtype())?)
        } else {
            None
        };
        latents = denoiser.step(gpu, i, &latents, &out, step_noise.as_ref())?;
        for hook in hooks.iter_mut() {
            latents = hook.after_step(gpu, denoiser, i, latents)?;
        }
        gpu.flush();
        if live_preview {
            live = Some(latents.read_f32(gpu).await?);
        }
    }
    let values = latents.read_f32(gpu).await?;
    report(progress, Stage::Denoising, total, total, Some(&latents), Some(&values))?;
    Ok((values, shape))
}

/// Stage 4: the VAE decodes each image of the final latents to RGBA, whole or in tiles of
/// `tile` latent pixels.
pub async fn decode(
    gpu: &Gpu,
    model: &StableDiffusion,
    recipe: &Recipe,
    (values, shape): (Vec<f32>, Vec<usize>),
    tile: Option<usize>,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Generated>, PipelineError> {
    let [b, lc, lh, lw] = shape[..] else {
        return Err(PipelineError::Input(format!("latents of shape {shape:?} are not [B, C, h, w]")));
    };
    let vae_scale = model.vae_config.scaling_factor;
    let dtype = model.vae_dtype;
    let mut out = Vec::with_capacity(b);
    for (k, chunk) in values.chunks_exact(lc * lh * lw).enumerate() {
        report(progress, Stage::Decoding, k, b, None, None)?;
        let unscaled: Vec<f32> = chunk.iter().map(|v| v / vae_scale).collect();
        let z = Tensor::from_f32(gpu, &[1, lc, lh, lw], &unscaled, dtype)?;
        let rgb = match tile {
            Some(t) => model.vae_decoder.forward_tiled(gpu, &z, t)?,
            None => model.vae_decoder.forward(gpu, &z)?,
        };
        let rgba = Rgba8Image::from_tensor(gpu, &rgb, ColorMap::SIGNED_RGB)?.read(gpu).await?;
        out.push(Generated {
            image: Image { width: recipe.width, height: recipe.height, rgba },
            params: recipe.to_params(&model.name, k),
            kept: None,
        });
    }
    report(progress, Stage::Decoding, b, b, None, None)?;
    Ok(out)
}
