//! Every generated image kept on this device: IndexedDB database "darkroom-gallery", one record
//! per image with its PNG (which carries the A1111 `parameters` chunk), the parameters as text,
//! the model, the time, its scores, the brief and iteration it belongs to and its culling; and
//! the briefs themselves. Nothing here is ever sent anywhere.

use std::collections::BTreeMap;

use darkroom_pipeline::scores::Measures;
use darkroom_pipeline::Image;
use darkroom_weights::browser::Connection;
use darkroom_workflow::brief::{Brief, BriefFile, BriefImage, Culling};
use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use idb::{Database, Query, TransactionMode, TransactionResult};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::JsValue;

use crate::protocol::{BriefTag, ImageInfo};

const DB: &str = "darkroom-gallery";
pub(crate) const IMAGES: &str = "images";
/// The queue's jobs (crate::queue), beside the images so a run's images and its record commit
/// together. Version 2 added it.
pub(crate) const QUEUE: &str = "queue";
/// Briefs by id (a JSON record each). Version 3 added it.
pub(crate) const BRIEFS: &str = "briefs";
const VERSION: u32 = 3;

/// One stored image.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// The brief it belongs to, and its iteration there (the run's start time).
    pub brief: Option<String>,
    pub iteration: f64,
    pub culling: Culling,
    /// Scores by name (darkroom_workflow::brief::SCORE_ORDER's names).
    pub scores: BTreeMap<String, f64>,
    /// The perceptual hash (imagehash's phash), for near-duplicates.
    pub phash: Option<u64>,
}

impl Entry {
    /// A generated image as the gallery keeps it, with its model-free scores (the palette's ΔE
    /// when it joins a brief with a palette).
    pub fn made(model: &str, info: &ImageInfo, png: &[u8], brief: Option<&BriefTag>, time: f64) -> Entry {
        let mut entry = Entry {
            key: 0,
            time,
            model: model.to_string(),
            infotext: info.infotext.clone(),
            width: info.width,
            height: info.height,
            png: png.to_vec(),
            brief: brief.map(|b| b.id.clone()),
            iteration: brief.map_or(0.0, |b| b.iteration),
            ..Default::default()
        };
        if let Ok(image) = Image::from_png(png) {
            entry.score(&image, brief.map_or(&[][..], |b| &b.palette));
        }
        entry
    }

    /// Sets the model-free scores.
    pub fn score(&mut self, image: &Image, palette: &[[u8; 3]]) {
        let m = Measures::of(image, palette);
        self.scores.insert("sharpness".into(), m.sharpness);
        self.scores.insert("clipped_highlights".into(), m.clipped_highlights);
        self.scores.insert("clipped_shadows".into(), m.clipped_shadows);
        if let Some(d) = m.palette_delta_e {
            self.scores.insert("palette_delta_e".into(), d);
        }
        self.phash = Some(m.phash);
    }

    /// A draft: TAESD's pixels, the final latents kept in its PNG for finishing.
    pub fn is_draft(&self) -> bool {
        darkroom_pipeline::draft::carries_latents(&self.png)
    }

    /// The prompt: the infotext's lines before "Negative prompt:" / the settings line.
    pub fn prompt(&self) -> &str {
        darkroom_workflow::brief::prompt_of(&self.infotext)
    }

    /// As a brief file holds it.
    pub fn brief_image(&self) -> BriefImage {
        BriefImage {
            file: String::new(),
            iteration: self.iteration,
            time: self.time,
            model: self.model.clone(),
            width: self.width,
            height: self.height,
            infotext: self.infotext.clone(),
            culling: self.culling.clone(),
            scores: self.scores.clone(),
            png: self.png.clone(),
        }
    }
}

pub struct Gallery {
    db: Connection,
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
    write_brief_fields(&obj, entry);
    obj
}

/// The fields culling, scoring and briefs change (version 3's; older records lack them).
fn write_brief_fields(obj: &Object, entry: &Entry) {
    set(obj, "brief", entry.brief.as_deref().map_or(JsValue::NULL, JsValue::from));
    set(obj, "iteration", entry.iteration.into());
    set(obj, "culling", serde_json::to_string(&entry.culling).unwrap_or_default().into());
    set(obj, "scores", serde_json::to_string(&entry.scores).unwrap_or_default().into());
    set(obj, "phash", entry.phash.map_or(JsValue::NULL, |h| format!("{h:016x}").into()));
}

