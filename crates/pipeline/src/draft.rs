//! Drafts, then finals. A draft is decoded by TAESD (milliseconds, where the full VAE costs more
//! than a UNet step at 512x512) and carries its final latents and its recipe inside its PNG, in
//! a private ancillary chunk (`drLT`: not safe to copy, so an editor that changes the pixels
//! drops it). Finishing decodes those latents with the full VAE — no sampler run — and gives the
//! pixels and parameters a direct generation with the same recipe gives.
//!
//! The chunk's data is zlib-compressed: one line of JSON (`format`, `version`, `index`, `shape`,
//! `recipe`), a newline, then the latents as little-endian f32 (scaled, as the UNet makes them).

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::recipe::{Recipe, MAX_SIDE};
use crate::PipelineError;

/// The PNG chunk type: ancillary, private, not safe to copy.
pub const CHUNK: [u8; 4] = *b"drLT";
const FORMAT: &str = "darkroom-latents";
const VERSION: u32 = 1;
/// Far above any latents a recipe can make (a 2048x2048 SDXL image's are 1 MiB).
const MAX_PAYLOAD: u64 = 64 << 20;
const MAX_CHANNELS: usize = 64;

/// One image's final latents and the recipe (and batch index) that made them.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// The batch's recipe as run, `draft` set.
    pub recipe: Recipe,
    /// The image's place in its batch (its seed is the recipe's + index).
    pub index: usize,
    /// [1, channels, height / 8, width / 8].
    pub shape: [usize; 4],
    pub values: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    index: usize,
    shape: [usize; 4],
    recipe: Recipe,
}

fn bad(why: impl std::fmt::Display) -> PipelineError {
    PipelineError::Input(format!("the draft's kept latents are damaged: {why}"))
}

impl Kept {
    /// The recipe that finishes this image: the draft's, drafts off.
    pub fn final_recipe(&self) -> Recipe {
        Recipe { draft: false, ..self.recipe.clone() }
    }

    /// The chunk's data.
    pub fn encode(&self) -> Result<Vec<u8>, PipelineError> {
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            index: self.index,
            shape: self.shape,
            recipe: self.recipe.clone(),
        };
        let mut raw = serde_json::to_vec(&header).map_err(|e| PipelineError::Input(e.to_string()))?;
        raw.push(b'\n');
        raw.reserve(self.values.len() * 4);
        for v in &self.values {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).and_then(|_| z.finish()).map_err(|e| PipelineError::Input(e.to_string()))
    }

    /// Reads and checks a chunk's data.
    pub fn decode(data: &[u8]) -> Result<Kept, PipelineError> {
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(data)
            .take(MAX_PAYLOAD + 1)
            .read_to_end(&mut raw)
            .map_err(|e| bad(format!("not zlib data ({e})")))?;
        if raw.len() as u64 > MAX_PAYLOAD {
            return Err(bad("larger than any latents an image has"));
        }
        let split = raw.iter().position(|&b| b == b'\n').ok_or_else(|| bad("no header"))?;
        let header: Header =
            serde_json::from_slice(&raw[..split]).map_err(|e| bad(format!("header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format {:?}", header.format)));
        }
        if header.version != VERSION {
            return Err(PipelineError::Input(format!(
                "the draft was written by a newer Darkroom (latents version {}); update to finish it",
                header.version
            )));
        }
        let [one, c, h, w] = header.shape;
        let r = &header.recipe;
        if one != 1 || c == 0 || c > MAX_CHANNELS || h == 0 || w == 0 || h * 8 > MAX_SIDE || w * 8 > MAX_SIDE
        {
            return Err(bad(format!("shape {:?}", header.shape)));
        }
        if (h * 8, w * 8) != (r.height, r.width) {
            return Err(bad(format!("{:?} latents for a {}x{} image", header.shape, r.width, r.height)));
        }
        if header.index >= r.batch_size.max(1) {
            return Err(bad(format!("image {} of a batch of {}", header.index, r.batch_size)));
        }
        let body = &raw[split + 1..];
        if body.len() != c * h * w * 4 {
            return Err(bad(format!("{} bytes of latents for shape {:?}", body.len(), header.shape)));
        }
        let values: Vec<f32> =
            body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad("a value is not finite"));
        }
        Ok(Kept { recipe: header.recipe, index: header.index, shape: header.shape, values })
    }

    /// `png` with this image's latents added as a `drLT` chunk before its end.
    pub fn attach(&self, png: &[u8]) -> Result<Vec<u8>, PipelineError> {
        let iend = chunks(png)?
            .into_iter()
            .find(|c| &c.kind == b"IEND")
            .ok_or_else(|| PipelineError::Input("the PNG has no end chunk".into()))?;
        let data = self.encode()?;
        let mut out = Vec::with_capacity(png.len() + data.len() + 12);
        out.extend_from_slice(&png[..iend.start]);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&CHUNK);
        crc.update(&data);
        out.extend_from_slice(&CHUNK);
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
        out.extend_from_slice(&png[iend.start..]);
        Ok(out)
    }

    /// The latents a draft PNG carries; `None` for a PNG that is not a draft.
    pub fn from_png(png: &[u8]) -> Result<Option<Kept>, PipelineError> {
        match chunks(png)?.into_iter().find(|c| c.kind == CHUNK) {
            Some(c) => Kept::decode(&png[c.data.clone()]).map(Some),
            None => Ok(None),
        }
    }
}

