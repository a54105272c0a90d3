//! The browser side of the download: IndexedDB as the chunk store (one record per chunk, so a
//! closed tab loses at most the chunk in flight) and `fetch` with Range headers as the source.
//! Works in a window and in a dedicated or shared worker.

use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use std::cell::RefCell;

use idb::{Database, DatabaseEvent, KeyRange, ObjectStoreParams, Query, TransactionMode};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use sha2::{Digest, Sha256};

use crate::fetch::{
    hex, ChunkStore, ContentRange, FetchError, FileRecord, Origin, RangeReply, RangeSource, Seal, Stored,
};

const DB: &str = "darkroom-weights";
const VERSION: u32 = 2;
const CHUNKS: &str = "chunks";
const FILES: &str = "files";
const BLOBS: &str = "blobs";

thread_local! {
    /// The IndexedDB to open instead of this context's own (see [`use_factory`]).
    static FACTORY: RefCell<Option<web_sys::IdbFactory>> = const { RefCell::new(None) };
}

/// Makes every later [`IdbStore::open`] in this context open its database through `factory`:
/// how the embedded widget reaches Darkroom's first-party storage (the `indexedDB` of a Storage
/// Access API handle) instead of the copy partitioned under the embedding site.
pub fn use_factory(factory: web_sys::IdbFactory) {
    FACTORY.with(|f| *f.borrow_mut() = Some(factory));
}

/// Whether [`use_factory`] has redirected this context's stores.
pub fn using_other_factory() -> bool {
    FACTORY.with(|f| f.borrow().is_some())
}

thread_local! {
    static OPEN_CONNECTIONS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// The IndexedDB connections this context holds open through [`Connection`]: a long session
/// must not pile them up (the soak test watches this).
pub fn open_connections() -> i64 {
    OPEN_CONNECTIONS.with(|c| c.get())
}

/// A database connection that is closed when dropped (an unreferenced one otherwise stays open
/// until the garbage collector finds it), counted in [`open_connections`].
pub struct Connection(Database);

impl Connection {
    pub fn new(db: Database) -> Connection {
        OPEN_CONNECTIONS.with(|c| c.set(c.get() + 1));
        Connection(db)
    }
}

impl std::ops::Deref for Connection {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.0
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closes once the transactions under way have finished.
        self.0.close();
        OPEN_CONNECTIONS.with(|c| c.set(c.get() - 1));
    }
}

/// Database "darkroom-weights": `files` (key → {total, chunks, complete}), `chunks`
/// ("key\0index" → bytes) and `blobs` (derived data such as quantized weights, key → bytes).
pub struct IdbStore {
    db: Connection,
}

fn store_error(e: impl std::fmt::Display) -> FetchError {
    let text = e.to_string();
    if text.contains("QuotaExceeded") || text.contains("quota") {
        FetchError::StorageFull(text)
    } else {
        FetchError::Store(text)
    }
}

/// Why a file could not be sealed: the store failed, or what it holds is not the whole file or
/// not the right one (those are removed).
enum SealFailure {
    Store(FetchError),
    NotWhole(String),
    Corrupt(FetchError),
}

impl From<FetchError> for SealFailure {
    fn from(e: FetchError) -> Self {
        SealFailure::Store(e)
    }
}

/// Where model `id`'s pinned commit is kept in the `files` store (deleted with the model).
fn pin_key(id: &str) -> String {
    format!("{id}/.darkroom-pin")
}

/// Commits and waits; an aborted transaction (a full disk or quota aborts at commit) is an error.
async fn commit(tx: idb::Transaction) -> Result<(), FetchError> {
    match tx.commit().map_err(store_error)?.await.map_err(store_error)? {
        idb::TransactionResult::Committed => Ok(()),
        idb::TransactionResult::Aborted => Err(FetchError::StorageFull(
            "the browser refused the write: QuotaExceededError or a full disk".into(),
        )),
    }
}

fn js_error(what: &str, e: JsValue) -> FetchError {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    FetchError::Store(format!("{what}: {text}"))
}

fn chunk_key(key: &str, index: u64) -> JsValue {
    JsValue::from_str(&format!("{key}\u{0}{index:010}"))
}

fn get_number(obj: &JsValue, field: &str) -> Option<f64> {
    Reflect::get(obj, &JsValue::from_str(field)).ok().and_then(|v| v.as_f64())
}

