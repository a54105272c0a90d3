//! The generation worker: the same wasm, started inside a dedicated Web Worker (www/worker.js),
//! owns the GPU device, the loaded model and the downloads, so the page never blocks on them.
//! It answers the typed requests of `protocol` by id. Started as a shared worker (the embedded
//! widget's, through the Storage Access API), it talks to its one page over that page's port.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use darkroom_engine::{policy, EngineError, LoraSource, ModelCache, ModelKey};
use darkroom_gpu::{DType, Gpu, Requirements};
use darkroom_models::taesd::{TaesdConfig, TaesdDecoder};
use darkroom_models::{is_merged_key, QuantCache, QuantPolicy, WeightStore};
use darkroom_pipeline::latent_preview::approximate_rgb;
use darkroom_pipeline::prompt::LoraTag;
use darkroom_pipeline::{Image, ImageRef, PipelineError, Recipe, Request, StableDiffusion};
use darkroom_weights::browser::IdbStore;
use darkroom_weights::fetch::{ChunkStore, FetchError};
use darkroom_weights::Manifest;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::gallery::{Entry, Gallery};
mod downloads;
mod locks;
mod queue_runner;
mod scoring;
mod stores;
mod upscaling;

use crate::idb_model::{IdbModelFiles, IdbQuantCache};
use crate::protocol::{
    BriefTag, Envelope, ErrorKind, FromWorker, ImageInfo, ModelRef, Stage, StoreReply, ToWorker, WorkerStats,
};

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

fn attachment(bytes: &[Vec<u8>], index: Option<usize>, what: &str) -> Result<Option<Image>, Failure> {
    let Some(i) = index else { return Ok(None) };
    let png = bytes.get(i).ok_or((ErrorKind::Input, format!("the {what} did not arrive")))?;
    Image::from_png(png).map(Some).map_err(|e| (ErrorKind::Input, format!("the {what}: {e}")))
}

/// The recipe's control units' ControlNets (loaded from the browser's store once per precision)
/// with their images (attachments).
async fn control_nets(
    state: &State,
    id: u32,
    recipe: &Recipe,
    refs: &[ModelRef],
    precision: darkroom_pipeline::Precision,
    bytes: &[Vec<u8>],
) -> Result<Vec<darkroom_pipeline::Control>, Failure> {
    if refs.len() != recipe.controls.len() {
        return Err((
            ErrorKind::Input,
            format!("{} control units but {} ControlNets came with them", recipe.controls.len(), refs.len()),
        ));
    }
    let mut out = Vec::new();
    for (i, (unit, net_ref)) in recipe.controls.iter().zip(refs).enumerate() {
        let what = format!("control image {}", i + 1);
        let index = match &unit.image {
            Some(ImageRef::Attachment(k)) => Some(*k),
            _ => return Err((ErrorKind::Input, format!("the {what} must travel with the request"))),
        };
        let image = attachment(bytes, index, &what)?.ok_or((ErrorKind::Input, format!("no {what}")))?;
        let manifest = manifest(net_ref)?;
        if !manifest.family.is_controlnet() {
            return Err((ErrorKind::Input, format!("{} is not a ControlNet", manifest.name)));
        }
        let key = format!("{}|{}|{precision:?}", manifest.id, net_ref.base.as_deref().unwrap_or(""));
        let cached = state.controlnets.borrow().get(&key).cloned();
        let net = match cached {
            Some(net) => net,
            None => {
                let gpu = gpu(state).await?;
                let store = IdbStore::open().await.map_err(fetch_failure)?;
                let cancelled = || state.is_cancelled(id);
                let files = IdbModelFiles { store: &store, manifest: &manifest, cancelled: &cancelled };
                let cache = IdbQuantCache::new(&store);
                let loaded = darkroom_pipeline::ControlNet::load(
                    &gpu,
                    &files,
                    &cache,
                    &manifest.id,
                    precision,
                    &mut |_, _, _| {},
                )
                .await
                .map_err(|e| match pipeline_failure(e) {
                    (ErrorKind::Model, m) => (
                        ErrorKind::Model,
                        format!("{} could not be loaded (is it downloaded?): {m}", manifest.name),
                    ),
                    other => other,
                })?;
                let net = std::sync::Arc::new(loaded);
                state.controlnets.borrow_mut().insert(key, net.clone());
                net
            }
        };
        out.push(darkroom_pipeline::Control { net, image });
    }
    Ok(out)
}

