//! The queue's records in IndexedDB ("darkroom-gallery" / "queue", beside the images): each job
//! is its request (model, seeded recipe, preview model, the model's name for the gallery), its
//! input images, its state and how many of its runs are done. Only the worker writes them (see
//! `worker::queue`); a run's images and the record saying the run is done are written in one
//! transaction, so after a reload or a crash no image is made twice and none is lost.

use darkroom_pipeline::Recipe;
use idb::{Query, TransactionMode, TransactionResult};
use js_sys::{Array, Object, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};

use crate::gallery::{entry_object, error, get, set, Entry, Gallery, IMAGES, QUEUE};
use crate::protocol::{BriefTag, JobState, JobView, ModelRef};

/// A queued job as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub model: ModelRef,
    pub recipe: Recipe,
    pub preview: Option<ModelRef>,
    /// The model's name in the gallery.
    pub keep: String,
    /// The ControlNet of each of the recipe's control units.
    #[serde(default)]
    pub controls: Vec<ModelRef>,
    /// The brief its images join.
    #[serde(default)]
    pub brief: Option<BriefTag>,
    /// The upscaler model its hires fix names.
    #[serde(default)]
    pub upscaler: Option<ModelRef>,
    pub state: JobState,
    /// Runs of the recipe's batch count finished (their images are in the gallery).
    pub runs_done: usize,
    pub error: Option<String>,
    /// Its place: lower runs first (moving a job swaps two).
    pub order: f64,
}

impl Job {
    pub fn images(&self) -> usize {
        self.recipe.batch_size.max(1) * self.recipe.batch_count.max(1)
    }

    pub fn view(&self, key: u32) -> JobView {
        JobView {
            key,
            prompt: self.recipe.prompt.clone(),
            width: self.recipe.width,
            height: self.recipe.height,
            steps: self.recipe.steps,
            images: self.images(),
            images_done: self.runs_done * self.recipe.batch_size.max(1),
            state: self.state,
            error: self.error.clone(),
        }
    }
}

/// A stored job with its key and input images.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: u32,
    pub job: Job,
    pub bytes: Vec<Vec<u8>>,
}

fn record(job: &Job, bytes: &[Vec<u8>]) -> Result<JsValue, String> {
    let obj = Object::new();
    set(&obj, "json", serde_json::to_string(job).map_err(|e| e.to_string())?.into());
    let parts: Array = bytes.iter().map(|b| JsValue::from(Uint8Array::from(b.as_slice()))).collect();
    set(&obj, "bytes", parts.into());
    Ok(obj.into())
}

/// Every job, in queue order.
pub async fn list() -> Result<Vec<Stored>, String> {
    let gallery = Gallery::open().await?;
    let tx = gallery.db().transaction(&[QUEUE], TransactionMode::ReadOnly).map_err(error)?;
    let store = tx.object_store(QUEUE).map_err(error)?;
    let keys = store.get_all_keys(None, None).map_err(error)?.await.map_err(error)?;
    let values = store.get_all(None, None).map_err(error)?.await.map_err(error)?;
    let mut out = Vec::new();
    for (key, value) in keys.iter().zip(values.iter()) {
        let Some(json) = get(value, "json").as_string() else { continue };
        let Ok(job) = serde_json::from_str::<Job>(&json) else { continue };
        let bytes = get(value, "bytes")
            .dyn_into::<Array>()
            .map(|a| a.iter().map(|b| Uint8Array::new(&b).to_vec()).collect())
            .unwrap_or_default();
        out.push(Stored { key: key.as_f64().unwrap_or(0.0) as u32, job, bytes });
    }
    out.sort_by(|a, b| a.job.order.total_cmp(&b.job.order).then(a.key.cmp(&b.key)));
    Ok(out)
}

async fn commit(tx: idb::Transaction) -> Result<(), String> {
    match tx.commit().map_err(error)?.await.map_err(error)? {
        TransactionResult::Committed => Ok(()),
        TransactionResult::Aborted => Err(error("QuotaExceeded: the write was refused")),
    }
}

/// Adds a job; returns its key.
pub async fn add(job: &Job, bytes: &[Vec<u8>]) -> Result<u32, String> {
    let gallery = Gallery::open().await?;
    let tx = gallery.db().transaction(&[QUEUE], TransactionMode::ReadWrite).map_err(error)?;
    let store = tx.object_store(QUEUE).map_err(error)?;
    let key = store.add(&record(job, bytes)?, None).map_err(error)?.await.map_err(error)?;
    commit(tx).await?;
    Ok(key.as_f64().unwrap_or(0.0) as u32)
}

/// Rewrites job `key` (its input images kept).
pub async fn update(stored: &Stored) -> Result<(), String> {
    let gallery = Gallery::open().await?;
    let tx = gallery.db().transaction(&[QUEUE], TransactionMode::ReadWrite).map_err(error)?;
    let store = tx.object_store(QUEUE).map_err(error)?;
    let key = JsValue::from_f64(stored.key as f64);
    store.put(&record(&stored.job, &stored.bytes)?, Some(&key)).map_err(error)?.await.map_err(error)?;
    commit(tx).await
}

/// A run's images into the gallery and the job's record saying so, in one transaction.
pub async fn finish_run(stored: &Stored, entries: &[Entry]) -> Result<(), String> {
    let gallery = Gallery::open().await?;
    let tx = gallery.db().transaction(&[IMAGES, QUEUE], TransactionMode::ReadWrite).map_err(error)?;
    let images = tx.object_store(IMAGES).map_err(error)?;
    for entry in entries {
        images.add(&entry_object(entry), None).map_err(error)?.await.map_err(error)?;
    }
    let queue = tx.object_store(QUEUE).map_err(error)?;
    let key = JsValue::from_f64(stored.key as f64);
    queue.put(&record(&stored.job, &stored.bytes)?, Some(&key)).map_err(error)?.await.map_err(error)?;
    commit(tx).await
}

/// Removes jobs by key.
pub async fn remove(keys: &[u32]) -> Result<(), String> {
    let gallery = Gallery::open().await?;
    let tx = gallery.db().transaction(&[QUEUE], TransactionMode::ReadWrite).map_err(error)?;
    let store = tx.object_store(QUEUE).map_err(error)?;
    for key in keys {
        store.delete(Query::from(JsValue::from_f64(*key as f64))).map_err(error)?.await.map_err(error)?;
    }
    commit(tx).await
}
