//! The app's shared state, provided as a context: the worker, the models and their download
//! state, the generation settings, the session's results. Everything is a signal or a stored
//! value, so the state is `Copy` and components take what they need.

use darkroom_pipeline::metadata::GenerationParams;
use darkroom_pipeline::Sampler;
use darkroom_weights::Manifest;
use leptos::prelude::*;

use crate::client::WorkerClient;
use crate::protocol::ModelRef;

/// How much of a model this browser holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub bytes: u64,
    pub total: u64,
    pub complete: bool,
    /// A stored file's length differs from the manifest's: delete and download again.
    pub corrupt: bool,
}

/// A download in flight (or its end).
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    /// The worker request's id, for cancel.
    pub id: Option<u32>,
    pub bytes: u64,
    pub total: u64,
    pub rate: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub manifest: Manifest,
    pub model_ref: ModelRef,
    pub stored: RwSignal<Stored>,
    pub download: RwSignal<Option<Download>>,
}

impl ModelEntry {
    /// Whether this model generates images (TAESD only decodes previews).
    pub fn generates(&self) -> bool {
        self.manifest.family != "taesd"
    }

    /// Imported from a local checkpoint (nothing to download).
    pub fn imported(&self) -> bool {
        self.manifest.source.revision == "imported"
    }
}

/// An init image for img2img / inpainting, already at the request's size.
#[derive(Debug, Clone, PartialEq)]
pub struct InitImage {
    pub width: usize,
    pub height: usize,
    pub png: Vec<u8>,
    /// An object URL showing it.
    pub url: String,
}

/// The generate form's fields.
#[derive(Clone, Copy)]
pub struct Settings {
    pub model: RwSignal<String>,
    pub prompt: RwSignal<String>,
    pub negative: RwSignal<String>,
    pub sampler: RwSignal<Sampler>,
    pub steps: RwSignal<usize>,
    pub cfg: RwSignal<f32>,
    /// `None` draws a random seed per run.
    pub seed: RwSignal<Option<u64>>,
    pub width: RwSignal<usize>,
    pub height: RwSignal<usize>,
    pub batch_size: RwSignal<usize>,
    pub batch_count: RwSignal<usize>,
    pub strength: RwSignal<f64>,
    pub init: RwSignal<Option<InitImage>>,
    /// Whether to paint a mask over the init image (inpainting).
    pub inpaint: RwSignal<bool>,
    /// A mask given as an image (by an embedding page) instead of painted: PNG, white repaints.
    pub mask_png: RwSignal<Option<Vec<u8>>>,
}

impl Settings {
    fn new() -> Settings {
        Settings {
            model: RwSignal::new(String::new()),
            prompt: RwSignal::new(String::new()),
            negative: RwSignal::new(String::new()),
            sampler: RwSignal::new(Sampler::Euler),
            steps: RwSignal::new(4),
            cfg: RwSignal::new(7.0),
            seed: RwSignal::new(None),
            width: RwSignal::new(512),
            height: RwSignal::new(512),
            batch_size: RwSignal::new(1),
            batch_count: RwSignal::new(1),
            strength: RwSignal::new(0.75),
            init: RwSignal::new(None),
            inpaint: RwSignal::new(false),
            mask_png: RwSignal::new(None),
        }
    }

    /// A model's defaults (its manifest's), keeping the prompt.
    pub fn apply_defaults(&self, manifest: &Manifest) {
        self.model.set(manifest.id.clone());
        if let Some(d) = &manifest.defaults {
            self.width.set(d.width as usize);
            self.height.set(d.height as usize);
            self.steps.set(d.steps as usize);
            self.cfg.set(d.cfg as f32);
            if let Ok(s) = d.sampler.parse() {
                self.sampler.set(s);
            }
        }
    }

