//! [`Recipe::validate`], the one place with the limits and size rules, and what it needs to know
//! of a model ([`ModelInfo`]); what it refuses names its field ([`RecipeError`]).

use super::{Recipe, MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_CFG, MAX_PROMPT_CHARS, MAX_SIDE, MAX_STEPS};
use crate::control::MAX_CONTROL_UNITS;

/// What [`Recipe::validate`] needs to know of a model, known before it loads (from a manifest)
/// or after (from its configs).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Shown in errors.
    pub name: String,
    /// A 9-channel inpainting UNet: needs an init image and a mask.
    pub inpainting: bool,
    /// Width and height must be multiples of this: the VAE's factor (8 for SD). The UNet
    /// resizes to its skip connections where its own factor does not divide the latents, as
    /// diffusers does.
    pub size_multiple: usize,
    /// SDXL (two text encoders, added conditioning).
    pub sdxl: bool,
}

impl ModelInfo {
    /// An SD 1.x/2.x model (VAE factor 8).
    pub fn stable_diffusion(name: &str, inpainting: bool) -> ModelInfo {
        ModelInfo { name: name.to_string(), inpainting, size_multiple: 8, sdxl: false }
    }

    /// From a manifest, before anything is downloaded.
    pub fn from_manifest(manifest: &darkroom_weights::Manifest) -> ModelInfo {
        ModelInfo {
            sdxl: manifest.family.is_sdxl(),
            ..ModelInfo::stable_diffusion(&manifest.name, manifest.family.inpainting())
        }
    }
}

/// A setting that does not work, named by its field (the CLI flag, the form field, the widget's
/// message key), with what to do in words.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RecipeError {
    /// The [`Recipe`] field: `width`, `steps`, `strength`, `mask`, …
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: String) -> Result<(), RecipeError> {
    Err(RecipeError { field, message })
}

