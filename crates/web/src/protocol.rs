//! The typed messages between the page and the generation worker. Every request carries an id;
//! every response names the request it answers. A message crosses `postMessage` as
//! `{ json, bytes }`: the enum as JSON and its binary parts (images) as byte arrays beside it,
//! referred to by index, so pixels are never spelled out as JSON numbers. Files picked from the
//! disk (a checkpoint, a LoRA) travel as `Blob`s in a third part, `files`, which the browser
//! passes by reference, so a 2 GB checkpoint is not copied into the message.
//!
//! The worker is the only writer of the browser's stores (models, LoRAs, the gallery): the page
//! reads them, and asks the worker for every change (`ToWorker::Store`, and `Generate`'s `keep`,
//! with the brief new images join).

use darkroom_pipeline::Recipe;
use darkroom_workflow::brief::{Brief, Culling};
use js_sys::{Array, Object, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};

/// Which model: a manifest's TOML text (built in or fetched by the page) and, for models served
/// somewhere other than the manifest's CDN, the base URL of its files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub manifest_toml: String,
    /// Where the manifest came from (named in its parse errors).
    pub manifest_file: String,
    pub base: Option<String>,
}

/// The brief new images join: its id, the iteration (the run's start time, shared by the runs
/// of one batch count or queued job) and its palette (scored as ΔE).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BriefTag {
    pub id: String,
    pub iteration: f64,
    #[serde(default)]
    pub palette: Vec<[u8; 3]>,
}

/// The page asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// Download (or finish downloading) a model into the browser's store.
    Download { model: ModelRef },
    /// Load a stored model onto the GPU (generation loads it too when needed).
    Load { model: ModelRef },
    /// One run of a seeded recipe (its batch count is the page's loop); its init image and mask
    /// are PNG attachments (`ImageRef::Attachment`). `preview`: a downloaded TAESD decodes the
    /// live previews (else latents mapped to colour).
    /// `keep`: the model's name to record, when the images go into the on-device gallery (the
    /// app's; the embedded widget keeps nothing). `controls`: the ControlNet of each of the
    /// recipe's control units, in order (their images are attachments too).
    Generate {
        model: ModelRef,
        recipe: Recipe,
        preview: Option<ModelRef>,
        keep: Option<String>,
        #[serde(default)]
        controls: Vec<ModelRef>,
        /// The brief the kept images join.
        #[serde(default)]
        brief: Option<BriefTag>,
        /// The upscaler model the recipe's hires fix names, when it names one.
        #[serde(default)]
        upscaler: Option<ModelRef>,
        /// The embedded widget's runs: the user's embeddings are not applied, so nothing of the
        /// user's own library shapes an image a host page may receive.
        #[serde(default)]
        no_embeddings: bool,
    },
    /// Gallery drafts (by key) finished: each one's kept latents decoded by `model`'s full VAE
    /// (the model that made it), its PNG and parameters replaced by the final image's, its
    /// culling, notes and brief kept. Progress per image; answered with `StoreReply::Finished`.
    Finish { model: ModelRef, keys: Vec<u32> },
    /// Gallery images (by key) scored on the device: the CLIP score of each against its own
    /// prompt's words with `clip` (a CLIP model), and the aesthetic score with `aesthetic`'s head;
    /// written into their records. Progress per image; answered with `StoreReply::Scored`.
    Score { clip: ModelRef, aesthetic: Option<ModelRef>, keys: Vec<u32> },
    /// The image (PNG attachment 0) upscaled by `model` (an ESRGAN-family upscaler), its
    /// parameters kept with the upscale added as A1111's Extras writes it. `keep`: the model name
    /// to record when it goes into the gallery, `brief` the brief and iteration it joins.
    /// Progress per tile; answered with `Result` (the upscaled PNG as attachment 0).
    Upscale {
        model: ModelRef,
        keep: Option<String>,
        #[serde(default)]
        brief: Option<BriefTag>,
    },
    /// The depth control map of the image (PNG attachment 0) by `model` (a downloaded depth
    /// model), which stays loaded for the generations' depth units; answered with `Result` (the
    /// map as attachment 0).
    Depth { model: ModelRef },
    /// A change to the browser's stores.
    Store(StoreOp),
    /// The queue of jobs the worker runs one after another.
    Queue(QueueOp),
    /// Stop the request with this id at its next step or chunk.
    Cancel { target: u32 },
    /// What the worker holds (answered with `Stats`): for the soak test and the GPU tab.
    Stats,
    /// Panic, as a bug would: for the test of the page's recovery (developer build only).
    #[cfg(feature = "dev-pages")]
    Crash,
}

