//! Running a generation from the form: checks the settings, sends batches to the worker one
//! after another, follows progress and previews, keeps every finished image in the gallery.

use darkroom_pipeline::{ImageRef, ModelInfo, Recipe, Sampler};
use darkroom_weights::ModelKind;
use leptos::prelude::*;

use darkroom_pipeline::grid::Plot;

use crate::protocol::{BriefTag, ErrorKind, FromWorker, ModelRef, QueueOp, ToWorker};
use crate::state::{encode_png, png_url, AppState, ModelEntry, ResultImage, Run};

pub fn random_seed() -> u64 {
    (js_sys::Math::random() * 4_294_967_295.0) as u64
}

/// What a recipe is checked against before the model loads, from its manifest.
pub fn model_info(entry: &ModelEntry) -> ModelInfo {
    ModelInfo::from_manifest(&entry.manifest)
}

/// The form's recipe as this run sends it (seeded, its input images as attachments 0 and 1), or
/// what is wrong with it in words.
fn recipe(state: AppState, entry: &ModelEntry) -> Result<Recipe, String> {
    let s = state.settings;
    let init = s.init.get_untracked();
    let inpaint = init.is_some() && s.inpaint.get_untracked();
    let mut recipe = s.recipe.get_untracked();
    recipe.model = entry.manifest.id.clone();
    recipe.seed = Some(recipe.seed.unwrap_or_else(random_seed));
    recipe.init = init.is_some().then_some(ImageRef::Attachment(0));
    recipe.mask = inpaint.then_some(ImageRef::Attachment(1));
    recipe.strength = init.is_some().then(|| s.strength.get_untracked());
    // Control images travel after the init image and the mask.
    let first = init.is_some() as usize + inpaint as usize;
    let images = s.control_images.get_untracked();
    for (i, unit) in recipe.controls.iter_mut().enumerate() {
        if unit.model.is_empty() {
            return Err(format!("Control unit {}: pick a ControlNet (download one under Models).", i + 1));
        }
        if images.get(i).and_then(|img| img.as_ref()).is_none() {
            return Err(format!("Control unit {}: add an image or draw one.", i + 1));
        }
        unit.image = Some(ImageRef::Attachment(first + i));
    }
    // The page extends the canvas itself (Extend), so a run never carries margins.
    recipe.outpaint = None;
    recipe.validate(&model_info(entry)).map_err(|e| match e.field {
        "width" | "height" => format!("{}: pick a preset.", capitalise(&e.message)),
        "mask" if init.is_some() => "This is an inpainting model: paint a mask over the image.".into(),
        "mask" => format!("{} is an inpainting model: add an image and paint a mask.", entry.manifest.name),
        _ => format!("{}.", capitalise(&e.message)),
    })?;
    if let Some(img) = &init {
        if (img.width, img.height) != (recipe.width, recipe.height) {
            return Err(format!(
                "The init image is {}×{}, the size is {}×{}: set the size to the image's, or remove it.",
                img.width, img.height, recipe.width, recipe.height
            ));
        }
    }
    Ok(recipe)
}

/// The form's recipe under the brand preset picked (when one is), checked again.
fn under_preset(state: AppState, recipe: Recipe, info: &ModelInfo) -> Result<Recipe, String> {
    let Some(name) = state.settings.preset.get_untracked() else { return Ok(recipe) };
    let preset = state.prompt_library.with_untracked(|l| l.preset(&name).cloned()).ok_or_else(|| {
        format!("The brand preset “{name}” is no longer stored: pick another under Preset.")
    })?;
    let recipe = preset.apply(&recipe, 0, true).map_err(|e| format!("{}.", capitalise(&e.to_string())))?;
    recipe.validate(info).map_err(|e| format!("Under the preset: {}.", e.message))?;
    Ok(recipe)
}

/// Each recipe with its styles applied, every LoRA it names checked.
fn styled(state: AppState, recipes: Vec<(Recipe, Vec<String>)>) -> Result<Vec<Recipe>, String> {
    let library = state.prompt_library.with_untracked(|l| l.styles.clone());
    let stored = state.loras.get_untracked();
    let mut out = Vec::with_capacity(recipes.len());
    for (mut recipe, styles) in recipes {
        let (prompt, negative) = library
            .apply(&styles, &recipe.prompt, &recipe.negative_prompt)
            .map_err(|e| format!("{}.", capitalise(&e.to_string())))?;
        recipe.prompt = prompt;
        recipe.negative_prompt = negative;
        if let Some(tag) = recipe.loras().iter().find(|t| !stored.iter().any(|l| l.name == t.name)) {
            return Err(crate::loras::missing(&tag.name));
        }
        out.push(recipe);
    }
    Ok(out)
}

