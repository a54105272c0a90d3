//! CLIP's vision tower (transformers' `CLIPVisionModel` inside a `CLIPModel`) and its projection:
//! a ViT — non-overlapping patches embedded by a strided convolution, a class token, learned
//! positions, a layer norm, pre-norm transformer layers attending everywhere, the class token's
//! output layer-normed and projected (`visual_projection`). What CLIP scores (image–prompt
//! agreement) and the LAION aesthetic predictor read.

use darkroom_gpu::ops::{self, Unary};
use darkroom_gpu::{Gpu, Tensor, Weight};
use serde::Deserialize;

use crate::clip::{EncoderLayer, LayerNorm};
use crate::config::ConfigError;
use crate::loader::{ConvLayer, ModelError, Vb};

/// transformers' `CLIPVisionConfig` (`vision_config` of a `CLIPModel`'s config.json).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "three")]
    pub num_channels: usize,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}
fn three() -> usize {
    3
}

impl ClipVisionConfig {
    /// From a `CLIPModel` config.json (its `vision_config`) or a `CLIPVisionModel` one, with the
    /// model's `projection_dim`.
    pub fn from_clip_json(text: &str) -> Result<(ClipVisionConfig, Option<usize>), ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: "CLIPVisionConfig", detail };
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let vision = raw.get("vision_config").cloned().unwrap_or_else(|| raw.clone());
        let cfg: ClipVisionConfig = serde_json::from_value(vision).map_err(|e| invalid(e.to_string()))?;
        let kind = "CLIPVisionConfig";
        crate::config::check_sizes(
            kind,
            &[
                ("hidden_size", cfg.hidden_size),
                ("intermediate_size", cfg.intermediate_size),
                ("num_hidden_layers", cfg.num_hidden_layers),
                ("num_attention_heads", cfg.num_attention_heads),
                ("image_size", cfg.image_size),
                ("patch_size", cfg.patch_size),
                ("num_channels", cfg.num_channels),
            ],
        )?;
        crate::config::check_finite(kind, &[("layer_norm_eps", cfg.layer_norm_eps)])?;
        if cfg.num_hidden_layers > 256 || cfg.image_size > 4096 {
            return Err(invalid(format!(
                "{} layers, {}-pixel images",
                cfg.num_hidden_layers, cfg.image_size
            )));
        }
        if cfg.num_attention_heads == 0
            || cfg.hidden_size % cfg.num_attention_heads != 0
            || cfg.patch_size == 0
            || cfg.image_size % cfg.patch_size != 0
        {
            return Err(invalid(format!(
                "{} features in {} heads, {}-pixel images in {}-pixel patches",
                cfg.hidden_size, cfg.num_attention_heads, cfg.image_size, cfg.patch_size
            )));
        }
        if cfg.hidden_act != "quick_gelu" && cfg.hidden_act != "gelu" {
            return Err(invalid(format!("unsupported activation {:?}", cfg.hidden_act)));
        }
        let projection =
            raw.get("projection_dim").and_then(|v| v.as_u64()).map(|v| v.min(usize::MAX as u64) as usize);
        if let Some(p) = projection {
            crate::config::check_sizes(kind, &[("projection_dim", p)])?;
        }
        Ok((cfg, projection))
    }

    fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

pub struct ClipVisionModel {
    config: ClipVisionConfig,
    patch_embedding: ConvLayer,
    /// [1, 1, D]
    class_embedding: Tensor,
    /// [1 + patches, D]
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    /// `visual_projection` (no bias), where the checkpoint has one.
    projection: Option<Weight>,
}