impl Recipe {
    /// The only place with limits and size rules. Input images' sizes are checked where their
    /// pixels are known ([`Recipe::request`]); the GPU's limits by the pipeline, per adapter.
    pub fn validate(&self, model: &ModelInfo) -> Result<(), RecipeError> {
        for (field, text) in [("prompt", &self.prompt), ("negative_prompt", &self.negative_prompt)] {
            let chars = text.chars().count();
            if chars > MAX_PROMPT_CHARS {
                return refuse(
                    field,
                    format!("the {} is {chars} characters; at most {MAX_PROMPT_CHARS}", words(field)),
                );
            }
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return refuse("steps", format!("steps must be between 1 and {MAX_STEPS}, got {}", self.steps));
        }
        if !self.cfg_scale.is_finite() || !(0.0..=MAX_CFG).contains(&self.cfg_scale) {
            return refuse(
                "cfg_scale",
                format!("CFG scale must be between 0 and {MAX_CFG}, got {}", self.cfg_scale),
            );
        }
        let m = model.size_multiple.max(1);
        for (field, side) in [("width", self.width), ("height", self.height)] {
            if side == 0 || side % m != 0 || side > MAX_SIDE {
                return refuse(
                    field,
                    format!(
                        "width and height must be multiples of {m} from {m} to {MAX_SIDE} for {}, got {}x{}",
                        model.name, self.width, self.height
                    ),
                );
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return refuse(
                "batch_size",
                format!("batch size must be between 1 and {MAX_BATCH_SIZE}, got {}", self.batch_size),
            );
        }
        if !(1..=MAX_BATCH_COUNT).contains(&self.batch_count) {
            return refuse(
                "batch_count",
                format!("batch count must be between 1 and {MAX_BATCH_COUNT}, got {}", self.batch_count),
            );
        }
        if let Some(seed) = self.seed {
            let images = (self.batch_size * self.batch_count) as u64;
            if seed.checked_add(images).is_none() {
                return refuse("seed", format!("seed {seed} leaves no room for {images} images after it"));
            }
        }
        if let Some(s) = self.strength {
            if self.init.is_none() {
                return refuse("strength", "strength applies to an init image; give one".into());
            }
            if !(s > 0.0 && s <= 1.0) {
                return refuse("strength", format!("strength must be in (0, 1], got {s}"));
            }
        }
        if self.draft && self.sd_upscale.is_some() {
            return refuse(
                "draft",
                "SD upscale redraws an existing image tile by tile: it makes no drafts; leave drafts off"
                    .into(),
            );
        }
        if self.mask.is_some() && self.init.is_none() {
            return refuse("mask", "inpainting needs an init image besides the mask".into());
        }
        if let Some(margins) = self.outpaint {
            if self.init.is_none() {
                return refuse(
                    "outpaint",
                    "outpainting extends an init image; give the image to extend".into(),
                );
            }
            if self.mask.is_some() {
                return refuse("outpaint", "outpainting makes its own mask; leave the mask out".into());
            }
            if margins.iter().all(|&v| v == 0) || margins.iter().any(|&v| v > MAX_SIDE) {
                return refuse(
                    "outpaint",
                    format!("outpainting margins {margins:?} must not all be 0, nor past {MAX_SIDE}"),
                );
            }
        }
        if model.inpainting && self.mask.is_none() && self.outpaint.is_none() {
            return refuse(
                "mask",
                format!("{} is an inpainting model: give it an init image and a mask", model.name),
            );
        }
        if self.controls.len() > MAX_CONTROL_UNITS {
            return refuse(
                "controls",
                format!("at most {MAX_CONTROL_UNITS} control units, got {}", self.controls.len()),
            );
        }
        for (i, unit) in self.controls.iter().enumerate() {
            unit.validate(i)?;
        }
        if let Some(u) = &self.sd_upscale {
            if !self.controls.is_empty() {
                return refuse("sd_upscale", "SD upscale with control units is not available yet".into());
            }
            if self.init.is_none() || self.mask.is_some() || self.outpaint.is_some() || self.hires.is_some() {
                return refuse(
                    "sd_upscale",
                    "SD upscale redraws an init image: give one, without a mask, outpainting or hires".into(),
                );
            }
            if !(u.scale.is_finite() && (1.0..=4.0).contains(&u.scale)) {
                return refuse(
                    "sd_upscale",
                    format!("the SD upscale scale must be from 1 to 4, got {}", u.scale),
                );
            }
            if u.tile < 16 || u.tile % 8 != 0 || u.overlap % 8 != 0 || 2 * u.overlap >= u.tile {
                return refuse(
                    "sd_upscale",
                    format!("the tile ({}) and overlap ({}) must be multiples of 8, the overlap under half the tile", u.tile, u.overlap),
                );
            }
            if u.upscaler.trim().is_empty() {
                return refuse("sd_upscale", "name an upscaler: lanczos or a model".into());
            }
        }
        if let Some(h) = &self.hires {
            if self.init.is_some() {
                return refuse("hires", "the hires fix applies to txt2img; leave out the init image".into());
            }
            if !(h.scale.is_finite() && h.scale > 1.0 && h.scale <= 4.0) {
                return refuse(
                    "hires",
                    format!("the hires scale must be above 1 and at most 4, got {}", h.scale),
                );
            }
            if !(h.strength > 0.0 && h.strength <= 1.0) {
                return refuse("hires", format!("the hires strength must be in (0, 1], got {}", h.strength));
            }
            if h.steps > MAX_STEPS {
                return refuse("hires", format!("hires steps must be at most {MAX_STEPS}, got {}", h.steps));
            }
            let (w, h2) = h.size(self.width, self.height);
            if w.max(h2) > MAX_SIDE {
                return refuse("hires", format!("the hires size {w}x{h2} is past {MAX_SIDE} pixels"));
            }
            if h.upscaler.trim().is_empty() {
                return refuse("hires", "name a hires upscaler: lanczos or a model".into());
            }
            if h.upscaler.trim().to_ascii_lowercase().starts_with("latent") && h.latent().is_none() {
                return refuse(
                    "hires",
                    format!("the upscaler {} is not available: the latent ones are Latent (bilinear) and Latent (nearest)", h.upscaler),
                );
            }
        }
        for tag in self.loras() {
            if let Err(e) = darkroom_weights::lora::check_name(&tag.name) {
                return refuse("prompt", e);
            }
            if !tag.scale.is_finite() {
                return refuse("prompt", format!("LoRA `{}` has weight {}", tag.name, tag.scale));
            }
        }
        Ok(())
    }
}

fn words(field: &str) -> &'static str {
    match field {
        "negative_prompt" => "negative prompt",
        _ => "prompt",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{size_presets, ImageRef};
    use super::*;

    fn sd() -> ModelInfo {
        ModelInfo::stable_diffusion("SD 1.5", false)
    }

    fn field(recipe: &Recipe, model: &ModelInfo) -> &'static str {
        recipe.validate(model).unwrap_err().field
    }

