//! ControlNet units as diffusers' `StableDiffusionControlNetPipeline` (and its img2img and
//! MultiControlNet forms) applies them: each unit's control image (preprocessed, resized to the
//! output with PIL's Lanczos, values in [0, 1]) goes through its ControlNet at every step where
//! the unit is active, with the step's UNet input (both halves of a CFG batch), and the units'
//! residuals, each scaled by its weight, are summed into the UNet's skips.

use std::sync::Arc;

use darkroom_gpu::{Gpu, Tensor};
use darkroom_models::config::ControlNetConfig;
use darkroom_models::unet::controlnet::{ControlNetModel, ControlOutput};
use darkroom_models::unet::UNetInput;
use darkroom_models::QuantCache;
use serde::{Deserialize, Serialize};

use crate::model::{load_weights, Precision, StableDiffusion};
use crate::preprocess::{self, Preprocessor};
use crate::recipe::{ImageRef, RecipeError};
use crate::request::Image;
use crate::{ModelFiles, PipelineError};

/// Units in one recipe, at most.
pub const MAX_CONTROL_UNITS: usize = 8;
/// Units the app's form and the embedded widget take at once (a recipe file may have more).
pub const MAX_APP_UNITS: usize = 3;
/// Canny's thresholds when a unit names none (A1111's defaults).
pub const CANNY_LOW: f64 = 100.0;
pub const CANNY_HIGH: f64 = 200.0;

/// One ControlNet unit of a [`crate::Recipe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlUnit {
    /// A ControlNet id (`darkroom models list`) or, natively, a diffusers ControlNet folder.
    pub model: String,
    /// The control image (or the image the preprocessor makes it from). `None` only in a
    /// recipe restored from an infotext, which does not carry images.
    pub image: Option<ImageRef>,
    pub pre: Preprocessor,
    /// The conditioning scale.
    pub weight: f64,
    /// The fraction of the steps where the unit starts and stops acting, as diffusers' control
    /// guidance start and end: step i of n is active unless i/n < start or (i+1)/n > end.
    pub start: f64,
    pub end: f64,
    /// Canny's thresholds.
    pub low: f64,
    pub high: f64,
}

impl Default for ControlUnit {
    fn default() -> Self {
        ControlUnit {
            model: String::new(),
            image: None,
            pre: Preprocessor::None,
            weight: 1.0,
            start: 0.0,
            end: 1.0,
            low: CANNY_LOW,
            high: CANNY_HIGH,
        }
    }
}

impl ControlUnit {
    /// Checks one unit; `index` names it in the message.
    pub fn validate(&self, index: usize) -> Result<(), RecipeError> {
        let refuse = |message: String| {
            Err(RecipeError { field: "controls", message: format!("control unit {}: {message}", index + 1) })
        };
        if self.model.trim().is_empty() {
            return refuse("no ControlNet model (model=<id|folder>)".into());
        }
        if self.image.is_none() {
            return refuse("no control image (image=<png>)".into());
        }
        if !self.weight.is_finite() || self.weight.abs() > 10.0 {
            return refuse(format!("weight must be between -10 and 10, got {}", self.weight));
        }
        if !(self.start.is_finite()
            && self.end.is_finite()
            && 0.0 <= self.start
            && self.start < self.end
            && self.end <= 1.0)
        {
            return refuse(format!(
                "start and end are fractions of the steps with 0 ≤ start < end ≤ 1, got start {} end {}",
                self.start, self.end
            ));
        }
        if !(self.low.is_finite() && self.high.is_finite() && self.low >= 0.0 && self.high >= 0.0)
            || self.low.max(self.high) > 10_000.0
        {
            return refuse(format!(
                "Canny thresholds must be from 0 to 10000, got low {} high {}",
                self.low, self.high
            ));
        }
        Ok(())
    }

