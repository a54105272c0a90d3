//! The restricted `.pth` reader against files written by `torch.save`
//! (tests/reference/pth_reference.py): every tensor equal to PyTorch's, nested EMA weights
//! picked, a malicious `__reduce__` refused, and mangled files (truncated, bytes flipped)
//! refused without a panic.

use std::path::PathBuf;

use darkroom_weights::pth::{PthError, StateDict};
use darkroom_weights::SafetensorsFile;
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pth").join(name))
        .unwrap()
}

fn reference() -> SafetensorsFile {
    SafetensorsFile::from_bytes(fixture("reference.safetensors")).unwrap()
}

/// Every tensor of `file` converted to safetensors equals PyTorch's, bytes and shape.
fn check(file: &str, prefix: &str, want_names: &[&str]) {
    let dict = StateDict::from_bytes(&fixture(file)).unwrap();
    let converted = SafetensorsFile::from_bytes(dict.to_safetensors()).unwrap();
    let reference = reference();
    let mut names: Vec<&str> = converted.header.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    let mut want: Vec<&str> = want_names.to_vec();
    want.sort();
    assert_eq!(names, want, "{file}");
    for t in &converted.header.tensors {
        let r = reference.header.get(&format!("{prefix}/{}", t.name)).unwrap();
        assert_eq!((t.dtype, &t.shape), (r.dtype, &r.shape), "{}", t.name);
        assert_eq!(converted.tensor_bytes(t), reference.tensor_bytes(r), "{}", t.name);
    }
}

#[test]
fn tensors_equal_pytorchs_including_views_and_every_dtype() {
    check(
        "plain.pth",
        "plain",
        &[
            "conv.weight",
            "conv.bias",
            "half",
            "bf16",
            "transposed",
            "offset_view",
            "shared_head",
            "param",
            "steps",
        ],
    );
}

#[test]
fn nested_checkpoints_give_their_ema_weights() {
    check("nested.pth", "nested", &["body.0.weight"]);
}

#[test]
fn a_malicious_reduce_is_refused_and_nothing_runs() {
    let err = StateDict::from_bytes(&fixture("evil.pth")).err().unwrap();
    assert!(matches!(&err, PthError::Refused(what) if what.ends_with(".system")), "{err}");
    assert!(err.to_string().contains("could run code"), "{err}");
}

#[test]
fn truncated_files_are_refused() {
    let bytes = fixture("plain.pth");
    for cut in [0, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
        assert!(StateDict::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    /// Any bytes changed anywhere: an error or a state dict, never a panic or a hang.
    #[test]
    fn mangled_files_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = fixture("plain.pth");
        let n = bytes.len();
        for (at, v) in flips {
            bytes[at % n] = v;
        }
        if let Ok(dict) = StateDict::from_bytes(&bytes) {
            let _ = dict.to_safetensors();
        }
    }
}
