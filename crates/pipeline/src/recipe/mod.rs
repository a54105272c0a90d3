//! The one description of a generation. Every setting lives in [`Recipe`] and every limit and
//! size rule in [`Recipe::validate`]: the CLI's flags, the worker protocol, the widget's
//! messages, the app's form, gallery records and A1111 infotext all convert to and from it, so
//! a recipe can be copied, saved, diffed and queued, and a feature adds a field here rather
//! than a parallel settings struct.

use serde::{Deserialize, Serialize};

use crate::control::ControlUnit;
use crate::metadata::GenerationParams;
use crate::prompt::{extract_loras, LoraTag};
use crate::upscale::LatentScale;
use crate::Sampler;

mod validate;
pub use validate::{ModelInfo, RecipeError};

/// The longest prompt (and negative prompt) accepted, in characters: far beyond what CLIP's
/// 75-token chunks make useful, short of what would stall tokenizing.
pub const MAX_PROMPT_CHARS: usize = 20_000;
/// The largest side in pixels (the GPU's binding limits are checked separately, per adapter).
pub const MAX_SIDE: usize = 4096;
pub const MAX_STEPS: usize = 150;
pub const MAX_CFG: f32 = 100.0;
/// img2img's strength when a recipe names none (A1111's and diffusers' default).
pub const IMG2IMG_STRENGTH: f64 = 0.75;
/// Images per run (one UNet batch).
pub const MAX_BATCH_SIZE: usize = 64;
/// Runs one after another.
pub const MAX_BATCH_COUNT: usize = 100;

/// Where an input image comes from: an attachment of the message that carries the recipe (the
/// worker protocol, the widget), or a file (the CLI, batch files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRef {
    Attachment(usize),
    File(String),
}

/// Every generation setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    /// A model id (`sd-turbo`, an imported checkpoint's id) or, natively, a diffusers folder.
    pub model: String,
    /// A1111 syntax: `(word:1.3)`, `[word]`, `BREAK`, and `<lora:name:weight>` tags, which
    /// choose the LoRAs (see [`Recipe::loras`]).
    pub prompt: String,
    pub negative_prompt: String,
    /// `None`: a fresh random seed for each run ([`Recipe::with_seed`]). Image i of a batch uses
    /// seed + i, and run r of a batch count continues from seed + r · batch_size, as A1111.
    pub seed: Option<u64>,
    pub steps: usize,
    pub sampler: Sampler,
    /// Classifier-free guidance; at most 1 skips the unconditional pass.
    pub cfg_scale: f32,
    /// The output size in pixels (with `outpaint`, the extended canvas).
    pub width: usize,
    pub height: usize,
    /// Images per run, one UNet batch.
    pub batch_size: usize,
    /// Runs one after another.
    pub batch_count: usize,
    /// img2img / inpainting / outpainting source.
    pub init: Option<ImageRef>,
    /// Inpainting: white repaints, black keeps.
    pub mask: Option<ImageRef>,
    /// Outpainting: the init image extended by left, top, right, bottom pixels, the new area
    /// (and an 8-pixel seam) repainted; the mask is made from the margins.
    pub outpaint: Option<[usize; 4]>,
    /// How much of the init image to redo (0, 1]; `None`: 0.75 for img2img, 1 with a mask.
    pub strength: Option<f64>,
    /// The dynamic prompt template `prompt` was expanded from (recorded in the parameters as
    /// `Template:`, as sd-dynamic-prompts records it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The brand preset the recipe was made under (`crate::preset`), by name: recorded in the
    /// parameters as `Preset:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// ControlNet units, applied together (diffusers' MultiControlNet), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ControlUnit>,
    /// A1111's hires fix: after the image is made at width x height, it is upscaled and
    /// redrawn by an img2img pass at the larger size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hires: Option<Hires>,
    /// A1111's "SD upscale": the init image upscaled, then redrawn by img2img tile by tile (the
    /// recipe's width x height is the result's size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sd_upscale: Option<SdUpscale>,
    /// Drafts: the images decoded by TAESD (milliseconds) with their final latents kept in the
    /// PNG, to be finished by the full VAE (and the hires pass) later — the same pixels as
    /// making them directly ([`crate::draft`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
}

