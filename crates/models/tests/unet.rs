//! UNet2DConditionModel against diffusers on tiny seeded models (tests/reference/sd_reference.py):
//! SD 1.x style, SD 2.x style (linear projections, per-block heads) and 9-channel inpainting.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, relative_rms_error, DType, Gpu, Tensor};
use darkroom_models::config::UNet2DConditionConfig;
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd").join(name)
}

fn reference(name: &str, tensor: &str) -> (Vec<f32>, Vec<usize>) {
    let file =
        SafetensorsFile::from_bytes(std::fs::read(dir(name).join("reference.safetensors")).unwrap()).unwrap();
    let info = file.header.get(tensor).unwrap();
    (file.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect())
}

fn run(gpu: &Gpu, name: &str, dtype: DType, policy: QuantPolicy) -> Vec<f32> {
    let config =
        UNet2DConditionConfig::from_json(&std::fs::read_to_string(dir(name).join("config.json")).unwrap())
            .unwrap();
    let store = WeightStore::from_bytes(std::fs::read(dir(name).join("model.safetensors")).unwrap()).unwrap();
    let unet = UNet2DConditionModel::load(&store.root(gpu, dtype, policy), &config).unwrap();
    store.require_all_used().unwrap();
    let (sample, sample_shape) = reference(name, "sample");
    let (context, context_shape) = reference(name, "encoder_hidden_states");
    let (timesteps, _) = reference(name, "timesteps");
    let out = unet
        .forward(
            gpu,
            &Tensor::from_f32(gpu, &sample_shape, &sample, dtype).unwrap(),
            &timesteps,
            &Tensor::from_f32(gpu, &context_shape, &context, dtype).unwrap(),
        )
        .unwrap();
    assert_eq!(out.shape(), &[sample_shape[0], 4, sample_shape[2], sample_shape[3]]);
    pollster::block_on(out.read_f32(gpu)).unwrap()
}

#[test]
fn noise_predictions_match_diffusers_in_f32() {
    let gpu = gpu();
    for name in ["unet_sd1", "unet_sd2", "unet_inpaint"] {
        let got = run(&gpu, name, DType::F32, QuantPolicy::F32);
        let diff = max_abs_diff(&got, &reference(name, "noise_pred").0);
        println!("{name}: max abs diff {diff:.2e}");
        assert!(diff <= 1e-3, "{name}: differs from diffusers by {diff}");
    }
}

#[test]
fn reduced_precision_paths_stay_within_stated_bounds() {
    // Relative RMS error against diffusers' f32 output: f16 activations 1%, int8 weights 3%.
    let gpu = gpu();
    for name in ["unet_sd1", "unet_sd2"] {
        let want = reference(name, "noise_pred").0;
        for (label, dtype, policy, bound) in
            [("f16", DType::F16, QuantPolicy::F16, 0.01), ("int8", DType::F32, QuantPolicy::Q8, 0.03)]
        {
            let err = relative_rms_error(&run(&gpu, name, dtype, policy), &want);
            println!("{name} {label}: relative RMS error {err:.2e}");
            assert!(err <= bound, "{name} {label}: {err} over {bound}");
        }
    }
}
