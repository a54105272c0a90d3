//! Serde mirrors of diffusers' `config.json` files. Missing fields take diffusers' defaults, so a
//! config saved by any diffusers version loads; unknown fields are ignored.

use serde::Deserialize;

mod clip;
mod controlnet;
pub use clip::ClipTextConfig;
pub use controlnet::ControlNetConfig;

/// `attention_head_dim` / `num_attention_heads` may be one number for every block or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    pub fn get(&self, block: usize) -> Option<usize> {
        match self {
            PerBlock::One(v) => Some(*v),
            PerBlock::Each(list) => list.get(block).copied(),
        }
    }
}

/// diffusers' `UNet2DConditionModel` config, the fields SD 1.x / 2.x use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    /// Absent in a ControlNet's config (it has no up blocks).
    #[serde(default)]
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    #[serde(default)]
    pub upcast_attention: Option<bool>,
    /// Transformer blocks per attention layer, per down block (SDXL: 1, 2, 10); up blocks take
    /// the reversed list and the mid block the last entry, as diffusers.
    #[serde(default)]
    pub transformer_layers_per_block: Option<PerBlock>,
    /// "text_time" (SDXL): the pooled text embedding and the micro-conditioning time ids are
    /// embedded and added to the time embedding.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config.json is not a valid {kind} config: {detail}")]
    Invalid { kind: &'static str, detail: String },
    /// A real model this engine does not run yet, named.
    #[error("{0}")]
    Unsupported(String),
}

/// The largest width, count or size a config may give: real SD, SDXL and CLIP configs stay
/// under 50,000 (CLIP's vocabulary), channels under 2,600. A larger value can only come from a
/// damaged or hostile file and would size buffers from it.
pub const MAX_CONFIG_VALUE: usize = 65536;

/// Each named value lies in 1..=[`MAX_CONFIG_VALUE`].
pub(crate) fn check_sizes(kind: &'static str, values: &[(&str, usize)]) -> Result<(), ConfigError> {
    for (name, value) in values {
        if *value == 0 || *value > MAX_CONFIG_VALUE {
            return Err(ConfigError::Invalid {
                kind,
                detail: format!("{name} is {value}; it must be between 1 and {MAX_CONFIG_VALUE}"),
            });
        }
    }
    Ok(())
}

/// Each named value is finite and not negative (epsilons, scaling factors).
pub(crate) fn check_finite(kind: &'static str, values: &[(&str, f64)]) -> Result<(), ConfigError> {
    for (name, value) in values {
        if !value.is_finite() || *value < 0.0 {
            return Err(ConfigError::Invalid { kind, detail: format!("{name} is {value}") });
        }
    }
    Ok(())
}

/// Architecture keys of diffusers' UNet config that change the network beyond SD 1.x/2.x: a config
/// that sets one is refused by name here, not after loading with tensors left unused.
fn refuse_unknown_architecture(raw: &serde_json::Value) -> Result<(), ConfigError> {
    let unsupported = |what: String| Err(ConfigError::Unsupported(what));
    let set = |key: &str| raw.get(key).filter(|v| !v.is_null());
    if let Some(kind) = set("addition_embed_type") {
        if kind != "text_time" {
            return unsupported(format!("a UNet with addition_embed_type {kind}: not supported yet"));
        }
    }
    for key in [
        "class_embed_type",
        "encoder_hid_dim_type",
        "time_cond_proj_dim",
        "num_class_embeds",
        "reverse_transformer_layers_per_block",
    ] {
        if let Some(value) = set(key) {
            return unsupported(format!("a UNet with {key} {value}: not supported yet"));
        }
    }
    if let Some(kind) = set("mid_block_type").and_then(|v| v.as_str()) {
        if kind != "UNetMidBlock2DCrossAttn" {
            return unsupported(format!("a UNet with mid block {kind}: not supported yet"));
        }
    }
    Ok(())
}

