//! Brand presets: a style (prompt and negative prompt, A1111's `{prompt}` rule) plus what a
//! brand fixes — LoRAs with weights, the sampler, steps and CFG, the sizes and aspect ratios
//! allowed, a palette and a seed policy — shared as a JSON file and applied to every job of a
//! batch, grid or queue. A recipe made under a preset records it (`Preset: name` in the
//! parameters).
//!
//! ```json
//! { "name": "Acme spring", "prompt": "{prompt}, soft pastel, acme look", "negative_prompt": "neon",
//!   "loras": [{ "name": "acme_v2", "weight": 0.8 }], "sampler": "DPM++ 2M Karras", "steps": 20,
//!   "cfg_scale": 6.5, "sizes": ["1024x1024", "832x1216"], "aspect_ratios": ["1:1", "2:3"],
//!   "palette": ["#0b1f3a", "#d94f30"], "seed": { "increment": 1000 } }
//! ```

use serde::{Deserialize, Serialize};

use crate::prompt::extract_loras;
use crate::{Recipe, Sampler};

/// A LoRA the preset applies, as a `<lora:name:weight>` tag would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetLora {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f32,
}

fn one() -> f32 {
    1.0
}

/// Which seed each job gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedPolicy {
    /// The job's own seed (random when it has none).
    #[default]
    Random,
    /// Every job this seed: the prompt alone changes the image.
    Fixed(u64),
    /// Job `i` seed `start + i x its images`, so a batch's images never share a seed.
    Increment(u64),
}

