//! The download: each file in HTTP Range chunks, each chunk stored as it arrives (so a dropped
//! connection or a closed tab loses at most one chunk), resumed from the last stored chunk,
//! sha256 checked incrementally where the manifest knows it, retried with backoff, cancellable
//! between chunks, with progress in bytes. The same code drives IndexedDB in the browser and a
//! cache folder natively; the transport and the store are traits.

use sha2::{Digest, Sha256};

use crate::manifest::Manifest;

/// Bytes per Range request and per stored record.
pub const DEFAULT_CHUNK: u64 = 8 << 20;
/// Attempts per chunk before giving up (the first try plus retries).
pub const ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FetchError {
    #[error("{url}: the server answered {status}{hint}")]
    Http { url: String, status: u16, hint: String },
    #[error("{url}: {detail}")]
    Network { url: String, detail: String },
    #[error("{path} is corrupt: its sha256 is {got}, the manifest says {expected}; the download was discarded, fetch it again")]
    Corrupt { path: String, expected: String, got: String },
    #[error("{path}: {detail}")]
    Size { path: String, detail: String },
    #[error("not enough storage: {needed} MB more are needed and {available} MB are free{hint}")]
    Quota { needed: u64, available: u64, hint: String },
    #[error("storage: {0}")]
    Store(String),
    #[error("storage is full ({0}); delete models you no longer use, or allow this site more storage")]
    StorageFull(String),
    #[error("the download was cancelled; what arrived is kept and a new fetch resumes it")]
    Cancelled,
}

impl FetchError {
    /// Worth another try: a dropped connection or a server hiccup, not a 404 or bad bytes.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Network { .. } => true,
            FetchError::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// One Range response: the bytes and the file's total length (from Content-Range, or the body
/// length when the server ignored the Range on a whole-file answer; `None` when a cross-origin
/// server does not expose Content-Range).
pub struct RangeReply {
    pub bytes: Vec<u8>,
    pub total: Option<u64>,
}

/// The transport: `fetch` with a Range header in the browser, an HTTP client natively.
#[allow(async_fn_in_trait)]
pub trait RangeSource {
    /// Bytes `start..end` (end exclusive, clamped by the server to the file's end).
    async fn get_range(&self, url: &str, start: u64, end: u64) -> Result<RangeReply, FetchError>;
    /// Waits before a retry.
    async fn sleep_ms(&self, ms: u64);
}

/// What the store holds of a file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// Chunks 0..chunks are stored, each `chunk_size` long except a file's last.
    pub chunks: u64,
    /// The file's length once known.
    pub total: Option<u64>,
    pub complete: bool,
}

/// Where chunks live: IndexedDB records in the browser, files natively. Keys are
/// "<model id>/<path in the repository>".
#[allow(async_fn_in_trait)]
pub trait ChunkStore {
    async fn stored(&self, key: &str, chunk_size: u64) -> Result<Stored, FetchError>;
    async fn read_chunk(&self, key: &str, index: u64, chunk_size: u64) -> Result<Vec<u8>, FetchError>;
    async fn write_chunk(
        &self,
        key: &str,
        index: u64,
        chunk_size: u64,
        bytes: &[u8],
    ) -> Result<(), FetchError>;
    async fn set_total(&self, key: &str, total: u64) -> Result<(), FetchError>;
    async fn mark_complete(&self, key: &str) -> Result<(), FetchError>;
    async fn remove(&self, key: &str) -> Result<(), FetchError>;
    /// Free bytes, if the store can tell.
    async fn available(&self) -> Result<Option<u64>, FetchError>;
}

/// Progress of a model download, after each chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchProgress {
    pub path: String,
    pub file_done: u64,
    pub file_total: Option<u64>,
    /// Over the whole model; `model_total` counts only files whose size is known.
    pub model_done: u64,
    pub model_total: u64,
}

