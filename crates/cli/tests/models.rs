//! `darkroom models` against a localhost server holding the tiny model in the manifest layout:
//! list shows the state, fetch downloads and verifies, a second fetch transfers nothing, the
//! fetched folder generates, rm frees it; a refused license and a 404 exit with code 2.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use darkroom_weights::testing::{serve, Faults, COMMIT};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn darkroom(args: &[&str], cache: &PathBuf) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("DARKROOM_CACHE", cache)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn list_fetch_generate_and_remove() {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/cli-models");
    let _ = std::fs::remove_dir_all(&cache);
    let faults = Arc::new(Mutex::new(Faults::default()));
    let base = serve(fixtures().join("tiny-sd"), faults.clone()).unwrap();
    let manifest = fixtures().join("tiny-sd.toml");
    let manifest = manifest.to_str().unwrap();

    let list = darkroom(&["models", "list", "--manifest", manifest], &cache);
    assert!(list.status.success(), "{}", text(&list));
    let out = text(&list);
    for id in ["sd-turbo", "sd-1.5", "sd-1.5-inpainting", "taesd", "tiny-sd"] {
        assert!(out.contains(id), "list shows {id}: {out}");
    }
    assert!(out.contains("Stability AI Community License") && out.contains("CreativeML OpenRAIL-M"), "{out}");
    let tiny_line = out.lines().find(|l| l.starts_with("tiny-sd")).unwrap().to_string();
    assert!(tiny_line.contains("not downloaded") && tiny_line.contains("9.0 MB"), "{tiny_line}");

    // Without --accept-license and no answer on stdin: nothing is downloaded.
    let refused =
        darkroom(&["models", "fetch", "tiny-sd", "--manifest", manifest, "--base-url", &base], &cache);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("MIT (test fixture)") && text(&refused).contains("license was not accepted")
    );
    assert!(faults.lock().unwrap().log.is_empty());

    let fetch = [
        "models",
        "fetch",
        "tiny-sd",
        "--manifest",
        manifest,
        "--base-url",
        &base,
        "--accept-license",
        "--quiet",
    ];
    let fetched = darkroom(&fetch, &cache);
    assert!(fetched.status.success(), "{}", text(&fetched));
    let requests = faults.lock().unwrap().log.len();
    assert!(requests > 0);
    let again = darkroom(&fetch, &cache);
    assert!(again.status.success());
    assert_eq!(faults.lock().unwrap().log.len(), requests, "a complete model is not downloaded twice");
    let list = text(&darkroom(&["models", "list", "--manifest", manifest], &cache));
    assert!(list.lines().any(|l| l.starts_with("tiny-sd") && l.contains("complete")), "{list}");

    // --verbose: the pinned commit and each file's size and sha256, as the manifest has them.
    let verbose = text(&darkroom(&["models", "list", "--verbose", "--manifest", manifest], &cache));
    assert!(verbose.contains(&format!("pinned to commit {COMMIT}")), "{verbose}");
    let m = darkroom_weights::Manifest::parse(&std::fs::read_to_string(manifest).unwrap(), "m").unwrap();
    for f in &m.files {
        let line = verbose.lines().find(|l| l.trim_start().starts_with(&format!("{} ", f.path))).unwrap();
        assert!(line.contains(&format!("{} bytes", f.size.unwrap())), "{line}");
        assert!(line.contains(f.sha256.as_deref().unwrap()) && line.contains(COMMIT), "{line}");
    }

    // One download or deletion of a model at a time: a held lock refuses rm.
    let lock = darkroom_weights::native::FolderStore::new(&cache).lock_model("tiny-sd").unwrap();
    let blocked = darkroom(&["models", "rm", "tiny-sd", "--manifest", manifest], &cache);
    assert_eq!(blocked.status.code(), Some(2), "{}", text(&blocked));
    assert!(text(&blocked).contains("another darkroom process"), "{}", text(&blocked));
    drop(lock);
    assert!(cache.join("tiny-sd/model_index.json").is_file(), "nothing was removed");

    // The cache folder is a diffusers folder: generate from it.
    let folder = cache.join("tiny-sd");
    let png = cache.join("out.png");
    let generated = darkroom(
        &[
            "generate",
            "--model",
            folder.to_str().unwrap(),
            "--prompt",
            "a cat",
            "--steps",
            "2",
            "--sampler",
            "euler",
            "--width",
            "64",
            "--height",
            "48",
            "--seed",
            "3",
            "--out",
            png.to_str().unwrap(),
            "--quiet",
        ],
        &cache,
    );
    assert!(generated.status.success(), "{}", text(&generated));
    assert!(png.is_file());

    let removed = darkroom(&["models", "rm", "tiny-sd", "--manifest", manifest], &cache);
    assert!(removed.status.success() && text(&removed).contains("removed tiny-sd"), "{}", text(&removed));
    assert!(!folder.exists());

    // A model id that is not downloaded: generate says how to get it.
    let missing = darkroom(
        &["generate", "--model", "sd-turbo", "--prompt", "x", "--out", png.to_str().unwrap()],
        &cache,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("darkroom models fetch sd-turbo"), "{}", text(&missing));

    // A server without the files: a clear 404, exit code 2.
    let empty = serve(fixtures().join("no-such-folder"), Arc::new(Mutex::new(Faults::default()))).unwrap();
    let not_found = darkroom(
        &[
            "models",
            "fetch",
            "tiny-sd",
            "--manifest",
            manifest,
            "--base-url",
            &empty,
            "--accept-license",
            "--quiet",
        ],
        &cache,
    );
    assert_eq!(not_found.status.code(), Some(2), "{}", text(&not_found));
    assert!(text(&not_found).contains("404"), "{}", text(&not_found));
}

