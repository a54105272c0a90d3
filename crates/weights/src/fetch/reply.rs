//! What a server answers to a Range request, read strictly: Hugging Face's provenance headers
//! ([`Origin`]), `Content-Range`, and whether a body may be read at all.

/// What a server says of a file beside its bytes (Hugging Face's headers, where readable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// `X-Repo-Commit`: the commit the requested revision resolved to.
    pub commit: Option<String>,
    /// `X-Linked-Etag` of an LFS file: its sha256.
    pub sha256: Option<String>,
    /// `X-Linked-Size` of an LFS file.
    pub size: Option<u64>,
    /// `ETag`, sent back as `If-Range` when the file is resumed.
    pub etag: Option<String>,
}

impl Origin {
    /// From header values as they come (`None` where a header is absent or unreadable): quotes
    /// and a weak prefix are removed, and a value of the wrong form is ignored.
    pub fn from_headers(
        commit: Option<&str>,
        linked_etag: Option<&str>,
        linked_size: Option<&str>,
        etag: Option<&str>,
    ) -> Origin {
        let hex = |v: &str, lens: &[usize]| {
            let v = v.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
            (lens.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
        };
        Origin {
            commit: commit.and_then(|c| hex(c, &[40, 64])),
            sha256: linked_etag.and_then(|e| hex(e, &[64])),
            size: linked_size.and_then(|s| s.trim().parse().ok()),
            etag: etag.map(|e| e.trim().to_string()).filter(|e| !e.is_empty() && e.len() < 200),
        }
    }
}

/// A `Content-Range: bytes first-last/total` header (`total` is `None` for `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: Option<u64>,
}

impl ContentRange {
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes")?.trim_start();
        let (span, total) = rest.split_once('/')?;
        let (first, last) = span.trim().split_once('-')?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
        (first <= last).then_some(ContentRange { first, last, total })
    }
}

/// One answer to a Range request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeReply {
    /// The body: at most the bytes asked for (a transport never reads more).
    pub bytes: Vec<u8>,
    /// A 206's Content-Range, where the browser lets us read it.
    pub range: Option<ContentRange>,
    /// The server answered 200 (it ignored Range). `bytes` then holds the whole file only when
    /// it fits in the range asked for ([`RangeReply::length`] says its length); a longer body is
    /// not read.
    pub whole: bool,
    /// A 200's Content-Length.
    pub length: Option<u64>,
    pub origin: Origin,
}

/// Whether a transport reads an answer's body: not when it is longer than the `want` bytes
/// asked for, nor when the server ignored Range (`whole`, a 200) for a part after the start or
/// without saying how long the body is — such a body could be any size.
pub fn reads_body(whole: bool, start: u64, want: u64, content_length: Option<u64>) -> bool {
    let longer = content_length.is_some_and(|n| n > want);
    !(longer || (whole && (start > 0 || content_length.is_none())))
}
