//! Property tests of the text and file parsers users feed directly: dynamic prompt templates
//! (sd-dynamic-prompts' grammar, built from its own tokens so the fuzz reaches deep into it),
//! JSON/YAML wildcard files, styles.csv, prompts files, X/Y/Z axis specs, palette colours and
//! brief files. Each gives a value or a typed error — never a panic, a hang or a runaway
//! expansion.

use darkroom_workflow::brief::{from_zip, to_zip, BriefFile};
use darkroom_workflow::{Mode, Styles, Template, Wildcards};
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "{",
    "}",
    "|",
    "$$",
    "2$$",
    "1-3$$",
    "-2$$",
    "0$$",
    "__",
    "__colours__",
    "__self__",
    "__deep/*__",
    "${",
    "=",
    "=!",
    "}",
    "${v}",
    "${v=__colours__}",
    "%{",
    "~",
    "::",
    "0.5::",
    "(",
    ")",
    ":1.2",
    "red",
    "blue",
    " ",
    ",",
    "\\",
    "\n",
    "#",
    "{a|b|c}",
    "$",
    "%",
    "😀",
];

fn template() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..24).prop_map(|t| t.concat())
}

fn cards() -> Wildcards {
    let mut w = Wildcards::new();
    w.insert_text("colours", "red\nblue\n{green|teal}\n");
    // A wildcard that names itself, directly and through a variable.
    w.insert_text("self", "__self__ again\n${x=__self__}${x}\n");
    w.insert_text("deep/a", "__deep/b__\n");
    w.insert_text("deep/b", "__deep/a__ or {__colours__|plain}\n");
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn templates_expand_or_fail_cleanly(text in template(), seed in any::<u64>(), count in 0usize..4) {
        let cards = cards();
        if let Ok(t) = Template::parse(&text) {
            if let Ok(out) = t.expand(&cards, Mode::Random { count, seed }) {
                prop_assert!(out.len() <= count);
            }
            if let Ok(out) = t.expand(&cards, Mode::Combinatorial { max: 25, seed }) {
                prop_assert!(out.len() <= 25);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}", seed in any::<u64>()) {
        let cards = cards();
        if let Ok(t) = Template::parse(&text) {
            let _ = t.expand(&cards, Mode::Random { count: 2, seed });
            let _ = t.expand(&cards, Mode::Combinatorial { max: 10, seed });
        }
        let _ = Styles::parse_csv(&text);
        let _ = darkroom_workflow::batch::parse(&text);
        let _ = darkroom_workflow::batch::parse_shard(&text);
        let _ = darkroom_workflow::grid::parse_axis(&text);
        let _ = darkroom_workflow::brief::parse_hex(&text);
        let mut w = Wildcards::new();
        let _ = w.insert_file("x.json", &text);
        let _ = w.insert_file("x.yaml", &text);
    }

    #[test]
    fn structured_wildcards_from_their_tokens(parts in proptest::collection::vec(proptest::sample::select(&[
        "{", "}", "[", "]", ":", ",", "\"a\"", "\"b\"", "1", "0.5", "null", "true", "- ", "\n", "  ", "&x ", "*x", "!!map ", "? ",
    ][..]), 0..30)) {
        let text = parts.concat();
        let mut w = Wildcards::new();
        for name in ["x.json", "x.yaml"] {
            if w.insert_file(name, &text).is_ok() {
                for n in w.names().map(str::to_string).collect::<Vec<_>>() {
                    let _ = w.items(&n);
                }
            }
        }
    }

    #[test]
    fn brief_files_from_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = from_zip(&bytes);
    }

    #[test]
    fn damaged_brief_files_give_errors(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..5)) {
        let mut bytes = to_zip(&BriefFile::default()).unwrap();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = from_zip(&bytes);
    }
}

#[test]
fn a_wildcard_naming_itself_is_an_error_not_a_stack_overflow() {
    let cards = cards();
    for text in ["__self__", "__deep/a__", "${v=__self__}${v}"] {
        let t = Template::parse(text).unwrap();
        for mode in [Mode::Random { count: 2, seed: 1 }, Mode::Combinatorial { max: 5, seed: 1 }] {
            // Through a variable, the variable's own guard may see the loop first.
            let err = t.expand(&cards, mode).unwrap_err().to_string();
            assert!(err.contains("nested more than") || err.contains("refers to itself"), "{text}: {err}");
        }
    }
}
