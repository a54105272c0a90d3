//! Control-map preprocessors and the resize the ControlNet pipelines apply, on the CPU (they
//! are integer image operations that take milliseconds at generation sizes):
//!
//! - [`canny`]: OpenCV's `cv2.Canny(image, low, high)` on an RGB image (3x3 Sobel with
//!   replicated borders per channel, the channel of largest L1 gradient, non-maximum suppression
//!   in four sectors, hysteresis over 8-connected pixels), white edges on black;
//! - [`lineart`]: A1111 ControlNet's `lineart_standard` (how much darker each pixel is than
//!   its Gaussian blur, σ 6, over the median of that darkness), white lines on black;
//! - [`scribble`]: a drawing or line image as the scribble models take it: white lines on black;
//! - [`resize_lanczos`]: PIL's `Image.resize(size, LANCZOS)` on 8-bit RGB, bit for bit (two
//!   separable passes with 22-bit fixed-point coefficients), which diffusers' control image
//!   processor applies to a control image of another size than the output.

use crate::request::Image;
use crate::PipelineError;

/// The preprocessor a control unit runs on its image before the ControlNet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocessor {
    /// The image is the control map already.
    #[default]
    None,
    Canny,
    Lineart,
    Scribble,
    Depth,
    /// The image itself, resized to the output (ControlNet tile models).
    Tile,
}

impl Preprocessor {
    pub const ALL: [Preprocessor; 6] = [
        Preprocessor::None,
        Preprocessor::Canny,
        Preprocessor::Lineart,
        Preprocessor::Scribble,
        Preprocessor::Depth,
        Preprocessor::Tile,
    ];

    /// The CLI's and the recipe's name.
    pub fn id(self) -> &'static str {
        match self {
            Preprocessor::None => "none",
            Preprocessor::Canny => "canny",
            Preprocessor::Lineart => "lineart",
            Preprocessor::Scribble => "scribble",
            Preprocessor::Depth => "depth",
            Preprocessor::Tile => "tile",
        }
    }

    /// The module name A1111's ControlNet extension writes in the infotext.
    pub fn a1111_module(self) -> &'static str {
        match self {
            Preprocessor::None => "none",
            Preprocessor::Canny => "canny",
            Preprocessor::Lineart => "lineart_standard (from white bg & black line)",
            Preprocessor::Scribble => "scribble_xdog",
            Preprocessor::Depth => "depth_anything_v2",
            Preprocessor::Tile => "tile_resample",
        }
    }

    /// From an id or an A1111 module name (the extension's names vary by version: any module of
    /// the family is taken).
    pub fn from_name(name: &str) -> Option<Preprocessor> {
        let n = name.trim().to_ascii_lowercase();
        if let Some(p) = Preprocessor::ALL.iter().find(|p| p.id() == n || p.a1111_module() == n) {
            return Some(*p);
        }
        let family = |prefix: &str| n.starts_with(prefix);
        Some(match () {
            _ if family("canny") => Preprocessor::Canny,
            _ if family("lineart") || n == "invert (from white bg & black line)" => Preprocessor::Lineart,
            _ if family("scribble") => Preprocessor::Scribble,
            _ if family("depth") => Preprocessor::Depth,
            _ if family("tile") => Preprocessor::Tile,
            _ => return None,
        })
    }
}

impl std::str::FromStr for Preprocessor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preprocessor::from_name(s).ok_or_else(|| {
            let ids: Vec<&str> = Preprocessor::ALL.iter().map(|p| p.id()).collect();
            format!("unknown preprocessor `{s}`; one of {}", ids.join(", "))
        })
    }
}

/// Runs `pre` on `image` at the image's own size. `low`/`high` are Canny's thresholds.
pub fn run(pre: Preprocessor, image: &Image, low: f64, high: f64) -> Result<Image, PipelineError> {
    check(image)?;
    match pre {
        Preprocessor::None | Preprocessor::Tile => Ok(opaque(image)),
        Preprocessor::Canny => Ok(canny(image, low, high)),
        Preprocessor::Scribble => Ok(scribble(image)),
        Preprocessor::Lineart => Ok(lineart(image)),
        Preprocessor::Depth => Err(PipelineError::Input(
            "the depth preprocessor runs Depth Anything: load it (darkroom_pipeline::depth::DepthModel) and make the map with it".into(),
        )),
    }
}

