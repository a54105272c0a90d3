//! transformers' `DepthAnythingConfig` and the `Dinov2Config` of its backbone, read from a
//! config.json with transformers' defaults for what it leaves out, and checked so that no value
//! can misread the weights or size a buffer from a damaged file.

use serde::Deserialize;

use crate::config::ConfigError;

const KIND: &str = "DepthAnythingConfig";

/// transformers' `Dinov2Config` (the `backbone_config` of a Depth Anything config.json), with
/// its defaults for what a saved config leaves out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dinov2Config {
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "twelve")]
    pub num_hidden_layers: usize,
    #[serde(default = "twelve")]
    pub num_attention_heads: usize,
    #[serde(default = "four")]
    pub mlp_ratio: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "s224")]
    pub image_size: usize,
    #[serde(default = "fourteen")]
    pub patch_size: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    #[serde(default = "yes")]
    pub apply_layernorm: bool,
    #[serde(default)]
    pub out_indices: Option<Vec<usize>>,
    #[serde(default)]
    pub out_features: Option<Vec<String>>,
}

/// transformers' `DepthAnythingConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DepthAnythingConfig {
    pub backbone_config: Dinov2Config,
    #[serde(default = "fourteen")]
    pub patch_size: usize,
    #[serde(default = "d384")]
    pub reassemble_hidden_size: usize,
    #[serde(default = "factors")]
    pub reassemble_factors: Vec<f64>,
    #[serde(default = "neck")]
    pub neck_hidden_sizes: Vec<usize>,
    #[serde(default = "d64")]
    pub fusion_hidden_size: usize,
    #[serde(default = "minus_one")]
    pub head_in_index: i64,
    #[serde(default = "d32")]
    pub head_hidden_size: usize,
    #[serde(default = "relative")]
    pub depth_estimation_type: String,
    #[serde(default)]
    pub max_depth: Option<f64>,
    /// The backbone layers read (0 is the embeddings), from `out_indices` or `out_features`.
    #[serde(skip)]
    pub layers_read: Vec<usize>,
}

fn d768() -> usize {
    768
}
fn d384() -> usize {
    384
}
fn d64() -> usize {
    64
}
fn d32() -> usize {
    32
}
fn twelve() -> usize {
    12
}
fn four() -> f64 {
    4.0
}
fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-6
}
fn s224() -> usize {
    224
}
fn fourteen() -> usize {
    14
}
fn three() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn factors() -> Vec<f64> {
    vec![4.0, 2.0, 1.0, 0.5]
}
fn neck() -> Vec<usize> {
    vec![48, 96, 192, 384]
}
fn minus_one() -> i64 {
    -1
}
fn relative() -> String {
    "relative".into()
}

/// How a reassemble layer resizes: up by a transposed convolution, down by a strided one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Resize {
    Up(usize),
    Same,
    Down(usize),
}

pub(super) fn resize_of(factor: f64) -> Option<Resize> {
    let whole = |v: f64| (v.fract() == 0.0 && (1.0..=64.0).contains(&v)).then_some(v as usize);
    match factor {
        1.0 => Some(Resize::Same),
        f if f > 1.0 => whole(f).map(Resize::Up),
        f if f > 0.0 => whole(1.0 / f).map(Resize::Down),
        _ => None,
    }
}

