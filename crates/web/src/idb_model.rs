//! A downloaded model read back from IndexedDB: the pipeline's `ModelFiles` over the download
//! store (weights stream out chunk by chunk into the GPU upload), and the quantized-weights cache
//! in the same database, so a second visit loads without quantizing again.

use std::cell::Cell;

use darkroom_models::QuantCache;
use darkroom_pipeline::model::short_hash;
use darkroom_pipeline::{ModelFiles, PipelineError};
use darkroom_weights::browser::IdbStore;
use darkroom_weights::fetch::ChunkStore;
use darkroom_weights::Manifest;

pub struct IdbModelFiles<'a> {
    pub store: &'a IdbStore,
    pub manifest: &'a Manifest,
}

fn store_error(e: darkroom_weights::fetch::FetchError) -> PipelineError {
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
        self.store.read_range(&self.key(path), start, len).await.map_err(store_error)
    }

    /// The manifest's sha256 where it has one, else the model, path and size.
    async fn identity(&self, path: &str) -> Result<String, PipelineError> {
        let entry = self.manifest.files.iter().find(|f| f.path == path);
        Ok(match entry.and_then(|f| f.sha256.clone()) {
            Some(sha) => sha[..16].to_string(),
            None => {
                let len = self.len(path).await?.unwrap_or(0);
                short_hash(format!("{}|{path}|{len}", self.manifest.id).as_bytes())
            }
        })
    }
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
        let found = self.store.get_blob(&format!("quantized/{key}")).await.ok().flatten();
        if found.is_some() {
            self.hits.set(self.hits.get() + 1);
        }
        found
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        // A full store only costs the next visit a re-quantization.
        if self.store.put_blob(&format!("quantized/{key}"), &bytes).await.is_ok() {
            self.puts.set(self.puts.get() + 1);
        }
    }
}
