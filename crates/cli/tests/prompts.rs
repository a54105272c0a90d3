//! `darkroom prompts` as a user runs it: combinatorial output equal to the `dynamicprompts`
//! library's (tests/fixtures/prompts/cases.json, from tests/reference/prompts_reference.py) line
//! for line, random mode reproducible by seed, and refusals with exit code 2.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/prompts")
}

fn darkroom(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_darkroom")).args(args).output().expect("run darkroom");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn combinatorial_prints_the_library_s_prompts_one_a_line() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap()).unwrap();
    let wildcards = fixtures().join("wildcards");
    let wildcards = wildcards.to_str().unwrap();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let template = case["template"].as_str().unwrap();
        let Some(prompts) = case["prompts"].as_array() else { continue };
        let prompts: Vec<&str> = prompts.iter().map(|p| p.as_str().unwrap()).collect();
        // One a line: only templates whose prompts have no line breaks, and not empty ones.
        if template.is_empty() || prompts.iter().any(|p| p.contains('\n') || p.is_empty()) {
            continue;
        }
        let (code, out, err) = darkroom(&["prompts", template, "--wildcards", wildcards, "--combinatorial"]);
        assert_eq!(code, Some(0), "{template:?}: {err}");
        assert_eq!(out.lines().collect::<Vec<_>>(), prompts, "{template:?}");
        checked += 1;
    }
    assert!(checked > 50, "{checked} templates checked");
    // --max keeps the first N, as the library's maximum does.
    let (_, out, _) = darkroom(&["prompts", "{a|b|c} {x|y}", "--combinatorial", "--max", "4"]);
    assert_eq!(out, "a x\na y\nb x\nb y\n");
}

#[test]
fn random_prompts_repeat_by_seed_and_name_a_missing_wildcard() {
    let wildcards = fixtures().join("wildcards");
    let w = wildcards.to_str().unwrap();
    let template = "{red|green|blue} __animals__, {2$$ and $$ink|oil|chalk}";
    let (code, first, _) = darkroom(&["prompts", template, "--wildcards", w, "--count", "12", "--seed", "5"]);
    assert_eq!(code, Some(0));
    let (_, again, _) = darkroom(&["prompts", template, "--wildcards", w, "--count", "12", "--seed", "5"]);
    assert_eq!(first, again);
    assert_eq!(first.lines().count(), 12);
    let (_, other, _) = darkroom(&["prompts", template, "--wildcards", w, "--count", "12", "--seed", "6"]);
    assert_ne!(first, other);
    for line in first.lines() {
        let (colour, rest) = line.split_once(' ').unwrap();
        assert!(["red", "green", "blue"].contains(&colour), "{line}");
        assert!(["cat", "owl", "fox "].iter().any(|a| rest.starts_with(a)), "{line}");
        assert_eq!(line.matches(" and ").count(), 1, "{line}");
    }
    let (code, out, err) = darkroom(&["prompts", "a __nowhere__", "--count", "2", "--seed", "1"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "a __nowhere__\na __nowhere__\n");
    assert!(err.contains("wildcard __nowhere__ has no values"), "{err}");
}

#[test]
fn bad_templates_and_flags_exit_2_with_the_reason() {
    let (code, _, err) = darkroom(&["prompts", "{a|b"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("without its `}`"), "{err}");
    let (code, _, err) = darkroom(&["prompts", "${tone} sea", "--combinatorial"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("variable `tone`"), "{err}");
    let (code, _, err) = darkroom(&["prompts", "x", "--wildcards", "/nonexistent/folder", "--combinatorial"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--wildcards"), "{err}");
    let (code, _, _) = darkroom(&["prompts", "x", "--combinatorial", "--seed", "3"]);
    assert_eq!(code, Some(2), "--seed belongs to random mode");
}

#[test]
fn generate_dynamic_gives_each_image_the_expansion_of_its_seed_and_records_the_template() {
    let tmp = std::env::temp_dir().join(format!("darkroom-dynamic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let model = fixtures().join("../tiny-sd");
    let wildcards = fixtures().join("wildcards");
    let template = "a {red|green|blue} __animals__, {2$$ and $$ink|oil|chalk}";
    let out = tmp.join("random");
    #[rustfmt::skip]
    let common = ["--model", model.to_str().unwrap(), "--steps", "1", "--width", "32", "--height", "32", "--precision", "f32", "--quiet", "--wildcards", wildcards.to_str().unwrap()];
    let mut args =
        vec!["generate", "--prompt", template, "--dynamic", "random", "--batch-count", "3", "--seed", "5"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let (code, _, err) = darkroom(&args);
    assert_eq!(code, Some(0), "{err}");
    for seed in 5..8 {
        let (_, params, _) = darkroom(&["params", out.join(format!("{seed}.png")).to_str().unwrap()]);
        let (_, expected, _) = darkroom(&[
            "prompts",
            template,
            "--wildcards",
            wildcards.to_str().unwrap(),
            "--count",
            "1",
            "--seed",
            &seed.to_string(),
        ]);
        assert_eq!(params.lines().next().unwrap(), expected.trim_end_matches('\n'), "seed {seed}");
        assert!(
            params.contains(&format!("Seed: {seed}"))
                && params.contains("Template: \"a {red|green|blue} __animals__, {2$$ and $$ink|oil|chalk}\""),
            "{params}"
        );
    }
    // Combinatorial: every combination, each with the batch settings, seeds continuing.
    let out = tmp.join("combinatorial");
    let mut args = vec![
        "generate",
        "--prompt",
        "a {red|blue} fox",
        "--dynamic",
        "combinatorial",
        "--batch",
        "2",
        "--seed",
        "5",
    ];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--out", out.to_str().unwrap()]);
    let (code, written, err) = darkroom(&args);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(written.lines().count(), 4);
    let prompt_of = |seed: u64| {
        let (_, p, _) = darkroom(&["params", out.join(format!("{seed}.png")).to_str().unwrap()]);
        p.lines().next().unwrap().to_string()
    };
    assert_eq!(
        [prompt_of(5), prompt_of(6), prompt_of(7), prompt_of(8)],
        ["a red fox", "a red fox", "a blue fox", "a blue fox"]
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
