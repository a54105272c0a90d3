//! The app's shared state, provided as a context: the worker, the models and their download
//! state, the generation settings, the session's results. Everything is a signal or a stored
//! value, so the state is `Copy` and components take what they need.

use darkroom_pipeline::metadata::GenerationParams;
use darkroom_pipeline::recipe::IMG2IMG_STRENGTH;
use darkroom_pipeline::{Recipe, Sampler};
use darkroom_weights::Manifest;
use leptos::prelude::*;

use darkroom_workflow::brief::Brief;

use crate::client::WorkerClient;
use crate::protocol::{BriefTag, ModelRef};

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
    /// A stored model's pinned commit and each file's integrity record (size, sha256,
    /// commit), as the store keeps them; `None` until read.
    pub integrity: RwSignal<Option<Integrity>>,
}

/// What the Models tab shows of a stored model's files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Integrity {
    pub commit: Option<String>,
    pub files: Vec<(String, Option<darkroom_weights::fetch::FileRecord>)>,
}

impl ModelEntry {
    /// A manifest's text (named `file` in its errors), served from `base` when given.
    pub fn parse(text: &str, file: &str, base: Option<String>) -> Result<ModelEntry, String> {
        let manifest = Manifest::parse(text, file).map_err(|e| e.to_string())?;
        Ok(ModelEntry {
            model_ref: ModelRef { manifest_toml: text.to_string(), manifest_file: file.to_string(), base },
            manifest,
            stored: RwSignal::new(Default::default()),
            download: RwSignal::new(None),
            integrity: RwSignal::new(None),
        })
    }

    /// Whether this model generates images (TAESD only decodes previews).
    pub fn generates(&self) -> bool {
        self.manifest.family.generates()
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
    /// The file it came from, at its own size (what the upscale action upscales).
    pub original: Option<web_sys::Blob>,
}

/// A control unit's image (picked, dropped or drawn) as PNG.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlImage {
    pub width: usize,
    pub height: usize,
    pub png: Vec<u8>,
}

/// One setting of the form: a view of one field of the form's [`Recipe`], read through a memo
/// (so a view updates only when its own field changes) and written into the recipe.
pub struct Field<T: Clone + PartialEq + Send + Sync + 'static> {
    value: Memo<T>,
    recipe: RwSignal<Recipe>,
    write: fn(&mut Recipe, T),
}

impl<T: Clone + PartialEq + Send + Sync + 'static> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Clone + PartialEq + Send + Sync + 'static> Copy for Field<T> {}

impl<T: Clone + PartialEq + Send + Sync + 'static> Field<T> {
    fn new(recipe: RwSignal<Recipe>, read: fn(&Recipe) -> T, write: fn(&mut Recipe, T)) -> Field<T> {
        Field { value: Memo::new(move |_| recipe.with(read)), recipe, write }
    }

    pub fn get(&self) -> T {
        self.value.get()
    }

    pub fn get_untracked(&self) -> T {
        self.value.get_untracked()
    }

    pub fn set(&self, value: T) {
        let write = self.write;
        self.recipe.update(|r| write(r, value));
    }
}

/// The generate form: one [`Recipe`] (copied, restored from an image, sent to the worker and
/// checked by `Recipe::validate` as a whole), fields that edit it, and the input images.
#[derive(Clone, Copy)]
pub struct Settings {
    pub recipe: RwSignal<Recipe>,
    pub model: Field<String>,
    pub prompt: Field<String>,
    pub negative: Field<String>,
    pub sampler: Field<Sampler>,
    pub steps: Field<usize>,
    pub cfg: Field<f32>,
    /// `None` draws a random seed per run.
    pub seed: Field<Option<u64>>,
    pub width: Field<usize>,
    pub height: Field<usize>,
    pub batch_size: Field<usize>,
    pub batch_count: Field<usize>,
    /// img2img's strength as the slider shows it; it reaches the recipe of a run only with an
    /// init image.
    pub strength: Field<f64>,
    /// Drafts: decoded by TAESD, the final latents kept in each PNG for finishing.
    pub draft: Field<bool>,
    /// The hires fix (A1111's), off when `None`.
    pub hires: Field<Option<darkroom_pipeline::Hires>>,
    pub init: RwSignal<Option<InitImage>>,
    /// Whether to paint a mask over the init image (inpainting).
    pub inpaint: RwSignal<bool>,
    /// A mask given as an image (by an embedding page) instead of painted: PNG, white repaints.
    pub mask_png: RwSignal<Option<Vec<u8>>>,
    /// The image of each of the recipe's control units (the recipe holds their settings).
    pub control_images: RwSignal<Vec<Option<ControlImage>>>,
    /// How the prompt is read: as written, or as a dynamic prompt template (expanded into the
    /// runs' prompts before they reach the worker).
    pub dynamic: RwSignal<darkroom_pipeline::Dynamic>,
    /// The styles (by name, from the prompt library) applied to every run's prompts, in order.
    pub styles: RwSignal<Vec<String>>,
    /// The brand preset (by name, from the prompt library) every run is made under.
    pub preset: RwSignal<Option<String>>,
    /// The X/Y/Z plot's axes (X, Y, Z).
    pub plot: RwSignal<[crate::plot::AxisForm; 3]>,
}