pub(crate) fn check(image: &Image) -> Result<(), PipelineError> {
    if image.width == 0 || image.height == 0 || image.rgba.len() != image.width * image.height * 4 {
        return Err(PipelineError::Input("the control image is empty or damaged".into()));
    }
    Ok(())
}

/// The image with alpha dropped (PIL's `convert("RGB")` keeps the colour values as they are).
fn opaque(image: &Image) -> Image {
    let rgba = image.rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    Image { width: image.width, height: image.height, rgba }
}

pub(crate) fn grey_image(width: usize, height: usize, values: impl Iterator<Item = u8>) -> Image {
    Image { width, height, rgba: values.flat_map(|v| [v, v, v, 255]).collect() }
}

/// `cv2.Canny` of the RGB channels (alpha ignored) with L1 gradients and a 3x3 aperture:
/// 255 on edges, 0 elsewhere, as an RGB image. Thresholds are swapped if `low > high`, and
/// floored, as OpenCV takes them.
pub fn canny(image: &Image, low: f64, high: f64) -> Image {
    let (w, h) = (image.width, image.height);
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    let (low, high) = (low.floor() as i32, high.floor() as i32);
    let px = |x: isize, y: isize, c: usize| -> i32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        image.rgba[(y * w + x) * 4 + c] as i32
    };
    // Per pixel: the channel with the largest |dx| + |dy| (the first on ties), its dx and dy.
    let mut mag = vec![0i32; w * h];
    let mut gx = vec![0i32; w * h];
    let mut gy = vec![0i32; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let mut best = (-1, 0, 0);
            for c in 0..3 {
                let p = |dx: isize, dy: isize| px(x + dx, y + dy, c);
                let dx = (p(1, -1) - p(-1, -1)) + 2 * (p(1, 0) - p(-1, 0)) + (p(1, 1) - p(-1, 1));
                let dy = (p(-1, 1) - p(-1, -1)) + 2 * (p(0, 1) - p(0, -1)) + (p(1, 1) - p(1, -1));
                let m = dx.abs() + dy.abs();
                if m > best.0 {
                    best = (m, dx, dy);
                }
            }
            let i = y as usize * w + x as usize;
            (mag[i], gx[i], gy[i]) = best;
        }
    }
    // Magnitude outside the image is 0 for the comparisons.
    let at = |x: isize, y: isize| -> i32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    // tan(22.5°) in 15-bit fixed point, as OpenCV.
    const SHIFT: i64 = 15;
    let tg22 = (0.414_213_562_373_095_05 * (1 << SHIFT) as f64 + 0.5) as i64;
    // 0: not an edge; 1: a candidate (a local maximum above `low`); 2: an edge.
    let mut state = vec![0u8; w * h];
    let mut stack = Vec::new();
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (gx[i] as i64, gy[i] as i64);
            let ax = xs.abs();
            let ay = ys.abs() << SHIFT;
            let tg22x = ax * tg22;
            let maximum = if ay < tg22x {
                m > at(x - 1, y) && m >= at(x + 1, y)
            } else {
                let tg67x = tg22x + (ax << (SHIFT + 1));
                if ay > tg67x {
                    m > at(x, y - 1) && m >= at(x, y + 1)
                } else {
                    let s = if (xs ^ ys) < 0 { -1 } else { 1 };
                    m > at(x - s, y - 1) && m > at(x + s, y + 1)
                }
            };
            if !maximum {
                continue;
            }
            if m > high {
                state[i] = 2;
                stack.push(i);
            } else {
                state[i] = 1;
            }
        }
    }
    // Hysteresis: candidates 8-connected to an edge become edges.
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if state[j] == 1 {
                    state[j] = 2;
                    stack.push(j);
                }
            }
        }
    }
    grey_image(w, h, state.into_iter().map(|s| if s == 2 { 255 } else { 0 }))
}

