//! Downloads a model into IndexedDB with the app's own download code and reports every step,
//! for the browser tests of resumable, verified downloads. Opened as
//! `?check=weights&manifest=<url of a manifest>&base=<base URL of its files>[&chunk=<bytes>]`;
//! the shipped app downloads the same way from the manifest's CDN.

use darkroom_gpu::{DType, Gpu, Requirements};
use darkroom_models::QuantPolicy;
use darkroom_pipeline::{Precision, Request, Sampler, StableDiffusion};
use darkroom_weights::browser::{request_persistence, FetchSource, IdbStore};

use crate::idb_model::{IdbModelFiles, IdbQuantCache};
use darkroom_weights::fetch::{
    fetch_model, verify_model, ChunkStore, FetchOptions, FetchProgress, DEFAULT_CHUNK,
};
use darkroom_weights::Manifest;
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

pub struct WeightsRequest {
    pub manifest_url: String,
    pub base: Option<String>,
    pub chunk: u64,
    /// After the download, load the model from IndexedDB with these weights (`f32` or `q8`).
    pub load: Option<QuantPolicy>,
    /// …and generate this.
    pub generate: Option<Request>,
}

fn generation(params: &web_sys::UrlSearchParams) -> Option<Request> {
    let prompt = params.get("prompt")?;
    let num = |k: &str, d: f64| params.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(d);
    let sampler: Sampler = params.get("sampler").and_then(|s| s.parse().ok()).unwrap_or(Sampler::Euler);
    let mut request = Request::txt2img(
        &prompt,
        num("seed", 1.0) as u64,
        num("steps", 4.0) as usize,
        sampler,
        num("cfg", 7.5) as f32,
    );
    request.recipe.negative_prompt = params.get("negative").unwrap_or_default();
    request.recipe.width = num("width", 64.0) as usize;
    request.recipe.height = num("height", 48.0) as usize;
    Some(request)
}

/// `Some` when the page was opened as a weights check.
pub fn requested() -> Option<WeightsRequest> {
    let search = web_sys::window()?.location().search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    if params.get("check").as_deref() != Some("weights") {
        return None;
    }
    Some(WeightsRequest {
        manifest_url: params.get("manifest")?,
        base: params.get("base"),
        chunk: params.get("chunk").and_then(|c| c.parse().ok()).filter(|&c| c > 0).unwrap_or(DEFAULT_CHUNK),
        load: params.get("load").map(|l| if l == "q8" { QuantPolicy::Q8 } else { QuantPolicy::F32 }),
        generate: generation(&params),
    })
}

fn set(target: &Object, key: &str, value: JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), &value);
}

/// `window.__darkroomWeights`, updated as the download goes.
fn status() -> Object {
    let global = js_sys::global();
    match Reflect::get(&global, &"__darkroomWeights".into()).ok().and_then(|v| v.dyn_into::<Object>().ok()) {
        Some(obj) => obj,
        None => {
            let obj = Object::new();
            set(&global.unchecked_into(), "__darkroomWeights", obj.clone().into());
            obj
        }
    }
}

