//! `darkroom generate --control` and `darkroom preprocess` end to end: every ControlNet case of
//! tests/fixtures/controlnet through the binary against diffusers' images, Canny maps against
//! OpenCV's, a `pre=canny` unit equal to the same unit given OpenCV's map, the default size
//! from the control image, and bad units exiting with code 2 and a message.

use std::path::PathBuf;
use std::process::Output;

use darkroom_pipeline::metadata::read_parameters;
use darkroom_pipeline::Image;
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    common::root().join("tests/fixtures")
}

fn control_dir() -> PathBuf {
    fixtures().join("controlnet")
}

mod common;

/// The binary (common::darkroom) with owned arguments.
fn darkroom(args: &[String]) -> Output {
    common::darkroom(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: PathBuf) -> String {
    p.to_str().unwrap().to_string()
}

fn png(p: &std::path::Path) -> Image {
    Image::from_png(&std::fs::read(p).unwrap()).unwrap()
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(control_dir().join("cases.json")).unwrap()).unwrap()
}

/// The generate flags every run here shares.
fn base(out: &std::path::Path, seed: &str, steps: &str, sampler: &str, cfg: &str) -> Vec<String> {
    [
        "generate",
        "--model",
        &path(fixtures().join("tiny-sd")),
        "--prompt",
        "a photograph of an astronaut riding a horse",
        "--seed",
        seed,
        "--steps",
        steps,
        "--sampler",
        sampler,
        "--cfg",
        cfg,
        "--precision",
        "f32",
        "--quant",
        "none",
        "--out",
        &path(out.to_path_buf()),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn every_controlnet_case_through_the_cli_matches_diffusers() {
    cases_match_diffusers("controlnet", "tiny-controlnet-");
}

/// SDXL ControlNets on tiny-sdxl (tests/reference/sdxl_controlnet_reference.py), against
/// diffusers' SDXL ControlNet pipelines.
#[test]
fn every_sdxl_controlnet_case_through_the_cli_matches_diffusers() {
    cases_match_diffusers("sdxl-controlnet", "tiny-sdxl-controlnet-");
}

/// Every case of tests/fixtures/`fixture`/cases.json; the ControlNets are the fixture's folders
/// `{prefix}{net}`, the control images tests/fixtures/controlnet's.
fn cases_match_diffusers(fixture: &str, prefix: &str) {
    let dir = out_dir(fixture);
    let file = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join(fixture).join("reference.safetensors")).unwrap(),
    )
    .unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(fixture).join("cases.json")).unwrap())
            .unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let n = |k: &str| case[k].as_f64().unwrap().to_string();
        let s = |k: &str| case[k].as_str().unwrap().to_string();
        let out = dir.join(format!("{name}.png"));
        let mut args = base(&out, &n("seed"), &n("steps"), &s("sampler"), &n("cfg"));
        args[2] = path(fixtures().join(s("folder")));
        args.extend(["--negative".into(), s("negative"), "--batch".into(), n("batch")]);
        args.extend(["--width".into(), n("width"), "--height".into(), n("height")]);
        if case["mode"] == "inpaint" {
            args.extend(["--mask".into(), path(fixtures().join("pipeline/mask.png"))]);
        }
        if case["mode"] != "txt2img" {
            args.extend([
                "--init".into(),
                path(fixtures().join("pipeline/init.png")),
                "--strength".into(),
                n("strength"),
            ]);
        }
        for u in case["units"].as_array().unwrap() {
            let net = fixtures().join(fixture).join(format!("{prefix}{}", u["net"].as_str().unwrap()));
            let image = control_dir().join(u["image"].as_str().unwrap());
            args.push("--control".into());
            args.push(format!(
                "model={},image={},weight={},start={},end={}",
                path(net),
                path(image),
                u["weight"],
                u["start"],
                u["end"]
            ));
        }
        let result = darkroom(&args);
        assert!(result.status.success(), "{name}: {}", String::from_utf8_lossy(&result.stderr));
        let want = file.to_f32(file.header.get(&format!("{name}/image")).unwrap()).unwrap();
        let batch = case["batch"].as_u64().unwrap() as usize;
        let per_image = want.len() / batch;
        for i in 0..batch {
            let p = if batch == 1 { out.clone() } else { dir.join(format!("{name}-{}.png", i + 1)) };
            let image = png(&p);
            let mut worst = 0.0f32;
            for (j, px) in image.rgba.chunks_exact(4).enumerate() {
                for c in 0..3 {
                    worst = worst.max((px[c] as f32 - want[i * per_image + j * 3 + c] * 255.0).abs());
                }
            }
            assert!(worst <= 2.0, "{name} image {i}: worst pixel {worst}/255 from diffusers");
        }
        let text = read_parameters(
            &std::fs::read(if batch == 1 { out } else { dir.join(format!("{name}-1.png")) }).unwrap(),
        )
        .unwrap();
        let units = case["units"].as_array().unwrap().len();
        for k in 0..units {
            assert!(text.contains(&format!("ControlNet {k}: \"Module: none, Model: {prefix}")), "{text}");
        }
    }
}

