//! Writes to the browser's stores (models, LoRAs, the gallery), which the page asks for: the
//! worker is their only writer.

use std::rc::Rc;

use darkroom_weights::browser::IdbStore;
use wasm_bindgen::JsCast;

use super::{fetch_failure, manifest, post, storage_failure, Failure, State};
use crate::gallery::Gallery;
use crate::protocol::{ErrorKind, FromWorker, Stage, StoreOp, StoreReply};

/// The file a store change takes.
fn attached_file(files: Vec<web_sys::Blob>, what: &str) -> Result<(web_sys::Blob, String), Failure> {
    let blob =
        files.into_iter().next().ok_or((ErrorKind::Input, format!("the {what} file did not arrive")))?;
    let name =
        blob.dyn_ref::<web_sys::File>().map(|f| f.name()).unwrap_or_else(|| format!("{what}.safetensors"));
    Ok((blob, name))
}

/// A change to the browser's stores: this worker is their only writer.
pub(super) async fn store(
    state: &Rc<State>,
    id: u32,
    op: StoreOp,
    files: Vec<web_sys::Blob>,
) -> Result<StoreReply, Failure> {
    match op {
        StoreOp::DeleteModel { id: model } => {
            // A download of the model, here or in another tab, is cancelled and waited for; a
            // load reading it is waited for.
            state.cancel_download(&model);
            super::locks::cancel_elsewhere(&model);
            let _lock = super::locks::model_lock(&model, true).await;
            // Where the browser has no Web Locks: wait for this worker's download to stop.
            while state.downloads.borrow().contains_key(&model) {
                super::queue_runner::sleep(20).await;
            }
            let store = IdbStore::open().await.map_err(fetch_failure)?;
            store.remove_model(&model).await.map_err(fetch_failure)?;
            // What was quantized from its files goes with them (and anything left by an older
            // naming of the cache).
            crate::idb_model::sweep_quantized(&store).await.map_err(fetch_failure)?;
            // A load after this must not find the model cached under an id whose files are gone.
            state.loaded.borrow_mut().evict_model(&model);
            Ok(StoreReply::Done)
        }
        StoreOp::ImportCheckpoint { base, id: new_id } => {
            let base = manifest(&base)?;
            let (file, name) = attached_file(files, "checkpoint")?;
            let mut progress = |done: u64, total: u64| {
                let body = FromWorker::Progress {
                    stage: Stage::Importing,
                    step: 0,
                    total: 0,
                    bytes: done,
                    bytes_total: total,
                    rate: 0.0,
                };
                post(id, body, Vec::new());
            };
            let cancelled = || state.is_cancelled(id);
            let manifest_toml = crate::import::import(file, &name, &base, &new_id, &mut progress, &cancelled)
                .await
                .map_err(|e| (ErrorKind::Input, e))?;
            Ok(StoreReply::Imported { manifest_toml })
        }
        StoreOp::ImportLora { name } => {
            let (file, file_name) = attached_file(files, "LoRA")?;
            let layers =
                crate::loras::import(file, &file_name, &name).await.map_err(|e| (ErrorKind::Input, e))?;
            Ok(StoreReply::LoraImported { layers })
        }
        StoreOp::DeleteLora { name } => {
            crate::loras::remove(&name).await.map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::ImportEmbedding { name } => {
            let (file, file_name) = attached_file(files, "embedding")?;
            let (vectors, kind) = crate::embeddings::import(file, &file_name, &name)
                .await
                .map_err(|e| (ErrorKind::Input, e))?;
            Ok(StoreReply::EmbeddingImported { vectors, kind })
        }
        StoreOp::DeleteEmbedding { name } => {
            crate::embeddings::remove(&name).await.map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::DeleteImage { key } => {
            Gallery::open().await.map_err(storage_failure)?.delete(key).await.map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::Cull { key, culling } => {
            if culling.rating > 5 {
                return Err((ErrorKind::Input, format!("a rating of {} (0 to 5)", culling.rating)));
            }
            let gallery = Gallery::open().await.map_err(storage_failure)?;
            gallery.update(&[key], |e| e.culling = culling.clone()).await.map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::AssignBrief { keys, brief, iteration } => {
            let gallery = Gallery::open().await.map_err(storage_failure)?;
            // Joining a brief with a palette scores the palette's ΔE too.
            let palette = match &brief {
                Some(id) => gallery
                    .briefs()
                    .await
                    .map_err(storage_failure)?
                    .into_iter()
                    .find(|b| &b.id == id)
                    .ok_or((ErrorKind::Input, format!("no brief {id} in this browser")))?
                    .constraints
                    .palette_rgb(),
                None => Vec::new(),
            };
            gallery
                .update(&keys, |e| {
                    e.brief = brief.clone();
                    e.iteration = iteration;
                    if !palette.is_empty() {
                        if let Ok(image) = darkroom_pipeline::Image::from_png(&e.png) {
                            e.score(&image, &palette);
                        }
                    }
                })
                .await
                .map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::SaveBrief { brief } => {
            if brief.id.trim().is_empty() {
                return Err((ErrorKind::Input, "a brief needs an id".into()));
            }
            Gallery::open()
                .await
                .map_err(storage_failure)?
                .save_brief(&brief)
                .await
                .map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::DeleteBrief { id } => {
            Gallery::open()
                .await
                .map_err(storage_failure)?
                .delete_brief(&id)
                .await
                .map_err(storage_failure)?;
            Ok(StoreReply::Done)
        }
        StoreOp::ImportBrief => {
            let (blob, name) = attached_file(files, "brief")?;
            let buffer = wasm_bindgen_futures::JsFuture::from(blob.array_buffer())
                .await
                .map_err(|_| (ErrorKind::Input, format!("{name} could not be read")))?;
            let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
            let file = darkroom_workflow::brief::from_zip(&bytes)
                .map_err(|e| (ErrorKind::Input, format!("{name}: {e}")))?;
            let images = file.images.len();
            let gallery = Gallery::open().await.map_err(storage_failure)?;
            let id = gallery.import_brief(file, super::now_ms()).await.map_err(storage_failure)?;
            Ok(StoreReply::BriefImported { id, images })
        }
    }
}
