//! The worker's generations: a run's request from its recipe and attachments, the ControlNets
//! and the TAESD previewer it needs, the images made and kept in the gallery, and drafts
//! finished by the full VAE.

use std::cell::RefCell;
use std::rc::Rc;

use darkroom_gpu::{DType, Gpu};
use darkroom_models::taesd::{TaesdConfig, TaesdDecoder};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_pipeline::latent_preview::approximate_rgb;
use darkroom_pipeline::{Image, ImageRef, Recipe, Request};
use darkroom_weights::browser::IdbStore;
use wasm_bindgen_futures::spawn_local;

use super::{
    failure, fetch_failure, gpu, loaded, manifest, now_ms, pipeline_failure, post, read_stored,
    storage_failure, upscaling, Failure, Previewer, State,
};
use crate::gallery::{Entry, Gallery};
use crate::idb_model::{IdbModelFiles, IdbQuantCache};
use crate::protocol::{BriefTag, ErrorKind, FromWorker, ImageInfo, ModelRef, Stage};

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
        let map = match unit.pre {
            darkroom_pipeline::Preprocessor::Depth => {
                Some(super::depth::depth_map(state, id, None, &image).await?)
            }
            _ => None,
        };
        out.push(darkroom_pipeline::Control { net, image, map });
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

pub(super) async fn generate(
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
pub(super) async fn make_images(
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
pub(super) async fn finish_drafts(
    state: &State,
    id: u32,
    model: &ModelRef,
    keys: &[u32],
) -> Result<usize, Failure> {
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
pub(super) async fn keep_images(
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
