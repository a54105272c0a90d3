//! Upscaling an image with an ESRGAN-family model ([`darkroom_models::upscale::Upscaler`]) at any
//! size: whole when it fits, else in overlapping tiles, each computed with a margin of image
//! around it and blended with feathered weights, so the GPU never holds more than one tile's
//! activations. RGB in [0, 1] as spandrel takes it; the
//! output is clamped and rounded to 8 bits, opaque.

use darkroom_gpu::{Gpu, Tensor};
use darkroom_models::upscale::{Architecture, Upscaler};

use crate::request::Image;
use crate::PipelineError;

/// An upscaler from its weights file's bytes (`.pth` as `torch.save` writes it, read by the
/// restricted reader, or `.safetensors`), its architecture read from the names and shapes, with
/// `dtype` activations.
pub fn load_upscaler(
    gpu: &Gpu,
    bytes: Vec<u8>,
    dtype: darkroom_gpu::DType,
) -> Result<Upscaler, PipelineError> {
    use darkroom_models::upscale::{weights_file, UpscalerInfo};
    use darkroom_models::{QuantPolicy, WeightStore};
    let store = WeightStore::from_bytes(weights_file(bytes)?)?;
    let info = UpscalerInfo::detect(store.header())?;
    let policy = if dtype == darkroom_gpu::DType::F16 { QuantPolicy::F16 } else { QuantPolicy::F32 };
    let model = Upscaler::load(&store.root(gpu, dtype, policy), info)?;
    store.require_all_used()?;
    Ok(model)
}

/// An upscaled image as a PNG carrying what A1111's Extras tab writes: the source's own
/// parameters (when `source_png` has any) with `Postprocess upscale by` and `Postprocess
/// upscaler` added; a plain PNG when the source had none.
pub fn upscaled_png(
    image: &Image,
    source_png: Option<&[u8]>,
    scale: usize,
    upscaler: &str,
) -> Result<Vec<u8>, PipelineError> {
    use crate::metadata::{encode_png, encode_png_plain, read_parameters, GenerationParams};
    let (w, h) = (image.width as u32, image.height as u32);
    let params = source_png
        .and_then(|png| read_parameters(png).ok())
        .and_then(|text| GenerationParams::parse_infotext(&text).ok());
    Ok(match params {
        Some(mut p) => {
            p.extra.retain(|(k, _)| k != "Postprocess upscale by" && k != "Postprocess upscaler");
            p.extra.push(("Postprocess upscale by".into(), scale.to_string()));
            p.extra.push(("Postprocess upscaler".into(), upscaler.to_string()));
            encode_png(&image.rgba, w, h, &p)?
        }
        None => encode_png_plain(&image.rgba, w, h)?,
    })
}

/// Overlap between neighbouring tiles, in input pixels (blended with feathered weights).
pub const OVERLAP: usize = 16;
/// Image pixels around each tile that the model sees and that are then cut away: RRDBNet's
/// receptive field reaches tens of pixels, so a tile's edge computed without them would differ.
pub const CONTEXT: usize = 24;
/// The tile side (input pixels) when none is asked for: big enough to keep tile seams rare on
/// generation-sized images, small enough that a 64-channel RRDB's activations per tile stay
/// within common binding limits.
pub const DEFAULT_TILE: usize = 256;

/// `(start, length)` of tiles covering `0..size` with `tile`-long tiles overlapping by `overlap`,
/// starts and lengths multiples of `align` (the model's unshuffle factor).
pub fn spans(size: usize, tile: usize, overlap: usize, align: usize) -> Vec<(usize, usize)> {
    if size <= tile {
        return vec![(0, size)];
    }
    let step = ((tile - overlap.min(tile / 2)) / align * align).max(align);
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        if start + tile >= size {
            // The last tile ends at the edge (moved back onto aligned ground).
            let last = (size.saturating_sub(tile)) / align * align;
            out.push((last, size - last));
            break;
        }
        out.push((start, tile));
        start += step;
    }
    out.dedup();
    out
}