/// A change to the browser's stores, made by the worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum StoreOp {
    /// Every stored file of model `id` (downloaded or imported) and its quantized weights.
    DeleteModel {
        id: String,
    },
    /// The single-file checkpoint (file attachment 0) as model `id` on `base`'s configs and
    /// tokenizer; answered with `StoreReply::Imported`.
    ImportCheckpoint {
        base: ModelRef,
        id: String,
    },
    /// The LoRA file (file attachment 0) as LoRA `name`, replacing one of that name; answered
    /// with `StoreReply::LoraImported`.
    ImportLora {
        name: String,
    },
    DeleteLora {
        name: String,
    },
    /// The embedding file (file attachment 0) as embedding `name`, replacing one of that name;
    /// answered with `StoreReply::EmbeddingImported`.
    ImportEmbedding {
        name: String,
    },
    DeleteEmbedding {
        name: String,
    },
    /// A gallery image, by its key.
    DeleteImage {
        key: u32,
    },
    /// A gallery image's stars, verdict, reason, note and final mark.
    Cull {
        key: u32,
        culling: Culling,
    },
    /// Gallery images into brief `brief` as iteration `iteration` (`None`: out of any brief).
    AssignBrief {
        keys: Vec<u32>,
        brief: Option<String>,
        iteration: f64,
    },
    /// A brief, created or changed.
    SaveBrief {
        brief: Brief,
    },
    /// A brief; its images stay in the gallery, out of any brief.
    DeleteBrief {
        id: String,
    },
    /// A brief file (file attachment 0: the zip the app exports) as a brief with its images;
    /// answered with `StoreReply::BriefImported`.
    ImportBrief,
}

/// The queue: recipes the worker runs one after another, kept in IndexedDB beside the gallery,
/// so a reload or a crash resumes it where it stopped. A job's images go into the gallery run by
/// run, in the same transaction that records the run as done, so none is made twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum QueueOp {
    /// Follow the queue: its state comes as `FromWorker::Queue` answers to this request, which
    /// never ends, with the running job's progress; starts the queue (after a reload, too).
    Watch,
    /// A job: a seeded recipe with its images as attachments, the model's name for the gallery.
    Add {
        model: ModelRef,
        recipe: Recipe,
        preview: Option<ModelRef>,
        keep: String,
        /// The ControlNet of each control unit, in order.
        #[serde(default)]
        controls: Vec<ModelRef>,
        /// The brief its images join.
        #[serde(default)]
        brief: Option<BriefTag>,
        /// The upscaler model the recipe's hires fix names, when it names one.
        #[serde(default)]
        upscaler: Option<ModelRef>,
    },
    Pause,
    Resume,
    /// Stop job `key` (the running one at its next step) and keep it, cancelled, in the list.
    Cancel {
        key: u32,
    },
    /// Move waiting job `key` earlier (`up`) or later among the waiting ones.
    Move {
        key: u32,
        up: bool,
    },
    /// Take the done, failed and cancelled jobs off the list.
    ClearFinished,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// A job as the page shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub key: u32,
    pub prompt: String,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub images: usize,
    pub images_done: usize,
    pub state: JobState,
    pub error: Option<String>,
}