/// A 64x48 image of 2 Euler steps at CFG 7.5 with one control unit (and `extra` flags).
fn one_unit(out: &std::path::Path, seed: &str, unit: String, extra: &[String]) -> Image {
    let mut args = base(out, seed, "2", "euler", "7.5");
    args.extend(["--width".into(), "64".into(), "--height".into(), "48".into(), "--control".into(), unit]);
    args.extend(extra.iter().cloned());
    let result = darkroom(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    png(out)
}

#[test]
fn preprocess_canny_writes_opencvs_map_and_a_canny_unit_uses_it() {
    let dir = out_dir("preprocess");
    for case in cases()["canny"].as_array().unwrap() {
        let out = dir.join("edges.png");
        let args: Vec<String> = [
            "preprocess",
            "--pre",
            "canny",
            "--in",
            &path(fixtures().join("images").join(case["image"].as_str().unwrap())),
            "--out",
            &path(out.clone()),
            "--low",
            &case["low"].to_string(),
            "--high",
            &case["high"].to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let result = darkroom(&args);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let (got, want) = (png(&out), png(&control_dir().join(case["edges"].as_str().unwrap())));
        let equal = got.rgba.chunks(4).zip(want.rgba.chunks(4)).filter(|(a, b)| a[0] == b[0]).count();
        assert!(equal as f64 >= 0.99 * (got.width * got.height) as f64, "{}", case["edges"]);
    }

    // pre=canny on the photograph (resized to the output by the pipeline) equals pre=none on
    // OpenCV's map of it, and the infotext says canny with its thresholds.
    let net = path(control_dir().join("tiny-controlnet-a"));
    let photo = path(fixtures().join("images/coffee.png"));
    let map = path(control_dir().join("canny/coffee_30_60.png"));
    let run = |out: &std::path::Path, unit: String| one_unit(out, "5", unit, &[]);
    let a = run(&dir.join("canny.png"), format!("model={net},image={photo},pre=canny,low=30,high=60"));
    let b = run(&dir.join("map.png"), format!("model={net},image={map}"));
    assert_eq!(a, b);
    let text = read_parameters(&std::fs::read(dir.join("canny.png")).unwrap()).unwrap();
    assert!(text.contains("ControlNet 0: \"Module: canny, Model: tiny-controlnet-a, Weight: 1, Resize Mode: Just Resize, Threshold A: 30, Threshold B: 60, Guidance Start: 0, Guidance End: 1"), "{text}");
}

#[test]
fn the_size_defaults_to_the_control_images_rounded_down_to_8() {
    let dir = out_dir("control-size");
    let out = dir.join("small.png");
    let mut args = base(&out, "1", "1", "euler", "1");
    let image = path(control_dir().join("control_small.png")); // 50x37
    args.extend([
        "--control".into(),
        format!("model={},image={image}", path(control_dir().join("tiny-controlnet-b"))),
    ]);
    let result = darkroom(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let img = png(&out);
    assert_eq!((img.width, img.height), (48, 32));
}

/// A 64x48 run of the fixture model `model` with the control `unit`, which must exit with code 2
/// and no panic; its stderr.
fn refused(out: &std::path::Path, model: &str, unit: &str) -> String {
    let mut args = base(out, "1", "1", "euler", "1");
    args[2] = path(fixtures().join(model));
    args.extend(["--width", "64", "--height", "48", "--control", unit].map(String::from));
    let result = darkroom(&args);
    let err = String::from_utf8_lossy(&result.stderr).into_owned();
    assert_eq!(result.status.code(), Some(2), "{model} {unit}: {err}");
    assert!(!err.contains("panicked"), "{model} {unit}: {err}");
    err
}

#[test]
fn bad_control_units_exit_with_code_2_and_say_why() {
    let dir = out_dir("control-bad");
    let out = dir.join("x.png");
    let net = path(control_dir().join("tiny-controlnet-a"));
    let image = path(control_dir().join("control_lines.png"));
    for (unit, words) in [
        (format!("model={net}"), "image="),
        (format!("model={net},image={image},end=0"), "start"),
        (format!("model={net},image={image},weight=heavy"), "not a number"),
        (format!("model={},image={image}", path(dir.join("nowhere"))), "not a diffusers ControlNet folder"),
        (
            format!("model={},image={image}", path(fixtures().join("tiny-sd"))),
            "not a diffusers ControlNet folder",
        ),
        (format!("model={net},image={}", path(dir.join("missing.png"))), "control image"),
        (format!("model={},image={image}", path(fixtures().join("tiny-sd/unet"))), "ControlNetModel"),
    ] {
        let err = refused(&out, "tiny-sd", &unit);
        assert!(err.contains(words), "{unit}: {err}");
    }
    let missing: Vec<String> =
        ["preprocess", "--pre", "canny", "--in", "/nonexistent.png", "--out", &path(out.clone())]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(darkroom(&missing).status.code(), Some(2));
    // A depth unit whose --depth-model is not a Depth Anything folder.
    let mut args = base(&out, "1", "1", "euler", "1");
    args.extend([
        "--control".into(),
        format!("model={net},image={image},pre=depth"),
        "--depth-model".into(),
        path(fixtures().join("tiny-sd/unet")),
    ]);
    let result = darkroom(&args);
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert!(err.contains("DepthAnythingConfig"), "{err}");
    let no_model: Vec<String> = [
        "preprocess",
        "--pre",
        "depth",
        "--in",
        &image,
        "--out",
        &path(out.clone()),
        "--depth-model",
        &path(dir.join("nowhere")),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let result = darkroom(&no_model);
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{err}");
    assert!(err.contains("not a Depth Anything folder"), "{err}");
    // An SD 1.x ControlNet on an SDXL model, and an SDXL one on an SD 1.x model.
    let xl_net = path(fixtures().join("sdxl-controlnet/tiny-sdxl-controlnet-a"));
    for (model, net) in [("tiny-sdxl", &net), ("tiny-sd", &xl_net)] {
        let err = refused(&out, model, &format!("model={net},image={image}"));
        assert!(err.contains("does not fit"), "{model}: {err}");
    }
}

/// `darkroom preprocess --pre depth` writes transformers' depth map of a photograph (the tiny
/// seeded Depth Anything of tests/fixtures/depth-anything), and a `pre=depth` unit generates
/// the image a `pre=none` unit given that map does, with the infotext naming the module.
#[test]
fn preprocess_depth_writes_transformers_map_and_a_depth_unit_uses_it() {
    let dir = out_dir("depth");
    let depth = fixtures().join("depth-anything");
    let photo = path(fixtures().join("clip-score/odd.png"));
    let out = dir.join("depth.png");
    let args: Vec<String> = [
        "preprocess",
        "--pre",
        "depth",
        "--in",
        &photo,
        "--out",
        &path(out.clone()),
        "--depth-model",
        &path(depth.join("model")),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let result = darkroom(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (got, want) = (png(&out), png(&depth.join("odd-map.png")));
    assert_eq!((got.width, got.height), (97, 61));
    let off: Vec<i32> =
        got.rgba.chunks(4).zip(want.rgba.chunks(4)).map(|(a, b)| (a[0] as i32 - b[0] as i32).abs()).collect();
    let equal = off.iter().filter(|&&d| d == 0).count();
    assert!(
        equal as f64 >= 0.99 * off.len() as f64 && off.iter().all(|&d| d <= 1),
        "{equal} of {}",
        off.len()
    );

    let net = path(control_dir().join("tiny-controlnet-a"));
    let extra = ["--depth-model".to_string(), path(depth.join("model"))];
    let run = |out: &std::path::Path, unit: String| one_unit(out, "3", unit, &extra);
    let a = run(&dir.join("depth-unit.png"), format!("model={net},image={photo},pre=depth"));
    let b = run(&dir.join("map-unit.png"), format!("model={net},image={}", path(out.clone())));
    assert_eq!(a, b);
    let text = read_parameters(&std::fs::read(dir.join("depth-unit.png")).unwrap()).unwrap();
    assert!(
        text.contains("ControlNet 0: \"Module: depth_anything_v2, Model: tiny-controlnet-a, Weight: 1"),
        "{text}"
    );
}
