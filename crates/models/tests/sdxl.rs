//! SDXL's modules against diffusers and transformers on the tiny seeded SDXL of
//! tests/fixtures/tiny-sdxl (tests/reference/sdxl_reference.py): the UNet with per-block
//! transformer depth and text_time added conditioning, and the second text encoder
//! (CLIPTextModelWithProjection) — its penultimate hidden states and pooled projection.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, relative_rms_error, DType, Gpu, Tensor};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::unet::{AddedConditions, UNet2DConditionModel, UNetInput};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference() -> SafetensorsFile {
    SafetensorsFile::from_bytes(std::fs::read(fixtures().join("sdxl/modules.safetensors")).unwrap()).unwrap()
}

fn tensor(file: &SafetensorsFile, name: &str) -> (Vec<f32>, Vec<usize>) {
    let info = file.header.get(name).unwrap_or_else(|| panic!("no {name}"));
    (file.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect())
}

fn unet(gpu: &Gpu, dtype: DType, policy: QuantPolicy) -> UNet2DConditionModel {
    let dir = fixtures().join("tiny-sdxl/unet");
    let config =
        UNet2DConditionConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((0..3).map(|b| config.transformer_depth(b)).collect::<Vec<_>>(), [1, 2, 3]);
    let store =
        WeightStore::from_bytes(std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap())
            .unwrap();
    let unet = UNet2DConditionModel::load(&store.root(gpu, dtype, policy), &config).unwrap();
    store.require_all_used().unwrap();
    unet
}

fn predict(
    gpu: &Gpu,
    unet: &UNet2DConditionModel,
    dtype: DType,
    with_added: bool,
) -> Result<Vec<f32>, String> {
    let r = reference();
    let upload = |name: &str| {
        let (values, shape) = tensor(&r, name);
        Tensor::from_f32(gpu, &shape, &values, dtype).unwrap()
    };
    let (sample, context, text_embeds) =
        (upload("unet/sample"), upload("unet/context"), upload("unet/text_embeds"));
    let timesteps = tensor(&r, "unet/timesteps").0;
    let time_ids = tensor(&r, "unet/time_ids").0;
    let added = AddedConditions { text_embeds: &text_embeds, time_ids: &time_ids };
    let input = UNetInput {
        sample: &sample,
        timesteps: &timesteps,
        context: &context,
        control: None,
        added: with_added.then_some(added),
    };
    let out = unet.forward_input(gpu, &input).map_err(|e| e.to_string())?;
    assert_eq!(out.shape(), sample.shape());
    Ok(pollster::block_on(out.read_f32(gpu)).unwrap())
}

#[test]
fn sdxl_unet_matches_diffusers_with_added_conditioning() {
    let gpu = gpu();
    let want = tensor(&reference(), "unet/noise_pred").0;
    let model = unet(&gpu, DType::F32, QuantPolicy::F32);
    let got = predict(&gpu, &model, DType::F32, true).unwrap();
    let diff = max_abs_diff(&got, &want);
    println!("f32: max abs diff {diff:.2e}");
    assert!(diff <= 1e-3, "differs from diffusers by {diff}");
    // Without the added conditioning the UNet says what it lacks instead of guessing.
    let err = predict(&gpu, &model, DType::F32, false).unwrap_err();
    assert!(err.contains("pooled text embeddings and time ids"), "{err}");

    if gpu.capabilities().shader_f16 {
        let model = unet(&gpu, DType::F16, QuantPolicy::F16);
        let err = relative_rms_error(&predict(&gpu, &model, DType::F16, true).unwrap(), &want);
        println!("f16: relative RMS error {err:.2e}");
        assert!(err <= 0.01, "f16: {err}");
    }
}

#[test]
fn second_text_encoder_gives_transformers_penultimate_states_and_pooled_projection() {
    let gpu = gpu();
    let dir = fixtures().join("tiny-sdxl/text_encoder_2");
    let config =
        ClipTextConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((config.eos_token_id, config.projection_dim), (2, Some(24)));
    let store = WeightStore::from_bytes(std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
    let clip = ClipTextModel::load(&store.root(&gpu, DType::F32, QuantPolicy::F32), &config).unwrap();
    assert!(store.unused_keys().iter().all(|k| k.ends_with("position_ids")), "{:?}", store.unused_keys());
    let r = reference();
    for i in 0..3 {
        let ids: Vec<u32> = tensor(&r, &format!("te2/{i}/ids")).0.iter().map(|&v| v as u32).collect();
        let out = pollster::block_on(clip.forward_sdxl(&gpu, &ids, 77, true, &[])).unwrap();
        let hidden = pollster::block_on(out.penultimate.read_f32(&gpu)).unwrap();
        let pooled = pollster::block_on(out.pooled.unwrap().read_f32(&gpu)).unwrap();
        let dh = max_abs_diff(&hidden, &tensor(&r, &format!("te2/{i}/penultimate")).0);
        let dp = max_abs_diff(&pooled, &tensor(&r, &format!("te2/{i}/pooled")).0);
        println!("prompt {i}: penultimate {dh:.2e}, pooled {dp:.2e}");
        assert!(dh <= 1e-3 && dp <= 1e-3, "prompt {i}: penultimate {dh}, pooled {dp}");
    }
    // "!" pads with id 0, so the end token is the largest id; the legacy rule finds it.
    let ids: Vec<u32> = tensor(&r, "te2/1/ids").0.iter().map(|&v| v as u32).collect();
    assert_eq!(clip.pooled_positions(&ids, 77), [1]);
}
