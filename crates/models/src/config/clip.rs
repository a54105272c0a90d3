//! transformers' `CLIPTextConfig`.

use serde::Deserialize;

use super::{check_finite, check_sizes, default_eps, ConfigError};

/// transformers' `CLIPTextConfig`, the fields the text encoder needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// "quick_gelu" (SD 1.x, OpenAI CLIP ViT-L/14) or "gelu" (SD 2.x, OpenCLIP ViT-H/14).
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Where the pooled output is read: the first position holding this id, or with the legacy
    /// value 2 (SDXL's text_encoder_2 config) the position of the largest id, as transformers.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    /// Width of `text_projection` (CLIPTextModelWithProjection).
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn default_eos() -> u32 {
    49407
}

impl ClipTextConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: "CLIPTextModel", detail };
        let cfg: Self = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        check_sizes(
            "CLIPTextModel",
            &[
                ("vocab_size", cfg.vocab_size),
                ("hidden_size", cfg.hidden_size),
                ("intermediate_size", cfg.intermediate_size),
                ("num_hidden_layers", cfg.num_hidden_layers),
                ("num_attention_heads", cfg.num_attention_heads),
                ("max_position_embeddings", cfg.max_position_embeddings),
                ("projection_dim", cfg.projection_dim.unwrap_or(1)),
            ],
        )?;
        check_finite("CLIPTextModel", &[("layer_norm_eps", cfg.layer_norm_eps)])?;
        if cfg.num_hidden_layers > 256 {
            return Err(invalid(format!("{} layers", cfg.num_hidden_layers)));
        }
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(invalid(format!(
                "{} features cannot split into {} heads",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.hidden_act != "quick_gelu" && cfg.hidden_act != "gelu" {
            return Err(invalid(format!(
                "unsupported activation {:?} (expected quick_gelu or gelu)",
                cfg.hidden_act
            )));
        }
        Ok(cfg)
    }

    /// The text tower of a `CLIPModel`'s config.json (`text_config`, with the model's
    /// `projection_dim` for `text_projection`).
    pub fn from_clip_json(text: &str) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: "CLIPConfig", detail };
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let text_config = raw.get("text_config").ok_or_else(|| invalid("no text_config".into()))?;
        let mut cfg = Self::from_json(&text_config.to_string())?;
        if let Some(p) = raw.get("projection_dim").and_then(|v| v.as_u64()) {
            check_sizes("CLIPConfig", &[("projection_dim", p.min(usize::MAX as u64) as usize)])?;
            cfg.projection_dim = Some(p as usize);
        }
        Ok(cfg)
    }

    /// SD 1.x's text encoder: openai/clip-vit-large-patch14 (the `text_encoder/config.json` of
    /// runwayml/stable-diffusion-v1-5).
    pub fn sd15() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
            projection_dim: None,
        }
    }

    /// SDXL's second text encoder: OpenCLIP ViT-bigG/14 with its projection
    /// (`text_encoder_2/config.json` of stabilityai/stable-diffusion-xl-base-1.0).
    pub fn sdxl_bigg() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
            projection_dim: Some(1280),
        }
    }

    /// SD 2.x and SD-Turbo's text encoder: OpenCLIP ViT-H/14 with its last layer removed (the
    /// penultimate-layer convention), 23 layers (`text_encoder/config.json` of
    /// stabilityai/stable-diffusion-2-1 and stabilityai/sd-turbo).
    pub fn sd21() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
            projection_dim: None,
        }
    }
}
