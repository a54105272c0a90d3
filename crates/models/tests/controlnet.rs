//! ControlNetModel against diffusers: a tiny seeded ControlNet made from tiny-sd's UNet
//! (tests/reference/controlnet_reference.py, non-zero "zero" convolutions), its residuals at a
//! conditioning scale on random latents and a random control image.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, DType, Gpu, Tensor};
use darkroom_models::config::ControlNetConfig;
use darkroom_models::unet::controlnet::ControlNetModel;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/controlnet")
}

fn load(gpu: &Gpu, name: &str, dtype: DType, policy: QuantPolicy) -> (ControlNetModel, WeightStore) {
    let folder = dir().join(name);
    let config =
        ControlNetConfig::from_json(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
    let store =
        WeightStore::from_bytes(std::fs::read(folder.join("diffusion_pytorch_model.safetensors")).unwrap())
            .unwrap();
    let net = ControlNetModel::load(&store.root(gpu, dtype, policy), &config).unwrap();
    store.require_all_used().unwrap();
    (net, store)
}

#[test]
fn residuals_match_diffusers() {
    let gpu = gpu();
    let file =
        SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    let values = |key: &str| {
        let info = file.header.get(&format!("model/{key}")).unwrap();
        (file.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect::<Vec<_>>())
    };
    for (dtype, policy, bound) in [(DType::F32, QuantPolicy::F32, 1e-4), (DType::F16, QuantPolicy::F16, 3e-2)]
    {
        if dtype == DType::F16 && !gpu.capabilities().shader_f16 {
            continue;
        }
        let (net, _) = load(&gpu, "tiny-controlnet-a", dtype, policy);
        let tensor = |key: &str| {
            let (v, shape) = values(key);
            Tensor::from_f32(&gpu, &shape, &v, dtype).unwrap()
        };
        let timesteps = values("timesteps").0;
        let cond = net.embed_condition(&gpu, &tensor("cond")).unwrap();
        let out = net.forward(&gpu, &tensor("sample"), &timesteps, &tensor("context"), &cond, 0.7).unwrap();
        assert_eq!(out.down.len(), 6, "conv_in, two resnets and a downsampler, two resnets");
        let mut worst = 0.0f32;
        for (i, d) in out.down.iter().enumerate() {
            let (want, shape) = values(&format!("down{i}"));
            assert_eq!(d.shape(), &shape[..]);
            worst = worst.max(max_abs_diff(&pollster::block_on(d.read_f32(&gpu)).unwrap(), &want));
        }
        let mid = pollster::block_on(out.mid.read_f32(&gpu)).unwrap();
        worst = worst.max(max_abs_diff(&mid, &values("mid").0));
        let scale = values("mid").0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{dtype:?}: max abs diff {worst:.2e} (values up to {scale:.2})");
        assert!(scale > 0.1, "the residuals are not zero");
        assert!(worst <= bound, "{dtype:?}: {worst}");
    }
}

#[test]
fn a_control_image_of_the_wrong_size_or_channels_is_refused() {
    let gpu = gpu();
    let (net, _) = load(&gpu, "tiny-controlnet-b", DType::F32, QuantPolicy::F32);
    let zeros = |shape: &[usize]| {
        Tensor::from_f32(&gpu, shape, &vec![0.0; shape.iter().product()], DType::F32).unwrap()
    };
    assert!(net.embed_condition(&gpu, &zeros(&[1, 1, 40, 48])).is_err(), "one channel");
    let cond = net.embed_condition(&gpu, &zeros(&[1, 3, 40, 48])).unwrap();
    assert_eq!(cond.shape(), &[1, 32, 5, 6]);
    let err = net.forward(&gpu, &zeros(&[1, 4, 6, 6]), &[1.0], &zeros(&[1, 77, 32]), &cond, 1.0);
    assert!(err.is_err(), "an embedding of another size than the latents");
    net.forward(&gpu, &zeros(&[1, 4, 5, 6]), &[1.0], &zeros(&[1, 77, 32]), &cond, 1.0).unwrap();
}

#[test]
fn configs_that_are_not_controlnets_are_refused() {
    let unet = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sd/unet/config.json"),
    )
    .unwrap();
    assert!(ControlNetConfig::from_json(&unet).unwrap_err().to_string().contains("UNet2DConditionModel"));
    let a = std::fs::read_to_string(dir().join("tiny-controlnet-a/config.json")).unwrap();
    let bgr = a.replace(
        "\"controlnet_conditioning_channel_order\": \"rgb\"",
        "\"controlnet_conditioning_channel_order\": \"bgr\"",
    );
    assert!(ControlNetConfig::from_json(&bgr).unwrap().bgr);
    let pooled = a.replace("\"global_pool_conditions\": false", "\"global_pool_conditions\": true");
    assert!(ControlNetConfig::from_json(&pooled).is_err());
    let c = ControlNetConfig::from_json(&a).unwrap();
    assert_eq!(
        (c.conditioning_embedding_out_channels.as_slice(), c.image_factor()),
        (&[16, 32, 96, 256][..], 8)
    );
}
