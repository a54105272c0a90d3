//! The page's side of briefs: the gallery's images with the URLs that show them, culling writes
//! (through the worker, the stores' only writer), and files handed to the user.

use darkroom_workflow::brief::Culling;
use leptos::prelude::*;

use crate::gallery::Entry;
use crate::protocol::StoreOp;
use crate::state::AppState;

/// A stored image with the object URL that shows it.
#[derive(Clone, PartialEq)]
pub struct Shown {
    pub entry: Entry,
    pub url: String,
}

/// Every gallery image with its URL while `tab` is the one shown, read again whenever the
/// gallery changes; the old URLs are revoked. On the other tabs the list is empty: the gallery
/// (every image ever kept, each PNG in memory twice, as bytes and as a blob) is held only while
/// someone looks at it, not through a long session of generating.
pub fn gallery_images(state: AppState, tab: crate::state::Tab) -> RwSignal<Vec<Shown>> {
    let items = RwSignal::new(Vec::<Shown>::new());
    let release = move || {
        for old in items.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&old.url);
        }
        items.set(Vec::new());
    };
    Effect::new(move |_| {
        state.gallery_version.track();
        if state.tab.get() != tab {
            if !items.with_untracked(Vec::is_empty) {
                release();
            }
            return;
        }
        leptos::task::spawn_local(async move {
            match async { crate::gallery::Gallery::open().await?.all().await }.await {
                // The tab was left while the gallery was read.
                Ok(_) if state.tab.get_untracked() != tab => release(),
                Ok(entries) => {
                    release();
                    items.set(
                        entries
                            .into_iter()
                            .map(|entry| Shown { url: crate::state::png_url(&entry.png), entry })
                            .collect(),
                    );
                }
                Err(e) => state.error.set(Some(e)),
            }
        });
    });
    items
}

/// Sets an image's culling: shown at once, then written by the worker (on failure the gallery
/// is read again and the error shown).
pub fn cull(state: AppState, items: RwSignal<Vec<Shown>>, key: u32, culling: Culling) {
    items.update(|list| {
        if let Some(s) = list.iter_mut().find(|s| s.entry.key == key) {
            s.entry.culling = culling.clone();
        }
    });
    let Some(worker) = state.worker.get_value() else { return };
    worker.store_then(StoreOp::Cull { key, culling }, Vec::new(), move |outcome| {
        if let Err(e) = outcome {
            state.error.set(Some(format!("The verdict was not saved: {e}")));
            state.gallery_version.update(|v| *v += 1);
        }
    });
}

/// Finishes drafts: each one's kept latents decoded by the full VAE of the model that made it
/// (an entry's `model` is that model's id), one worker request per model, one after another.
/// `status` says how far it got and how it ended; the gallery is read again after each model.
pub fn finish_drafts(state: AppState, entries: Vec<Entry>, status: RwSignal<Option<String>>) {
    let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
    for e in entries.iter().filter(|e| e.is_draft()) {
        match groups.iter_mut().find(|(m, _)| *m == e.model) {
            Some((_, keys)) => keys.push(e.key),
            None => groups.push((e.model.clone(), vec![e.key])),
        }
    }
    if groups.is_empty() {
        status.set(Some("No drafts to finish here.".into()));
        return;
    }
    let mut jobs = Vec::new();
    for (id, keys) in groups {
        match state.model(&id) {
            Some(m) if m.stored.get_untracked().complete => {
                jobs.push((m.model_ref.clone(), m.manifest.name.clone(), keys))
            }
            Some(m) => {
                status.set(Some(format!(
                    "Finishing needs {}: download it under Models first.",
                    m.manifest.name
                )));
                return;
            }
            None => {
                status.set(Some(format!(
                    "Finishing needs the model “{id}”, which this browser does not have."
                )));
                return;
            }
        }
    }
    finish_next(state, jobs, 0, status);
}

