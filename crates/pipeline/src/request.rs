//! What a generation takes and gives: a [`Request`] (one run of a [`Recipe`] with its images in
//! memory), the progress it reports, and the images it makes with their parameters.

use darkroom_gpu::Tensor;

use crate::metadata::GenerationParams;
use crate::recipe::Recipe;
use crate::schedulers::Sampler;
use crate::PipelineError;

/// An RGBA8 image in memory (inputs: img2img's init image, inpainting's mask).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

impl Image {
    /// Decodes a PNG (8-bit or 16-bit, grey, RGB or with alpha; palettes expanded), its
    /// declared size checked before anything is allocated.
    pub fn from_png(bytes: &[u8]) -> Result<Image, PipelineError> {
        let image =
            darkroom_workflow::pixels::decode_png(bytes).map_err(|e| PipelineError::Input(e.to_string()))?;
        Ok(Image { width: image.width, height: image.height, rgba: image.pixels })
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

/// One run of a [`Recipe`] with its input images in memory.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to make. Its seed must be set (image i uses seed + i); `batch_count` is the
    /// caller's loop over [`Recipe::run`] — a request is one run of `batch_size` images.
    pub recipe: Recipe,
    /// img2img / inpainting source at the output size (for outpainting, the extended canvas).
    pub init_image: Option<Image>,
    /// img2img from latents instead of an image (the hires fix's latent upscale): the scaled
    /// latents of the batch at the output size ([B, C, h, w], planar), taken as they are.
    pub init_latents: Option<Vec<f32>>,
    /// Inpainting: white repaints, black keeps; the output size.
    pub mask: Option<Image>,
    /// Read the latents back after every step and hand them to the progress callback
    /// ([`Progress::latent_values`]). This also waits for the GPU each step, so an interactive
    /// caller (the browser worker) gets a truthful progress bar and a turn of its event loop —
    /// where a cancel request arrives — between steps.
    pub live_preview: bool,
    /// Whether the VAE decodes the whole image at once or tile by tile.
    pub vae_tiling: VaeTiling,
    /// The recipe's control units' ControlNets and images, in the same order.
    pub controls: Vec<crate::control::Control>,
    /// Textual-inversion embeddings the prompts may call by name (the caller's collection, as
    /// A1111's embeddings folder): one that does not fit the model is refused when used.
    pub embeddings: Vec<crate::text::NamedEmbedding>,
}

/// How the VAE decodes: tiled, the activations above the mid block are held and computed one
/// tile at a time (with the whole image's group-norm statistics, so the image is the same up to
/// rounding) and the decode's memory stops growing with the image's area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeTiling {
    /// Tiled where the whole decode would hold more than a 512x512 decode in f16 does (above
    /// [`VaeTiling::AUTO_ABOVE`] pixels in f16, half that in f32 — SDXL's VAE), or where a
    /// whole-image buffer would exceed the adapter's binding limit.
    #[default]
    Auto,
    /// The whole image at once.
    Off,
    /// Tiles of this many latent pixels square (8 image pixels each for SD's VAE).
    Tiles(usize),
}

impl VaeTiling {
    /// Tile side in latent pixels when tiling is on without a size.
    pub const DEFAULT_TILE: usize = 32;
    /// Auto tiles images with more pixels than this in f16 (half as many in f32).
    pub const AUTO_ABOVE: usize = 512 * 512;

    /// The tile (latent pixels) to decode a `width` x `height` image with, or None for the
    /// whole image; `value_bytes` is the VAE's activation size (2 for f16, 4 for f32) and
    /// `whole_fits` says whether the untiled decode's buffers fit the adapter.
    pub fn tile_for(
        self,
        width: usize,
        height: usize,
        value_bytes: usize,
        whole_fits: bool,
    ) -> Option<usize> {
        let large = width * height * value_bytes > Self::AUTO_ABOVE * 2;
        match self {
            VaeTiling::Off => None,
            VaeTiling::Tiles(t) => Some(t.max(1)),
            VaeTiling::Auto if large || !whole_fits => Some(Self::DEFAULT_TILE),
            VaeTiling::Auto => None,
        }
    }
}

impl Request {
    pub fn txt2img(prompt: &str, seed: u64, steps: usize, sampler: Sampler, cfg_scale: f32) -> Request {
        let recipe = Recipe {
            prompt: prompt.into(),
            seed: Some(seed),
            steps,
            sampler,
            cfg_scale,
            ..Recipe::default()
        };
        Request {
            recipe,
            init_image: None,
            init_latents: None,
            mask: None,
            live_preview: false,
            vae_tiling: VaeTiling::Auto,
            controls: Vec::new(),
            embeddings: Vec::new(),
        }
    }

    /// A recipe's run with the images its `init` and `mask` refer to, as given: outpainting
    /// extends the init image by the recipe's margins and makes the mask here.
    pub fn new(
        recipe: Recipe,
        init_image: Option<Image>,
        mask: Option<Image>,
    ) -> Result<Request, PipelineError> {
        let (init_image, mask) = match (recipe.outpaint, init_image) {
            (Some(margins), Some(init)) => {
                let (canvas, new_mask) = outpaint_canvas(&init, margins, OUTPAINT_OVERLAP)?;
                (Some(canvas), Some(new_mask))
            }
            (_, init) => (init, mask),
        };
        Ok(Request {
            recipe,
            init_image,
            init_latents: None,
            mask,
            live_preview: false,
            vae_tiling: VaeTiling::Auto,
            controls: Vec::new(),
            embeddings: Vec::new(),
        })
    }
}

/// How far outpainting's mask reaches into the original image, so the seam is redrawn too.
pub const OUTPAINT_OVERLAP: usize = 8;

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
    /// A draft's final latents, written into its PNG for finishing later.
    pub kept: Option<crate::draft::Kept>,
}

impl Generated {
    pub fn new(image: Image, params: GenerationParams) -> Generated {
        Generated { image, params, kept: None }
    }

    /// PNG bytes with the A1111 `parameters` chunk (and a draft's latents).
    pub fn to_png(&self) -> Result<Vec<u8>, PipelineError> {
        let (w, h) = (self.image.width as u32, self.image.height as u32);
        let png = crate::metadata::encode_png(&self.image.rgba, w, h, &self.params)?;
        match &self.kept {
            Some(kept) => kept.attach(&png),
            None => Ok(png),
        }
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

    #[test]
    fn auto_tiling_follows_the_decode_s_size_in_bytes() {
        let auto = VaeTiling::Auto;
        // f16: whole up to 512x512, tiled above.
        assert_eq!(auto.tile_for(512, 512, 2, true), None);
        assert_eq!(auto.tile_for(576, 512, 2, true), Some(VaeTiling::DEFAULT_TILE));
        // f32 (SDXL's VAE) holds twice the bytes: tiled from 512x512, whole at 360x360.
        assert_eq!(auto.tile_for(512, 512, 4, true), Some(VaeTiling::DEFAULT_TILE));
        assert_eq!(auto.tile_for(360, 360, 4, true), None);
        // A whole image that would not fit the adapter is tiled at any size; off and a size
        // are taken as asked.
        assert_eq!(auto.tile_for(64, 64, 2, false), Some(VaeTiling::DEFAULT_TILE));
        assert_eq!(VaeTiling::Off.tile_for(2048, 2048, 4, false), None);
        assert_eq!(VaeTiling::Tiles(0).tile_for(64, 64, 2, true), Some(1));
    }
}
