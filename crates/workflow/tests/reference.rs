//! Combinatorial expansions against the `dynamicprompts` library (sd-dynamic-prompts' engine):
//! tests/fixtures/prompts/cases.json, written by tests/reference/prompts_reference.py from the
//! library itself, over the wildcard folder beside it. Each template's prompts must be the
//! library's as a multiset (and, where the library refuses a template, ours must too).

use std::collections::BTreeMap;
use std::path::PathBuf;

use darkroom_workflow::prompts::{expand, Mode, PromptError};
use darkroom_workflow::Wildcards;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/prompts")
}

fn multiset(prompts: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for p in prompts {
        *m.entry(p.as_str()).or_default() += 1;
    }
    m
}

#[test]
fn combinatorial_expansions_equal_the_library_s() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap()).unwrap();
    let wildcards = Wildcards::from_dir(&fixtures().join("wildcards")).unwrap();
    let max = cases["max"].as_u64().unwrap() as usize;
    let mut failures = Vec::new();
    let mut in_order = 0;
    let all = cases["cases"].as_array().unwrap();
    for case in all {
        let template = case["template"].as_str().unwrap();
        let ours = expand(template, &wildcards, Mode::Combinatorial { max, seed: 0 });
        match (&case["error"], ours) {
            (Value::String(kind), Err(e)) => {
                let same_kind = match kind.as_str() {
                    "ParseException" => matches!(e, PromptError::Parse { .. }),
                    "KeyError" => matches!(e, PromptError::UnknownVariable(_)),
                    _ => true,
                };
                if !same_kind {
                    failures.push(format!("{template:?}: the library raises {kind}, we say {e}"));
                }
            }
            (Value::String(kind), Ok(p)) => {
                failures.push(format!("{template:?}: the library raises {kind}, we give {p:?}"))
            }
            (_, Err(e)) => failures.push(format!("{template:?}: we fail: {e}")),
            (_, Ok(ours)) => {
                let theirs: Vec<String> = case["prompts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect();
                if multiset(&ours) != multiset(&theirs) {
                    failures.push(format!("{template:?}:\n  ours   {ours:?}\n  theirs {theirs:?}"));
                }
                in_order += (ours == theirs) as usize;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} templates differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    // Beyond the multiset: the order too (it decides which prompts a maximum keeps).
    let expanded = all.iter().filter(|c| c["prompts"].is_array()).count();
    assert_eq!(in_order, expanded, "every expansion in the library's order");
}