/// A recipe's run with its attachments.
fn request(recipe: &Recipe, bytes: &[Vec<u8>]) -> Result<Request, Failure> {
    let index = |image: &Option<ImageRef>, what: &str| match image {
        None => Ok(None),
        Some(ImageRef::Attachment(i)) => Ok(Some(*i)),
        Some(ImageRef::File(_)) => {
            Err((ErrorKind::Input, format!("the {what} must travel with the request")))
        }
    };
    let init = attachment(bytes, index(&recipe.init, "init image")?, "init image")?;
    let mask = attachment(bytes, index(&recipe.mask, "mask")?, "mask")?;
    let mut request = Request::new(recipe.clone(), init, mask).map_err(pipeline_failure)?;
    request.live_preview = true;
    Ok(request)
}

/// The TAESD decoder for previews, loaded once from the browser's store; `None` when it is not
/// downloaded or does not load (previews then fall back to the colour mapping).
async fn previewer(state: &State, gpu: &Gpu, model: &ModelRef, dtype: DType) -> Option<Rc<TaesdDecoder>> {
    let manifest = manifest(model).ok()?;
    let key = format!("{}|{}|{dtype:?}", manifest.id, model.base.as_deref().unwrap_or(""));
    if let Some(p) = state.taesd.borrow().as_ref().filter(|p| p.key == key) {
        return Some(p.decoder.clone());
    }
    let store = IdbStore::open().await.ok()?;
    let bytes = read_stored(&store, &format!("{}/taesd_decoder.safetensors", manifest.id)).await.ok()??;
    let weights = WeightStore::from_bytes(bytes).ok()?;
    let policy = if dtype == DType::F16 { QuantPolicy::F16 } else { QuantPolicy::F32 };
    let decoder = Rc::new(TaesdDecoder::load(&weights.root(gpu, dtype, policy), TaesdConfig::SD).ok()?);
    *state.taesd.borrow_mut() = Some(Previewer { key, decoder: decoder.clone() });
    Some(decoder)
}

async fn generate(
    state: &State,
    id: u32,
    model: (&ModelRef, &[ModelRef], Option<&ModelRef>),
    recipe: &Recipe,
    options: RunOptions<'_>,
    keep: (Option<String>, Option<BriefTag>),
    bytes: Vec<Vec<u8>>,
) -> Result<(), Failure> {
    let (keep, brief) = keep;
    let started = now_ms();
    let (infos, pngs) = make_images(state, id, id, model, recipe, options, &bytes).await?;
    let ms = now_ms() - started;
    let gallery_error = match keep {
        Some(model_name) => keep_images(&model_name, brief.as_ref(), &infos, &pngs).await.err(),
        None => None,
    };
    post(id, FromWorker::Result { images: infos, ms, gallery_error }, pngs);
    Ok(())
}

/// How a run is made besides its recipe: the TAESD decoder for live previews, and whether the
/// user's embeddings apply (not in the embedded widget's runs).
#[derive(Clone, Copy)]
pub(crate) struct RunOptions<'a> {
    pub preview: Option<&'a ModelRef>,
    pub embeddings: bool,
}