/// Whether `png` carries kept latents (a draft), from its chunk headers alone (no CRC or
/// decompression: cheap enough for every image of a board).
pub fn carries_latents(png: &[u8]) -> bool {
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
        if png[at + 4..at + 8] == CHUNK {
            return true;
        }
        match at.checked_add(12 + len) {
            Some(next) => at = next,
            None => return false,
        }
    }
    false
}

/// `png` without its kept latents (a finished image replaces its draft's pixels and drops them).
pub fn strip(png: &[u8]) -> Result<Vec<u8>, PipelineError> {
    let mut out = png[..8].to_vec();
    for c in chunks(png)? {
        if c.kind != CHUNK {
            out.extend_from_slice(&png[c.start..c.data.end + 4]);
        }
    }
    Ok(out)
}

struct Chunk {
    kind: [u8; 4],
    /// Where its length field begins.
    start: usize,
    data: std::ops::Range<usize>,
}

/// A PNG's chunks, each checked against its CRC.
fn chunks(png: &[u8]) -> Result<Vec<Chunk>, PipelineError> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let not_png =
        |why: &str| PipelineError::Input(format!("this is not a PNG file, or it is damaged: {why}"));
    if png.len() < 8 || png[..8] != SIGNATURE {
        return Err(not_png("no PNG signature"));
    }
    let mut out = Vec::new();
    let mut at = 8;
    while at < png.len() {
        if png.len() - at < 12 {
            return Err(not_png("a chunk is cut short"));
        }
        let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
        let kind = [png[at + 4], png[at + 5], png[at + 6], png[at + 7]];
        let data = at + 8..at + 8 + len;
        if data.end.checked_add(4).is_none_or(|end| end > png.len()) {
            return Err(not_png("a chunk is cut short"));
        }
        let stored =
            u32::from_be_bytes([png[data.end], png[data.end + 1], png[data.end + 2], png[data.end + 3]]);
        let mut crc = flate2::Crc::new();
        crc.update(&kind);
        crc.update(&png[data.clone()]);
        if crc.sum() != stored {
            return Err(not_png(&format!("chunk {} fails its checksum", String::from_utf8_lossy(&kind))));
        }
        let end = data.end + 4;
        let last = &kind == b"IEND";
        out.push(Chunk { kind, start: at, data });
        at = end;
        if last {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> Kept {
        let recipe =
            Recipe { width: 64, height: 48, batch_size: 2, seed: Some(7), draft: true, ..Recipe::default() };
        let values = (0..4 * 6 * 8).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        Kept { recipe, index: 1, shape: [1, 4, 6, 8], values }
    }

    fn png() -> Vec<u8> {
        crate::metadata::encode_png_plain(&[9u8; 64 * 48 * 4], 64, 48).unwrap()
    }

    #[test]
    fn latents_round_trip_through_a_png_that_still_decodes() {
        let k = kept();
        let with = k.attach(&png()).unwrap();
        assert_eq!(Kept::from_png(&with).unwrap(), Some(k.clone()));
        // Any PNG reader still reads the image.
        let decoder = png::Decoder::new(std::io::Cursor::new(&with));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..4], &[9, 9, 9, 9]);
        assert_eq!(strip(&with).unwrap(), png());
        assert_eq!(Kept::from_png(&png()).unwrap(), None);
        assert!(carries_latents(&with));
        assert!(!carries_latents(&png()));
        assert!(!carries_latents(&with[..20]));
        assert!(!carries_latents(b"GIF89a"));
    }

    #[test]
    fn damaged_or_foreign_latents_are_refused_by_name() {
        let k = kept();
        let mut with = k.attach(&png()).unwrap();
        let n = with.len();
        with[n - 20] ^= 0x40;
        assert!(Kept::from_png(&with).unwrap_err().to_string().contains("checksum"));
        let wrong = Kept { shape: [1, 4, 6, 9], values: vec![0.0; 4 * 6 * 9], ..k.clone() };
        let e = Kept::decode(&wrong.encode().unwrap()).unwrap_err().to_string();
        assert!(e.contains("for a 64x48 image"), "{e}");
        let short = Kept { values: vec![0.0; 10], ..k.clone() };
        assert!(Kept::decode(&short.encode().unwrap()).unwrap_err().to_string().contains("bytes of latents"));
        let nan = Kept { values: vec![f32::NAN; 4 * 6 * 8], ..k.clone() };
        assert!(Kept::decode(&nan.encode().unwrap()).is_err());
        assert!(Kept::decode(b"not zlib").is_err());
        assert!(Kept::from_png(b"GIF89a").is_err());
    }
}
