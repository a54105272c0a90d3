//! LoRA files: low-rank updates to a model's weight matrices, merged at load as
//! `W += scale · alpha / rank · up · down` (what diffusers' `fuse_lora` and A1111 compute).
//!
//! Two layouts are read:
//! - kohya's (sd-scripts, what model sites share): `lora_unet_<module>` / `lora_te_<module>`
//!   with `.lora_down.weight` [rank, in(, kh, kw)], `.lora_up.weight` [out, rank(, 1, 1)] and an
//!   optional `.alpha`; `<module>` is the diffusers module path with `.` written as `_`.
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B.weight` (alpha = rank), and the
//!   older `unet.<module>.lora.down.weight` / `lora.up.weight`.
//!
//! Both are keyed here by the kohya name, which a loader derives from the weight it is about to
//! pack ([`module_name`]). SDXL's files name a second text encoder (`lora_te2_`,
//! `text_encoder_2.`); kohya's `lora_te1_` is the first encoder's `lora_te_`. LDM-named UNets
//! are refused with a reason rather than half-applied.

use std::collections::BTreeMap;

use crate::safetensors::{SafetensorsError, SafetensorsFile, TensorInfo};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoraError {
    #[error(transparent)]
    File(#[from] SafetensorsError),
    #[error("this is not a LoRA file: it has no lora_down/lora_up or lora_A/lora_B tensors")]
    NotALora,
    #[error("this LoRA is for SDXL (it changes a second text encoder); the model is SD 1.x or 2.x")]
    Sdxl,
    #[error("this is a LyCORIS {0} file; Darkroom merges plain low-rank LoRAs (lora_down/lora_up) only")]
    Lycoris(&'static str),
    #[error(
        "this LoRA names its UNet layers the LDM way (`{0}`); only diffusers-named LoRAs are read so far"
    )]
    LdmNames(String),
    #[error("LoRA layer `{name}`: {detail}")]
    Bad { name: String, detail: String },
}

/// Which model component a LoRA module belongs to, as its kohya prefix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    Unet,
    /// The (first) text encoder: kohya's `lora_te_` (SD 1.x/2.x) or `lora_te1_` (SDXL).
    TextEncoder,
    /// SDXL's second text encoder: `lora_te2_`.
    TextEncoder2,
}

impl Component {
    fn prefix(self) -> &'static str {
        match self {
            Component::Unet => "lora_unet_",
            Component::TextEncoder => "lora_te_",
            Component::TextEncoder2 => "lora_te2_",
        }
    }
}

/// The kohya name of the LoRA module that changes `weight_key` (a diffusers weight name such as
/// `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight`).
pub fn module_name(component: Component, weight_key: &str) -> String {
    let module = weight_key.strip_suffix(".weight").unwrap_or(weight_key);
    format!("{}{}", component.prefix(), module.replace('.', "_"))
}

/// The name a LoRA file goes by in `<lora:NAME:scale>` tags: its file name without the
/// `.safetensors` extension.
pub fn name_from_file(file_name: &str) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    base.strip_suffix(".safetensors").unwrap_or(base).to_string()
}

/// Whether `name` can be written in a prompt tag and stored under: not empty, none of the
/// characters that end a tag or a path segment.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.trim() != name || name.contains(['/', '\\', ':', '<', '>']) {
        return Err(format!(
            "`{name}` cannot be a LoRA name: it must be non-empty, without surrounding spaces or any of / \\ : < >"
        ));
    }
    Ok(())
}

/// One layer's low-rank update.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraUpdate {
    /// [rank, cols] (a conv's kernel flattened into cols, as the engine stores conv weights).
    pub down: Vec<f32>,
    /// [rows, rank].
    pub up: Vec<f32>,
    pub rank: usize,
    pub rows: usize,
    pub cols: usize,
    /// alpha / rank (1 where the file has no alpha).
    pub alpha_scale: f32,
}

impl LoraUpdate {
    /// Adds `scale` times this update to `weight` ([rows, cols], row-major).
    pub fn merge_into(&self, weight: &mut [f32], rows: usize, cols: usize, scale: f32) -> Result<(), String> {
        if rows != self.rows || cols != self.cols || weight.len() != rows * cols {
            return Err(format!(
                "the LoRA changes a [{}, {}] weight but the model's is [{rows}, {cols}]: it is for another model",
                self.rows, self.cols
            ));
        }
        let factor = scale * self.alpha_scale;
        for r in 0..rows {
            let up = &self.up[r * self.rank..(r + 1) * self.rank];
            let row = &mut weight[r * cols..(r + 1) * cols];
            for (k, &u) in up.iter().enumerate() {
                let u = u * factor;
                if u == 0.0 {
                    continue;
                }
                let down = &self.down[k * cols..(k + 1) * cols];
                for (w, &d) in row.iter_mut().zip(down) {
                    *w += u * d;
                }
            }
        }
        Ok(())
    }
}

/// A LoRA file's updates by kohya module name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lora {
    pub updates: BTreeMap<String, LoraUpdate>,
}

/// The kohya name and role (down, up, alpha) of a tensor name, in either layout.
fn classify(name: &str) -> Option<(String, &'static str)> {
    for (suffix, role) in [
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".alpha", "alpha"),
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".lora.down.weight", "down"),
        (".lora.up.weight", "up"),
    ] {
        if let Some(module) = name.strip_suffix(suffix) {
            let kohya = if let Some(rest) = module.strip_prefix("unet.") {
                format!("lora_unet_{}", rest.replace('.', "_"))
            } else if let Some(rest) = module.strip_prefix("text_encoder.") {
                format!("lora_te_{}", rest.replace('.', "_"))
            } else if let Some(rest) = module.strip_prefix("text_encoder_2.") {
                format!("lora_te2_{}", rest.replace('.', "_"))
            } else if let Some(rest) = module.strip_prefix("lora_te1_") {
                // SDXL kohya files number the first encoder; it is the one SD's `lora_te_` names.
                format!("lora_te_{rest}")
            } else {
                module.to_string()
            };
            return Some((kohya, role));
        }
    }
    None
}

impl Lora {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Lora, LoraError> {
        let file = SafetensorsFile::from_bytes(bytes)?;
        let mut parts: BTreeMap<String, [Option<&TensorInfo>; 3]> = BTreeMap::new();
        for info in &file.header.tensors {
            if info.name.contains(".hada_") {
                return Err(LoraError::Lycoris("LoHa"));
            }
            if info.name.contains(".lokr_") {
                return Err(LoraError::Lycoris("LoKr"));
            }
            let Some((module, role)) = classify(&info.name) else { continue };
            if module.starts_with("lora_unet_input_blocks")
                || module.starts_with("lora_unet_output_blocks")
                || module.starts_with("lora_unet_middle_block")
            {
                return Err(LoraError::LdmNames(module));
            }
            let slot = match role {
                "down" => 0,
                "up" => 1,
                _ => 2,
            };
            parts.entry(module).or_default()[slot] = Some(info);
        }
        let mut updates = BTreeMap::new();
        for (name, [down, up, alpha]) in parts {
            let bad = |detail: String| LoraError::Bad { name: name.clone(), detail };
            let (Some(down), Some(up)) = (down, up) else {
                return Err(bad("has only one of its two low-rank halves".into()));
            };
            let dims = |info: &TensorInfo| info.shape.iter().map(|&d| d as usize).collect::<Vec<_>>();
            let (ds, us) = (dims(down), dims(up));
            let rank = *ds.first().ok_or_else(|| bad("empty down shape".into()))?;
            let cols: usize = ds[1..].iter().product();
            let rows = *us.first().ok_or_else(|| bad("empty up shape".into()))?;
            let up_rank: usize = us[1..].iter().product();
            if rank == 0 || ds.len() < 2 || up_rank != rank {
                return Err(bad(format!("down {ds:?} and up {us:?} do not share a rank")));
            }
            let alpha_scale = match alpha {
                Some(info) => {
                    let value = *file.to_f32(info)?.first().ok_or_else(|| bad("empty alpha".into()))?;
                    value / rank as f32
                }
                None => 1.0,
            };
            let update =
                LoraUpdate { down: file.to_f32(down)?, up: file.to_f32(up)?, rank, rows, cols, alpha_scale };
            updates.insert(name, update);
        }
        if updates.is_empty() {
            return Err(LoraError::NotALora);
        }
        Ok(Lora { updates })
    }

    pub fn get(&self, module: &str) -> Option<&LoraUpdate> {
        self.updates.get(module)
    }

    /// Whether the file changes SDXL's second text encoder (so it is for SDXL).
    pub fn is_sdxl(&self) -> bool {
        self.updates.keys().any(|k| k.starts_with(Component::TextEncoder2.prefix()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_names_and_must_fit_a_tag() {
        assert_eq!(name_from_file("C:\\loras\\Water Colour.safetensors"), "Water Colour");
        assert_eq!(name_from_file("/x/ink.v2.safetensors"), "ink.v2");
        assert_eq!(name_from_file("plain"), "plain");
        assert!(check_name("Water Colour").is_ok());
        for bad in ["", " ", " pad", "a:b", "a/b", "a\\b", "<x>"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    /// A safetensors file of f32 tensors.
    fn safetensors_bytes(tensors: &[(&str, &[u64], &[f32])]) -> Vec<u8> {
        let tensors: Vec<(String, &str, Vec<u64>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, shape, values)| {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.to_string(), "F32", shape.to_vec(), bytes)
            })
            .collect();
        crate::testing::safetensors_bytes(&tensors)
    }

    #[test]
    fn kohya_names_follow_the_diffusers_module_path() {
        assert_eq!(
            module_name(Component::Unet, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
        );
        assert_eq!(
            module_name(Component::TextEncoder, "text_model.encoder.layers.3.mlp.fc1.weight"),
            "lora_te_text_model_encoder_layers_3_mlp_fc1"
        );
    }

    #[test]
    fn merge_adds_scale_alpha_over_rank_up_times_down() {
        // rank 2, a [3, 2] weight; alpha 1 → factor 0.5 at scale 1.
        let bytes = safetensors_bytes(&[
            ("lora_unet_x.lora_down.weight", &[2, 2], &[1.0, 2.0, 3.0, 4.0]),
            ("lora_unet_x.lora_up.weight", &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
            ("lora_unet_x.alpha", &[], &[1.0]),
        ]);
        let lora = Lora::from_bytes(bytes).unwrap();
        let update = lora.get("lora_unet_x").unwrap();
        let mut w = vec![0.0; 6];
        update.merge_into(&mut w, 3, 2, 2.0).unwrap();
        // up·down = [[1,2],[3,4],[4,6]]; × 2 × 0.5.
        assert_eq!(w, vec![1.0, 2.0, 3.0, 4.0, 4.0, 6.0]);
        assert!(update.merge_into(&mut w, 2, 3, 1.0).unwrap_err().contains("another model"));
    }

    #[test]
    fn peft_names_map_to_kohya_ones_and_bad_files_are_refused() {
        let bytes = safetensors_bytes(&[
            ("unet.mid_block.attentions.0.proj_in.lora_A.weight", &[1, 2], &[1.0, 1.0]),
            ("unet.mid_block.attentions.0.proj_in.lora_B.weight", &[2, 1], &[1.0, 1.0]),
        ]);
        let lora = Lora::from_bytes(bytes).unwrap();
        let update = lora.get("lora_unet_mid_block_attentions_0_proj_in").unwrap();
        assert_eq!(update.alpha_scale, 1.0);

        let sdxl = safetensors_bytes(&[
            ("lora_te2_text_model_x.lora_down.weight", &[1, 1], &[1.0]),
            ("lora_te2_text_model_x.lora_up.weight", &[1, 1], &[1.0]),
            ("lora_te1_text_model_y.lora_down.weight", &[1, 1], &[1.0]),
            ("lora_te1_text_model_y.lora_up.weight", &[1, 1], &[1.0]),
            ("text_encoder_2.text_model.z.lora_A.weight", &[1, 1], &[1.0]),
            ("text_encoder_2.text_model.z.lora_B.weight", &[1, 1], &[1.0]),
        ]);
        let sdxl = Lora::from_bytes(sdxl).unwrap();
        assert!(sdxl.is_sdxl());
        let names: Vec<&String> = sdxl.updates.keys().collect();
        assert_eq!(names, ["lora_te2_text_model_x", "lora_te2_text_model_z", "lora_te_text_model_y"]);
        let ldm =
            safetensors_bytes(&[("lora_unet_input_blocks_1_1_proj_in.lora_down.weight", &[1, 1], &[1.0])]);
        assert!(matches!(Lora::from_bytes(ldm), Err(LoraError::LdmNames(_))));
        let half = safetensors_bytes(&[("lora_unet_x.lora_down.weight", &[1, 1], &[1.0])]);
        assert!(matches!(Lora::from_bytes(half), Err(LoraError::Bad { .. })));
        let rank = safetensors_bytes(&[
            ("lora_unet_x.lora_down.weight", &[2, 1], &[1.0, 1.0]),
            ("lora_unet_x.lora_up.weight", &[1, 3], &[1.0, 1.0, 1.0]),
        ]);
        assert!(matches!(Lora::from_bytes(rank), Err(LoraError::Bad { .. })));
        let loha = safetensors_bytes(&[("lora_unet_x.hada_w1_a", &[1, 1], &[1.0])]);
        assert_eq!(Lora::from_bytes(loha), Err(LoraError::Lycoris("LoHa")));
        let plain = safetensors_bytes(&[("conv.weight", &[1], &[1.0])]);
        assert_eq!(Lora::from_bytes(plain), Err(LoraError::NotALora));
    }
}
