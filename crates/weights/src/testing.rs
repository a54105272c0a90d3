//! A small HTTP/1.1 file server with Range support and fault injection, for the download
//! tests of this crate and of the CLI (native only; nothing in the app uses it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The commit the test server says its files are at (`X-Repo-Commit`) unless told otherwise.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
pub struct Faults {
    /// Path → bytes after which the next answer for it is cut off (once).
    pub drop_after: HashMap<String, usize>,
    /// Paths served with one byte flipped.
    pub corrupt: Vec<String>,
    /// Path → how many 500 answers to give first.
    pub errors: HashMap<String, u32>,
    /// Paths answered 200 with the whole file, Range ignored.
    pub ignore_range: Vec<String>,
    /// Path → bytes by which the answered range is shifted from the one asked for.
    pub shift: HashMap<String, u64>,
    /// Sends no Hugging Face headers (`X-Repo-Commit`, `X-Linked-*`, `ETag`).
    pub plain: bool,
    /// An upstream update: (its commit, the folder of its files). Requests for any revision
    /// but [`COMMIT`] get these files and this commit from then on; requests pinned to
    /// [`COMMIT`] still get the original files, as the Hub serves a pinned revision.
    pub update: Option<(String, PathBuf)>,
    /// Every request: (path, range start).
    pub log: Vec<(String, u64)>,
    /// The revision each request named (after `resolve/`), in order; empty for plain paths.
    pub revisions: Vec<String>,
}

/// A tiny HTTP/1.1 server for the files of `root`, honouring Range, with `faults`. Paths may
/// use the Hub's layout (`<repo>/resolve/<revision>/<file>`) or be plain.
pub fn serve(root: PathBuf, faults: Arc<Mutex<Faults>>) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(read_half) = stream.try_clone() else { continue };
            let mut reader = BufReader::new(read_half);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range = None;
            let mut if_range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range = v
                        .trim()
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                }
                if lower.starts_with("if-range:") {
                    if_range = Some(line["if-range:".len()..].trim().to_string());
                }
            }
            let target = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let (revision, path) = match target.split_once("/resolve/") {
                Some((_, rest)) => match rest.split_once('/') {
                    Some((rev, file)) => (Some(rev.to_string()), file.to_string()),
                    None => (None, target.clone()),
                },
                None => (None, target.clone()),
            };
            let mut f = faults.lock().unwrap_or_else(|p| p.into_inner());
            f.log.push((path.clone(), range.map_or(0, |r| r.0)));
            if let Some(rev) = &revision {
                f.revisions.push(rev.clone());
            }
            if let Some(n) = f.errors.get_mut(&path).filter(|n| **n > 0) {
                *n -= 1;
                let _ = stream.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let pinned_to_original = revision.as_deref() == Some(COMMIT);
            let (commit, folder) = match &f.update {
                Some((commit, folder)) if !pinned_to_original => (commit.clone(), folder.clone()),
                _ => (COMMIT.to_string(), root.clone()),
            };
            let Ok(mut data) = std::fs::read(folder.join(&path)) else {
                let _ = stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            };
            // The Hub's headers: LFS files (weights) carry their sha256 and size.
            let sha: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
            let etag = format!("\"{sha}\"");
            let mut hub = String::new();
            if !f.plain {
                hub.push_str(&format!("X-Repo-Commit: {commit}\r\nETag: {etag}\r\n"));
                if path.ends_with(".safetensors") {
                    hub.push_str(&format!("X-Linked-Etag: {etag}\r\nX-Linked-Size: {}\r\n", data.len()));
                }
            }
            if f.corrupt.contains(&path) {
                let mid = data.len() / 2;
                data[mid] ^= 0x55;
            }
            let total = data.len() as u64;
            let stale = if_range.as_deref().is_some_and(|tag| tag != etag);
            if range.is_none() || stale || f.ignore_range.contains(&path) {
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n{hub}Connection: close\r\n\r\n");
                drop(f);
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&data);
                continue;
            }
            let (a, b) = range.unwrap_or((0, total.saturating_sub(1)));
            let b = b.min(total.saturating_sub(1));
            if a > b || a >= total {
                let _ = stream.write_all(format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
                continue;
            }
            let shift = f.shift.get(&path).copied().unwrap_or(0);
            let (a, b) = ((a + shift).min(total - 1), (b + shift).min(total - 1));
            let body = &data[a as usize..=b as usize];
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{total}\r\nContent-Length: {}\r\n{hub}Connection: close\r\n\r\n",
                body.len()
            );
            let cut = f.drop_after.remove(&path);
            drop(f);
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..cut.unwrap_or(body.len()).min(body.len())]);
        }
    });
    Ok(format!("http://{addr}"))
}