fn record(state: &Stored) -> JsValue {
    let obj = Object::new();
    let total = state.total.map_or(JsValue::NULL, |t| JsValue::from_f64(t as f64));
    let _ = Reflect::set(&obj, &"total".into(), &total);
    let _ = Reflect::set(&obj, &"chunks".into(), &JsValue::from_f64(state.chunks as f64));
    let _ = Reflect::set(&obj, &"complete".into(), &JsValue::from_bool(state.complete));
    obj.into()
}

fn parse_record(value: &JsValue) -> Stored {
    Stored {
        chunks: get_number(value, "chunks").unwrap_or(0.0) as u64,
        total: get_number(value, "total").map(|t| t as u64),
        complete: Reflect::get(value, &"complete".into()).ok().and_then(|v| v.as_bool()).unwrap_or(false),
    }
}

impl IdbStore {
    pub async fn open() -> Result<IdbStore, FetchError> {
        if let Some(factory) = FACTORY.with(|f| f.borrow().clone()) {
            // The builder opens through the context's own factory only; this does its upgrade.
            let mut request = idb::Factory::from(factory).open(DB, Some(VERSION)).map_err(store_error)?;
            request.on_upgrade_needed(|event| {
                if let Ok(db) = event.database() {
                    let names = db.store_names();
                    for name in [CHUNKS, FILES, BLOBS] {
                        if !names.iter().any(|n| n == name) {
                            let _ = db.create_object_store(name, ObjectStoreParams::new());
                        }
                    }
                }
            });
            let db = request.await.map_err(store_error)?;
            return Ok(IdbStore { db: Connection::new(db) });
        }
        let db = DatabaseBuilder::new(DB)
            .version(VERSION)
            .add_object_store(ObjectStoreBuilder::new(CHUNKS))
            .add_object_store(ObjectStoreBuilder::new(FILES))
            .add_object_store(ObjectStoreBuilder::new(BLOBS))
            .build()
            .await
            .map_err(store_error)?;
        Ok(IdbStore { db: Connection::new(db) })
    }

    /// Sets one field of a file's record, keeping the others (the chunk size among them).
    async fn update_record(&self, key: &str, field: &str, value: JsValue) -> Result<(), FetchError> {
        let tx = self.db.transaction(&[FILES], TransactionMode::ReadWrite).map_err(store_error)?;
        let files = tx.object_store(FILES).map_err(store_error)?;
        let existing = files.get(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)?;
        let rec = existing.filter(|v| v.is_object()).unwrap_or_else(|| record(&Stored::default()));
        let _ = Reflect::set(&rec, &JsValue::from_str(field), &value);
        files.put(&rec, Some(&JsValue::from_str(key))).map_err(store_error)?.await.map_err(store_error)?;
        commit(tx).await
    }

    /// Every file key the store knows, with its state.
    pub async fn files(&self) -> Result<Vec<(String, Stored)>, FetchError> {
        let tx = self.db.transaction(&[FILES], TransactionMode::ReadOnly).map_err(store_error)?;
        let files = tx.object_store(FILES).map_err(store_error)?;
        let keys = files.get_all_keys(None, None).map_err(store_error)?.await.map_err(store_error)?;
        let mut out = Vec::new();
        for key in keys {
            let Some(name) = key.as_string() else { continue };
            let value = files.get(key).map_err(store_error)?.await.map_err(store_error)?;
            out.push((name, value.as_ref().map(parse_record).unwrap_or_default()));
        }
        Ok(out)
    }

    /// A file's record as stored: {total, chunks, complete, chunkSize}.
    async fn record_value(&self, key: &str) -> Result<Option<JsValue>, FetchError> {
        let tx = self.db.transaction(&[FILES], TransactionMode::ReadOnly).map_err(store_error)?;
        let files = tx.object_store(FILES).map_err(store_error)?;
        files.get(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)
    }

