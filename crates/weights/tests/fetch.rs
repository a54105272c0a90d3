//! The download against a local server with fault injection: a connection dropped mid-file
//! resumes from the last stored chunk with identical bytes, corrupted bytes are caught by
//! sha256 and nothing corrupt is left complete, a 404 and a 500 are told apart, a fetch
//! cancelled half-way resumes instead of restarting, the first answer's commit pins the model
//! so an upstream update mid-download never mixes versions, shifted ranges and servers that
//! ignore Range are refused, chunks are only written in order and only whole files are sealed,
//! and the streaming safetensors reader yields every tensor of a file fed in odd slices.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use darkroom_weights::fetch::{fetch_model, ChunkStore, FetchError, FetchOptions, Seal};
use darkroom_weights::native::{FolderStore, HttpSource};
use darkroom_weights::testing::{serve, Faults, COMMIT};
use darkroom_weights::{Manifest, SafetensorsFile, SafetensorsStream};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(fixtures().join("tiny-sd.toml")).unwrap();
    Manifest::parse(&text, "tiny-sd.toml").unwrap()
}

fn temp_store(name: &str) -> FolderStore {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/fetch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    FolderStore::new(dir)
}

const CHUNK: u64 = 256 << 10;
const UNET: &str = "unet/diffusion_pytorch_model.safetensors";

fn fetch(
    store: &FolderStore,
    base: &str,
    cancel_after: Option<usize>,
) -> Result<Vec<(String, u64)>, FetchError> {
    fetch_with(store, base, cancel_after, &manifest())
}

fn fetch_with(
    store: &FolderStore,
    base: &str,
    cancel_after: Option<usize>,
    manifest: &Manifest,
) -> Result<Vec<(String, u64)>, FetchError> {
    let chunks = std::cell::Cell::new(0usize);
    let cancelled = || cancel_after.is_some_and(|n| chunks.get() >= n);
    let options = FetchOptions { chunk_size: CHUNK, base_url: Some(base), cancelled: &cancelled };
    let mut seen = Vec::new();
    let mut progress = |p: &darkroom_weights::fetch::FetchProgress| {
        chunks.set(chunks.get() + 1);
        seen.push((p.path.clone(), p.model_done));
    };
    pollster::block_on(fetch_model(&HttpSource::default(), store, manifest, &options, &mut progress))?;
    Ok(seen)
}

fn assert_identical(store: &FolderStore) {
    for file in &manifest().files {
        let got = std::fs::read(store.model_dir("tiny-sd").join(&file.path)).unwrap();
        let want = std::fs::read(fixtures().join("tiny-sd").join(&file.path)).unwrap();
        assert!(got == want, "{} differs after the download", file.path);
    }
}

#[test]
fn a_dropped_connection_resumes_from_the_last_chunk_with_identical_bytes() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    faults.lock().unwrap().drop_after.insert(UNET.into(), 100_000);
    faults.lock().unwrap().errors.insert("vae/config.json".into(), 2);
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let store = temp_store("drop");
    let seen = fetch(&store, &base, None).unwrap();
    assert_identical(&store);
    let total: u64 = manifest().files.iter().map(|f| f.size.unwrap()).sum();
    assert_eq!(seen.last().unwrap().1, total, "progress ends at the model's size");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "progress never goes back");
    let log = faults.lock().unwrap().log.clone();
    let unet: Vec<u64> = log.iter().filter(|(p, _)| p == UNET).map(|(_, s)| *s).collect();
    // The cut chunk is asked for again at the same offset; no chunk before it is.
    assert_eq!(unet[0], 0);
    assert_eq!(unet[1], 0, "the dropped first chunk is retried");
    assert!(unet[2..].windows(2).all(|w| w[1] == w[0] + CHUNK), "{unet:?}");
    assert_eq!(log.iter().filter(|(p, _)| p == "vae/config.json").count(), 3, "two 500s, then success");

    // A second fetch finds everything complete and asks for nothing.
    let before = faults.lock().unwrap().log.len();
    fetch(&store, &base, None).unwrap();
    assert_eq!(faults.lock().unwrap().log.len(), before);
}

#[test]
fn a_cancelled_download_resumes_instead_of_restarting() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let store = temp_store("cancel");
    let err = fetch(&store, &base, Some(12)).unwrap_err();
    assert_eq!(err, FetchError::Cancelled);
    let asked_first = faults.lock().unwrap().log.len();
    faults.lock().unwrap().log.clear();
    fetch(&store, &base, None).unwrap();
    assert_identical(&store);
    let log = faults.lock().unwrap().log.clone();
    let total_chunks: u64 = manifest().files.iter().map(|f| f.size.unwrap().div_ceil(CHUNK).max(1)).sum();
    assert_eq!(
        (asked_first + log.len()) as u64,
        total_chunks,
        "every chunk was asked for exactly once across the two runs"
    );
}

