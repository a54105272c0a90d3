//! `darkroom generate` end to end on the tiny diffusers folder: the PNG equals diffusers' image
//! within 2/255 (tests/fixtures/pipeline), its metadata round-trips through our parser and
//! `darkroom params`, and bad input exits with code 2 and a message.

use std::path::PathBuf;
use std::process::{Command, Output};

use darkroom_pipeline::metadata::{read_parameters, GenerationParams};
use darkroom_pipeline::Image;
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn darkroom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_darkroom")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn reference_image(key: &str) -> Vec<f32> {
    reference_in("pipeline", key)
}

fn reference_in(dir: &str, key: &str) -> Vec<f32> {
    let file = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join(dir).join("reference.safetensors")).unwrap(),
    )
    .unwrap();
    let info = file.header.tensors.iter().find(|t| t.name == key).unwrap();
    file.to_f32(info).unwrap()
}

fn worst_pixel(image: &Image, reference: &[f32]) -> f32 {
    let mut worst = 0.0f32;
    for (i, px) in image.rgba.chunks_exact(4).enumerate() {
        for c in 0..3 {
            worst = worst.max((px[c] as f32 - reference[i * 3 + c] * 255.0).abs());
        }
    }
    worst
}

#[test]
fn generate_reproduces_diffusers_and_writes_a1111_metadata() {
    let dir = out_dir("euler");
    let out = dir.join("astronaut.png");
    let model = fixtures().join("tiny-sd");
    let result = darkroom(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a photograph of an astronaut riding a horse",
        "--seed",
        "1",
        "--steps",
        "4",
        "--sampler",
        "euler",
        "--cfg",
        "7.5",
        "--width",
        "64",
        "--height",
        "48",
        "--quant",
        "none",
        "--precision",
        "f32",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let image = Image::from_png(&bytes).unwrap();
    assert_eq!((image.width, image.height), (64, 48));
    let worst = worst_pixel(&image, &reference_image("euler_cfg/image"));
    assert!(worst <= 2.0, "worst pixel {worst}/255 from diffusers");

    let text = read_parameters(&bytes).unwrap();
    assert_eq!(
        text,
        "a photograph of an astronaut riding a horse\n\
         Steps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 64x48, Model: tiny-sd"
    );
    let params = GenerationParams::parse_infotext(&text).unwrap();
    assert_eq!((params.seed, params.steps, params.cfg_scale), (1, 4, 7.5));
    let shown = darkroom(&["params", out.to_str().unwrap()]);
    assert!(shown.status.success());
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim_end(), text);
}