/// The queue as the page shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueView {
    pub jobs: Vec<JobView>,
    pub paused: bool,
    /// The running job's denoising step, of how many.
    pub step: usize,
    pub total: usize,
    /// Milliseconds per denoising step, as measured (0 until a step was timed).
    pub ms_per_step: f64,
    /// Images the queue has stored this session (the gallery reloads when it changes).
    pub stored: u32,
}

impl QueueView {
    /// Jobs finished (done), of all that will run or ran (cancelled and failed not counted).
    pub fn counts(&self) -> (usize, usize) {
        let counted = self.jobs.iter().filter(|j| !matches!(j.state, JobState::Cancelled | JobState::Failed));
        let all: Vec<_> = counted.collect();
        (all.iter().filter(|j| j.state == JobState::Done).count(), all.len())
    }

    /// Milliseconds of denoising left, from the measured rate: the running job's remaining
    /// steps and every waiting job's. `None` before a step was timed.
    pub fn ms_left(&self) -> Option<f64> {
        if self.ms_per_step <= 0.0 {
            return None;
        }
        let steps: usize = self
            .jobs
            .iter()
            .map(|j| match j.state {
                JobState::Waiting => j.steps * j.images,
                JobState::Running => {
                    j.steps * (j.images - j.images_done).saturating_sub(1)
                        + self.total.saturating_sub(self.step)
                }
                _ => 0,
            })
            .sum();
        Some(steps as f64 * self.ms_per_step)
    }
}

/// What a store change did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum StoreReply {
    Done,
    /// The imported model's manifest.
    Imported {
        manifest_toml: String,
    },
    /// How many layers the LoRA changes.
    LoraImported {
        layers: usize,
    },
    /// The embedding's vectors per use and its kind ("SD 1.x/2.x, 768 wide", "SDXL").
    EmbeddingImported {
        vectors: usize,
        kind: String,
    },
    /// How many drafts were finished (those no longer stored or no longer drafts are skipped).
    Finished {
        images: usize,
    },
    /// How many images were scored.
    Scored {
        images: usize,
    },
    /// The imported brief's id (a new one when this browser already had the file's) and how
    /// many images came with it.
    BriefImported {
        id: String,
        images: usize,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stage {
    Downloading,
    Loading,
    Encoding,
    Denoising,
    Decoding,
    Importing,
    Scoring,
    Upscaling,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Downloading => "Downloading",
            Stage::Loading => "Loading weights onto the GPU",
            Stage::Encoding => "Encoding the prompt",
            Stage::Denoising => "Denoising",
            Stage::Decoding => "Decoding",
            Stage::Importing => "Importing",
            Stage::Scoring => "Scoring",
            Stage::Upscaling => "Upscaling",
        }
    }
}

/// One finished image; its PNG (with the `parameters` chunk) is the attachment of the same index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    /// A1111's infotext, as in the PNG.
    pub infotext: String,
}

/// What went wrong, by kind, so the page can say what to do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself (size, steps, image) is wrong.
    Input,
    /// The model is not (fully) downloaded, or its files are damaged.
    Model,
    /// Download failed: network, integrity or storage.
    Download,
    /// No usable GPU, or it ran out of memory or limits.
    Gpu,
    /// Another GPU job (a load or a generation) is running.
    Busy,
    Cancelled,
    /// The worker stopped (a panic, an uncaught error) while the request waited; the page
    /// started a new one.
    Crashed,
    Other,
}

impl ErrorKind {
    /// How a side job (`job`: "Scoring"; `verb`: "score") that is not a generation ended badly,
    /// in words: the GPU busy with another job, a cancel, or the worker's message.
    pub fn side_job(self, job: &str, verb: &str, message: &str) -> String {
        match self {
            ErrorKind::Busy => {
                format!("The GPU is busy (a generation or the queue): {verb} when it is done.")
            }
            ErrorKind::Cancelled => format!("{job} was cancelled."),
            _ => format!("{job} failed: {message}"),
        }
    }
}

