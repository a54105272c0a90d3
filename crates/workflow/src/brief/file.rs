//! The brief file: a zip of `brief.json` (the index) and `images/NNNN.png`. PNGs are stored as
//! they are (already compressed), the index deflated. Reading checks what it reads: the index's
//! format and version, each named PNG present and a PNG, and sizes within bounds (a hostile zip
//! cannot make the reader hold more than [`MAX_TOTAL`] bytes).

use std::io::{Cursor, Read, Write};

use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::{Brief, BriefError, BriefFile, BriefImage, FORMAT, VERSION};

/// The index's name in the zip.
pub const INDEX: &str = "brief.json";
/// At most this many bytes, all files together once uncompressed.
pub const MAX_TOTAL: u64 = 4 << 30;
/// At most this many bytes of index.
const MAX_INDEX: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Index {
    format: String,
    version: u32,
    brief: Brief,
    images: Vec<BriefImage>,
}

/// The brief and its images as a brief file. Images are renamed `images/0001.png`… in order.
pub fn to_zip(file: &BriefFile) -> Result<Vec<u8>, BriefError> {
    let fail = |e: &dyn std::fmt::Display| BriefError::Write(e.to_string());
    let mut images = file.images.clone();
    for (i, image) in images.iter_mut().enumerate() {
        image.file = format!("images/{:04}.png", i + 1);
    }
    let index = Index { format: FORMAT.into(), version: VERSION, brief: file.brief.clone(), images };
    let json = serde_json::to_vec_pretty(&index).map_err(|e| fail(&e))?;
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(INDEX, SimpleFileOptions::default().compression_method(CompressionMethod::Deflated))
        .map_err(|e| fail(&e))?;
    zip.write_all(&json).map_err(|e| fail(&e))?;
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(false);
    for (entry, image) in index.images.iter().zip(&file.images) {
        zip.start_file(entry.file.as_str(), stored).map_err(|e| fail(&e))?;
        zip.write_all(&image.png).map_err(|e| fail(&e))?;
    }
    Ok(zip.finish().map_err(|e| fail(&e))?.into_inner())
}

fn read_entry(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: u64,
    total: &mut u64,
) -> Result<Vec<u8>, BriefError> {
    let mut entry = match zip.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Err(BriefError::Missing(name.into())),
        Err(e) => return Err(BriefError::NotABrief(format!("{name}: {e}"))),
    };
    if entry.size() > limit || *total + entry.size() > MAX_TOTAL {
        return Err(BriefError::TooLarge(format!("{name} unpacks to {} bytes", entry.size())));
    }
    let size = entry.size();
    let mut out = Vec::with_capacity(size as usize);
    // The declared size can lie: read one byte past it at most.
    (&mut entry)
        .take(size + 1)
        .read_to_end(&mut out)
        .map_err(|e| BriefError::NotABrief(format!("{name}: {e}")))?;
    if out.len() as u64 != size {
        return Err(BriefError::NotABrief(format!("{name}: its size is not the one declared")));
    }
    *total += out.len() as u64;
    Ok(out)
}

