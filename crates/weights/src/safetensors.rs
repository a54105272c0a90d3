//! The safetensors header, read from a file's first bytes without holding the rest.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON mapping tensor names to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the data after the header),
//! an optional `__metadata__` map of strings, then the tensor bytes.
//! Everything in the header is checked against the file length before any tensor is read, so a
//! truncated or hostile file is an error naming the problem, never a panic or a huge allocation.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

/// Headers larger than this are refused: real checkpoints have headers under 2 MB (an SDXL
/// single file with its ~2,500 tensors: about 250 kB), and a header is held whole in memory.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

#[derive(Debug, Error, PartialEq)]
pub enum SafetensorsError {
    #[error("the file is too short to be safetensors ({0} bytes)")]
    TooShort(u64),
    #[error("the safetensors header claims {0} bytes, over the {MAX_HEADER_BYTES}-byte limit: this is not a safetensors file or it is corrupt")]
    HeaderTooLarge(u64),
    #[error("the safetensors header claims {header} bytes but the file has only {file} after the length field: the file is truncated")]
    HeaderPastEnd { header: u64, file: u64 },
    #[error("the safetensors header is not valid JSON: {0}")]
    BadJson(String),
    #[error("the safetensors header names tensor `{0}` twice")]
    DuplicateKey(String),
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor `{name}`: {detail}")]
    BadTensor { name: String, detail: String },
}

/// A safetensors file of `(name, dtype name, shape, little-endian bytes)`, in that order, the
/// data aligned to 8 bytes.
pub fn write(tensors: &[(String, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        let entry = serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()] });
        header.insert(name.clone(), entry);
        offset += bytes.len();
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("a JSON map serializes");
    while (8 + json.len()) % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}

/// Element types found in Stable Diffusion checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    I64,
    I32,
    U8,
    I8,
    Bool,
    F64,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "U8" => Dtype::U8,
            "I8" => Dtype::I8,
            "BOOL" => Dtype::Bool,
            "F64" => Dtype::F64,
            _ => return None,
        })
    }

    /// As a safetensors header writes it.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::Bool => "BOOL",
            Dtype::F64 => "F64",
        }
    }

    pub fn size_bytes(self) -> u64 {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 | Dtype::I8 | Dtype::Bool => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Absolute byte range in the file.
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    /// Tensors in file order (ascending offsets), which is the order a stream delivers them.
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    /// Where tensor data begins: 8 + header length.
    pub data_start: u64,
}

/// How many bytes from the file's start must be read before [`Header::parse`] can run:
/// the first 8 bytes tell.
pub fn header_span(first8: [u8; 8], file_len: u64) -> Result<u64, SafetensorsError> {
    let n = u64::from_le_bytes(first8);
    if n > MAX_HEADER_BYTES {
        return Err(SafetensorsError::HeaderTooLarge(n));
    }
    if n > file_len.saturating_sub(8) {
        return Err(SafetensorsError::HeaderPastEnd { header: n, file: file_len.saturating_sub(8) });
    }
    Ok(8 + n)
}

