//! Measures of a finished image that need no model: sharpness, clipped highlights and shadows,
//! adherence to a palette (ΔE in CIELAB), and a perceptual hash for near-duplicates. The CLI's
//! `darkroom score` and the app's culling both use them; each matches the library the issue
//! names (OpenCV, imagehash) on the same pixels.

use crate::Image;

/// Variance of the Laplacian of the grey image, as `cv2.Laplacian(cv2.cvtColor(img,
/// cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()`: higher is sharper.
pub fn sharpness(image: &Image) -> f64 {
    let (w, h) = (image.width, image.height);
    // OpenCV's 8-bit RGB→grey: 14-bit fixed-point weights, rounded.
    let grey: Vec<i32> = image
        .rgba
        .chunks_exact(4)
        .map(|p| (p[0] as i32 * 4899 + p[1] as i32 * 9617 + p[2] as i32 * 1868 + (1 << 13)) >> 14)
        .collect();
    // BORDER_REFLECT_101: -1 → 1, n → n - 2.
    let reflect = |i: isize, n: usize| -> usize {
        if n == 1 {
            0
        } else if i < 0 {
            (-i) as usize
        } else if i as usize >= n {
            2 * (n - 1) - i as usize
        } else {
            i as usize
        }
    };
    let at = |x: isize, y: isize| grey[reflect(y, h) * w + reflect(x, w)] as f64;
    let mut values = Vec::with_capacity(w * h);
    for y in 0..h as isize {
        for x in 0..w as isize {
            values.push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len().max(1) as f64
}

/// The perceptual hash the imagehash library computes (`phash`, hash size 8): PIL's grey, a
/// 32x32 Lanczos resize, a 2-D DCT-II (scipy's, unnormalised), the top-left 8x8 compared with its
/// median; bits row by row, the first the most significant.
pub fn phash(image: &Image) -> u64 {
    let grey = crate::preprocess::pil_grey(image);
    let grey_image = Image {
        width: image.width,
        height: image.height,
        rgba: grey.iter().flat_map(|&g| [g, g, g, 255]).collect(),
    };
    let small = crate::preprocess::resize_lanczos(&grey_image, 32, 32);
    let x: Vec<f64> = small.rgba.chunks_exact(4).map(|p| p[0] as f64).collect();
    let n = 32;
    let cos: Vec<f64> = (0..n * n)
        .map(|i| (std::f64::consts::PI * (i / n) as f64 * (2 * (i % n) + 1) as f64 / (2 * n) as f64).cos())
        .collect();
    // Along the columns (axis 0), then the rows (axis 1); only the 8 lowest frequencies each way.
    let mut cols = vec![0.0f64; 8 * n];
    for k in 0..8 {
        for c in 0..n {
            cols[k * n + c] = 2.0 * (0..n).map(|r| x[r * n + c] * cos[k * n + r]).sum::<f64>();
        }
    }
    let mut low = [0.0f64; 64];
    for k in 0..8 {
        for l in 0..8 {
            low[k * 8 + l] = 2.0 * (0..n).map(|c| cols[k * n + c] * cos[l * n + c]).sum::<f64>();
        }
    }
    let mut sorted = low;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    low.iter().fold(0u64, |hash, &v| (hash << 1) | (v > median) as u64)
}

/// Hashes at most this many bits apart are near-duplicates.
pub const DUPLICATE_BITS: u32 = 6;

/// Shares of pixels blown out (a channel at 255) and crushed (every channel at 0).
pub fn clipping(image: &Image) -> (f64, f64) {
    let n = (image.width * image.height).max(1) as f64;
    let px = image.rgba.chunks_exact(4);
    let high = px.clone().filter(|p| p[..3].contains(&255)).count() as f64;
    let low = px.filter(|p| p[..3] == [0, 0, 0]).count() as f64;
    (high / n, low / n)
}

/// An sRGB colour (8 bits a channel) in CIELAB (D65, 2° observer) as scikit-image's `rgb2lab`
/// computes it: the sRGB curve undone, the RGB→XYZ matrix OpenCV and scikit-image share, L in
/// [0, 100]. (OpenCV's float `COLOR_RGB2Lab` reads the same formulas from interpolated tables,
/// within half a unit on dark colours.)
pub fn srgb_to_lab(rgb: [u8; 3]) -> [f64; 3] {
    let linear = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (linear(rgb[0]), linear(rgb[1]), linear(rgb[2]));
    let x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.95047;
    let y = 0.212671 * r + 0.715160 * g + 0.072169 * b;
    let z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.08883;
    const T: f64 = 0.008856;
    let f = |t: f64| if t > T { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    [116.0 * f(y) - 16.0, 500.0 * (f(x) - f(y)), 200.0 * (f(y) - f(z))]
}

/// How far an image strays from a palette: each pixel's CIE76 ΔE (the distance in CIELAB) to
/// the nearest palette colour, averaged over the pixels. 0 is every pixel a palette colour; a
/// ΔE near 2 is the smallest difference most people see. `None` for an empty palette.
pub fn palette_delta_e(image: &Image, palette: &[[u8; 3]]) -> Option<f64> {
    if palette.is_empty() {
        return None;
    }
    let targets: Vec<[f64; 3]> = palette.iter().map(|&c| srgb_to_lab(c)).collect();
    // 16.7 M possible colours but few distinct ones in an image: remember each colour's answer.
    let mut seen: std::collections::HashMap<[u8; 3], f64> = std::collections::HashMap::new();
    let mut total = 0.0;
    for p in image.rgba.chunks_exact(4) {
        let rgb = [p[0], p[1], p[2]];
        total += *seen.entry(rgb).or_insert_with(|| {
            let lab = srgb_to_lab(rgb);
            targets
                .iter()
                .map(|t| ((lab[0] - t[0]).powi(2) + (lab[1] - t[1]).powi(2) + (lab[2] - t[2]).powi(2)).sqrt())
                .fold(f64::INFINITY, f64::min)
        });
    }
    Some(total / (image.width * image.height).max(1) as f64)
}

/// The measures of one image that need no model.
#[derive(Debug, Clone, PartialEq)]
pub struct Measures {
    pub sharpness: f64,
    pub clipped_highlights: f64,
    pub clipped_shadows: f64,
    pub palette_delta_e: Option<f64>,
    pub phash: u64,
}

impl Measures {
    pub fn of(image: &Image, palette: &[[u8; 3]]) -> Measures {
        let (high, low) = clipping(image);
        Measures {
            sharpness: sharpness(image),
            clipped_highlights: high,
            clipped_shadows: low,
            palette_delta_e: palette_delta_e(image, palette),
            phash: phash(image),
        }
    }
}

/// Whether two perceptual hashes mark near-duplicates.
pub fn near_duplicates(a: u64, b: u64) -> bool {
    (a ^ b).count_ones() <= DUPLICATE_BITS
}

/// For each hash, the first earlier one it nearly repeats (`None` for the first of its kind, and
/// for an image without a hash).
pub fn duplicate_of(hashes: &[Option<u64>]) -> Vec<Option<usize>> {
    let mut out: Vec<Option<usize>> = Vec::with_capacity(hashes.len());
    for (i, hash) in hashes.iter().enumerate() {
        out.push(hash.and_then(|h| {
            (0..i).find(|&j| out[j].is_none() && hashes[j].is_some_and(|g| near_duplicates(g, h)))
        }));
    }
    out
}
