//! The CLIP tokenizer against transformers' CLIPTokenizer on awkward prompts
//! (tests/fixtures/pipeline/tokens.json, from tests/reference/pipeline_reference.py).

use darkroom_pipeline::tokenizer::ClipTokenizer;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

pub fn load(folder: &str) -> ClipTokenizer {
    let read = |f: &str| std::fs::read_to_string(format!("{FIXTURES}/{folder}/tokenizer/{f}")).unwrap();
    ClipTokenizer::from_files(
        &read("vocab.json"),
        &read("merges.txt"),
        Some(&read("special_tokens_map.json")),
    )
    .unwrap()
}

/// The tokenizer/ folder as current transformers saves it: tokenizer.json + tokenizer_config.json.
fn load_saved(folder: &str) -> ClipTokenizer {
    let read = |f: &str| std::fs::read_to_string(format!("{FIXTURES}/{folder}/tokenizer/{f}")).ok();
    ClipTokenizer::from_tokenizer_json(
        &read("tokenizer.json").unwrap(),
        read("tokenizer_config.json").as_deref(),
        read("special_tokens_map.json").as_deref(),
    )
    .unwrap()
}

fn assert_ids_equal(tokenizer: &ClipTokenizer, reference: &str) {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{reference}")).unwrap();
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
fn ids_equal_transformers() {
    assert_ids_equal(&load("tiny-sd"), "pipeline/tokens.json");
}

/// tiny-sd-deep was written by transformers 5's `save_pretrained`: no vocab.json/merges.txt.
#[test]
fn a_saved_tokenizer_json_gives_transformers_ids() {
    let tokenizer = load_saved("tiny-sd-deep");
    assert_ids_equal(&tokenizer, "sizes/tokens.json");
    assert_eq!((tokenizer.bos, tokenizer.eos, tokenizer.pad), (49406, 49407, 49407));
}

#[test]
fn a_tokenizer_json_takes_its_pad_token_from_the_config() {
    let json = std::fs::read_to_string(format!("{FIXTURES}/tiny-sd-deep/tokenizer/tokenizer.json")).unwrap();
    let bang = ClipTokenizer::from_tokenizer_json(&json, Some(r#"{"pad_token": "!"}"#), None).unwrap();
    assert_eq!(bang.pad, 0, "SD 2.x's OpenCLIP tokenizer pads with \"!\"");
    let object = ClipTokenizer::from_tokenizer_json(
        &json,
        None,
        Some(r#"{"pad_token": {"content": "!", "lstrip": false}}"#),
    )
    .unwrap();
    assert_eq!(object.pad, 0, "an added-token object names it too");
    assert_eq!(ClipTokenizer::from_tokenizer_json(&json, None, None).unwrap().pad, 49407);
    // Merges written as pairs (newer `tokenizers`) read the same as "a b" strings.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pairs: Vec<serde_json::Value> = value["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(_) => m.clone(),
            s => serde_json::json!(s.as_str().unwrap().split(' ').collect::<Vec<_>>()),
        })
        .collect();
    let strings: Vec<serde_json::Value> = pairs
        .iter()
        .map(|p| serde_json::json!(format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())))
        .collect();
    for merges in [pairs, strings] {
        value["model"]["merges"] = serde_json::Value::Array(merges);
        let t = ClipTokenizer::from_tokenizer_json(&value.to_string(), None, None).unwrap();
        assert_eq!(
            t.encode("an astronaut riding a horse").unwrap(),
            bang.encode("an astronaut riding a horse").unwrap()
        );
    }
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
    assert!(ClipTokenizer::from_tokenizer_json("{}", None, None).is_err());
    assert!(ClipTokenizer::from_tokenizer_json(
        r#"{"model": {"type": "WordPiece", "vocab": {}}}"#,
        None,
        None
    )
    .is_err());
    assert!(ClipTokenizer::from_tokenizer_json(
        r#"{"model": {"type": "BPE", "vocab": {}, "merges": [1]}}"#,
        None,
        None
    )
    .is_err());
}

mod chunks {
    use darkroom_pipeline::text::{chunks, CHUNK, WINDOW};

    use super::load;

    #[test]
    fn a_short_prompt_is_one_padded_window_with_its_weights() {
        let t = load("tiny-sd");
        let c = chunks(&t, "a (cat:1.5) on [a] mat").unwrap();
        assert_eq!(c.len(), 1);
        let words = t.encode("a cat on a mat").unwrap();
        assert_eq!(c[0].ids.len(), WINDOW);
        assert_eq!(c[0].ids[0], t.bos);
        assert_eq!(&c[0].ids[1..6], words.as_slice());
        assert_eq!(c[0].ids[6], t.eos);
        assert!(c[0].ids[7..].iter().all(|&id| id == t.pad));
        assert_eq!(&c[0].weights[..7], &[1.0, 1.0, 1.5, 1.0, (1.0 / 1.1) as f32, 1.0, 1.0]);
        assert_eq!(chunks(&t, "").unwrap().len(), 1, "an empty prompt is one window");
    }

    #[test]
    fn break_and_long_prompts_start_new_chunks() {
        let t = load("tiny-sd");
        assert_eq!(chunks(&t, "a cat BREAK a dog").unwrap().len(), 2);
        assert_eq!(chunks(&t, "a cat BREAK").unwrap().len(), 1, "a trailing BREAK adds nothing");
        let words = vec!["cat"; 80].join(" ");
        let c = chunks(&t, &words).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ids[CHUNK + 1], t.eos, "75 words, then the end token");
        assert_eq!(c[1].ids[6], t.eos, "5 words in the second window");
        assert_eq!(chunks(&t, &vec!["cat"; 75].join(" ")).unwrap().len(), 1, "exactly 75 fit one window");
    }

    #[test]
    fn a_full_chunk_breaks_after_a_recent_comma() {
        let t = load("tiny-sd");
        // 70 words, a comma, 10 words: the chunk fills at 75 with the comma 5 tokens back, so the
        // 4 words after the comma move to the second window with the rest.
        let prompt = format!("{}, {}", vec!["cat"; 70].join(" "), vec!["dog"; 10].join(" "));
        let c = chunks(&t, &prompt).unwrap();
        assert_eq!(c.len(), 2);
        let comma = t.encode(",").unwrap()[0];
        assert_eq!(c[0].ids[71], comma);
        assert_eq!(c[0].ids[72], t.eos, "the first window ends right after the comma");
        let dog = t.encode("dog").unwrap()[0];
        assert_eq!(c[1].ids[1..11], [dog; 10]);
        // A comma further back than 20 tokens does not move anything.
        let prompt = format!("{}, {}", vec!["cat"; 40].join(" "), vec!["dog"; 50].join(" "));
        let c = chunks(&t, &prompt).unwrap();
        assert_eq!(c[0].ids[CHUNK], dog);
    }
}