    /// Whether the unit acts at step `i` of `n` (diffusers' `controlnet_keep`).
    pub fn active(&self, i: usize, n: usize) -> bool {
        let (i, n) = (i as f64, n as f64);
        !(i / n < self.start || (i + 1.0) / n > self.end)
    }

    /// The value A1111's ControlNet extension writes as `ControlNet N: "…"`.
    pub fn to_infotext(&self, model_name: &str) -> String {
        let mut fields = vec![
            format!("Module: {}", self.pre.a1111_module()),
            format!("Model: {model_name}"),
            format!("Weight: {}", self.weight),
            "Resize Mode: Just Resize".to_string(),
        ];
        if self.pre == Preprocessor::Canny {
            fields.push(format!("Threshold A: {}", self.low));
            fields.push(format!("Threshold B: {}", self.high));
        }
        fields.push(format!("Guidance Start: {}", self.start));
        fields.push(format!("Guidance End: {}", self.end));
        fields.push("Control Mode: Balanced".to_string());
        fields.join(", ")
    }

    /// A unit from A1111's `ControlNet N` value (the image is not in it). Unknown fields are
    /// ignored; an unknown module reads as none.
    pub fn from_infotext(value: &str) -> Option<ControlUnit> {
        let mut unit = ControlUnit::default();
        let mut module = None;
        for field in value.split(", ") {
            let Some((key, v)) = field.split_once(": ") else { continue };
            let v = v.trim();
            let number = || v.parse::<f64>().ok();
            match key.trim() {
                "Module" => module = Some(v.to_string()),
                "Model" => unit.model = v.to_string(),
                "Weight" => unit.weight = number()?,
                "Guidance Start" => unit.start = number()?,
                "Guidance End" => unit.end = number()?,
                "Threshold A" => unit.low = number().unwrap_or(CANNY_LOW),
                "Threshold B" => unit.high = number().unwrap_or(CANNY_HIGH),
                _ => {}
            }
        }
        unit.pre = module.as_deref().and_then(Preprocessor::from_name).unwrap_or_default();
        if unit.pre != Preprocessor::Canny {
            (unit.low, unit.high) = (CANNY_LOW, CANNY_HIGH);
        }
        (!unit.model.is_empty()).then_some(unit)
    }
}

/// A loaded ControlNet.
pub struct ControlNet {
    /// Shown in the infotext's `Model:`.
    pub name: String,
    pub model: ControlNetModel,
}

impl ControlNet {
    /// Loads a diffusers ControlNet folder (config.json, diffusion_pytorch_model.safetensors or
    /// its .fp16 form) with the generation's precision.
    pub async fn load<F: ModelFiles, C: QuantCache>(
        gpu: &Gpu,
        files: &F,
        cache: &C,
        name: &str,
        precision: Precision,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<ControlNet, PipelineError> {
        let config_text = files.read("config.json").await?.ok_or_else(|| {
            PipelineError::Files(format!("{name} has no config.json: not a diffusers ControlNet folder"))
        })?;
        let config = ControlNetConfig::from_json(&String::from_utf8_lossy(&config_text))
            .map_err(|e| PipelineError::Files(format!("{name}/config.json: {e}")))?;
        let names = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
        let store =
            load_weights(gpu, files, cache, precision.weights, "", &names, None, false, progress).await?;
        let model =
            ControlNetModel::load(&store.root(gpu, precision.activations, precision.weights), &config)?;
        store.require_all_used()?;
        Ok(ControlNet { name: name.to_string(), model })
    }

    /// Refuses a ControlNet made for another model family before anything runs.
    pub fn check_fits(&self, model: &StableDiffusion) -> Result<(), PipelineError> {
        let (c, u) = (&self.model.config().unet, model.unet.config());
        let latents = model.vae_config.latent_channels;
        if c.cross_attention_dim != u.cross_attention_dim
            || c.block_out_channels != u.block_out_channels
            || c.layers_per_block != u.layers_per_block
            || c.in_channels != latents
            || c.text_time() != u.text_time()
        {
            return Err(PipelineError::Input(format!(
                "ControlNet {} does not fit {}: it is made for a UNet with {}-wide text embeddings and blocks {:?} (this one: {}, {:?})",
                self.name, model.name, c.cross_attention_dim, c.block_out_channels, u.cross_attention_dim, u.block_out_channels
            )));
        }
        if model.vae_config.scale() != self.model.config().image_factor() {
            return Err(PipelineError::Input(format!(
                "ControlNet {} takes control images at {} times the latents' size; {} decodes at {}",
                self.name,
                self.model.config().image_factor(),
                model.name,
                model.vae_config.scale()
            )));
        }
        Ok(())
    }
}

/// A unit's loaded ControlNet and its image, as a [`crate::Request`] carries them (in the
/// recipe's order of units).
#[derive(Clone)]
pub struct Control {
    pub net: Arc<ControlNet>,
    /// The image as given; the pipeline preprocesses and resizes it.
    pub image: Image,
    /// The control map already made from `image`, where its preprocessor runs a model the
    /// pipeline does not hold (depth: [`crate::depth::DepthModel`]); resized like any map.
    pub map: Option<Image>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Control({}, {}x{})", self.net.name, self.image.width, self.image.height)
    }
}