/// A feather weight along one axis of a tile: ramps from ~0 to 1 over `overlap` output pixels
/// on a side that meets another tile, 1 on a side at the image's edge.
fn ramp(len: usize, overlap: usize, lead: bool, trail: bool) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let mut w = 1.0f32;
            if lead && overlap > 0 {
                w = w.min((i as f32 + 0.5) / overlap as f32);
            }
            if trail && overlap > 0 {
                w = w.min((len - i) as f32 / overlap as f32 - 0.5 / overlap as f32);
            }
            w.clamp(1e-3, 1.0)
        })
        .collect()
}

/// Tiles blended into one image: each tile's values weighted by feather ramps over `overlap`
/// pixels on the sides where it meets another tile, the sum normalised by the weights.
pub struct Blend {
    width: usize,
    height: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

/// Where a tile sits among its neighbours: whether tiles come before and after it on each axis.
#[derive(Debug, Clone, Copy)]
pub struct Neighbours {
    pub left: bool,
    pub right: bool,
    pub top: bool,
    pub bottom: bool,
}

impl Neighbours {
    /// Tile `(xi, yi)` of a grid `columns` x `rows`.
    pub fn in_grid(xi: usize, yi: usize, columns: usize, rows: usize) -> Neighbours {
        Neighbours { left: xi > 0, right: xi + 1 < columns, top: yi > 0, bottom: yi + 1 < rows }
    }
}

impl Blend {
    pub fn new(width: usize, height: usize) -> Blend {
        Blend { width, height, sum: vec![0.0; 3 * width * height], weight: vec![0.0; width * height] }
    }

    /// Adds a `tw` x `th` tile at (`x0`, `y0`); `value(x, y, c)` is its value in [0, 1].
    pub fn add(
        &mut self,
        (x0, y0): (usize, usize),
        (tw, th): (usize, usize),
        overlap: usize,
        n: Neighbours,
        value: impl Fn(usize, usize, usize) -> f32,
    ) {
        let wx = ramp(tw, overlap, n.left, n.right);
        let wy = ramp(th, overlap, n.top, n.bottom);
        let plane = self.width * self.height;
        for (y, &wgt_y) in wy.iter().enumerate() {
            for (x, &wgt_x) in wx.iter().enumerate() {
                let wgt = wgt_x * wgt_y;
                let o = (y0 + y) * self.width + x0 + x;
                for c in 0..3 {
                    self.sum[c * plane + o] += wgt * value(x, y, c);
                }
                self.weight[o] += wgt;
            }
        }
    }

