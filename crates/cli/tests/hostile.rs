//! Malformed and hostile files given to every command that reads files: each ends with exit
//! code 2 and a message naming the problem — never a panic, a hang or a crash (a watchdog
//! kills a command that runs past its time and fails the test).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::root;

fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// Runs `darkroom args`; returns (exit code, stderr). Fails on a hang (over `limit`) or a panic.
fn run(args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_darkroom"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .env("DARKROOM_CACHE", std::env::temp_dir().join("darkroom-hostile-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run darkroom");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(!stderr.contains("panicked"), "darkroom {args:?} panicked:\n{stderr}");
            return (status.code().unwrap_or(-1), stderr);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("darkroom {args:?} ran past {limit:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The command must end with exit code 2 and an error message containing `says`.
#[track_caller]
fn refused(args: &[&str], says: &str) {
    let (code, stderr) = run(args, Duration::from_secs(120));
    assert_eq!(code, 2, "darkroom {args:?} should exit with 2:\n{stderr}");
    assert!(
        stderr.starts_with("error") || stderr.contains("\nerror"),
        "darkroom {args:?}: no error line:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains(&says.to_lowercase()),
        "darkroom {args:?} should say {says:?}:\n{stderr}"
    );
}

/// About 60 bytes declaring a 30000x30000 RGBA image.
fn png_bomb() -> Vec<u8> {
    darkroom_workflow::pixels::header_only_png(30000, 30000)
}

fn safetensors(json: &str, data: usize) -> Vec<u8> {
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.resize(out.len() + data, 0);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("darkroom-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn image_readers_refuse_bombs_and_garbage() {
    let f = Files::new("images");
    let bomb = f.put("bomb.png", &png_bomb());
    let garbage = f.put("garbage.png", b"\x89PNG\r\n\x1a\nthis is not a png at all");
    let empty = f.put("empty.png", b"");
    let real = std::fs::read(fixtures().join("images/coffee.png")).unwrap();
    let cut = f.put("cut.png", &real[..real.len() / 2]);
    let out = f.path("out.png");
    let tiny_sd = fixtures().join("tiny-sd");
    let model = tiny_sd.to_str().unwrap();

    for png in [&bomb, &garbage, &empty] {
        refused(&["params", png], "png");
    }
    refused(&["preprocess", "--pre", "canny", "--in", &bomb, "--out", &out], "30000x30000");
    refused(&["preprocess", "--pre", "canny", "--in", &cut, "--out", &out], "png");
    let generate = ["generate", "--model", model, "--prompt", "x", "--steps", "1", "--out", &out];
    refused(&[&generate[..], &["--init", &bomb]].concat(), "30000x30000");
    refused(&[&generate[..], &["--init", &garbage]].concat(), "png");
    let upscaler = fixtures().join("upscale/compact_x2.safetensors");
    refused(&["upscale", "--model", upscaler.to_str().unwrap(), "--in", &bomb, "--out", &out], "30000x30000");
    refused(&["score", "--prompt", "x", &bomb], "30000x30000");
    refused(&["finish", &garbage, "--out", &f.path("finals")], "png");
    let brief = f.path("brief.zip");
    let (code, stderr) = run(&["brief", "new", &brief, "--title", "t"], Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    refused(&["brief", "add", &brief, &bomb], "30000x30000");
    assert!(!std::path::Path::new(&out).exists(), "nothing is written from a refused input");
}

#[test]
fn weight_readers_refuse_damaged_files() {
    let f = Files::new("weights");
    let zero = f.put("zero.safetensors", &[0u8; 48]);
    let huge = f.put("huge.safetensors", &[&(1u64 << 40).to_le_bytes()[..], &[b' '; 64]].concat());
    let twice = f.put(
        "twice.safetensors",
        &safetensors(
            r#"{"lora_unet_a.lora_down.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"lora_unet_a.lora_down.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]}}"#,
            8,
        ),
    );
    let nan = [1.0f32.to_le_bytes(), f32::NAN.to_le_bytes()].concat();
    let mut nan_lora = safetensors(
        r#"{"lora_unet_a.lora_down.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]},"lora_unet_a.lora_up.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]}}"#,
        0,
    );
    nan_lora.extend_from_slice(&nan);
    let nan_lora = f.put("nan.safetensors", &nan_lora);
    let garbage_pth = f.put("garbage.pth", b"PK\x03\x04 not really a zip");
    let input = fixtures().join("upscale/input.png");
    let out = f.path("out.png");
    let model = fixtures().join("tiny-sd");
    let generate =
        ["generate", "--model", model.to_str().unwrap(), "--prompt", "x", "--steps", "1", "--out", &out];

    refused(&["models", "import", &zero, "--base", "sd-1.5"], "safetensors header");
    refused(&["models", "import", &huge, "--base", "sdxl"], "limit");
    refused(&["models", "import-lora", &twice], "twice");
    refused(&["models", "import-lora", &nan_lora], "NaN");
    refused(&["models", "import-embedding", &zero], "safetensors");
    refused(&[&generate[..], &["--lora", &twice]].concat(), "twice");
    refused(&[&generate[..], &["--lora", &nan_lora]].concat(), "NaN");
    refused(&["upscale", "--model", &zero, "--in", input.to_str().unwrap(), "--out", &out], "safetensors");
    refused(&["upscale", "--model", &garbage_pth, "--in", input.to_str().unwrap(), "--out", &out], "pth");
    let clip = fixtures().join("clip-score/model");
    let score = ["score", "--prompt", "x", "--clip", clip.to_str().unwrap(), "--aesthetic"];
    refused(&[&score[..], &[&huge, input.to_str().unwrap()]].concat(), "limit");
    refused(&[&score[..], &[&garbage_pth, input.to_str().unwrap()]].concat(), "aesthetic");
}

#[test]
fn damaged_model_folders_are_refused_by_name() {
    let f = Files::new("models");
    let out = f.path("out.png");
    let generate = |model: &str, says: &str| {
        refused(&["generate", "--model", model, "--prompt", "x", "--steps", "1", "--out", &out], says)
    };

    // Zero groups in the UNet's config (a division by zero in the old validator).
    let groups = f.dir.join("groups");
    copy_dir(&fixtures().join("tiny-sd"), &groups);
    let config_path = groups.join("unet/config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["norm_num_groups"] = 0.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    generate(groups.to_str().unwrap(), "norm_num_groups is 0");

    // A NaN inside the UNet's weights.
    let nan = f.dir.join("nan");
    copy_dir(&fixtures().join("tiny-sd"), &nan);
    let weights = std::fs::read_dir(nan.join("unet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let mut bytes = std::fs::read(&weights).unwrap();
    let header = darkroom_weights::Header::parse(&bytes, bytes.len() as u64).unwrap();
    let target =
        header.tensors.iter().find(|t| t.dtype == darkroom_weights::Dtype::F16 && t.elements() > 4).unwrap();
    let at = target.start as usize + 2;
    bytes[at..at + 2].copy_from_slice(&[0x00, 0x7e]); // an f16 NaN
    std::fs::write(&weights, &bytes).unwrap();
    generate(nan.to_str().unwrap(), &format!("tensor `{}`", target.name));

    // A config that is not JSON, and a model index that is not either.
    let broken = f.dir.join("broken");
    copy_dir(&fixtures().join("tiny-sd"), &broken);
    std::fs::write(broken.join("vae/config.json"), b"{\"block_out_channels\": [").unwrap();
    generate(broken.to_str().unwrap(), "config");
    std::fs::write(broken.join("model_index.json"), [0xff, 0xfe, 0x00]).unwrap();
    generate(broken.to_str().unwrap(), "model_index.json");
}

#[test]
fn text_inputs_refuse_garbage() {
    let f = Files::new("text");
    let batch = f.put("batch.txt", b"--steps \xff\xfe\n--prompt");
    let jsonl = f.put("batch.jsonl", b"{\"prompt\": \"x\", \"steps\": 1e400}\n");
    let cards = f.dir.join("cards");
    f.put("cards/broken.json", b"{\"a\": [1, 2");
    f.put("cards/broken.yaml", b"a: [b, c\n  - : : :");
    let out = f.path("out");
    let model = fixtures().join("tiny-sd");
    refused(&["batch", &batch, "--model", model.to_str().unwrap(), "--out", &out], "batch.txt");
    refused(&["batch", &jsonl, "--model", model.to_str().unwrap(), "--out", &out], "batch.jsonl");
    // A wildcard file that does not read is left out, as sd-dynamic-prompts leaves it, with a
    // warning that names it and says why.
    let (code, stderr) =
        run(&["prompts", "__broken__", "--wildcards", cards.to_str().unwrap()], Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("broken.json is left out") && stderr.contains("broken.yaml is left out"),
        "{stderr}"
    );
    let brief = f.put("brief.zip", b"PK\x03\x04 definitely not a zip");
    refused(&["brief", "show", &brief], "brief");
    refused(&["brief", "export", &brief, "--html", &f.path("x.html")], "brief");
}