fn entry_from(key: &JsValue, v: &JsValue) -> Entry {
    let json = |name: &str| get(v, name).as_string().unwrap_or_default();
    Entry {
        key: key.as_f64().unwrap_or(0.0) as u32,
        time: get(v, "time").as_f64().unwrap_or(0.0),
        model: get(v, "model").as_string().unwrap_or_default(),
        infotext: get(v, "infotext").as_string().unwrap_or_default(),
        width: get(v, "width").as_f64().unwrap_or(0.0) as usize,
        height: get(v, "height").as_f64().unwrap_or(0.0) as usize,
        png: Uint8Array::new(&get(v, "png")).to_vec(),
        brief: get(v, "brief").as_string(),
        iteration: get(v, "iteration").as_f64().unwrap_or(0.0),
        culling: serde_json::from_str(&json("culling")).unwrap_or_default(),
        scores: serde_json::from_str(&json("scores")).unwrap_or_default(),
        phash: get(v, "phash").as_string().and_then(|h| u64::from_str_radix(&h, 16).ok()),
    }
}

pub(crate) fn set(obj: &Object, key: &str, value: JsValue) {
    let _ = Reflect::set(obj, &key.into(), &value);
}

pub(crate) fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

async fn commit(tx: idb::Transaction) -> Result<(), String> {
    match tx.commit().map_err(error)?.await.map_err(error)? {
        TransactionResult::Committed => Ok(()),
        TransactionResult::Aborted => Err(error("QuotaExceeded: the write was refused")),
    }
}

impl Gallery {
    pub async fn open() -> Result<Gallery, String> {
        let images = ObjectStoreBuilder::new(IMAGES).auto_increment(true);
        let queue = ObjectStoreBuilder::new(QUEUE).auto_increment(true);
        let briefs = ObjectStoreBuilder::new(BRIEFS);
        let db = DatabaseBuilder::new(DB)
            .version(VERSION)
            .add_object_store(images)
            .add_object_store(queue)
            .add_object_store(briefs)
            .build()
            .await
            .map_err(error)?;
        Ok(Gallery { db: Connection::new(db) })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Stores images in one transaction (all or none); returns their keys.
    pub async fn add_all(&self, entries: &[Entry]) -> Result<Vec<u32>, String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        let mut keys = Vec::new();
        for entry in entries {
            let key = store.add(&entry_object(entry), None).map_err(error)?.await.map_err(error)?;
            keys.push(key.as_f64().unwrap_or(0.0) as u32);
        }
        commit(tx).await?;
        Ok(keys)
    }

