//! Running a generation from the form: checks the settings, sends batches to the worker one
//! after another, follows progress and previews, keeps every finished image in the gallery.

use darkroom_pipeline::Sampler;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::gallery::{Entry, Gallery};
use crate::protocol::{ErrorKind, FromWorker, GenerateParams, ToWorker};
use crate::state::{png_url, AppState, ModelEntry, ResultImage, Run};

/// The largest side we accept: memory on consumer GPUs, and SD 1.x/2.x were trained far below it.
pub const MAX_SIDE: usize = 2048;

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

pub fn random_seed() -> u64 {
    (js_sys::Math::random() * 4_294_967_295.0) as u64
}

/// The settings as a request, or what is wrong with them in words.
fn params(state: AppState, entry: &ModelEntry) -> Result<GenerateParams, String> {
    let s = state.settings;
    let (width, height) = (s.width.get_untracked(), s.height.get_untracked());
    if width == 0 || height == 0 || width % 8 != 0 || height % 8 != 0 {
        return Err(format!(
            "Width and height must be multiples of 8 (got {width}×{height}); pick a preset."
        ));
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "{width}×{height} is larger than {MAX_SIDE} pixels a side; pick a smaller size."
        ));
    }
    let steps = s.steps.get_untracked();
    if !(1..=150).contains(&steps) {
        return Err("Steps must be between 1 and 150.".into());
    }
    let cfg = s.cfg.get_untracked();
    if !(0.0..=30.0).contains(&cfg) {
        return Err("CFG scale must be between 0 and 30.".into());
    }
    let tags = darkroom_pipeline::prompt::extract_loras(&s.prompt.get_untracked()).1;
    let stored = state.loras.get_untracked();
    if let Some(tag) = tags.iter().find(|t| !stored.iter().any(|l| l.name == t.name)) {
        return Err(crate::loras::missing(&tag.name));
    }
    let init = s.init.get_untracked();
    if let Some(img) = &init {
        if (img.width, img.height) != (width, height) {
            return Err(format!(
                "The init image is {}×{}, the size is {width}×{height}: set the size to the image's, or remove it.",
                img.width, img.height
            ));
        }
    }
    let inpaint = init.is_some() && s.inpaint.get_untracked();
    if entry.manifest.family.contains("inpainting") && !inpaint {
        return Err(format!(
            "{} is an inpainting model: add an image and paint a mask.",
            entry.manifest.name
        ));
    }
    Ok(GenerateParams {
        prompt: s.prompt.get_untracked(),
        negative_prompt: s.negative.get_untracked(),
        seed: s.seed.get_untracked().unwrap_or_else(random_seed),
        steps,
        sampler: s.sampler.get_untracked().id().to_string(),
        cfg_scale: cfg,
        width,
        height,
        batch: s.batch_size.get_untracked().clamp(1, 8),
        strength: if init.is_some() { s.strength.get_untracked().clamp(0.01, 1.0) } else { 1.0 },
        init_image: init.is_some().then_some(0),
        mask: inpaint.then_some(1),
    })
}

/// Shows why a generation cannot run, with a code for programs.
fn refuse(state: AppState, code: &'static str, message: String) {
    state.error.set(Some(message));
    state.error_code.set(Some(code));
}

/// Generate pressed (or Ctrl/Cmd+Enter).
pub fn start(state: AppState) {
    if state.run.get_untracked().is_some() {
        return;
    }
    state.error.set(None);
    state.error_code.set(None);
    let Some(worker) = state.worker.get_value() else {
        let why = state.worker_error.get_untracked().unwrap_or_default();
        refuse(state, "gpu", format!("The generation worker is not running: {why}"));
        return;
    };
    let Some(entry) = state.selected_model() else {
        refuse(state, "model", "Pick a model first: download one under Models and press Use.".into());
        return;
    };
    if !entry.stored.get_untracked().complete {
        refuse(
            state,
            "model",
            format!("{} is not downloaded yet: download it under Models.", entry.manifest.name),
        );
        return;
    }
    let params = match params(state, &entry) {
        Ok(p) => p,
        Err(e) => {
            refuse(state, "invalid", e);
            return;
        }
    };
    let mut bytes = Vec::new();
    if let Some(init) = state.settings.init.get_untracked() {
        bytes.push(init.png);
        if params.mask.is_some() {
            let given = state.settings.mask_png.get_untracked();
            match given.or_else(|| crate::components::image_input::mask_png(params.width, params.height)) {
                Some(mask) => bytes.push(mask),
                None => {
                    refuse(state, "invalid", "Paint a mask over the part of the image to redo first.".into());
                    return;
                }
            }
        }
    }
    let count = state.settings.batch_count.get_untracked().clamp(1, 100);
    state.results.set(Vec::new());
    run_batch(state, worker, entry, params, bytes, 0, count);
}

pub fn cancel(state: AppState) {
    if let (Some(worker), Some(Run { id: Some(id), .. })) =
        (state.worker.get_value(), state.run.get_untracked())
    {
        worker.cancel(id);
        state.run.update(|r| {
            if let Some(r) = r {
                r.label = "Cancelling…".into();
            }
        });
    }
}