impl ClipVisionModel {
    /// From a `CLIPModel` checkpoint (`vision_model.*`, `visual_projection.weight`) or a
    /// `CLIPVisionModel(WithProjection)` one.
    pub fn load(
        vb: &Vb,
        config: &ClipVisionConfig,
        projection_dim: Option<usize>,
    ) -> Result<Self, ModelError> {
        let root = vb.clone();
        let vb = if vb.contains("vision_model.embeddings.class_embedding") {
            vb.pp("vision_model")
        } else {
            vb.clone()
        };
        let (d, p) = (config.hidden_size, config.patch_size);
        let emb = vb.pp("embeddings");
        let mut patch_embedding =
            ConvLayer::load(&emb.pp("patch_embedding"), d, config.num_channels, p, p, false)?;
        patch_embedding.geometry.padding = darkroom_gpu::ops::Padding::same(0);
        let class = emb.values("class_embedding", &[d])?;
        let positions = config.patches() + 1;
        let table = emb.pp("position_embedding").values("weight", &[positions, d])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                EncoderLayer::load_sized(
                    &vb.pp("encoder").pp("layers").pp(i),
                    d,
                    config.intermediate_size,
                    config.layer_norm_eps,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(ClipVisionModel {
            config: config.clone(),
            patch_embedding,
            class_embedding: Tensor::from_f32(vb.gpu, &[1, 1, d], &class, vb.dtype)?,
            position_embedding: Tensor::from_f32(vb.gpu, &[positions, d], &table, vb.dtype)?,
            pre_layrnorm: LayerNorm::load(&vb.pp("pre_layrnorm"), d, config.layer_norm_eps)?,
            layers,
            post_layernorm: LayerNorm::load(&vb.pp("post_layernorm"), d, config.layer_norm_eps)?,
            projection: match projection_dim {
                Some(out) if root.contains("visual_projection.weight") => {
                    Some(root.pp("visual_projection").linear(out, d, false)?)
                }
                _ => None,
            },
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    /// `pixels` [B, 3, S, S] (CLIP-normalised, S the config's image size) → the projected image
    /// embeddings [B, P] (`image_embeds`), or the pooled output [B, D] without a projection.
    pub async fn forward(&self, gpu: &Gpu, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let s = self.config.image_size;
        let [b, c, h, w] = *pixels.shape() else {
            return Err(ModelError::Input(format!(
                "CLIP's vision tower takes [B, 3, {s}, {s}], got {:?}",
                pixels.shape()
            )));
        };
        if c != self.config.num_channels || h != s || w != s {
            return Err(ModelError::Input(format!(
                "CLIP's vision tower takes [B, 3, {s}, {s}], got {:?}",
                pixels.shape()
            )));
        }
        let d = self.config.hidden_size;
        let n = self.config.patches();
        let patches = self.patch_embedding.forward(gpu, pixels, None, false)?; // [B, D, g, g]
        let tokens = ops::transpose(gpu, &patches.reshape(&[b, d, n])?)?; // [B, N, D]
        let mut class = self.class_embedding.clone();
        for _ in 1..b {
            class = ops::concat(gpu, &class, &self.class_embedding, 0)?;
        }
        let x = ops::concat(gpu, &class, &tokens, 1)?; // [B, 1 + N, D]
        let x = ops::add(gpu, &x, &self.position_embedding)?;
        let mut x = self.pre_layrnorm.forward(gpu, &x)?;
        let act = if self.config.hidden_act == "quick_gelu" { Unary::QuickGelu } else { Unary::Gelu };
        for layer in &self.layers {
            x = layer.forward_masked(gpu, &x, self.config.num_attention_heads, act, false)?;
        }
        // The class token of each image, gathered on the CPU (a few hundred KB, once per image).
        let values = x.read_f32(gpu).await?;
        let class_rows: Vec<f32> =
            (0..b).flat_map(|i| values[i * (1 + n) * d..i * (1 + n) * d + d].to_vec()).collect();
        let pooled = Tensor::from_f32(gpu, &[b, d], &class_rows, x.dtype())?;
        let pooled = self.post_layernorm.forward(gpu, &pooled)?;
        match &self.projection {
            Some(p) => Ok(ops::linear(gpu, &pooled, p)?),
            None => Ok(pooled),
        }
    }
}

/// The CLIP score of an image and a text embedding, as torchmetrics defines it:
/// 100 · max(cos(image, text), 0).
pub fn clip_score(image: &[f32], text: &[f32]) -> f32 {
    let dot: f64 = image.iter().zip(text).map(|(&a, &b)| a as f64 * b as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let cos = dot / (norm(image) * norm(text)).max(1e-12);
    (100.0 * cos).max(0.0) as f32
}