/// Whether the length field in `pending` (8 bytes) announces an empty header.
fn header_span_ready(pending: &[u8]) -> bool {
    pending.len() == 8 && pending.iter().all(|&b| b == 0)
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

impl Header {
    /// Parses the header from `prefix` (at least [`header_span`] bytes of the file) and checks
    /// every tensor against `file_len`: known dtype, size equal to its shape, inside the data,
    /// no overlaps.
    pub fn parse(prefix: &[u8], file_len: u64) -> Result<Header, SafetensorsError> {
        let first8: [u8; 8] = prefix
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or(SafetensorsError::TooShort(prefix.len() as u64))?;
        let span = header_span(first8, file_len)?;
        let json = prefix.get(8..span as usize).ok_or(SafetensorsError::TooShort(prefix.len() as u64))?;
        let entries = parse_entries(json)?;

        let data_len = file_len - span;
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if name == "__metadata__" {
                metadata = serde_json::from_value(value)
                    .map_err(|e| SafetensorsError::BadJson(format!("__metadata__: {e}")))?;
                continue;
            }
            let bad = |detail: String| SafetensorsError::BadTensor { name: name.clone(), detail };
            let raw: RawTensor = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            let dtype = Dtype::parse(&raw.dtype).ok_or_else(|| SafetensorsError::UnsupportedDtype {
                name: name.clone(),
                dtype: raw.dtype.clone(),
            })?;
            let [begin, end] = raw.data_offsets;
            if begin > end || end > data_len {
                return Err(bad(format!("bytes {begin}..{end} fall outside the {data_len} data bytes")));
            }
            let elements = raw
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("shape {:?} overflows", raw.shape)))?;
            let expected = elements
                .checked_mul(dtype.size_bytes())
                .ok_or_else(|| bad(format!("shape {:?} overflows", raw.shape)))?;
            if end - begin != expected {
                return Err(bad(format!(
                    "shape {:?} of {:?} needs {expected} bytes but it spans {}",
                    raw.shape,
                    dtype,
                    end - begin
                )));
            }
            tensors.push(TensorInfo { name, dtype, shape: raw.shape, start: span + begin, end: span + end });
        }
        tensors.sort_by_key(|t| (t.start, t.end));
        for pair in tensors.windows(2) {
            if pair[1].start < pair[0].end {
                return Err(SafetensorsError::BadTensor {
                    name: pair[1].name.clone(),
                    detail: format!("overlaps `{}`", pair[0].name),
                });
            }
        }
        Ok(Header { tensors, metadata, data_start: span })
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// The header's top-level entries in their order; a name given twice is an error (a JSON map
/// would keep the last silently, so two readers could disagree on which bytes a tensor is).
fn parse_entries(json: &[u8]) -> Result<Vec<(String, serde_json::Value)>, SafetensorsError> {
    use serde::de::{Deserializer, MapAccess, Visitor};

    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Result<Vec<(String, serde_json::Value)>, SafetensorsError>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of tensors")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, serde_json::Value)> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                if !seen.insert(name.clone()) {
                    return Ok(Err(SafetensorsError::DuplicateKey(name)));
                }
                out.push((name, value));
            }
            Ok(Ok(out))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let entries = de.deserialize_map(Entries).map_err(|e| SafetensorsError::BadJson(e.to_string()))?;
    de.end().map_err(|e| SafetensorsError::BadJson(e.to_string()))?;
    entries
}

/// Reads a safetensors file as its bytes arrive, in any slicing: the header first (bounded),
/// then each tensor as soon as its last byte is in. Holds at most the header, one tensor and
/// the bytes of the current chunk, never the whole file. Gaps between tensors are skipped.
pub struct SafetensorsStream {
    file_len: u64,
    /// Bytes consumed from the file so far.
    position: u64,
    pending: Vec<u8>,
    header: Option<Header>,
    /// Index of the next tensor to deliver.
    next: usize,
}

