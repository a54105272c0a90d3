//! The generation worker: the same wasm, started inside a dedicated Web Worker (www/worker.js),
//! owns the GPU device, the loaded model and the downloads, so the page never blocks on them.
//! It answers the typed requests of `protocol` by id. Started as a shared worker (the embedded
//! widget's, through the Storage Access API), it talks to its one page over that page's port.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use darkroom_engine::{policy, EngineError, LoraSource, ModelCache, ModelKey};
use darkroom_gpu::{Gpu, Requirements};
use darkroom_models::taesd::TaesdDecoder;
use darkroom_models::{is_merged_key, QuantCache};
use darkroom_pipeline::prompt::LoraTag;
use darkroom_pipeline::{PipelineError, StableDiffusion};
use darkroom_weights::browser::IdbStore;
use darkroom_weights::fetch::{ChunkStore, FetchError};
use darkroom_weights::Manifest;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

mod depth;
mod downloads;
mod generating;
mod locks;
mod queue_runner;
mod scoring;
mod stores;
mod upscaling;

use generating::{finish_drafts, generate, keep_images, make_images, RunOptions};

use crate::idb_model::{IdbModelFiles, IdbQuantCache};
use crate::protocol::{Envelope, ErrorKind, FromWorker, ModelRef, Stage, StoreReply, ToWorker, WorkerStats};

struct Previewer {
    key: String,
    decoder: Rc<TaesdDecoder>,
}

#[derive(Default)]
struct State {
    gpu: RefCell<Option<Rc<Gpu>>>,
    loaded: RefCell<ModelCache<StableDiffusion>>,
    taesd: RefCell<Option<Previewer>>,
    /// Loaded ControlNets by manifest id, base and precision.
    controlnets: RefCell<std::collections::HashMap<String, std::sync::Arc<darkroom_pipeline::ControlNet>>>,
    /// The CLIP model (and aesthetic head) that scores images.
    scorer: RefCell<Option<scoring::Loaded>>,
    /// The depth preprocessor's model, once loaded.
    depth: RefCell<Option<Rc<darkroom_pipeline::depth::DepthModel>>>,
    /// The last depth map made: the model's name, the image and its map.
    depth_last: RefCell<Option<(String, darkroom_pipeline::Image, darkroom_pipeline::Image)>>,
    /// The upscaler last used, by manifest id, base and activations.
    upscaler: RefCell<Option<(String, Rc<darkroom_models::upscale::Upscaler>)>>,
    cancelled: RefCell<HashSet<u32>>,
    /// The running downloads: model id → request id (for a deletion to cancel).
    downloads: RefCell<std::collections::HashMap<String, u32>>,
    /// One GPU job (load or generate) at a time; downloads run beside it.
    busy: Cell<bool>,
    queue: queue_runner::QueueState,
}

impl State {
    /// Whether request `id` was cancelled.
    fn is_cancelled(&self, id: u32) -> bool {
        self.cancelled.borrow().contains(&id)
    }

    /// Cancels this worker's download of `model`, if one runs.
    fn cancel_download(&self, model: &str) {
        let running = self.downloads.borrow().get(model).copied();
        if let Some(id) = running {
            self.cancelled.borrow_mut().insert(id);
        }
    }
}