/// A brief file read back.
pub fn from_zip(bytes: &[u8]) -> Result<BriefFile, BriefError> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| BriefError::NotABrief(e.to_string()))?;
    let mut total = 0u64;
    let json = read_entry(&mut zip, INDEX, MAX_INDEX, &mut total).map_err(|e| match e {
        BriefError::Missing(_) => BriefError::NotABrief("it has no brief.json".into()),
        other => other,
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| BriefError::Index(e.to_string()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(BriefError::Index(format!("its format is not \"{FORMAT}\"")));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version == 0 || version > VERSION as u64 {
        return Err(BriefError::Index(format!(
            "version {version}: this Darkroom reads brief files up to version {VERSION} (a newer Darkroom wrote it?)"
        )));
    }
    let index: Index = serde_json::from_value(value).map_err(|e| BriefError::Index(e.to_string()))?;
    let mut images = index.images;
    for image in &mut images {
        if image.culling.rating > 5 {
            return Err(BriefError::Index(format!(
                "{}: a rating of {} (0 to 5)",
                image.file, image.culling.rating
            )));
        }
        let png = read_entry(&mut zip, &image.file, MAX_TOTAL, &mut total)?;
        let header = super::image::decode_png(&png, &image.file)?;
        image.width = header.width;
        image.height = header.height;
        image.png = png;
    }
    Ok(BriefFile { brief: index.brief, images })
}

#[cfg(test)]
mod tests {
    use super::super::{encode_png, Culling, Verdict};
    use super::*;
    use crate::grid::Rgba;

    fn sample() -> BriefFile {
        let png = encode_png(&Rgba::white(3, 2)).unwrap();
        let mut file = BriefFile::default();
        file.brief.id = "brief-1".into();
        file.brief.title = "Autumn campaign <draft> & \"more\"".into();
        file.brief.constraints.palette = vec!["#0b1f3a".into()];
        file.images.push(BriefImage {
            iteration: 5.0,
            infotext: "a fox\nSteps: 1".into(),
            culling: Culling {
                rating: 4,
                verdict: Verdict::Reject,
                reason: "too dark".into(),
                ..Default::default()
            },
            png: png.clone(),
            width: 3,
            height: 2,
            ..Default::default()
        });
        file.images.push(BriefImage { iteration: 5.0, png, width: 3, height: 2, ..Default::default() });
        file
    }

    #[test]
    fn a_brief_survives_the_file() {
        let file = sample();
        let back = from_zip(&to_zip(&file).unwrap()).unwrap();
        assert_eq!(back.brief, file.brief);
        assert_eq!(back.images.len(), 2);
        assert_eq!(back.images[0].file, "images/0001.png");
        assert_eq!(back.images[0].culling, file.images[0].culling);
        assert_eq!(back.images[1].png, file.images[1].png);
        // The index reads as documented: culling fields flat beside the image's own.
        let mut zip = ZipArchive::new(Cursor::new(to_zip(&file).unwrap())).unwrap();
        let mut json = String::new();
        zip.by_name(INDEX).unwrap().read_to_string(&mut json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["images"][0]["verdict"], "reject");
        assert_eq!(v["images"][0]["reason"], "too dark");
        assert_eq!(v["images"][0]["final"], false);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(matches!(from_zip(b"PK nope"), Err(BriefError::NotABrief(_))));
        let zip_of = |entries: &[(&str, &[u8])]| {
            let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
            for (name, bytes) in entries {
                zip.start_file(*name, SimpleFileOptions::default()).unwrap();
                zip.write_all(bytes).unwrap();
            }
            zip.finish().unwrap().into_inner()
        };
        assert!(matches!(from_zip(&zip_of(&[("x.txt", b"hi")])), Err(BriefError::NotABrief(_))));
        let wrong = br#"{"format":"other","version":1,"brief":{},"images":[]}"#;
        assert!(matches!(from_zip(&zip_of(&[(INDEX, wrong)])), Err(BriefError::Index(_))));
        let newer = br#"{"format":"darkroom-brief","version":9,"brief":{},"images":[]}"#;
        let e = from_zip(&zip_of(&[(INDEX, newer)])).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        let missing =
            br#"{"format":"darkroom-brief","version":1,"brief":{},"images":[{"file":"images/0001.png"}]}"#;
        assert_eq!(
            from_zip(&zip_of(&[(INDEX, missing)])).unwrap_err(),
            BriefError::Missing("images/0001.png".into())
        );
        let e = from_zip(&zip_of(&[(INDEX, missing), ("images/0001.png", b"text")])).unwrap_err();
        assert!(matches!(e, BriefError::Image(..)), "{e}");
        let rated =
            br#"{"format":"darkroom-brief","version":1,"brief":{},"images":[{"file":"a.png","rating":9}]}"#;
        assert!(matches!(from_zip(&zip_of(&[(INDEX, rated)])), Err(BriefError::Index(_))));
        let empty = br#"{"format":"darkroom-brief","version":1,"brief":{"title":"t"},"images":[]}"#;
        assert_eq!(from_zip(&zip_of(&[(INDEX, empty)])).unwrap().brief.title, "t");
    }
}