/// The control map a unit's image gives at the output size: the preprocessor at the image's
/// own size, then PIL's Lanczos resize when the size differs (what diffusers' control image
/// processor does to a map of another size).
pub fn control_map(
    unit: &ControlUnit,
    image: &Image,
    width: usize,
    height: usize,
) -> Result<Image, PipelineError> {
    let map = preprocess::run(unit.pre, image, unit.low, unit.high)?;
    Ok(fit(map, width, height))
}

/// A control map at the output size (PIL's Lanczos where it differs).
fn fit(map: Image, width: usize, height: usize) -> Image {
    if (map.width, map.height) == (width, height) {
        map
    } else {
        preprocess::resize_lanczos(&map, width, height)
    }
}

/// A unit ready for the denoising loop: its ControlNet and its control image's embedding in
/// the loop's rows.
pub struct PreparedControl {
    pub net: Arc<ControlNet>,
    pub unit: ControlUnit,
    pub embedding: Tensor,
}

/// Prepares every unit of a request for a batch of `rows` UNet rows (CFG doubles them).
pub fn prepare(
    gpu: &Gpu,
    model: &StableDiffusion,
    units: &[ControlUnit],
    controls: &[Control],
    (width, height): (usize, usize),
    rows: usize,
) -> Result<Vec<PreparedControl>, PipelineError> {
    if units.len() != controls.len() {
        return Err(PipelineError::Input(format!(
            "the recipe has {} control units but {} ControlNets and images came with it",
            units.len(),
            controls.len()
        )));
    }
    let dtype = model.precision.activations;
    units
        .iter()
        .zip(controls)
        .map(|(unit, control)| {
            control.net.check_fits(model)?;
            let map = match &control.map {
                Some(map) => fit(map.clone(), width, height),
                None => control_map(unit, &control.image, width, height)?,
            };
            let n = width * height;
            let mut planar = vec![0.0f32; 3 * n];
            let order: [usize; 3] = if control.net.model.config().bgr { [2, 1, 0] } else { [0, 1, 2] };
            for (i, p) in map.rgba.chunks_exact(4).enumerate() {
                for (c, &src) in order.iter().enumerate() {
                    planar[c * n + i] = p[src] as f32 / 255.0;
                }
            }
            let image = Tensor::from_f32(gpu, &[1, 3, height, width], &planar, dtype)?;
            let embedding = control.net.model.embed_condition(gpu, &image)?;
            let embedding = crate::text::repeat_batch(gpu, &embedding, rows)?;
            Ok(PreparedControl { net: control.net.clone(), unit: unit.clone(), embedding })
        })
        .collect()
}

