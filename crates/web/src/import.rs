//! Importing a local single-file checkpoint into the browser's model store: the file is read in
//! ranges (`Blob.slice`), its tensors renamed into the diffusers layout and written chunk by
//! chunk into IndexedDB beside the downloaded models, with the base model's configs and
//! tokenizer and a manifest of its own, so it lists, loads and deletes like any model.
//! Nothing is uploaded: the bytes go from the disk into this browser's storage.

use darkroom_engine::imports::BaseFiles;
use darkroom_engine::EngineError;
use darkroom_weights::browser::IdbStore;
use darkroom_weights::checkpoint::{store_file, ByteSource, CheckpointError};
use darkroom_weights::fetch::{ChunkStore, DEFAULT_CHUNK};
use darkroom_weights::Manifest;
use wasm_bindgen_futures::JsFuture;

/// Where an imported model keeps its manifest in the store.
pub use darkroom_weights::checkpoint::IMPORTED_MANIFEST as MANIFEST_FILE;

pub(crate) struct BlobSource(pub web_sys::Blob);

impl ByteSource for BlobSource {
    fn len(&self) -> u64 {
        self.0.size() as u64
    }

    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, CheckpointError> {
        let fail = |e: wasm_bindgen::JsValue| CheckpointError::Read(format!("{e:?}"));
        let part = self.0.slice_with_f64_and_f64(start as f64, (start + len) as f64).map_err(fail)?;
        let buffer = JsFuture::from(part.array_buffer()).await.map_err(fail)?;
        Ok(js_sys::Uint8Array::new(&buffer).to_vec())
    }
}

async fn stored_file(store: &IdbStore, key: &str) -> Result<Option<Vec<u8>>, String> {
    let state = store.stored(key, DEFAULT_CHUNK).await.map_err(|e| e.to_string())?;
    match (state.complete, state.total) {
        (true, Some(total)) => store.read_range(key, 0, total).await.map(Some).map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// The manifests (text, store key) of every model imported into this browser.
pub async fn imported_manifests() -> Vec<(String, String)> {
    let Ok(store) = IdbStore::open().await else { return Vec::new() };
    let Ok(files) = store.files().await else { return Vec::new() };
    let mut out = Vec::new();
    for (key, state) in files {
        if state.complete && key.ends_with(&format!("/{MANIFEST_FILE}")) {
            if let Ok(Some(bytes)) = stored_file(&store, &key).await {
                out.push((String::from_utf8_lossy(&bytes).into_owned(), key));
            }
        }
    }
    out.sort();
    out
}

/// A downloaded base model's files in the browser's store.
struct StoredBase<'a> {
    store: &'a IdbStore,
    id: &'a str,
}

impl BaseFiles for StoredBase<'_> {
    async fn read(&self, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        stored_file(self.store, &format!("{}/{path}", self.id)).await.map_err(EngineError::Storage)
    }
}

/// Imports `file` (named `name` on the disk) as model `id` on `base`'s configs; returns the new
/// model's manifest text. The worker runs it (it is the stores' only writer).
pub async fn import(
    file: web_sys::Blob,
    name: &str,
    base: &Manifest,
    id: &str,
    progress: &mut dyn FnMut(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<String, String> {
    let store = IdbStore::open().await.map_err(|e| e.to_string())?;
    let display = name.strip_suffix(".safetensors").unwrap_or(&name).to_string();
    let base_files = StoredBase { store: &store, id: &base.id };
    let imported = darkroom_engine::imports::import(
        &BlobSource(file),
        name,
        &store,
        base,
        &base_files,
        id,
        &display,
        progress,
        cancelled,
    )
    .await
    .map_err(|e| e.to_string())?;
    store_file(&store, &format!("{id}/{MANIFEST_FILE}"), imported.manifest_toml.as_bytes(), DEFAULT_CHUNK)
        .await
        .map_err(|e| e.to_string())?;
    Ok(imported.manifest_toml)
}
