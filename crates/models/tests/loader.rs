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

/// Seeded weights at a real configuration's shapes (what `darkroom bench models` builds): every
/// module loads, norms start as identity, the output is finite, and the seed decides the values.
#[test]
fn random_store_builds_any_configuration_deterministically() {
    use darkroom_models::config::UNet2DConditionConfig;
    use darkroom_models::unet::UNet2DConditionModel;
    let gpu = gpu();
    let config = UNet2DConditionConfig::from_json(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/tiny-sd/unet/config.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let run = |seed: u32| {
        let store = WeightStore::random(seed);
        let vb = store.root(&gpu, DType::F32, QuantPolicy::F32);
        assert_eq!(vb.pp("down_blocks.0.resnets.0.norm1").values("weight", &[3]).unwrap(), vec![1.0; 3]);
        assert_eq!(vb.pp("conv_in").values("bias", &[2]).unwrap(), vec![0.0; 2]);
        let w = vb.pp("conv_in").values("weight", &[8, 4, 3, 3]).unwrap();
        let bound = 1.0 / (36f32).sqrt();
        assert!(
            w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > bound / 2.0),
            "fan-in scale"
        );
        let unet = UNet2DConditionModel::load(&vb, &config).unwrap();
        let sample =
            darkroom_gpu::Tensor::from_f32(&gpu, &[1, 4, 8, 8], &vec![0.5; 256], DType::F32).unwrap();
        let width = config.cross_attention_dim;
        let context =
            darkroom_gpu::Tensor::from_f32(&gpu, &[1, 77, width], &vec![0.1; 77 * width], DType::F32)
                .unwrap();
        let out = unet.forward(&gpu, &sample, &[500.0], &context).unwrap();
        pollster::block_on(out.read_f32(&gpu)).unwrap()
    };
    let (a, b, c) = (run(1), run(1), run(2));
    assert!(a.iter().all(|v| v.is_finite()) && a.iter().any(|&v| v != 0.0));
    assert_eq!(a, b, "same seed, same weights");
    assert_ne!(a, c, "another seed, other weights");
}