/// Tiled SD upscale's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SdUpscale {
    pub scale: f64,
    /// `lanczos` or an upscaler model (a file or a downloaded id).
    pub upscaler: String,
    /// Tile side in pixels (a multiple of 8).
    pub tile: usize,
    /// Pixels neighbouring tiles share, blended (a multiple of 8, under half the tile).
    pub overlap: usize,
}

impl Default for SdUpscale {
    fn default() -> Self {
        SdUpscale { scale: 2.0, upscaler: HIRES_LANCZOS.into(), tile: 512, overlap: 64 }
    }
}

impl SdUpscale {
    /// The result's size for an init image of `width` x `height`.
    pub fn size(&self, width: usize, height: usize) -> (usize, usize) {
        let side = |v: usize| ((v as f64 * self.scale) as usize / 8 * 8).max(8);
        (side(width), side(height))
    }
}

/// The hires fix's settings (A1111's `Hires upscale`, `Hires steps`, `Hires upscaler`,
/// `Denoising strength`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hires {
    /// The size factor (the result is width·scale x height·scale, down to multiples of 8).
    pub scale: f64,
    /// Steps of the second pass (diffusers' img2img: about steps · strength run); 0: the
    /// recipe's steps.
    pub steps: usize,
    /// How much of the upscaled image the second pass redraws.
    pub strength: f64,
    /// `lanczos` (a plain resize), or an upscaler model (a file or a downloaded id).
    pub upscaler: String,
}

impl Default for Hires {
    fn default() -> Self {
        Hires { scale: 2.0, steps: 0, strength: 0.7, upscaler: HIRES_LANCZOS.into() }
    }
}

/// The hires upscaler that only resizes.
pub const HIRES_LANCZOS: &str = "lanczos";

/// A1111's latent upscalers the hires fix runs, by the name A1111 records: the first pass's
/// latents resized, no VAE decode and encode between the passes.
pub const LATENT_UPSCALERS: [(&str, LatentScale); 2] =
    [("Latent", LatentScale::Bilinear), ("Latent (nearest)", LatentScale::Nearest)];

/// `--hires …,upscaler=NAME` as recorded: `latent` is A1111's `Latent`, `latent-nearest` (or
/// any case of `latent (nearest)`) its `Latent (nearest)`; other names as given.
pub fn hires_upscaler_name(name: &str) -> String {
    let n = name.trim();
    if n.eq_ignore_ascii_case("latent-nearest") {
        return LATENT_UPSCALERS[1].0.into();
    }
    match LATENT_UPSCALERS.iter().find(|(a, _)| a.eq_ignore_ascii_case(n)) {
        Some((a, _)) => a.to_string(),
        None => n.to_string(),
    }
}

/// The hires fix's second pass for the image of `seed`: img2img at the upscaled size, with the
/// hires steps (else the recipe's) and strength, one image.
pub fn hires_second_pass(recipe: &Recipe, hires: &Hires, seed: u64) -> Recipe {
    let (width, height) = hires.size(recipe.width, recipe.height);
    Recipe {
        seed: Some(seed),
        width,
        height,
        batch_size: 1,
        batch_count: 1,
        steps: if hires.steps > 0 { hires.steps } else { recipe.steps },
        init: Some(ImageRef::File("(hires)".into())),
        strength: Some(hires.strength),
        hires: None,
        draft: false,
        ..recipe.clone()
    }
}

impl Hires {
    /// The latent mode when the upscaler is one of A1111's latent ones.
    pub fn latent(&self) -> Option<LatentScale> {
        LATENT_UPSCALERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(self.upscaler.trim())).map(|(_, m)| *m)
    }

    /// The second pass's size for a first pass of `width` x `height`.
    pub fn size(&self, width: usize, height: usize) -> (usize, usize) {
        let side = |v: usize| ((v as f64 * self.scale) as usize / 8 * 8).max(8);
        (side(width), side(height))
    }
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            model: String::new(),
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: None,
            steps: 20,
            sampler: Sampler::DpmPp2mKarras,
            cfg_scale: 7.0,
            width: 512,
            height: 512,
            batch_size: 1,
            batch_count: 1,
            init: None,
            mask: None,
            outpaint: None,
            strength: None,
            template: None,
            preset: None,
            controls: Vec::new(),
            hires: None,
            sd_upscale: None,
            draft: false,
        }
    }
}