async fn manifest(url: &str) -> Result<Manifest, String> {
    let text = crate::net::text(url).await?;
    Manifest::parse(&text, url).map_err(|e| e.to_string())
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Loads the stored model (streaming from IndexedDB, quantized weights cached there) and, if
/// asked, generates; publishes the cache's hits and writes and the image.
async fn load_and_generate(
    obj: &Object,
    store: &IdbStore,
    manifest: &Manifest,
    weights: QuantPolicy,
    generate: Option<&Request>,
) -> Result<Option<String>, String> {
    let gpu = Gpu::open(&Requirements::default()).await.map_err(|e| e.to_string())?;
    let cache = IdbQuantCache::new(store);
    let files = IdbModelFiles { store, manifest, cancelled: &|| false };
    let started = now_ms();
    let precision = Precision { activations: DType::F32, weights, text_encoders: Default::default() };
    let mut progress = |_: &str, _: u64, _: u64| {};
    let model = StableDiffusion::load(&gpu, &files, &cache, &manifest.id, precision, &mut progress)
        .await
        .map_err(|e| e.to_string())?;
    let load = Object::new();
    set(&load, "ms", (now_ms() - started).into());
    set(&load, "cacheHits", (cache.hits.get() as f64).into());
    set(&load, "cacheWrites", (cache.puts.get() as f64).into());
    set(obj, "load", load.into());
    if let Some(request) = generate {
        set(obj, "state", "generating".into());
        let started = now_ms();
        let mut on_progress = |_: &darkroom_pipeline::Progress| true;
        let images = darkroom_pipeline::generate(&gpu, &model, request, &mut on_progress)
            .await
            .map_err(|e| e.to_string())?;
        let first = images.first().ok_or("no image")?;
        let result = Object::new();
        set(&result, "ms", (now_ms() - started).into());
        set(&result, "width", (first.image.width as f64).into());
        set(&result, "height", (first.image.height as f64).into());
        set(&result, "rgba", js_sys::Uint8Array::from(first.image.rgba.as_slice()).into());
        let png = first.to_png().map_err(|e| e.to_string())?;
        set(&result, "png", js_sys::Uint8Array::from(png.as_slice()).into());
        set(obj, "image", result.into());
        let url = crate::state::png_url(&png);
        return Ok(Some(url).filter(|u| !u.is_empty()));
    }
    Ok(None)
}

/// What a finished check shows: its summary line and, when it generated, the image's URL.
pub type Outcome = Result<(String, Option<String>), String>;

/// Runs the download; `progress` sees (done, total, path) after every chunk.
pub async fn run(request: &WeightsRequest, progress: &mut dyn FnMut(u64, u64, &str)) -> Outcome {
    let obj = status();
    set(&obj, "state", "running".into());
    let outcome = async {
        let manifest = manifest(&request.manifest_url).await?;
        set(&obj, "persisted", request_persistence().await.into());
        let store = IdbStore::open().await.map_err(|e| e.to_string())?;
        let options = FetchOptions {
            chunk_size: request.chunk,
            base_url: request.base.as_deref(),
            cancelled: &|| false,
        };
        let mut report = |p: &FetchProgress| {
            set(&obj, "done", (p.model_done as f64).into());
            set(&obj, "total", (p.model_total as f64).into());
            set(&obj, "path", p.path.as_str().into());
            progress(p.model_done, p.model_total, &p.path);
        };
        let fetched = fetch_model(
            &FetchSource::with_mirror(request.base.as_deref()),
            &store,
            &manifest,
            &options,
            &mut report,
        )
        .await;
        // Whatever happened, say what the store now holds.
        let files = Array::new();
        for (path, complete, sha256, matches) in
            verify_model(&store, &manifest, request.chunk).await.map_err(|e| e.to_string())?
        {
            let entry = Object::new();
            let key = format!("{}/{path}", manifest.id);
            let state = store.stored(&key, request.chunk).await.map_err(|e| e.to_string())?;
            set(&entry, "path", path.as_str().into());
            set(&entry, "complete", complete.into());
            set(&entry, "chunks", (state.chunks as f64).into());
            set(&entry, "sha256", sha256.as_str().into());
            set(&entry, "matches", matches.map_or(JsValue::NULL, JsValue::from));
            files.push(&entry);
        }
        set(&obj, "files", files.into());
        fetched.map_err(|e| e.to_string())?;
        let mut image = None;
        if let Some(policy) = request.load {
            set(&obj, "state", "loading".into());
            image = load_and_generate(&obj, &store, &manifest, policy, request.generate.as_ref()).await?;
        }
        Ok::<_, String>((format!("{} is stored in this browser", manifest.name), image))
    }
    .await;
    match &outcome {
        Ok(_) => set(&obj, "state", "done".into()),
        Err(e) => {
            set(&obj, "state", "error".into());
            set(&obj, "error", e.as_str().into());
        }
    }
    outcome
}