thread_local! {
    static STATE: Rc<State> = Rc::new(State::default());
    /// The page's port when this is a shared worker.
    static PORT: RefCell<Option<web_sys::MessagePort>> = const { RefCell::new(None) };
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn post(id: u32, body: FromWorker, bytes: Vec<Vec<u8>>) {
    let (message, transfer) = Envelope::with_bytes(id, body, bytes).to_js();
    let _ = match PORT.with(|p| p.borrow().clone()) {
        Some(port) => port.post_message_with_transferable(&message, &transfer),
        None => scope().post_message_with_transfer(&message, &transfer),
    };
}

fn fail(id: u32, kind: ErrorKind, message: String) {
    post(id, FromWorker::Error { kind, message }, Vec::new());
}

/// Tells the page the worker is stopping, from the panic hook: nothing here may panic again.
fn post_crash(message: String) {
    let (message, transfer) = Envelope::new(0, FromWorker::Crashed { message }).to_js();
    let port = PORT.try_with(|p| p.try_borrow().ok().and_then(|p| p.clone())).ok().flatten();
    let _ = match port {
        Some(port) => port.post_message_with_transferable(&message, &transfer),
        None => scope().post_message_with_transfer(&message, &transfer),
    };
}

/// Installs the message handler and tells the page the worker is listening. A panic is
/// reported to the page (which starts a new worker: this one's state is broken) before the wasm
/// traps.
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post_crash(info.to_string());
    }));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|event: MessageEvent| {
        match Envelope::<ToWorker>::from_js(&event.data()) {
            Ok(envelope) => handle(envelope),
            Err(e) => fail(0, ErrorKind::Other, e),
        }
    });
    let on_message: js_sys::Function = on_message.into_js_value().unchecked_into();
    // Another tab deleting a model cancels this worker's download of it.
    locks::listen(|model| STATE.with(Rc::clone).cancel_download(&model));
    let global = js_sys::global();
    // www/worker.js keeps the ports of a shared worker's connections in `darkroomPorts` until
    // this runs, and hands later ones to `darkroomOnPort`.
    let waiting = js_sys::Reflect::get(&global, &"darkroomPorts".into()).ok();
    let Some(waiting) = waiting.and_then(|w| w.dyn_into::<js_sys::Array>().ok()) else {
        scope().set_onmessage(Some(&on_message));
        post(0, FromWorker::Ready, Vec::new());
        return;
    };
    let attach = move |port: JsValue| {
        let Ok(port) = port.dyn_into::<web_sys::MessagePort>() else { return };
        port.set_onmessage(Some(&on_message));
        PORT.with(|p| *p.borrow_mut() = Some(port));
        post(0, FromWorker::Ready, Vec::new());
    };
    for port in waiting.iter() {
        attach(port);
    }
    let attach = Closure::<dyn FnMut(JsValue)>::new(attach);
    let _ = js_sys::Reflect::set(&global, &"darkroomOnPort".into(), attach.as_ref());
    attach.forget();
}