pub struct FetchOptions<'a> {
    pub chunk_size: u64,
    /// Where files come from instead of the CDN (tests, mirrors).
    pub base_url: Option<&'a str>,
    /// Checked between chunks.
    pub cancelled: &'a dyn Fn() -> bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads one file into the store (resuming what is there); returns its length.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_file<S: RangeSource, C: ChunkStore>(
    source: &S,
    store: &C,
    key: &str,
    url: &str,
    expected_size: Option<u64>,
    expected_sha256: Option<&str>,
    options: &FetchOptions<'_>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<u64, FetchError> {
    let chunk = options.chunk_size.max(1);
    let mut state = store.stored(key, chunk).await?;
    if state.complete {
        return Ok(state.total.unwrap_or(0));
    }
    if let (Some(stored), Some(expected)) = (state.total, expected_size) {
        if stored != expected {
            // The file changed upstream (or the manifest did): start over.
            store.remove(key).await?;
            state = Stored::default();
        }
    }
    // Re-hash what is already stored so the digest covers the whole file.
    let mut hasher = Sha256::new();
    if expected_sha256.is_some() {
        for i in 0..state.chunks {
            hasher.update(store.read_chunk(key, i, chunk).await?);
        }
    }
    let mut recorded_total = state.total.is_some();
    let mut total = state.total.or(expected_size);
    let mut index = state.chunks;
    let mut done = index * chunk;
    if let Some(t) = total {
        done = done.min(t);
    }
    progress(done, total);
    loop {
        if total.is_some_and(|t| done >= t) {
            break;
        }
        if (options.cancelled)() {
            return Err(FetchError::Cancelled);
        }
        let start = index * chunk;
        let end = total.map_or(start + chunk, |t| (start + chunk).min(t));
        let mut attempt = 0;
        let reply = loop {
            match source.get_range(url, start, end).await {
                Ok(r) => break r,
                Err(e) if e.is_transient() && attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    source.sleep_ms(250 << attempt).await;
                    if (options.cancelled)() {
                        return Err(FetchError::Cancelled);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let file_total = reply.total.or(expected_size).ok_or_else(|| FetchError::Size {
            path: key.into(),
            detail: "the server does not say how long the file is (no readable Content-Range)".into(),
        })?;
        if let Some(expected) = expected_size {
            if file_total != expected {
                return Err(FetchError::Size {
                    path: key.into(),
                    detail: format!("the server has {file_total} bytes, the manifest says {expected}"),
                });
            }
        }
        if !recorded_total {
            // Recorded even when the manifest knows it: readers of the store need the length.
            store.set_total(key, file_total).await?;
            recorded_total = true;
            total = Some(file_total);
        }
        let want = (start + chunk).min(file_total).saturating_sub(start);
        // A server that ignores Range sends the whole file: take our slice of it.
        let bytes: &[u8] = if reply.bytes.len() as u64 == file_total && start > 0 {
            &reply.bytes[start as usize..(start + want) as usize]
        } else {
            &reply.bytes
        };
        if bytes.len() as u64 != want && !(start == 0 && bytes.len() as u64 == file_total) {
            return Err(FetchError::Size {
                path: key.into(),
                detail: format!("asked for {want} bytes at {start}, got {}", bytes.len()),
            });
        }
        let bytes = &bytes[..want as usize];
        hasher.update(bytes);
        store.write_chunk(key, index, chunk, bytes).await?;
        done = start + want;
        index += 1;
        progress(done, total);
    }
    let total = total.unwrap_or(done);
    if let Some(expected) = expected_sha256 {
        let got = hex(&hasher.finalize());
        if got != expected {
            store.remove(key).await?;
            return Err(FetchError::Corrupt { path: key.into(), expected: expected.into(), got });
        }
    }
    store.mark_complete(key).await?;
    Ok(total)
}

/// Re-reads every stored file of a model and hashes it: (path, complete, sha256 of what is
/// stored, whether it equals the manifest's). For checking a cache and for tests.
pub async fn verify_model<C: ChunkStore>(
    store: &C,
    manifest: &Manifest,
    chunk_size: u64,
) -> Result<Vec<(String, bool, String, Option<bool>)>, FetchError> {
    let mut out = Vec::new();
    for file in &manifest.files {
        let key = format!("{}/{}", manifest.id, file.path);
        let state = store.stored(&key, chunk_size).await?;
        let mut hasher = Sha256::new();
        for i in 0..state.chunks {
            hasher.update(store.read_chunk(&key, i, chunk_size).await?);
        }
        let got = hex(&hasher.finalize());
        let matches = file.sha256.as_ref().map(|want| *want == got);
        out.push((file.path.clone(), state.complete, got, matches));
    }
    Ok(out)
}

/// Downloads every file of a model that is not complete in the store. Checks free space first
/// (when the store can tell and the sizes are known).
pub async fn fetch_model<S: RangeSource, C: ChunkStore>(
    source: &S,
    store: &C,
    manifest: &Manifest,
    options: &FetchOptions<'_>,
    progress: &mut dyn FnMut(&FetchProgress),
) -> Result<(), FetchError> {
    let (model_total, _) = manifest.download_size();
    let mut remaining = 0u64;
    let mut finished = 0u64; // bytes of complete files
    for file in &manifest.files {
        let key = format!("{}/{}", manifest.id, file.path);
        let state = store.stored(&key, options.chunk_size).await?;
        let size = file.size.or(state.total).unwrap_or(0);
        if state.complete {
            finished += size;
        } else {
            remaining += size - (state.chunks * options.chunk_size).min(size);
        }
    }
    if let Some(free) = store.available().await? {
        if remaining > free {
            return Err(FetchError::Quota {
                needed: remaining.div_ceil(1 << 20),
                available: free >> 20,
                hint: "; free some space (delete models you no longer use) and try again".into(),
            });
        }
    }
    for file in &manifest.files {
        let key = format!("{}/{}", manifest.id, file.path);
        if store.stored(&key, options.chunk_size).await?.complete {
            continue;
        }
        let url = manifest.url(file, options.base_url);
        let mut report = |done: u64, total: Option<u64>| {
            progress(&FetchProgress {
                path: file.path.clone(),
                file_done: done,
                file_total: total,
                model_done: finished + done,
                model_total: model_total.max(finished + total.unwrap_or(done)),
            });
        };
        finished +=
            fetch_file(source, store, &key, &url, file.size, file.sha256.as_deref(), options, &mut report)
                .await?;
    }
    Ok(())
}