fn run_batch(
    state: AppState,
    worker: crate::client::WorkerClient,
    entry: ModelEntry,
    params: GenerateParams,
    bytes: Vec<Vec<u8>>,
    index: usize,
    count: usize,
) {
    let mut this = params.clone();
    this.seed = params.seed + (index * params.batch) as u64;
    let preview = state.models.with_untracked(|list| {
        list.iter()
            .find(|m| m.manifest.family == "taesd" && m.stored.get_untracked().complete)
            .map(|m| m.model_ref.clone())
    });
    let request = ToWorker::Generate { model: entry.model_ref.clone(), params: this, preview };
    let model_name = entry.manifest.id.clone();
    let next = (worker.clone(), entry, params, bytes.clone());
    let id = worker.request(request, bytes, move |message| match message.body {
        FromWorker::Progress { stage, step, total, bytes, bytes_total, .. } => {
            let fraction = if total > 0 {
                step as f64 / total as f64
            } else if bytes_total > 0 {
                bytes as f64 / bytes_total as f64
            } else {
                0.0
            };
            let label = if total > 0 {
                format!("{} {step}/{total}", stage.label())
            } else {
                stage.label().to_string()
            };
            state.run.update(|r| {
                if let Some(r) = r {
                    if r.label != "Cancelling…" {
                        r.label = label;
                    }
                    r.fraction = fraction;
                }
            });
        }
        FromWorker::Preview { width, height, .. } => {
            if let Some(rgba) = message.bytes.first() {
                let url = png_url(&encode_png(width, height, rgba));
                state.run.update(|r| {
                    if let Some(r) = r {
                        if let Some(old) = r.preview.replace(url) {
                            let _ = web_sys::Url::revoke_object_url(&old);
                        }
                    }
                });
            }
        }
        FromWorker::Result { images, .. } => {
            let mut entries = Vec::new();
            for (info, png) in images.iter().zip(message.bytes) {
                state.last_seed.set(Some(info.seed));
                let image = ResultImage {
                    url: png_url(&png),
                    seed: info.seed,
                    infotext: info.infotext.clone(),
                    width: info.width,
                    height: info.height,
                    png,
                };
                entries.push(Entry {
                    key: 0,
                    time: js_sys::Date::now(),
                    model: model_name.clone(),
                    infotext: image.infotext.clone(),
                    width: image.width,
                    height: image.height,
                    png: image.png.clone(),
                });
                state.results.update(|list| list.push(image));
            }
            save(state, entries);
            if index + 1 < count {
                let (worker, entry, params, bytes) = next.clone();
                run_batch(state, worker, entry, params, bytes, index + 1, count);
            } else {
                finish(state);
            }
        }
        FromWorker::Error { kind, message } => {
            if kind != ErrorKind::Cancelled {
                let code = match kind {
                    ErrorKind::Input => "invalid",
                    ErrorKind::Model | ErrorKind::Download => "model",
                    ErrorKind::Other if message.contains("still running") => "busy",
                    _ => "gpu",
                };
                refuse(state, code, explain(kind, &message));
            }
            finish(state);
        }
        _ => {}
    });
    state.run.set(Some(Run {
        id: Some(id),
        label: "Starting…".into(),
        fraction: 0.0,
        preview: None,
        batch: (index + 1, count),
    }));
}

fn finish(state: AppState) {
    if let Some(Run { preview: Some(url), .. }) = state.run.get_untracked() {
        let _ = web_sys::Url::revoke_object_url(&url);
    }
    state.run.set(None);
}

/// An error in words, with what to do.
fn explain(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::Input => format!("The settings do not work for this model: {message}"),
        ErrorKind::Model => format!("The model could not be loaded: {message}. Delete it under Models and download it again if this persists."),
        ErrorKind::Gpu => format!("The GPU failed: {message}. Try a smaller size or batch, or close other GPU-heavy tabs."),
        ErrorKind::Download => format!("Download failed: {message}"),
        ErrorKind::Cancelled => "Cancelled.".into(),
        ErrorKind::Other => message.to_string(),
    }
}

fn save(state: AppState, entries: Vec<Entry>) {
    spawn_local(async move {
        let outcome = async {
            let gallery = Gallery::open().await?;
            for entry in &entries {
                gallery.add(entry).await?;
            }
            Ok::<_, String>(())
        }
        .await;
        if let Err(e) = outcome {
            state.error.set(Some(format!("The image was made but could not be kept in the gallery: {e}")));
        }
        state.gallery_version.update(|v| *v += 1);
    });
}

/// Size presets by aspect ratio around a model's native side (multiples of 8).
pub fn presets(base: usize) -> Vec<(&'static str, usize, usize)> {
    let ratios: [(&str, f64); 7] = [
        ("1:1", 1.0),
        ("4:3", 4.0 / 3.0),
        ("3:4", 0.75),
        ("3:2", 1.5),
        ("2:3", 2.0 / 3.0),
        ("16:9", 16.0 / 9.0),
        ("9:16", 9.0 / 16.0),
    ];
    let area = (base * base) as f64;
    ratios
        .iter()
        .map(|&(name, r)| {
            let w = ((area * r).sqrt() / 8.0).round() as usize * 8;
            let h = ((area / r).sqrt() / 8.0).round() as usize * 8;
            (name, w.max(8), h.max(8))
        })
        .collect()
}

/// All samplers, for the picker.
pub fn samplers() -> Vec<Sampler> {
    Sampler::ALL.to_vec()
}
