//! Part of a safetensors file downloaded by range (a manifest file's `tensors`): the tiny seeded
//! CLIPModel's vision tower and projection without its text tower, from the fault-injecting
//! server — the kept tensors byte for byte, no request inside the text tower's bytes, resumed
//! after a dropped connection and a cancel, pinned to the first answer's commit, refused when
//! the server ignores Range or shifts it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use darkroom_weights::fetch::{fetch_model, FetchError, FetchOptions};
use darkroom_weights::native::{FolderStore, HttpSource};
use darkroom_weights::tensor_subset::{Layout, Piece};
use darkroom_weights::testing::{serve, Faults, COMMIT};
use darkroom_weights::{Header, Manifest, SafetensorsFile};

const FILE: &str = "model.safetensors";
const CHUNK: u64 = 64 << 10;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip-score/model")
}

fn manifest() -> Manifest {
    let text = r#"
id = "clip-vision-test"
name = "CLIP vision tower (test)"
family = "clip"
description = "The tiny CLIPModel's vision tower"

[license]
name = "MIT (test fixture)"
url = "https://opensource.org/license/mit"

[source]
repo = "darkroom/clip-test"
revision = "main"

[quantization]
linear = "none"
conv = "none"

[[files]]
path = "config.json"
component = "clip"

[[files]]
path = "model.safetensors"
component = "clip"
tensors = ["vision_model.", "visual_projection."]
"#;
    Manifest::parse(text, "clip-vision-test.toml").unwrap()
}

fn temp_store(name: &str) -> FolderStore {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/subset").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    FolderStore::new(dir)
}

fn fetch(store: &FolderStore, base: &str, cancel_after: Option<usize>) -> Result<(), FetchError> {
    let chunks = std::cell::Cell::new(0usize);
    let cancelled = || cancel_after.is_some_and(|n| chunks.get() >= n);
    let options = FetchOptions { chunk_size: CHUNK, base_url: Some(base), cancelled: &cancelled };
    let mut progress = |_: &darkroom_weights::fetch::FetchProgress| chunks.set(chunks.get() + 1);
    pollster::block_on(fetch_model(&HttpSource::default(), store, &manifest(), &options, &mut progress))
}

fn original() -> SafetensorsFile {
    SafetensorsFile::from_bytes(std::fs::read(model_dir().join(FILE)).unwrap()).unwrap()
}

/// The stored file holds exactly the vision tower and its projection, each tensor's bytes,
/// dtype and shape the original's.
fn assert_subset(store: &FolderStore) {
    let got =
        SafetensorsFile::from_bytes(std::fs::read(store.model_dir("clip-vision-test").join(FILE)).unwrap())
            .unwrap();
    let want = original();
    let kept: Vec<_> = want
        .header
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("vision_model.") || t.name.starts_with("visual_projection."))
        .collect();
    assert!(kept.len() > 10 && kept.len() < want.header.tensors.len());
    assert_eq!(got.header.tensors.len(), kept.len());
    for t in kept {
        let g = got.header.get(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((g.dtype, &g.shape), (t.dtype, &t.shape), "{}", t.name);
        assert!(got.tensor_bytes(g) == want.tensor_bytes(t), "{}: other bytes", t.name);
    }
}

#[test]
fn only_the_named_tensors_are_fetched_and_stored_as_a_file_of_their_own() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    faults.lock().unwrap().drop_after.insert(FILE.into(), 150_000);
    let server = serve(model_dir(), faults.clone()).unwrap();
    let base = format!("{server}/darkroom/clip-test/resolve/main");
    let store = temp_store("whole");
    fetch(&store, &base, None).unwrap();
    assert_subset(&store);
    // No request began inside the text tower's bytes.
    let header = original().header;
    let text: Vec<_> = header.tensors.iter().filter(|t| t.name.starts_with("text_model.")).collect();
    let log = faults.lock().unwrap().log.clone();
    let starts: Vec<u64> = log.iter().filter(|(p, _)| p == FILE).map(|(_, s)| *s).collect();
    assert!(starts.len() > 3, "{starts:?}");
    for s in &starts {
        assert!(!text.iter().any(|t| (t.start..t.end).contains(s)), "a request at {s} reads text weights");
    }
    let stored = std::fs::metadata(store.model_dir("clip-vision-test").join(FILE)).unwrap().len();
    let whole = std::fs::metadata(model_dir().join(FILE)).unwrap().len();
    assert!(stored < whole * 9 / 10, "{stored} of {whole} bytes");
    // Sealed with the stored file's digest and the pinned commit.
    let (commit, records) = store.integrity("clip-vision-test");
    assert_eq!(commit.as_deref(), Some(COMMIT));
    let record = records.iter().find(|(p, _)| p == FILE).unwrap().1.clone();
    assert_eq!(record.size, stored);
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(store.model_dir("clip-vision-test").join(FILE)).unwrap());
    assert_eq!(record.sha256, digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let revisions = faults.lock().unwrap().revisions.clone();
    assert!(revisions[1..].iter().all(|r| r == COMMIT), "later requests are pinned: {revisions:?}");
}