    /// `len` bytes of a stored file from `start`, read from its chunks.
    pub async fn read_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>, FetchError> {
        let record = self.record_value(key).await?;
        let chunk_size = record
            .as_ref()
            .and_then(|v| get_number(v, "chunkSize"))
            .map(|n| n as u64)
            .filter(|&n| n > 0)
            .ok_or_else(|| FetchError::Store(format!("{key} is not stored")))?;
        let total = record.as_ref().map(parse_record).unwrap_or_default().total.unwrap_or(0);
        let end = (start + len).min(total);
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut pos = start;
        while pos < end {
            let index = pos / chunk_size;
            let chunk = self.read_chunk(key, index, chunk_size).await?;
            let from = (pos - index * chunk_size) as usize;
            let to = ((end - index * chunk_size) as usize).min(chunk.len());
            if from >= to {
                return Err(FetchError::Store(format!("{key}: chunk {index} is shorter than expected")));
            }
            out.extend_from_slice(&chunk[from..to]);
            pos += (to - from) as u64;
        }
        Ok(out)
    }

    /// A derived blob (quantized weights), if stored.
    pub async fn get_blob(&self, key: &str) -> Result<Option<Vec<u8>>, FetchError> {
        let tx = self.db.transaction(&[BLOBS], TransactionMode::ReadOnly).map_err(store_error)?;
        let blobs = tx.object_store(BLOBS).map_err(store_error)?;
        let value = blobs.get(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)?;
        Ok(value.map(|v| Uint8Array::new(&v).to_vec()))
    }

    pub async fn put_blob(&self, key: &str, bytes: &[u8]) -> Result<(), FetchError> {
        let tx = self.db.transaction(&[BLOBS], TransactionMode::ReadWrite).map_err(store_error)?;
        let blobs = tx.object_store(BLOBS).map_err(store_error)?;
        let data = Uint8Array::from(bytes);
        blobs
            .put(&data.buffer().into(), Some(&JsValue::from_str(key)))
            .map_err(store_error)?
            .await
            .map_err(store_error)?;
        commit(tx).await
    }

    pub async fn delete_blob(&self, key: &str) -> Result<(), FetchError> {
        let tx = self.db.transaction(&[BLOBS], TransactionMode::ReadWrite).map_err(store_error)?;
        let blobs = tx.object_store(BLOBS).map_err(store_error)?;
        blobs.delete(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)?;
        commit(tx).await
    }

    /// The keys of the derived blobs that start with `prefix`.
    pub async fn blob_keys(&self, prefix: &str) -> Result<Vec<String>, FetchError> {
        let tx = self.db.transaction(&[BLOBS], TransactionMode::ReadOnly).map_err(store_error)?;
        let blobs = tx.object_store(BLOBS).map_err(store_error)?;
        let keys = blobs.get_all_keys(None, None).map_err(store_error)?.await.map_err(store_error)?;
        Ok(keys.into_iter().filter_map(|k| k.as_string()).filter(|k| k.starts_with(prefix)).collect())
    }

    /// Deletes every file of a model (`<id>/…`).
    pub async fn remove_model(&self, id: &str) -> Result<(), FetchError> {
        let prefix = format!("{id}/");
        for (key, _) in self.files().await? {
            if key.starts_with(&prefix) {
                self.remove(&key).await?;
            }
        }
        Ok(())
    }
}

impl ChunkStore for IdbStore {
    async fn stored(&self, key: &str, _chunk_size: u64) -> Result<Stored, FetchError> {
        Ok(self.record_value(key).await?.as_ref().map(parse_record).unwrap_or_default())
    }

    async fn read_chunk(&self, key: &str, index: u64, _chunk_size: u64) -> Result<Vec<u8>, FetchError> {
        let tx = self.db.transaction(&[CHUNKS], TransactionMode::ReadOnly).map_err(store_error)?;
        let chunks = tx.object_store(CHUNKS).map_err(store_error)?;
        let value = chunks.get(chunk_key(key, index)).map_err(store_error)?.await.map_err(store_error)?;
        let value = value.ok_or_else(|| FetchError::Store(format!("{key}: chunk {index} is missing")))?;
        Ok(Uint8Array::new(&value).to_vec())
    }