/// A brand preset, as its file holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Preset {
    pub name: String,
    /// The style's prompt: `{prompt}` takes the job's prompt, else it is appended after ", ".
    pub prompt: String,
    pub negative_prompt: String,
    pub loras: Vec<PresetLora>,
    /// A sampler's id or A1111 name (`euler_a`, `DPM++ 2M Karras`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f32>,
    /// The sizes allowed, `WxH`; none: any.
    pub sizes: Vec<String>,
    /// The aspect ratios allowed, `W:H` (within 5%, as model sizes round to multiples of 8);
    /// none: any.
    pub aspect_ratios: Vec<String>,
    /// The brand's colours, `#rrggbb` (a brief's palette, scored as palette ΔE).
    pub palette: Vec<String>,
    pub seed: SeedPolicy,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PresetError {
    #[error("the preset file does not read: {0}")]
    File(String),
    #[error("the preset {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{width}x{height} is not a size preset {name:?} allows ({allowed})")]
    Size { name: String, width: usize, height: usize, allowed: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> PresetError {
    PresetError::Invalid { field, message: message.into() }
}

/// `WxH` (or `W×H`) as a size.
fn parse_size(text: &str) -> Option<(usize, usize)> {
    let (w, h) = text.trim().split_once(['x', 'X', '×'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?)).filter(|&(w, h)| w > 0 && h > 0)
}

/// `W:H` as a ratio.
fn parse_ratio(text: &str) -> Option<f64> {
    let (w, h) = text.trim().split_once(':')?;
    let (w, h): (f64, f64) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    (w > 0.0 && h > 0.0).then_some(w / h)
}

impl Preset {
    /// A preset file's text, checked.
    pub fn parse(text: &str) -> Result<Preset, PresetError> {
        let preset: Preset = serde_json::from_str(text).map_err(|e| PresetError::File(e.to_string()))?;
        preset.check()?;
        Ok(preset)
    }

    /// The file's text (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether every field reads.
    pub fn check(&self) -> Result<(), PresetError> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "is empty: name the preset"));
        }
        if let Some(s) = &self.sampler {
            s.parse::<Sampler>().map_err(|e| invalid("sampler", e))?;
        }
        for size in &self.sizes {
            parse_size(size)
                .ok_or_else(|| invalid("sizes", format!("{size:?} is not WxH, e.g. 1024x1024")))?;
        }
        for ratio in &self.aspect_ratios {
            parse_ratio(ratio)
                .ok_or_else(|| invalid("aspect_ratios", format!("{ratio:?} is not W:H, e.g. 3:2")))?;
        }
        for colour in &self.palette {
            darkroom_workflow::brief::parse_hex(colour)
                .ok_or_else(|| invalid("palette", format!("{colour:?} is not a colour like #0b1f3a")))?;
        }
        for lora in &self.loras {
            if lora.name.trim().is_empty() || lora.name.contains(['<', '>', ':']) {
                return Err(invalid("loras", format!("{:?} is not a LoRA name", lora.name)));
            }
        }
        Ok(())
    }

    /// The sizes allowed.
    pub fn sizes(&self) -> Vec<(usize, usize)> {
        self.sizes.iter().filter_map(|s| parse_size(s)).collect()
    }

    /// Whether `width` x `height` is allowed: among the sizes (when listed) and of one of the
    /// aspect ratios (when listed).
    pub fn allows(&self, width: usize, height: usize) -> bool {
        let sizes = self.sizes();
        let in_sizes = sizes.is_empty() || sizes.contains(&(width, height));
        let ratio = width as f64 / height as f64;
        let ratios: Vec<f64> = self.aspect_ratios.iter().filter_map(|r| parse_ratio(r)).collect();
        let in_ratios = ratios.is_empty() || ratios.iter().any(|r| (ratio / r - 1.0).abs() <= 0.05);
        in_sizes && in_ratios
    }

    /// Job `job`'s recipe under the preset: the style merged into its prompts, the LoRAs'
    /// tags added (a LoRA the prompt names already keeps the prompt's weight), the sampler,
    /// steps and CFG set, the size checked — a size the caller did not choose
    /// (`size_chosen` false) becomes the first size allowed — and the seed the policy's.
    pub fn apply(&self, recipe: &Recipe, job: usize, size_chosen: bool) -> Result<Recipe, PresetError> {
        self.check()?;
        let mut out = recipe.clone();
        out.prompt = darkroom_workflow::styles::merge(&self.prompt, &recipe.prompt);
        out.negative_prompt =
            darkroom_workflow::styles::merge(&self.negative_prompt, &recipe.negative_prompt);
        let named = extract_loras(&out.prompt).1;
        for lora in &self.loras {
            if !named.iter().any(|t| t.name == lora.name) {
                out.prompt = format!("{} <lora:{}:{}>", out.prompt.trim_end(), lora.name, lora.weight);
            }
        }
        if let Some(s) = &self.sampler {
            out.sampler = s.parse().map_err(|e| invalid("sampler", e))?;
        }
        if let Some(steps) = self.steps {
            out.steps = steps;
        }
        if let Some(cfg) = self.cfg_scale {
            out.cfg_scale = cfg;
        }
        if !self.allows(out.width, out.height) {
            let first = self.sizes().into_iter().find(|&(w, h)| self.allows(w, h));
            match (size_chosen, first) {
                (false, Some((w, h))) => (out.width, out.height) = (w, h),
                _ => {
                    let mut allowed: Vec<String> = self.sizes.clone();
                    allowed.extend(self.aspect_ratios.iter().map(|r| format!("ratio {r}")));
                    return Err(PresetError::Size {
                        name: self.name.clone(),
                        width: out.width,
                        height: out.height,
                        allowed: allowed.join(", "),
                    });
                }
            }
        }
        let images = (recipe.batch_size.max(1) * recipe.batch_count.max(1)) as u64;
        match self.seed {
            SeedPolicy::Random => {}
            SeedPolicy::Fixed(seed) => out.seed = Some(seed),
            SeedPolicy::Increment(start) => {
                out.seed = Some(crate::recipe::seed_at(start, job as u64, images))
            }
        }
        out.preset = Some(self.name.clone());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r##"{ "name": "Acme spring", "prompt": "{prompt}, soft pastel", "negative_prompt": "neon",
        "loras": [{ "name": "acme", "weight": 0.8 }, { "name": "grain" }], "sampler": "DPM++ 2M Karras",
        "steps": 20, "cfg_scale": 6.5, "sizes": ["512x512", "512x768"], "aspect_ratios": ["1:1", "2:3"],
        "palette": ["#0b1f3a"], "seed": { "increment": 1000 } }"##;

    fn recipe(prompt: &str) -> Recipe {
        Recipe { prompt: prompt.into(), negative_prompt: "blurry".into(), seed: Some(5), ..Recipe::default() }
    }

    #[test]
    fn a_preset_applies_its_style_loras_settings_and_seeds() {
        let preset = Preset::parse(FILE).unwrap();
        let r = preset.apply(&recipe("a kite <lora:grain:0.3>"), 2, true).unwrap();
        assert_eq!(r.prompt, "a kite <lora:grain:0.3>, soft pastel <lora:acme:0.8>");
        assert_eq!(r.negative_prompt, "blurry, neon");
        assert_eq!((r.sampler, r.steps, r.cfg_scale), (Sampler::DpmPp2mKarras, 20, 6.5));
        assert_eq!(r.seed, Some(1002));
        assert_eq!(r.preset.as_deref(), Some("Acme spring"));
        // Recorded in the parameters and read back.
        let params = r.to_params("m", 0);
        assert!(params.to_infotext().contains("Preset: Acme spring"), "{}", params.to_infotext());
        assert_eq!(Recipe::from_params(&params, &Recipe::default()).preset.as_deref(), Some("Acme spring"));
    }

    #[test]
    fn sizes_outside_the_preset_are_refused_or_replaced() {
        let preset = Preset::parse(FILE).unwrap();
        let wide = Recipe { width: 768, height: 512, ..recipe("x") };
        let e = preset.apply(&wide, 0, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "768x512 is not a size preset \"Acme spring\" allows (512x512, 512x768, ratio 1:1, ratio 2:3)"
        );
        let r = preset.apply(&wide, 0, false).unwrap();
        assert_eq!((r.width, r.height), (512, 512));
        let ratios = Preset { sizes: vec![], ..preset };
        assert!(ratios.allows(832, 1216), "2:3 within 5%");
        assert!(!ratios.allows(1216, 832));
        assert!(Preset { aspect_ratios: vec![], sizes: vec![], ..ratios }.allows(1216, 832));
    }

    #[test]
    fn seed_policies() {
        let mut preset = Preset { name: "p".into(), ..Preset::default() };
        let r = Recipe { batch_size: 2, batch_count: 3, ..recipe("x") };
        assert_eq!(preset.apply(&r, 4, true).unwrap().seed, Some(5));
        preset.seed = SeedPolicy::Fixed(77);
        assert_eq!(preset.apply(&r, 4, true).unwrap().seed, Some(77));
        preset.seed = SeedPolicy::Increment(100);
        assert_eq!(preset.apply(&r, 4, true).unwrap().seed, Some(124));
        assert_eq!(Preset::parse(r#"{"name":"p","seed":"random"}"#).unwrap().seed, SeedPolicy::Random);
        assert_eq!(Preset::parse(r#"{"name":"p","seed":{"fixed":3}}"#).unwrap().seed, SeedPolicy::Fixed(3));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let bad = |text: &str| Preset::parse(text).unwrap_err().to_string();
        assert!(bad("{").starts_with("the preset file does not read"));
        assert_eq!(bad(r#"{"name":" "}"#), "the preset name: is empty: name the preset");
        assert!(bad(r#"{"name":"p","sampler":"nope"}"#).contains("unknown sampler"));
        assert!(bad(r#"{"name":"p","sizes":["big"]}"#).contains("\"big\" is not WxH"));
        assert!(bad(r#"{"name":"p","aspect_ratios":["wide"]}"#).contains("is not W:H"));
        assert!(bad(r#"{"name":"p","palette":["blue"]}"#).contains("is not a colour"));
        assert!(bad(r#"{"name":"p","loras":[{"name":"a:b"}]}"#).contains("is not a LoRA name"));
    }

    #[test]
    fn a_preset_round_trips_through_its_file() {
        let preset = Preset::parse(FILE).unwrap();
        assert_eq!(Preset::parse(&preset.to_json()).unwrap(), preset);
    }
}
