//! Textual-inversion embeddings on disk: a folder (the cache's embeddings/ by default, or
//! `--embedding-dir`) whose `NAME.safetensors` / `NAME.pt` files prompts call by NAME, as A1111's
//! embeddings folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use darkroom_pipeline::text::NamedEmbedding;
use darkroom_weights::embedding::{name_from_file, Embedding};

/// The embedding files in `dir`, by name, sorted.
pub fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors" || x == "pt"))
        .map(|p| (name_from_file(&p.to_string_lossy()), p))
        .collect();
    out.sort();
    out
}

/// Every readable embedding in `dir`, and a line for each file that is not one (left out, as
/// A1111 skips them).
pub fn load(dir: &Path) -> (Vec<NamedEmbedding>, Vec<String>) {
    let mut loaded = Vec::new();
    let mut skipped = Vec::new();
    for (name, path) in files(dir) {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| Embedding::from_bytes(&b).map_err(|e| e.to_string()))
        {
            Ok(embedding) => loaded.push(NamedEmbedding { name, embedding: Arc::new(embedding) }),
            Err(e) => skipped.push(format!("{}: {e}", path.display())),
        }
    }
    (loaded, skipped)
}