fn handle(envelope: Envelope<ToWorker>) {
    let state = STATE.with(Rc::clone);
    let id = envelope.id;
    match envelope.body {
        ToWorker::Cancel { target } => {
            state.cancelled.borrow_mut().insert(target);
        }
        ToWorker::Stats => post(id, FromWorker::Stats(stats(&state)), Vec::new()),
        #[cfg(feature = "dev-pages")]
        ToWorker::Crash => panic!("a crash asked for by the developer build"),
        ToWorker::Download { model } => spawn_local(async move {
            match downloads::download(&state, id, &model).await {
                Ok(()) => post(id, FromWorker::Downloaded, Vec::new()),
                Err((kind, message)) => fail(id, kind, message),
            }
            state.cancelled.borrow_mut().remove(&id);
        }),
        ToWorker::Load { model } => spawn_local(async move {
            if let Err((kind, message)) = exclusive(&state, id, load(&state, id, &model)).await {
                fail(id, kind, message);
            }
        }),
        ToWorker::Generate { model, recipe, preview, keep, controls, brief, upscaler, no_embeddings } => {
            spawn_local(async move {
                let job = generate(
                    &state,
                    id,
                    (&model, &controls, upscaler.as_ref()),
                    &recipe,
                    RunOptions { preview: preview.as_ref(), embeddings: !no_embeddings },
                    (keep, brief),
                    envelope.bytes,
                );
                if let Err((kind, message)) = exclusive(&state, id, job).await {
                    fail(id, kind, message);
                }
            })
        }
        ToWorker::Finish { model, keys } => spawn_local(async move {
            let job = finish_drafts(&state, id, &model, &keys);
            match exclusive(&state, id, job).await {
                Ok(images) => post(id, FromWorker::Stored(StoreReply::Finished { images }), Vec::new()),
                Err((kind, message)) => fail(id, kind, message),
            }
        }),
        ToWorker::Score { clip, aesthetic, keys } => spawn_local(async move {
            let job = scoring::score_images(&state, id, &clip, aesthetic.as_ref(), &keys);
            match exclusive(&state, id, job).await {
                Ok(images) => post(id, FromWorker::Stored(StoreReply::Scored { images }), Vec::new()),
                Err((kind, message)) => fail(id, kind, message),
            }
        }),
        ToWorker::Depth { model } => spawn_local(async move {
            let job = depth::preview(&state, id, &model, envelope.bytes);
            if let Err((kind, message)) = exclusive(&state, id, job).await {
                fail(id, kind, message);
            }
        }),
        ToWorker::Upscale { model, keep, brief } => spawn_local(async move {
            let job = upscaling::upscale(&state, id, &model, (keep, brief), envelope.bytes);
            if let Err((kind, message)) = exclusive(&state, id, job).await {
                fail(id, kind, message);
            }
        }),
        ToWorker::Queue(op) => spawn_local(async move {
            match queue_runner::queue_op(&state, id, op, envelope.bytes).await {
                Ok(true) => post(id, FromWorker::Stored(StoreReply::Done), Vec::new()),
                Ok(false) => {}
                Err((kind, message)) => fail(id, kind, message),
            }
        }),
        ToWorker::Store(op) => spawn_local(async move {
            match stores::store(&state, id, op, envelope.files).await {
                Ok(reply) => post(id, FromWorker::Stored(reply), Vec::new()),
                Err((kind, message)) => fail(id, kind, message),
            }
            state.cancelled.borrow_mut().remove(&id);
        }),
    }
}

type Failure = (ErrorKind, String);

fn stats(state: &State) -> WorkerStats {
    let gpu = state.gpu.borrow().clone();
    let pool = gpu.as_ref().map(|g| g.pool_stats()).unwrap_or_default();
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    let buffer: js_sys::ArrayBuffer = memory.buffer().unchecked_into();
    WorkerStats {
        pool_allocated_bytes: pool.allocated_bytes,
        pool_buffers_created: pool.buffers_created,
        weight_bytes: gpu.as_ref().map(|g| g.weight_bytes()).unwrap_or(0),
        wasm_memory_bytes: buffer.byte_length() as u64,
        idb_connections: darkroom_weights::browser::open_connections(),
    }
}

/// Runs a GPU job unless another one is running.
async fn exclusive<T>(
    state: &State,
    id: u32,
    job: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    if state.busy.replace(true) {
        return Err(failure(EngineError::Busy));
    }
    let outcome = job.await;
    forget_lost_device(state);
    state.busy.set(false);
    state.cancelled.borrow_mut().remove(&id);
    outcome
}

/// After a GPU loss (a driver reset, the browser reclaiming the GPU), drops the device and
/// everything made on it, so the next job opens a new device and loads its model again.
fn forget_lost_device(state: &State) {
    let lost = state.gpu.borrow().as_ref().is_some_and(|gpu| gpu.lost().is_some());
    if lost {
        forget_device(state);
    }
}

/// Drops the device and everything made on it.
fn forget_device(state: &State) {
    state.loaded.borrow_mut().evict();
    state.controlnets.borrow_mut().clear();
    *state.taesd.borrow_mut() = None;
    *state.scorer.borrow_mut() = None;
    *state.upscaler.borrow_mut() = None;
    *state.depth.borrow_mut() = None;
    *state.gpu.borrow_mut() = None;
}