/// Writes `bytes` as checkpoint `file_name` in a fresh target/test-output/`dir` and imports it
/// with `darkroom models import` on the fixture folder `base`, which must leave out `skipped`
/// tensors; returns the folder, the cache and the checkpoint's path.
fn import_fixture(
    dir: &str,
    file_name: &str,
    bytes: Vec<u8>,
    base: &str,
    skipped: usize,
) -> (PathBuf, PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output").join(dir);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let cache = root.join("cache");
    let checkpoint = root.join(file_name);
    std::fs::write(&checkpoint, bytes).unwrap();
    let base = fixtures().join(base);
    let import = darkroom(
        &["models", "import", checkpoint.to_str().unwrap(), "--base", base.to_str().unwrap(), "--quiet"],
        &cache,
    );
    assert!(import.status.success(), "{}", text(&import));
    assert!(text(&import).contains(&format!("left out {skipped} tensors")), "{}", text(&import));
    (root, cache, checkpoint)
}

/// A single-file checkpoint imports into the cache on a base model's configs, lists as complete,
/// generates the very image its diffusers folder makes, and is removed like any model.
#[test]
fn an_imported_single_file_checkpoint_generates_like_its_diffusers_folder() {
    let (root, cache, checkpoint) = import_fixture(
        "cli-import",
        "My Model v2.safetensors",
        darkroom_weights::testing::tiny_ldm_checkpoint(&fixtures()),
        "tiny-sd",
        2,
    );
    let base = fixtures().join("tiny-sd");
    let list = darkroom(&["models", "list"], &cache);
    let line = text(&list).lines().find(|l| l.starts_with("my-model-v2")).map(String::from);
    assert!(line.as_deref().is_some_and(|l| l.contains("complete")), "{}", text(&list));

    let args = |model: &str, out: &PathBuf| {
        vec![
            "generate".to_string(),
            "--model".into(),
            model.into(),
            "--prompt".into(),
            "a red boat".into(),
            "--seed".into(),
            "3".into(),
            "--steps".into(),
            "2".into(),
            "--sampler".into(),
            "euler".into(),
            "--width".into(),
            "64".into(),
            "--height".into(),
            "48".into(),
            "--precision".into(),
            "f32".into(),
            "--quiet".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let (ours, theirs) = (root.join("imported.png"), root.join("folder.png"));
    for (model, out) in [("my-model-v2", &ours), (base.to_str().unwrap(), &theirs)] {
        let a = args(model, out);
        let run = darkroom(&a.iter().map(String::as_str).collect::<Vec<_>>(), &cache);
        assert!(run.status.success(), "{}", text(&run));
    }
    let pixels = |p: &PathBuf| darkroom_pipeline::Image::from_png(&std::fs::read(p).unwrap()).unwrap().rgba;
    assert_eq!(pixels(&ours), pixels(&theirs), "the same weights make the same image");

    // An SD 1.x checkpoint needs an SD 1.x base: SD-Turbo's kind is refused before anything runs.
    let turbo = darkroom(
        &["models", "import", checkpoint.to_str().unwrap(), "--base", "sd-turbo", "--quiet"],
        &cache,
    );
    assert_eq!(turbo.status.code(), Some(2), "{}", text(&turbo));
    assert!(text(&turbo).contains("kind sd-turbo"), "{}", text(&turbo));

    // A LoRA is not a checkpoint: refused with a reason, exit code 2, nothing left behind.
    let lora = root.join("lora.safetensors");
    let lora_tensors = [(
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight".to_string(),
        "F16",
        vec![4, 32],
        vec![0; 256],
    )];
    std::fs::write(&lora, darkroom_weights::testing::safetensors_bytes(&lora_tensors)).unwrap();
    let refused = darkroom(
        &["models", "import", lora.to_str().unwrap(), "--base", base.to_str().unwrap(), "--quiet"],
        &cache,
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("not a full SD 1.x checkpoint"), "{}", text(&refused));
    assert!(!cache.join("lora").exists());

    let rm = darkroom(&["models", "rm", "my-model-v2"], &cache);
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(!cache.join("my-model-v2").exists(), "the import is gone, manifest and all");
}

/// An SDXL single-file checkpoint (both encoders, OpenCLIP's fused projections) imports on an
/// SDXL base folder and generates the image the tiny SDXL's folder makes; on an SD 1.x base it is
/// refused, saying which base it needs.
#[test]
fn an_imported_sdxl_checkpoint_generates_like_its_diffusers_folder() {
    let (root, cache, checkpoint) = import_fixture(
        "cli-import-sdxl",
        "juggernaut-tiny.safetensors",
        darkroom_weights::testing::tiny_sdxl_ldm_checkpoint(&fixtures()),
        "tiny-sdxl",
        1,
    );
    let base = fixtures().join("tiny-sdxl");
    let generate = |model: &str, out: &PathBuf| {
        let run = darkroom(
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "a red boat",
                "--negative",
                "fog",
                "--seed",
                "3",
                "--steps",
                "2",
                "--sampler",
                "euler",
                "--width",
                "64",
                "--height",
                "48",
                "--precision",
                "f32",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        );
        assert!(run.status.success(), "{}", text(&run));
        darkroom_pipeline::Image::from_png(&std::fs::read(out).unwrap()).unwrap().rgba
    };
    let ours = generate("juggernaut-tiny", &root.join("imported.png"));
    let theirs = generate(base.to_str().unwrap(), &root.join("folder.png"));
    assert_eq!(ours, theirs, "the same weights make the same image");

    let wrong = darkroom(
        &[
            "models",
            "import",
            checkpoint.to_str().unwrap(),
            "--base",
            fixtures().join("tiny-sd").to_str().unwrap(),
            "--id",
            "x",
            "--quiet",
        ],
        &cache,
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("SDXL base"), "{}", text(&wrong));
    assert!(!cache.join("x").exists());
}

#[test]
fn an_imported_lora_is_listed_under_its_name() {
    let cache = std::env::temp_dir().join(format!("darkroom-lora-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let file = fixtures().join("lora/tiny-lora.safetensors");
    let imported = darkroom(&["models", "import-lora", file.to_str().unwrap(), "--name", "astro"], &cache);
    assert!(imported.status.success(), "{}", text(&imported));
    assert!(text(&imported).contains("<lora:astro:1>"), "{}", text(&imported));
    assert!(cache.join("loras/astro.safetensors").is_file());
    let listed = darkroom(&["models", "list"], &cache);
    assert!(text(&listed).contains("lora astro"), "{}", text(&listed));
    let bad = darkroom(
        &["models", "import-lora", fixtures().join("tiny-sd/vae/config.json").to_str().unwrap()],
        &cache,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let _ = std::fs::remove_dir_all(&cache);
}

/// Embeddings import into the cache's embeddings/ folder under their file names (a .pt too),
/// list, and generate what diffusers' load_textual_inversion makes when a prompt names them
/// (tests/fixtures/embeddings); a name that is not one word is refused with exit code 2.
#[test]
fn imported_embeddings_are_called_by_name_as_diffusers_loads_them() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/cli-embeddings");
    let _ = std::fs::remove_dir_all(&root);
    let cache = root.join("cache");
    let dir = fixtures().join("embeddings");
    for file in ["tinystyle.safetensors", "badthing.pt", "xlstyle.safetensors"] {
        let imported = darkroom(&["models", "import-embedding", dir.join(file).to_str().unwrap()], &cache);
        assert!(imported.status.success(), "{}", text(&imported));
    }
    assert!(cache.join("embeddings/badthing.pt").is_file());
    let list = text(&darkroom(&["models", "list"], &cache));
    assert!(list.contains("embedding badthing") && list.contains("embedding xlstyle"), "{list}");
    let bad = darkroom(
        &["models", "import-embedding", dir.join("badthing.pt").to_str().unwrap(), "--name", "two words"],
        &cache,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));

    let reference = darkroom_weights::SafetensorsFile::from_bytes(
        std::fs::read(dir.join("reference.safetensors")).unwrap(),
    )
    .unwrap();
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let out = root.join(format!("{name}.png"));
        let s = |k: &str| case[k].as_str().unwrap().to_string();
        let n = |k: &str| case[k].as_f64().unwrap().to_string();
        let run = darkroom(
            &[
                "generate",
                "--model",
                fixtures().join(s("folder")).to_str().unwrap(),
                "--prompt",
                &s("prompt"),
                "--negative",
                &s("negative"),
                "--seed",
                &n("seed"),
                "--steps",
                &n("steps"),
                "--cfg",
                &n("cfg"),
                "--sampler",
                &s("sampler"),
                "--width",
                &n("width"),
                "--height",
                &n("height"),
                "--precision",
                "f32",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ],
            &cache,
        );
        assert!(run.status.success(), "{name}: {}", text(&run));
        let got = darkroom_pipeline::Image::from_png(&std::fs::read(&out).unwrap()).unwrap();
        let want = reference.to_f32(reference.header.get(name).unwrap()).unwrap();
        let worst = (0..want.len())
            .map(|i| (got.rgba[i / 3 * 4 + i % 3] as f32 - want[i] * 255.0).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 2.0, "{name}: worst pixel {worst}/255 off diffusers");
    }
    // An SDXL embedding named on an SD 1.x model: refused by name, exit code 2.
    let wrong = darkroom(
        &[
            "generate",
            "--model",
            fixtures().join("tiny-sd").to_str().unwrap(),
            "--prompt",
            "xlstyle cat",
            "--steps",
            "1",
            "--width",
            "64",
            "--height",
            "48",
            "--quiet",
            "--out",
            root.join("wrong.png").to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("embedding xlstyle"), "{}", text(&wrong));
}

#[test]
fn ids_follow_one_rule_and_never_replace_a_built_in_model() {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/cli-model-ids");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    // A manifest that would take a built-in id.
    let tiny = std::fs::read_to_string(fixtures().join("tiny-sd.toml")).unwrap();
    let shadow = cache.join("shadow.toml");
    std::fs::write(&shadow, tiny.replace("id = \"tiny-sd\"", "id = \"sd-turbo\"")).unwrap();
    let out = darkroom(&["models", "list", "--manifest", shadow.to_str().unwrap()], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("may not replace another model"), "{}", text(&out));
    // Ids that would escape the cache folder.
    for id in ["..", "../x", ".hidden", "a/b", "x..y"] {
        let bad = cache.join("bad.toml");
        std::fs::write(&bad, tiny.replace("id = \"tiny-sd\"", &format!("id = {id:?}"))).unwrap();
        let out = darkroom(&["models", "list", "--manifest", bad.to_str().unwrap()], &cache);
        assert_eq!(out.status.code(), Some(2), "{id}: {}", text(&out));
        let ckpt = fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors");
        let out = darkroom(&["models", "import", ckpt.to_str().unwrap(), "--id", id], &cache);
        assert_eq!(out.status.code(), Some(2), "{id}: {}", text(&out));
        assert!(text(&out).contains("--id: id"), "{id}: {}", text(&out));
    }
    assert!(!cache.join("x").exists() && !cache.parent().unwrap().join("x").exists());
}
