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
//! `text_encoder_2.`); kohya's `lora_te1_` is the first encoder's `lora_te_`. kohya's SDXL files
//! name UNet modules the LDM/SGM way; [`Lora::with_diffusers_unet_names`] renames them for the
//! model's layout.

use std::collections::BTreeMap;

use crate::safetensors::{decode_f32, Header, SafetensorsError, TensorInfo};

/// The largest LoRA file read: the largest shared LoRAs (SDXL, high rank) are under 2 GB, and a
/// LoRA is held in memory whole while it is read.
pub const MAX_LORA_BYTES: u64 = 2 << 30;

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
    #[error("LoRA layer `{name}`: {detail}")]
    Bad { name: String, detail: String },
    #[error("the file is {0} bytes; a LoRA is at most {MAX_LORA_BYTES}")]
    TooLarge(u64),
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

/// What LDM/SGM block indices mean for a UNet: layers per block and which down/up blocks have
/// attention (from its diffusers config).
#[derive(Debug, Clone, PartialEq)]
pub struct UnetLayout {
    pub layers_per_block: usize,
    pub down_attention: Vec<bool>,
    pub up_attention: Vec<bool>,
}

/// A kohya UNet module name (after `lora_unet_`) in the LDM/SGM layout.
fn is_sgm_module(rest: &str) -> bool {
    ["input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_", "out_2"]
        .iter()
        .any(|p| rest.starts_with(p))
}

/// An LDM resnet's layer → diffusers' (`in_layers.2` is conv1, …).
fn resnet_layer(tail: &str) -> Option<&'static str> {
    Some(match tail {
        "in_layers_2" => "conv1",
        "out_layers_3" => "conv2",
        "emb_layers_1" => "time_emb_proj",
        "skip_connection" => "conv_shortcut",
        _ => return None,
    })
}

