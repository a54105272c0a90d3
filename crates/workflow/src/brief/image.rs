//! PNG in and out, and thumbnails, for the case study and the contact sheet.

use crate::grid::Rgba;

use super::BriefError;

/// A PNG (any colour type and depth) as 8-bit RGBA, its size checked before decoding.
pub fn decode_png(bytes: &[u8], name: &str) -> Result<Rgba, BriefError> {
    crate::pixels::decode_png(bytes).map_err(|e| BriefError::Image(name.to_string(), e.to_string()))
}

/// RGBA as PNG.
pub fn encode_png(image: &Rgba) -> Result<Vec<u8>, BriefError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| BriefError::Write(e.to_string()))?;
        writer.write_image_data(&image.pixels).map_err(|e| BriefError::Write(e.to_string()))?;
    }
    Ok(out)
}

/// The image shrunk (area average, never enlarged) to fit in `max`×`max`.
pub fn thumbnail(image: &Rgba, max: usize) -> Rgba {
    let scale = (max as f64 / image.width.max(image.height) as f64).min(1.0);
    let w = ((image.width as f64 * scale).round() as usize).max(1);
    let h = ((image.height as f64 * scale).round() as usize).max(1);
    if (w, h) == (image.width, image.height) {
        return image.clone();
    }
    let mut pixels = vec![0u8; w * h * 4];
    for y in 0..h {
        let (y0, y1) = (y * image.height / h, ((y + 1) * image.height / h).max(y * image.height / h + 1));
        for x in 0..w {
            let (x0, x1) = (x * image.width / w, ((x + 1) * image.width / w).max(x * image.width / w + 1));
            let mut sum = [0u32; 4];
            for sy in y0..y1 {
                for sx in x0..x1 {
                    let i = (sy * image.width + sx) * 4;
                    for (total, &v) in sum.iter_mut().zip(&image.pixels[i..i + 4]) {
                        *total += v as u32;
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            for (out, total) in pixels[(y * w + x) * 4..][..4].iter_mut().zip(sum) {
                *out = ((total + n / 2) / n) as u8;
            }
        }
    }
    Rgba { width: w, height: h, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_and_thumbnails_average() {
        let mut image = Rgba::white(4, 2);
        image.fill(0, 0, 2, 2, [0, 0, 0]);
        let back = decode_png(&encode_png(&image).unwrap(), "x").unwrap();
        assert_eq!(back, image);
        let small = thumbnail(&image, 2);
        assert_eq!((small.width, small.height), (2, 1));
        assert_eq!(&small.pixels[..4], &[0, 0, 0, 255]);
        assert_eq!(&small.pixels[4..8], &[255, 255, 255, 255]);
        assert_eq!(thumbnail(&image, 100), image, "never enlarged");
        assert!(matches!(decode_png(b"not a png", "x.png"), Err(BriefError::Image(..))));
    }
}
