//! Importing a single-file SD 1.x checkpoint as a model of the store, the same way natively and
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

/// Whether `base` can take a single-file SD 1.x checkpoint (ask before fetching the base).
pub fn check_base(base: &Manifest) -> Result<(), EngineError> {
    if base.family.is_sd1() {
        return Ok(());
    }
    Err(EngineError::input(format!(
        "{} is a model of kind {}; a single-file SD 1.x checkpoint imports onto an SD 1.x base such as sd-1.5",
        base.id,
        base.family.as_str()
    )))
}

/// Imports the checkpoint in `source` (shown as `file` in errors and as `display_name` in the
/// model list) as model `id` of `store`, on `base`'s configs read through `base_files`. Only an
/// SD 1.x base takes an SD 1.x checkpoint.
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
