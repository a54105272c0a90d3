//! The typed messages between the page and the generation worker. Every request carries an id;
//! every response names the request it answers. A message crosses `postMessage` as
//! `{ json, bytes }`: the enum as JSON and its binary parts (images) as byte arrays beside it,
//! referred to by index, so pixels are never spelled out as JSON numbers. Files picked from the
//! disk (a checkpoint, a LoRA) travel as `Blob`s in a third part, `files`, which the browser
//! passes by reference, so a 2 GB checkpoint is not copied into the message.
//!
//! The worker is the only writer of the browser's stores (models, LoRAs, the gallery): the page
//! reads them, and asks the worker for every change (`ToWorker::Store`, and `Generate`'s `keep`).

use darkroom_pipeline::Recipe;
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
    /// app's; the embedded widget keeps nothing).
    Generate { model: ModelRef, recipe: Recipe, preview: Option<ModelRef>, keep: Option<String> },
    /// A change to the browser's stores.
    Store(StoreOp),
    /// Stop the request with this id at its next step or chunk.
    Cancel { target: u32 },
}

/// A change to the browser's stores, made by the worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum StoreOp {
    /// Every stored file of model `id` (downloaded or imported) and its quantized weights.
    DeleteModel { id: String },
    /// The single-file checkpoint (file attachment 0) as model `id` on `base`'s configs and
    /// tokenizer; answered with `StoreReply::Imported`.
    ImportCheckpoint { base: ModelRef, id: String },
    /// The LoRA file (file attachment 0) as LoRA `name`, replacing one of that name; answered
    /// with `StoreReply::LoraImported`.
    ImportLora { name: String },
    DeleteLora { name: String },
    /// A gallery image, by its key.
    DeleteImage { key: u32 },
}

/// What a store change did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum StoreReply {
    Done,
    /// The imported model's manifest.
    Imported { manifest_toml: String },
    /// How many layers the LoRA changes.
    LoraImported { layers: usize },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stage {
    Downloading,
    Loading,
    Encoding,
    Denoising,
    Decoding,
    Importing,
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
    Other,
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
    Error {
        kind: ErrorKind,
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
        let request = ToWorker::Generate { model, recipe, preview: None, keep: Some("SD Turbo".into()) };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<ToWorker>(&json).unwrap(), request);
        let result = FromWorker::Result { images: Vec::new(), ms: 1.0, gallery_error: Some("full".into()) };
        assert_eq!(serde_json::from_str::<FromWorker>(&serde_json::to_string(&result).unwrap()).unwrap(), result);
        let busy = FromWorker::Error { kind: ErrorKind::Busy, message: "another job".into() };
        assert_eq!(serde_json::from_str::<FromWorker>(&serde_json::to_string(&busy).unwrap()).unwrap(), busy);
    }

    /// Every store change the page asks of the worker, and every answer, crosses as JSON.
    #[test]
    fn store_requests_and_replies_round_trip() {
        let base =
            ModelRef { manifest_toml: "id = \"sd15\"".into(), manifest_file: "sd15.toml".into(), base: None };
        let ops = [
            StoreOp::DeleteModel { id: "sd-turbo".into() },
            StoreOp::ImportCheckpoint { base, id: "my-mix".into() },
            StoreOp::ImportLora { name: "ink".into() },
            StoreOp::DeleteLora { name: "ink".into() },
            StoreOp::DeleteImage { key: 7 },
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
        ];
        for reply in replies {
            let body = FromWorker::Stored(reply);
            let json = serde_json::to_string(&body).unwrap();
            assert_eq!(serde_json::from_str::<FromWorker>(&json).unwrap(), body);
        }
    }
}