/// The engine's error as the page sees it.
fn failure(e: EngineError) -> Failure {
    let kind = match &e {
        EngineError::Busy => ErrorKind::Busy,
        EngineError::Cancelled => ErrorKind::Cancelled,
        EngineError::Input { .. } => ErrorKind::Input,
        EngineError::Model(_) => ErrorKind::Model,
        EngineError::Gpu(_) | EngineError::DeviceLost(_) => ErrorKind::Gpu,
        EngineError::Storage(_) => ErrorKind::Download,
    };
    (kind, e.to_string())
}

fn pipeline_failure(e: PipelineError) -> Failure {
    failure(e.into())
}

/// A store the worker writes refused (a full quota, a broken database).
fn storage_failure(e: String) -> Failure {
    (ErrorKind::Download, e)
}

fn fetch_failure(e: FetchError) -> Failure {
    match e {
        FetchError::Cancelled => (ErrorKind::Cancelled, e.to_string()),
        e => (ErrorKind::Download, e.to_string()),
    }
}

fn manifest(model: &ModelRef) -> Result<Manifest, Failure> {
    Manifest::parse(&model.manifest_toml, &model.manifest_file).map_err(|e| (ErrorKind::Model, e.to_string()))
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

async fn gpu(state: &State) -> Result<Rc<Gpu>, Failure> {
    // The loss of a device is reported asynchronously, possibly after the job it failed ended.
    forget_lost_device(state);
    if let Some(gpu) = state.gpu.borrow().as_ref() {
        return Ok(gpu.clone());
    }
    let gpu =
        Rc::new(Gpu::open(&Requirements::default()).await.map_err(|e| (ErrorKind::Gpu, e.to_string()))?);
    let budget = policy::model_budget(&gpu.capabilities().device_type);
    *state.loaded.borrow_mut() = ModelCache::with_budget(budget);
    *state.gpu.borrow_mut() = Some(gpu.clone());
    Ok(gpu)
}

/// The model on the GPU, loading it from the browser's store if it is not the one loaded.
async fn load(state: &State, id: u32, model: &ModelRef) -> Result<(), Failure> {
    let (_, name, precision, ms) = loaded(state, (id, id), model, &[]).await?;
    post(id, FromWorker::Loaded { name, precision, ms }, Vec::new());
    Ok(())
}

/// The quantized-weights cache minus the layers LoRAs changed: each LoRA and scale would store
/// another copy of them, and browser storage is scarce; they are merged again at each load.
struct BaseWeightsOnly<'a>(&'a IdbQuantCache<'a>);

impl QuantCache for BaseWeightsOnly<'_> {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        if !is_merged_key(key) {
            self.0.put(key, bytes).await;
        }
    }
}

/// The LoRAs imported into this browser (by Models → LoRAs), by name; their identity is the
/// content hash kept at import, so checking it reads no LoRA.
struct StoredLoras<'a>(&'a IdbStore);

impl LoraSource for StoredLoras<'_> {
    async fn identity(&self, name: &str) -> Result<Option<String>, EngineError> {
        crate::loras::identity(self.0, name).await.map_err(EngineError::Model)
    }

    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, EngineError> {
        crate::loras::read(self.0, name).await.map_err(EngineError::Model)
    }

    fn missing(&self, name: &str) -> String {
        crate::loras::missing(name)
    }
}

/// The bytes of every file of `manifest` stored, or a model error naming the first file missing.
async fn require_downloaded(store: &IdbStore, manifest: &Manifest) -> Result<u64, Failure> {
    let mut total = 0;
    for file in &manifest.files {
        let stored =
            store.stored(&format!("{}/{}", manifest.id, file.path), 1).await.map_err(fetch_failure)?;
        if !stored.complete {
            return Err((
                ErrorKind::Model,
                format!(
                    "{} is not fully downloaded ({} is missing): download it first",
                    manifest.name, file.path
                ),
            ));
        }
        total += stored.total.unwrap_or(0);
    }
    Ok(total)
}