/// What the worker holds now: what a long session must not let grow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerStats {
    /// The GPU tensor pool's buffers (in use or free for reuse), and how many it ever created.
    pub pool_allocated_bytes: u64,
    pub pool_buffers_created: u64,
    /// Weights uploaded since the device opened.
    pub weight_bytes: u64,
    /// The worker's wasm linear memory.
    pub wasm_memory_bytes: u64,
    /// IndexedDB connections the worker holds open.
    pub idb_connections: i64,
}

/// The worker answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum FromWorker {
    /// The worker is running and listening.
    Ready,
    Progress {
        stage: Stage,
        step: usize,
        total: usize,
        bytes: u64,
        bytes_total: u64,
        /// Bytes per second over the current download or load.
        rate: f64,
    },
    /// A live preview of batch image 0 as RGBA (attachment 0).
    Preview {
        width: usize,
        height: usize,
        step: usize,
        total: usize,
    },
    /// The model is ready on the GPU.
    Loaded {
        name: String,
        precision: String,
        ms: f64,
    },
    Downloaded,
    /// PNGs as attachments, in order. `gallery_error`: the request asked to keep the images
    /// and the gallery refused them (the images are still here).
    Result {
        images: Vec<ImageInfo>,
        ms: f64,
        gallery_error: Option<String>,
    },
    /// A store change is done.
    Stored(StoreReply),
    /// The queue changed (an answer to `QueueOp::Watch`).
    Queue(QueueView),
    Error {
        kind: ErrorKind,
        message: String,
    },
    Stats(WorkerStats),
    /// The worker is stopping: a panic (posted by its panic hook) or an uncaught error (posted
    /// by www/worker.js). Sent with id 0; every request it had is lost.
    Crashed {
        message: String,
    },
}

/// A message and its binary attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<T> {
    pub id: u32,
    pub body: T,
    pub bytes: Vec<Vec<u8>>,
    /// Files from the disk, passed by reference.
    pub files: Vec<web_sys::Blob>,
}

#[derive(Serialize, Deserialize)]
struct Wire<T> {
    id: u32,
    body: T,
}

impl<T: Serialize + for<'de> Deserialize<'de>> Envelope<T> {
    pub fn new(id: u32, body: T) -> Self {
        Envelope { id, body, bytes: Vec::new(), files: Vec::new() }
    }

    pub fn with_bytes(id: u32, body: T, bytes: Vec<Vec<u8>>) -> Self {
        Envelope { id, body, bytes, files: Vec::new() }
    }

    pub fn with_files(id: u32, body: T, files: Vec<web_sys::Blob>) -> Self {
        Envelope { id, body, bytes: Vec::new(), files }
    }

    /// The JS object posted; the attachments' buffers are listed in `transfer` so they move
    /// instead of being copied.
    pub fn to_js(&self) -> (JsValue, Array) {
        let wire = Wire { id: self.id, body: &self.body };
        let json = serde_json::to_string(&wire).unwrap_or_else(|_| "{}".into());
        let obj = Object::new();
        let _ = Reflect::set(&obj, &"json".into(), &json.into());
        let bytes = Array::new();
        let transfer = Array::new();
        for part in &self.bytes {
            let array = Uint8Array::from(part.as_slice());
            transfer.push(&array.buffer());
            bytes.push(&array);
        }
        let _ = Reflect::set(&obj, &"bytes".into(), &bytes);
        if !self.files.is_empty() {
            let files: Array = self.files.iter().collect();
            let _ = Reflect::set(&obj, &"files".into(), &files);
        }
        (obj.into(), transfer)
    }