/// OpenCV's `GaussianBlur(x, (0, 0), sigma)` of one float plane: a kernel of
/// `round(8 sigma + 1) | 1` taps, rows then columns, reflected borders (`BORDER_REFLECT_101`).
fn gaussian_blur(plane: &[f32], w: usize, h: usize, sigma: f64) -> Vec<f32> {
    let taps = ((sigma * 8.0 + 1.0).round() as usize) | 1;
    let half = (taps / 2) as isize;
    let raw: Vec<f64> =
        (0..taps).map(|i| (-((i as f64 - half as f64).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f64 = raw.iter().sum();
    let kernel: Vec<f64> = raw.iter().map(|k| k / sum).collect();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - m }) as usize
    };
    // One pass along the rows or along the columns.
    let pass = |src: &[f32], along_rows: bool| -> Vec<f32> {
        let mut out = vec![0.0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let acc: f64 = kernel
                    .iter()
                    .enumerate()
                    .map(|(t, k)| {
                        let i = if along_rows {
                            y * w + reflect(x as isize + t as isize - half, w)
                        } else {
                            reflect(y as isize + t as isize - half, h) * w + x
                        };
                        k * src[i] as f64
                    })
                    .sum();
                out[y * w + x] = acc as f32;
            }
        }
        out
    };
    pass(&pass(plane, true), false)
}

/// A1111 ControlNet's `lineart_standard` at the image's own size: per pixel the least, over
/// R, G and B, of how much darker it is than its Gaussian blur (σ 6), clipped to [0, 255],
/// divided by the median of the values above 8 (at least 16), times 127, truncated to 8 bits.
pub fn lineart(image: &Image) -> Image {
    let (w, h) = (image.width, image.height);
    let mut darkness = vec![f32::INFINITY; w * h];
    for c in 0..3 {
        let plane: Vec<f32> = image.rgba.chunks_exact(4).map(|p| p[c] as f32).collect();
        let blurred = gaussian_blur(&plane, w, h, 6.0);
        for i in 0..w * h {
            darkness[i] = darkness[i].min(blurred[i] - plane[i]);
        }
    }
    for d in darkness.iter_mut() {
        *d = d.clamp(0.0, 255.0);
    }
    let mut strong: Vec<f32> = darkness.iter().copied().filter(|&d| d > 8.0).collect();
    let median = if strong.is_empty() {
        f32::NAN
    } else {
        strong.sort_by(f32::total_cmp);
        let n = strong.len();
        if n % 2 == 1 {
            strong[n / 2]
        } else {
            (strong[n / 2 - 1] + strong[n / 2]) / 2.0
        }
    };
    // numpy's max(16, nan) is 16: an image without lines divides by 16.
    let scale = if median.is_nan() { 16.0 } else { median.max(16.0) };
    grey_image(w, h, darkness.into_iter().map(|d| (d / scale * 127.0).clamp(0.0, 255.0) as u8))
}

/// PIL's RGB → L: (R·19595 + G·38470 + B·7471 + 0x8000) >> 16, a byte a pixel.
pub fn pil_grey(image: &Image) -> Vec<u8> {
    image
        .rgba
        .chunks_exact(4)
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect()
}

/// White lines on black: the image's grey (PIL's weights) thresholded at the middle, inverted
/// when most of it is light (a drawing in dark strokes on a white page).
pub fn scribble(image: &Image) -> Image {
    let grey = pil_grey(image);
    let light = grey.iter().filter(|&&g| g >= 128).count();
    let invert = light * 2 > grey.len();
    let values = grey.into_iter().map(|g| if (g >= 128) != invert { 255 } else { 0 });
    grey_image(image.width, image.height, values)
}