    /// The chunk and the file's record in one transaction: either both are stored or neither.
    async fn write_chunk(
        &self,
        key: &str,
        index: u64,
        chunk_size: u64,
        bytes: &[u8],
    ) -> Result<(), FetchError> {
        let tx = self.db.transaction(&[CHUNKS, FILES], TransactionMode::ReadWrite).map_err(store_error)?;
        let chunks = tx.object_store(CHUNKS).map_err(store_error)?;
        let files = tx.object_store(FILES).map_err(store_error)?;
        let previous = files.get(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)?;
        let mut state = previous.as_ref().map(parse_record).unwrap_or_default();
        let stored_size = previous.as_ref().and_then(|v| get_number(v, "chunkSize")).map(|n| n as u64);
        if state.complete || index != state.chunks || stored_size.is_some_and(|n| n != chunk_size) {
            return Err(FetchError::Store(format!(
                "{key}: chunk {index} refused, {} are stored{} (chunks are written in order)",
                state.chunks,
                if state.complete { " and the file is complete" } else { "" }
            )));
        }
        let data = Uint8Array::from(bytes);
        chunks
            .put(&data.buffer().into(), Some(&chunk_key(key, index)))
            .map_err(store_error)?
            .await
            .map_err(store_error)?;
        state.chunks = index + 1;
        let rec = record(&state);
        // Readers need the chunk size the file was stored with.
        let _ = Reflect::set(&rec, &"chunkSize".into(), &JsValue::from_f64(chunk_size as f64));
        files.put(&rec, Some(&JsValue::from_str(key))).map_err(store_error)?.await.map_err(store_error)?;
        commit(tx).await
    }

    async fn set_total(&self, key: &str, total: u64) -> Result<(), FetchError> {
        self.update_record(key, "total", JsValue::from_f64(total as f64)).await
    }

    /// Reads every chunk and the record in one transaction: the count, the length and the
    /// digest are checked against what is stored at the moment it is marked complete.
    async fn seal(&self, key: &str, chunk_size: u64, seal: &Seal<'_>) -> Result<FileRecord, FetchError> {
        let outcome = async {
            let tx =
                self.db.transaction(&[CHUNKS, FILES], TransactionMode::ReadWrite).map_err(store_error)?;
            let chunks = tx.object_store(CHUNKS).map_err(store_error)?;
            let files = tx.object_store(FILES).map_err(store_error)?;
            let existing =
                files.get(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)?;
            let rec = existing.filter(|v| v.is_object()).unwrap_or_else(|| record(&Stored::default()));
            let state = parse_record(&rec);
            let size = get_number(&rec, "chunkSize").map_or(chunk_size, |n| n as u64).max(1);
            let count = seal.total.div_ceil(size);
            if state.chunks != count {
                return Err(SealFailure::NotWhole(format!(
                    "{} chunks are stored, the file needs {count}",
                    state.chunks
                )));
            }
            let mut hasher = Sha256::new();
            let mut length = 0u64;
            for i in 0..count {
                let value = chunks.get(chunk_key(key, i)).map_err(store_error)?.await.map_err(store_error)?;
                let value = value.ok_or_else(|| SealFailure::NotWhole(format!("chunk {i} is missing")))?;
                let bytes = Uint8Array::new(&value).to_vec();
                length += bytes.len() as u64;
                hasher.update(&bytes);
            }
            if length != seal.total {
                return Err(SealFailure::NotWhole(format!(
                    "{length} bytes are stored, the file has {}",
                    seal.total
                )));
            }
            let got = hex(&hasher.finalize());
            if let Some(expected) = seal.sha256 {
                if got != expected {
                    return Err(SealFailure::Corrupt(FetchError::Corrupt {
                        path: key.into(),
                        expected: expected.into(),
                        got,
                        source_of_truth: seal.sha256_from.into(),
                    }));
                }
            }
            let _ = Reflect::set(&rec, &"total".into(), &JsValue::from_f64(seal.total as f64));
            let _ = Reflect::set(&rec, &"complete".into(), &JsValue::TRUE);
            let _ = Reflect::set(&rec, &"sha256".into(), &JsValue::from_str(&got));
            let commit_value = seal.commit.map_or(JsValue::NULL, JsValue::from_str);
            let _ = Reflect::set(&rec, &"commit".into(), &commit_value);
            files
                .put(&rec, Some(&JsValue::from_str(key)))
                .map_err(store_error)?
                .await
                .map_err(store_error)?;
            commit(tx).await?;
            Ok(FileRecord { size: seal.total, sha256: got, commit: seal.commit.map(str::to_string) })
        }
        .await;
        match outcome {
            Ok(record) => Ok(record),
            Err(SealFailure::Store(e)) => Err(e),
            Err(SealFailure::Corrupt(e)) => {
                self.remove(key).await?;
                Err(e)
            }
            Err(SealFailure::NotWhole(why)) => {
                self.remove(key).await?;
                Err(FetchError::Size {
                    path: key.into(),
                    detail: format!("{why}; the download was discarded"),
                })
            }
        }
    }