    /// Every stored image, newest first.
    pub async fn all(&self) -> Result<Vec<Entry>, String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadOnly).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        let keys = store.get_all_keys(None, None).map_err(error)?.await.map_err(error)?;
        let values = store.get_all(None, None).map_err(error)?.await.map_err(error)?;
        let mut out: Vec<Entry> = keys.iter().zip(values.iter()).map(|(k, v)| entry_from(k, v)).collect();
        out.sort_by(|a, b| b.key.cmp(&a.key));
        Ok(out)
    }

    pub async fn delete(&self, key: u32) -> Result<(), String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        store.delete(JsValue::from_f64(key as f64)).map_err(error)?.await.map_err(error)?;
        commit(tx).await
    }

    /// One stored image, if it still is.
    pub async fn get(&self, key: u32) -> Result<Option<Entry>, String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadOnly).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        let k = JsValue::from_f64(key as f64);
        let value = store.get(Query::from(k.clone())).map_err(error)?.await.map_err(error)?;
        Ok(value.map(|v| entry_from(&k, &v)))
    }

    /// Writes every field of `entry` over the record of its key, if that is still stored (a
    /// finished draft replaces its pixels and parameters, keeping its culling and brief).
    pub async fn replace(&self, entry: &Entry) -> Result<bool, String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        let k = JsValue::from_f64(entry.key as f64);
        if store.get(Query::from(k.clone())).map_err(error)?.await.map_err(error)?.is_none() {
            return Ok(false);
        }
        store.put(&entry_object(entry), Some(&k)).map_err(error)?.await.map_err(error)?;
        commit(tx).await?;
        Ok(true)
    }

    /// Changes the images `keys` (those still stored) with `change`, in one transaction.
    pub async fn update(&self, keys: &[u32], change: impl Fn(&mut Entry)) -> Result<(), String> {
        let tx = self.db.transaction(&[IMAGES], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(IMAGES).map_err(error)?;
        for &key in keys {
            let k = JsValue::from_f64(key as f64);
            let Some(value) = store.get(Query::from(k.clone())).map_err(error)?.await.map_err(error)? else {
                continue;
            };
            let mut entry = entry_from(&k, &value);
            change(&mut entry);
            let obj: Object = value.into();
            write_brief_fields(&obj, &entry);
            store.put(&obj, Some(&k)).map_err(error)?.await.map_err(error)?;
        }
        commit(tx).await
    }

    /// Every brief, newest first.
    pub async fn briefs(&self) -> Result<Vec<Brief>, String> {
        let tx = self.db.transaction(&[BRIEFS], TransactionMode::ReadOnly).map_err(error)?;
        let store = tx.object_store(BRIEFS).map_err(error)?;
        let values = store.get_all(None, None).map_err(error)?.await.map_err(error)?;
        let mut out: Vec<Brief> =
            values.iter().filter_map(|v| serde_json::from_str(&v.as_string()?).ok()).collect();
        out.sort_by(|a, b| b.created.total_cmp(&a.created));
        Ok(out)
    }

    pub async fn save_brief(&self, brief: &Brief) -> Result<(), String> {
        let json = serde_json::to_string(brief).map_err(error)?;
        let tx = self.db.transaction(&[BRIEFS], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(BRIEFS).map_err(error)?;
        store
            .put(&JsValue::from(json), Some(&JsValue::from(brief.id.as_str())))
            .map_err(error)?
            .await
            .map_err(error)?;
        commit(tx).await
    }

    /// Deletes a brief; its images stay, out of any brief.
    pub async fn delete_brief(&self, id: &str) -> Result<(), String> {
        let keys: Vec<u32> =
            self.all().await?.into_iter().filter(|e| e.brief.as_deref() == Some(id)).map(|e| e.key).collect();
        self.update(&keys, |e| e.brief = None).await?;
        let tx = self.db.transaction(&[BRIEFS], TransactionMode::ReadWrite).map_err(error)?;
        let store = tx.object_store(BRIEFS).map_err(error)?;
        store.delete(JsValue::from(id)).map_err(error)?.await.map_err(error)?;
        commit(tx).await
    }

    /// A brief file's brief and images into this browser: under its own id, or a new one when
    /// a brief of that id is here already (its images were imported before, or it was made
    /// here). Returns the id.
    pub async fn import_brief(&self, mut file: BriefFile, now: f64) -> Result<String, String> {
        if file.brief.id.is_empty() || self.briefs().await?.iter().any(|b| b.id == file.brief.id) {
            file.brief.id = format!("brief-{now}-imported");
        }
        let entries: Vec<Entry> = file
            .images
            .iter()
            .map(|image| {
                let mut entry = Entry {
                    time: image.time,
                    model: image.model.clone(),
                    infotext: image.infotext.clone(),
                    width: image.width,
                    height: image.height,
                    png: image.png.clone(),
                    brief: Some(file.brief.id.clone()),
                    iteration: image.iteration,
                    culling: image.culling.clone(),
                    scores: image.scores.clone(),
                    ..Default::default()
                };
                if let Ok(decoded) = Image::from_png(&image.png) {
                    entry.phash = Some(darkroom_pipeline::scores::phash(&decoded));
                }
                entry
            })
            .collect();
        // Oldest first, so the gallery's keys keep the brief's order.
        let mut ordered = entries;
        ordered.sort_by(|a, b| a.time.total_cmp(&b.time));
        self.add_all(&ordered).await?;
        self.save_brief(&file.brief).await?;
        Ok(file.brief.id)
    }
}

/// A brief and its images (from the gallery) as a brief file.
pub fn brief_file(brief: &Brief, entries: &[Entry]) -> BriefFile {
    let mut images: Vec<BriefImage> = entries
        .iter()
        .filter(|e| e.brief.as_deref() == Some(brief.id.as_str()))
        .map(Entry::brief_image)
        .collect();
    images.sort_by(|a, b| a.time.total_cmp(&b.time));
    BriefFile { brief: brief.clone(), images }
}

/// Whether an entry matches a search: every word of `query` appears in its prompt or
/// parameters, ignoring case.
pub fn matches(entry: &Entry, query: &str) -> bool {
    let text = entry.infotext.to_lowercase();
    query.split_whitespace().all(|word| text.contains(&word.to_lowercase()))
}