    pub fn from_js(value: &JsValue) -> Result<Self, String> {
        let json = Reflect::get(value, &"json".into())
            .ok()
            .and_then(|j| j.as_string())
            .ok_or("a message without its json part")?;
        let wire: Wire<T> = serde_json::from_str(&json).map_err(|e| format!("a malformed message: {e}"))?;
        let mut bytes = Vec::new();
        if let Ok(list) = Reflect::get(value, &"bytes".into()).and_then(|b| b.dyn_into::<Array>()) {
            for part in list.iter() {
                bytes.push(Uint8Array::new(&part).to_vec());
            }
        }
        let mut files = Vec::new();
        if let Ok(list) = Reflect::get(value, &"files".into()).and_then(|b| b.dyn_into::<Array>()) {
            for part in list.iter() {
                files.push(part.dyn_into::<web_sys::Blob>().map_err(|_| "a file part that is not a Blob")?);
            }
        }
        Ok(Envelope { id: wire.id, body: wire.body, bytes, files })
    }
}

#[cfg(test)]
mod tests {
    use darkroom_pipeline::{ImageRef, Recipe, Sampler};

    use super::*;

    /// A generation request crosses `postMessage` as JSON: the recipe arrives whole.
    #[test]
    fn a_generate_request_round_trips_with_its_recipe() {
        let recipe = Recipe {
            model: "sd-turbo".into(),
            prompt: "a lighthouse <lora:ink:0.5>".into(),
            negative_prompt: "blurry".into(),
            seed: Some(42),
            steps: 3,
            sampler: Sampler::EulerAncestral,
            width: 592,
            height: 440,
            init: Some(ImageRef::Attachment(0)),
            mask: Some(ImageRef::Attachment(1)),
            strength: Some(0.6),
            ..Recipe::default()
        };
        let model =
            ModelRef { manifest_toml: "id = \"x\"".into(), manifest_file: "x.toml".into(), base: None };
        let request = ToWorker::Generate {
            model,
            recipe,
            preview: None,
            keep: Some("SD Turbo".into()),
            controls: Vec::new(),
            brief: Some(BriefTag { id: "brief-1".into(), iteration: 17.0, palette: vec![[11, 31, 58]] }),
            upscaler: Some(ModelRef {
                manifest_toml: "id = \"up\"".into(),
                manifest_file: "up.toml".into(),
                base: None,
            }),
            no_embeddings: true,
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<ToWorker>(&json).unwrap(), request);
        let result = FromWorker::Result { images: Vec::new(), ms: 1.0, gallery_error: Some("full".into()) };
        assert_eq!(
            serde_json::from_str::<FromWorker>(&serde_json::to_string(&result).unwrap()).unwrap(),
            result
        );
        let busy = FromWorker::Error { kind: ErrorKind::Busy, message: "another job".into() };
        assert_eq!(serde_json::from_str::<FromWorker>(&serde_json::to_string(&busy).unwrap()).unwrap(), busy);
    }

    /// The queue's requests and its view cross as JSON; the time left counts what remains.
    #[test]
    fn queue_messages_round_trip_and_time_left_counts_the_remaining_steps() {
        let model =
            ModelRef { manifest_toml: "id = \"x\"".into(), manifest_file: "x.toml".into(), base: None };
        let recipe = Recipe { prompt: "an owl".into(), seed: Some(3), ..Recipe::default() };
        for op in [
            QueueOp::Watch,
            QueueOp::Add {
                model,
                recipe,
                preview: None,
                keep: "X".into(),
                controls: Vec::new(),
                brief: None,
                upscaler: None,
            },
            QueueOp::Cancel { key: 4 },
            QueueOp::Move { key: 4, up: true },
            QueueOp::ClearFinished,
        ] {
            let request = ToWorker::Queue(op);
            assert_eq!(
                serde_json::from_str::<ToWorker>(&serde_json::to_string(&request).unwrap()).unwrap(),
                request
            );
        }
        let job = |key, state, images_done| JobView {
            key,
            prompt: "p".into(),
            width: 64,
            height: 64,
            steps: 10,
            images: 2,
            images_done,
            state,
            error: None,
        };
        let view = QueueView {
            jobs: vec![
                job(1, JobState::Done, 2),
                job(2, JobState::Running, 1),
                job(3, JobState::Waiting, 0),
                job(4, JobState::Cancelled, 0),
            ],
            paused: false,
            step: 4,
            total: 10,
            ms_per_step: 100.0,
            stored: 3,
        };
        let body = FromWorker::Queue(view.clone());
        assert_eq!(serde_json::from_str::<FromWorker>(&serde_json::to_string(&body).unwrap()).unwrap(), body);
        assert_eq!(view.counts(), (1, 3));
        // Running: 6 steps of this image, none after it; waiting: 2 images of 10 steps.
        assert_eq!(view.ms_left(), Some((6 + 20) as f64 * 100.0));
    }

