//! Part of a safetensors file, downloaded by range: a manifest's file entry may name tensor-name
//! prefixes (`tensors = ["vision_model.", "visual_projection."]`), and then only the header and
//! those tensors' bytes are fetched — the vision tower of a 1.7 GB CLIP checkpoint without its
//! text tower, say. What is stored is a safetensors file of its own: a header listing the kept
//! tensors (dtype, shape, metadata as they were) laid out one after another, then their bytes.
//!
//! It goes through the same store as whole files (chunks written in order, resumed from the
//! last stored chunk, sealed with the sha256 of what is stored) and the same checks on every
//! answer: the model's pinned commit, the ETag sent back as `If-Range` and required unchanged,
//! each Content-Range exactly the range asked for, of the file's one length.

use crate::fetch::{
    complete_record, get_with_retries, ChunkStore, FetchError, FetchOptions, FileRecord, Pin, RangeSource,
    Seal, Stored,
};
use crate::safetensors::{header_span, Header};

/// Where the stored file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The stored file's first bytes: the header length and the header of the kept tensors.
    pub head: Vec<u8>,
    /// Runs of kept bytes: (offset in the stored file, offset in the source file, length),
    /// neighbouring tensors of the source merged into one run.
    pub runs: Vec<(u64, u64, u64)>,
    /// The stored file's length.
    pub total: u64,
}

/// One piece of a span of the stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Bytes `start..end` of [`Layout::head`].
    Head(u64, u64),
    /// Bytes `start..end` of the source file.
    Source(u64, u64),
}

impl Layout {
    /// The subset of `header`'s tensors whose names start with one of `prefixes`; an error
    /// when none does (the file is not what the manifest says).
    pub fn of(header: &Header, prefixes: &[String]) -> Result<Layout, String> {
        let kept: Vec<_> = header
            .tensors
            .iter()
            .filter(|t| prefixes.iter().any(|p| t.name.starts_with(p.as_str())))
            .collect();
        if kept.is_empty() {
            return Err(format!("no tensor's name starts with {}", prefixes.join(" or ")));
        }
        let mut map = serde_json::Map::new();
        if !header.metadata.is_empty() {
            let metadata =
                header.metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())));
            map.insert("__metadata__".into(), serde_json::Value::Object(metadata.collect()));
        }
        let mut offset = 0u64;
        let mut data_runs: Vec<(u64, u64, u64)> = Vec::new();
        for t in &kept {
            let len = t.end - t.start;
            map.insert(
                t.name.clone(),
                serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + len] }),
            );
            match data_runs.last_mut() {
                Some((out, src, run)) if *src + *run == t.start && *out + *run == offset => *run += len,
                _ => data_runs.push((offset, t.start, len)),
            }
            offset += len;
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut head = (json.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&json);
        let data_start = head.len() as u64;
        let runs = data_runs.into_iter().map(|(out, src, len)| (data_start + out, src, len)).collect();
        Ok(Layout { total: data_start + offset, head, runs })
    }

    /// Where bytes `start..end` of the stored file come from, in order.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let head = self.head.len() as u64;
        if start < head {
            out.push(Piece::Head(start, end.min(head)));
        }
        for &(at, src, len) in &self.runs {
            let (a, b) = (start.max(at), end.min(at + len));
            if a < b {
                out.push(Piece::Source(src + (a - at), src + (b - at)));
            }
        }
        out
    }
}

/// The one answer a subset download accepts: exactly bytes `start..end` of a file of one
/// length, from the pinned commit and the ETag first seen.
struct Exact<'a, S, C> {
    source: &'a S,
    store: &'a C,
    key: &'a str,
    url: &'a str,
    options: &'a FetchOptions<'a>,
    etag: Option<String>,
    file_len: Option<u64>,
}