/// One run's images as PNGs with their infos (with the model, its ControlNets and the upscaler
/// its hires fix names); progress and previews go to request `report`, and the run stops when
/// `cancel` is cancelled.
async fn make_images(
    state: &State,
    report: u32,
    cancel: u32,
    (model, controls, upscaler): (&ModelRef, &[ModelRef], Option<&ModelRef>),
    recipe: &Recipe,
    options: RunOptions<'_>,
    bytes: &[Vec<u8>],
) -> Result<(Vec<ImageInfo>, Vec<Vec<u8>>), Failure> {
    let id = report;
    let mut request = request(recipe, bytes)?;
    let loras = recipe.loras();
    let (sd, _, _, _) = loaded(state, (id, cancel), model, &loras).await?;
    request.controls = control_nets(state, cancel, recipe, controls, sd.precision, bytes).await?;
    // The embeddings are small: read for every run, so one imported a moment ago applies.
    if options.embeddings {
        let store = IdbStore::open().await.map_err(fetch_failure)?;
        request.embeddings = crate::embeddings::read_all(&store).await.map_err(|e| (ErrorKind::Other, e))?;
    }
    if state.is_cancelled(cancel) {
        return Err((ErrorKind::Cancelled, "cancelled".into()));
    }
    let gpu = gpu(state).await?;
    let taesd = match options.preview {
        Some(m) if sd.vae_config.latent_channels == 4 => {
            previewer(state, &gpu, m, sd.precision.activations).await
        }
        _ => None,
    };
    let timing = RefCell::new(StepTimer::default());
    let on_progress = |p: &darkroom_pipeline::Progress| {
        let stage = match p.stage {
            darkroom_pipeline::Stage::Encoding => Stage::Encoding,
            darkroom_pipeline::Stage::Denoising => Stage::Denoising,
            darkroom_pipeline::Stage::Decoding => Stage::Decoding,
        };
        let body =
            FromWorker::Progress { stage, step: p.step, total: p.total, bytes: 0, bytes_total: 0, rate: 0.0 };
        post(id, body, Vec::new());
        if let (Some(decoder), Some(latents), darkroom_pipeline::Stage::Denoising) =
            (&taesd, p.latents, p.stage)
        {
            // TAESD on the GPU; the small image is posted when it is read back.
            let (gpu, decoder, latents, step, total) =
                (gpu.clone(), decoder.clone(), latents.clone(), p.step, p.total);
            spawn_local(async move {
                if let Ok(img) = darkroom_pipeline::preview(&gpu, &decoder, &latents, 0).await {
                    let body = FromWorker::Preview { width: img.width, height: img.height, step, total };
                    post(id, body, vec![img.rgba]);
                }
            });
        } else if let (Some(values), Some(latents)) = (p.latent_values, p.latents) {
            if let [b, 4, h, w] = *latents.shape() {
                if let Ok(img) = approximate_rgb(values, [b, 4, h, w], 0) {
                    let body = FromWorker::Preview {
                        width: img.width,
                        height: img.height,
                        step: p.step,
                        total: p.total,
                    };
                    post(id, body, vec![img.rgba]);
                }
            }
        }
        if let (darkroom_pipeline::Stage::Denoising, Some(_)) = (p.stage, state.queue.current.get()) {
            state.queue.step.set((p.step, p.total));
            timing.borrow_mut().step(p.step);
        }
        !state.is_cancelled(cancel)
    };
    let mut on_event = |event: &darkroom_engine::job::Event| on_progress(event.progress);
    let hires_upscaler = match (upscaler, &recipe.hires) {
        (Some(m), Some(h)) if !darkroom_engine::job::runs_hires(h) && !recipe.draft => {
            Some(upscaling::loaded(state, id, m).await?)
        }
        _ => None,
    };
    let helpers = darkroom_engine::job::Helpers {
        taesd: taesd.as_deref(),
        upscaler: hires_upscaler.as_ref().map(|(u, _)| &**u),
    };
    let images =
        darkroom_engine::job::generate(&gpu, &sd, helpers, &request, &mut on_event).await.map_err(failure)?;
    let mut infos = Vec::new();
    let mut pngs = Vec::new();
    for generated in &images {
        pngs.push(generated.to_png().map_err(pipeline_failure)?);
        infos.push(ImageInfo {
            width: generated.image.width,
            height: generated.image.height,
            seed: generated.params.seed,
            infotext: generated.params.to_infotext(),
        });
    }
    if let Some(ms) = timing.borrow().ms_per_step() {
        state.queue.ms_per_step.set(ms);
    }
    Ok((infos, pngs))
}

