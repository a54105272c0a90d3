//! diffusers' `ControlNetModel` config: the UNet's encoder fields and the conditioning embedding's.

use serde::Deserialize;

use super::{refuse_unknown_architecture, ConfigError, UNet2DConditionConfig, MAX_CONFIG_VALUE};

/// diffusers' `ControlNetModel` config: the UNet's encoder fields (the same keys) and the
/// conditioning embedding's.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlNetConfig {
    /// The copied encoder: in_channels, blocks, heads, time embedding (no up blocks).
    pub unet: UNet2DConditionConfig,
    /// Channels of the conditioning embedding's stages (diffusers: 16, 32, 96, 256).
    pub conditioning_embedding_out_channels: Vec<usize>,
    /// Channels of the control image (3).
    pub conditioning_channels: usize,
    /// `bgr` models take the control image's channels reversed.
    pub bgr: bool,
}

#[derive(Deserialize)]
struct ControlNetExtra {
    #[serde(default = "default_conditioning_channels")]
    conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default = "three")]
    conditioning_channels: usize,
    #[serde(default = "rgb")]
    controlnet_conditioning_channel_order: String,
    #[serde(default)]
    global_pool_conditions: bool,
}

fn default_conditioning_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}

fn three() -> usize {
    3
}

fn rgb() -> String {
    "rgb".into()
}

impl ControlNetConfig {
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid { kind: "ControlNetModel", detail };
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if let Some(class) = raw.get("_class_name").and_then(|v| v.as_str()) {
            if class != "ControlNetModel" {
                return Err(ConfigError::Unsupported(format!(
                    "a {class}, not a ControlNetModel: not supported"
                )));
            }
        }
        refuse_unknown_architecture(&raw)?;
        let unet: UNet2DConditionConfig =
            serde_json::from_value(raw.clone()).map_err(|e| invalid(e.to_string()))?;
        unet.validate("ControlNetModel", false)?;
        let extra: ControlNetExtra = serde_json::from_value(raw).map_err(|e| invalid(e.to_string()))?;
        if extra.global_pool_conditions {
            return Err(ConfigError::Unsupported(
                "a ControlNet with global_pool_conditions (shuffle-style): not supported yet".into(),
            ));
        }
        let bgr = match extra.controlnet_conditioning_channel_order.as_str() {
            "rgb" => false,
            "bgr" => true,
            other => return Err(invalid(format!("controlnet_conditioning_channel_order {other:?}"))),
        };
        let stages = &extra.conditioning_embedding_out_channels;
        if stages.is_empty()
            || stages.len() > 8
            || stages.iter().any(|&c| c == 0 || c > MAX_CONFIG_VALUE)
            || extra.conditioning_channels == 0
            || extra.conditioning_channels > 16
        {
            return Err(invalid(format!(
                "conditioning_embedding_out_channels {stages:?}, conditioning_channels {}",
                extra.conditioning_channels
            )));
        }
        Ok(ControlNetConfig {
            unet,
            conditioning_embedding_out_channels: extra.conditioning_embedding_out_channels,
            conditioning_channels: extra.conditioning_channels,
            bgr,
        })
    }

    /// How many times the conditioning embedding halves the control image: its latents must
    /// be the image's size divided by this.
    pub fn image_factor(&self) -> usize {
        1 << (self.conditioning_embedding_out_channels.len() - 1)
    }
}