    async fn record(&self, key: &str) -> Result<Option<FileRecord>, FetchError> {
        let Some(rec) = self.record_value(key).await? else { return Ok(None) };
        let state = parse_record(&rec);
        let sha = Reflect::get(&rec, &"sha256".into()).ok().and_then(|v| v.as_string());
        let commit = Reflect::get(&rec, &"commit".into()).ok().and_then(|v| v.as_string());
        Ok(match (state.complete, state.total, sha) {
            (true, Some(size), Some(sha256)) => Some(FileRecord { size, sha256, commit }),
            _ => None,
        })
    }

    async fn pinned(&self, id: &str) -> Result<Option<String>, FetchError> {
        let rec = self.record_value(&pin_key(id)).await?;
        Ok(rec.and_then(|v| Reflect::get(&v, &"commit".into()).ok()).and_then(|v| v.as_string()))
    }

    async fn pin(&self, id: &str, commit: &str) -> Result<(), FetchError> {
        self.update_record(&pin_key(id), "commit", JsValue::from_str(commit)).await
    }

    async fn remove(&self, key: &str) -> Result<(), FetchError> {
        let tx = self.db.transaction(&[CHUNKS, FILES], TransactionMode::ReadWrite).map_err(store_error)?;
        let chunks = tx.object_store(CHUNKS).map_err(store_error)?;
        let files = tx.object_store(FILES).map_err(store_error)?;
        let lower = JsValue::from_str(&format!("{key}\u{0}"));
        let upper = JsValue::from_str(&format!("{key}\u{1}"));
        let range = KeyRange::bound(&lower, &upper, None, None).map_err(store_error)?;
        chunks.delete(Query::KeyRange(range)).map_err(store_error)?.await.map_err(store_error)?;
        files.delete(JsValue::from_str(key)).map_err(store_error)?.await.map_err(store_error)?;
        commit(tx).await
    }

    async fn available(&self) -> Result<Option<u64>, FetchError> {
        Ok(storage_estimate().await?.map(|(usage, quota)| quota.saturating_sub(usage)))
    }
}

/// `navigator.storage.estimate()`: (bytes used, quota) for this origin, where the browser says.
pub async fn storage_estimate() -> Result<Option<(u64, u64)>, FetchError> {
    let Some(storage) = storage_manager() else { return Ok(None) };
    let promise = storage.estimate().map_err(|e| js_error("storage.estimate()", e))?;
    let estimate = JsFuture::from(promise).await.map_err(|e| js_error("storage.estimate()", e))?;
    match (get_number(&estimate, "usage"), get_number(&estimate, "quota")) {
        (Some(usage), Some(quota)) => Ok(Some((usage.max(0.0) as u64, quota.max(0.0) as u64))),
        _ => Ok(None),
    }
}

fn storage_manager() -> Option<web_sys::StorageManager> {
    let global = js_sys::global();
    if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        return Some(window.navigator().storage());
    }
    global.dyn_ref::<web_sys::WorkerGlobalScope>().map(|w| w.navigator().storage())
}

/// Asks the browser to keep our storage under pressure (`navigator.storage.persist()`); returns
/// whether it agreed.
pub async fn request_persistence() -> bool {
    let Some(storage) = storage_manager() else { return false };
    let Ok(promise) = storage.persist() else { return false };
    JsFuture::from(promise).await.ok().and_then(|v| v.as_bool()).unwrap_or(false)
}

/// `fetch` with Range headers, from a window or a worker, to allowed hosts only
/// ([`crate::fetch::weight_url_allowed`]): the page's origin, Hugging Face, and the mirrors
/// given (a base the user confirmed).
#[derive(Default)]
pub struct FetchSource {
    pub mirrors: Vec<String>,
}

impl FetchSource {
    /// Allows `base`'s origin besides the page's and Hugging Face's.
    pub fn with_mirror(base: Option<&str>) -> FetchSource {
        FetchSource { mirrors: base.map(|b| vec![b.to_string()]).unwrap_or_default() }
    }
}

