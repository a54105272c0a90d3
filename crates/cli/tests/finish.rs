//! `darkroom generate --draft` then `darkroom finish`: the finished drafts are the images a run
//! without --draft writes, byte for byte in pixels and parameters — with the hires fix too —
//! and what is not a draft is refused by name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use darkroom_pipeline::metadata::read_parameters;
use darkroom_pipeline::Image;

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

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn image(path: &Path) -> (Image, String) {
    let bytes = std::fs::read(path).unwrap();
    (Image::from_png(&bytes).unwrap(), read_parameters(&bytes).unwrap())
}

/// `generate` with `extra` flags into `dir`, the written files in order.
fn generate(dir: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let model = fixtures().join("tiny-sd");
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a lighthouse, (dusk:1.2)",
        "--negative",
        "fog",
        "--seed",
        "40",
        "--steps",
        "2",
        "--sampler",
        "euler_a",
        "--cfg",
        "5",
        "--width",
        "64",
        "--height",
        "48",
        "--batch",
        "2",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(darkroom(&args)).lines().map(PathBuf::from).collect()
}

fn drafts_finish_as_made_directly(name: &str, extra: &[&str]) {
    let base = out_dir(name);
    let taesd = fixtures().join("taesd-test");
    let direct = generate(&base.join("direct"), extra);
    let mut with_draft = extra.to_vec();
    with_draft.extend_from_slice(&["--draft", taesd.to_str().unwrap()]);
    let drafts = generate(&base.join("drafts"), &with_draft);
    assert_eq!(drafts.len(), 2);
    let finals = base.join("finals");
    let mut args = vec!["finish", "--quiet", "--out", finals.to_str().unwrap()];
    args.extend(drafts.iter().map(|p| p.to_str().unwrap()));
    let finished: Vec<PathBuf> = ok(darkroom(&args)).lines().map(PathBuf::from).collect();
    assert_eq!(finished, [finals.join("40-final.png"), finals.join("41-final.png")]);
    for ((d, f), w) in drafts.iter().zip(&finished).zip(&direct) {
        let (draft, draft_text) = image(d);
        let (done, done_text) = image(f);
        let (want, want_text) = image(w);
        assert!(draft_text.contains("Draft: TAESD"), "{draft_text}");
        assert_ne!(draft.rgba, want.rgba);
        assert_eq!((done.width, done.height), (want.width, want.height));
        assert_eq!(done.rgba, want.rgba, "{} finished is {}", d.display(), w.display());
        assert_eq!(done_text, want_text);
        // A finished image is no longer a draft.
        let again = darkroom(&["finish", f.to_str().unwrap()]);
        assert_eq!(again.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&again.stderr).contains("is not a draft"));
    }
}

#[test]
fn finished_drafts_are_the_direct_images() {
    drafts_finish_as_made_directly("finish-plain", &[]);
}

#[test]
fn finished_drafts_take_the_hires_pass_their_recipe_asks_for() {
    drafts_finish_as_made_directly("finish-hires", &["--hires", "1.5,steps=2,strength=0.5"]);
    // A latent upscale starts from the kept latents themselves.
    drafts_finish_as_made_directly(
        "finish-latent-hires",
        &["--hires", "2,steps=2,strength=0.5,upscaler=latent"],
    );
}

#[test]
fn bad_drafts_are_refused_by_name() {
    let dir = out_dir("finish-bad");
    let missing = darkroom(&["finish", dir.join("nothing.png").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    let text = dir.join("text.png");
    std::fs::write(&text, b"not a png").unwrap();
    let bad = darkroom(&["finish", text.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a PNG"));
}