/// The seed of item `index` of a sequence whose items use `stride` seeds each: `seed + index ·
/// stride`, wrapping at 2^64 as every seed sum in Darkroom does (never an overflow panic).
pub fn seed_at(seed: u64, index: u64, stride: u64) -> u64 {
    seed.wrapping_add(index.wrapping_mul(stride))
}

impl Recipe {
    /// The recipe a manifest's defaults describe (size, steps, CFG, sampler).
    pub fn model_defaults(manifest: &darkroom_weights::Manifest) -> Recipe {
        let mut recipe = Recipe { model: manifest.id.clone(), ..Recipe::default() };
        if let Some(d) = &manifest.defaults {
            (recipe.width, recipe.height) = (d.width as usize, d.height as usize);
            recipe.steps = d.steps as usize;
            recipe.cfg_scale = d.cfg;
            if let Ok(sampler) = d.sampler.parse() {
                recipe.sampler = sampler;
            }
        }
        recipe
    }

    /// The LoRAs the prompt's `<lora:name:weight>` tags choose, in order: the prompt is where a
    /// recipe keeps them, as A1111's infotext does.
    pub fn loras(&self) -> Vec<LoraTag> {
        extract_loras(&self.prompt).1
    }

    /// img2img's strength as the pipeline takes it: the recipe's, else 1 with a mask or
    /// outpainting (from noise) and 0.75 for img2img.
    pub fn effective_strength(&self) -> f64 {
        match (self.strength, &self.init) {
            (_, None) => 1.0,
            (Some(s), Some(_)) => s,
            (None, Some(_)) if self.mask.is_some() || self.outpaint.is_some() => 1.0,
            (None, Some(_)) => IMG2IMG_STRENGTH,
        }
    }

    /// The same recipe with a seed (for a random-seed recipe, the one drawn for this run).
    pub fn with_seed(&self, seed: u64) -> Recipe {
        Recipe { seed: Some(seed), ..self.clone() }
    }

    /// Run `index` of the batch count: one run of batch_size images, its seed continuing after
    /// the earlier runs' images.
    pub fn run(&self, index: usize) -> Recipe {
        let seed = self.seed.map(|s| seed_at(s, index as u64, self.batch_size as u64));
        Recipe { seed, batch_count: 1, ..self.clone() }
    }

    /// The settings A1111 writes for image `index` of this (seeded) run. `model` names the model
    /// as the infotext's `Model:` field.
    pub fn to_params(&self, model: &str, index: usize) -> GenerationParams {
        let mut extra = Vec::new();
        let strength = self.effective_strength();
        if self.init.is_some() && strength < 1.0 {
            extra.push(("Denoising strength".to_string(), format!("{strength}")));
        }
        if let Some(template) = self.template.as_ref().filter(|t| **t != self.prompt) {
            extra.push(("Template".to_string(), template.clone()));
        }
        if let Some(preset) = &self.preset {
            extra.push(("Preset".to_string(), preset.clone()));
        }
        for (i, unit) in self.controls.iter().enumerate() {
            extra.push((format!("ControlNet {i}"), unit.to_infotext(&control_name(&unit.model))));
        }
        if let Some(u) = &self.sd_upscale {
            extra.push(("SD upscale overlap".to_string(), format!("{}", u.overlap)));
            extra.push(("SD upscale upscaler".to_string(), control_name(&u.upscaler)));
            extra.push(("SD upscale scale".to_string(), format!("{}", u.scale)));
            extra.push(("SD upscale tile".to_string(), format!("{}", u.tile)));
        }
        if self.draft {
            extra.push(("Draft".to_string(), "TAESD".to_string()));
        }
        if let Some(h) = &self.hires {
            extra.push(("Denoising strength".to_string(), format!("{}", h.strength)));
            extra.push(("Hires upscale".to_string(), format!("{}", h.scale)));
            if h.steps > 0 {
                extra.push(("Hires steps".to_string(), format!("{}", h.steps)));
            }
            extra.push(("Hires upscaler".to_string(), control_name(&h.upscaler)));
        }
        GenerationParams {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps as u32,
            sampler: self.sampler.display_name().to_string(),
            cfg_scale: self.cfg_scale,
            seed: self.seed.unwrap_or(0).saturating_add(index as u64),
            width: self.width as u32,
            height: self.height as u32,
            model: (!model.is_empty()).then(|| model.to_string()),
            model_hash: None,
            extra,
        }
    }