#[test]
fn corrupt_bytes_are_caught_and_nothing_corrupt_is_left_complete() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    faults.lock().unwrap().corrupt.push(UNET.into());
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let store = temp_store("corrupt");
    let err = fetch(&store, &base, None).unwrap_err();
    assert!(matches!(&err, FetchError::Corrupt { path, .. } if path.ends_with(UNET)), "{err}");
    assert!(err.to_string().contains("fetch it again"), "{err}");
    let state = pollster::block_on(store.stored(&format!("tiny-sd/{UNET}"), CHUNK)).unwrap();
    assert!(!state.complete && state.chunks == 0, "the bad download is discarded: {state:?}");
    assert!(!store.model_dir("tiny-sd").join(UNET).exists());
    // The server heals; the next fetch completes.
    faults.lock().unwrap().corrupt.clear();
    fetch(&store, &base, None).unwrap();
    assert_identical(&store);
}

#[test]
fn missing_files_and_server_errors_are_told_apart() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    faults.lock().unwrap().errors.insert("model_index.json".into(), 99);
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let store = temp_store("errors");
    let err = fetch(&store, &base, None).unwrap_err();
    assert!(matches!(err, FetchError::Http { status: 500, .. }), "{err}");
    let tries = faults.lock().unwrap().log.iter().filter(|(p, _)| p == "model_index.json").count();
    assert_eq!(tries, darkroom_weights::fetch::ATTEMPTS as usize, "retried, then given up");

    let empty = serve(fixtures().join("no-such-folder"), Arc::new(Mutex::new(Faults::default()))).unwrap();
    let err = fetch(&temp_store("404"), &empty, None).unwrap_err();
    assert!(matches!(err, FetchError::Http { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("no file at that address"), "{err}");

    let err = fetch(&temp_store("refused"), "http://127.0.0.1:9", None).unwrap_err();
    assert!(matches!(err, FetchError::Network { .. }), "{err}");
}

#[test]
fn the_stream_reader_yields_every_tensor_from_odd_slices() {
    let bytes = std::fs::read(fixtures().join("tiny-sd").join(UNET)).unwrap();
    let whole = SafetensorsFile::from_bytes(bytes.clone()).unwrap();
    for slice in [1usize, 7, 4096, 100_003, bytes.len()] {
        let mut stream = SafetensorsStream::new(bytes.len() as u64);
        let mut got = Vec::new();
        for part in bytes.chunks(slice) {
            got.extend(stream.push(part).unwrap());
        }
        assert!(stream.is_complete());
        assert_eq!(got.len(), whole.header.tensors.len(), "slice {slice}");
        for (info, data) in &got {
            assert_eq!(data.as_slice(), whole.tensor_bytes(info), "{} (slice {slice})", info.name);
        }
    }
    // A truncated file never completes; extra bytes are an error.
    let mut stream = SafetensorsStream::new(bytes.len() as u64);
    stream.push(&bytes[..bytes.len() - 1]).unwrap();
    assert!(!stream.is_complete());
    assert!(stream.push(&[0, 0]).is_err());
}

/// The fixture folder with the UNet changed (an upstream update of the model).
fn updated_folder(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/fetch-updates").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for file in &manifest().files {
        let to = dir.join(&file.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let mut bytes = std::fs::read(fixtures().join("tiny-sd").join(&file.path)).unwrap();
        if file.path == UNET {
            let n = bytes.len();
            for b in &mut bytes[n - 4096..] {
                *b ^= 0x11;
            }
        }
        std::fs::write(to, bytes).unwrap();
    }
    dir
}

const NEW_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// The manifest without sizes and digests, as an imported or hand-written one may be.
fn bare_manifest() -> Manifest {
    let mut m = manifest();
    for f in &mut m.files {
        f.size = None;
        f.sha256 = None;
    }
    m
}

#[test]
fn the_first_answer_pins_the_commit_and_an_update_mid_download_never_mixes_in() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let server = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let base = format!("{server}/darkroom/tiny-sd/resolve/main");
    let store = temp_store("pin");
    // Half the files, then the model is updated upstream, then the download resumes; even
    // without the manifest's digests the result is the original model whole.
    assert_eq!(fetch_with(&store, &base, Some(10), &bare_manifest()).unwrap_err(), FetchError::Cancelled);
    faults.lock().unwrap().update = Some((NEW_COMMIT.into(), updated_folder("pin")));
    fetch_with(&store, &base, None, &bare_manifest()).unwrap();
    assert_identical(&store);
    let revisions = faults.lock().unwrap().revisions.clone();
    assert_eq!(revisions[0], "main", "the first request names the manifest's revision");
    assert!(revisions[1..].iter().all(|r| r == COMMIT), "every later one the pinned commit: {revisions:?}");
    assert_eq!(pollster::block_on(store.pinned("tiny-sd")).unwrap().as_deref(), Some(COMMIT));
    let (commit, records) = store.integrity("tiny-sd");
    assert_eq!(commit.as_deref(), Some(COMMIT));
    assert_eq!(records.len(), manifest().files.len());
    for (path, record) in records {
        let file = manifest().files.into_iter().find(|f| f.path == path).unwrap();
        assert_eq!(Some(record.size), file.size, "{path}");
        assert_eq!(Some(record.sha256), file.sha256, "{path}: the digest kept is the file's");
        assert_eq!(record.commit.as_deref(), Some(COMMIT));
    }
}