impl UNet2DConditionConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: "UNet2DConditionModel", detail };
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        refuse_unknown_architecture(&raw)?;
        let cfg: Self = serde_json::from_value(raw).map_err(|e| invalid(e.to_string()))?;
        cfg.validate("UNet2DConditionModel", true)?;
        Ok(cfg)
    }

    /// `up_blocks`: whether the model has up blocks (a UNet) or not (a ControlNet).
    fn validate(&self, kind: &'static str, up_blocks: bool) -> Result<(), ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind, detail };
        check_sizes(
            kind,
            &[
                ("sample_size", self.sample_size),
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels),
                ("layers_per_block", self.layers_per_block),
                ("norm_num_groups", self.norm_num_groups),
                ("cross_attention_dim", self.cross_attention_dim),
                ("the number of blocks", self.block_out_channels.len().max(1)),
            ],
        )?;
        check_finite(kind, &[("norm_eps", self.norm_eps)])?;
        for (b, &c) in self.block_out_channels.iter().enumerate() {
            check_sizes(kind, &[(&format!("block_out_channels[{b}]"), c)])?;
        }
        if self.block_out_channels.len() > 8 {
            return Err(invalid(format!("{} blocks; real UNets have 3 or 4", self.block_out_channels.len())));
        }
        for (key, value) in [
            ("addition_time_embed_dim", self.addition_time_embed_dim),
            ("projection_class_embeddings_input_dim", self.projection_class_embeddings_input_dim),
        ] {
            if let Some(v) = value {
                check_sizes(kind, &[(key, v)])?;
            }
        }
        let blocks = self.block_out_channels.len();
        let ups = if up_blocks { self.up_block_types.len() } else { blocks };
        if blocks == 0 || self.down_block_types.len() != blocks || ups != blocks {
            return Err(invalid(format!(
                "{} block_out_channels, {} down blocks, {} up blocks: they must match",
                blocks,
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        if let Some(PerBlock::Each(depths)) = &self.transformer_layers_per_block {
            if depths.len() != blocks {
                return Err(invalid(format!(
                    "transformer_layers_per_block lists {} blocks, the UNet has {blocks}",
                    depths.len()
                )));
            }
        }
        // 0 is allowed: diffusers' "-small" SDXL ControlNets keep each attention's norm and
        // projections without transformer blocks.
        if (0..blocks).any(|b| self.transformer_depth(b) > 64) {
            return Err(invalid("transformer_layers_per_block must be between 0 and 64".into()));
        }
        if let Some(kind) = &self.addition_embed_type {
            match (kind.as_str(), self.addition_time_embed_dim, self.projection_class_embeddings_input_dim) {
                ("text_time", Some(t), Some(p)) if t > 0 && t % 2 == 0 && p > 6 * t => {}
                _ => {
                    return Err(invalid(format!(
                        "addition_embed_type {kind:?} needs an even addition_time_embed_dim and a \
                         projection_class_embeddings_input_dim wider than 6 of them, got {:?} and {:?}",
                        self.addition_time_embed_dim, self.projection_class_embeddings_input_dim
                    )))
                }
            }
        }
        for block in 0..blocks {
            let (heads, width) = (self.heads(block), self.block_out_channels[block]);
            if heads == 0 || width % heads != 0 || width % self.norm_num_groups != 0 {
                return Err(invalid(format!(
                    "block {block}: {width} channels split into {heads} heads and {} groups",
                    self.norm_num_groups
                )));
            }
        }
        Ok(())
    }

    /// Attention heads in down block `block` (up blocks use the reversed order).
    ///
    /// diffusers' SD 1.x/2.x configs store the head *count* in `attention_head_dim` (a naming
    /// slip kept for compatibility, see the comment in `UNet2DConditionModel.__init__`):
    /// `num_attention_heads` wins when set, otherwise `attention_head_dim` is the count.
    pub fn heads(&self, block: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(block).unwrap_or(0)
    }

    /// Transformer blocks in each attention layer of down block `block` (the mid block uses the
    /// last block's, up block i the mirrored down block's).
    pub fn transformer_depth(&self, block: usize) -> usize {
        self.transformer_layers_per_block.as_ref().and_then(|d| d.get(block)).unwrap_or(1)
    }

    /// SDXL's added conditioning: the pooled text embedding's width (what the projection input
    /// holds beyond the six time ids' embeddings) and one time id's embedding width.
    pub fn text_time(&self) -> Option<(usize, usize)> {
        if self.addition_embed_type.as_deref() != Some("text_time") {
            return None;
        }
        let t = self.addition_time_embed_dim?;
        Some((self.projection_class_embeddings_input_dim? - 6 * t, t))
    }

    pub fn head_dim(&self, block: usize) -> usize {
        self.block_out_channels[block] / self.heads(block).max(1)
    }

    fn sd_blocks(cross_attention_dim: usize, heads: PerBlock, linear: bool, sample_size: usize) -> Self {
        let cross = "CrossAttnDownBlock2D".to_string();
        let cross_up = "CrossAttnUpBlock2D".to_string();
        UNet2DConditionConfig {
            sample_size,
            in_channels: 4,
            out_channels: 4,
            down_block_types: vec![cross.clone(), cross.clone(), cross, "DownBlock2D".into()],
            up_block_types: vec!["UpBlock2D".into(), cross_up.clone(), cross_up.clone(), cross_up],
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim,
            attention_head_dim: heads,
            num_attention_heads: None,
            use_linear_projection: linear,
            flip_sin_to_cos: true,
            freq_shift: 0,
            upcast_attention: None,
            transformer_layers_per_block: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
        }
    }

    /// SD 1.5 (`unet/config.json` of runwayml/stable-diffusion-v1-5): 8 heads everywhere, conv
    /// projections, 768-wide text embeddings, 64x64 latents.
    pub fn sd15() -> Self {
        Self::sd_blocks(768, PerBlock::One(8), false, 64)
    }

    /// SD 1.5 inpainting (runwayml/stable-diffusion-inpainting): 9 input channels.
    pub fn sd15_inpainting() -> Self {
        UNet2DConditionConfig { in_channels: 9, ..Self::sd15() }
    }

    /// SD 2.1 (`unet/config.json` of stabilityai/stable-diffusion-2-1): 64-wide heads (5, 10, 20,
    /// 20 of them), linear projections, 1024-wide text embeddings, 96x96 latents (768 px).
    pub fn sd21() -> Self {
        Self::sd_blocks(1024, PerBlock::Each(vec![5, 10, 20, 20]), true, 96)
    }

    /// SDXL 1.0 base (`unet/config.json` of stabilityai/stable-diffusion-xl-base-1.0): three
    /// blocks, no attention in the first, 1/2/10 transformer blocks deep, 64-wide heads, a
    /// 2048-wide context (both encoders), text_time added conditioning, 128x128 latents.
    /// SDXL-Turbo's UNet is the same network (sample_size 64).
    pub fn sdxl() -> Self {
        UNet2DConditionConfig {
            sample_size: 128,
            in_channels: 4,
            out_channels: 4,
            down_block_types: vec![
                "DownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
                "CrossAttnDownBlock2D".into(),
            ],
            up_block_types: vec![
                "CrossAttnUpBlock2D".into(),
                "CrossAttnUpBlock2D".into(),
                "UpBlock2D".into(),
            ],
            block_out_channels: vec![320, 640, 1280],
            layers_per_block: 2,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: 2048,
            attention_head_dim: PerBlock::Each(vec![5, 10, 20]),
            num_attention_heads: None,
            use_linear_projection: true,
            flip_sin_to_cos: true,
            freq_shift: 0,
            upcast_attention: None,
            transformer_layers_per_block: Some(PerBlock::Each(vec![1, 2, 10])),
            addition_embed_type: Some("text_time".into()),
            addition_time_embed_dim: Some(256),
            projection_class_embeddings_input_dim: Some(2816),
        }
    }

    /// SD-Turbo (`unet/config.json` of stabilityai/sd-turbo): SD 2.1's network at 64x64 latents.
    pub fn sd_turbo() -> Self {
        Self::sd_blocks(1024, PerBlock::Each(vec![5, 10, 20, 20]), true, 64)
    }
}

fn default_sample_size() -> usize {
    64
}
fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_head_dim() -> PerBlock {
    PerBlock::One(8)
}
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_beyond_sd_are_refused_by_name() {
        let with = |extra: &str| {
            UNet2DConditionConfig::from_json(&format!("{{{BLOCKS}, \"cross_attention_dim\": 768{extra}}}"))
        };
        with("").unwrap();
        with(r#", "addition_embed_type": null, "transformer_layers_per_block": 1, "mid_block_type": "UNetMidBlock2DCrossAttn""#)
            .unwrap();
        let sdxl = with(
            r#", "addition_embed_type": "text_time", "transformer_layers_per_block": [1, 2, 10, 1],
            "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816"#,
        )
        .unwrap();
        assert_eq!((0..4).map(|b| sdxl.transformer_depth(b)).collect::<Vec<_>>(), [1, 2, 10, 1]);
        assert_eq!(sdxl.text_time(), Some((1280, 256)));
        let small = with(r#", "transformer_layers_per_block": [0, 0, 0, 0]"#).unwrap();
        assert_eq!(small.transformer_depth(2), 0);
        let deep = with(r#", "transformer_layers_per_block": [1, 2, 65, 1]"#).unwrap_err();
        assert!(deep.to_string().contains("between 0 and 64"), "{deep}");
        let short = with(r#", "transformer_layers_per_block": [1, 2]"#).unwrap_err();
        assert!(short.to_string().contains("transformer_layers_per_block lists 2"), "{short}");
        let no_dims = with(r#", "addition_embed_type": "text_time""#).unwrap_err();
        assert!(no_dims.to_string().contains("addition_time_embed_dim"), "{no_dims}");
        let image = with(r#", "addition_embed_type": "image""#).unwrap_err();
        assert!(image.to_string().contains("addition_embed_type \"image\""), "{image}");
        let lcm = with(r#", "time_cond_proj_dim": 256"#).unwrap_err();
        assert!(lcm.to_string().contains("time_cond_proj_dim"), "{lcm}");
    }

    const BLOCKS: &str = r#""down_block_types": ["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
        "up_block_types": ["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280]"#;

    #[test]
    fn sd15_style_config_has_eight_heads_of_growing_width() {
        let json = format!(
            r#"{{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", {BLOCKS},
            "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64}}"#
        );
        let cfg = UNet2DConditionConfig::from_json(&json).unwrap();
        assert_eq!((0..4).map(|b| cfg.heads(b)).collect::<Vec<_>>(), [8, 8, 8, 8]);
        assert_eq!((0..4).map(|b| cfg.head_dim(b)).collect::<Vec<_>>(), [40, 80, 160, 160]);
        assert!(!cfg.use_linear_projection && cfg.flip_sin_to_cos && cfg.layers_per_block == 2);
    }

    #[test]
    fn sd2_style_config_lists_head_counts_with_64_wide_heads() {
        let json = format!(
            r#"{{{BLOCKS}, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
            "use_linear_projection": true, "upcast_attention": false, "some_future_field": 1}}"#
        );
        let cfg = UNet2DConditionConfig::from_json(&json).unwrap();
        assert_eq!((0..4).map(|b| cfg.head_dim(b)).collect::<Vec<_>>(), [64, 64, 64, 64]);
        assert!(cfg.use_linear_projection);
    }

    #[test]
    fn named_configs_validate_and_have_the_released_head_sizes() {
        for cfg in [
            UNet2DConditionConfig::sd15(),
            UNet2DConditionConfig::sd15_inpainting(),
            UNet2DConditionConfig::sd21(),
            UNet2DConditionConfig::sd_turbo(),
            UNet2DConditionConfig::sdxl(),
        ] {
            cfg.validate("UNet2DConditionModel", true).unwrap();
        }
        let sd15 = UNet2DConditionConfig::sd15();
        assert_eq!((0..4).map(|b| sd15.head_dim(b)).collect::<Vec<_>>(), [40, 80, 160, 160]);
        let turbo = UNet2DConditionConfig::sd_turbo();
        assert_eq!((0..4).map(|b| turbo.head_dim(b)).collect::<Vec<_>>(), [64, 64, 64, 64]);
        assert_eq!(UNet2DConditionConfig::sd15_inpainting().in_channels, 9);
    }

    #[test]
    fn inconsistent_configs_are_errors_that_say_why() {
        let json = r#"{"down_block_types": ["DownBlock2D"], "up_block_types": [],
            "block_out_channels": [32], "cross_attention_dim": 32}"#;
        let err = UNet2DConditionConfig::from_json(json).unwrap_err().to_string();
        assert!(err.contains("they must match"), "{err}");
        let json = format!(r#"{{{BLOCKS}, "attention_head_dim": 7, "cross_attention_dim": 768}}"#);
        let err = UNet2DConditionConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.contains("320 channels split into 7 heads"), "{err}");
        assert!(UNet2DConditionConfig::from_json("{").is_err());
    }
}
