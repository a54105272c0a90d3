//! Importing a single-file SD 1.x or SDXL checkpoint as a model of the store, the same way natively and
//! in the browser: its tensors renamed into the diffusers layout and written chunk by chunk, the
//! base model's configs and tokenizer copied beside them, and a manifest naming its base, so the
//! import lists, loads and deletes like a downloaded model. Where the bytes come from (a file,
//! a `Blob`) and where they go (a folder, IndexedDB) are the caller's traits.

use darkroom_weights::checkpoint::{
    import_checkpoint, imported_manifest, store_file, ByteSource, CheckpointError, Layout, BASE_FILES,
    IMPORTED_MANIFEST,
};
use darkroom_weights::fetch::{ChunkStore, DEFAULT_CHUNK};
use darkroom_weights::Manifest;

use crate::EngineError;

/// The base model's small files (configs, tokenizer), by path in the diffusers layout.
#[allow(async_fn_in_trait)]
pub trait BaseFiles {
    async fn read(&self, path: &str) -> Result<Option<Vec<u8>>, EngineError>;
}

/// A finished import.
pub struct ImportedModel {
    /// Its manifest, for the caller to keep beside the files (as `IMPORTED_MANIFEST`).
    pub manifest_toml: String,
    /// Checkpoint tensors left out (EMA copies, training state).
    pub skipped: usize,
}

fn checkpoint_error(file: &str, e: CheckpointError) -> EngineError {
    match e {
        CheckpointError::Cancelled => EngineError::Cancelled,
        CheckpointError::Store(e) => EngineError::Storage(e.to_string()),
        other => EngineError::Input { field: None, message: format!("{file}: {other}") },
    }
}

/// Whether `base` can take a single-file checkpoint (ask before fetching the base): an SD 1.x
/// base takes SD 1.x checkpoints, an SDXL base SDXL ones (the import checks which the file is).
pub fn check_base(base: &Manifest) -> Result<(), EngineError> {
    if base.family.is_sd1() || base.family.is_sdxl() {
        return Ok(());
    }
    Err(EngineError::input(format!(
        "{} is a model of kind {}; a single-file checkpoint imports onto an SD 1.x base such as sd-1.5 or an SDXL base such as sdxl",
        base.id,
        base.family.as_str()
    )))
}

/// Imports the checkpoint in `source` (shown as `file` in errors and as `display_name` in the
/// model list) as model `id` of `store`, on `base`'s configs read through `base_files`. An SD 1.x
/// base takes an SD 1.x checkpoint, an SDXL base an SDXL one.
#[allow(clippy::too_many_arguments)]
pub async fn import<S: ByteSource, C: ChunkStore>(
    source: &S,
    file: &str,
    store: &C,
    base: &Manifest,
    base_files: &impl BaseFiles,
    id: &str,
    display_name: &str,
    progress: &mut dyn FnMut(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<ImportedModel, EngineError> {
    darkroom_weights::manifest::check_id(id)
        .map_err(|message| EngineError::Input { field: Some("id"), message })?;
    check_base(base)?;
    let text = |bytes: Option<Vec<u8>>, what: &str| {
        bytes
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| EngineError::Model(format!("{} has no {what}: download it first", base.name)))
    };
    let layout = Layout::from_configs(
        &text(base_files.read("unet/config.json").await?, "unet/config.json")?,
        &text(base_files.read("vae/config.json").await?, "vae/config.json")?,
    )
    .map_err(|e| EngineError::Model(e.to_string()))?;
    let imported = import_checkpoint(source, store, id, &layout, DEFAULT_CHUNK, progress, cancelled)
        .await
        .map_err(|e| checkpoint_error(file, e))?;
    let mut files = imported.files;
    for path in BASE_FILES {
        if let Some(bytes) = base_files.read(path).await? {
            store_file(store, &format!("{id}/{path}"), &bytes, DEFAULT_CHUNK)
                .await
                .map_err(|e| EngineError::Storage(e.to_string()))?;
            files.push((path.to_string(), bytes.len() as u64));
        }
    }
    files.sort();
    let manifest_toml = imported_manifest(id, display_name, base, &files);
    Manifest::parse(&manifest_toml, IMPORTED_MANIFEST)
        .map_err(|e| EngineError::Model(format!("the imported model's manifest: {e}")))?;
    Ok(ImportedModel { manifest_toml, skipped: imported.skipped })
}

/// Where imported LoRAs are kept: a folder natively, IndexedDB in the browser.
#[allow(async_fn_in_trait)]
pub trait LoraStore {
    /// Keeps `bytes` as LoRA `name` (replacing one of that name), with its content `identity`.
    async fn put(&self, name: &str, bytes: &[u8], identity: &str) -> Result<(), EngineError>;
}

/// What a LoRA import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedLora {
    /// How many layers it changes.
    pub layers: usize,
    /// Its content hash (what a model merged with it is known by).
    pub identity: String,
}

