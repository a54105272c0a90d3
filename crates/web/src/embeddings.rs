//! Textual-inversion embeddings imported into this browser: each is a file
//! `embeddings/<name>.safetensors` or `.pt` in the model store (in chunks, like a download),
//! listed in the Models tab and read by the worker for every generation, so a prompt that writes
//! the name gets the vectors. Nothing is uploaded.

use std::sync::Arc;

use darkroom_engine::imports::{import_embedding, EmbeddingStore};
use darkroom_engine::EngineError;
use darkroom_pipeline::text::NamedEmbedding;
use darkroom_weights::browser::IdbStore;
use darkroom_weights::checkpoint::store_file;
use darkroom_weights::embedding::Embedding;
use darkroom_weights::fetch::{ChunkStore, DEFAULT_CHUNK};
use wasm_bindgen_futures::JsFuture;

use crate::loras::StoredFile;

const PREFIX: &str = "embeddings/";
const EXTENSIONS: [&str; 2] = [".safetensors", ".pt"];

/// Every completely stored embedding: (name, store key, bytes).
async fn stored(store: &IdbStore) -> Result<Vec<(String, String, u64)>, String> {
    let files = store.files().await.map_err(|e| e.to_string())?;
    let mut out: Vec<(String, String, u64)> = files
        .into_iter()
        .filter(|(_, s)| s.complete)
        .filter_map(|(key, s)| {
            let rest = key.strip_prefix(PREFIX)?;
            let name = EXTENSIONS.iter().find_map(|ext| rest.strip_suffix(ext))?.to_string();
            Some((name, key.clone(), s.total.unwrap_or(0)))
        })
        .collect();
    out.sort_by_key(|(name, _, _)| name.to_lowercase());
    Ok(out)
}

/// Every stored embedding, by name.
pub async fn list() -> Result<Vec<StoredFile>, String> {
    let store = IdbStore::open().await.map_err(|e| e.to_string())?;
    Ok(stored(&store).await?.into_iter().map(|(name, _, bytes)| StoredFile { name, bytes }).collect())
}

/// Every stored embedding, read (a file that no longer reads is left out, as A1111 skips it).
pub async fn read_all(store: &IdbStore) -> Result<Vec<NamedEmbedding>, String> {
    let mut out = Vec::new();
    for (name, key, total) in stored(store).await? {
        let bytes = store.read_range(&key, 0, total).await.map_err(|e| e.to_string())?;
        if let Ok(embedding) = Embedding::from_bytes(&bytes) {
            out.push(NamedEmbedding { name, embedding: Arc::new(embedding) });
        }
    }
    Ok(out)
}

/// The browser's store as the embedding store: one file per name, whichever format it came in.
struct StoredEmbeddings(IdbStore);

impl EmbeddingStore for StoredEmbeddings {
    async fn put(&self, name: &str, extension: &str, bytes: &[u8]) -> Result<(), EngineError> {
        let storage = |e: darkroom_weights::fetch::FetchError| EngineError::Storage(e.to_string());
        for ext in EXTENSIONS {
            self.0.remove(&format!("{PREFIX}{name}{ext}")).await.map_err(storage)?;
        }
        store_file(&self.0, &format!("{PREFIX}{name}.{extension}"), bytes, DEFAULT_CHUNK)
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))
    }
}

/// Imports `file` (named `file_name` on the disk) as embedding `name` through the engine's
/// import (checked before anything is written); returns its vectors and kind. The worker runs it.
pub async fn import(file: web_sys::Blob, file_name: &str, name: &str) -> Result<(usize, String), String> {
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| format!("{file_name}: {e:?}"))?;
    let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
    drop(buffer);
    let store = StoredEmbeddings(IdbStore::open().await.map_err(|e| e.to_string())?);
    let imported = import_embedding(bytes, file_name, name, &store).await.map_err(|e| e.to_string())?;
    Ok((imported.vectors, imported.kind))
}

pub async fn remove(name: &str) -> Result<(), String> {
    let store = IdbStore::open().await.map_err(|e| e.to_string())?;
    for ext in EXTENSIONS {
        store.remove(&format!("{PREFIX}{name}{ext}")).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
