//! txt2img, img2img and inpainting with diffusers' numerics: the same model, settings and seed
//! give diffusers' image (one `torch.Generator("cpu").manual_seed(seed + i)` per image i, as
//! A1111 numbers a batch). Denoising stays on the GPU; the host sees progress between steps
//! and can cancel there.

use darkroom_gpu::ops::{self, ColorMap, Rgba8Image};
use darkroom_gpu::{Gpu, Tensor};

use crate::metadata::GenerationParams;
use crate::model::StableDiffusion;
use crate::rng::TorchGenerator;
use crate::schedulers::{Denoiser, Sampler};
use crate::text;
use crate::PipelineError;

/// An RGBA8 image in memory (inputs: img2img's init image, inpainting's mask).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

impl Image {
    /// Decodes a PNG (8-bit or 16-bit, grey, RGB or with alpha; palettes expanded).
    pub fn from_png(bytes: &[u8]) -> Result<Image, PipelineError> {
        let bad = |e: &dyn std::fmt::Display| PipelineError::Input(format!("not a readable PNG: {e}"));
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| bad(&e))?;
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).map_err(|e| bad(&e))?;
        let (w, h) = (info.width as usize, info.height as usize);
        let data = &buf[..info.buffer_size()];
        let rgba: Vec<u8> = match info.color_type {
            png::ColorType::Rgba => data.to_vec(),
            png::ColorType::Rgb => data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
            png::ColorType::GrayscaleAlpha => {
                data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect()
            }
            png::ColorType::Grayscale => data.iter().flat_map(|&g| [g, g, g, 255]).collect(),
            png::ColorType::Indexed => return Err(bad(&"palette was not expanded")),
        };
        Ok(Image { width: w, height: h, rgba })
    }
}

/// Outpainting's canvas: `image` extended by the given margins (pixels), the new area filled by
/// stretching the nearest edge pixels (a neutral start the sampler repaints), and the mask that
/// repaints the new area plus `overlap` pixels into the original so the seam is redrawn too.
/// Margins must keep the size a multiple of 8.
pub fn outpaint_canvas(
    image: &Image,
    [left, top, right, bottom]: [usize; 4],
    overlap: usize,
) -> Result<(Image, Image), PipelineError> {
    let (w, h) = (image.width + left + right, image.height + top + bottom);
    if image.width == 0 || image.height == 0 || image.rgba.len() != image.width * image.height * 4 {
        return Err(PipelineError::Input("the image to extend is empty or damaged".into()));
    }
    if w % 8 != 0 || h % 8 != 0 {
        return Err(PipelineError::Input(format!(
            "extending {}x{} by {left},{top},{right},{bottom} gives {w}x{h}, which is not a multiple of 8",
            image.width, image.height
        )));
    }
    let mut rgba = vec![0u8; w * h * 4];
    let mut mask = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let sx = x.saturating_sub(left).min(image.width - 1);
            let sy = y.saturating_sub(top).min(image.height - 1);
            let src = (sy * image.width + sx) * 4;
            let dst = (y * w + x) * 4;
            rgba[dst..dst + 4].copy_from_slice(&image.rgba[src..src + 4]);
            rgba[dst + 3] = 255;
            let inside_x = x >= left + overlap.min(left) && x < left + image.width - overlap.min(right);
            let inside_y = y >= top + overlap.min(top) && y < top + image.height - overlap.min(bottom);
            let value = if inside_x && inside_y { 0 } else { 255 };
            mask[dst..dst + 4].copy_from_slice(&[value, value, value, 255]);
        }
    }
    Ok((Image { width: w, height: h, rgba }, Image { width: w, height: h, rgba: mask }))
}

/// What to make.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub sampler: Sampler,
    /// Classifier-free guidance; at most 1 skips the unconditional pass (as does SD-Turbo's 0).
    pub cfg_scale: f32,
    pub width: usize,
    pub height: usize,
    /// Images, seeds seed, seed+1, …
    pub batch: usize,
    /// img2img / inpainting source, the request's size.
    pub init_image: Option<Image>,
    /// How much of the init image to redo: 1 starts from noise (inpainting's default).
    pub strength: f64,
    /// Inpainting: white repaints, black keeps; the request's size.
    pub mask: Option<Image>,
    /// Read the latents back after every step and hand them to the progress callback
    /// ([`Progress::latent_values`]). This also waits for the GPU each step, so an interactive
    /// caller (the browser worker) gets a truthful progress bar and a turn of its event loop —
    /// where a cancel request arrives — between steps.
    pub live_preview: bool,
}