    /// Every field an image's parameters name ("use these settings", a dropped PNG).
    pub fn restore(&self, params: &GenerationParams, models: &[ModelEntry]) {
        self.prompt.set(params.prompt.clone());
        self.negative.set(params.negative_prompt.clone());
        self.steps.set(params.steps as usize);
        if let Ok(s) = params.sampler.parse() {
            self.sampler.set(s);
        }
        self.cfg.set(params.cfg_scale);
        self.seed.set(Some(params.seed));
        self.width.set(params.width as usize);
        self.height.set(params.height as usize);
        if let Some(name) = &params.model {
            if let Some(m) = models.iter().find(|m| &m.manifest.id == name || &m.manifest.name == name) {
                self.model.set(m.manifest.id.clone());
            }
        }
        let strength = params.extra.iter().find(|(k, _)| k == "Denoising strength");
        if let Some(v) = strength.and_then(|(_, v)| v.parse().ok()) {
            self.strength.set(v);
        }
    }
}

/// A finished image of this session.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultImage {
    pub url: String,
    pub seed: u64,
    pub infotext: String,
    pub width: usize,
    pub height: usize,
    pub png: Vec<u8>,
}

/// What a generation in flight shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// The worker request's id, for cancel.
    pub id: Option<u32>,
    pub label: String,
    /// 0..=1
    pub fraction: f64,
    pub preview: Option<String>,
    /// Which batch of the batch count.
    pub batch: (usize, usize),
}

#[derive(Clone, Copy)]
pub struct AppState {
    pub worker: StoredValue<Option<WorkerClient>, LocalStorage>,
    /// Why there is no worker, if there is none.
    pub worker_error: RwSignal<Option<String>>,
    pub models: RwSignal<Vec<ModelEntry>>,
    pub settings: Settings,
    pub run: RwSignal<Option<Run>>,
    pub results: RwSignal<Vec<ResultImage>>,
    /// The last error of a generation, in words and with what to do.
    pub error: RwSignal<Option<String>>,
    /// The same error as a code for programs (the embed API): invalid, model, gpu, busy.
    pub error_code: RwSignal<Option<&'static str>>,
    /// The seed of the last finished image, for "reuse".
    pub last_seed: RwSignal<Option<u64>>,
    /// Bumped whenever the gallery changed, so its view reloads.
    pub gallery_version: RwSignal<u32>,
    /// Storage (used, quota) as the browser estimates it.
    pub storage: RwSignal<Option<(u64, u64)>>,
    /// The LoRAs imported into this browser.
    pub loras: RwSignal<Vec<crate::loras::StoredLora>>,
    pub tab: RwSignal<Tab>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Generate,
    Models,
    Gallery,
    Gpu,
}

impl AppState {
    pub fn new(worker: Result<WorkerClient, String>) -> AppState {
        let (worker, error) = match worker {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
        AppState {
            worker: StoredValue::new_local(worker),
            worker_error: RwSignal::new(error),
            models: RwSignal::new(Vec::new()),
            settings: Settings::new(),
            run: RwSignal::new(None),
            results: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
            error_code: RwSignal::new(None),
            last_seed: RwSignal::new(None),
            gallery_version: RwSignal::new(0),
            storage: RwSignal::new(None),
            loras: RwSignal::new(Vec::new()),
            tab: RwSignal::new(Tab::Generate),
        }
    }

    pub fn model(&self, id: &str) -> Option<ModelEntry> {
        self.models.with(|list| list.iter().find(|m| m.manifest.id == id).cloned())
    }

    pub fn selected_model(&self) -> Option<ModelEntry> {
        self.model(&self.settings.model.get())
    }
}

/// An object URL for PNG bytes, to show in an `<img>` or download.
pub fn png_url(png: &[u8]) -> String {
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(png).into());
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("image/png");
    web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .ok()
        .and_then(|blob| web_sys::Url::create_object_url_with_blob(&blob).ok())
        .unwrap_or_default()
}

/// Bytes as people read them: 1.2 GB, 340 MB, 12 KB.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.0} KB", n / 1e3)
    } else {
        format!("{n:.0} B")
    }
}

/// Seconds as "1 h 05 min", "3 min 20 s", "12 s".
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}
