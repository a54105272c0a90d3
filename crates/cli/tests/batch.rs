//! `darkroom batch` on the tiny model: A1111 prompts-file lines and JSON recipes make the images
//! `darkroom generate` makes with the same settings (byte for byte), a second run makes nothing
//! new, a deleted image is made again alone, and shards partition the jobs exactly.

mod common;

use common::darkroom;
use common::root;
use std::collections::BTreeSet;
use std::path::Path;

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

const JOBS: &str = r#"a lighthouse at dusk
--prompt "a fox" in snow --steps 3 --cfg_scale 5 --seed 11 --sampler_name "Euler a"

{"prompt": "an owl", "steps": 2, "batch_size": 2, "seed": 40}
--prompt a harbour --negative_prompt fog --seed 5 --tiling true
"#;

#[test]
fn a_batch_makes_generate_s_images_resumes_and_shards() {
    let tmp = std::env::temp_dir().join(format!("darkroom-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let file = tmp.join("jobs.txt");
    std::fs::write(&file, JOBS).unwrap();
    let model = root().join("tests/fixtures/tiny-sd");
    let (model, file) = (model.to_str().unwrap(), file.to_str().unwrap());
    // One line each, as rustfmt would otherwise stand every flag on its own.
    #[rustfmt::skip]
    let common = ["--model", model, "--width", "32", "--height", "40", "--precision", "f32", "--quiet"];
    let batch = |out: &Path, extra: &[&str]| {
        let mut args = vec!["batch", file, "--steps", "2"];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        darkroom(&args)
    };
    let out = tmp.join("all");
    let first = batch(&out, &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let made = names(&out);
    assert_eq!(made.len(), 5, "{made:?}");
    for expected in ["00002-11.png", "00003-40.png", "00003-41.png", "00004-5.png"] {
        assert!(made.contains(expected), "{expected} in {made:?}");
    }
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("--tiling"),
        "an A1111 flag we leave out is named"
    );

    // Line 2 is `generate` with those settings.
    let single = tmp.join("single.png");
    let out_single = single.to_str().unwrap();
    #[rustfmt::skip]
    let mut args = vec!["generate", "--prompt", "a fox in snow", "--steps", "3", "--cfg", "5", "--seed", "11", "--sampler", "Euler a", "--out", out_single];
    args.extend_from_slice(&common);
    let generate = darkroom(&args);
    assert!(generate.status.success(), "{}", String::from_utf8_lossy(&generate.stderr));
    assert_eq!(std::fs::read(out.join("00002-11.png")).unwrap(), std::fs::read(&single).unwrap());

    // Again: nothing new. One image deleted: only its job runs.
    let again = batch(&out, &[]);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), "");
    std::fs::remove_file(out.join("00003-41.png")).unwrap();
    let resumed = batch(&out, &[]);
    let written: Vec<String> = String::from_utf8_lossy(&resumed.stdout).lines().map(str::to_string).collect();
    assert_eq!(written.len(), 2, "job 3 (two images) made again: {written:?}");
    assert!(written.iter().all(|p| p.contains("00003-")));
    assert_eq!(names(&out), made);

    // Two shards make the same files between them, each once.
    let (a, b) = (tmp.join("shard1"), tmp.join("shard2"));
    assert!(batch(&a, &["--shard", "1/2"]).status.success());
    assert!(batch(&b, &["--shard", "2/2"]).status.success());
    let (na, nb) = (names(&a), names(&b));
    assert!(na.is_disjoint(&nb));
    assert_eq!(na.union(&nb).cloned().collect::<BTreeSet<_>>(), made);
    let first_job = made.iter().next().unwrap();
    assert!(first_job.starts_with("00001-"));
    assert_eq!(std::fs::read(a.join(first_job)).unwrap(), std::fs::read(out.join(first_job)).unwrap());

    let bad = batch(&tmp.join("bad"), &["--shard", "3/2"]);
    assert_eq!(bad.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn styles_from_an_a1111_styles_file_shape_the_prompts() {
    let tmp = std::env::temp_dir().join(format!("darkroom-styles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let styles = tmp.join("styles.csv");
    std::fs::write(&styles, "\u{feff}name, prompt, negative_prompt\r\nInk,\"{prompt}, ink drawing\",blurry\r\nBrand,\"poster, teal\",\r\n").unwrap();
    let model = root().join("tests/fixtures/tiny-sd");
    let png = tmp.join("out.png");
    let args = [
        "generate",
        "--prompt",
        "a fox",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "1",
        "--width",
        "32",
        "--height",
        "32",
        "--precision",
        "f32",
        "--seed",
        "3",
        "--quiet",
        "--styles",
        styles.to_str().unwrap(),
        "--style",
        "Ink",
        "--style",
        "Brand",
        "--out",
        png.to_str().unwrap(),
    ];
    let made = darkroom(&args);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let params = darkroom(&["params", png.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&params.stdout);
    assert!(text.starts_with("a fox, ink drawing, poster, teal\nNegative prompt: blurry\n"), "{text}");
    let mut unknown = args.to_vec();
    let at = unknown.iter().position(|a| *a == "Brand").unwrap();
    unknown[at] = "Nope";
    let refused = darkroom(&unknown);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("no style called \"Nope\"; the styles file has: Ink, Brand"));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn a_brand_preset_shapes_every_job_and_refuses_other_sizes() {
    let tmp = std::env::temp_dir().join(format!("darkroom-preset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let preset = tmp.join("acme.json");
    std::fs::write(
        &preset,
        r##"{ "name": "Acme", "prompt": "{prompt}, flat pastel", "negative_prompt": "neon",
            "sampler": "Euler a", "steps": 2, "cfg_scale": 5, "sizes": ["32x48", "48x32"],
            "palette": ["#0b1f3a"], "seed": { "increment": 100 } }"##,
    )
    .unwrap();
    let jobs = tmp.join("jobs.txt");
    std::fs::write(&jobs, "a kite\n--prompt \"a boat\" --negative_prompt fog\n").unwrap();
    let model = root().join("tests/fixtures/tiny-sd");
    let out = tmp.join("out");
    let common = [
        "--model",
        model.to_str().unwrap(),
        "--precision",
        "f32",
        "--quiet",
        "--preset",
        preset.to_str().unwrap(),
    ];
    let mut args = vec!["batch", jobs.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(common);
    let made = darkroom(&args);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // Job i gets seed 100 + i, the first size the preset allows, its settings and style.
    assert_eq!(names(&out), BTreeSet::from(["00001-100.png".to_string(), "00002-101.png".to_string()]));
    let params = darkroom(&["params", out.join("00002-101.png").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&params.stdout).into_owned();
    assert_eq!(
        text.trim_end(),
        "a boat, flat pastel\nNegative prompt: fog, neon\nSteps: 2, Sampler: Euler a, CFG scale: 5, Seed: 101, Size: 32x48, Model: tiny-sd, Preset: Acme"
    );
    // The same image as generate with those settings spelled out.
    let direct = tmp.join("direct.png");
    let plain = darkroom(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--precision",
        "f32",
        "--quiet",
        "--prompt",
        "a boat, flat pastel",
        "--negative",
        "fog, neon",
        "--sampler",
        "euler_a",
        "--steps",
        "2",
        "--cfg",
        "5",
        "--seed",
        "101",
        "--width",
        "32",
        "--height",
        "48",
        "--out",
        direct.to_str().unwrap(),
    ]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let pixels = |p: &Path| darkroom_pipeline::Image::from_png(&std::fs::read(p).unwrap()).unwrap().rgba;
    assert_eq!(pixels(&out.join("00002-101.png")), pixels(&direct));
    // A size asked for that the preset does not allow is refused, with what it allows.
    let mut wrong = vec!["generate", "--prompt", "a kite", "--width", "64", "--height", "64", "--out"];
    let wrong_out = tmp.join("wrong.png");
    wrong.push(wrong_out.to_str().unwrap());
    wrong.extend(common);
    let refused = darkroom(&wrong);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("64x64 is not a size preset \"Acme\" allows (32x48, 48x32)"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