fn finish_next(
    state: AppState,
    mut jobs: Vec<(crate::protocol::ModelRef, String, Vec<u32>)>,
    done: usize,
    status: RwSignal<Option<String>>,
) {
    use crate::protocol::{FromWorker, StoreReply, ToWorker};
    let Some(worker) = state.worker.get_value() else { return };
    if jobs.is_empty() {
        status.set(Some(format!(
            "Finished {done} draft{} with the full VAE.",
            if done == 1 { "" } else { "s" }
        )));
        return;
    }
    let (model, name, keys) = jobs.remove(0);
    status.set(Some(format!(
        "Finishing {} draft{} with {name}…",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    )));
    let mut rest = Some(jobs);
    worker.request(ToWorker::Finish { model, keys }, Vec::new(), move |message| match message.body {
        FromWorker::Progress { stage, step, total, .. } if total > 0 => {
            status.set(Some(format!("Finishing with {name}: {} {step}/{total}", stage.label())));
        }
        FromWorker::Progress { stage, .. } => {
            status.set(Some(format!("Finishing with {name}: {}…", stage.label())))
        }
        FromWorker::Stored(StoreReply::Finished { images }) => {
            state.gallery_version.update(|v| *v += 1);
            finish_next(state, rest.take().unwrap_or_default(), done + images, status);
        }
        FromWorker::Error { kind, message } => {
            state.gallery_version.update(|v| *v += 1);
            status.set(Some(kind.side_job("Finishing", "finish", &message)));
        }
        _ => {}
    });
}

/// Scores images on the device with the downloaded CLIP model (and the aesthetic predictor,
/// when it is downloaded too); `status` follows it; the gallery is read again at the end.
pub fn score_images(state: AppState, keys: Vec<u32>, status: RwSignal<Option<String>>) {
    use crate::protocol::{FromWorker, StoreReply, ToWorker};
    use darkroom_weights::ModelKind;
    // The whole CLIP model (CLIP scores and the aesthetic's embedding) before the vision tower
    // alone (the aesthetic only).
    let clips = state.downloaded(ModelKind::Clip);
    let whole = |m: &&crate::state::ModelEntry| m.manifest.files.iter().all(|f| f.tensors.is_empty());
    let Some(clip) = clips.iter().find(whole).or(clips.first()).cloned() else {
        status
            .set(Some("Scoring needs a CLIP model: download “CLIP ViT-L/14 (scores)” under Models.".into()));
        return;
    };
    let aesthetic = state.downloaded(ModelKind::Aesthetic).first().map(|m| m.model_ref.clone());
    if keys.is_empty() {
        status.set(Some("No images to score.".into()));
        return;
    }
    let Some(worker) = state.worker.get_value() else { return };
    let n = keys.len();
    status.set(Some(format!(
        "Scoring {n} image{} with {}…",
        if n == 1 { "" } else { "s" },
        clip.manifest.name
    )));
    let request = ToWorker::Score { clip: clip.model_ref.clone(), aesthetic, keys };
    worker.request(request, Vec::new(), move |message| match message.body {
        FromWorker::Progress { stage, step, total, bytes, bytes_total, .. } => {
            status.set(Some(if total > 0 {
                format!("{} {step}/{total}", stage.label())
            } else if bytes_total > 0 {
                format!("{}: {:.0}%", stage.label(), 100.0 * bytes as f64 / bytes_total as f64)
            } else {
                format!("{}…", stage.label())
            }));
        }
        FromWorker::Stored(StoreReply::Scored { images }) => {
            state.gallery_version.update(|v| *v += 1);
            status.set(Some(format!("Scored {images} image{}.", if images == 1 { "" } else { "s" })));
        }
        FromWorker::Error { kind, message } => {
            state.gallery_version.update(|v| *v += 1);
            status.set(Some(kind.side_job("Scoring", "score", &message)));
        }
        _ => {}
    });
}

/// Hands bytes to the user as a downloaded file.
pub fn download(bytes: &[u8], mime: &str, name: &str) {
    use wasm_bindgen::JsCast;
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes).into());
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    let Some(document) = web_sys::window().and_then(|w| w.document()) else { return };
    if let Some(a) = document.create_element("a").ok().and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    {
        let _ = a.set_attribute("href", &url);
        let _ = a.set_attribute("download", name);
        if let Some(body) = document.body() {
            let _ = body.append_child(&a);
            a.click();
            let _ = body.remove_child(&a);
        }
    }
    // The download has its own reference to the blob by now.
    let revoke = wasm_bindgen::closure::Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    if let Some(w) = web_sys::window() {
        let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000);
    }
}

/// A file name from a title: lower case, words joined by `-`.
pub fn slug(title: &str) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    if words.is_empty() {
        "brief".into()
    } else {
        words.join("-").chars().take(60).collect()
    }
}

/// "★★★☆☆" for a rating, empty when unrated.
pub fn stars(rating: u8) -> String {
    if rating == 0 {
        String::new()
    } else {
        (1..=5).map(|i| if i <= rating { '★' } else { '☆' }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_stars() {
        assert_eq!(slug("Harbour at Dusk — v2!"), "harbour-at-dusk-v2");
        assert_eq!(slug("  "), "brief");
        assert_eq!(stars(3), "★★★☆☆");
        assert_eq!(stars(0), "");
    }
}
