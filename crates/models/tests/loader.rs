//! Weight loading errors name the key and say what is wrong.

use darkroom_gpu::DType;
use darkroom_models::{ModelError, QuantPolicy, WeightStore};

mod common;
use common::gpu;

/// A safetensors file of f32 tensors, written by hand.
fn file(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let mut offset = 0;
    let mut entries = Vec::new();
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        entries.push(format!(
            r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
            offset + bytes
        ));
        offset += bytes;
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + offset, 0);
    out
}

#[test]
fn missing_misshaped_and_unused_tensors_are_named() {
    let gpu = gpu();
    let store =
        WeightStore::from_bytes(file(&[("block.proj.weight", &[4, 3]), ("block.extra", &[2])])).unwrap();
    let vb = store.root(&gpu, DType::F32, QuantPolicy::F32).pp("block");

    let err = vb.pp("proj").linear(4, 3, true).unwrap_err();
    assert!(matches!(&err, ModelError::Missing(key) if key == "block.proj.bias"), "{err}");

    let err = vb.pp("proj").linear(5, 3, false).unwrap_err();
    assert!(matches!(&err, ModelError::Shape { key, .. } if key == "block.proj.weight"), "{err}");
    assert!(err.to_string().contains("[4, 3]") && err.to_string().contains("[5, 3]"), "{err}");

    vb.pp("proj").linear(4, 3, false).unwrap();
    let err = store.require_all_used().unwrap_err();
    assert!(err.to_string().contains("block.extra"), "{err}");
    assert!(!err.to_string().contains("block.proj.weight"), "a used key is not unused: {err}");
}

#[test]
fn a_file_that_is_not_safetensors_is_refused() {
    assert!(WeightStore::from_bytes(b"not a safetensors file at all".to_vec()).is_err());
}