#[test]
fn a_cancelled_subset_resumes_and_a_broken_server_is_refused() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let server = serve(model_dir(), faults.clone()).unwrap();
    let base = format!("{server}/darkroom/clip-test/resolve/main");
    let store = temp_store("resume");
    assert_eq!(fetch(&store, &base, Some(4)), Err(FetchError::Cancelled));
    let before = faults.lock().unwrap().log.len();
    fetch(&store, &base, None).unwrap();
    assert_subset(&store);
    let after: Vec<u64> =
        faults.lock().unwrap().log[before..].iter().filter(|(p, _)| p == FILE).map(|(_, s)| *s).collect();
    // The resumed download re-reads the header (its first two requests), then continues past
    // the stored chunks.
    assert!(after.len() >= 3 && after[0] == 0 && after[1] == 8, "{after:?}");

    for (name, fault) in [("ignored", 0u8), ("shifted", 1)] {
        let faults = Arc::new(Mutex::new(Faults::default()));
        match fault {
            0 => faults.lock().unwrap().ignore_range.push(FILE.into()),
            _ => drop(faults.lock().unwrap().shift.insert(FILE.into(), 16)),
        }
        let base = serve(model_dir(), faults).unwrap();
        let store = temp_store(name);
        let err = fetch(&store, &base, None).unwrap_err();
        assert!(matches!(err, FetchError::RangeIgnored { .. } | FetchError::Size { .. }), "{name}: {err}");
        assert!(!store.model_dir("clip-vision-test").join(FILE).exists(), "{name}: a file was left complete");
    }
}

#[test]
fn the_layout_merges_neighbours_and_maps_every_stored_byte() {
    let bytes = darkroom_weights::safetensors::write(&[
        ("a.x".into(), "F32", vec![2], vec![1; 8]),
        ("b.y".into(), "F32", vec![3], vec![2; 12]),
        ("a.z".into(), "F16", vec![2, 2], vec![3; 8]),
        ("a.w".into(), "F32", vec![1], vec![4; 4]),
    ]);
    let header = Header::parse(&bytes, bytes.len() as u64).unwrap();
    let layout = Layout::of(&header, &["a.".to_string()]).unwrap();
    // a.z and a.w are neighbours in the source: one run.
    assert_eq!(layout.runs.len(), 2);
    let head = layout.head.len() as u64;
    assert_eq!(head % 8, 0);
    assert_eq!(layout.total, head + 20);
    // Reassembled from its pieces, the stored file reads back with the kept tensors' bytes.
    let mut stored = Vec::new();
    for piece in layout.pieces(0, layout.total) {
        match piece {
            Piece::Head(a, b) => stored.extend_from_slice(&layout.head[a as usize..b as usize]),
            Piece::Source(a, b) => stored.extend_from_slice(&bytes[a as usize..b as usize]),
        }
    }
    let file = SafetensorsFile::from_bytes(stored).unwrap();
    let names: Vec<&str> = file.header.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.x", "a.z", "a.w"]);
    assert_eq!(file.tensor_bytes(file.header.get("a.z").unwrap()), &[3; 8]);
    assert_eq!(file.tensor_bytes(file.header.get("a.w").unwrap()), &[4; 4]);
    // Any span is the same bytes as the whole's slice.
    assert_eq!(layout.pieces(head - 2, head + 10).len(), 3);
    assert!(Layout::of(&header, &["nope.".to_string()]).is_err());
}
