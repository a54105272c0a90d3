//! Every generated image kept on this device: IndexedDB database "darkroom-gallery", one record
//! per image with its PNG (which carries the A1111 `parameters` chunk), the parameters as text,
//! the model and the time. Nothing here is ever sent anywhere.

use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use idb::{Database, TransactionMode, TransactionResult};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::JsValue;

const DB: &str = "darkroom-gallery";
pub(crate) const IMAGES: &str = "images";
/// The queue's jobs (crate::queue), beside the images so a run's images and its record commit
/// together. Version 2 added it.
pub(crate) const QUEUE: &str = "queue";
const VERSION: u32 = 2;

/// One stored image.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// IndexedDB's key (auto-increment: newer images have larger keys).
    pub key: u32,
    /// Milliseconds since the epoch.
    pub time: f64,
    pub model: String,
    pub infotext: String,
    pub width: usize,
    pub height: usize,
    pub png: Vec<u8>,
}

impl Entry {
    /// The prompt: the infotext's lines before "Negative prompt:" / the settings line.
    pub fn prompt(&self) -> &str {
        self.infotext.split("\nNegative prompt:").next().unwrap_or("").split("\nSteps:").next().unwrap_or("")
    }
}

pub struct Gallery {
    db: Database,
}

pub(crate) fn error(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    if text.contains("Quota") {
        "the browser's storage for this site is full: delete images or models to make room".into()
    } else {
        format!("the on-device gallery failed: {text}")
    }
}

/// An entry as the record IndexedDB keeps.
pub(crate) fn entry_object(entry: &Entry) -> Object {
    let obj = Object::new();
    set(&obj, "time", entry.time.into());
    set(&obj, "model", entry.model.as_str().into());
    set(&obj, "infotext", entry.infotext.as_str().into());
    set(&obj, "width", (entry.width as f64).into());
    set(&obj, "height", (entry.height as f64).into());
    set(&obj, "png", Uint8Array::from(entry.png.as_slice()).into());
    obj
}

pub(crate) fn set(obj: &Object, key: &str, value: JsValue) {
    let _ = Reflect::set(obj, &key.into(), &value);
}

pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

impl Gallery {
    pub async fn open() -> Result<Gallery, String> {
        let images = ObjectStoreBuilder::new(IMAGES).auto_increment(true);
        let queue = ObjectStoreBuilder::new(QUEUE).auto_increment(true);
        let db = DatabaseBuilder::new(DB)
            .version(VERSION)
            .add_object_store(images)
            .add_object_store(queue)
            .build()
            .await
            .map_err(error)?;
        Ok(Gallery { db })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Stores an image; returns its key.
    pub async fn add(&self, entry: &Entry) -> Result<u32, String> {
        let obj = entry_object(entry);
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        let key = store.add(&obj, None).map_err(error)?.await.map_err(error)?;
        match tx.commit().map_err(error)?.await.map_err(error)? {
            TransactionResult::Committed => Ok(key.as_f64().unwrap_or(0.0) as u32),
            TransactionResult::Aborted => Err(error("QuotaExceeded: the write was refused")),
        }
    }

    /// Every stored image, newest first.
    pub async fn all(&self) -> Result<Vec<Entry>, String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadOnly).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        let keys = store.get_all_keys(None, None).map_err(error)?.await.map_err(error)?;
        let values = store.get_all(None, None).map_err(error)?.await.map_err(error)?;
        let mut out: Vec<Entry> = keys
            .iter()
            .zip(values.iter())
            .map(|(key, v)| Entry {
                key: key.as_f64().unwrap_or(0.0) as u32,
                time: get(v, "time").as_f64().unwrap_or(0.0),
                model: get(v, "model").as_string().unwrap_or_default(),
                infotext: get(v, "infotext").as_string().unwrap_or_default(),
                width: get(v, "width").as_f64().unwrap_or(0.0) as usize,
                height: get(v, "height").as_f64().unwrap_or(0.0) as usize,
                png: Uint8Array::new(&get(v, "png")).to_vec(),
            })
            .collect();
        out.sort_by(|a, b| b.key.cmp(&a.key));
        Ok(out)
    }

    pub async fn delete(&self, key: u32) -> Result<(), String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        store.delete(JsValue::from_f64(key as f64)).map_err(error)?.await.map_err(error)?;
        tx.commit().map_err(error)?.await.map_err(error)?;
        Ok(())
    }
}

/// Whether an entry matches a search: every word of `query` appears in its prompt or
/// parameters, ignoring case.
pub fn matches(entry: &Entry, query: &str) -> bool {
    let text = entry.infotext.to_lowercase();
    query.split_whitespace().all(|word| text.contains(&word.to_lowercase()))
}
