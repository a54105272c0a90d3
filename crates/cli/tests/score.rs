//! `darkroom score` against transformers and OpenCV (tests/fixtures/clip-score, from
//! tests/reference/clip_score_reference.py): CLIP's preprocessing of an odd-sized image equal to
//! CLIPImageProcessor's on ≥ 99% of values and within two levels on the rest, the CLIP score through the tiny CLIPModel folder within 0.1 of
//! transformers' (processor and model), a LAION-style aesthetic head (.pth) within 2e-3 of PyTorch,
//! sharpness as OpenCV's Laplacian variance.

use std::path::PathBuf;

use darkroom_pipeline::preprocess::{clip_pixels, CLIP_STD};
use darkroom_pipeline::Image;
use darkroom_weights::SafetensorsFile;

mod common;
use common::{darkroom, root};

fn dir() -> PathBuf {
    root().join("tests/fixtures/clip-score")
}

fn reference(name: &str) -> Vec<f32> {
    let r = SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    r.to_f32(r.header.get(name).unwrap()).unwrap()
}

#[test]
fn clip_preprocessing_matches_clip_image_processor() {
    let odd = Image::from_png(&std::fs::read(dir().join("odd.png")).unwrap()).unwrap();
    assert_eq!((odd.width, odd.height), (97, 61));
    // An 8-bit level in normalised units. The resize is PIL's bicubic, theirs torchvision's
    // antialiased bicubic on 8-bit pixels: they round differently, up to two levels on a few
    // pixels where the image is enlarged.
    let level = 1.0 / 255.0 / CLIP_STD.iter().cloned().fold(f32::MAX, f32::min) + 1e-4;
    for (size, name) in [(224, "odd_224"), (32, "odd_32")] {
        let want = reference(name);
        let got = clip_pixels(&odd, size);
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let exact =
            got.iter().zip(&want).filter(|(a, b)| (*a - *b).abs() < 1e-5).count() as f32 / got.len() as f32;
        println!("{name}: worst {worst:.4} (a level is {level:.4}); {:.1}% equal", exact * 100.0);
        assert!(
            worst <= 2.0 * level && exact >= 0.99,
            "{name}: {worst} off CLIPImageProcessor, {exact} equal"
        );
    }
}

#[test]
fn score_prints_clip_score_and_cheap_measures_per_image() {
    let images = [dir().join("odd.png"), root().join("tests/fixtures/images/astronaut.png")];
    let out = darkroom(&[
        "score",
        "--prompt",
        "a photograph of an astronaut riding a horse",
        "--clip",
        dir().join("model").to_str().unwrap(),
        "--aesthetic",
        dir().join("aesthetic-head.pth").to_str().unwrap(),
        images[0].to_str().unwrap(),
        images[1].to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let (scores, sharpness) = (reference("file_scores"), reference("file_sharpness"));
    let aesthetic = reference("file_aesthetic");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["file"], images[i].display().to_string());
        let clip = line["clip_score"].as_f64().unwrap() as f32;
        assert!((clip - scores[i]).abs() <= 0.1, "image {i}: CLIP score {clip} vs {}", scores[i]);
        let score = line["aesthetic"].as_f64().unwrap() as f32;
        assert!((score - aesthetic[i]).abs() <= 2e-3, "image {i}: aesthetic {score} vs {}", aesthetic[i]);
        let sharp = line["sharpness"].as_f64().unwrap() as f32;
        assert!(
            (sharp - sharpness[i]).abs() <= 1e-3 * sharpness[i],
            "image {i}: sharpness {sharp} vs {}",
            sharpness[i]
        );
        let high = line["clipped_highlights"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&high));
    }
    // Without --clip: the cheap measures only; a missing image exits with code 2.
    let plain = darkroom(&["score", "--prompt", "x", images[1].to_str().unwrap()]);
    let line: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(line.get("clip_score").is_none() && line.get("sharpness").is_some(), "{line}");
    let alone = darkroom(&["score", "--prompt", "x", "--aesthetic", "head.pth", images[1].to_str().unwrap()]);
    assert_eq!(alone.status.code(), Some(2), "--aesthetic needs --clip");
    let missing = darkroom(&["score", "--prompt", "x", "/nonexistent.png"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// imagehash's `phash` of four images (tests/fixtures/clip-score/phash.json), and near-duplicates
/// (the coffee and its small copy; the astronaut and a shrunk, brightened one) marked as such.
#[test]
fn perceptual_hashes_match_imagehash_and_mark_near_duplicates() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("phash.json")).unwrap()).unwrap();
    let images = [
        root().join("tests/fixtures/images/coffee.png"),
        root().join("tests/fixtures/images/astronaut.png"),
        dir().join("odd.png"),
        dir().join("near-astronaut.png"),
    ];
    let paths: Vec<&str> = images.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["score", "--prompt", "x"];
    args.extend(&paths);
    let out = darkroom(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (line, path) in lines.iter().zip(&images) {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(line["phash"], want[name], "{name}");
    }
    assert!(lines[0].get("duplicate_of").is_none() && lines[1].get("duplicate_of").is_none());
    assert_eq!(lines[2]["duplicate_of"], paths[0]);
    assert_eq!(lines[3]["duplicate_of"], paths[1]);
}

