//! A preview of SD latents without any network: each latent pixel's 4 channels mapped linearly
//! to RGB. It is the "cheap approximation" image UIs show while denoising when no TAESD is at
//! hand: blurry and 8x smaller, but it shows composition and colour after the first steps.

use crate::request::Image;
use crate::PipelineError;

/// Rows: latent channels 0..4 (SD 1.x/2.x latents, scaled by the VAE factor); columns: the
/// R, G, B they contribute, in [-1, 1] units.
const SD_LATENT_RGB: [[f32; 3]; 4] =
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];

/// Image `index` of planar latents of shape `[batch, 4, h, w]` as a `w`×`h` RGBA image.
pub fn approximate_rgb(values: &[f32], shape: [usize; 4], index: usize) -> Result<Image, PipelineError> {
    let [batch, channels, h, w] = shape;
    if channels != 4 || index >= batch || values.len() != batch * channels * h * w {
        return Err(PipelineError::Input(format!(
            "latents of shape {shape:?} ({} values) have no 4-channel image {index}",
            values.len()
        )));
    }
    let plane = h * w;
    let image = &values[index * channels * plane..(index + 1) * channels * plane];
    let mut rgba = Vec::with_capacity(plane * 4);
    for p in 0..plane {
        for rgb in 0..3 {
            let v: f32 = (0..4).map(|c| image[c * plane + p] * SD_LATENT_RGB[c][rgb]).sum();
            rgba.push((((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
        rgba.push(255);
    }
    Ok(Image { width: w, height: h, rgba })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_latent_channel_lands_at_its_pixel_with_its_colour() {
        // Batch 2 of 4x3 latents: image 1, channel c, pixel (x=2, y=1) set to 1, all else 0.
        let (h, w) = (3, 4);
        for c in 0..4 {
            let mut values = vec![0.0; 2 * 4 * h * w];
            values[(4 + c) * h * w + w + 2] = 1.0;
            let img = approximate_rgb(&values, [2, 4, h, w], 1).unwrap();
            assert_eq!((img.width, img.height), (w, h));
            let px = &img.rgba[(w + 2) * 4..(w + 3) * 4];
            for rgb in 0..3 {
                let want = ((1.0 + SD_LATENT_RGB[c][rgb]) * 0.5 * 255.0).round() as u8;
                assert_eq!(px[rgb], want, "channel {c} colour {rgb}");
            }
            // Every other pixel is the colour of zero latents: mid grey.
            assert!(img.rgba.chunks(4).enumerate().all(|(i, q)| i == w + 2 || q == [128, 128, 128, 255]));
            // Image 0 is untouched by image 1's values.
            let first = approximate_rgb(&values, [2, 4, h, w], 0).unwrap();
            assert!(first.rgba.chunks(4).all(|q| q == [128, 128, 128, 255]));
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(approximate_rgb(&[0.0; 10], [1, 4, 2, 2], 0).is_err());
        assert!(approximate_rgb(&[0.0; 16], [1, 4, 2, 2], 1).is_err());
        assert!(approximate_rgb(&[0.0; 12], [1, 3, 2, 2], 0).is_err());
    }
}