    /// The blended image, clamped and rounded to 8 bits, opaque.
    pub fn finish(self) -> Image {
        let plane = self.width * self.height;
        let mut rgba = vec![255u8; plane * 4];
        for o in 0..plane {
            for c in 0..3 {
                let v = self.sum[c * plane + o] / self.weight[o].max(1e-12);
                rgba[o * 4 + c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Image { width: self.width, height: self.height, rgba }
    }
}

/// Upscales `image` by the model's scale. `tile`: the tile side in input pixels (`None`: whole
/// when the image is no larger than [`DEFAULT_TILE`], else tiles of that size). `progress`
/// sees (tiles done, tiles); returning `false` cancels.
pub async fn upscale(
    gpu: &Gpu,
    model: &Upscaler,
    dtype: darkroom_gpu::DType,
    image: &Image,
    tile: Option<usize>,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Image, PipelineError> {
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 || image.rgba.len() != w * h * 4 {
        return Err(PipelineError::Input("the image to upscale is empty or damaged".into()));
    }
    let s = model.info.scale;
    // Models that unshuffle their input take sides divisible by 4, padded by reflection at the
    // right and bottom as spandrel pads them (whatever the factor); tiles start on that grid.
    let align = match model.info.architecture {
        Architecture::Rrdb { unshuffle, .. } if unshuffle > 1 => 4,
        _ => 1,
    };
    let tile = tile.unwrap_or(DEFAULT_TILE);
    if tile < 8 || tile < 2 * align {
        return Err(PipelineError::Input(format!("a tile of {tile} pixels is too small; use at least 8")));
    }
    let tile = tile / align * align;
    let (ow, oh) = (w * s, h * s);
    let xs = spans(w, tile, OVERLAP, align);
    let ys = spans(h, tile, OVERLAP, align);
    let total = xs.len() * ys.len();
    let mut blend = Blend::new(ow, oh);
    let mut done = 0;
    for (yi, &(y0, th)) in ys.iter().enumerate() {
        for (xi, &(x0, tw)) in xs.iter().enumerate() {
            if !progress(done, total) {
                return Err(PipelineError::Cancelled);
            }
            // The tile with `CONTEXT` more pixels of the image around it (cut away after), so
            // the model sees what its receptive field needs; padded by reflection to the
            // model's factor as spandrel pads.
            let (ex0, ey0) =
                ((x0.saturating_sub(CONTEXT)) / align * align, (y0.saturating_sub(CONTEXT)) / align * align);
            let (ex1, ey1) = ((x0 + tw + CONTEXT).min(w), (y0 + th + CONTEXT).min(h));
            let (ew, eh) = (ex1 - ex0, ey1 - ey0);
            let (pw, ph) = (ew.div_ceil(align) * align, eh.div_ceil(align) * align);
            let reflect =
                |i: usize, n: usize| if i < n { i } else { (2 * n).saturating_sub(i + 2).min(n - 1) };
            let mut planar = vec![0.0f32; 3 * pw * ph];
            for y in 0..ph {
                for x in 0..pw {
                    let (sx, sy) = (ex0 + reflect(x, ew), ey0 + reflect(y, eh));
                    let p = &image.rgba[(sy * w + sx) * 4..];
                    for c in 0..3 {
                        planar[c * pw * ph + y * pw + x] = p[c] as f32 / 255.0;
                    }
                }
            }
            let input = Tensor::from_f32(gpu, &[1, 3, ph, pw], &planar, dtype)?;
            let out = model.forward(gpu, &input)?.read_f32(gpu).await?;
            let (ox, oy) = ((x0 - ex0) * s, (y0 - ey0) * s);
            let (out_w, out_plane) = (pw * s, pw * s * ph * s);
            let neighbours = Neighbours::in_grid(xi, yi, xs.len(), ys.len());
            blend.add((x0 * s, y0 * s), (tw * s, th * s), OVERLAP * s, neighbours, |x, y, c| {
                out[c * out_plane + (oy + y) * out_w + ox + x]
            });
            done += 1;
        }
    }
    progress(total, total);
    Ok(blend.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_image_aligned_and_overlapping() {
        assert_eq!(spans(100, 256, 16, 1), vec![(0, 100)]);
        let s = spans(100, 40, 16, 4);
        assert_eq!(s.first(), Some(&(0, 40)));
        assert_eq!(s.last().map(|(a, l)| a + l), Some(100), "{s:?}");
        for pair in s.windows(2) {
            assert!(pair[1].0 < pair[0].0 + pair[0].1, "overlap {s:?}");
            assert!(pair[1].0 % 4 == 0, "aligned {s:?}");
        }
    }

    #[test]
    fn feather_weights_ramp_only_where_tiles_meet() {
        let w = ramp(10, 4, true, false);
        assert!(w[0] < 0.2 && w[3] < 1.0 && w[4] == 1.0 && w[9] == 1.0, "{w:?}");
        assert!(ramp(6, 4, false, false).iter().all(|&v| v == 1.0));
    }
}

/// How the hires fix resizes latents (A1111's "Latent" upscalers, torch's `interpolate` without
/// antialiasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentScale {
    /// "Latent": bilinear, half-pixel centres (`align_corners=False`).
    Bilinear,
    /// "Latent (nearest)": the source pixel `floor(dst · in / out)`.
    Nearest,
}

/// Latents `[c, h, w]` (planar) resized to `[c, oh, ow]` as torch's `interpolate(size=…)` does.
pub fn resize_latents(
    values: &[f32],
    [c, h, w]: [usize; 3],
    (oh, ow): (usize, usize),
    mode: LatentScale,
) -> Vec<f32> {
    let mut out = vec![0.0; c * oh * ow];
    // In f32, as torch computes the source positions of f32 tensors.
    let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
    // Per output coordinate: the two source indices and the weight of the second.
    let taps = |n_in: usize, n_out: usize, scale: f32| -> Vec<(usize, usize, f32)> {
        (0..n_out)
            .map(|o| match mode {
                LatentScale::Nearest => {
                    let i = ((o as f32 * scale).floor() as usize).min(n_in - 1);
                    (i, i, 0.0)
                }
                LatentScale::Bilinear => {
                    let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(n_in - 1);
                    let i1 = (i0 + 1).min(n_in - 1);
                    (i0, i1, src - i0 as f32)
                }
            })
            .collect()
    };
    let (ys, xs) = (taps(h, oh, sy), taps(w, ow, sx));
    for ch in 0..c {
        let plane = &values[ch * h * w..(ch + 1) * h * w];
        for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
            for (ox, &(x0, x1, lx)) in xs.iter().enumerate() {
                let at = |y: usize, x: usize| plane[y * w + x];
                let top = at(y0, x0) * (1.0 - lx) + at(y0, x1) * lx;
                let bottom = at(y1, x0) * (1.0 - lx) + at(y1, x1) * lx;
                out[(ch * oh + oy) * ow + ox] = top * (1.0 - ly) + bottom * ly;
            }
        }
    }
    out
}

/// The hires fix's latent upscale: `latents` [1, C, h, w] (one image's) resized to the second
/// pass's `width` x `height` (in latent pixels, /8) by the hires upscaler's mode.
pub fn hires_latents(
    hires: &crate::Hires,
    latents: &[f32],
    [_, c, h, w]: [usize; 4],
    (width, height): (usize, usize),
) -> Result<Vec<f32>, PipelineError> {
    let mode = hires
        .latent()
        .ok_or_else(|| PipelineError::Input(format!("{} is not a latent upscaler", hires.upscaler)))?;
    if latents.len() != c * h * w {
        return Err(PipelineError::Input(format!("{} latent values for [1, {c}, {h}, {w}]", latents.len())));
    }
    Ok(resize_latents(latents, [c, h, w], (height / 8, width / 8), mode))
}

#[cfg(test)]
mod latent_tests {
    use super::*;

    #[test]
    fn latents_resize_as_torch_interpolate() {
        // torch.nn.functional.interpolate of [[0, 1], [2, 3]] to 4x4 (align_corners=False):
        // bilinear samples at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (past the edge: the last).
        let x = [0.0, 1.0, 2.0, 3.0];
        let bilinear = resize_latents(&x, [1, 2, 2], (4, 4), LatentScale::Bilinear);
        let row = |r: [f32; 4]| r.to_vec();
        let want: Vec<f32> = [
            row([0.0, 0.25, 0.75, 1.0]),
            row([0.5, 0.75, 1.25, 1.5]),
            row([1.5, 1.75, 2.25, 2.5]),
            row([2.0, 2.25, 2.75, 3.0]),
        ]
        .concat();
        assert_eq!(bilinear, want);
        // nearest: source floor(dst * in / out).
        let nearest = resize_latents(&x, [1, 2, 2], (4, 4), LatentScale::Nearest);
        assert_eq!(nearest, [0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.]);
        // Channels stay apart; 1.5x picks floor(0, 0.67, 1.33) = 0, 0, 1.
        let two = [1.0, 2.0, 10.0, 20.0];
        assert_eq!(
            resize_latents(&two, [2, 1, 2], (1, 3), LatentScale::Nearest),
            [1., 1., 2., 10., 10., 20.]
        );
    }
}
