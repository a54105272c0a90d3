//! The depth preprocessor: Depth Anything V2 on the device, as transformers' depth-estimation
//! path runs it and as ControlNet's depth models take its output:
//!
//! 1. DPTImageProcessor's input (the Hub model's preprocessor_config.json): the image resized
//!    with PIL's bicubic so that one side is 518 and the aspect kept — whichever scale is nearer
//!    1 — each side then rounded to a multiple of 14 (Python's round, halves to even), scaled to
//!    0..1 and normalised with ImageNet's mean and standard deviation;
//! 2. the model's relative depth at that size;
//! 3. `post_process_depth_estimation`: bicubic back to the image's size (PyTorch's);
//! 4. the control map: min-max scaled to 0..255 and truncated, grey (white is near), as the
//!    ControlNet annotators write it.

use darkroom_gpu::{Gpu, Tensor};
use darkroom_models::depth_anything::{resize_bicubic, DepthAnything, DepthAnythingConfig, DepthMap};
use darkroom_models::WeightStore;

use crate::model::Precision;
use crate::preprocess::{check, grey_image, resize_pil, Filter};
use crate::request::Image;
use crate::{ModelFiles, PipelineError};

/// The model's input size before the aspect is kept (DPTImageProcessor's `size`).
pub const INPUT_SIZE: usize = 518;
/// Each input side is a multiple of this (the patch size; `ensure_multiple_of`).
pub const MULTIPLE: usize = 14;
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The manifest id of the model the depth preprocessor uses unless told otherwise.
pub const DEFAULT_MODEL: &str = "depth-anything-v2-small";

/// The input size (width, height) DPTImageProcessor gives an image of `width` x `height`
/// (`keep_aspect_ratio`, `ensure_multiple_of` 14, 518 x 518 asked).
pub fn input_size(width: usize, height: usize) -> (usize, usize) {
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let (mut sh, mut sw) = (INPUT_SIZE as f64 / h, INPUT_SIZE as f64 / w);
    // Scale as little as possible: the factor nearer 1 wins for both sides.
    if (1.0 - sw).abs() < (1.0 - sh).abs() {
        sh = sw;
    } else {
        sw = sh;
    }
    let multiple = |v: f64| {
        let m = MULTIPLE as f64;
        // A side that rounds to nothing (transformers then fails) keeps one patch.
        ((v / m).round_ties_even() * m).max(m) as usize
    };
    (multiple(sw * w), multiple(sh * h))
}

/// The model's input: planar [3, h, w] ImageNet-normalised, with its size (w, h).
pub fn input_pixels(image: &Image) -> (Vec<f32>, usize, usize) {
    let (w, h) = input_size(image.width, image.height);
    let resized = resize_pil(image, w, h, Filter::Bicubic);
    let n = w * h;
    let mut out = vec![0.0f32; 3 * n];
    for (i, p) in resized.rgba.chunks_exact(4).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    (out, w, h)
}

/// A grey control map of a depth map: min-max scaled to 0..255, truncated; all black when the
/// depth is flat.
pub fn depth_image(depth: &DepthMap) -> Image {
    let (lo, hi) =
        depth.values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = hi - lo;
    let level = |v: f32| if span > 0.0 && span.is_finite() { ((v - lo) / span * 255.0) as u8 } else { 0 };
    grey_image(depth.width, depth.height, depth.values.iter().map(|&v| level(v)))
}

/// A loaded Depth Anything model.
pub struct DepthModel {
    pub name: String,
    pub model: DepthAnything,
    dtype: darkroom_gpu::DType,
}

impl DepthModel {
    /// Loads a transformers Depth Anything folder (config.json, model.safetensors).
    pub async fn load<F: ModelFiles>(
        gpu: &Gpu,
        files: &F,
        name: &str,
        precision: Precision,
    ) -> Result<DepthModel, PipelineError> {
        let config_text = files.read("config.json").await?.ok_or_else(|| {
            PipelineError::Files(format!("{name} has no config.json: not a Depth Anything model folder"))
        })?;
        let config = DepthAnythingConfig::from_json(&String::from_utf8_lossy(&config_text))
            .map_err(|e| PipelineError::Files(format!("{name}/config.json: {e}")))?;
        // Read whole (about 100 MB for the small model) rather than staged: the transposed
        // convolutions' weights are rearranged on the CPU before they are packed.
        let bytes = files.read("model.safetensors").await?.ok_or_else(|| {
            PipelineError::Files(format!(
                "{name} has no model.safetensors: not a Depth Anything model folder"
            ))
        })?;
        let store = WeightStore::from_bytes(bytes)?;
        let model = DepthAnything::load(&store.root(gpu, precision.activations, precision.weights), &config)?;
        store.require_all_used()?;
        Ok(DepthModel { name: name.to_string(), model, dtype: precision.activations })
    }

    /// The relative depth of `image` at the image's own size (steps 1–3 above).
    pub async fn depth(&self, gpu: &Gpu, image: &Image) -> Result<DepthMap, PipelineError> {
        check(image)?;
        let (pixels, w, h) = input_pixels(image);
        let input = Tensor::from_f32(gpu, &[1, 3, h, w], &pixels, self.dtype)?;
        let depth = self.model.forward(gpu, &input).await?;
        let values =
            resize_bicubic(&depth.values, 1, (depth.height, depth.width), (image.height, image.width));
        Ok(DepthMap { width: image.width, height: image.height, values })
    }

    /// The depth control map of `image`, at the image's size.
    pub async fn control_map(&self, gpu: &Gpu, image: &Image) -> Result<Image, PipelineError> {
        Ok(depth_image(&self.depth(gpu, image).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_follow_dpt_image_processor() {
        // Values from transformers' get_resize_output_image_size (518, keep aspect, multiple 14).
        assert_eq!(input_size(97, 61), (518, 322));
        assert_eq!(input_size(512, 512), (518, 518));
        assert_eq!(input_size(768, 512), (784, 518));
        assert_eq!(input_size(512, 768), (518, 784));
        assert_eq!(input_size(1024, 1024), (518, 518));
        assert_eq!(input_size(1920, 1080), (924, 518));
        assert_eq!(input_size(3, 2000), (14, 518), "a sliver keeps one patch (transformers: 0)");
    }

    #[test]
    fn a_depth_map_is_scaled_to_the_full_range_and_a_flat_one_is_black() {
        let depth = DepthMap { width: 3, height: 1, values: vec![2.0, 3.0, 4.0] };
        let map = depth_image(&depth);
        let levels: Vec<u8> = map.rgba.chunks_exact(4).map(|p| p[0]).collect();
        assert_eq!(levels, [0, 127, 255]);
        let flat = DepthMap { width: 2, height: 1, values: vec![1.0, 1.0] };
        assert!(depth_image(&flat).rgba.chunks_exact(4).all(|p| p[..3] == [0, 0, 0] && p[3] == 255));
    }
}