#[test]
fn without_a_pin_a_changed_file_is_caught_and_never_sealed() {
    // A server without the Hub's headers: nothing pins the revision, so the resumed download
    // gets the new bytes; the manifest's digest refuses the mixed file.
    let faults = Arc::new(Mutex::new(Faults { plain: true, ..Faults::default() }));
    let server = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let base = format!("{server}/darkroom/tiny-sd/resolve/main");
    let store = temp_store("unpinned");
    assert_eq!(fetch(&store, &base, Some(10)).unwrap_err(), FetchError::Cancelled);
    faults.lock().unwrap().update = Some((NEW_COMMIT.into(), updated_folder("unpinned")));
    let err = fetch(&store, &base, None).unwrap_err();
    assert!(matches!(&err, FetchError::Corrupt { path, .. } if path.ends_with(UNET)), "{err}");
    assert!(!store.model_dir("tiny-sd").join(UNET).exists(), "the mixed file is not left complete");
    assert!(!pollster::block_on(store.stored(&format!("tiny-sd/{UNET}"), CHUNK)).unwrap().complete);
}

#[test]
fn a_file_changed_within_one_download_is_caught_by_if_range() {
    // A plain path (nothing to pin in it) and a file replaced under the same commit: the
    // next request's If-Range makes the server answer with the whole new file, refused.
    let faults = Arc::new(Mutex::new(Faults::default()));
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let store = temp_store("if-range");
    // The first chunk arrives whole; the update lands before the second.
    let cut = std::cell::Cell::new(false);
    let cancelled = || false;
    let options = FetchOptions { chunk_size: CHUNK, base_url: Some(&base), cancelled: &cancelled };
    let updated = updated_folder("if-range");
    let mut progress = |p: &darkroom_weights::fetch::FetchProgress| {
        if p.path == UNET && p.file_done >= CHUNK && !cut.get() {
            cut.set(true);
            faults.lock().unwrap().update = Some((COMMIT.into(), updated.clone()));
        }
    };
    let err = pollster::block_on(fetch_model(
        &HttpSource::default(),
        &store,
        &bare_manifest(),
        &options,
        &mut progress,
    ))
    .unwrap_err();
    assert!(matches!(&err, FetchError::Changed { path, .. } if path.ends_with(UNET)), "{err}");
    assert!(err.to_string().contains("ETag"), "{err}");
    assert_eq!(pollster::block_on(store.stored(&format!("tiny-sd/{UNET}"), CHUNK)).unwrap().chunks, 0);
}

#[test]
fn shifted_ranges_and_ignored_ranges_are_refused() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    faults.lock().unwrap().shift.insert(UNET.into(), 16);
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let err = fetch(&temp_store("shift"), &base, None).unwrap_err();
    assert!(err.to_string().contains("asked for bytes 0-262143, the server sent 16-262159"), "{err}");

    let faults = Arc::new(Mutex::new(Faults::default()));
    faults.lock().unwrap().ignore_range.push(UNET.into());
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let store = temp_store("ignored");
    let err = fetch(&store, &base, None).unwrap_err();
    assert!(matches!(err, FetchError::RangeIgnored { .. }), "{err}");
    // Small files fit in one answer, so a whole-file 200 is fine for them.
    assert!(pollster::block_on(store.stored("tiny-sd/model_index.json", CHUNK)).unwrap().complete);
}

#[test]
fn a_server_digest_that_contradicts_the_manifest_is_refused() {
    let faults = Arc::new(Mutex::new(Faults::default()));
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let mut m = manifest();
    let unet = m.files.iter_mut().find(|f| f.path == UNET).unwrap();
    unet.sha256 = Some("0".repeat(64));
    let err = fetch_with(&temp_store("linked"), &base, None, &m).unwrap_err();
    assert!(
        matches!(&err, FetchError::Corrupt { source_of_truth, .. } if source_of_truth == "the manifest"),
        "{err}"
    );
}

#[test]
fn chunks_are_written_in_order_and_only_whole_files_are_sealed() {
    let store = temp_store("order");
    let key = "m/file.bin";
    pollster::block_on(async {
        store.set_total(key, 10).await.unwrap();
        let err = store.write_chunk(key, 1, 4, &[1; 4]).await.unwrap_err();
        assert!(err.to_string().contains("chunk 1 refused, 0 whole chunks are stored"), "{err}");
        store.write_chunk(key, 0, 4, &[1; 4]).await.unwrap();
        assert!(store.write_chunk(key, 2, 4, &[1; 4]).await.is_err(), "a hole is refused");
        store.write_chunk(key, 1, 4, &[2; 4]).await.unwrap();
        let seal = Seal { total: 10, sha256: None, sha256_from: "", commit: None };
        let err = store.seal(key, 4, &seal).await.unwrap_err();
        assert!(err.to_string().contains("8 bytes are stored, the file has 10"), "{err}");
        assert!(!store.stored(key, 4).await.unwrap().complete, "a short file is never complete");
        assert_eq!(store.stored(key, 4).await.unwrap().chunks, 0, "and it is discarded");
    });
}
