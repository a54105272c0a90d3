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

/// tests/fixtures/tiny-sd-deep's 3-level UNet in f32, and diffusers' outputs for it
/// (tests/reference/sizes_reference.py).
fn deep_unet(gpu: &Gpu) -> (UNet2DConditionModel, SafetensorsFile) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let folder = fixtures.join("tiny-sd-deep/unet");
    let config =
        UNet2DConditionConfig::from_json(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap();
    let store =
        WeightStore::from_bytes(std::fs::read(folder.join("diffusion_pytorch_model.safetensors")).unwrap())
            .unwrap();
    let unet = UNet2DConditionModel::load(&store.root(gpu, DType::F32, QuantPolicy::F32), &config).unwrap();
    let file = SafetensorsFile::from_bytes(
        std::fs::read(fixtures.join("sizes/unet_reference.safetensors")).unwrap(),
    )
    .unwrap();
    (unet, file)
}

/// A 3-level UNet (factor 4 on the latents) at latent sizes its factor does not divide: down
/// blocks round odd sizes up and the up blocks resize to their skip connections, as diffusers
/// (tests/reference/sizes_reference.py, tests/fixtures/tiny-sd-deep written by save_pretrained).
#[test]
fn latent_sizes_the_unet_factor_does_not_divide_match_diffusers() {
    let gpu = gpu();
    let (unet, file) = deep_unet(&gpu);
    let tensor = |key: &str| {
        let info = file.header.get(key).unwrap();
        (file.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect::<Vec<_>>())
    };
    let mut failures = Vec::new();
    for size in ["6x10", "7x11", "5x13", "11x7", "5x9", "8x8"] {
        let (sample, shape) = tensor(&format!("{size}/sample"));
        let (context, context_shape) = tensor(&format!("{size}/encoder_hidden_states"));
        let (timesteps, _) = tensor(&format!("{size}/timesteps"));
        let out = unet
            .forward(
                &gpu,
                &Tensor::from_f32(&gpu, &shape, &sample, DType::F32).unwrap(),
                &timesteps,
                &Tensor::from_f32(&gpu, &context_shape, &context, DType::F32).unwrap(),
            )
            .unwrap();
        assert_eq!(out.shape(), shape.as_slice());
        let got = pollster::block_on(out.read_f32(&gpu)).unwrap();
        let diff = max_abs_diff(&got, &tensor(&format!("{size}/noise_pred")).0);
        println!("latents {size}: max abs diff {diff:.2e}");
        if diff > 1e-3 {
            failures.push(format!("{size}: {diff}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// ControlNet residuals (from a seeded ControlNet made from the deep UNet) added to every skip
/// connection and to the mid block's output, against diffusers' UNet given the same residuals,
/// at latent sizes the UNet's factor does not divide.
#[test]
fn control_residuals_are_added_as_diffusers_adds_them() {
    use darkroom_models::unet::{ControlResiduals, UNetInput};
    let gpu = gpu();
    let (unet, file) = deep_unet(&gpu);
    let tensor = |key: &str| {
        let info = file.header.get(key).unwrap();
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        Tensor::from_f32(&gpu, &shape, &file.to_f32(info).unwrap(), DType::F32).unwrap()
    };
    for size in ["6x10", "7x11"] {
        let p = format!("control_{size}");
        let down: Vec<Tensor> = (0..)
            .map_while(|i| file.header.get(&format!("{p}/down{i}")).map(|_| tensor(&format!("{p}/down{i}"))))
            .collect();
        assert_eq!(down.len(), 6, "conv_in, and a resnet and a downsampler per level but the last");
        let (sample, context, mid) = (
            tensor(&format!("{p}/sample")),
            tensor(&format!("{p}/encoder_hidden_states")),
            tensor(&format!("{p}/mid")),
        );
        let timesteps = pollster::block_on(tensor(&format!("{p}/timesteps")).read_f32(&gpu)).unwrap();
        let control = Some(ControlResiduals { down: &down, mid: &mid });
        let input =
            UNetInput { sample: &sample, timesteps: &timesteps, context: &context, control, added: None };
        let got = pollster::block_on(unet.forward_input(&gpu, &input).unwrap().read_f32(&gpu)).unwrap();
        let want = pollster::block_on(tensor(&format!("{p}/noise_pred")).read_f32(&gpu)).unwrap();
        let diff = max_abs_diff(&got, &want);
        println!("control {size}: max abs diff {diff:.2e}");
        assert!(diff <= 1e-3, "control {size}: {diff}");
        // And the residuals matter: without them the output is another one.
        let plain =
            pollster::block_on(unet.forward(&gpu, &sample, &timesteps, &context).unwrap().read_f32(&gpu))
                .unwrap();
        assert!(max_abs_diff(&plain, &want) > 1e-2, "the control changes the prediction");
        let short = UNetInput { control: Some(ControlResiduals { down: &down[..5], mid: &mid }), ..input };
        assert!(unet.forward_input(&gpu, &short).is_err(), "a residual per skip connection");
    }
}
