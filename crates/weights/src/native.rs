//! The native side of the download: a cache folder as the chunk store (each model a diffusers
//! folder once complete, so `darkroom generate` reads it directly) and an HTTP client.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fetch::{
    hex, ChunkStore, ContentRange, FetchError, FileRecord, Origin, RangeReply, RangeSource, Seal, Stored,
};

/// `<root>/<model id>/<path>` when complete; `<path>.partial` (chunks appended in order) and
/// `<path>.partial.len` (the file's length, once known) while downloading.
pub struct FolderStore {
    pub root: PathBuf,
}

/// Where weights go by default: `$DARKROOM_CACHE`, else `$XDG_CACHE_HOME/darkroom`, else
/// `~/.cache/darkroom`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DARKROOM_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("darkroom");
    }
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")).unwrap_or_default();
    PathBuf::from(home).join(".cache").join("darkroom")
}

fn store_err(path: &Path, e: std::io::Error) -> FetchError {
    FetchError::Store(format!("{}: {e}", path.display()))
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl FolderStore {
    pub fn new(root: impl Into<PathBuf>) -> FolderStore {
        FolderStore { root: root.into() }
    }

    fn complete(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn partial(&self, key: &str) -> PathBuf {
        suffixed(&self.complete(key), ".partial")
    }

    fn length_file(&self, key: &str) -> PathBuf {
        suffixed(&self.complete(key), ".partial.len")
    }

    /// A model's folder (a diffusers folder once its files are complete).
    pub fn model_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Deletes a model's folder; returns the bytes freed.
    pub fn remove_model(&self, id: &str) -> Result<u64, FetchError> {
        let dir = self.model_dir(id);
        if !dir.exists() {
            return Ok(0);
        }
        let bytes = dir_size(&dir);
        fs::remove_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        Ok(bytes)
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A model's integrity index, `<root>/<id>/.darkroom-integrity.json`: the commit it is pinned
/// to and each complete file's record.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Index {
    commit: Option<String>,
    #[serde(default)]
    files: std::collections::BTreeMap<String, FileRecord>,
}

/// The index file's name inside a model's folder.
pub const INTEGRITY_FILE: &str = ".darkroom-integrity.json";

/// `<id>/<path>` → (id, path).
fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((key, ""))
}

impl FolderStore {
    fn index_path(&self, id: &str) -> PathBuf {
        self.model_dir(id).join(INTEGRITY_FILE)
    }

    fn read_index(&self, id: &str) -> Index {
        fs::read(self.index_path(id)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn write_index(&self, id: &str, index: &Index) -> Result<(), FetchError> {
        let path = self.index_path(id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        }
        let tmp = suffixed(&path, ".tmp");
        let text = serde_json::to_vec_pretty(index).map_err(|e| FetchError::Store(e.to_string()))?;
        fs::write(&tmp, text).map_err(|e| store_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| store_err(&path, e))
    }

    /// Every complete file's integrity record of model `id`, by path, and its pinned commit.
    pub fn integrity(&self, id: &str) -> (Option<String>, Vec<(String, FileRecord)>) {
        let index = self.read_index(id);
        let files =
            index.files.into_iter().filter(|(path, _)| self.model_dir(id).join(path).is_file()).collect();
        (index.commit, files)
    }

    /// Takes model `id`'s lock (a lock file under `<root>/.locks/`), held until the returned
    /// guard is dropped: one download or deletion of a model at a time across processes. An
    /// error if another process holds it.
    pub fn lock_model(&self, id: &str) -> Result<ModelLock, FetchError> {
        let dir = self.root.join(".locks");
        fs::create_dir_all(&dir).map_err(|e| store_err(&dir, e))?;
        let path = dir.join(format!("{id}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| store_err(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(ModelLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(FetchError::Store(format!(
                "{id} is being downloaded or deleted by another darkroom process; wait for it or stop it first"
            ))),
            Err(fs::TryLockError::Error(e)) => Err(store_err(&path, e)),
        }
    }
}

/// Holds a model's lock while alive.
pub struct ModelLock {
    _file: File,
}

impl ChunkStore for FolderStore {
    async fn stored(&self, key: &str, chunk_size: u64) -> Result<Stored, FetchError> {
        let complete = self.complete(key);
        if let Ok(meta) = fs::metadata(&complete) {
            if meta.is_file() {
                return Ok(Stored {
                    chunks: meta.len().div_ceil(chunk_size),
                    total: Some(meta.len()),
                    complete: true,
                });
            }
        }
        let total = fs::read_to_string(self.length_file(key)).ok().and_then(|s| s.trim().parse().ok());
        let have = fs::metadata(self.partial(key)).map_or(0, |m| m.len());
        // Only whole chunks count (a torn last write is redone), except the file's short last one.
        let chunks = if total == Some(have) { have.div_ceil(chunk_size) } else { have / chunk_size };
        Ok(Stored { chunks, total, complete: false })
    }

    async fn read_chunk(&self, key: &str, index: u64, chunk_size: u64) -> Result<Vec<u8>, FetchError> {
        let path = if self.complete(key).is_file() { self.complete(key) } else { self.partial(key) };
        let mut f = File::open(&path).map_err(|e| store_err(&path, e))?;
        f.seek(SeekFrom::Start(index * chunk_size)).map_err(|e| store_err(&path, e))?;
        let mut buf = Vec::new();
        f.take(chunk_size).read_to_end(&mut buf).map_err(|e| store_err(&path, e))?;
        Ok(buf)
    }

    async fn write_chunk(
        &self,
        key: &str,
        index: u64,
        chunk_size: u64,
        bytes: &[u8],
    ) -> Result<(), FetchError> {
        let path = self.partial(key);
        if self.complete(key).is_file() {
            return Err(FetchError::Store(format!("{key} is complete; it is not written again")));
        }
        let have = fs::metadata(&path).map_or(0, |m| m.len());
        // The next chunk only: a whole chunk after the stored ones (a torn one is overwritten).
        if index != have / chunk_size || bytes.len() as u64 > chunk_size {
            return Err(FetchError::Store(format!(
                "{key}: chunk {index} refused, {} whole chunks are stored (chunks are written in order)",
                have / chunk_size
            )));
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| store_err(&path, e))?;
        f.set_len(index * chunk_size).map_err(|e| store_err(&path, e))?;
        f.seek(SeekFrom::Start(index * chunk_size)).map_err(|e| store_err(&path, e))?;
        f.write_all(bytes).map_err(|e| store_err(&path, e))?;
        f.sync_data().map_err(|e| store_err(&path, e))
    }

    async fn set_total(&self, key: &str, total: u64) -> Result<(), FetchError> {
        let path = self.length_file(key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
        }
        fs::write(&path, total.to_string()).map_err(|e| store_err(&path, e))
    }

    async fn seal(&self, key: &str, _chunk_size: u64, seal: &Seal<'_>) -> Result<FileRecord, FetchError> {
        let (id, file_path) = split_key(key);
        let (from, to) = (self.partial(key), self.complete(key));
        // A file complete before records were kept is sealed where it lies.
        let source = if !from.exists() && to.is_file() { to.clone() } else { from.clone() };
        if !source.exists() {
            // An empty file never wrote a chunk.
            if let Some(dir) = source.parent() {
                fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
            }
            File::create(&source).map_err(|e| store_err(&source, e))?;
        }
        let len = fs::metadata(&source).map_err(|e| store_err(&source, e))?.len();
        if len != seal.total {
            self.remove(key).await?;
            return Err(FetchError::Size {
                path: key.into(),
                detail: format!(
                    "{len} bytes are stored, the file has {}; the download was discarded",
                    seal.total
                ),
            });
        }
        let mut hasher = Sha256::new();
        let mut f = File::open(&source).map_err(|e| store_err(&source, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| store_err(&source, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex(&hasher.finalize());
        if let Some(expected) = seal.sha256 {
            if got != expected {
                self.remove(key).await?;
                return Err(FetchError::Corrupt {
                    path: key.into(),
                    expected: expected.into(),
                    got,
                    source_of_truth: seal.sha256_from.into(),
                });
            }
        }
        if source != to {
            fs::rename(&source, &to).map_err(|e| store_err(&to, e))?;
        }
        let _ = fs::remove_file(self.length_file(key));
        let record = FileRecord { size: len, sha256: got, commit: seal.commit.map(str::to_string) };
        let mut index = self.read_index(id);
        index.files.insert(file_path.to_string(), record.clone());
        self.write_index(id, &index)?;
        Ok(record)
    }

    async fn record(&self, key: &str) -> Result<Option<FileRecord>, FetchError> {
        let (id, path) = split_key(key);
        if !self.complete(key).is_file() {
            return Ok(None);
        }
        Ok(self.read_index(id).files.remove(path))
    }

    async fn remove(&self, key: &str) -> Result<(), FetchError> {
        for path in [self.complete(key), self.partial(key), self.length_file(key)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(store_err(&path, e)),
                _ => {}
            }
        }
        let (id, path) = split_key(key);
        let mut index = self.read_index(id);
        if index.files.remove(path).is_some() {
            self.write_index(id, &index)?;
        }
        Ok(())
    }

    async fn pinned(&self, id: &str) -> Result<Option<String>, FetchError> {
        Ok(self.read_index(id).commit)
    }

    async fn pin(&self, id: &str, commit: &str) -> Result<(), FetchError> {
        let mut index = self.read_index(id);
        index.commit = Some(commit.to_string());
        self.write_index(id, &index)
    }

    async fn available(&self) -> Result<Option<u64>, FetchError> {
        Ok(None) // std has no portable free-space query; a full disk fails the write with a clear error
    }
}

/// HTTP(S) with Range requests.
pub struct HttpSource {
    agent: ureq::Agent,
}

impl Default for HttpSource {
    fn default() -> Self {
        HttpSource {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(std::time::Duration::from_secs(20))
                .timeout_read(std::time::Duration::from_secs(60))
                .user_agent(concat!("darkroom/", env!("CARGO_PKG_VERSION")))
                .build(),
        }
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => {
            " (the model may need you to accept its license on huggingface.co, or access is refused)"
        }
        404 => " (no file at that address: check the manifest's repository, revision and path)",
        416 => " (the file is shorter than expected: it changed upstream)",
        _ => "",
    }
}

impl RangeSource for HttpSource {
    async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        if_range: Option<&str>,
    ) -> Result<RangeReply, FetchError> {
        let network = |detail: String| FetchError::Network { url: url.into(), detail };
        let last = end.max(start + 1) - 1;
        let mut request = self.agent.get(url).set("Range", &format!("bytes={start}-{last}"));
        if let Some(tag) = if_range {
            request = request.set("If-Range", tag);
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status, _)) => {
                return Err(FetchError::Http { url: url.into(), status, hint: hint(status).into() })
            }
            Err(ureq::Error::Transport(t)) => return Err(network(t.to_string())),
        };
        let status = response.status();
        if status != 200 && status != 206 {
            return Err(FetchError::Http { url: url.into(), status, hint: hint(status).into() });
        }
        let origin = Origin::from_headers(
            response.header("X-Repo-Commit"),
            response.header("X-Linked-Etag"),
            response.header("X-Linked-Size"),
            response.header("ETag"),
        );
        let range = response.header("Content-Range").and_then(ContentRange::parse);
        let length: Option<u64> = response.header("Content-Length").and_then(|v| v.trim().parse().ok());
        let want = end.saturating_sub(start);
        let whole = status == 200;
        if !crate::fetch::reads_body(whole, start, want, length) {
            return Ok(RangeReply { bytes: Vec::new(), range, whole, length, origin });
        }
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(want)
            .read_to_end(&mut bytes)
            .map_err(|e| network(format!("the connection dropped: {e}")))?;
        let promised = if whole { length } else { range.map(|r| r.last - r.first + 1).or(length) };
        if let Some(n) = promised {
            if (bytes.len() as u64) < n.min(want) {
                return Err(network(format!("the connection dropped after {} of {n} bytes", bytes.len())));
            }
        }
        Ok(RangeReply { bytes, range, whole, length, origin })
    }

    async fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
