//! The download: each file in HTTP Range chunks, each chunk stored as it arrives (so a dropped
//! connection or a closed tab loses at most one chunk), resumed from the last stored chunk,
//! retried with backoff, cancellable between chunks, with progress in bytes. The same code
//! drives IndexedDB in the browser and a cache folder natively; the transport and the store
//! are traits.
//!
//! Integrity, without pinned manifests, the way huggingface_hub pins: the first answer's
//! `X-Repo-Commit` fixes the revision of the whole model, and every later request asks for
//! `resolve/<commit>/…`, so a model updated upstream mid-download can never mix two versions.
//! An LFS file's `X-Linked-Etag` (its sha256) and `X-Linked-Size` are checked where they can be
//! read; a resumed request carries `If-Range`; each answer's Content-Range must be exactly the
//! range asked for, of the length already known; a server that ignores Range is detected and
//! never read unbounded. Every file is hashed when it is sealed complete (by the store, over
//! what it holds), and the digest and commit are kept with it.

use crate::manifest::Manifest;

mod reply;
mod urls;
pub use reply::{reads_body, ContentRange, Origin, RangeReply};
pub use urls::{origin_of, pinned_url, weight_url_allowed};

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
    #[error("{path} is corrupt: its sha256 is {got}, {source_of_truth} says {expected}; the download was discarded, fetch it again")]
    Corrupt { path: String, expected: String, got: String, source_of_truth: String },
    #[error("{path}: {detail}")]
    Size { path: String, detail: String },
    #[error("{url}: the server ignores Range requests (it sent the whole file for a part of it); this download needs a server that answers ranges")]
    RangeIgnored { url: String },
    #[error("{path} changed on the server during the download ({detail}); what arrived was discarded, fetch it again")]
    Changed { path: String, detail: String },
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

/// The transport: `fetch` with a Range header in the browser, an HTTP client natively.
#[allow(async_fn_in_trait)]
pub trait RangeSource {
    /// Bytes `start..end` (end exclusive), with `If-Range: if_range` when given. Reads at most
    /// `end - start` bytes of a body, whatever the server sends.
    async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        if_range: Option<&str>,
    ) -> Result<RangeReply, FetchError>;
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

/// How a complete file is sealed: what the store checks in the same step as it marks the file
/// complete, and keeps with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seal<'a> {
    /// The file's length: the stored chunks must add up to exactly this.
    pub total: u64,
    /// The sha256 it must have (the manifest's, or the server's `X-Linked-Etag`), if known.
    pub sha256: Option<&'a str>,
    /// Where that sha256 comes from, for the error message.
    pub sha256_from: &'a str,
    /// The commit the bytes came from.
    pub commit: Option<&'a str>,
}

/// A complete file's integrity record: its length, the sha256 of its stored bytes and the
/// commit it was downloaded from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    pub size: u64,
    pub sha256: String,
    pub commit: Option<String>,
}

/// Where chunks live: IndexedDB records in the browser, files natively. Keys are
/// "<model id>/<path in the repository>".
#[allow(async_fn_in_trait)]
pub trait ChunkStore {
    async fn stored(&self, key: &str, chunk_size: u64) -> Result<Stored, FetchError>;
    async fn read_chunk(&self, key: &str, index: u64, chunk_size: u64) -> Result<Vec<u8>, FetchError>;
    /// Stores chunk `index`, which must be the next one (`stored().chunks`): a chunk out of
    /// order is refused, so no file can have a hole.
    async fn write_chunk(
        &self,
        key: &str,
        index: u64,
        chunk_size: u64,
        bytes: &[u8],
    ) -> Result<(), FetchError>;
    async fn set_total(&self, key: &str, total: u64) -> Result<(), FetchError>;
    /// Marks a file complete after checking, in the same step, that its chunks add up to
    /// `seal.total` and hash to `seal.sha256` (when given); keeps the digest and the commit.
    /// A file that fails the check is removed and the error says why.
    async fn seal(&self, key: &str, chunk_size: u64, seal: &Seal<'_>) -> Result<FileRecord, FetchError>;
    /// A complete file's integrity record.
    async fn record(&self, key: &str) -> Result<Option<FileRecord>, FetchError>;
    async fn remove(&self, key: &str) -> Result<(), FetchError>;
    /// The commit model `id` is pinned to (the first download answer's `X-Repo-Commit`).
    async fn pinned(&self, id: &str) -> Result<Option<String>, FetchError>;
    async fn pin(&self, id: &str, commit: &str) -> Result<(), FetchError>;
    /// Free bytes, if the store can tell.
    async fn available(&self) -> Result<Option<u64>, FetchError>;
}

/// The sha256 of stored chunks, as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// What is known of a file before its download: from the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Expected<'a> {
    pub size: Option<u64>,
    pub sha256: Option<&'a str>,
}

