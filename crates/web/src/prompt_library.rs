//! The prompt library kept in this browser: wildcard files (for dynamic prompts' `__name__`),
//! the styles (A1111's styles.csv) and brand presets, in IndexedDB database "darkroom-prompts",
//! store "files" — key `styles.csv` for the styles' CSV text, `wildcards/<name>` for each
//! wildcard file's text, `presets/<name>` for each preset's JSON.
//! Only the page reads and writes it: the page expands templates and applies styles before a
//! recipe reaches the worker, so the worker never needs them.

use darkroom_pipeline::preset::Preset;
use darkroom_weights::browser::Connection;
use darkroom_workflow::{Styles, Wildcards};
use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use idb::{TransactionMode, TransactionResult};
use wasm_bindgen::JsValue;

const DB: &str = "darkroom-prompts";
const FILES: &str = "files";
const STYLES_KEY: &str = "styles.csv";
const WILDCARD_PREFIX: &str = "wildcards/";
const PRESET_PREFIX: &str = "presets/";

/// A stored wildcard file: a `.txt` file by its collection's name, a `.json` or `.yaml` file by
/// its path (`darkroom_workflow::wildcards::name_of_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WildcardFile {
    pub name: String,
    pub text: String,
}

impl WildcardFile {
    /// Its collections, as the expander reads them (none when a structured file does not read).
    pub fn collections(&self) -> Wildcards {
        let mut out = Wildcards::new();
        let _ = out.insert_file(&self.name, &self.text);
        out
    }
}

/// Everything in the library.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Library {
    pub styles: Styles,
    /// By name.
    pub wildcards: Vec<WildcardFile>,
    /// Brand presets, by name.
    pub presets: Vec<Preset>,
    /// The wildcard files read once, as the expander takes them.
    compiled: Wildcards,
}

impl Library {
    pub fn preset(&self, name: &str) -> Option<&Preset> {
        self.presets.iter().find(|p| p.name == name)
    }

    /// The wildcard files as the expander reads them.
    pub fn collections(&self) -> &Wildcards {
        &self.compiled
    }

    fn compile(&mut self) {
        let mut out = Wildcards::new();
        for file in &self.wildcards {
            // Checked at import: one that no longer reads gives nothing.
            let _ = out.insert_file(&file.name, &file.text);
        }
        self.compiled = out;
    }
}

fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn open() -> Result<Connection, String> {
    DatabaseBuilder::new(DB)
        .version(1)
        .add_object_store(ObjectStoreBuilder::new(FILES))
        .build()
        .await
        .map(Connection::new)
        .map_err(error)
}

async fn commit(tx: idb::Transaction) -> Result<(), String> {
    match tx.await.map_err(error)? {
        TransactionResult::Committed => Ok(()),
        TransactionResult::Aborted => Err("the browser's storage refused the write".into()),
    }
}

/// The stored library. A styles file that no longer reads is reported, not dropped.
pub async fn load() -> Result<Library, String> {
    let db = open().await?;
    let tx = db.transaction(&[FILES], TransactionMode::ReadOnly).map_err(error)?;
    let store = tx.object_store(FILES).map_err(error)?;
    let keys = store.get_all_keys(None, None).map_err(error)?.await.map_err(error)?;
    let values = store.get_all(None, None).map_err(error)?.await.map_err(error)?;
    let mut library = Library::default();
    for (key, value) in keys.iter().zip(values.iter()) {
        let (Some(key), Some(text)) = (key.as_string(), value.as_string()) else { continue };
        if key == STYLES_KEY {
            library.styles = Styles::parse_csv(&text).map_err(|e| format!("the stored styles: {e}"))?;
        } else if let Some(name) = key.strip_prefix(WILDCARD_PREFIX) {
            library.wildcards.push(WildcardFile { name: name.to_string(), text });
        } else if key.starts_with(PRESET_PREFIX) {
            // Written checked; a record that no longer reads is skipped.
            if let Ok(preset) = Preset::parse(&text) {
                library.presets.push(preset);
            }
        }
    }
    library.wildcards.sort_by(|a, b| a.name.cmp(&b.name));
    library.presets.sort_by(|a, b| a.name.cmp(&b.name));
    library.compile();
    Ok(library)
}

/// Writes wildcard files (replacing those of the same names) in one transaction.
pub async fn put_wildcards(files: &[WildcardFile]) -> Result<(), String> {
    let db = open().await?;
    let tx = db.transaction(&[FILES], TransactionMode::ReadWrite).map_err(error)?;
    let store = tx.object_store(FILES).map_err(error)?;
    for file in files {
        let key = JsValue::from(format!("{WILDCARD_PREFIX}{}", file.name));
        store.put(&JsValue::from(file.text.as_str()), Some(&key)).map_err(error)?.await.map_err(error)?;
    }
    commit(tx).await
}

pub async fn delete_wildcard(name: &str) -> Result<(), String> {
    put(format!("{WILDCARD_PREFIX}{name}"), None).await
}

/// Writes the styles, as the styles.csv A1111 writes.
pub async fn save_styles(styles: &Styles) -> Result<(), String> {
    put(STYLES_KEY.to_string(), Some(styles.to_csv())).await
}

async fn put(key: String, value: Option<String>) -> Result<(), String> {
    let db = open().await?;
    let tx = db.transaction(&[FILES], TransactionMode::ReadWrite).map_err(error)?;
    let store = tx.object_store(FILES).map_err(error)?;
    match value {
        Some(text) => {
            store
                .put(&JsValue::from(text), Some(&JsValue::from(key)))
                .map_err(error)?
                .await
                .map_err(error)?;
        }
        None => store.delete(JsValue::from(key)).map_err(error)?.await.map_err(error)?,
    }
    commit(tx).await
}

/// Writes a preset (replacing one of the same name).
pub async fn save_preset(preset: &Preset) -> Result<(), String> {
    put(format!("{PRESET_PREFIX}{}", preset.name), Some(preset.to_json())).await
}

pub async fn delete_preset(name: &str) -> Result<(), String> {
    put(format!("{PRESET_PREFIX}{name}"), None).await
}