/// `--palette`: each image's mean ΔE to the nearest palette colour, as scikit-image computes it
/// (tests/fixtures/clip-score/palette.json); a colour that does not parse is the user's to fix.
#[test]
fn palette_delta_e_matches_scikit_image() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("palette.json")).unwrap()).unwrap();
    let brand: Vec<&str> =
        want["palettes"]["brand"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let image = root().join("tests/fixtures/images/coffee.png");
    let out = darkroom(&["score", "--prompt", "x", "--palette", &brand.join(","), image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = line["palette_delta_e"].as_f64().unwrap();
    let w = want["images"]["coffee"]["brand"].as_f64().unwrap();
    assert!((got - w).abs() < 1e-6, "{got} vs {w}");
    let bad = darkroom(&["score", "--prompt", "x", "--palette", "#0b1f3a,teal", image.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("\"teal\""));
}

/// `--clip ID` and `--aesthetic ID`: the built-in manifests' models, fetched into a cache from a
/// localhost server in their layout (the tiny CLIPModel and the head standing in for the real
/// ones), score as the folder and the file do; an id not downloaded says how to fetch it.
#[test]
fn clip_and_aesthetic_by_id_from_the_cache() {
    use darkroom_weights::testing::{serve, Faults};
    use std::sync::{Arc, Mutex};
    let work = root().join("target/test-output/cli-score-ids");
    let _ = std::fs::remove_dir_all(&work);
    let (clip_src, head_src, cache) = (work.join("clip"), work.join("head"), work.join("cache"));
    std::fs::create_dir_all(&clip_src).unwrap();
    std::fs::create_dir_all(&head_src).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir().join("model").join(f), clip_src.join(f)).unwrap();
    }
    std::fs::copy(dir().join("aesthetic-head.pth"), head_src.join("sac+logos+ava1-l14-linearMSE.pth"))
        .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .args(args)
            .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
            .env("DARKROOM_CACHE", &cache)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let image = root().join("tests/fixtures/images/astronaut.png");
    let image = image.to_str().unwrap();
    let by_id = [
        "score",
        "--prompt",
        "an astronaut",
        "--clip",
        "clip-vit-large-patch14",
        "--aesthetic",
        "aesthetic-v2",
        image,
    ];
    let before = run(&by_id);
    assert_eq!(before.status.code(), Some(2));
    let said = String::from_utf8_lossy(&before.stderr);
    assert!(said.contains("darkroom models fetch clip-vit-large-patch14"), "{said}");

    for (id, src) in [
        ("clip-vit-large-patch14", &clip_src),
        ("clip-vit-large-patch14-vision", &clip_src),
        ("aesthetic-v2", &head_src),
    ] {
        let base = serve(src.clone(), Arc::new(Mutex::new(Faults::default()))).unwrap();
        let fetched = run(&["models", "fetch", id, "--base-url", &base, "--accept-license", "--quiet"]);
        assert!(fetched.status.success(), "{id}: {}", String::from_utf8_lossy(&fetched.stderr));
    }
    let listed = String::from_utf8_lossy(&run(&["models", "list"]).stdout).to_string();
    let line = listed.lines().find(|l| l.starts_with("aesthetic-v2")).unwrap_or_default().to_string();
    assert!(line.contains("complete") && line.contains("Apache-2.0"), "{listed}");

    let got = run(&by_id);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let folder = dir().join("model");
    let head = dir().join("aesthetic-head.pth");
    let want = run(&[
        "score",
        "--prompt",
        "an astronaut",
        "--clip",
        folder.to_str().unwrap(),
        "--aesthetic",
        head.to_str().unwrap(),
        image,
    ]);
    let (got, want): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&got.stdout).unwrap(), serde_json::from_slice(&want.stdout).unwrap());
    for key in ["clip_score", "aesthetic"] {
        assert!(got[key].is_f64(), "{got}");
        assert_eq!(got[key], want[key], "{key}");
    }

    // The vision tower alone, fetched by range: the same aesthetic score, no CLIP score, and
    // a clear refusal when asked for CLIP scores only.
    let vision = cache.join("clip-vit-large-patch14-vision/model.safetensors");
    let whole = cache.join("clip-vit-large-patch14/model.safetensors");
    let (vision_len, whole_len) =
        (std::fs::metadata(&vision).unwrap().len(), std::fs::metadata(&whole).unwrap().len());
    assert!(vision_len < whole_len * 9 / 10, "{vision_len} of {whole_len} bytes");
    let mut by_vision = by_id;
    by_vision[4] = "clip-vit-large-patch14-vision";
    let alone = run(&by_vision);
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
    let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
    assert_eq!(alone["aesthetic"], want["aesthetic"], "{alone}");
    assert!(alone.get("clip_score").is_none(), "{alone}");
    let refused = run(&[&by_vision[..5], &[image]].concat());
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("vision tower alone"));
}