/// A whole stored file (`key`: "<model id>/<path>"), or `None` when it is not completely
/// downloaded.
async fn read_stored(store: &IdbStore, key: &str) -> Result<Option<Vec<u8>>, Failure> {
    let stored = store.stored(key, 1).await.map_err(fetch_failure)?;
    match (stored.complete, stored.total) {
        (true, Some(total)) => Ok(Some(store.read_range(key, 0, total).await.map_err(fetch_failure)?)),
        _ => Ok(None),
    }
}

/// The model on the GPU with `loras` merged in, loading it from the browser's store unless it is
/// the one loaded.
async fn loaded(
    state: &State,
    (id, cancel): (u32, u32),
    model: &ModelRef,
    loras: &[LoraTag],
) -> Result<(Rc<StableDiffusion>, String, String, f64), Failure> {
    let manifest = manifest(model)?;
    let gpu = gpu(state).await?;
    let precision = policy::for_manifest(gpu.capabilities().shader_f16, &manifest);
    let store = IdbStore::open().await.map_err(fetch_failure)?;
    let source = StoredLoras(&store);
    let lora_key = darkroom_engine::loras::key(&source, loras).await.map_err(failure)?;
    let key = ModelKey::new(&manifest.id, model.base.as_deref().unwrap_or(""), &precision, &lora_key);
    if let Some(loaded) = state.loaded.borrow_mut().get(&key) {
        return Ok((loaded, manifest.name.clone(), policy::describe(&precision), 0.0));
    }
    let applied = darkroom_engine::loras::resolve(&source, loras).await.map_err(failure)?;
    // No tab deletes or rewrites the files while they are read.
    let _lock = locks::model_lock(&manifest.id, false).await;
    let total = require_downloaded(&store, &manifest).await?;
    // Free what the cache's budget needs freed before loading (the stored size bounds what the
    // weights take on the GPU).
    state.loaded.borrow_mut().make_room(total);
    let weights_before = gpu.weight_bytes();
    let cancelled = || state.is_cancelled(cancel);
    let files = IdbModelFiles { store: &store, manifest: &manifest, cancelled: &cancelled };
    let cache = IdbQuantCache::new(&store);
    let started = now_ms();
    let mut finished_files = 0u64;
    let mut current = (String::new(), 0u64);
    let mut progress = |path: &str, done: u64, len: u64| {
        if current.0 != path {
            finished_files += current.1;
            current = (path.to_string(), 0);
        }
        current.1 = len;
        let bytes = finished_files + done;
        let secs = ((now_ms() - started) / 1000.0).max(1e-3);
        let body = FromWorker::Progress {
            stage: Stage::Loading,
            step: 0,
            total: 0,
            bytes,
            bytes_total: total.max(bytes),
            rate: bytes as f64 / secs,
        };
        post(id, body, Vec::new());
    };
    let sd = if applied.is_empty() {
        StableDiffusion::load(&gpu, &files, &cache, &manifest.id, precision, &mut progress)
            .await
            .map_err(pipeline_failure)?
    } else {
        let names: Vec<&str> = applied.iter().map(|l| l.name.as_str()).collect();
        let cache = BaseWeightsOnly(&cache);
        StableDiffusion::load_with_loras(
            &gpu,
            &files,
            &cache,
            &manifest.id,
            precision,
            &applied,
            &mut progress,
        )
        .await
        .map_err(|e| match pipeline_failure(e) {
            (ErrorKind::Model | ErrorKind::Input, m) => {
                (ErrorKind::Input, format!("with LoRA {}: {m}", names.join(", ")))
            }
            other => other,
        })?
    };
    let bytes = gpu.weight_bytes().saturating_sub(weights_before);
    let sd = state.loaded.borrow_mut().insert(key, sd, bytes);
    Ok((sd, manifest.name.clone(), policy::describe(&precision), now_ms() - started))
}
