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