    #[test]
    fn any_multiple_of_8_validates_and_other_sizes_name_the_field() {
        for (w, h) in [(592, 440), (800, 600), (512, 512), (8, 4096), (104, 40)] {
            Recipe { width: w, height: h, ..Recipe::default() }.validate(&sd()).unwrap();
        }
        assert_eq!(field(&Recipe { width: 500, ..Recipe::default() }, &sd()), "width");
        assert_eq!(field(&Recipe { height: 0, ..Recipe::default() }, &sd()), "height");
        assert_eq!(field(&Recipe { width: 4104, ..Recipe::default() }, &sd()), "width");
    }

    #[test]
    fn limits_name_their_field() {
        let r = Recipe::default();
        let cases: Vec<(Recipe, &str)> = vec![
            (Recipe { steps: 0, ..r.clone() }, "steps"),
            (Recipe { steps: 151, ..r.clone() }, "steps"),
            (Recipe { cfg_scale: f32::NAN, ..r.clone() }, "cfg_scale"),
            (Recipe { cfg_scale: -1.0, ..r.clone() }, "cfg_scale"),
            (Recipe { batch_size: 0, ..r.clone() }, "batch_size"),
            (Recipe { batch_count: 101, ..r.clone() }, "batch_count"),
            (Recipe { seed: Some(u64::MAX), ..r.clone() }, "seed"),
            (Recipe { strength: Some(0.5), ..r.clone() }, "strength"),
            (Recipe { init: Some(ImageRef::Attachment(0)), strength: Some(0.0), ..r.clone() }, "strength"),
            (Recipe { mask: Some(ImageRef::Attachment(1)), ..r.clone() }, "mask"),
            (Recipe { outpaint: Some([0, 0, 64, 0]), ..r.clone() }, "outpaint"),
            (
                Recipe {
                    init: Some(ImageRef::Attachment(0)),
                    mask: Some(ImageRef::Attachment(1)),
                    outpaint: Some([0, 0, 64, 0]),
                    ..r.clone()
                },
                "outpaint",
            ),
            (Recipe { prompt: "x".repeat(MAX_PROMPT_CHARS + 1), ..r.clone() }, "prompt"),
            (Recipe { negative_prompt: "x".repeat(MAX_PROMPT_CHARS + 1), ..r.clone() }, "negative_prompt"),
            (Recipe { prompt: "a cat <lora:a/b:1>".into(), ..r.clone() }, "prompt"),
        ];
        for (recipe, want) in cases {
            assert_eq!(field(&recipe, &sd()), want, "{recipe:?}");
        }
        let inpainting = ModelInfo::stable_diffusion("SD 1.5 inpainting", true);
        assert_eq!(field(&Recipe { init: Some(ImageRef::Attachment(0)), ..r.clone() }, &inpainting), "mask");
        let outpaint = Recipe { init: Some(ImageRef::Attachment(0)), outpaint: Some([0, 0, 64, 0]), ..r };
        outpaint.validate(&inpainting).unwrap();
    }

    /// Every size the app offers for every shipped model (and the test model's manifest), with
    /// the model's defaults, is a recipe that model takes.
    #[test]
    fn every_size_preset_of_every_shipped_manifest_validates() {
        let mut manifests = darkroom_weights::manifest::builtin().unwrap();
        let tiny = include_str!("../../../../tests/fixtures/tiny-sd.toml");
        manifests.push(darkroom_weights::Manifest::parse(tiny, "tiny-sd.toml").unwrap());
        let mut checked = 0;
        for manifest in manifests.iter().filter(|m| m.family.generates()) {
            let info = ModelInfo::from_manifest(manifest);
            let defaults = Recipe::model_defaults(manifest);
            let d = manifest.defaults.as_ref().unwrap();
            for (name, width, height) in size_presets(d.width.max(d.height) as usize) {
                let mut recipe = Recipe { width, height, ..defaults.clone() };
                if info.inpainting {
                    recipe.init = Some(ImageRef::Attachment(0));
                    recipe.mask = Some(ImageRef::Attachment(1));
                }
                recipe
                    .validate(&info)
                    .unwrap_or_else(|e| panic!("{} {name} {width}x{height}: {e}", manifest.id));
                checked += 1;
            }
        }
        assert!(checked >= 4 * 7, "{checked}");
    }
}