/// This context's origin (the page's, or the worker script's, which is the page's).
fn own_origin() -> String {
    let global = js_sys::global();
    if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        return window.location().origin().unwrap_or_default();
    }
    global.dyn_ref::<web_sys::WorkerGlobalScope>().map(|w| w.location().origin()).unwrap_or_default()
}

fn global_fetch(request: &web_sys::Request) -> js_sys::Promise {
    let global = js_sys::global();
    if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        return window.fetch_with_request(request);
    }
    match global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        Some(worker) => worker.fetch_with_request(request),
        None => js_sys::Promise::reject(&JsValue::from_str("no fetch in this context")),
    }
}

impl RangeSource for FetchSource {
    async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        if_range: Option<&str>,
    ) -> Result<RangeReply, FetchError> {
        let network = |detail: &str| FetchError::Network { url: url.into(), detail: detail.into() };
        if !crate::fetch::weight_url_allowed(url, &own_origin(), &self.mirrors) {
            return Err(FetchError::Network {
                url: url.into(),
                detail: "refused: Darkroom downloads only from this site, Hugging Face and mirrors you added"
                    .into(),
            });
        }
        let init = web_sys::RequestInit::new();
        init.set_method("GET");
        init.set_mode(web_sys::RequestMode::Cors);
        let headers = web_sys::Headers::new().map_err(|e| js_error("headers", e))?;
        let last = end.max(start + 1) - 1;
        headers.set("Range", &format!("bytes={start}-{last}")).map_err(|e| js_error("headers", e))?;
        if let Some(tag) = if_range {
            headers.set("If-Range", tag).map_err(|e| js_error("headers", e))?;
        }
        init.set_headers(&headers);
        let request = web_sys::Request::new_with_str_and_init(url, &init)
            .map_err(|e| js_error("building the request", e))?;
        let response: web_sys::Response = JsFuture::from(global_fetch(&request))
            .await
            .map_err(|_| {
                network("could not reach the server (offline, or it does not allow cross-origin requests from this page)")
            })?
            .dyn_into()
            .map_err(|_| network("fetch returned something that is not a response"))?;
        let status = response.status();
        if status != 200 && status != 206 {
            let hint = match status {
                401 | 403 => {
                    " (the model may need its license accepted on huggingface.co, or access is refused)"
                }
                404 => " (no file at that address: check the manifest's repository, revision and path)",
                _ => "",
            };
            return Err(FetchError::Http { url: url.into(), status, hint: hint.into() });
        }
        // Cross-origin, only the headers the server exposes can be read; the rest are None.
        let header = |name: &str| response.headers().get(name).ok().flatten();
        let origin = Origin::from_headers(
            header("X-Repo-Commit").as_deref(),
            header("X-Linked-Etag").as_deref(),
            header("X-Linked-Size").as_deref(),
            header("ETag").as_deref(),
        );
        let range = header("Content-Range").as_deref().and_then(ContentRange::parse);
        let length: Option<u64> = header("Content-Length").and_then(|v| v.trim().parse().ok());
        let want = end.saturating_sub(start);
        let whole = status == 200;
        if !crate::fetch::reads_body(whole, start, want, length) {
            if let Some(body) = response.body() {
                let _ = body.cancel();
            }
            return Ok(RangeReply { bytes: Vec::new(), range, whole, length, origin });
        }
        let buffer = JsFuture::from(response.array_buffer().map_err(|e| js_error("reading the body", e))?)
            .await
            .map_err(|_| network("the connection dropped while receiving"))?;
        let array = Uint8Array::new(&buffer);
        let bytes = array.subarray(0, (array.length() as u64).min(want) as u32).to_vec();
        Ok(RangeReply { bytes, range, whole, length, origin })
    }

    async fn sleep_ms(&self, ms: u64) {
        let promise = js_sys::Promise::new(&mut |resolve, _| {
            let global = js_sys::global();
            if let Ok(set_timeout) = Reflect::get(&global, &"setTimeout".into()) {
                if let Some(f) = set_timeout.dyn_ref::<js_sys::Function>() {
                    let _ = f.call2(&global, &resolve, &JsValue::from_f64(ms as f64));
                    return;
                }
            }
            let _ = resolve.call0(&JsValue::NULL);
        });
        let _ = JsFuture::from(promise).await;
    }
}