/// Runs every case of `dir`/cases.json through the binary against diffusers' images; returns
/// the samplers seen.
fn cli_cases(dir_name: &str) -> std::collections::BTreeSet<String> {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(dir_name).join("cases.json")).unwrap())
            .unwrap();
    let dir = out_dir(dir_name);
    let mut samplers = std::collections::BTreeSet::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let s = |k: &str| case[k].as_str().unwrap().to_string();
        let n = |k: &str| case[k].as_f64().unwrap().to_string();
        let file = |key: &str, default: &str| {
            fixtures()
                .join(dir_name)
                .join(case[key].as_str().unwrap_or(default))
                .to_str()
                .unwrap()
                .to_string()
        };
        let batch = case["batch"].as_u64().unwrap() as usize;
        let out = dir.join(format!("{name}.png"));
        let mut args: Vec<String> = vec![
            "generate".into(),
            "--model".into(),
            fixtures().join(s("folder")).to_str().unwrap().into(),
            "--prompt".into(),
            s("prompt"),
            "--negative".into(),
            s("negative"),
            "--seed".into(),
            n("seed"),
            "--steps".into(),
            n("steps"),
            "--sampler".into(),
            s("sampler"),
            "--cfg".into(),
            n("cfg"),
            "--width".into(),
            n("width"),
            "--height".into(),
            n("height"),
            "--batch".into(),
            n("batch"),
            "--precision".into(),
            "f32".into(),
            "--quant".into(),
            "none".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--quiet".into(),
        ];
        let mode = s("mode");
        if mode != "txt2img" {
            args.extend(["--init".into(), file("init", "init.png")]);
            args.extend(["--strength".into(), n("strength")]);
        }
        if let Some(margins) = case["outpaint"].as_array() {
            let m: Vec<String> = margins.iter().map(|v| v.to_string()).collect();
            args.extend(["--outpaint".into(), m.join(",")]);
        } else if mode == "inpaint" {
            args.extend(["--mask".into(), file("mask", "mask.png")]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = darkroom(&refs);
        assert!(result.status.success(), "{name}: {}", String::from_utf8_lossy(&result.stderr));
        let want = reference_in(dir_name, &format!("{name}/image"));
        let per_image = want.len() / batch;
        for i in 0..batch {
            let path = if batch == 1 { out.clone() } else { dir.join(format!("{name}-{}.png", i + 1)) };
            let image = Image::from_png(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!((image.width * image.height * 3), per_image, "{name}: size");
            let worst = worst_pixel(&image, &want[i * per_image..(i + 1) * per_image]);
            assert!(worst <= 2.0, "{name} image {i}: worst pixel {worst}/255 from diffusers");
        }
        samplers.insert(s("sampler"));
    }
    samplers
}

/// Every case of tests/fixtures/pipeline (every sampler, CFG on and off, negative prompt, batch
/// 2, v-prediction, img2img, inpainting) through the binary, against diffusers' images.
#[test]
fn every_reference_case_through_the_cli_matches_diffusers() {
    let samplers = cli_cases("pipeline");
    assert_eq!(samplers.len(), 7, "every sampler ran: {samplers:?}");
}

/// Every SDXL case of tests/fixtures/sdxl (a diffusers SDXL folder given to --model: the kind
/// comes from its model_index.json) through the binary, against diffusers' images.
#[test]
fn every_sdxl_case_through_the_cli_matches_diffusers() {
    let samplers = cli_cases("sdxl");
    assert_eq!(samplers.len(), 7, "every sampler ran: {samplers:?}");
}

/// Sizes diffusers takes that the UNet's factor does not divide (80x48, 104x40, 72x40 …), in
/// every mode including `--outpaint`, through the binary (tests/fixtures/sizes).
#[test]
fn sizes_that_are_multiples_of_8_only_match_diffusers_through_the_cli() {
    cli_cases("sizes");
}

#[test]
fn inpainting_from_the_command_line_matches_diffusers() {
    let dir = out_dir("inpaint");
    let model = fixtures().join("tiny-sd-inpaint");
    let result = darkroom(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a photograph of an astronaut riding a horse",
        "--seed",
        "16",
        "--steps",
        "4",
        "--sampler",
        "Euler",
        "--cfg",
        "7.5",
        "--width",
        "64",
        "--height",
        "48",
        "--precision",
        "f32",
        "--init",
        fixtures().join("pipeline/init.png").to_str().unwrap(),
        "--mask",
        fixtures().join("pipeline/mask.png").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let image = Image::from_png(&std::fs::read(dir.join("16.png")).unwrap()).unwrap();
    let worst = worst_pixel(&image, &reference_image("inpaint_9ch_euler/image"));
    assert!(worst <= 2.0, "worst pixel {worst}/255 from diffusers");
}

#[test]
fn int8_runs_reuse_their_quantized_weights() {
    let dir = out_dir("q8");
    let cache = dir.join("cache");
    let run = |name: &str| {
        let out = dir.join(name);
        let result = Command::new(env!("CARGO_BIN_EXE_darkroom"))
            .args([
                "generate",
                "--model",
                fixtures().join("tiny-sd").to_str().unwrap(),
                "--prompt",
                "a cat",
                "--seed",
                "4",
                "--steps",
                "2",
                "--sampler",
                "euler",
                "--width",
                "64",
                "--height",
                "48",
                "--quant",
                "q8",
                "--precision",
                "f32",
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ])
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env("DARKROOM_CACHE", &cache)
            .output()
            .unwrap();
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        std::fs::read(out).unwrap()
    };
    let first = run("first.png");
    let count = |d: &std::path::Path| walk(d).len();
    let entries = count(&cache.join("quantized"));
    assert!(entries > 10, "the first run caches its quantized matrices ({entries})");
    let stamps: Vec<_> = walk(&cache.join("quantized"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    let second = run("second.png");
    assert_eq!(first, second, "the cached weights give the same image");
    let after: Vec<_> = walk(&cache.join("quantized"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(stamps, after, "the second run rewrote no cache entry (it quantized nothing)");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p))
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}

#[test]
fn outpainting_extends_the_init_image() {
    let dir = out_dir("outpaint");
    let out = dir.join("wider.png");
    let result = darkroom(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd-inpaint").to_str().unwrap(),
        "--prompt",
        "more sky",
        "--seed",
        "2",
        "--steps",
        "2",
        "--sampler",
        "euler",
        "--precision",
        "f32",
        "--init",
        fixtures().join("pipeline/init.png").to_str().unwrap(),
        "--outpaint",
        "0,16,0,0",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let image = Image::from_png(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!((image.width, image.height), (64, 64), "48 rows + 16 new ones");
    let bad = darkroom(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().unwrap(),
        "--prompt",
        "x",
        "--outpaint",
        "0,0,0,16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give the image to extend"));
}

#[test]
fn bad_input_exits_with_code_2_and_says_why() {
    let model = fixtures().join("tiny-sd");
    let model = model.to_str().unwrap();
    let dir = out_dir("bad");
    let out = dir.join("x.png");
    let out = out.to_str().unwrap();
    let (mask_path, init_path) = (fixtures().join("pipeline/mask.png"), fixtures().join("pipeline/init.png"));
    let (mask_png, init_png) = (mask_path.to_str().unwrap(), init_path.to_str().unwrap());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--width", "65"], "multiples of 8"),
        (vec!["--width", "4104"], "--width"),
        (vec!["--sampler", "k_lms"], "dpmpp_2m_karras"),
        (vec!["--steps", "0"], "--steps: steps must be between 1 and 150"),
        (vec!["--cfg=-1"], "--cfg"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--batch-count", "0"], "--batch-count"),
        (vec!["--seed", "18446744073709551615", "--batch", "2"], "--seed"),
        (vec!["--strength", "0.5"], "--strength"),
        (vec!["--mask", mask_png], "--mask"),
        (vec!["--outpaint", "0,0,64,0"], "--outpaint extends --init"),
        (vec!["--init", init_png, "--mask", mask_png, "--outpaint", "0,0,64,0"], "--outpaint"),
        (vec!["--init", "/no/such.png"], "cannot read the init image"),
        (vec!["--bogus"], "--bogus"),
        (vec!["--width", "64", "--height", "48", "--init", mask_png, "--strength", "1.5"], "strength"),
        (vec!["--width", "64", "--height", "64", "--init", init_png], "64x48"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["generate", "--model", model, "--prompt", "x", "--out", out, "--quiet"];
        args.extend(extra.iter().copied());
        let result = darkroom(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr:?} should mention {expected:?}");
    }
    let missing = darkroom(&["generate", "--model", "/no/such/model", "--prompt", "x", "--out", out]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not a diffusers folder"));
    let help = darkroom(&["generate", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--model",
        "--prompt",
        "--negative",
        "--seed",
        "--steps",
        "--sampler",
        "--cfg",
        "--width",
        "--height",
        "--batch",
        "--init",
        "--strength",
        "--mask",
        "--quant",
        "--precision",
        "--out",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
}

/// LoRAs by flag and by A1111 prompt tag (looked up in --lora-dir): diffusers' fused-LoRA image
/// (tests/fixtures/lora), the flag recorded in the PNG's prompt as a tag, a missing LoRA named.
#[test]
fn loras_by_flag_and_by_prompt_tag_match_diffusers() {
    let dir = out_dir("lora");
    let loras = fixtures().join("lora");
    let model = fixtures().join("tiny-sd");
    let file =
        SafetensorsFile::from_bytes(std::fs::read(loras.join("reference.safetensors")).unwrap()).unwrap();
    let reference = file.to_f32(file.header.get("case1").unwrap()).unwrap();
    let run = |prompt: &str, extra: &[&str], out: &PathBuf| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            prompt,
            "--seed",
            "1",
            "--steps",
            "4",
            "--sampler",
            "euler",
            "--cfg",
            "7.5",
            "--width",
            "64",
            "--height",
            "48",
            "--precision",
            "f32",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        darkroom(&args)
    };
    let prompt = "a photograph of an astronaut riding a horse";
    let flag_png = dir.join("flag.png");
    let lora_arg = format!("{}:0.8", loras.join("tiny-lora.safetensors").display());
    let flag = run(prompt, &["--lora", &lora_arg], &flag_png);
    assert!(flag.status.success(), "{}", String::from_utf8_lossy(&flag.stderr));
    let tag_png = dir.join("tag.png");
    let tagged = format!("{prompt} <lora:tiny-lora:0.8>");
    let tag = run(&tagged, &["--lora-dir", loras.to_str().unwrap()], &tag_png);
    assert!(tag.status.success(), "{}", String::from_utf8_lossy(&tag.stderr));
    for png in [&flag_png, &tag_png] {
        let bytes = std::fs::read(png).unwrap();
        let worst = worst_pixel(&Image::from_png(&bytes).unwrap(), &reference);
        assert!(worst <= 2.0, "{}: worst pixel {worst}/255 from diffusers", png.display());
        let params = read_parameters(&bytes).unwrap();
        assert!(params.starts_with(&format!("{prompt} <lora:tiny-lora:0.8>\n")), "{params}");
    }

    let missing =
        run("x <lora:nothing:1>", &["--lora-dir", loras.to_str().unwrap()], &dir.join("missing.png"));
    assert_eq!(missing.status.code(), Some(2));
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("`nothing`") && said.contains("nothing.safetensors"), "{said}");
    let not_a_lora = run(
        prompt,
        &["--lora", model.join("unet/diffusion_pytorch_model.safetensors").to_str().unwrap()],
        &dir.join("bad.png"),
    );
    assert_eq!(not_a_lora.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_lora.stderr).contains("not a LoRA"));
}