/// The recipes the form's recipe makes: under the brand preset (when one is picked), its prompt
/// expanded as a dynamic prompt template (when Dynamic prompts is on), then the chosen styles
/// applied to each — or, for an X/Y/Z plot, one recipe per cell (one image each).
fn expanded(
    state: AppState,
    recipe: Recipe,
    info: &ModelInfo,
    plot: Option<&Plot>,
) -> Result<Vec<Recipe>, String> {
    let s = state.settings;
    let recipe = under_preset(state, recipe, info)?;
    let mode = s.dynamic.get_untracked();
    let out = state
        .prompt_library
        .with_untracked(|library| darkroom_pipeline::dynamic::expand(&recipe, mode, library.collections()))
        .map_err(|e| format!("The prompt template: {e}."))?;
    if let Some(name) = out.missing.first() {
        return Err(format!(
            "The prompt uses wildcard __{name}__, which has no values here: import {name}.txt under Prompts, or fix the name."
        ));
    }
    let styles = s.styles.get_untracked();
    match plot {
        None => styled(state, out.recipes.into_iter().map(|r| (r, styles.clone())).collect()),
        Some(_) if out.recipes.len() > 1 => {
            Err("A grid varies one prompt: turn Dynamic prompts off (a Prompt S/R axis varies words of it)."
                .into())
        }
        Some(plot) => {
            let base = Recipe { batch_size: 1, batch_count: 1, ..recipe };
            let cells =
                plot.cells(&base, &styles, &mut random_seed).map_err(|e| format!("{}.", capitalise(&e)))?;
            for cell in &cells {
                cell.recipe
                    .validate(info)
                    .map_err(|e| format!("Cell {}: {}.", cell.legend.join(", "), e.message))?;
            }
            styled(state, cells.into_iter().map(|c| (c.recipe, c.styles)).collect())
        }
    }
}