/// `input_blocks_4_1_transformer_blocks_0_attn1_to_q` → `down_blocks_1_attentions_1_…` (dots as
/// underscores, as kohya names are), for a UNet laid out as `layout` says.
fn sgm_to_diffusers(rest: &str, layout: &UnetLayout) -> Option<String> {
    let fixed = match rest {
        "input_blocks_0_0" => Some("conv_in"),
        "out_2" => Some("conv_out"),
        "time_embed_0" => Some("time_embedding_linear_1"),
        "time_embed_2" => Some("time_embedding_linear_2"),
        "label_emb_0_0" => Some("add_embedding_linear_1"),
        "label_emb_0_2" => Some("add_embedding_linear_2"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    // "<part>_<i>_<k>_<tail>" (the middle block has no i).
    let numbers = |s: &str| -> Option<(usize, String)> {
        let (n, tail) = s.split_once('_').unwrap_or((s, ""));
        Some((n.parse().ok()?, tail.to_string()))
    };
    let per = layout.layers_per_block + 1;
    let resnet = |prefix: String, tail: &str| Some(format!("{prefix}_{}", resnet_layer(tail)?));
    if let Some(s) = rest.strip_prefix("input_blocks_") {
        let (i, s) = numbers(s)?;
        let (k, tail) = numbers(&s)?;
        if i == 0 {
            return None;
        }
        if i % per == 0 {
            let block = i / per - 1;
            return (k == 0 && tail == "op" && block + 1 < layout.down_attention.len())
                .then(|| format!("down_blocks_{block}_downsamplers_0_conv"));
        }
        let (block, j) = ((i - 1) / per, (i - 1) % per);
        return match k {
            0 if block < layout.down_attention.len() => {
                resnet(format!("down_blocks_{block}_resnets_{j}"), &tail)
            }
            1 if *layout.down_attention.get(block)? && !tail.is_empty() => {
                Some(format!("down_blocks_{block}_attentions_{j}_{tail}"))
            }
            _ => None,
        };
    }
    if let Some(s) = rest.strip_prefix("middle_block_") {
        let (k, tail) = numbers(s)?;
        return match k {
            0 | 2 => resnet(format!("mid_block_resnets_{}", k / 2), &tail),
            1 if !tail.is_empty() => Some(format!("mid_block_attentions_0_{tail}")),
            _ => None,
        };
    }
    let s = rest.strip_prefix("output_blocks_")?;
    let (i, s) = numbers(s)?;
    let (k, tail) = numbers(&s)?;
    let (block, j) = (i / per, i % per);
    let attention = *layout.up_attention.get(block)?;
    let upsampler = j + 1 == per && block + 1 < layout.up_attention.len();
    match k {
        0 => resnet(format!("up_blocks_{block}_resnets_{j}"), &tail),
        1 if attention && !tail.is_empty() => Some(format!("up_blocks_{block}_attentions_{j}_{tail}")),
        1 | 2 if upsampler && tail == "conv" && (k == 2) == attention => {
            Some(format!("up_blocks_{block}_upsamplers_0_conv"))
        }
        _ => None,
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

/// A LoRA's layers as its header names them: per module, its (down, up) tensors and alpha, the
/// shapes checked.
type Layers<'h> = BTreeMap<String, (&'h TensorInfo, &'h TensorInfo, Option<&'h TensorInfo>, usize)>;

fn layers(header: &Header) -> Result<Layers<'_>, LoraError> {
    let mut parts: BTreeMap<String, [Option<&TensorInfo>; 3]> = BTreeMap::new();
    for info in &header.tensors {
        if info.name.contains(".hada_") {
            return Err(LoraError::Lycoris("LoHa"));
        }
        if info.name.contains(".lokr_") {
            return Err(LoraError::Lycoris("LoKr"));
        }
        let Some((module, role)) = classify(&info.name) else { continue };
        let slot = match role {
            "down" => 0,
            "up" => 1,
            _ => 2,
        };
        parts.entry(module).or_default()[slot] = Some(info);
    }
    let mut out = BTreeMap::new();
    for (name, [down, up, alpha]) in parts {
        let bad = |detail: String| LoraError::Bad { name: name.clone(), detail };
        let (Some(down), Some(up)) = (down, up) else {
            return Err(bad("has only one of its two low-rank halves".into()));
        };
        let (ds, us) = (&down.shape, &up.shape);
        let rank = *ds.first().ok_or_else(|| bad("empty down shape".into()))?;
        let rows = *us.first().ok_or_else(|| bad("empty up shape".into()))?;
        let up_rank: u64 = us[1..].iter().product();
        if rank == 0 || ds.len() < 2 || up_rank != rank || rows == 0 {
            return Err(bad(format!("down {ds:?} and up {us:?} do not share a rank")));
        }
        if alpha.is_some_and(|a| a.elements() == 0) {
            return Err(bad("empty alpha".into()));
        }
        out.insert(name, (down, up, alpha, rank as usize));
    }
    if out.is_empty() {
        return Err(LoraError::NotALora);
    }
    Ok(out)
}

impl Lora {
    /// Checks a LoRA from its header alone (the first [`crate::safetensors::header_span`] bytes
    /// of a `file_len`-byte file), before the rest is read: its size, its layers' names and
    /// shapes. Returns how many layers it changes.
    pub fn check_header(prefix: &[u8], file_len: u64) -> Result<usize, LoraError> {
        if file_len > MAX_LORA_BYTES {
            return Err(LoraError::TooLarge(file_len));
        }
        Ok(layers(&Header::parse(prefix, file_len)?)?.len())
    }

    /// Reads a whole LoRA file (borrowed: nothing is copied but the layers' values).
    pub fn from_bytes(bytes: &[u8]) -> Result<Lora, LoraError> {
        if bytes.len() as u64 > MAX_LORA_BYTES {
            return Err(LoraError::TooLarge(bytes.len() as u64));
        }
        let header = Header::parse(bytes, bytes.len() as u64)?;
        let values = |info: &TensorInfo| decode_f32(info, &bytes[info.start as usize..info.end as usize]);
        let mut updates = BTreeMap::new();
        for (name, (down, up, alpha, rank)) in layers(&header)? {
            let cols = down.shape[1..].iter().product::<u64>() as usize;
            let rows = up.shape[0] as usize;
            let alpha_scale = match alpha {
                Some(info) => values(info)?[0] / rank as f32,
                None => 1.0,
            };
            let update = LoraUpdate { down: values(down)?, up: values(up)?, rank, rows, cols, alpha_scale };
            updates.insert(name, update);
        }
        Ok(Lora { updates })
    }

    pub fn get(&self, module: &str) -> Option<&LoraUpdate> {
        self.updates.get(module)
    }

    /// Whether the UNet modules are named the LDM/SGM way (`lora_unet_input_blocks_4_1_…`), as
    /// kohya's sd-scripts writes SDXL LoRAs: [`Lora::with_diffusers_unet_names`] renames them.
    pub fn has_ldm_unet_names(&self) -> bool {
        self.updates.keys().any(|k| k.strip_prefix(Component::Unet.prefix()).is_some_and(is_sgm_module))
    }

    /// The same LoRA with LDM/SGM-named UNet modules renamed to the diffusers modules of a UNet
    /// laid out as `layout` says (as diffusers' kohya converter does). A name that fits no
    /// module of the layout is an error naming it.
    pub fn with_diffusers_unet_names(&self, layout: &UnetLayout) -> Result<Lora, LoraError> {
        let mut updates = BTreeMap::new();
        for (name, update) in &self.updates {
            let renamed = match name.strip_prefix(Component::Unet.prefix()) {
                Some(rest) if is_sgm_module(rest) => {
                    let module = sgm_to_diffusers(rest, layout).ok_or_else(|| LoraError::Bad {
                        name: name.clone(),
                        detail: "no such layer in this model's UNet (LDM naming)".into(),
                    })?;
                    format!("{}{module}", Component::Unet.prefix())
                }
                _ => name.clone(),
            };
            if updates.insert(renamed.clone(), update.clone()).is_some() {
                return Err(LoraError::Bad {
                    name: renamed,
                    detail: "named twice (LDM and diffusers names)".into(),
                });
            }
        }
        Ok(Lora { updates })
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
        let lora = Lora::from_bytes(&bytes).unwrap();
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
        let lora = Lora::from_bytes(&bytes).unwrap();
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
        let sdxl = Lora::from_bytes(&sdxl).unwrap();
        assert!(sdxl.is_sdxl());
        let names: Vec<&String> = sdxl.updates.keys().collect();
        assert_eq!(names, ["lora_te2_text_model_x", "lora_te2_text_model_z", "lora_te_text_model_y"]);
        let pair = |name: &str| {
            [(format!("{name}.lora_down.weight"), [1u64, 1]), (format!("{name}.lora_up.weight"), [1, 1])]
        };
        let names: Vec<(String, [u64; 2])> = [
            "lora_unet_input_blocks_0_0",
            "lora_unet_input_blocks_1_0_in_layers_2",
            "lora_unet_input_blocks_3_0_op",
            "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q",
            "lora_unet_input_blocks_5_0_skip_connection",
            "lora_unet_middle_block_1_proj_in",
            "lora_unet_middle_block_2_emb_layers_1",
            "lora_unet_output_blocks_2_2_conv",
            "lora_unet_output_blocks_7_0_out_layers_3",
            "lora_unet_label_emb_0_2",
        ]
        .iter()
        .flat_map(|n| pair(n))
        .collect();
        let tensors: Vec<(&str, &[u64], &[f32])> =
            names.iter().map(|(n, shape)| (n.as_str(), &shape[..], &[1.0f32][..])).collect();
        let ldm = Lora::from_bytes(&safetensors_bytes(&tensors)).unwrap();
        assert!(ldm.has_ldm_unet_names());
        // SDXL's layout: no attention in the first down and last up block.
        let sdxl = UnetLayout {
            layers_per_block: 2,
            down_attention: vec![false, true, true],
            up_attention: vec![true, true, false],
        };
        let renamed = ldm.with_diffusers_unet_names(&sdxl).unwrap();
        let names: Vec<&str> = renamed.updates.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "lora_unet_add_embedding_linear_2",
                "lora_unet_conv_in",
                "lora_unet_down_blocks_0_downsamplers_0_conv",
                "lora_unet_down_blocks_0_resnets_0_conv1",
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn1_to_q",
                "lora_unet_down_blocks_1_resnets_1_conv_shortcut",
                "lora_unet_mid_block_attentions_0_proj_in",
                "lora_unet_mid_block_resnets_1_time_emb_proj",
                "lora_unet_up_blocks_0_upsamplers_0_conv",
                "lora_unet_up_blocks_2_resnets_1_conv2",
            ]
        );
        assert!(!renamed.has_ldm_unet_names());
        // A block index past the model's is named, not dropped.
        let small = UnetLayout { layers_per_block: 1, down_attention: vec![true], up_attention: vec![true] };
        let err = ldm.with_diffusers_unet_names(&small).unwrap_err().to_string();
        assert!(err.contains("LDM naming"), "{err}");
        let half = safetensors_bytes(&[("lora_unet_x.lora_down.weight", &[1, 1], &[1.0])]);
        assert!(matches!(Lora::from_bytes(&half), Err(LoraError::Bad { .. })));
        let rank = safetensors_bytes(&[
            ("lora_unet_x.lora_down.weight", &[2, 1], &[1.0, 1.0]),
            ("lora_unet_x.lora_up.weight", &[1, 3], &[1.0, 1.0, 1.0]),
        ]);
        assert!(matches!(Lora::from_bytes(&rank), Err(LoraError::Bad { .. })));
        let loha = safetensors_bytes(&[("lora_unet_x.hada_w1_a", &[1, 1], &[1.0])]);
        assert_eq!(Lora::from_bytes(&loha), Err(LoraError::Lycoris("LoHa")));
        let plain = safetensors_bytes(&[("conv.weight", &[1], &[1.0])]);
        assert_eq!(Lora::from_bytes(&plain), Err(LoraError::NotALora));
    }
}