/// The model's pin while it downloads: the commit its files come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pin {
    /// The model id the pin is stored under.
    pub id: String,
    pub commit: Option<String>,
}

impl Pin {
    /// Takes the first answer's commit as the pin (and stores it); a later answer naming
    /// another commit is a change mid-download.
    pub(crate) async fn note<C: ChunkStore>(
        &mut self,
        store: &C,
        path: &str,
        origin: &Origin,
    ) -> Result<(), FetchError> {
        match (&self.commit, &origin.commit) {
            (None, Some(commit)) => {
                store.pin(&self.id, commit).await?;
                self.commit = Some(commit.clone());
            }
            (Some(pinned), Some(commit)) if pinned != commit => {
                return Err(FetchError::Changed {
                    path: path.into(),
                    detail: format!(
                        "the server now serves commit {commit}, the download is pinned to {pinned}"
                    ),
                });
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn url(&self, url: &str) -> String {
        self.commit.as_deref().map_or_else(|| url.to_string(), |c| pinned_url(url, c))
    }
}

/// One range request, tried again with backoff while it fails for a transient reason (at most
/// [`ATTEMPTS`] tries), unless the download is cancelled meanwhile.
pub(crate) async fn get_with_retries<S: RangeSource>(
    source: &S,
    url: &str,
    (start, end): (u64, u64),
    if_range: Option<&str>,
    cancelled: &dyn Fn() -> bool,
) -> Result<RangeReply, FetchError> {
    let mut attempt = 0;
    loop {
        match source.get_range(url, start, end, if_range).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                source.sleep_ms(250 << attempt).await;
                if cancelled() {
                    return Err(FetchError::Cancelled);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The record of a file the store holds complete (`None` for one it does not): one completed
/// before records were kept is sealed again, which hashes what is stored.
pub(crate) async fn complete_record<C: ChunkStore>(
    store: &C,
    key: &str,
    chunk: u64,
    state: &Stored,
    sha256: Option<&str>,
) -> Result<Option<FileRecord>, FetchError> {
    if !state.complete {
        return Ok(None);
    }
    if let Some(record) = store.record(key).await? {
        return Ok(Some(record));
    }
    let seal = Seal { total: state.total.unwrap_or(0), sha256, sha256_from: "the manifest", commit: None };
    store.seal(key, chunk, &seal).await.map(Some)
}

/// Downloads one file into the store (resuming what is there) and seals it; returns its
/// integrity record.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_file<S: RangeSource, C: ChunkStore>(
    source: &S,
    store: &C,
    key: &str,
    url: &str,
    expected: Expected<'_>,
    pin: &mut Pin,
    options: &FetchOptions<'_>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<FileRecord, FetchError> {
    let chunk = options.chunk_size.max(1);
    let mut state = store.stored(key, chunk).await?;
    if let Some(record) = complete_record(store, key, chunk, &state, expected.sha256).await? {
        return Ok(record);
    }
    if let (Some(stored), Some(size)) = (state.total, expected.size) {
        if stored != size {
            // The manifest changed since the download began: start over.
            store.remove(key).await?;
            state = Stored::default();
        }
    }
    let mut total = state.total.or(expected.size);
    let mut recorded_total = state.total.is_some();
    let mut linked_sha: Option<String> = None;
    let mut etag: Option<String> = None;
    let mut index = state.chunks;
    let mut done = total.map_or(index * chunk, |t| (index * chunk).min(t));
    progress(done, total);
    let changed = |detail: String| FetchError::Changed { path: key.into(), detail };
    loop {
        if total.is_some_and(|t| done >= t) {
            break;
        }
        if (options.cancelled)() {
            return Err(FetchError::Cancelled);
        }
        let start = index * chunk;
        let end = total.map_or(start + chunk, |t| (start + chunk).min(t));
        let want = end - start;
        let url = pin.url(url);
        let resumed = start > 0;
        let if_range = etag.clone().filter(|_| resumed);
        let if_range = if_range.as_deref();
        let reply = get_with_retries(source, &url, (start, end), if_range, options.cancelled).await?;
        if let Err(e) = pin.note(store, key, &reply.origin).await {
            // Another commit's bytes would follow the stored ones: they are discarded.
            store.remove(key).await?;
            return Err(e);
        }
        if etag.is_none() {
            etag = reply.origin.etag.clone();
        }
        // The file's length, from every source that says it: all must agree.
        let said = if reply.whole {
            // The transports' own rule says which whole answers are taken; a longer body never is.
            if !reads_body(true, start, want, reply.length) || reply.bytes.len() as u64 > want {
                if if_range.is_some() {
                    // If-Range answered with the whole file: it is not the file we began.
                    store.remove(key).await?;
                    return Err(changed("the server's ETag no longer matches".into()));
                }
                return Err(FetchError::RangeIgnored { url });
            }
            reply.length
        } else {
            match reply.range {
                Some(range) => {
                    let last = end.saturating_sub(1);
                    let expected_last = range.total.map_or(last, |t| last.min(t.saturating_sub(1)));
                    if range.first != start || range.last != expected_last {
                        return Err(FetchError::Size {
                            path: key.into(),
                            detail: format!(
                                "asked for bytes {start}-{last}, the server sent {}-{}",
                                range.first, range.last
                            ),
                        });
                    }
                    range.total
                }
                None => None,
            }
        };
        if let Some(sha) = &reply.origin.sha256 {
            match &linked_sha {
                Some(seen) if seen != sha => {
                    store.remove(key).await?;
                    return Err(changed(format!("its sha256 went from {seen} to {sha}")));
                }
                _ => linked_sha = Some(sha.clone()),
            }
        }
        let known = [said, reply.origin.size, expected.size, total];
        let file_total = known.iter().flatten().next().copied().ok_or_else(|| FetchError::Size {
            path: key.into(),
            detail: "the server does not say how long the file is (no readable Content-Range)".into(),
        })?;
        if let Some(other) = known.iter().flatten().find(|&&n| n != file_total) {
            let detail = format!(
                "the server says {file_total} bytes, elsewhere {other} (the manifest or an earlier answer)"
            );
            if state.total.is_some() || index > 0 {
                store.remove(key).await?;
                return Err(changed(detail));
            }
            return Err(FetchError::Size { path: key.into(), detail });
        }
        if !recorded_total {
            // Recorded even when the manifest knows it: readers of the store need the length.
            store.set_total(key, file_total).await?;
            recorded_total = true;
        }
        total = Some(file_total);
        let want = (start + chunk).min(file_total).saturating_sub(start);
        if reply.bytes.len() as u64 != want {
            return Err(FetchError::Size {
                path: key.into(),
                detail: format!("asked for {want} bytes at {start}, got {}", reply.bytes.len()),
            });
        }
        store.write_chunk(key, index, chunk, &reply.bytes).await?;
        done = start + want;
        index += 1;
        progress(done, total);
    }
    let total = total.unwrap_or(done);
    let (sha256, sha256_from) = match (expected.sha256, linked_sha.as_deref()) {
        (Some(m), Some(l)) if m != l => {
            store.remove(key).await?;
            return Err(FetchError::Corrupt {
                path: key.into(),
                expected: m.into(),
                got: l.into(),
                source_of_truth: "the manifest".into(),
            });
        }
        (Some(m), _) => (Some(m), "the manifest"),
        (None, Some(l)) => (Some(l), "the server (X-Linked-Etag)"),
        (None, None) => (None, ""),
    };
    let seal = Seal { total, sha256, sha256_from, commit: pin.commit.as_deref() };
    store.seal(key, chunk, &seal).await
}

/// Re-reads every stored file of a model and hashes it: (path, complete, sha256 of what is
/// stored, whether it equals the manifest's). For checking a cache and for tests.
pub async fn verify_model<C: ChunkStore>(
    store: &C,
    manifest: &Manifest,
    chunk_size: u64,
) -> Result<Vec<(String, bool, String, Option<bool>)>, FetchError> {
    use sha2::{Digest, Sha256};
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

/// Downloads every file of a model that is not complete in the store, pinned to one commit.
/// Checks free space first (when the store can tell and the sizes are known).
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
    let mut pin = Pin { id: manifest.id.clone(), commit: store.pinned(&manifest.id).await? };
    for file in &manifest.files {
        let key = format!("{}/{}", manifest.id, file.path);
        if store.stored(&key, options.chunk_size).await?.complete && store.record(&key).await?.is_some() {
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
        let record = if file.tensors.is_empty() {
            let expected = Expected { size: file.size, sha256: file.sha256.as_deref() };
            fetch_file(source, store, &key, &url, expected, &mut pin, options, &mut report).await?
        } else {
            let (prefixes, sha256) = (&file.tensors, file.sha256.as_deref());
            crate::tensor_subset::fetch_tensors(
                source,
                store,
                &key,
                &url,
                prefixes,
                sha256,
                &mut pin,
                options,
                &mut report,
            )
            .await?
        };
        finished += record.size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_exactly() {
        assert_eq!(
            ContentRange::parse("bytes 0-99/1234"),
            Some(ContentRange { first: 0, last: 99, total: Some(1234) })
        );
        assert_eq!(ContentRange::parse("bytes 5-5/*"), Some(ContentRange { first: 5, last: 5, total: None }));
        assert_eq!(ContentRange::parse("bytes 9-5/10"), None);
        assert_eq!(ContentRange::parse("items 0-1/2"), None);
        assert_eq!(ContentRange::parse("bytes */10"), None);
    }

    #[test]
    fn pinned_urls_replace_the_revision_only() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            pinned_url("https://huggingface.co/a/b/resolve/main/unet/x.safetensors", c),
            format!("https://huggingface.co/a/b/resolve/{c}/unet/x.safetensors")
        );
        assert_eq!(pinned_url("http://127.0.0.1:9/fixtures/tiny/x", c), "http://127.0.0.1:9/fixtures/tiny/x");
    }

    #[test]
    fn only_the_page_hugging_face_and_confirmed_mirrors_are_reachable() {
        let page = "https://darkroom.example";
        let mirror = vec!["http://127.0.0.1:9000/models/".to_string()];
        for ok in [
            "https://darkroom.example/fixtures/x.safetensors",
            "https://huggingface.co/a/b/resolve/main/x",
            "https://cdn-lfs.huggingface.co/x",
            "https://cas-bridge.xethub.hf.co/x",
            "http://127.0.0.1:9000/other/path",
        ] {
            assert!(weight_url_allowed(ok, page, &mirror), "{ok}");
        }
        for refused in [
            "http://huggingface.co/a",
            "https://huggingface.co.evil.example/a",
            "https://evilhuggingface.co/a",
            "https://analytics.example/collect",
            "https://user@huggingface.co/a",
            "http://127.0.0.1:9001/x",
            "data:text/plain,x",
            "/relative/path",
        ] {
            assert!(!weight_url_allowed(refused, page, &mirror), "{refused}");
        }
    }

    #[test]
    fn origin_headers_are_read_strictly() {
        let sha = "a".repeat(64);
        let o = Origin::from_headers(
            Some(&"B".repeat(40)),
            Some(&format!("\"{sha}\"")),
            Some(" 12 "),
            Some("W/\"x\""),
        );
        assert_eq!(o.commit.as_deref(), Some("b".repeat(40).as_str()));
        assert_eq!(o.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(o.size, Some(12));
        let bad = Origin::from_headers(Some("main"), Some("\"abc\""), Some("x"), None);
        assert_eq!(bad, Origin::default());
    }
}
