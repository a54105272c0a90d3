//! Our half of the onnxruntime-web comparison (`cargo xtask bench`): opened as
//! `?check=bench&bench=<url of the exported folder>&runs=N`, it loads each benchmark model's
//! diffusers folders, runs the text encoder, a UNet step and the VAE decoder on the exported
//! inputs, and publishes per-run times and outputs as `window.__darkroomBench` for the runner,
//! which then runs onnxruntime-web in the same page on the same inputs. Never opened by the app.

use darkroom_gpu::{DType, Gpu, Requirements, Tensor};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::vae::{AutoencoderKLConfig, VaeDecoder};
use darkroom_models::{QuantPolicy, WeightStore};
use serde::Deserialize;
use wasm_bindgen::JsValue;

use crate::net::{fetch_bytes, text};

#[derive(Deserialize)]
struct Manifest {
    models: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    name: String,
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    component: String,
    inputs: std::collections::BTreeMap<String, Array>,
}

#[derive(Deserialize)]
struct Array {
    file: String,
    shape: Vec<usize>,
}

/// The query's `bench` base URL (ending in `/`) and run count, if this is the bench page.
pub fn requested() -> Option<(String, usize)> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    if params.get("check").as_deref() != Some("bench") {
        return None;
    }
    let mut base = params.get("bench")?;
    if !base.ends_with('/') {
        base.push('/');
    }
    let runs = params.get("runs").and_then(|r| r.parse().ok()).unwrap_or(3usize).max(1);
    Some((base, runs))
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

async fn f32s(url: &str) -> Result<Vec<f32>, String> {
    let bytes = fetch_bytes(url).await?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

async fn store(url: &str) -> Result<WeightStore, String> {
    WeightStore::from_bytes(fetch_bytes(url).await?).map_err(|e| format!("{url}: {e}"))
}

fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = js_sys::Reflect::set(target, &key.into(), value);
}

/// A warm-up run (compiles the pipelines), then `runs` timed ones; each ends with the output
/// read back, as onnxruntime-web's `run` does.
async fn timed<F, Fut>(runs: usize, mut f: F) -> Result<(Vec<f64>, Vec<f32>), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<f32>, String>>,
{
    let mut output = f().await?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = now_ms();
        output = f().await?;
        times.push(now_ms() - start);
    }
    Ok((times, output))
}

async fn component(gpu: &Gpu, dir: &str, c: &Component, runs: usize) -> Result<(Vec<f64>, Vec<f32>), String> {
    let input = |name: &str| c.inputs.get(name).ok_or(format!("{}: no input {name}", c.component));
    let err = |e: darkroom_models::ModelError| e.to_string();
    let gerr = |e: darkroom_gpu::GpuError| e.to_string();
    let (dtype, policy) = (DType::F32, QuantPolicy::F32);
    match c.component.as_str() {
        "text_encoder" => {
            let cfg = ClipTextConfig::from_json(&text(&format!("{dir}text_encoder/config.json")).await?)
                .map_err(|e| e.to_string())?;
            let weights = store(&format!("{dir}text_encoder/model.safetensors")).await?;
            let model = ClipTextModel::load(&weights.root(gpu, dtype, policy), &cfg).map_err(err)?;
            let ids_spec = input("input_ids")?;
            let ids: Vec<u32> = fetch_bytes(&format!("{dir}{}", ids_spec.file))
                .await?
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let seq = *ids_spec.shape.last().unwrap_or(&77);
            timed(runs, || async {
                let out = model.forward(gpu, &ids, seq).map_err(err)?;
                out.read_f32(gpu).await.map_err(gerr)
            })
            .await
        }
        "unet" => {
            let cfg = UNet2DConditionConfig::from_json(&text(&format!("{dir}unet/config.json")).await?)
                .map_err(|e| e.to_string())?;
            let weights = store(&format!("{dir}unet/diffusion_pytorch_model.safetensors")).await?;
            let model = UNet2DConditionModel::load(&weights.root(gpu, dtype, policy), &cfg).map_err(err)?;
            let (s, t, e) = (input("sample")?, input("timestep")?, input("encoder_hidden_states")?);
            let sample = Tensor::from_f32(gpu, &s.shape, &f32s(&format!("{dir}{}", s.file)).await?, dtype)
                .map_err(gerr)?;
            let timesteps = f32s(&format!("{dir}{}", t.file)).await?;
            let context = Tensor::from_f32(gpu, &e.shape, &f32s(&format!("{dir}{}", e.file)).await?, dtype)
                .map_err(gerr)?;
            timed(runs, || async {
                let out = model.forward(gpu, &sample, &timesteps, &context).map_err(err)?;
                out.read_f32(gpu).await.map_err(gerr)
            })
            .await
        }
        "vae_decoder" => {
            let cfg = AutoencoderKLConfig::from_json(&text(&format!("{dir}vae/config.json")).await?)
                .map_err(|e| e.to_string())?;
            let weights = store(&format!("{dir}vae/diffusion_pytorch_model.safetensors")).await?;
            let model = VaeDecoder::load(&weights.root(gpu, dtype, policy), &cfg).map_err(err)?;
            let l = input("latents")?;
            let latents = Tensor::from_f32(gpu, &l.shape, &f32s(&format!("{dir}{}", l.file)).await?, dtype)
                .map_err(gerr)?;
            timed(runs, || async {
                let out = model.forward(gpu, &latents).map_err(err)?;
                out.read_f32(gpu).await.map_err(gerr)
            })
            .await
        }
        other => Err(format!("unknown benchmark component {other}")),
    }
}

/// Runs every model and component of `<base>bench.json`, publishing results as they finish
/// (`window.__darkroomBench.results`) and `done` (or `error`) at the end.
pub async fn run(base: String, runs: usize) {
    let Some(window) = web_sys::window() else { return };
    let state = js_sys::Object::new();
    let results = js_sys::Array::new();
    set(&state, "results", &results);
    set(&window, "__darkroomBench", &state);
    let outcome = async {
        let manifest: Manifest = serde_json::from_str(&text(&format!("{base}bench.json")).await?)
            .map_err(|e| format!("bench.json: {e}"))?;
        let gpu = Gpu::open(&Requirements::default()).await.map_err(|e| e.to_string())?;
        let caps = gpu.capabilities();
        set(&state, "adapter", &format!("{} ({})", caps.adapter_name, caps.backend).into());
        for model in &manifest.models {
            let dir = format!("{base}{}/", model.name);
            for c in &model.components {
                let (times, output) = component(&gpu, &dir, c, runs).await?;
                let row = js_sys::Object::new();
                set(&row, "model", &model.name.as_str().into());
                set(&row, "component", &c.component.as_str().into());
                let ms = js_sys::Array::new();
                for t in times {
                    ms.push(&t.into());
                }
                set(&row, "ms", &ms);
                set(&row, "output", &js_sys::Float32Array::from(output.as_slice()));
                set(&row, "peakPoolBytes", &(gpu.pool_stats().peak_allocated_bytes as f64).into());
                results.push(&row);
                gpu.trim_pool();
            }
        }
        Ok::<(), String>(())
    }
    .await;
    match outcome {
        Ok(()) => set(&state, "done", &true.into()),
        Err(e) => set(&state, "error", &e.into()),
    }
}
