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
            let store = IdbStore::open().await.map_err(fetch_failure)?;
            store.remove_model(&model).await.map_err(fetch_failure)?;
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
            let cancelled = || state.cancelled.borrow().contains(&id);
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
    }
}