impl Request {
    pub fn txt2img(prompt: &str, seed: u64, steps: usize, sampler: Sampler, cfg_scale: f32) -> Request {
        Request {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            seed,
            steps,
            sampler,
            cfg_scale,
            width: 512,
            height: 512,
            batch: 1,
            init_image: None,
            strength: 1.0,
            mask: None,
            live_preview: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Text encoding, and the VAE encoder for img2img/inpainting.
    Encoding,
    /// `step` of `total` denoising steps done.
    Denoising,
    /// The VAE decoding image `step` of `total`.
    Decoding,
}

/// Reported between units of work. `latents` (scaled, [batch, 4, h, w]) is there while
/// denoising, for a preview decoder.
pub struct Progress<'a> {
    pub stage: Stage,
    pub step: usize,
    pub total: usize,
    pub latents: Option<&'a Tensor>,
    /// The same latents on the CPU, when the request asked for live previews.
    pub latent_values: Option<&'a [f32]>,
}

/// Return `false` to cancel.
pub type ProgressFn<'a> = dyn FnMut(&Progress) -> bool + 'a;

/// One generated image with what reproduces it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub image: Image,
    pub params: GenerationParams,
}

impl Generated {
    /// PNG bytes with the A1111 `parameters` chunk.
    pub fn to_png(&self) -> Result<Vec<u8>, PipelineError> {
        let (w, h) = (self.image.width as u32, self.image.height as u32);
        Ok(crate::metadata::encode_png(&self.image.rgba, w, h, &self.params)?)
    }
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

/// Planar [3, H, W] in [-1, 1] from RGBA bytes.
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

/// The VAE's largest buffers for a size, against the adapter's binding limit.
fn check_fits(gpu: &Gpu, model: &StableDiffusion, request: &Request) -> Result<(), PipelineError> {
    let limit = gpu.capabilities().max_storage_buffer_binding_size;
    let bytes = model.precision.activations.size_bytes() as u64;
    let (w, h) = (request.width as u64, request.height as u64);
    let top = *model.vae_config.block_out_channels.first().unwrap_or(&128) as u64;
    let latent_pixels = (w / 8) * (h / 8);
    let rows = request.batch as u64 * 2;
    let largest = [
        top * w * h * bytes,               // the VAE decoder's last stage
        latent_pixels * latent_pixels * 4, // the VAE mid-block's attention scores
        rows * model.unet.config().block_out_channels[0] as u64 * latent_pixels * 4 * bytes,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if largest > limit {
        return Err(PipelineError::Input(format!(
            "{}x{} (batch {}) is too large for this GPU: it needs a {} MiB buffer and the adapter binds at most {} MiB",
            request.width,
            request.height,
            request.batch,
            largest >> 20,
            limit >> 20
        )));
    }
    Ok(())
}

fn validate(gpu: &Gpu, model: &StableDiffusion, r: &Request) -> Result<(), PipelineError> {
    let input = |m: String| Err(PipelineError::Input(m));
    let m = model.size_multiple();
    if r.width == 0 || r.height == 0 || r.width % m != 0 || r.height % m != 0 {
        return input(format!(
            "width and height must be positive multiples of {m} for this model, got {}x{}",
            r.width, r.height
        ));
    }
    if r.batch == 0 || r.batch > 64 {
        return input(format!("batch must be between 1 and 64, got {}", r.batch));
    }
    if !r.cfg_scale.is_finite() || r.cfg_scale < 0.0 || r.cfg_scale > 100.0 {
        return input(format!("CFG scale must be between 0 and 100, got {}", r.cfg_scale));
    }
    for (what, image) in [("init image", &r.init_image), ("mask", &r.mask)] {
        if let Some(img) = image {
            if img.width != r.width || img.height != r.height {
                return input(format!(
                    "the {what} is {}x{} but the image to make is {}x{}; resize it or pass --width/--height to match",
                    img.width, img.height, r.width, r.height
                ));
            }
        }
    }
    if r.mask.is_some() && r.init_image.is_none() {
        return input("inpainting needs an init image besides the mask".into());
    }
    if model.is_inpainting() && r.mask.is_none() {
        return input(format!("{} is an inpainting model: give it an init image and a mask", model.name));
    }
    check_fits(gpu, model, r)
}

/// Per-image generators; draws concatenate image 0's values, then image 1's, …
struct Seeds(Vec<TorchGenerator>);

impl Seeds {
    fn draw(&mut self, per_image: usize) -> Vec<f32> {
        self.0.iter_mut().flat_map(|g| g.randn(per_image)).collect()
    }
}

fn go_on(
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

/// Makes `request.batch` images.
pub async fn generate(
    gpu: &Gpu,
    model: &StableDiffusion,
    request: &Request,
    progress: &mut ProgressFn<'_>,
) -> Result<Vec<Generated>, PipelineError> {
    validate(gpu, model, request)?;
    let dtype = model.precision.activations;
    let b = request.batch;
    let scale = model.vae_config.scale();
    let (lh, lw) = (request.height / scale, request.width / scale);
    let lc = model.vae_config.latent_channels;
    let per_image = lc * lh * lw;
    let latent_shape = [b, lc, lh, lw];
    let vae_scale = model.vae_config.scaling_factor;
    let guided = request.cfg_scale > 1.0;
    let inpaint = request.mask.is_some();
    let nine = model.is_inpainting();
    let strength = if request.init_image.is_some() { request.strength } else { 1.0 };
    let mut denoiser = Denoiser::new(request.sampler, &model.schedule, request.steps, strength)
        .map_err(PipelineError::Input)?;
    let mut seeds = Seeds((0..b).map(|i| TorchGenerator::manual_seed(request.seed + i as u64)).collect());

    go_on(progress, Stage::Encoding, 0, 1, None, None)?;
    let context = text::encode(
        gpu,
        &model.tokenizer,
        &model.clip,
        &request.prompt,
        &request.negative_prompt,
        b,
        guided,
    )
    .await?;
    // Each stage's working buffers go back to the GPU before the next stage allocates its own,
    // so the pool peaks at the largest stage, not at the sum of all three.
    gpu.trim_pool();

    // The VAE encoder's latent distribution of an image, sampled per image with its generator.
    let mean_std = |planar: Vec<f32>| async move {
        let x = Tensor::from_f32(gpu, &[1, 3, request.height, request.width], &planar, dtype)?;
        let moments = model.vae_encoder.forward(gpu, &x)?.read_f32(gpu).await?;
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
        Some(img) if !inpaint || !nine || strength < 1.0 => {
            Some(mean_std(to_signed_planar(img, None)).await?)
        }
        _ => None,
    };
    let masked_moments = match (&request.init_image, &mask_pixels) {
        (Some(img), Some(m)) => Some(mean_std(to_signed_planar(img, Some(m))).await?),
        _ => None,
    };

    // Draw order as diffusers: image latents, the start noise, masked-image latents.
    let image_latents = match &init_moments {
        Some(mom) => Some(sample(&mut seeds, mom)?),
        None => None,
    };
    let noise = Tensor::from_f32(gpu, &latent_shape, &seeds.draw(per_image), dtype)?;
    let masked_latents = match &masked_moments {
        Some(mom) => Some(sample(&mut seeds, mom)?),
        None => None,
    };
    let first = denoiser.step_indices().start;
    let mut latents = match &image_latents {
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
                (0..lh * lw).map(|i| m[(i / lw) * scale * request.width + (i % lw) * scale]).collect();
            Some(Tensor::from_f32(gpu, &[1, 1, lh, lw], &values, dtype)?)
        }
        None => None,
    };
    let rows = if guided { 2 * b } else { b };
    let extra_channels = match (nine, &latent_mask, &masked_latents) {
        (true, Some(mask), Some(masked)) => {
            let mask = text::repeat_batch(gpu, mask, rows)?;
            let masked = if guided { ops::concat(gpu, masked, masked, 0)? } else { masked.clone() };
            Some(ops::concat(gpu, &mask, &masked, 1)?)
        }
        _ => None,
    };

    let steps: Vec<usize> = denoiser.step_indices().collect();
    let total = steps.len();
    let mut live: Option<Vec<f32>> = None;
    if request.live_preview {
        live = Some(latents.read_f32(gpu).await?);
    }
    for (done, &i) in steps.iter().enumerate() {
        go_on(progress, Stage::Denoising, done, total, Some(&latents), live.as_deref())?;
        let t = denoiser.timestep(i) as f32;
        let mut input = if guided { ops::concat(gpu, &latents, &latents, 0)? } else { latents.clone() };
        let s = denoiser.input_scale(i);
        if s != 1.0 {
            input = ops::lincomb(gpu, &[(s as f32, &input)])?;
        }
        if let Some(extra) = &extra_channels {
            input = ops::concat(gpu, &input, extra, 1)?;
        }
        let out = model.unet.forward(gpu, &input, &vec![t; rows], &context)?;
        let out = if guided { ops::cfg_combine(gpu, &out, request.cfg_scale)? } else { out };
        let step_noise = if denoiser.needs_noise(i) {
            Some(Tensor::from_f32(gpu, &latent_shape, &seeds.draw(per_image), dtype)?)
        } else {
            None
        };
        latents = denoiser.step(gpu, i, &latents, &out, step_noise.as_ref())?;
        if let (false, Some(mask), Some(x0)) = (nine, &latent_mask, &image_latents) {
            // Ordinary models inpaint by putting the (re-noised) original back outside the mask.
            let original = if i + 1 < request.steps {
                let (a, s) = denoiser.noise_coefficients(i + 1);
                ops::lincomb(gpu, &[(a as f32, x0), (s as f32, &noise)])?
            } else {
                x0.clone()
            };
            let inside = ops::mul(gpu, &ops::lincomb(gpu, &[(1.0, &latents), (-1.0, &original)])?, mask)?;
            latents = ops::add(gpu, &inside, &original)?;
        }
        gpu.flush();
        if request.live_preview {
            live = Some(latents.read_f32(gpu).await?);
        }
    }
    let values = latents.read_f32(gpu).await?;
    go_on(progress, Stage::Denoising, total, total, Some(&latents), Some(&values))?;
    drop(latents);
    gpu.trim_pool();

    let mut out = Vec::with_capacity(b);
    for (k, chunk) in values.chunks_exact(per_image).enumerate() {
        go_on(progress, Stage::Decoding, k, b, None, None)?;
        let unscaled: Vec<f32> = chunk.iter().map(|v| v / vae_scale).collect();
        let z = Tensor::from_f32(gpu, &[1, lc, lh, lw], &unscaled, dtype)?;
        let rgb = model.vae_decoder.forward(gpu, &z)?;
        let rgba = Rgba8Image::from_tensor(gpu, &rgb, ColorMap::SIGNED_RGB)?.read(gpu).await?;
        out.push(Generated {
            image: Image { width: request.width, height: request.height, rgba },
            params: params(model, request, request.seed + k as u64),
        });
    }
    go_on(progress, Stage::Decoding, b, b, None, None)?;
    Ok(out)
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

/// The infotext A1111 would write for this image.
fn params(model: &StableDiffusion, r: &Request, seed: u64) -> GenerationParams {
    let mut extra = Vec::new();
    if r.init_image.is_some() && r.strength < 1.0 {
        extra.push(("Denoising strength".to_string(), format!("{}", r.strength)));
    }
    GenerationParams {
        prompt: r.prompt.clone(),
        negative_prompt: r.negative_prompt.clone(),
        steps: r.steps as u32,
        sampler: r.sampler.display_name().to_string(),
        cfg_scale: r.cfg_scale,
        seed,
        width: r.width as u32,
        height: r.height as u32,
        model: Some(model.name.clone()),
        model_hash: None,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: usize, h: usize, rgb: [u8; 3]) -> Image {
        Image { width: w, height: h, rgba: (0..w * h).flat_map(|_| [rgb[0], rgb[1], rgb[2], 255]).collect() }
    }

    #[test]
    fn outpainting_extends_the_canvas_and_masks_the_new_area_with_an_overlap() {
        let mut image = solid(16, 8, [10, 20, 30]);
        image.rgba[0..4].copy_from_slice(&[200, 0, 0, 255]); // top-left pixel
        let (canvas, mask) = outpaint_canvas(&image, [8, 0, 0, 8], 2).unwrap();
        assert_eq!((canvas.width, canvas.height), (24, 16));
        let px = |img: &Image, x: usize, y: usize| img.rgba[(y * img.width + x) * 4];
        assert_eq!(px(&canvas, 8, 0), 200, "the original sits at the offset");
        assert_eq!(px(&canvas, 0, 0), 200, "the new area stretches the nearest edge");
        assert_eq!(px(&mask, 0, 0), 255, "new area repaints");
        assert_eq!(px(&mask, 9, 0), 255, "the overlap into the original repaints");
        assert_eq!(px(&mask, 10, 0), 0, "the rest of the original is kept");
        assert_eq!(px(&mask, 23, 5), 0, "no overlap on a side that was not extended");
        assert_eq!(px(&mask, 12, 6), 255, "overlap above the bottom margin");
        assert!(outpaint_canvas(&image, [3, 0, 0, 0], 0).is_err(), "19 is not a multiple of 8");
    }
}
