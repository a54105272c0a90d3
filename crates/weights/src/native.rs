//! The native side of the download: a cache folder as the chunk store (each model a diffusers
//! folder once complete, so `darkroom generate` reads it directly) and an HTTP client.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fetch::{ChunkStore, FetchError, RangeReply, RangeSource, Stored};

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

    async fn mark_complete(&self, key: &str) -> Result<(), FetchError> {
        let (from, to) = (self.partial(key), self.complete(key));
        if !from.exists() {
            // An empty file never wrote a chunk.
            if let Some(dir) = to.parent() {
                fs::create_dir_all(dir).map_err(|e| store_err(dir, e))?;
            }
            File::create(&from).map_err(|e| store_err(&from, e))?;
        }
        fs::rename(&from, &to).map_err(|e| store_err(&to, e))?;
        let _ = fs::remove_file(self.length_file(key));
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), FetchError> {
        for path in [self.complete(key), self.partial(key), self.length_file(key)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(store_err(&path, e)),
                _ => {}
            }
        }
        Ok(())
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

/// `bytes a-b/total` → total.
fn content_range_total(value: &str) -> Option<u64> {
    value.trim().strip_prefix("bytes")?.trim().split('/').nth(1)?.trim().parse().ok()
}

impl RangeSource for HttpSource {
    async fn get_range(&self, url: &str, start: u64, end: u64) -> Result<RangeReply, FetchError> {
        let network = |detail: String| FetchError::Network { url: url.into(), detail };
        let last = end.max(start + 1) - 1;
        let response = match self.agent.get(url).set("Range", &format!("bytes={start}-{last}")).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(status, _)) => {
                return Err(FetchError::Http { url: url.into(), status, hint: hint(status).into() })
            }
            Err(ureq::Error::Transport(t)) => return Err(network(t.to_string())),
        };
        let status = response.status();
        let total_header = response.header("Content-Range").and_then(content_range_total);
        let length: Option<u64> = response.header("Content-Length").and_then(|v| v.trim().parse().ok());
        let mut bytes = Vec::new();
        let limit = if status == 206 { end - start } else { length.unwrap_or(end) };
        response
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| network(format!("the connection dropped: {e}")))?;
        if let Some(n) = length {
            if (bytes.len() as u64) < n.min(limit) {
                return Err(network(format!("the connection dropped after {} of {n} bytes", bytes.len())));
            }
        }
        let total = match status {
            206 => total_header,
            _ => Some(bytes.len() as u64), // 200: the server ignored Range and sent the whole file
        };
        Ok(RangeReply { bytes, total })
    }

    async fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::content_range_total;

    #[test]
    fn content_range_totals() {
        assert_eq!(content_range_total("bytes 0-99/1234"), Some(1234));
        assert_eq!(content_range_total("bytes 0-99/*"), None);
        assert_eq!(content_range_total("items 0-1/2"), None);
    }
}