impl DepthAnythingConfig {
    pub fn from_json(text: &str) -> Result<DepthAnythingConfig, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: KIND, detail };
        let mut cfg: DepthAnythingConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let b = &cfg.backbone_config;
        crate::config::check_sizes(
            KIND,
            &[
                ("hidden_size", b.hidden_size),
                ("num_hidden_layers", b.num_hidden_layers),
                ("num_attention_heads", b.num_attention_heads),
                ("image_size", b.image_size),
                ("patch_size", b.patch_size),
                ("num_channels", b.num_channels),
                ("patch_size", cfg.patch_size),
                ("reassemble_hidden_size", cfg.reassemble_hidden_size),
                ("fusion_hidden_size", cfg.fusion_hidden_size),
                ("head_hidden_size", cfg.head_hidden_size),
            ],
        )?;
        crate::config::check_finite(
            KIND,
            &[("layer_norm_eps", b.layer_norm_eps), ("mlp_ratio", b.mlp_ratio)],
        )?;
        if b.num_hidden_layers > 64
            || !b.hidden_size.is_multiple_of(b.num_attention_heads)
            || b.patch_size > 64
        {
            return Err(invalid(format!(
                "{} layers of {} features in {} heads, {}-pixel patches",
                b.num_hidden_layers, b.hidden_size, b.num_attention_heads, b.patch_size
            )));
        }
        if b.hidden_act != "gelu" {
            return Err(invalid(format!("unsupported activation {:?}", b.hidden_act)));
        }
        if b.use_swiglu_ffn {
            return Err(ConfigError::Unsupported(
                "DINOv2 backbones with SwiGLU feed-forward layers (the giant size) are not supported".into(),
            ));
        }
        if !(b.mlp_ratio > 0.0 && b.mlp_ratio <= 16.0) {
            return Err(invalid(format!("mlp_ratio {}", b.mlp_ratio)));
        }
        crate::config::check_sizes(KIND, &[("intermediate size", cfg.intermediate_size())])?;
        // `out_indices` name stages: 0 the embeddings ("stem"), k the output of layer k.
        let layers_read = match (&b.out_indices, &b.out_features) {
            (Some(indices), _) => indices.clone(),
            (None, Some(features)) => features
                .iter()
                .map(|f| match f.as_str() {
                    "stem" => Some(0),
                    f => f.strip_prefix("stage").and_then(|k| k.parse().ok()),
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| invalid(format!("out_features {features:?}")))?,
            (None, None) => vec![b.num_hidden_layers],
        };
        let n = cfg.neck_hidden_sizes.len();
        if n == 0
            || n > 8
            || layers_read.len() != n
            || cfg.reassemble_factors.len() != n
            || layers_read.iter().any(|&i| i > b.num_hidden_layers)
        {
            return Err(invalid(format!(
                "{} backbone layers read ({layers_read:?} of {}), {} neck sizes, {} reassemble factors",
                layers_read.len(),
                b.num_hidden_layers,
                n,
                cfg.reassemble_factors.len()
            )));
        }
        for (&f, &c) in cfg.reassemble_factors.iter().zip(&cfg.neck_hidden_sizes) {
            crate::config::check_sizes(KIND, &[("neck_hidden_sizes", c)])?;
            if resize_of(f).is_none() {
                return Err(invalid(format!("reassemble factor {f}")));
            }
        }
        if cfg.reassemble_hidden_size != b.hidden_size {
            return Err(invalid(format!(
                "reassemble_hidden_size {} for a {}-wide backbone",
                cfg.reassemble_hidden_size, b.hidden_size
            )));
        }
        if cfg.fusion_hidden_size < 2 || cfg.head_in_index >= n as i64 || cfg.head_in_index < -(n as i64) {
            return Err(invalid(format!(
                "fusion_hidden_size {}, head_in_index {} of {n}",
                cfg.fusion_hidden_size, cfg.head_in_index
            )));
        }
        match (cfg.depth_estimation_type.as_str(), cfg.max_depth) {
            ("relative" | "metric", None) => {}
            ("relative" | "metric", Some(m)) if m.is_finite() && m > 0.0 => {}
            (kind, m) => return Err(invalid(format!("depth_estimation_type {kind:?} with max_depth {m:?}"))),
        }
        cfg.layers_read = layers_read;
        Ok(cfg)
    }

    pub(super) fn intermediate_size(&self) -> usize {
        (self.backbone_config.hidden_size as f64 * self.backbone_config.mlp_ratio) as usize
    }

    pub(super) fn metric(&self) -> bool {
        self.depth_estimation_type == "metric"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_that_would_misread_the_weights_are_refused() {
        let base = r#"{"backbone_config": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
            "out_indices": [1, 2, 3, 4]}, "reassemble_hidden_size": 32, "neck_hidden_sizes": [8, 16, 24, 32]}"#;
        let cfg = DepthAnythingConfig::from_json(base).unwrap();
        assert_eq!(cfg.layers_read, [1, 2, 3, 4]);
        assert_eq!((cfg.patch_size, cfg.fusion_hidden_size, cfg.max_depth), (14, 64, None));
        let features = base.replace(
            r#""out_indices": [1, 2, 3, 4]"#,
            r#""out_features": ["stage1", "stage2", "stage3", "stage4"]"#,
        );
        assert_eq!(DepthAnythingConfig::from_json(&features).unwrap().layers_read, [1, 2, 3, 4]);
        for (from, to) in [
            (r#""out_indices": [1, 2, 3, 4]"#, r#""out_indices": [1, 2, 3, 9]"#),
            (r#""out_indices": [1, 2, 3, 4]"#, r#""out_indices": [1, 2, 3]"#),
            (r#""num_attention_heads": 2"#, r#""num_attention_heads": 3"#),
            (r#""reassemble_hidden_size": 32"#, r#""reassemble_hidden_size": 48"#),
            (r#""neck_hidden_sizes""#, r#""reassemble_factors": [4, 3.5, 1, 0.5], "neck_hidden_sizes""#),
            (r#""neck_hidden_sizes""#, r#""head_in_index": 4, "neck_hidden_sizes""#),
            (r#""neck_hidden_sizes""#, r#""depth_estimation_type": "inverse", "neck_hidden_sizes""#),
            (r#""num_hidden_layers": 4"#, r#""num_hidden_layers": 4, "use_swiglu_ffn": true"#),
            (r#""num_hidden_layers": 4"#, r#""num_hidden_layers": 4, "hidden_act": "relu""#),
        ] {
            let text = base.replace(from, to);
            assert_ne!(text, base, "{to}");
            assert!(DepthAnythingConfig::from_json(&text).is_err(), "{to} is refused");
        }
    }
}