/// Imports a LoRA file's `bytes` (called `file_name` on the disk) as LoRA `name`: the name is
/// checked, the file read as a LoRA Darkroom can merge (SDXL, LoHa/LoKr and non-LoRA files are
/// refused with the reason) before anything is written, then stored with its content hash.
pub async fn import_lora<S: LoraStore>(
    bytes: Vec<u8>,
    file_name: &str,
    name: &str,
    store: &S,
) -> Result<ImportedLora, EngineError> {
    darkroom_weights::lora::check_name(name)
        .map_err(|message| EngineError::Input { field: Some("name"), message })?;
    let identity = darkroom_pipeline::short_hash(&bytes);
    let layers = darkroom_weights::lora::Lora::from_bytes(&bytes)
        .map_err(|e| EngineError::input(format!("{file_name}: {e}")))?
        .updates
        .len();
    store.put(name, &bytes, &identity).await?;
    Ok(ImportedLora { layers, identity })
}

/// Where imported textual-inversion embeddings are kept: a folder natively, IndexedDB in the
/// browser.
#[allow(async_fn_in_trait)]
pub trait EmbeddingStore {
    /// Keeps `bytes` (the file as it came: `.safetensors` or `.pt`, `extension` says which) as
    /// embedding `name`, replacing one of that name.
    async fn put(&self, name: &str, extension: &str, bytes: &[u8]) -> Result<(), EngineError>;
}

/// What an embedding import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedEmbedding {
    /// Vectors (tokens) it takes in a prompt.
    pub vectors: usize,
    /// "SD 1.x/2.x, 768 wide" or "SDXL".
    pub kind: String,
}

/// Imports a textual-inversion embedding file's `bytes` (called `file_name` on the disk) as
/// embedding `name`, which prompts then write to use it: the name is checked and the file read
/// as an embedding (A1111's .safetensors and .pt, diffusers' learned_embeds) before anything is
/// written.
pub async fn import_embedding<S: EmbeddingStore>(
    bytes: Vec<u8>,
    file_name: &str,
    name: &str,
    store: &S,
) -> Result<ImportedEmbedding, EngineError> {
    darkroom_weights::lora::check_name(name)
        .map_err(|message| EngineError::Input { field: Some("name"), message })?;
    if name.chars().any(char::is_whitespace) {
        return Err(EngineError::Input {
            field: Some("name"),
            message: format!("{name:?}: a prompt calls an embedding by one word; use no spaces"),
        });
    }
    let embedding = darkroom_weights::embedding::Embedding::from_bytes(&bytes)
        .map_err(|e| EngineError::input(format!("{file_name}: {e}")))?;
    let extension = if bytes.starts_with(b"PK\x03\x04") { "pt" } else { "safetensors" };
    store.put(name, extension, &bytes).await?;
    let kind = match &embedding {
        darkroom_weights::embedding::Embedding::Single(v) => format!("SD 1.x/2.x, {} wide", v.width),
        darkroom_weights::embedding::Embedding::Sdxl { .. } => "SDXL".to_string(),
    };
    Ok(ImportedEmbedding { vectors: embedding.vectors(), kind })
}

#[cfg(test)]
mod lora_tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Memory(RefCell<Vec<(String, usize, String)>>);

    impl LoraStore for Memory {
        async fn put(&self, name: &str, bytes: &[u8], identity: &str) -> Result<(), EngineError> {
            self.0.borrow_mut().push((name.to_string(), bytes.len(), identity.to_string()));
            Ok(())
        }
    }

    #[test]
    fn a_lora_is_checked_before_it_is_stored() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/lora/tiny-lora.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let store = Memory::default();
        let done =
            pollster::block_on(import_lora(bytes.clone(), "tiny-lora.safetensors", "ink", &store)).unwrap();
        assert!(done.layers > 0);
        assert_eq!(*store.0.borrow(), [("ink".to_string(), bytes.len(), done.identity.clone())]);
        // Not a LoRA: refused, nothing stored.
        let refused =
            pollster::block_on(import_lora(b"not a safetensors file".to_vec(), "x.safetensors", "x", &store));
        assert!(matches!(refused, Err(EngineError::Input { .. })), "{refused:?}");
        let bad_name = pollster::block_on(import_lora(bytes, "a.safetensors", "../up", &store));
        assert!(matches!(bad_name, Err(EngineError::Input { field: Some("name"), .. })), "{bad_name:?}");
        assert_eq!(store.0.borrow().len(), 1);
    }
}