/// A safetensors file from named tensors (dtype name, shape, bytes), in the given order.
pub fn safetensors_bytes(tensors: &[(String, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    crate::safetensors::write(tensors)
}

/// The tiny test model (`fixtures/tiny-sd`) as a single-file checkpoint, every tensor named as
/// diffusers reads such a file (`fixtures/ldm/tiny-sd-ldm-map.json`, made and checked by
/// tests/reference/ldm_checkpoint.py), plus what real checkpoints carry besides: EMA weights'
/// bookkeeping and training state.
pub fn tiny_ldm_checkpoint(fixtures: &std::path::Path) -> Vec<u8> {
    use crate::checkpoint::Component;
    use crate::{Dtype, SafetensorsFile};
    let map =
        std::fs::read_to_string(fixtures.join("ldm/tiny-sd-ldm-map.json")).expect("the LDM map fixture");
    let entries: Vec<(String, String, String, Vec<u64>)> =
        serde_json::from_str(&map).expect("the LDM map parses");
    let file = |c: Component| {
        let bytes = std::fs::read(fixtures.join("tiny-sd").join(c.path())).expect("the tiny model");
        SafetensorsFile::from_bytes(bytes).expect("the tiny model parses")
    };
    let files: HashMap<&str, SafetensorsFile> = Component::SD.iter().map(|&c| (c.name(), file(c))).collect();
    let mut tensors = vec![("alphas_cumprod".to_string(), "F32", vec![2], vec![0; 8])];
    for (ldm, component, name, shape) in entries {
        let file = &files[component.as_str()];
        let info = file.header.get(&name).expect("the map names the tiny model's tensors");
        let dtype = match info.dtype {
            Dtype::F16 => "F16",
            _ => "F32",
        };
        tensors.push((ldm, dtype, shape, file.tensor_bytes(info).to_vec()));
    }
    tensors.push(("model_ema.decay".to_string(), "F32", vec![], vec![0; 4]));
    safetensors_bytes(&tensors)
}

/// The tiny SDXL (`fixtures/tiny-sdxl`) as a single-file checkpoint, every tensor named and laid
/// out as diffusers reads such a file (`fixtures/ldm/tiny-sdxl-ldm-map.json`, made and checked by
/// tests/reference/sdxl_checkpoint.py): OpenCLIP's q/k/v rows fused into `in_proj`, its
/// `text_projection` transposed; plus training state a pipeline does not use.
pub fn tiny_sdxl_ldm_checkpoint(fixtures: &std::path::Path) -> Vec<u8> {
    use crate::{Dtype, SafetensorsFile};
    let map = std::fs::read_to_string(fixtures.join("ldm/tiny-sdxl-ldm-map.json")).expect("the SDXL LDM map");
    let entries: Vec<(String, String, String, Vec<u64>, String)> =
        serde_json::from_str(&map).expect("the SDXL LDM map parses");
    let mut files: HashMap<String, SafetensorsFile> = HashMap::new();
    // (name, dtype, shape, parts by q/k/v or whole)
    let mut tensors: Vec<(String, &str, Vec<u64>, Vec<(String, Vec<u8>)>)> = Vec::new();
    for (ldm, component, name, shape, part) in entries {
        let file = files.entry(component.clone()).or_insert_with(|| {
            let weights = if component.starts_with("text_encoder") {
                "model.safetensors"
            } else {
                "diffusion_pytorch_model.safetensors"
            };
            let bytes = std::fs::read(fixtures.join("tiny-sdxl").join(&component).join(weights))
                .expect("the tiny SDXL");
            SafetensorsFile::from_bytes(bytes).expect("the tiny SDXL parses")
        });
        let info = file.header.get(&name).expect("the map names the tiny SDXL's tensors");
        let (dtype, size) = match info.dtype {
            Dtype::F16 => ("F16", 2),
            _ => ("F32", 4),
        };
        let mut bytes = file.tensor_bytes(info).to_vec();
        if part == "T" {
            let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
            let mut t = vec![0u8; bytes.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[(c * rows + r) * size..(c * rows + r + 1) * size]
                        .copy_from_slice(&bytes[(r * cols + c) * size..(r * cols + c + 1) * size]);
                }
            }
            bytes = t;
        }
        match tensors.iter_mut().find(|t| t.0 == ldm) {
            Some(entry) => entry.3.push((part, bytes)),
            None => tensors.push((ldm, dtype, shape, vec![(part, bytes)])),
        }
    }
    let mut out = vec![("model_ema.num_updates".to_string(), "F32", vec![], vec![0; 4])];
    for (name, dtype, shape, mut parts) in tensors {
        parts.sort_by_key(|(p, _)| ["", "T", "q", "k", "v"].iter().position(|x| x == p));
        out.push((name, dtype, shape, parts.into_iter().flat_map(|(_, b)| b).collect()));
    }
    safetensors_bytes(&out)
}