impl<S: RangeSource, C: ChunkStore> Exact<'_, S, C> {
    /// Bytes `start..end`; when the file changed on the server, what is stored of it is
    /// discarded (another version's bytes would follow it).
    async fn get(&mut self, pin: &mut Pin, start: u64, end: u64) -> Result<Vec<u8>, FetchError> {
        let result = self.get_unchecked(pin, start, end).await;
        if let Err(FetchError::Changed { .. }) = &result {
            self.store.remove(self.key).await?;
        }
        result
    }

    async fn get_unchecked(&mut self, pin: &mut Pin, start: u64, end: u64) -> Result<Vec<u8>, FetchError> {
        let url = pin.url(self.url);
        let changed = |detail: String| FetchError::Changed { path: self.key.into(), detail };
        let if_range = self.etag.as_deref();
        let reply =
            get_with_retries(self.source, &url, (start, end), if_range, self.options.cancelled).await?;
        pin.note(self.store, self.key, &reply.origin).await?;
        match (&self.etag, &reply.origin.etag) {
            (None, Some(e)) => self.etag = Some(e.clone()),
            (Some(seen), Some(e)) if seen != e => return Err(changed("its ETag changed".into())),
            _ => {}
        }
        let want = end - start;
        let total = if reply.whole {
            // A whole-file answer is only the range asked for when the file is that range.
            match reply.length {
                Some(n) if start == 0 && n == want => n,
                _ if self.etag.is_some() && start > 0 => {
                    return Err(changed("the server's ETag no longer matches".into()))
                }
                _ => return Err(FetchError::RangeIgnored { url }),
            }
        } else {
            let range = reply.range.ok_or_else(|| FetchError::Size {
                path: self.key.into(),
                detail: "the server does not say which bytes it sent (no readable Content-Range)".into(),
            })?;
            if range.first != start || range.last + 1 != end {
                return Err(FetchError::Size {
                    path: self.key.into(),
                    detail: format!(
                        "asked for bytes {start}-{}, the server sent {}-{}",
                        end - 1,
                        range.first,
                        range.last
                    ),
                });
            }
            range.total.ok_or_else(|| FetchError::Size {
                path: self.key.into(),
                detail: "the server does not say how long the file is".into(),
            })?
        };
        match self.file_len {
            Some(len) if len != total => {
                return Err(changed(format!("the server says {total} bytes, earlier {len}")));
            }
            _ => self.file_len = Some(total),
        }
        if reply.bytes.len() as u64 != want {
            return Err(FetchError::Size {
                path: self.key.into(),
                detail: format!("asked for {want} bytes at {start}, got {}", reply.bytes.len()),
            });
        }
        Ok(reply.bytes)
    }
}

/// Downloads the tensors of the safetensors file at `url` whose names start with one of
/// `prefixes` into the store as a file of their own (resuming what is there), and seals it;
/// `sha256` is the stored file's, when the manifest knows it.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_tensors<S: RangeSource, C: ChunkStore>(
    source: &S,
    store: &C,
    key: &str,
    url: &str,
    prefixes: &[String],
    sha256: Option<&str>,
    pin: &mut Pin,
    options: &FetchOptions<'_>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<FileRecord, FetchError> {
    let chunk = options.chunk_size.max(1);
    let mut state = store.stored(key, chunk).await?;
    if let Some(record) = complete_record(store, key, chunk, &state, sha256).await? {
        return Ok(record);
    }
    let mut exact = Exact { source, store, key, url, options, etag: None, file_len: None };
    let first8 = exact.get(pin, 0, 8).await?;
    let file_len = exact.file_len.unwrap_or(8);
    let bad = |e: crate::safetensors::SafetensorsError| FetchError::Size {
        path: key.into(),
        detail: e.to_string(),
    };
    let span = header_span(first8.as_slice().try_into().expect("8 bytes"), file_len).map_err(bad)?;
    let mut prefix = first8;
    prefix.extend(exact.get(pin, 8, span).await?);
    let header = Header::parse(&prefix, file_len).map_err(bad)?;
    let layout =
        Layout::of(&header, prefixes).map_err(|detail| FetchError::Size { path: key.into(), detail })?;
    if state.total.is_some_and(|t| t != layout.total) {
        // Another subset (the manifest changed) or another file: start over.
        store.remove(key).await?;
        state = Stored::default();
    }
    if state.total.is_none() {
        store.set_total(key, layout.total).await?;
    }
    let mut index = state.chunks;
    progress((index * chunk).min(layout.total), Some(layout.total));
    while index * chunk < layout.total {
        if (options.cancelled)() {
            return Err(FetchError::Cancelled);
        }
        let (start, end) = (index * chunk, ((index + 1) * chunk).min(layout.total));
        let mut bytes = Vec::with_capacity((end - start) as usize);
        for piece in layout.pieces(start, end) {
            match piece {
                Piece::Head(a, b) => bytes.extend_from_slice(&layout.head[a as usize..b as usize]),
                Piece::Source(a, b) => bytes.extend(exact.get(pin, a, b).await?),
            }
        }
        store.write_chunk(key, index, chunk, &bytes).await?;
        index += 1;
        progress(end, Some(layout.total));
    }
    let seal =
        Seal { total: layout.total, sha256, sha256_from: "the manifest", commit: pin.commit.as_deref() };
    store.seal(key, chunk, &seal).await
}