impl Settings {
    fn new() -> Settings {
        let recipe = RwSignal::new(Recipe { steps: 4, sampler: Sampler::Euler, ..Recipe::default() });
        Settings {
            recipe,
            model: Field::new(recipe, |r| r.model.clone(), |r, v| r.model = v),
            prompt: Field::new(recipe, |r| r.prompt.clone(), |r, v| r.prompt = v),
            negative: Field::new(recipe, |r| r.negative_prompt.clone(), |r, v| r.negative_prompt = v),
            sampler: Field::new(recipe, |r| r.sampler, |r, v| r.sampler = v),
            steps: Field::new(recipe, |r| r.steps, |r, v| r.steps = v),
            cfg: Field::new(recipe, |r| r.cfg_scale, |r, v| r.cfg_scale = v),
            seed: Field::new(recipe, |r| r.seed, |r, v| r.seed = v),
            width: Field::new(recipe, |r| r.width, |r, v| r.width = v),
            height: Field::new(recipe, |r| r.height, |r, v| r.height = v),
            batch_size: Field::new(recipe, |r| r.batch_size, |r, v| r.batch_size = v),
            batch_count: Field::new(recipe, |r| r.batch_count, |r, v| r.batch_count = v),
            strength: Field::new(
                recipe,
                |r| r.strength.unwrap_or(IMG2IMG_STRENGTH),
                |r, v| r.strength = Some(v),
            ),
            draft: Field::new(recipe, |r| r.draft, |r, v| r.draft = v),
            hires: Field::new(recipe, |r| r.hires.clone(), |r, v| r.hires = v),
            init: RwSignal::new(None),
            inpaint: RwSignal::new(false),
            mask_png: RwSignal::new(None),
            control_images: RwSignal::new(Vec::new()),
            dynamic: RwSignal::new(darkroom_pipeline::Dynamic::Off),
            styles: RwSignal::new(Vec::new()),
            preset: RwSignal::new(None),
            plot: RwSignal::new(Default::default()),
        }
    }

    /// A model's defaults (its manifest's), keeping the prompt.
    pub fn apply_defaults(&self, manifest: &Manifest) {
        let defaults = Recipe::model_defaults(manifest);
        self.recipe.update(|r| {
            *r = Recipe {
                model: defaults.model,
                width: defaults.width,
                height: defaults.height,
                steps: defaults.steps,
                cfg_scale: defaults.cfg_scale,
                sampler: defaults.sampler,
                ..r.clone()
            }
        });
    }