    /// Every store change the page asks of the worker, and every answer, crosses as JSON.
    /// www/worker.js reports an uncaught error in the JSON it writes by hand: it must read as
    /// the `Crashed` the wasm's panic hook sends.
    #[test]
    fn the_crash_report_written_by_worker_js_reads_as_crashed() {
        let worker_js = include_str!("../../../www/worker.js");
        assert!(worker_js.contains("JSON.stringify({ id: 0, body: { Crashed: { message } } })"));
        let wire: Wire<FromWorker> =
            serde_json::from_str(r#"{"id":0,"body":{"Crashed":{"message":"RuntimeError: unreachable"}}}"#)
                .unwrap();
        assert_eq!(wire.id, 0);
        assert_eq!(wire.body, FromWorker::Crashed { message: "RuntimeError: unreachable".into() });
        let sent = serde_json::to_string(&Wire { id: 0, body: FromWorker::Crashed { message: "m".into() } })
            .unwrap();
        assert_eq!(sent, r#"{"id":0,"body":{"Crashed":{"message":"m"}}}"#);
    }

    #[test]
    fn store_requests_and_replies_round_trip() {
        let base =
            ModelRef { manifest_toml: "id = \"sd15\"".into(), manifest_file: "sd15.toml".into(), base: None };
        let ops = [
            StoreOp::DeleteModel { id: "sd-turbo".into() },
            StoreOp::ImportCheckpoint { base, id: "my-mix".into() },
            StoreOp::ImportLora { name: "ink".into() },
            StoreOp::DeleteLora { name: "ink".into() },
            StoreOp::ImportEmbedding { name: "easynegative".into() },
            StoreOp::DeleteEmbedding { name: "easynegative".into() },
            StoreOp::DeleteImage { key: 7 },
            StoreOp::Cull {
                key: 7,
                culling: Culling {
                    rating: 4,
                    verdict: darkroom_workflow::brief::Verdict::Reject,
                    reason: "off brief".into(),
                    ..Default::default()
                },
            },
            StoreOp::AssignBrief { keys: vec![1, 2], brief: Some("brief-1".into()), iteration: 5.0 },
            StoreOp::SaveBrief {
                brief: Brief { id: "brief-1".into(), title: "Autumn".into(), ..Default::default() },
            },
            StoreOp::DeleteBrief { id: "brief-1".into() },
            StoreOp::ImportBrief,
        ];
        for op in ops {
            let request = ToWorker::Store(op);
            let json = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<ToWorker>(&json).unwrap(), request);
        }
        let replies = [
            StoreReply::Done,
            StoreReply::Imported { manifest_toml: "id = \"my-mix\"".into() },
            StoreReply::LoraImported { layers: 12 },
            StoreReply::EmbeddingImported { vectors: 8, kind: "SDXL".into() },
            StoreReply::BriefImported { id: "brief-2".into(), images: 3 },
        ];
        for reply in replies {
            let body = FromWorker::Stored(reply);
            let json = serde_json::to_string(&body).unwrap();
            assert_eq!(serde_json::from_str::<FromWorker>(&json).unwrap(), body);
        }
    }
}