/// Finishes the gallery's drafts `keys` with `model`'s full VAE (see `ToWorker::Finish`).
async fn finish_drafts(state: &State, id: u32, model: &ModelRef, keys: &[u32]) -> Result<usize, Failure> {
    let gallery = Gallery::open().await.map_err(storage_failure)?;
    // Every draft read and checked before the model loads.
    let mut drafts = Vec::new();
    for &key in keys {
        let Some(entry) = gallery.get(key).await.map_err(storage_failure)? else { continue };
        let kept = match darkroom_pipeline::draft::Kept::from_png(&entry.png) {
            Ok(Some(kept)) => kept,
            Ok(None) => continue,
            Err(e) => return Err((ErrorKind::Input, format!("image {key}: {e}"))),
        };
        if kept.recipe.hires.is_some() {
            return Err((
                ErrorKind::Input,
                format!("image {key} has a hires pass to finish: save it and run `darkroom finish` on it"),
            ));
        }
        drafts.push((entry, kept));
    }
    if drafts.is_empty() {
        return Ok(0);
    }
    let palettes: Vec<(String, Vec<[u8; 3]>)> = gallery
        .briefs()
        .await
        .map_err(storage_failure)?
        .into_iter()
        .map(|b| {
            let palette = b.constraints.palette_rgb();
            (b.id, palette)
        })
        .collect();
    // LoRAs change the UNet and the text encoders, never the VAE: the model as it is.
    let (sd, _, _, _) = loaded(state, (id, id), model, &[]).await?;
    let gpu = gpu(state).await?;
    let total = drafts.len();
    let mut done = 0;
    for (k, (mut entry, kept)) in drafts.into_iter().enumerate() {
        if state.is_cancelled(id) {
            return Err((ErrorKind::Cancelled, "cancelled".into()));
        }
        let body = FromWorker::Progress {
            stage: Stage::Decoding,
            step: k,
            total,
            bytes: 0,
            bytes_total: 0,
            rate: 0.0,
        };
        post(id, body, Vec::new());
        let mut quiet = |_: &darkroom_pipeline::Progress| !state.is_cancelled(id);
        let made =
            darkroom_pipeline::finish(&gpu, &sd, &kept, darkroom_pipeline::VaeTiling::Auto, &mut quiet)
                .await
                .map_err(pipeline_failure)?;
        entry.png = made.to_png().map_err(pipeline_failure)?;
        entry.infotext = made.params.to_infotext();
        entry.width = made.image.width;
        entry.height = made.image.height;
        let palette = entry
            .brief
            .as_ref()
            .and_then(|id| palettes.iter().find(|(b, _)| b == id))
            .map_or(&[][..], |(_, p)| p.as_slice());
        entry.score(&made.image, palette);
        if gallery.replace(&entry).await.map_err(storage_failure)? {
            done += 1;
        }
    }
    post(
        id,
        FromWorker::Progress {
            stage: Stage::Decoding,
            step: total,
            total,
            bytes: 0,
            bytes_total: 0,
            rate: 0.0,
        },
        Vec::new(),
    );
    Ok(done)
}

/// Times denoising steps (from the second on: the first includes the text encoding).
#[derive(Default)]
struct StepTimer {
    first: Option<(usize, f64)>,
    last: Option<(usize, f64)>,
}

impl StepTimer {
    fn step(&mut self, step: usize) {
        let now = (step, now_ms());
        if self.first.is_none() {
            self.first = Some(now);
        }
        self.last = Some(now);
    }

    fn ms_per_step(&self) -> Option<f64> {
        let ((s0, t0), (s1, t1)) = (self.first?, self.last?);
        (s1 > s0).then(|| (t1 - t0) / (s1 - s0) as f64)
    }
}

/// Adds the images to the on-device gallery before the page hears of them, so an image the page
/// saw is an image kept.
async fn keep_images(
    model_name: &str,
    brief: Option<&BriefTag>,
    infos: &[ImageInfo],
    pngs: &[Vec<u8>],
) -> Result<(), String> {
    let entries: Vec<Entry> = infos
        .iter()
        .zip(pngs)
        .map(|(info, png)| Entry::made(model_name, info, png, brief, now_ms()))
        .collect();
    Gallery::open().await?.add_all(&entries).await?;
    Ok(())
}