/// The summed residuals of the units active at step `done` of `total` for the UNet's `input`
/// (its latents before any extra inpainting channels), or None when none is.
pub fn residuals(
    gpu: &Gpu,
    controls: &[PreparedControl],
    (done, total): (usize, usize),
    input: &UNetInput,
) -> Result<Option<ControlOutput>, PipelineError> {
    let mut outputs = Vec::new();
    for c in controls.iter().filter(|c| c.unit.active(done, total)) {
        outputs.push(c.net.model.forward(gpu, input, &c.embedding, c.unit.weight as f32)?);
    }
    Ok(ControlOutput::sum(gpu, outputs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guidance_start_and_end_follow_diffusers_keep() {
        // diffusers: keep = 1 - (i / n < s or (i + 1) / n > e), in floats.
        let unit = ControlUnit { start: 0.2, end: 0.7, ..ControlUnit::default() };
        let active: Vec<bool> = (0..5).map(|i| unit.active(i, 5)).collect();
        assert_eq!(active, [false, true, true, false, false]);
        let all = ControlUnit::default();
        assert!((0..7).all(|i| all.active(i, 7)));
        let half = ControlUnit { end: 0.5, ..ControlUnit::default() };
        assert_eq!((0..4).map(|i| half.active(i, 4)).collect::<Vec<_>>(), [true, true, false, false]);
    }

    #[test]
    fn a1111_infotext_round_trips_and_reads_the_extensions_line() {
        let unit = ControlUnit {
            model: "control_v11p_sd15_canny".into(),
            image: Some(ImageRef::File("pose.png".into())),
            pre: Preprocessor::Canny,
            weight: 0.8,
            start: 0.1,
            end: 0.9,
            low: 50.0,
            high: 150.0,
        };
        let text = unit.to_infotext("control_v11p_sd15_canny");
        assert_eq!(
            text,
            "Module: canny, Model: control_v11p_sd15_canny, Weight: 0.8, Resize Mode: Just Resize, \
             Threshold A: 50, Threshold B: 150, Guidance Start: 0.1, Guidance End: 0.9, Control Mode: Balanced"
        );
        assert_eq!(ControlUnit::from_infotext(&text), Some(ControlUnit { image: None, ..unit }));
        let a1111 = "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1.0, Resize Mode: Crop and Resize, \
                     Low Vram: False, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, \
                     Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced";
        let unit = ControlUnit::from_infotext(a1111).unwrap();
        assert_eq!(
            (unit.pre, unit.model.as_str(), unit.weight),
            (Preprocessor::Depth, "control_v11f1p_sd15_depth [cfd03158]", 1.0)
        );
        assert_eq!(ControlUnit::from_infotext("Module: canny, Weight: 1"), None, "no model");
    }

    #[test]
    fn bad_units_name_the_unit_and_the_problem() {
        let ok =
            ControlUnit { model: "m".into(), image: Some(ImageRef::Attachment(0)), ..ControlUnit::default() };
        ok.validate(0).unwrap();
        // Every preprocessor runs (depth with a model the caller loads).
        for pre in Preprocessor::ALL {
            ControlUnit { pre, ..ok.clone() }.validate(0).unwrap();
        }
        for (bad, words) in [
            (ControlUnit { model: String::new(), ..ok.clone() }, "model"),
            (ControlUnit { image: None, ..ok.clone() }, "image"),
            (ControlUnit { weight: f64::NAN, ..ok.clone() }, "weight"),
            (ControlUnit { start: 0.5, end: 0.5, ..ok.clone() }, "start"),
            (ControlUnit { end: 1.5, ..ok.clone() }, "start"),
            (ControlUnit { low: -1.0, ..ok.clone() }, "Canny"),
        ] {
            let e = bad.validate(1).unwrap_err();
            assert_eq!(e.field, "controls");
            assert!(e.message.starts_with("control unit 2: ") && e.message.contains(words), "{}", e.message);
        }
    }
}