/// What the form's prompt expands to, for the line under it: how many prompts and the first
/// few, or why it does not expand. `None` when Dynamic prompts is off or the prompt is plain.
pub fn expansion_preview(state: AppState) -> Option<Result<(usize, Vec<String>), String>> {
    let s = state.settings;
    let mode = s.dynamic.get();
    if mode == darkroom_pipeline::Dynamic::Off {
        return None;
    }
    let recipe = Recipe { seed: Some(s.seed.get().unwrap_or(0)), ..s.recipe.get() };
    // Read in place: a large wildcard pack is not copied at every keystroke.
    let expanded = state
        .prompt_library
        .with(|library| darkroom_pipeline::dynamic::expand(&recipe, mode, library.collections()));
    let out = match expanded {
        Ok(out) => out,
        Err(e) => return Some(Err(format!("The template does not read: {e}."))),
    };
    if out.recipes.len() == 1 && out.recipes[0].template.is_none() {
        return None;
    }
    if let Some(name) = out.missing.first() {
        return Some(Err(format!("Wildcard __{name}__ has no values: import {name}.txt under Prompts.")));
    }
    let mut prompts: Vec<String> = Vec::new();
    for r in &out.recipes {
        if !prompts.contains(&r.prompt) && prompts.len() < 3 {
            prompts.push(r.prompt.clone());
        }
    }
    Some(Ok((out.recipes.len(), prompts)))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Shows why a generation cannot run, with a code for programs.
fn refuse(state: AppState, code: &'static str, message: String) {
    state.error.set(Some(message));
    state.error_code.set(Some(code));
}

/// What a run sends: the worker, the model, the checked recipe, its attachments and the
/// ControlNet of each control unit.
#[derive(Clone)]
struct Prepared {
    worker: crate::client::WorkerClient,
    entry: ModelEntry,
    /// One recipe, or those a dynamic prompt made of it.
    recipes: Vec<Recipe>,
    bytes: Vec<Vec<u8>>,
    controls: Vec<ModelRef>,
    /// The brief the images join (one iteration for the whole batch count).
    brief: Option<BriefTag>,
    /// An X/Y/Z plot whose cells the recipes are: laid out when the last is done.
    plot: Option<Plot>,
    /// The upscaler model the hires fix names.
    upscaler: Option<ModelRef>,
}

/// The run the form describes (its X/Y/Z plot's cells with `plot`), or `None` with the reason
/// shown.
fn prepared(state: AppState, plot: Option<Plot>) -> Option<Prepared> {
    state.error.set(None);
    state.error_code.set(None);
    let Some(worker) = state.worker.get_value() else {
        let why = state.worker_error.get_untracked().unwrap_or_default();
        refuse(state, "gpu", format!("The generation worker is not running: {why}"));
        return None;
    };
    let Some(entry) = state.selected_model() else {
        refuse(state, "model", "Pick a model first: download one under Models and press Use.".into());
        return None;
    };
    if !entry.stored.get_untracked().complete {
        refuse(
            state,
            "model",
            format!("{} is not downloaded yet: download it under Models.", entry.manifest.name),
        );
        return None;
    }
    let recipe = match recipe(state, &entry) {
        Ok(r) => r,
        Err(e) => {
            refuse(state, "invalid", e);
            return None;
        }
    };
    let recipes = match expanded(state, recipe.clone(), &model_info(&entry), plot.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            refuse(state, "invalid", e);
            return None;
        }
    };
    if recipe.draft {
        if entry.manifest.family.is_sdxl() {
            refuse(
                state,
                "invalid",
                "Drafts are decoded by TAESD, which reads SD 1.x/2.x latents, not SDXL's: turn Drafts off."
                    .into(),
            );
            return None;
        }
        if preview_model(state).is_none() {
            refuse(
                state,
                "model",
                "Drafts are decoded by TAESD: download “TAESD (previews)” under Models, or turn Drafts off."
                    .into(),
            );
            return None;
        }
    }
    let mut bytes = Vec::new();
    if let Some(init) = state.settings.init.get_untracked() {
        bytes.push(init.png);
        if recipe.mask.is_some() {
            let given = state.settings.mask_png.get_untracked();
            match given.or_else(|| crate::components::image_input::mask_png(recipe.width, recipe.height)) {
                Some(mask) => bytes.push(mask),
                None => {
                    refuse(state, "invalid", "Paint a mask over the part of the image to redo first.".into());
                    return None;
                }
            }
        }
    }
    let mut controls = Vec::new();
    for (unit, image) in recipe.controls.iter().zip(state.settings.control_images.get_untracked()) {
        match (state.model(&unit.model), image) {
            (Some(net), Some(image)) if net.stored.get_untracked().complete => {
                controls.push(net.model_ref.clone());
                bytes.push(image.png);
            }
            _ => {
                refuse(
                    state,
                    "model",
                    format!("ControlNet {} is not downloaded: download it under Models.", unit.model),
                );
                return None;
            }
        }
    }
    let upscaler = match &recipe.hires {
        Some(h) if !darkroom_engine::job::runs_hires(h) => match state.model(&h.upscaler) {
            Some(m) if m.stored.get_untracked().complete => Some(m.model_ref.clone()),
            _ => {
                let why = format!(
                    "The hires upscaler {} is not downloaded: download it under Models, or pick Lanczos or Latent.",
                    h.upscaler
                );
                refuse(state, "model", why);
                return None;
            }
        },
        _ => None,
    };
    Some(Prepared { worker, entry, recipes, bytes, controls, brief: state.brief_tag(), plot, upscaler })
}

/// The downloaded TAESD model, for live previews.
fn preview_model(state: AppState) -> Option<crate::protocol::ModelRef> {
    state.downloaded(ModelKind::Taesd).first().map(|m| m.model_ref.clone())
}

/// Generate pressed (or Ctrl/Cmd+Enter).
pub fn start(state: AppState) {
    start_with(state, None);
}

/// "Make grid" pressed: the form's X/Y/Z plot, a cell per run, laid out when all are done.
pub fn start_grid(state: AppState) {
    match crate::plot::plot_of(&state.settings.plot.get_untracked()) {
        Ok(Some(plot)) => start_with(state, Some(plot)),
        Ok(None) => refuse(state, "invalid", "Pick the X axis of the plot and its values first.".into()),
        Err(e) => refuse(state, "invalid", e),
    }
}

fn start_with(state: AppState, plot: Option<Plot>) {
    if state.run.get_untracked().is_some() {
        return;
    }
    let Some(run) = prepared(state, plot) else { return };
    state.clear_results();
    crate::plot::clear(state);
    // Every run of every recipe, one after another.
    let runs: Vec<Recipe> =
        run.recipes.iter().flat_map(|r| (0..r.batch_count.max(1)).map(move |i| r.run(i))).collect();
    run_batch(state, Prepared { recipes: runs, ..run }, 0);
}

