//! LoRAs imported into this browser: each is a file `loras/<name>.safetensors` in the model store
//! (in chunks, like a download), listed in the Models tab, read by the worker when a prompt's
//! `<lora:name:scale>` tag names it, deletable. Nothing is uploaded: the bytes go from the disk
//! into this browser's storage.

use darkroom_engine::imports::{import_lora, LoraStore};
use darkroom_engine::EngineError;
use darkroom_weights::browser::IdbStore;
use darkroom_weights::checkpoint::store_file;
use darkroom_weights::fetch::{ChunkStore, DEFAULT_CHUNK};
use wasm_bindgen_futures::JsFuture;

const PREFIX: &str = "loras/";
const SUFFIX: &str = ".safetensors";

/// The store key of LoRA `name`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}{SUFFIX}")
}

/// Where LoRA `name`'s content hash is kept (written at import): what a loaded model merged
/// with it is known by, so a different file imported later under the same name is merged anew.
fn id_key(name: &str) -> String {
    format!("lora-id/{name}")
}

/// The content hash of stored LoRA `name` (its stored size for LoRAs imported before hashes
/// were kept), if it is completely stored.
pub async fn identity(store: &IdbStore, name: &str) -> Result<Option<String>, String> {
    let Some(size) = stored_size(store, name).await? else { return Ok(None) };
    let hash = store.get_blob(&id_key(name)).await.map_err(|e| e.to_string())?;
    Ok(Some(match hash {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => format!("{size} bytes"),
    }))
}

/// Why a prompt's LoRA tag cannot be applied when the LoRA is not stored.
pub fn missing(name: &str) -> String {
    format!(
        "The prompt asks for LoRA `{name}`, which is not in this browser: import it under Models → LoRAs, or fix the tag."
    )
}

/// An imported LoRA or embedding: its name and stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub name: String,
    pub bytes: u64,
}

/// Every completely stored LoRA, by name.
pub async fn list() -> Result<Vec<StoredFile>, String> {
    let store = IdbStore::open().await.map_err(|e| e.to_string())?;
    let files = store.files().await.map_err(|e| e.to_string())?;
    let mut out: Vec<StoredFile> = files
        .into_iter()
        .filter(|(_, s)| s.complete)
        .filter_map(|(key, s)| {
            let name = key.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
            Some(StoredFile { name: name.to_string(), bytes: s.total.unwrap_or(0) })
        })
        .collect();
    out.sort_by_key(|l| l.name.to_lowercase());
    Ok(out)
}

/// The stored size of LoRA `name`, if it is completely stored.
async fn stored_size(store: &IdbStore, name: &str) -> Result<Option<u64>, String> {
    let state = store.stored(&key(name), DEFAULT_CHUNK).await.map_err(|e| e.to_string())?;
    Ok(if state.complete { state.total } else { None })
}

/// The bytes of LoRA `name`, if it is completely stored.
pub async fn read(store: &IdbStore, name: &str) -> Result<Option<Vec<u8>>, String> {
    match stored_size(store, name).await? {
        Some(total) => store.read_range(&key(name), 0, total).await.map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// The browser's store as the LoRA store: the file in chunks like a download, its content hash
/// beside it.
struct StoredLoras(IdbStore);

impl LoraStore for StoredLoras {
    async fn put(&self, name: &str, bytes: &[u8], identity: &str) -> Result<(), EngineError> {
        store_file(&self.0, &key(name), bytes, DEFAULT_CHUNK)
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))?;
        self.0
            .put_blob(&id_key(name), identity.as_bytes())
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))
    }
}

/// Imports `file` (named `file_name` on the disk) as LoRA `name` through the engine's import
/// (checked before anything is written); returns how many layers it changes. The worker runs it
/// (it is the stores' only writer).
pub async fn import(file: web_sys::Blob, file_name: &str, name: &str) -> Result<usize, String> {
    // The size and the header first: a file that is too large or not a LoRA is refused before
    // its bytes are read into memory.
    let size = file.size() as u64;
    let source = crate::import::BlobSource(file);
    let prefix = darkroom_weights::checkpoint::read_header_bytes(&source)
        .await
        .map_err(|e| format!("{file_name}: {e}"))?;
    darkroom_weights::lora::Lora::check_header(&prefix, size).map_err(|e| format!("{file_name}: {e}"))?;
    let file = source.0;
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| format!("{file_name}: {e:?}"))?;
    let bytes = js_sys::Uint8Array::new(&buffer).to_vec();
    drop(buffer);
    let store = StoredLoras(IdbStore::open().await.map_err(|e| e.to_string())?);
    let imported = import_lora(bytes, file_name, name, &store).await.map_err(|e| e.to_string())?;
    Ok(imported.layers)
}

pub async fn remove(name: &str) -> Result<(), String> {
    let store = IdbStore::open().await.map_err(|e| e.to_string())?;
    store.remove(&key(name)).await.map_err(|e| e.to_string())?;
    store.delete_blob(&id_key(name)).await.map_err(|e| e.to_string())
}
