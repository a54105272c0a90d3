//! Runs the models on this browser's GPU against the reference outputs the native tests use
//! (PyTorch/diffusers dumps in tests/fixtures), proving the same code computes the same numbers
//! under the browser's WebGPU. Opened as `?check=models&fixtures=<url of tests/fixtures/>`; the
//! browser test serves the fixtures, the shipped app never fetches them.

use crate::net::{fetch_bytes, text};
use darkroom_gpu::{max_abs_diff, DType, Gpu, Tensor};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::taesd::{TaesdConfig, TaesdDecoder, TaesdEncoder};
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

/// One model's agreement with its reference.
#[derive(Debug, Clone)]
pub struct ModelCheck {
    pub name: &'static str,
    pub max_abs_err: f32,
    pub bound: f32,
}

impl ModelCheck {
    pub fn passed(&self) -> bool {
        self.max_abs_err <= self.bound
    }
}

async fn safetensors(url: &str) -> Result<SafetensorsFile, String> {
    SafetensorsFile::from_bytes(fetch_bytes(url).await?).map_err(|e| format!("{url}: {e}"))
}

fn tensor(file: &SafetensorsFile, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    let info = file.header.get(name).ok_or(format!("reference has no `{name}`"))?;
    let values = file.to_f32(info).map_err(|e| e.to_string())?;
    Ok((values, info.shape.iter().map(|&d| d as usize).collect()))
}

async fn store(url: &str) -> Result<WeightStore, String> {
    WeightStore::from_bytes(fetch_bytes(url).await?).map_err(|e| format!("{url}: {e}"))
}

/// TAEF2 round trip of a 64x64 crop with the real weights, against PyTorch.
async fn taef2(gpu: &Gpu, base: &str) -> Result<ModelCheck, String> {
    let (enc_store, dec_store) = (
        store(&format!("{base}taef2/taef2_encoder.safetensors")).await?,
        store(&format!("{base}taef2/taef2_decoder.safetensors")).await?,
    );
    let err = |e: darkroom_models::ModelError| e.to_string();
    let encoder = TaesdEncoder::load(&enc_store.root(gpu, DType::F32, QuantPolicy::F32), TaesdConfig::TAEF2)
        .map_err(err)?;
    let decoder = TaesdDecoder::load(&dec_store.root(gpu, DType::F32, QuantPolicy::F32), TaesdConfig::TAEF2)
        .map_err(err)?;
    let reference = safetensors(&format!("{base}taef2_reference.safetensors")).await?;
    let (image, shape) = tensor(&reference, "image")?;
    let (want, _) = tensor(&reference, "decoded")?;
    let input = Tensor::from_f32(gpu, &shape, &image, DType::F32).map_err(|e| e.to_string())?;
    let latents = encoder.forward(gpu, &input).map_err(err)?;
    let decoded = decoder.forward(gpu, &latents).map_err(err)?;
    let got: Vec<f32> =
        decoded.read_f32(gpu).await.map_err(|e| e.to_string())?.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    let want: Vec<f32> = want.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    Ok(ModelCheck { name: "TAEF2 round trip, 64x64", max_abs_err: max_abs_diff(&got, &want), bound: 2e-3 })
}

/// One step of the tiny SD 1.x-style UNet (batch 2), against diffusers.
async fn unet(gpu: &Gpu, base: &str) -> Result<ModelCheck, String> {
    let dir = format!("{base}sd/unet_sd1/");
    let config = UNet2DConditionConfig::from_json(&text(&format!("{dir}config.json")).await?)
        .map_err(|e| e.to_string())?;
    let weights = store(&format!("{dir}model.safetensors")).await?;
    let unet = UNet2DConditionModel::load(&weights.root(gpu, DType::F32, QuantPolicy::F32), &config)
        .map_err(|e| e.to_string())?;
    let reference = safetensors(&format!("{dir}reference.safetensors")).await?;
    let (sample, sample_shape) = tensor(&reference, "sample")?;
    let (context, context_shape) = tensor(&reference, "encoder_hidden_states")?;
    let (timesteps, _) = tensor(&reference, "timesteps")?;
    let (want, _) = tensor(&reference, "noise_pred")?;
    let upload = |v: &[f32], s: &[usize]| Tensor::from_f32(gpu, s, v, DType::F32).map_err(|e| e.to_string());
    let out = unet
        .forward(gpu, &upload(&sample, &sample_shape)?, &timesteps, &upload(&context, &context_shape)?)
        .map_err(|e| e.to_string())?;
    let got = out.read_f32(gpu).await.map_err(|e| e.to_string())?;
    Ok(ModelCheck { name: "UNet step (SD 1.x style)", max_abs_err: max_abs_diff(&got, &want), bound: 1e-3 })
}

/// The tiny SD 1.x-style CLIP text encoder on four tokenized prompts, against transformers.
async fn clip(gpu: &Gpu, base: &str) -> Result<ModelCheck, String> {
    let dir = format!("{base}clip/sd1/");
    let config =
        ClipTextConfig::from_json(&text(&format!("{dir}config.json")).await?).map_err(|e| e.to_string())?;
    let weights = store(&format!("{dir}model.safetensors")).await?;
    let model = ClipTextModel::load(&weights.root(gpu, DType::F32, QuantPolicy::F32), &config)
        .map_err(|e| e.to_string())?;
    let reference = safetensors(&format!("{dir}reference.safetensors")).await?;
    let ids_info = reference.header.get("input_ids").ok_or("reference has no input_ids")?;
    let ids: Vec<u32> = reference
        .tensor_bytes(ids_info)
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as u32)
        .collect();
    let (want, _) = tensor(&reference, "last_hidden_state")?;
    let out = model.forward(gpu, &ids, 77).map_err(|e| e.to_string())?;
    let got = out.read_f32(gpu).await.map_err(|e| e.to_string())?;
    Ok(ModelCheck {
        name: "CLIP text encoder (SD 1.x style)",
        max_abs_err: max_abs_diff(&got, &want),
        bound: 1e-3,
    })
}

/// Every model check, in order; the first that cannot run stops the list with its error.
pub async fn run(gpu: &Gpu, base: &str) -> Result<Vec<ModelCheck>, String> {
    Ok(vec![clip(gpu, base).await?, unet(gpu, base).await?, taef2(gpu, base).await?])
}

/// `Some(fixtures base URL)` when the page was opened as a model check.
pub fn requested() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    if params.get("check").as_deref() != Some("models") {
        return None;
    }
    Some(params.get("fixtures").unwrap_or_else(|| "/fixtures/".into()))
}
