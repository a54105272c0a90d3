//! ControlNetModel against diffusers: a tiny seeded ControlNet made from tiny-sd's UNet
//! (tests/reference/controlnet_reference.py, non-zero "zero" convolutions), its residuals at a
//! conditioning scale on random latents and a random control image.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, DType, Gpu, Tensor};
use darkroom_models::config::ControlNetConfig;
use darkroom_models::unet::controlnet::ControlNetModel;
use darkroom_models::unet::{AddedConditions, UNetInput};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn dir() -> PathBuf {
    fixtures().join("controlnet")
}

/// A ControlNet folder under tests/fixtures (`controlnet/tiny-controlnet-a`, …).
fn load(gpu: &Gpu, name: &str, dtype: DType, policy: QuantPolicy) -> (ControlNetModel, WeightStore) {
    let folder = if name.contains('/') { fixtures().join(name) } else { dir().join(name) };
    let config =
        ControlNetConfig::from_json(&std::fs::read_to_string(folder.join("config.json")).unwrap()).unwrap();
    let store =
        WeightStore::from_bytes(std::fs::read(folder.join("diffusion_pytorch_model.safetensors")).unwrap())
            .unwrap();
    let net = ControlNetModel::load(&store.root(gpu, dtype, policy), &config).unwrap();
    store.require_all_used().unwrap();
    (net, store)
}

fn input<'a>(
    sample: &'a Tensor,
    timesteps: &'a [f32],
    context: &'a Tensor,
    added: Option<AddedConditions<'a>>,
) -> UNetInput<'a> {
    UNetInput { sample, timesteps, context, control: None, added }
}

#[test]
fn residuals_match_diffusers() {
    residuals_match("controlnet", "model", "controlnet/tiny-controlnet-a", 6);
}

/// An SDXL ControlNet (made from tiny-sdxl's UNet: text_time added conditioning, per-block
/// transformer depth) with pooled text embeddings and time ids.
#[test]
fn sdxl_residuals_match_diffusers() {
    residuals_match("sdxl-controlnet", "model", "sdxl-controlnet/tiny-sdxl-controlnet-a", 9);
}

/// Shaped like diffusers' "-small" SDXL ControlNets: no transformer blocks (transformer_layers_per_block
/// 0), each attention only the group norm and the projections in and out.
#[test]
fn small_sdxl_residuals_match_diffusers() {
    residuals_match("sdxl-controlnet", "small", "sdxl-controlnet/tiny-sdxl-controlnet-c", 9);
}

/// The residuals of `net_name` against tests/fixtures/`fixture`/reference.safetensors's
/// `{group}/*` tensors.
fn residuals_match(fixture: &str, group: &str, net_name: &str, skips: usize) {
    let gpu = gpu();
    let file = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join(fixture).join("reference.safetensors")).unwrap(),
    )
    .unwrap();
    let values = |key: &str| {
        let info = file.header.get(&format!("{group}/{key}")).unwrap();
        (file.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect::<Vec<_>>())
    };
    for (dtype, policy, bound) in [(DType::F32, QuantPolicy::F32, 1e-4), (DType::F16, QuantPolicy::F16, 3e-2)]
    {
        if dtype == DType::F16 && !gpu.capabilities().shader_f16 {
            continue;
        }
        let (net, _) = load(&gpu, net_name, dtype, policy);
        let tensor = |key: &str| {
            let (v, shape) = values(key);
            Tensor::from_f32(&gpu, &shape, &v, dtype).unwrap()
        };
        let timesteps = values("timesteps").0;
        let cond = net.embed_condition(&gpu, &tensor("cond")).unwrap();
        let (sample, context) = (tensor("sample"), tensor("context"));
        let text_embeds =
            file.header.get(&format!("{group}/text_embeds")).is_some().then(|| tensor("text_embeds"));
        let time_ids = text_embeds.as_ref().map(|_| values("time_ids").0);
        let added = text_embeds
            .as_ref()
            .zip(time_ids.as_deref())
            .map(|(text_embeds, time_ids)| AddedConditions { text_embeds, time_ids });
        let out = net.forward(&gpu, &input(&sample, &timesteps, &context, added), &cond, 0.7).unwrap();
        // conv_in, then each block's resnets and its downsampler (none after the last).
        assert_eq!(out.down.len(), skips);
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
    let context = zeros(&[1, 77, 32]);
    let err = net.forward(&gpu, &input(&zeros(&[1, 4, 6, 6]), &[1.0], &context, None), &cond, 1.0);
    assert!(err.is_err(), "an embedding of another size than the latents");
    net.forward(&gpu, &input(&zeros(&[1, 4, 5, 6]), &[1.0], &context, None), &cond, 1.0).unwrap();
}

#[test]
fn an_sdxl_controlnet_without_its_added_conditioning_is_refused() {
    let gpu = gpu();
    let (net, _) = load(&gpu, "sdxl-controlnet/tiny-sdxl-controlnet-b", DType::F32, QuantPolicy::F32);
    let zeros = |shape: &[usize]| {
        Tensor::from_f32(&gpu, shape, &vec![0.0; shape.iter().product()], DType::F32).unwrap()
    };
    let cond = net.embed_condition(&gpu, &zeros(&[1, 3, 40, 48])).unwrap();
    let (sample, context) = (zeros(&[1, 4, 5, 6]), zeros(&[1, 77, 72]));
    let err = net.forward(&gpu, &input(&sample, &[1.0], &context, None), &cond, 1.0).err().unwrap();
    assert!(err.to_string().contains("added conditioning"), "{err}");
    let text_embeds = zeros(&[1, 24]);
    let added = AddedConditions { text_embeds: &text_embeds, time_ids: &[48.0, 64.0, 0.0, 0.0, 48.0, 64.0] };
    net.forward(&gpu, &input(&sample, &[1.0], &context, Some(added)), &cond, 1.0).unwrap();
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