    /// Every setting an image's parameters name ("use these settings", a dropped PNG); the
    /// model where this browser has one of that id or name.
    pub fn restore(&self, params: &GenerationParams, models: &[ModelEntry]) {
        self.recipe.update(|r| {
            let mut restored = Recipe::from_params(params, r);
            restored.model = params
                .model
                .as_ref()
                .and_then(|name| models.iter().find(|m| &m.manifest.id == name || &m.manifest.name == name))
                .map_or_else(|| r.model.clone(), |m| m.manifest.id.clone());
            restored.strength = restored.strength.or(r.strength);
            // A restored unit names its ControlNet by id or name; the images stay by position.
            for unit in &mut restored.controls {
                let known = models.iter().find(|m| {
                    m.manifest.family.is_controlnet()
                        && (m.manifest.id == unit.model || m.manifest.name == unit.model)
                });
                unit.model = known.map(|m| m.manifest.id.clone()).unwrap_or_default();
            }
            *r = restored;
        });
        let units = self.recipe.with_untracked(|r| r.controls.len());
        self.control_images.update(|images| images.resize(units, None));
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
    pub loras: RwSignal<Vec<crate::loras::StoredFile>>,
    /// Textual-inversion embeddings stored in this browser.
    pub embeddings: RwSignal<Vec<crate::loras::StoredFile>>,
    /// The worker's queue, as it last said.
    pub queue: RwSignal<crate::protocol::QueueView>,
    pub tab: RwSignal<Tab>,
    /// The briefs stored in this browser, newest first.
    pub briefs: RwSignal<Vec<Brief>>,
    /// The brief new images join (its id), kept across reloads.
    pub active_brief: RwSignal<Option<String>>,
    /// The upscaler the upscale actions use (a model id; empty: the first downloaded).
    pub upscaler: RwSignal<String>,
    /// How the last upscale went (or how far the running one is).
    pub upscale_status: RwSignal<Option<String>>,
    /// The wildcard files and styles stored in this browser (see `prompt_library`).
    pub prompt_library: RwSignal<crate::prompt_library::Library>,
    /// The X/Y/Z plot's grid made last.
    pub grid: RwSignal<Option<crate::plot::GridImage>>,
    /// Models the address (`?manifest=`) would add, waiting for the user to confirm them.
    pub pending_models: RwSignal<Vec<ModelEntry>>,
    /// Bumped each time the worker stopped and a new one was started (what followed the old
    /// one, the queue, follows the new one).
    pub worker_restarts: RwSignal<u32>,
    /// The embedded widget: what it makes goes to the host the user inserts it into, never
    /// into a gallery (one the user would not see, or Darkroom's own behind their back).
    pub in_widget: bool,
}

/// Where the active brief's id is kept between visits.
const ACTIVE_BRIEF_KEY: &str = "darkroom-active-brief";

pub(crate) fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.local_storage().ok().flatten())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Generate,
    Models,
    Gallery,
    Briefs,
    Prompts,
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
            queue: RwSignal::new(Default::default()),
            storage: RwSignal::new(None),
            loras: RwSignal::new(Vec::new()),
            embeddings: RwSignal::new(Vec::new()),
            tab: RwSignal::new(Tab::Generate),
            briefs: RwSignal::new(Vec::new()),
            active_brief: RwSignal::new(
                local_storage().and_then(|s| s.get_item(ACTIVE_BRIEF_KEY).ok().flatten()),
            ),
            upscaler: RwSignal::new(String::new()),
            upscale_status: RwSignal::new(None),
            prompt_library: RwSignal::new(Default::default()),
            grid: RwSignal::new(None),
            pending_models: RwSignal::new(Vec::new()),
            worker_restarts: RwSignal::new(0),
            in_widget: false,
        }
    }

    /// Makes brief `id` the one new images join (`None`: none).
    pub fn set_active_brief(&self, id: Option<String>) {
        if let Some(storage) = local_storage() {
            let _ = match &id {
                Some(id) => storage.set_item(ACTIVE_BRIEF_KEY, id),
                None => storage.remove_item(ACTIVE_BRIEF_KEY),
            };
        }
        self.active_brief.set(id);
    }

    /// The active brief, if it is still stored.
    pub fn active(&self) -> Option<Brief> {
        let id = self.active_brief.get()?;
        self.briefs.with(|list| list.iter().find(|b| b.id == id).cloned())
    }

    /// The tag for a run starting now under the active brief.
    pub fn brief_tag(&self) -> Option<BriefTag> {
        let brief = self.active_brief.with_untracked(|id| {
            let id = id.as_ref()?;
            self.briefs.with_untracked(|list| list.iter().find(|b| &b.id == id).cloned())
        })?;
        Some(BriefTag {
            palette: brief.constraints.palette_rgb(),
            id: brief.id,
            iteration: js_sys::Date::now(),
        })
    }

    /// Reads the briefs again from the store (after a change).
    pub fn reload_briefs(&self) {
        let state = *self;
        leptos::task::spawn_local(async move {
            match async { crate::gallery::Gallery::open().await?.briefs().await }.await {
                Ok(list) => state.briefs.set(list),
                Err(e) => state.error.set(Some(e)),
            }
        });
    }

    /// The fully downloaded models of a kind, in the list's order (reactive: a view that asks
    /// updates when a download completes).
    pub fn downloaded(&self, kind: darkroom_weights::ModelKind) -> Vec<ModelEntry> {
        self.models.with(|list| {
            list.iter().filter(|m| m.manifest.family == kind && m.stored.get().complete).cloned().collect()
        })
    }

    pub fn model(&self, id: &str) -> Option<ModelEntry> {
        self.models.with(|list| list.iter().find(|m| m.manifest.id == id).cloned())
    }

    pub fn selected_model(&self) -> Option<ModelEntry> {
        self.model(&self.settings.model.get())
    }

    /// Whether `entry` is a ControlNet for the selected model's family (any ControlNet while
    /// no model is selected).
    pub fn controls_selected(&self, entry: &ModelEntry) -> bool {
        let family = entry.manifest.family;
        family.is_controlnet() && self.selected_model().is_none_or(|m| family.controls(m.manifest.family))
    }
}

/// RGBA pixels as PNG bytes (previews and masks).
pub fn encode_png(width: usize, height: usize, rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    if let Ok(mut writer) = encoder.write_header() {
        let _ = writer.write_image_data(rgba);
    }
    out
}

impl AppState {
    /// Empties the results, revoking their object URLs (each holds its PNG in memory until
    /// revoked: a long session would otherwise keep every image it ever showed).
    pub fn clear_results(self) {
        for old in self.results.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&old.url);
        }
        self.results.set(Vec::new());
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