/// PIL's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn lanczos(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let px = x * std::f64::consts::PI;
            px.sin() / px
        }
    };
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// PIL's resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Lanczos,
    /// Cubic convolution with a = -0.5, as PIL's BICUBIC.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Lanczos => lanczos(x),
            Filter::Bicubic => {
                let (a, x) = (-0.5, x.abs());
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

/// For each output index: the first input index and its fixed-point weights.
fn coefficients(input: usize, output: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let min = ((center - support + 0.5) as i64).max(0) as usize;
            let max = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let weights: Vec<f64> =
                (min..max).map(|x| filter.weight((x as f64 - center + 0.5) / filter_scale)).collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL's `resize((width, height), Image.LANCZOS)` of the RGB channels (alpha set opaque):
/// horizontal pass, then vertical, each rounded to 8 bits, each skipped when its side does not
/// change.
pub fn resize_lanczos(image: &Image, width: usize, height: usize) -> Image {
    resize_pil(image, width, height, Filter::Lanczos)
}

/// PIL's `resize((width, height), filter)` of the RGB channels (alpha set opaque).
pub fn resize_pil(image: &Image, width: usize, height: usize, filter: Filter) -> Image {
    let (w, h) = (image.width, image.height);
    let mut rgb: Vec<u8> = image.rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let round = 1i64 << (PRECISION_BITS - 1);
    let mut cur_w = w;
    if width != w {
        let coeffs = coefficients(w, width, filter);
        let mut out = vec![0u8; width * h * 3];
        for y in 0..h {
            for (x, (start, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = round;
                    for (t, &kt) in k.iter().enumerate() {
                        acc += rgb[(y * w + start + t) * 3 + c] as i64 * kt as i64;
                    }
                    out[(y * width + x) * 3 + c] = clip8(acc);
                }
            }
        }
        rgb = out;
        cur_w = width;
    }
    if height != h {
        let coeffs = coefficients(h, height, filter);
        let mut out = vec![0u8; cur_w * height * 3];
        for (y, (start, k)) in coeffs.iter().enumerate() {
            for x in 0..cur_w {
                for c in 0..3 {
                    let mut acc = round;
                    for (t, &kt) in k.iter().enumerate() {
                        acc += rgb[((start + t) * cur_w + x) * 3 + c] as i64 * kt as i64;
                    }
                    out[(y * cur_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        rgb = out;
    }
    Image { width, height, rgba: rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect() }
}

/// CLIP's mean and standard deviation per channel (OpenAI's, as CLIPImageProcessor's defaults).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

/// CLIPImageProcessor's preprocessing for a `size`-pixel vision tower: the shorter side resized to
/// `size` (the longer to `size · long / short`, truncated) with bicubic filtering, the centre
/// `size`² cropped, scaled to 0..1 and normalised with CLIP's mean and std; planar [3, size, size].
/// The resize is PIL's bicubic; transformers 5 resizes with torchvision's antialiased bicubic on
/// 8-bit pixels, which differs from PIL's by at most one level.
pub fn clip_pixels(image: &Image, size: usize) -> Vec<f32> {
    let (w, h) = (image.width.max(1), image.height.max(1));
    let (nw, nh) = if w <= h { (size, size * h / w) } else { (size * w / h, size) };
    let resized = resize_pil(image, nw.max(size), nh.max(size), Filter::Bicubic);
    let (top, left) = ((resized.height - size) / 2, (resized.width - size) / 2);
    let mut out = vec![0.0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let p = &resized.rgba[((top + y) * resized.width + left + x) * 4..][..3];
            for c in 0..3 {
                out[c * size * size + y * size + x] = (p[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_names_round_trip_and_a1111_modules_parse() {
        for p in Preprocessor::ALL {
            assert_eq!(p.id().parse::<Preprocessor>().unwrap(), p);
            assert_eq!(Preprocessor::from_name(p.a1111_module()), Some(p));
        }
        assert_eq!(Preprocessor::from_name("depth_midas"), Some(Preprocessor::Depth));
        assert_eq!(Preprocessor::from_name("lineart_realistic"), Some(Preprocessor::Lineart));
        assert!("openpose".parse::<Preprocessor>().unwrap_err().contains("canny"));
    }

    #[test]
    fn scribble_is_white_lines_on_black_either_way_round() {
        // A dark stroke on a white page, and the same as a light stroke on black.
        let page: Vec<u8> =
            (0..16).flat_map(|i| if i % 4 == 1 { [0, 0, 0, 255] } else { [250, 250, 250, 255] }).collect();
        let a = scribble(&Image { width: 4, height: 4, rgba: page.clone() });
        let inverted: Vec<u8> =
            page.chunks(4).flat_map(|p| [255 - p[0], 255 - p[1], 255 - p[2], 255]).collect();
        let b = scribble(&Image { width: 4, height: 4, rgba: inverted });
        assert_eq!(a, b);
        assert_eq!(a.rgba[4], 255, "the stroke is white");
        assert_eq!(a.rgba[0], 0, "the page is black");
    }

    #[test]
    fn a_resize_to_the_same_size_changes_nothing() {
        let img = Image { width: 3, height: 2, rgba: (0..24).map(|v| (v * 10) as u8).collect() };
        let same = resize_lanczos(&img, 3, 2);
        let want: Vec<u8> = img.rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        assert_eq!(same.rgba, want);
    }
}