/// "Add to queue" pressed (or Ctrl/Cmd+Shift+Enter): the form's recipe, seeded now, becomes a
/// job the worker runs after the ones before it — one job per prompt a dynamic prompt makes.
pub fn enqueue(state: AppState) {
    let Some(Prepared { worker, entry, recipes, bytes, controls, brief, upscaler, .. }) =
        prepared(state, None)
    else {
        return;
    };
    for recipe in recipes {
        let op = QueueOp::Add {
            model: entry.model_ref.clone(),
            recipe,
            preview: preview_model(state),
            keep: entry.manifest.id.clone(),
            controls: controls.clone(),
            brief: brief.clone(),
            upscaler: upscaler.clone(),
        };
        worker.request(ToWorker::Queue(op), bytes.clone(), move |message| {
            if let FromWorker::Error { kind, message } = message.body {
                refuse(state, "invalid", explain(kind, &message));
            }
        });
    }
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

/// Run `index` of the runs (each a recipe of one batch), then the next.
fn run_batch(state: AppState, run: Prepared, index: usize) {
    let Prepared { worker, entry, recipes, bytes, controls, brief, plot, upscaler } = run;
    let count = recipes.len();
    let Some(this) = recipes.get(index).cloned() else {
        finish(state);
        return;
    };
    let preview = preview_model(state);
    let model_name = entry.manifest.id.clone();
    // The worker keeps the app's images in the gallery before it answers; the widget's go to
    // the host only.
    let keep = (!state.in_widget).then(|| model_name.clone());
    let request = ToWorker::Generate {
        model: entry.model_ref.clone(),
        recipe: this,
        preview,
        keep,
        controls: controls.clone(),
        brief: brief.clone(),
        upscaler: upscaler.clone(),
        no_embeddings: state.in_widget,
    };
    let next = Prepared {
        worker: worker.clone(),
        entry,
        recipes,
        bytes: bytes.clone(),
        controls,
        brief,
        plot,
        upscaler,
    };
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
        FromWorker::Result { images, gallery_error, .. } => {
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
                state.results.update(|list| list.push(image));
            }
            if let Some(e) = gallery_error {
                state.error.set(Some(format!("The image was made but could not be kept in the gallery: {e}")));
            }
            state.gallery_version.update(|v| *v += 1);
            if index + 1 < count {
                run_batch(state, next.clone(), index + 1);
            } else {
                if let Some(plot) = &next.plot {
                    crate::plot::compose(state, plot);
                }
                finish(state);
            }
        }
        FromWorker::Error { kind, message } => {
            if kind != ErrorKind::Cancelled {
                let code = match kind {
                    ErrorKind::Input => "invalid",
                    ErrorKind::Model | ErrorKind::Download => "model",
                    ErrorKind::Busy => "busy",
                    _ => "gpu",
                };
                let queue_busy = kind == ErrorKind::Busy
                    && state.queue.get_untracked().jobs.iter().any(|j| j.state == crate::protocol::JobState::Running);
                let text = if queue_busy {
                    "The queue is running a job: add this one to the queue (Ctrl+Shift+Enter), or pause the queue and generate when its job ends.".to_string()
                } else {
                    explain(kind, &message)
                };
                refuse(state, code, text);
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
        // A lost device says itself what happens next (running again opens a new one).
        ErrorKind::Gpu if message.contains("device was lost") => format!("The GPU failed: {message}."),
        ErrorKind::Gpu => format!("The GPU failed: {message}. Try a smaller size or batch, or close other GPU-heavy tabs."),
        ErrorKind::Download => format!("Download failed: {message}"),
        ErrorKind::Cancelled => "Cancelled.".into(),
        ErrorKind::Busy => format!("{message}."),
        ErrorKind::Crashed => format!("Something broke: {message}. A new worker was started: try again, and reload the page if it happens again."),
        ErrorKind::Other => message.to_string(),
    }
}

/// Size presets by aspect ratio around a model's native side (multiples of 8).
pub fn presets(base: usize) -> Vec<(&'static str, usize, usize)> {
    darkroom_pipeline::recipe::size_presets(base)
}

/// All samplers, for the picker.
pub fn samplers() -> Vec<Sampler> {
    Sampler::ALL.to_vec()
}