    /// The recipe an image's parameters describe ("use these settings", a dropped PNG, A1111's
    /// infotext): prompt, negative, seed, steps, sampler, CFG, size, model and denoising
    /// strength. A sampler this engine lacks keeps `fallback`'s; input images are not part of
    /// an infotext, so none is set.
    pub fn from_params(params: &GenerationParams, fallback: &Recipe) -> Recipe {
        let strength = params
            .extra
            .iter()
            .find(|(k, _)| k == "Denoising strength")
            .and_then(|(_, v)| v.parse::<f64>().ok());
        let template = params.extra.iter().find(|(k, _)| k == "Template").map(|(_, v)| v.clone());
        let preset = params.extra.iter().find(|(k, _)| k == "Preset").map(|(_, v)| v.clone());
        let mut controls: Vec<(usize, ControlUnit)> = params
            .extra
            .iter()
            .filter_map(|(k, v)| {
                let index = k.strip_prefix("ControlNet ")?.trim().parse::<usize>().ok()?;
                Some((index, ControlUnit::from_infotext(v)?))
            })
            .collect();
        controls.sort_by_key(|(i, _)| *i);
        let field = |key: &str| params.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let hires = field("Hires upscale").and_then(|v| v.parse::<f64>().ok()).map(|scale| Hires {
            scale,
            steps: field("Hires steps").and_then(|v| v.parse().ok()).unwrap_or(0),
            strength: strength.unwrap_or(Hires::default().strength),
            upscaler: match field("Hires upscaler") {
                Some(u) if u.eq_ignore_ascii_case("lanczos") || u.is_empty() => HIRES_LANCZOS.into(),
                Some(u) => u.to_string(),
                None => HIRES_LANCZOS.into(),
            },
        });
        // With the hires fix, the denoising strength is the second pass's.
        let strength = if hires.is_some() { None } else { strength };
        Recipe {
            model: params.model.clone().unwrap_or_else(|| fallback.model.clone()),
            prompt: params.prompt.clone(),
            negative_prompt: params.negative_prompt.clone(),
            seed: Some(params.seed),
            steps: params.steps as usize,
            sampler: params.sampler.parse().unwrap_or(fallback.sampler),
            cfg_scale: params.cfg_scale,
            width: params.width as usize,
            height: params.height as usize,
            strength,
            template,
            preset,
            init: None,
            mask: None,
            outpaint: None,
            controls: controls.into_iter().map(|(_, unit)| unit).collect(),
            hires,
            sd_upscale: None,
            ..fallback.clone()
        }
    }
}

/// A ControlNet as the infotext names it: a folder by its last component, an id as it is.
fn control_name(model: &str) -> String {
    let trimmed = model.trim_end_matches(['/', '\\']);
    trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed).to_string()
}

