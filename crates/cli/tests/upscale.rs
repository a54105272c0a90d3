//! `darkroom upscale` against spandrel (tests/fixtures/upscale, from
//! tests/reference/upscale_reference.py): every model from its .safetensors or .pth within
//! 2/255 per pixel, small tiles within 1/255 on average of the whole-image reference, and bad
//! files refused with exit code 2 — a malicious .pth runs nothing.

use std::path::PathBuf;
use std::process::Output;

use darkroom_pipeline::Image;
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    common::root().join("tests/fixtures")
}

mod common;

/// The binary (common::darkroom) with owned arguments.
fn darkroom(args: &[String]) -> Output {
    common::darkroom(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output/cli/upscale");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn upscale(model: &str, input: &str, extra: &[&str]) -> (Output, PathBuf) {
    let out = out_dir().join(format!("{model}-{input}-{}.png", extra.join("_")));
    let mut args: Vec<String> = ["upscale", "--model"].iter().map(|s| s.to_string()).collect();
    args.push(fixtures().join("upscale").join(model).to_str().unwrap().into());
    args.extend(["--in".into(), fixtures().join("upscale").join(input).to_str().unwrap().into()]);
    args.extend(["--out".into(), out.to_str().unwrap().into(), "--quiet".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    (darkroom(&args), out)
}

/// `darkroom generate` on the tiny model (Euler, CFG 7.5, f32) into `out`: flags to extend.
fn tiny_generate(out: &std::path::Path, prompt: &str) -> Vec<String> {
    let model = fixtures().join("tiny-sd");
    ["generate", "--model", model.to_str().unwrap(), "--prompt", prompt, "--sampler", "euler", "--cfg", "7.5"]
        .into_iter()
        .chain(["--precision", "f32", "--quant", "none", "--quiet", "--out", out.to_str().unwrap()])
        .map(String::from)
        .collect()
}

/// `darkroom upscale` of one file into another, in f32.
fn upscale_file(model: &std::path::Path, input: &std::path::Path, out: &std::path::Path) {
    let args: Vec<String> = ["upscale", "--model", model.to_str().unwrap(), "--in", input.to_str().unwrap()]
        .into_iter()
        .chain(["--out", out.to_str().unwrap(), "--precision", "f32", "--quiet"])
        .map(String::from)
        .collect();
    let result = darkroom(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
}

/// (worst, mean) difference in 8-bit levels from spandrel's output, clamped as pixels.
fn compare(out: &PathBuf, key: &str) -> (f32, f32) {
    let image = Image::from_png(&std::fs::read(out).unwrap()).unwrap();
    let reference =
        SafetensorsFile::from_bytes(std::fs::read(fixtures().join("upscale/reference.safetensors")).unwrap())
            .unwrap();
    let info = reference.header.get(key).unwrap();
    let want = reference.to_f32(info).unwrap();
    let (h, w) = (info.shape[2] as usize, info.shape[3] as usize);
    assert_eq!((image.width, image.height), (w, h), "{key}");
    let (mut worst, mut total) = (0.0f32, 0.0f32);
    for c in 0..3 {
        for i in 0..w * h {
            let d = (image.rgba[i * 4 + c] as f32 - want[c * w * h + i].clamp(0.0, 1.0) * 255.0).abs();
            worst = worst.max(d);
            total += d;
        }
    }
    (worst, total / (3 * w * h) as f32)
}

#[test]
fn every_model_matches_spandrel_from_safetensors_and_pth() {
    for model in [
        "rrdb_x4.safetensors",
        "rrdb_x2.pth",
        "esrgan_old_x4.pth",
        "compact_x4.safetensors",
        "compact_x2.safetensors",
    ] {
        for precision in ["f32", "auto"] {
            let (result, out) = upscale(model, "input.png", &["--precision", precision]);
            assert!(result.status.success(), "{model}: {}", String::from_utf8_lossy(&result.stderr));
            let case = model.split('.').next().unwrap();
            let (worst, mean) = compare(&out, &format!("{case}/output"));
            println!("{model} {precision}: worst {worst:.1}/255, mean {mean:.3}/255");
            assert!(worst <= 2.0, "{model} {precision}: worst pixel {worst}/255 from spandrel");
        }
    }
}

#[test]
fn small_tiles_blend_to_the_whole_image() {
    for (model, key) in [("compact_x4.safetensors", "compact_x4"), ("rrdb_x2.pth", "rrdb_x2")] {
        let (whole, out) = upscale(model, "input_large.png", &["--precision", "f32"]);
        assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
        let (worst, _) = compare(&out, &format!("{key}/output_large"));
        assert!(worst <= 2.0, "{model} whole: {worst}");
        let (tiled, out) = upscale(model, "input_large.png", &["--precision", "f32", "--tile", "32"]);
        assert!(tiled.status.success(), "{}", String::from_utf8_lossy(&tiled.stderr));
        let (worst, mean) = compare(&out, &format!("{key}/output_large"));
        println!("{model} tiles of 32: worst {worst:.1}/255, mean {mean:.3}/255");
        assert!(mean <= 1.0, "{model} tiled: mean {mean}/255 from the whole image");
    }
}

#[test]
fn bad_files_exit_2_and_run_nothing() {
    let evil = fixtures().join("pth/evil.pth");
    let tiny_unet = fixtures().join("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    let truncated = out_dir().join("truncated.pth");
    let bytes = std::fs::read(fixtures().join("upscale/rrdb_x2.pth")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for (file, words) in [
        (evil, "could run code"),
        (tiny_unet, "not an upscaler"),
        (truncated, "not a PyTorch zip"),
        (out_dir().join("missing.pth"), "does not exist"),
    ] {
        let args: Vec<String> = [
            "upscale",
            "--model",
            file.to_str().unwrap(),
            "--in",
            fixtures().join("upscale/input.png").to_str().unwrap(),
            "--out",
            out_dir().join("never.png").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let result = darkroom(&args);
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{}: {err}", file.display());
        assert!(err.contains(words), "{}: {err}", file.display());
    }
}

/// The hires fix equals composing the steps by hand: txt2img at the base size, `darkroom
/// upscale`, then img2img of the upscaled image with the hires steps, strength and the image's
/// seed — for each image of a batch; the PNG records the hires settings as A1111 does.
#[test]
fn hires_fix_is_txt2img_then_upscale_then_img2img() {
    let dir = out_dir().join("hires");
    std::fs::create_dir_all(&dir).unwrap();
    let upscaler = fixtures().join("upscale/compact_x2.safetensors");
    let common = |out: &PathBuf, extra: &[String]| -> Vec<String> {
        let mut args = tiny_generate(out, "a harbour at dusk");
        args.extend(extra.iter().cloned());
        args
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let hires = dir.join("hires.png");
    let hires_flag = format!("2,steps=4,strength=0.5,upscaler={}", upscaler.display());
    let result = darkroom(&common(
        &hires,
        &s(&[
            "--seed",
            "11",
            "--steps",
            "3",
            "--width",
            "32",
            "--height",
            "24",
            "--batch",
            "2",
            "--hires",
            &hires_flag,
        ]),
    ));
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let base = dir.join("base.png");
    let result = darkroom(&common(
        &base,
        &s(&["--seed", "11", "--steps", "3", "--width", "32", "--height", "24", "--batch", "2"]),
    ));
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    for (i, seed) in [(1, "11"), (2, "12")] {
        let up = dir.join(format!("up-{i}.png"));
        upscale_file(&upscaler, &dir.join(format!("base-{i}.png")), &up);
        // The upscaled PNG keeps its source's parameters and adds the upscale, as A1111's Extras.
        let text = darkroom_pipeline::metadata::read_parameters(&std::fs::read(&up).unwrap()).unwrap();
        assert!(
            text.contains(&format!("Seed: {seed}"))
                && text.ends_with("Postprocess upscale by: 2, Postprocess upscaler: compact_x2.safetensors"),
            "{text}"
        );
        let by_hand = dir.join(format!("by-hand-{i}.png"));
        let result = darkroom(&common(
            &by_hand,
            &s(&["--seed", seed, "--steps", "4", "--init", up.to_str().unwrap(), "--strength", "0.5"]),
        ));
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let ours = std::fs::read(dir.join(format!("hires-{i}.png"))).unwrap();
        let theirs = Image::from_png(&std::fs::read(&by_hand).unwrap()).unwrap();
        let ours_image = Image::from_png(&ours).unwrap();
        assert_eq!((ours_image.width, ours_image.height), (64, 48));
        assert_eq!(ours_image.rgba, theirs.rgba, "image {i}: the hires fix and the steps by hand differ");
        let text = darkroom_pipeline::metadata::read_parameters(&ours).unwrap();
        assert!(text.contains(&format!("Seed: {seed}, Size: 32x24")), "{text}");
        assert!(
            text.ends_with("Denoising strength: 0.5, Hires upscale: 2, Hires steps: 4, Hires upscaler: compact_x2.safetensors"),
            "{text}"
        );
    }
    // Lanczos, the default upscaler.
    let plain = dir.join("lanczos.png");
    let result = darkroom(&common(
        &plain,
        &s(&["--seed", "5", "--steps", "2", "--width", "32", "--height", "24", "--hires", "1.5"]),
    ));
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let img = Image::from_png(&std::fs::read(&plain).unwrap()).unwrap();
    assert_eq!((img.width, img.height), (48, 32), "32·1.5 x 24·1.5, down to multiples of 8");
    for (bad, words) in [
        ("1", "above 1"),
        ("2,strength=0", "strength"),
        ("2,speed=3", "unknown key"),
        ("2,upscaler=Latent (bicubic)", "not available"),
    ] {
        let result = darkroom(&common(
            &dir.join("x.png"),
            &s(&["--seed", "5", "--steps", "2", "--width", "32", "--height", "24", "--hires", bad]),
        ));
        let err = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(words), "{bad}: {err}");
    }
}

/// SD upscale: one tile equals img2img of the upscaled image by hand; with several tiles the
/// first tile's own area (outside the overlaps) is img2img of that crop, the result has the
/// upscaled size, and the PNG records the settings as A1111's script does.
#[test]
fn sd_upscale_redraws_the_upscaled_image_tile_by_tile() {
    let dir = out_dir().join("sd-upscale");
    std::fs::create_dir_all(&dir).unwrap();
    let init = fixtures().join("pipeline/init.png"); // 64x48
    let upscaler = fixtures().join("upscale/compact_x2.safetensors");
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let generate = |out: &PathBuf, extra: Vec<String>| {
        let mut args = tiny_generate(out, "a castle");
        args.extend(s(&["--seed", "8", "--steps", "4", "--strength", "0.5"]));
        args.extend(extra);
        let result = darkroom(&args);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        Image::from_png(&std::fs::read(out).unwrap()).unwrap()
    };
    // The upscaled image, by hand.
    let up = dir.join("up.png");
    upscale_file(&upscaler, &init, &up);
    let flag = format!("2,upscaler={},tile=128,overlap=16", upscaler.display());
    let one_tile =
        generate(&dir.join("one.png"), s(&["--init", init.to_str().unwrap(), "--sd-upscale", &flag]));
    let by_hand = generate(&dir.join("by-hand.png"), s(&["--init", up.to_str().unwrap()]));
    assert_eq!((one_tile.width, one_tile.height), (128, 96));
    assert_eq!(one_tile.rgba, by_hand.rgba, "one tile is img2img of the upscaled image");

    let flag = format!("2,upscaler={},tile=64,overlap=16", upscaler.display());
    let tiled_path = dir.join("tiled.png");
    let tiled = generate(&tiled_path, s(&["--init", init.to_str().unwrap(), "--sd-upscale", &flag]));
    assert_eq!((tiled.width, tiled.height), (128, 96));
    // The first tile, 64x64 at (0, 0), by hand: crop the upscaled image.
    let big = Image::from_png(&std::fs::read(&up).unwrap()).unwrap();
    let crop: Vec<u8> = (0..64).flat_map(|y| big.rgba[y * 128 * 4..(y * 128 + 64) * 4].to_vec()).collect();
    let crop_path = dir.join("crop.png");
    std::fs::write(&crop_path, darkroom_pipeline::metadata::encode_png_plain(&crop, 64, 64).unwrap())
        .unwrap();
    let first = generate(&dir.join("first.png"), s(&["--init", crop_path.to_str().unwrap()]));
    // Outside the overlaps only the first tile counts: columns before 48 (the next tile starts
    // there) and rows before 32 (the last row of tiles is moved back to end at the edge: 96 - 64).
    for y in 0..32 {
        for x in 0..48 {
            for c in 0..3 {
                assert_eq!(tiled.rgba[(y * 128 + x) * 4 + c], first.rgba[(y * 64 + x) * 4 + c], "({x}, {y})");
            }
        }
    }
    let text = darkroom_pipeline::metadata::read_parameters(&std::fs::read(&tiled_path).unwrap()).unwrap();
    assert!(text.contains("Size: 128x96, Model: tiny-sd, Denoising strength: 0.5, SD upscale overlap: 16, SD upscale upscaler: compact_x2.safetensors"), "{text}");
    let result = darkroom(&s(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().unwrap(),
        "--prompt",
        "x",
        "--sd-upscale",
        "2",
        "--out",
        dir.join("x.png").to_str().unwrap(),
    ]));
    assert_eq!(result.status.code(), Some(2), "without --init");
    assert!(
        String::from_utf8_lossy(&result.stderr).contains("init image"),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The hires fix with A1111's latent upscalers equals diffusers composing it
/// (tests/fixtures/pipeline/latent_hires.safetensors): txt2img's latents, torch's `interpolate`
/// (bilinear / nearest), then img2img given those latents — within 2/255 per pixel, and the PNG
/// records `Hires upscaler: Latent` as A1111 writes it.
#[test]
fn latent_hires_matches_diffusers() {
    let dir = out_dir().join("latent-hires");
    std::fs::create_dir_all(&dir).unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let r = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join("pipeline/latent_hires.safetensors")).unwrap(),
    )
    .unwrap();
    for (flag, key, recorded) in
        [("latent", "image_bilinear", "Latent"), ("latent-nearest", "image_nearest", "Latent (nearest)")]
    {
        let out = dir.join(format!("{key}.png"));
        let hires = format!("2,steps=5,strength=0.6,upscaler={flag}");
        let args = s(&[
            "generate",
            "--model",
            fixtures().join("tiny-sd").to_str().unwrap(),
            "--precision",
            "f32",
            "--quant",
            "none",
            "--quiet",
            "--prompt",
            "a lighthouse on a cliff at dusk",
            "--seed",
            "21",
            "--steps",
            "4",
            "--cfg",
            "7",
            "--sampler",
            "euler",
            "--width",
            "64",
            "--height",
            "48",
            "--hires",
            &hires,
            "--out",
            out.to_str().unwrap(),
        ]);
        let result = darkroom(&args);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let png = std::fs::read(&out).unwrap();
        let image = Image::from_png(&png).unwrap();
        assert_eq!((image.width, image.height), (128, 96));
        let want = r.to_f32(r.header.get(key).unwrap()).unwrap();
        let worst = (0..want.len())
            .map(|i| (image.rgba[i / 3 * 4 + i % 3] as f32 - want[i] * 255.0).abs())
            .fold(0.0f32, f32::max);
        println!("{flag}: worst pixel {worst:.2}/255 vs diffusers");
        assert!(worst <= 2.0, "{flag}: worst pixel {worst:.2}/255 off diffusers");
        let text = darkroom_pipeline::metadata::read_parameters(&png).unwrap();
        assert!(
            text.contains(&format!("Hires upscaler: {recorded}")) && text.contains("Size: 64x48"),
            "{text}"
        );
    }
}
