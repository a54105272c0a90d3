//! CLIP scores and aesthetic scores of gallery images, on the device: the downloaded CLIP model
//! (and aesthetic head, when there is one) loaded once and kept, each image scored against its
//! own prompt's words and the scores written into its gallery record.

use std::collections::HashMap;
use std::rc::Rc;

use darkroom_gpu::DType;
use darkroom_models::aesthetic::AestheticHead;
use darkroom_pipeline::scorer::{check_head, clip_score, prompt_words, ClipScorer};
use darkroom_pipeline::Image;
use darkroom_weights::ModelKind;

use super::{
    fetch_failure, gpu, manifest, now_ms, pipeline_failure, post, read_stored, require_downloaded,
    storage_failure, Failure, State,
};
use crate::gallery::Gallery;
use crate::idb_model::IdbModelFiles;
use crate::protocol::{ErrorKind, FromWorker, ModelRef, Stage};
use darkroom_weights::browser::IdbStore;

/// The scorer the worker keeps between requests.
pub(super) struct Loaded {
    key: String,
    clip: Rc<ClipScorer>,
    head: Option<(String, Rc<AestheticHead>)>,
}

fn progress(id: u32, stage: Stage, step: usize, total: usize, bytes: (u64, u64), rate: f64) {
    let body = FromWorker::Progress { stage, step, total, bytes: bytes.0, bytes_total: bytes.1, rate };
    post(id, body, Vec::new());
}

async fn load(
    state: &State,
    id: u32,
    clip: &ModelRef,
    aesthetic: Option<&ModelRef>,
) -> Result<(Rc<ClipScorer>, Option<Rc<AestheticHead>>), Failure> {
    let clip_manifest = manifest(clip)?;
    if clip_manifest.family != ModelKind::Clip {
        return Err((ErrorKind::Input, format!("{} is not a CLIP model", clip_manifest.name)));
    }
    let gpu = gpu(state).await?;
    let dtype = if gpu.capabilities().shader_f16 { DType::F16 } else { DType::F32 };
    let key = format!("{}|{}|{dtype:?}", clip_manifest.id, clip.base.as_deref().unwrap_or(""));
    let store = IdbStore::open().await.map_err(fetch_failure)?;
    let kept = state.scorer.borrow_mut().take().filter(|l| l.key == key);
    let clip_model = match kept {
        Some(l) => {
            *state.scorer.borrow_mut() =
                Some(Loaded { key: key.clone(), clip: l.clip.clone(), head: l.head.clone() });
            l.clip
        }
        None => {
            require_downloaded(&store, &clip_manifest).await?;
            let cancelled = || state.is_cancelled(id);
            let files = IdbModelFiles { store: &store, manifest: &clip_manifest, cancelled: &cancelled };
            let started = now_ms();
            let mut on_bytes = |_: &str, done: u64, len: u64| {
                let secs = ((now_ms() - started) / 1000.0).max(1e-3);
                progress(id, Stage::Loading, 0, 0, (done, len), done as f64 / secs);
            };
            let scorer =
                ClipScorer::load(&gpu, &files, dtype, &mut on_bytes).await.map_err(pipeline_failure)?;
            let scorer = Rc::new(scorer);
            *state.scorer.borrow_mut() = Some(Loaded { key: key.clone(), clip: scorer.clone(), head: None });
            scorer
        }
    };
    let head = match aesthetic {
        None => None,
        Some(model) => {
            let m = manifest(model)?;
            if m.family != ModelKind::Aesthetic {
                return Err((ErrorKind::Input, format!("{} is not an aesthetic predictor", m.name)));
            }
            let have =
                state.scorer.borrow().as_ref().and_then(|l| l.head.clone()).filter(|(k, _)| *k == m.id);
            match have {
                Some((_, head)) => Some(head),
                None => {
                    let file =
                        m.files.first().ok_or((ErrorKind::Model, format!("{} lists no file", m.name)))?;
                    let Some(bytes) = read_stored(&store, &format!("{}/{}", m.id, file.path)).await? else {
                        return Err((
                            ErrorKind::Model,
                            format!("{} is not downloaded: download it first", m.name),
                        ));
                    };
                    let head = AestheticHead::from_bytes(&bytes)
                        .map_err(|e| (ErrorKind::Model, format!("{}: {e}", m.name)))?;
                    check_head(&head, &clip_model).map_err(pipeline_failure)?;
                    let head = Rc::new(head);
                    if let Some(l) = state.scorer.borrow_mut().as_mut() {
                        l.head = Some((m.id.clone(), head.clone()));
                    }
                    Some(head)
                }
            }
        }
    };
    Ok((clip_model, head))
}

/// Scores the gallery images `keys`; returns how many were scored (images deleted meanwhile are
/// skipped).
pub(super) async fn score_images(
    state: &State,
    id: u32,
    clip: &ModelRef,
    aesthetic: Option<&ModelRef>,
    keys: &[u32],
) -> Result<usize, Failure> {
    let (scorer, head) = load(state, id, clip, aesthetic).await?;
    if !scorer.has_text() && head.is_none() {
        return Err((
            ErrorKind::Input,
            "this CLIP model is the vision tower alone: pick an aesthetic predictor too, or the whole CLIP model for CLIP scores".into(),
        ));
    }
    let gpu = gpu(state).await?;
    let gallery = Gallery::open().await.map_err(storage_failure)?;
    let mut texts: HashMap<String, Vec<f32>> = HashMap::new();
    let mut done = 0;
    for (k, &key) in keys.iter().enumerate() {
        if state.is_cancelled(id) {
            return Err((ErrorKind::Cancelled, "cancelled".into()));
        }
        progress(id, Stage::Scoring, k, keys.len(), (0, 0), 0.0);
        let Some(entry) = gallery.get(key).await.map_err(storage_failure)? else { continue };
        let image = Image::from_png(&entry.png).map_err(pipeline_failure)?;
        let words = prompt_words(entry.prompt());
        let text = match texts.get(&words) {
            Some(t) => Some(t.clone()),
            // The vision tower alone: the aesthetic score only.
            None if !scorer.has_text() => None,
            None => {
                let t = scorer.text_embedding(&gpu, &words).await.map_err(pipeline_failure)?;
                texts.insert(words.clone(), t.clone());
                Some(t)
            }
        };
        let embedding = scorer.image_embedding(&gpu, &image).await.map_err(pipeline_failure)?;
        let clip_value = text.map(|t| clip_score(&embedding, &t) as f64);
        let aesthetic_value = match &head {
            Some(h) => Some(h.score(&embedding).map_err(|e| (ErrorKind::Model, e.to_string()))? as f64),
            None => None,
        };
        gallery
            .update(&[key], |e| {
                if let Some(c) = clip_value {
                    e.scores.insert("clip_score".into(), c);
                }
                if let Some(a) = aesthetic_value {
                    e.scores.insert("aesthetic".into(), a);
                }
            })
            .await
            .map_err(storage_failure)?;
        done += 1;
    }
    progress(id, Stage::Scoring, keys.len(), keys.len(), (0, 0), 0.0);
    Ok(done)
}
