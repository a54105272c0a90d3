//! Property tests of the parsers that read what users and other tools write: A1111's prompt
//! attention syntax and `<lora:…>` tags, infotext (A1111's PNG parameters), brand presets, PNG
//! parameter chunks and drafts' kept latents. Each gives a value or a typed error — never a
//! panic or a hang.

use darkroom_pipeline::draft::Kept;
use darkroom_pipeline::metadata::{read_parameters, GenerationParams};
use darkroom_pipeline::preset::Preset;
use darkroom_pipeline::prompt::{extract_loras, parse, Piece};
use proptest::prelude::*;

const PROMPT_TOKENS: &[&str] = &[
    "(", ")", "[", "]", ":", "1.2", "-0.5", ".", "..", "\\(", "\\)", "\\", "BREAK", "AND", "<lora:",
    "<lyco:", ">", "ink", ":0.8", ":nan", ":1e999", "cat", " ", ",", "\n", "😀",
];

const INFOTEXT_TOKENS: &[&str] = &[
    "a cat",
    "\n",
    "Negative prompt: ",
    "Steps: ",
    "20",
    "-1",
    "99999999999999999999",
    "Sampler: ",
    "Euler a",
    "CFG scale: ",
    "7.5",
    "nan",
    "inf",
    "Seed: ",
    "Size: ",
    "512x512",
    "0x0",
    "x",
    "Model hash: ",
    "Model: ",
    ", ",
    ": ",
    "\"",
    "\\\"",
    "Hires upscale: ",
    "Denoising strength: ",
    "Lora hashes: ",
    "Template: ",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn prompts_parse_from_their_tokens(parts in proptest::collection::vec(proptest::sample::select(PROMPT_TOKENS), 0..30)) {
        let text = parts.concat();
        for piece in parse(&text) {
            if let Piece::Text(_, weight) = piece {
                prop_assert!(weight.is_finite(), "{text:?} gave weight {weight}");
            }
        }
        let (_, tags) = extract_loras(&text);
        for tag in tags {
            prop_assert!(!tag.name.contains('>'));
        }
    }

    #[test]
    fn infotext_from_its_tokens(parts in proptest::collection::vec(proptest::sample::select(INFOTEXT_TOKENS), 0..30)) {
        let text = parts.concat();
        if let Ok(p) = GenerationParams::parse_infotext(&text) {
            prop_assert!(p.cfg_scale.is_finite(), "{text:?}");
            // What it read writes back and reads again to the same settings.
            let again = GenerationParams::parse_infotext(&p.to_infotext()).unwrap();
            prop_assert_eq!(again.seed, p.seed);
            prop_assert_eq!((again.width, again.height, again.steps), (p.width, p.height, p.steps));
        }
    }

    #[test]
    fn arbitrary_text_and_bytes_never_panic(text in "\\PC{0,120}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&text);
        let _ = extract_loras(&text);
        let _ = GenerationParams::parse_infotext(&text);
        let _ = Preset::parse(&text);
        let _ = read_parameters(&bytes);
        let _ = Kept::decode(&bytes);
        let _ = Kept::from_png(&bytes);
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        png.extend_from_slice(&bytes);
        let _ = read_parameters(&png);
        let _ = Kept::from_png(&png);
    }
}
