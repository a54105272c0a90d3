//! The CLIP tokenizer against transformers' CLIPTokenizer on awkward prompts
//! (tests/fixtures/pipeline/tokens.json, from tests/reference/pipeline_reference.py).

use darkroom_pipeline::tokenizer::ClipTokenizer;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

fn load(folder: &str) -> ClipTokenizer {
    let read = |f: &str| std::fs::read_to_string(format!("{FIXTURES}/{folder}/tokenizer/{f}")).unwrap();
    ClipTokenizer::from_files(
        &read("vocab.json"),
        &read("merges.txt"),
        Some(&read("special_tokens_map.json")),
    )
    .unwrap()
}

#[test]
fn ids_equal_transformers() {
    let tokenizer = load("tiny-sd");
    let text = std::fs::read_to_string(format!("{FIXTURES}/pipeline/tokens.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut got = vec![tokenizer.bos];
        got.extend(tokenizer.encode(prompt).unwrap());
        got.push(tokenizer.eos);
        assert_eq!(got, want, "{prompt:?}");
    }
    assert_eq!(tokenizer.decode(&tokenizer.encode("A Photo of  a CAT").unwrap()), "a photo of a cat");
}

#[test]
fn pad_token_follows_the_special_tokens_map() {
    assert_eq!(load("tiny-sd").pad, 49407);
    assert_eq!(load("tiny-sd2").pad, 0); // "!" as SD 2.x pads
}

#[test]
fn broken_files_are_errors() {
    assert!(ClipTokenizer::from_files("[1, 2]", "", None).is_err());
    assert!(ClipTokenizer::from_files(r#"{"a": 0}"#, "#version: 0.2\na b\n", None).is_err());
}