impl SafetensorsStream {
    /// `file_len` is known from the manifest or the server's Content-Range.
    pub fn new(file_len: u64) -> SafetensorsStream {
        SafetensorsStream { file_len, position: 0, pending: Vec::new(), header: None, next: 0 }
    }

    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Feeds the next bytes of the file; returns the tensors completed by them, in file order.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<(TensorInfo, Vec<u8>)>, SafetensorsError> {
        if self.position + bytes.len() as u64 > self.file_len {
            return Err(SafetensorsError::BadTensor {
                name: "(stream)".into(),
                detail: format!("more than the announced {} bytes arrived", self.file_len),
            });
        }
        let mut done = Vec::new();
        while !bytes.is_empty() {
            let Some(header) = &self.header else {
                // Collect the length field, then the header itself.
                let want = if self.pending.len() < 8 {
                    8
                } else {
                    let first8: [u8; 8] = self.pending[..8].try_into().expect("8 bytes");
                    header_span(first8, self.file_len)? as usize
                };
                let take = (want - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..take]);
                self.position += take as u64;
                bytes = &bytes[take..];
                // A zero header length leaves nothing to collect: it is parsed (and refused)
                // at once rather than waited for.
                if self.pending.len() == want && (want > 8 || header_span_ready(&self.pending)) {
                    self.header = Some(Header::parse(&self.pending, self.file_len)?);
                    self.pending.clear();
                }
                continue;
            };
            let Some(tensor) = header.tensors.get(self.next) else {
                // Past the last tensor: trailing bytes are ignored.
                self.position += bytes.len() as u64;
                break;
            };
            if self.position < tensor.start {
                let skip = ((tensor.start - self.position) as usize).min(bytes.len());
                self.position += skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let size = (tensor.end - tensor.start) as usize;
            let take = (size - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            self.position += take as u64;
            bytes = &bytes[take..];
            if self.pending.len() == size {
                done.push((tensor.clone(), std::mem::take(&mut self.pending)));
                self.next += 1;
            }
        }
        // Zero-sized tensors complete without bytes.
        while let Some(t) = self.header.as_ref().and_then(|h| h.tensors.get(self.next)) {
            if t.start != t.end || self.position < t.start {
                break;
            }
            done.push((t.clone(), Vec::new()));
            self.next += 1;
        }
        Ok(done)
    }

    /// Whether every tensor has been delivered.
    pub fn is_complete(&self) -> bool {
        self.header.as_ref().is_some_and(|h| self.next == h.tensors.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data_len: usize) -> Vec<u8> {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        bytes
    }

    #[test]
    fn parses_tensors_in_file_order_with_absolute_offsets() {
        let json = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}"#;
        let bytes = file(json, 12);
        let h = Header::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(h.data_start, 8 + json.len() as u64);
        assert_eq!(h.tensors.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h.get("b").unwrap().start, h.data_start + 4);
        assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
    }

    #[test]
    fn rejects_bad_files_with_a_reason() {
        let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let bytes = file(ok, 8);
        // Truncated data.
        assert!(matches!(
            Header::parse(&bytes, bytes.len() as u64 - 1),
            Err(SafetensorsError::BadTensor { .. })
        ));
        // Header longer than the file.
        assert!(matches!(Header::parse(&bytes, 20), Err(SafetensorsError::HeaderPastEnd { .. })));
        // Absurd header length (e.g. a .ckpt pickle fed in by mistake).
        let mut pickle = vec![0x80, 0x02, b'c', b'c', b'o', b'l', b'l', b'e'];
        pickle.resize(64, 0);
        assert!(matches!(Header::parse(&pickle, 64), Err(SafetensorsError::HeaderTooLarge(_))));
        // Size that does not match the shape.
        let wrong = file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8);
        assert!(matches!(Header::parse(&wrong, wrong.len() as u64), Err(SafetensorsError::BadTensor { .. })));
        // Overlapping tensors.
        let overlap = file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            8,
        );
        let err = Header::parse(&overlap, overlap.len() as u64).unwrap_err();
        assert_eq!(err, SafetensorsError::BadTensor { name: "b".into(), detail: "overlaps `a`".into() });
        // Unknown dtype.
        let odd = file(r#"{"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#, 8);
        assert!(matches!(
            Header::parse(&odd, odd.len() as u64),
            Err(SafetensorsError::UnsupportedDtype { .. })
        ));
        // Not enough prefix bytes.
        assert_eq!(Header::parse(&bytes[..5], bytes.len() as u64), Err(SafetensorsError::TooShort(5)));
        // The same name twice: serde's map would keep the second silently.
        let twice = file(
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
            2,
        );
        assert_eq!(
            Header::parse(&twice, twice.len() as u64),
            Err(SafetensorsError::DuplicateKey("a".into()))
        );
        // A header just over the cap is refused before it is read.
        let mut big = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        big.resize(64, b' ');
        assert_eq!(
            Header::parse(&big, MAX_HEADER_BYTES + 100),
            Err(SafetensorsError::HeaderTooLarge(MAX_HEADER_BYTES + 1))
        );
        // Trailing bytes after the JSON object inside the header.
        let trailing = file(r#"{} x"#, 0);
        assert!(matches!(Header::parse(&trailing, trailing.len() as u64), Err(SafetensorsError::BadJson(_))));
    }

    #[test]
    fn non_finite_weights_are_refused_by_name() {
        let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
        for (dtype, bytes) in [
            (Dtype::F32, [1.0f32.to_le_bytes(), f32::NAN.to_le_bytes()].concat()),
            (Dtype::F16, [f16(0.5), f16(f32::INFINITY)].concat()),
            (Dtype::F64, [1.0f64.to_le_bytes(), 1e300f64.to_le_bytes()].concat()),
        ] {
            let info =
                TensorInfo { name: "w".into(), dtype, shape: vec![2], start: 0, end: bytes.len() as u64 };
            let err = decode_f32(&info, &bytes).unwrap_err().to_string();
            assert!(err.contains("tensor `w`: element 1 of 2"), "{dtype:?}: {err}");
        }
        let info = TensorInfo { name: "w".into(), dtype: Dtype::F32, shape: vec![1], start: 0, end: 4 };
        assert_eq!(decode_f32(&info, &2.5f32.to_le_bytes()), Ok(vec![2.5]));
    }

    #[test]
    fn a_zero_header_length_is_an_error_not_a_wait() {
        // Eight zero bytes then data: the stream used to wait forever for a header of 0 bytes.
        let bytes = vec![0u8; 40];
        for piece in [1, 7, 8, 13, 40] {
            let mut stream = SafetensorsStream::new(bytes.len() as u64);
            let mut result = Ok(Vec::new());
            for part in bytes.chunks(piece) {
                result = stream.push(part);
                if result.is_err() {
                    break;
                }
            }
            assert!(matches!(result, Err(SafetensorsError::BadJson(_))), "pieces of {piece}: {result:?}");
        }
        assert!(matches!(Header::parse(&bytes, 40), Err(SafetensorsError::BadJson(_))));
    }
}

/// A whole safetensors file in memory, for small models and tests (large checkpoints stream
/// through [`Header`] instead).
pub struct SafetensorsFile {
    pub header: Header,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafetensorsFile, SafetensorsError> {
        let header = Header::parse(&bytes, bytes.len() as u64)?;
        Ok(SafetensorsFile { header, bytes })
    }

    /// The whole file.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes[info.start as usize..info.end as usize]
    }

    /// The tensor's values as f32 (from F32, F16, BF16 or F64).
    pub fn to_f32(&self, info: &TensorInfo) -> Result<Vec<f32>, SafetensorsError> {
        decode_f32(info, self.tensor_bytes(info))
    }
}

/// Floating-point tensor bytes (little-endian F32, F16, BF16 or F64) as f32 values. A NaN or
/// an infinity (or an F64 beyond f32's range) is refused: no released weight holds one, and one
/// would turn every image black or grey with no other sign of the damage.
pub fn decode_f32(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>, SafetensorsError> {
    let values = decode_any_f32(info, bytes)?;
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(SafetensorsError::BadTensor {
            name: info.name.clone(),
            detail: format!(
                "element {at} of {} is {}: the file is damaged (weights must be finite numbers)",
                values.len(),
                values[at]
            ),
        });
    }
    Ok(values)
}

fn decode_any_f32(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>, SafetensorsError> {
    Ok(match info.dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        Dtype::BF16 => {
            bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        other => {
            return Err(SafetensorsError::BadTensor {
                name: info.name.clone(),
                detail: format!("{other:?} is not a floating-point weight"),
            })
        }
    })
}
