//! A downloaded model read back from IndexedDB: the pipeline's `ModelFiles` over the download
//! store (weights stream out chunk by chunk into the GPU upload), and the quantized-weights cache
//! in the same database, so a second visit loads without quantizing again.

use std::cell::Cell;

use darkroom_models::QuantCache;
use darkroom_pipeline::model::short_hash;
use darkroom_pipeline::{ModelFiles, PipelineError};
use darkroom_weights::browser::IdbStore;
use darkroom_weights::fetch::{ChunkStore, FetchError};
use darkroom_weights::Manifest;

pub struct IdbModelFiles<'a> {
    pub store: &'a IdbStore,
    pub manifest: &'a Manifest,
    /// Asked before each read: a load the user cancelled stops at its next read.
    pub cancelled: &'a dyn Fn() -> bool,
}

fn store_error(e: FetchError) -> PipelineError {
    PipelineError::Files(e.to_string())
}

impl IdbModelFiles<'_> {
    fn key(&self, path: &str) -> String {
        format!("{}/{path}", self.manifest.id)
    }
}

impl ModelFiles for IdbModelFiles<'_> {
    async fn len(&self, path: &str) -> Result<Option<u64>, PipelineError> {
        let state = self.store.stored(&self.key(path), 1).await.map_err(store_error)?;
        Ok(if state.complete { state.total } else { None })
    }

    async fn read_range(&self, path: &str, start: u64, len: u64) -> Result<Vec<u8>, PipelineError> {
        if (self.cancelled)() {
            return Err(PipelineError::Cancelled);
        }
        self.store.read_range(&self.key(path), start, len).await.map_err(store_error)
    }

    async fn identity(&self, path: &str) -> Result<String, PipelineError> {
        file_identity(self.store, &self.key(path)).await.map_err(store_error)
    }
}

/// What names a stored file (`key`: "<model id>/<path>") in the quantized cache's keys: its
/// content hash (the sha256 sealed with it at download, the first 16 hex digits), so a cached
/// layer is used for those bytes only and can be found again from the file alone. A file
/// stored before files were sealed is named by its model, path and size.
pub async fn file_identity(store: &IdbStore, key: &str) -> Result<String, FetchError> {
    if let Some(record) = store.record(key).await? {
        if record.sha256.len() >= 16 {
            return Ok(record.sha256[..16].to_string());
        }
    }
    let len = store.stored(key, 1).await?.total.unwrap_or(0);
    let (id, path) = key.split_once('/').unwrap_or(("", key));
    Ok(short_hash(format!("{id}|{path}|{len}").as_bytes()))
}

/// Where quantized layers are kept in the `blobs` store.
const QUANTIZED: &str = "quantized/";

/// Deletes the quantized layers no stored file is the source of (their model was deleted, or
/// they were cached under an older naming): run after every model deletion, so none is left
/// behind. Returns how many were deleted.
pub async fn sweep_quantized(store: &IdbStore) -> Result<usize, FetchError> {
    let mut live = std::collections::HashSet::new();
    for (key, stored) in store.files().await? {
        if stored.complete {
            live.insert(file_identity(store, &key).await?);
        }
    }
    let mut deleted = 0;
    for key in store.blob_keys(QUANTIZED).await? {
        // "quantized/<16 hex digits of the source>…": see darkroom_models' Stager keys.
        let source = key[QUANTIZED.len()..].get(..16).unwrap_or("");
        if !live.contains(source) {
            store.delete_blob(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Quantized weights in the `blobs` store, counting what it serves and what it is given.
pub struct IdbQuantCache<'a> {
    pub store: &'a IdbStore,
    pub hits: Cell<usize>,
    pub puts: Cell<usize>,
}

impl<'a> IdbQuantCache<'a> {
    pub fn new(store: &'a IdbStore) -> Self {
        IdbQuantCache { store, hits: Cell::new(0), puts: Cell::new(0) }
    }
}

impl QuantCache for IdbQuantCache<'_> {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let found = self.store.get_blob(&format!("{QUANTIZED}{key}")).await.ok().flatten();
        if found.is_some() {
            self.hits.set(self.hits.get() + 1);
        }
        found
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        // A full store only costs the next visit a re-quantization.
        if self.store.put_blob(&format!("{QUANTIZED}{key}"), &bytes).await.is_ok() {
            self.puts.set(self.puts.get() + 1);
        }
    }
}
