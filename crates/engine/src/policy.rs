//! Which activations and weight formats a model runs with: f16 activations where the adapter has
//! `shader-f16` (unless asked otherwise), weights as stored, as a manifest's policy says, or as
//! the user overrides it.

use darkroom_gpu::{DType, WeightFormat};
use darkroom_models::QuantPolicy;
use darkroom_pipeline::{Precision, TextEncoders};
use darkroom_weights::Manifest;

use crate::EngineError;

/// The activation type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    F32,
    F16,
    /// f16 where the adapter has `shader-f16`, else f32.
    Auto,
}

/// How the weights are stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As the files store them, at the activations' precision (f32 with f32 activations
    /// reproduces diffusers).
    AsStored,
    /// int8 per output row everywhere.
    Q8,
    /// 4-bit groups for linear layers, int8 convolutions.
    Q4,
    /// Exactly this policy (a manifest's).
    Policy(QuantPolicy),
}

/// A format name of a manifest's `[quantization]` (`none`, `f32`, `f16`, `q8`, `q4`); `none`,
/// `f32` (full precision: as the activations store it) and unknown names keep the stored format.
fn format(name: &str, stored: WeightFormat) -> WeightFormat {
    match name {
        "f16" => WeightFormat::F16,
        "q8" => WeightFormat::Q8,
        "q4" => WeightFormat::Q4,
        _ => stored,
    }
}

/// The manifest's storage policy for weights stored as `stored`.
pub fn manifest_weights(manifest: &Manifest, stored: WeightFormat) -> QuantPolicy {
    let q = &manifest.quantization;
    QuantPolicy { linear: format(&q.linear, stored), conv: format(&q.conv, stored) }
}

/// The precision to load with on an adapter that has (or lacks) `shader-f16`.
pub fn precision(
    shader_f16: bool,
    activations: Activations,
    weights: Weights,
) -> Result<Precision, EngineError> {
    let activations = match activations {
        Activations::F16 if !shader_f16 => {
            return Err(EngineError::Gpu(
                "f16 activations need the adapter's shader-f16 feature, which this GPU lacks; use f32".into(),
            ))
        }
        Activations::F16 => DType::F16,
        Activations::F32 => DType::F32,
        Activations::Auto if shader_f16 => DType::F16,
        Activations::Auto => DType::F32,
    };
    let stored = if activations == DType::F16 { QuantPolicy::F16 } else { QuantPolicy::F32 };
    let weights = match weights {
        Weights::AsStored => stored,
        Weights::Q8 => QuantPolicy::Q8,
        Weights::Q4 => QuantPolicy { linear: WeightFormat::Q4, conv: WeightFormat::Q8 },
        Weights::Policy(policy) => policy,
    };
    Ok(Precision { activations, weights, text_encoders: TextEncoders::Gpu })
}

/// Where the text encoders wait between prompts on an adapter of `device_type` (wgpu's
/// `DeviceType` in words; "" when unknown): on the GPU where it is a discrete one (memory to
/// spare, no upload per prompt), in host memory elsewhere — integrated GPUs share the
/// system's memory, and browsers do not say what the GPU is — so the GPU holds them only
/// while a new prompt is encoded (A1111's `--medvram` does the same).
pub fn text_encoders(device_type: &str) -> TextEncoders {
    match device_type {
        "DiscreteGpu" => TextEncoders::Gpu,
        _ => TextEncoders::Host,
    }
}

/// The browser's choice: the best activations the adapter has, the manifest's weight policy.
pub fn for_manifest(shader_f16: bool, manifest: &Manifest) -> Precision {
    let activations = if shader_f16 { DType::F16 } else { DType::F32 };
    let stored = if activations == DType::F16 { WeightFormat::F16 } else { WeightFormat::F32 };
    Precision { activations, weights: manifest_weights(manifest, stored), text_encoders: text_encoders("") }
}

/// In words, for a loaded model's report: "f16 activations, q8/f16 weights".
pub fn describe(precision: &Precision) -> String {
    let w = precision.weights;
    format!("{:?} activations, {:?}/{:?} weights", precision.activations, w.linear, w.conv).to_lowercase()
}

/// How many bytes of loaded models the model cache may keep on an adapter: 6 GiB on a discrete
/// GPU (two SD 1.x/2.x models, or one with its LoRA variants, stay loaded), else 0 — one model
/// at a time — where the GPU's memory is shared with the system or unknown (integrated GPUs,
/// software adapters, browsers, which do not report the device type).
pub fn model_budget(device_type: &str) -> u64 {
    match device_type {
        "DiscreteGpu" => 6 << 30,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_adapter_and_f16_without_it_is_refused() {
        let p = precision(true, Activations::Auto, Weights::AsStored).unwrap();
        assert_eq!((p.activations, p.weights), (DType::F16, QuantPolicy::F16));
        let p = precision(false, Activations::Auto, Weights::Q4).unwrap();
        assert_eq!(p.activations, DType::F32);
        assert_eq!(p.weights, QuantPolicy { linear: WeightFormat::Q4, conv: WeightFormat::Q8 });
        assert!(matches!(precision(false, Activations::F16, Weights::AsStored), Err(EngineError::Gpu(_))));
    }

    #[test]
    fn text_encoders_leave_the_gpu_unless_it_is_a_discrete_one() {
        assert_eq!(text_encoders("DiscreteGpu"), TextEncoders::Gpu);
        for other in ["IntegratedGpu", "Cpu", "VirtualGpu", "Other", ""] {
            assert_eq!(text_encoders(other), TextEncoders::Host, "{other}");
        }
        let manifest = &darkroom_weights::manifest::builtin().unwrap()[0];
        assert_eq!(for_manifest(true, manifest).text_encoders, TextEncoders::Host);
    }

    #[test]
    fn shipped_manifests_name_their_policy() {
        for manifest in darkroom_weights::manifest::builtin().unwrap() {
            let p = for_manifest(true, &manifest);
            assert_eq!(p.activations, DType::F16);
            let q = &manifest.quantization;
            assert_eq!(p.weights.linear, format(&q.linear, WeightFormat::F16), "{}", manifest.id);
            if manifest.id == "sd-turbo" {
                assert_eq!(p.weights, QuantPolicy { linear: WeightFormat::Q8, conv: WeightFormat::F16 });
                assert_eq!(describe(&p), "f16 activations, q8/f16 weights");
            }
        }
    }
}