/// Size presets by aspect ratio around a model's native side, multiples of 8 (A1111's common
/// ratios), as (label, width, height).
pub fn size_presets(native: usize) -> Vec<(&'static str, usize, usize)> {
    let ratios: [(&str, f64); 7] = [
        ("1:1", 1.0),
        ("4:3", 4.0 / 3.0),
        ("3:4", 0.75),
        ("3:2", 1.5),
        ("2:3", 2.0 / 3.0),
        ("16:9", 16.0 / 9.0),
        ("9:16", 9.0 / 16.0),
    ];
    let area = (native * native) as f64;
    ratios
        .iter()
        .map(|&(name, r)| {
            let w = ((area * r).sqrt() / 8.0).round() as usize * 8;
            let h = ((area / r).sqrt() / 8.0).round() as usize * 8;
            (name, w.max(8), h.max(8))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_near_the_top_wrap_instead_of_overflowing() {
        let recipe = Recipe { seed: Some(u64::MAX), batch_size: 4, batch_count: 3, ..Recipe::default() };
        assert_eq!(recipe.run(2).seed, Some(7)); // MAX + 8 wraps to 7
        assert_eq!(seed_at(u64::MAX, u64::MAX, u64::MAX), u64::MAX.wrapping_add(1));
        let expanded = crate::dynamic::expand(
            &Recipe { prompt: "{a|b}".into(), ..recipe },
            crate::dynamic::Dynamic::Combinatorial,
            &darkroom_workflow::Wildcards::default(),
        )
        .unwrap();
        assert_eq!(expanded.recipes.iter().map(|r| r.seed).collect::<Vec<_>>(), [Some(u64::MAX), Some(11)]);
    }

    #[test]
    fn strength_defaults_as_a1111() {
        let init = Some(ImageRef::File("a.png".into()));
        assert_eq!(Recipe::default().effective_strength(), 1.0);
        assert_eq!(Recipe { init: init.clone(), ..Recipe::default() }.effective_strength(), 0.75);
        let masked = Recipe { init: init.clone(), mask: init.clone(), ..Recipe::default() };
        assert_eq!(masked.effective_strength(), 1.0);
        assert_eq!(Recipe { strength: Some(0.4), ..masked }.effective_strength(), 0.4);
    }

    #[test]
    fn runs_continue_the_seeds_of_earlier_runs() {
        let r = Recipe { seed: Some(10), batch_size: 3, batch_count: 4, ..Recipe::default() };
        let seeds: Vec<Option<u64>> = (0..4).map(|i| r.run(i).seed).collect();
        assert_eq!(seeds, [Some(10), Some(13), Some(16), Some(19)]);
        assert_eq!(r.run(2).batch_count, 1);
    }

    #[test]
    fn serde_round_trip_and_defaults_for_missing_fields() {
        let r = Recipe {
            model: "sd-turbo".into(),
            prompt: "a lighthouse <lora:ink:0.5>".into(),
            seed: Some(7),
            sampler: Sampler::EulerAncestral,
            init: Some(ImageRef::Attachment(0)),
            mask: Some(ImageRef::File("mask.png".into())),
            strength: Some(0.6),
            ..Recipe::default()
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""sampler":"euler_a""#), "{json}");
        assert_eq!(serde_json::from_str::<Recipe>(&json).unwrap(), r);
        let sparse: Recipe = serde_json::from_str(r#"{"prompt": "a cat", "sampler": "Euler a"}"#).unwrap();
        assert_eq!(
            sparse,
            Recipe { prompt: "a cat".into(), sampler: Sampler::EulerAncestral, ..Recipe::default() }
        );
        assert!(serde_json::from_str::<Recipe>(r#"{"sampler": "warp"}"#).is_err());
        assert_eq!(r.loras(), vec![LoraTag { name: "ink".into(), scale: 0.5 }]);
    }

    #[test]
    fn infotext_round_trip() {
        let r = Recipe {
            model: "sd-1.5".into(),
            prompt: "a (red:1.2) fox, snow".into(),
            negative_prompt: "blurry".into(),
            seed: Some(42),
            steps: 25,
            sampler: Sampler::DpmPp2mKarras,
            cfg_scale: 6.5,
            width: 592,
            height: 440,
            init: Some(ImageRef::Attachment(0)),
            strength: Some(0.55),
            ..Recipe::default()
        };
        let text = r.to_params("sd-1.5", 2).to_infotext();
        assert_eq!(
            text,
            "a (red:1.2) fox, snow\nNegative prompt: blurry\nSteps: 25, Sampler: DPM++ 2M Karras, CFG scale: 6.5, \
             Seed: 44, Size: 592x440, Model: sd-1.5, Denoising strength: 0.55"
        );
        let back = Recipe::from_params(&GenerationParams::parse_infotext(&text).unwrap(), &Recipe::default());
        assert_eq!(back, Recipe { seed: Some(44), init: None, ..r.clone() });
        // A1111's own line, with a sampler we lack: the fallback's sampler stays.
        let a1111 = "a castle\nSteps: 30, Sampler: UniPC, CFG scale: 5, Seed: 9, Size: 768x512, Model hash: abc, Model: dreamshaper_8";
        let back = Recipe::from_params(&GenerationParams::parse_infotext(a1111).unwrap(), &r);
        assert_eq!(
            (back.sampler, back.steps, back.width, back.height),
            (Sampler::DpmPp2mKarras, 30, 768, 512)
        );
        assert_eq!(back.model, "dreamshaper_8");
        assert_eq!(back.strength, None);
        // A dynamic prompt's template rides along, quoted, and comes back.
        let t = Recipe {
            prompt: "a red fox".into(),
            template: Some("a {red|blue} fox, __styles/*__".into()),
            seed: Some(1),
            ..Recipe::default()
        };
        let text = t.to_params("m", 0).to_infotext();
        assert!(text.ends_with(", Template: \"a {red|blue} fox, __styles/*__\""), "{text}");
        let back = Recipe::from_params(&GenerationParams::parse_infotext(&text).unwrap(), &Recipe::default());
        assert_eq!(back.template, t.template);
        assert_eq!(back.prompt, "a red fox");
    }

    #[test]
    fn hires_round_trips_through_a1111_infotext_and_checks_its_settings() {
        let r = Recipe {
            prompt: "a harbour".into(),
            seed: Some(3),
            width: 512,
            height: 344,
            hires: Some(Hires {
                scale: 1.5,
                steps: 12,
                strength: 0.45,
                upscaler: "models/4x-ultra.pth".into(),
            }),
            ..Recipe::default()
        };
        r.validate(&ModelInfo::stable_diffusion("SD 1.5", false)).unwrap();
        assert_eq!(r.hires.as_ref().unwrap().size(512, 344), (768, 512));
        let text = r.to_params("m", 0).to_infotext();
        assert!(
            text.ends_with(
                "Denoising strength: 0.45, Hires upscale: 1.5, Hires steps: 12, Hires upscaler: 4x-ultra.pth"
            ),
            "{text}"
        );
        let back = Recipe::from_params(&GenerationParams::parse_infotext(&text).unwrap(), &Recipe::default());
        let h = back.hires.clone().unwrap();
        assert_eq!((h.scale, h.steps, h.strength, h.upscaler.as_str()), (1.5, 12, 0.45, "4x-ultra.pth"));
        assert_eq!(back.strength, None, "the strength is the hires pass's");
        back.validate(&ModelInfo::stable_diffusion("SD 1.5", false)).unwrap();
        let a1111 = "x\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.7, Hires upscale: 2, Hires upscaler: Latent";
        let back = Recipe::from_params(&GenerationParams::parse_infotext(a1111).unwrap(), &Recipe::default());
        assert_eq!(back.hires.unwrap().upscaler, "Latent");
        let bad = |h: Hires| {
            Recipe { hires: Some(h), ..r.clone() }
                .validate(&ModelInfo::stable_diffusion("SD 1.5", false))
                .unwrap_err()
                .field
        };
        assert_eq!(bad(Hires { scale: 1.0, ..Hires::default() }), "hires");
        assert_eq!(bad(Hires { strength: 0.0, ..Hires::default() }), "hires");
        let huge = Recipe { width: 2048, hires: Some(Hires { scale: 4.0, ..Hires::default() }), ..r.clone() };
        assert_eq!(
            huge.validate(&ModelInfo::stable_diffusion("SD 1.5", false)).unwrap_err().field,
            "hires",
            "8192 pixels wide"
        );
        let with_init = Recipe { init: Some(ImageRef::Attachment(0)), ..r.clone() };
        assert_eq!(
            with_init.validate(&ModelInfo::stable_diffusion("SD 1.5", false)).unwrap_err().field,
            "hires"
        );
    }

    #[test]
    fn every_preset_is_a_multiple_of_8() {
        for native in [512, 768, 1024, 64] {
            for (name, w, h) in size_presets(native) {
                assert!(w % 8 == 0 && h % 8 == 0, "{native} {name}: {w}x{h}");
            }
        }
        assert_eq!(size_presets(512)[1], ("4:3", 592, 440));
    }
}
