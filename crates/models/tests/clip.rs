//! The CLIP text encoder against transformers' CLIPTextModel on tiny seeded models
//! (tests/reference/clip_reference.py): SD 1.x style (quick-GELU) and SD 2.x style (GELU).

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, relative_rms_error, DType, Gpu};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::ClipTextConfig;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip").join(variant)
}

struct Reference {
    ids: Vec<u32>,
    hidden: Vec<f32>,
}

fn reference(variant: &str) -> Reference {
    let file =
        SafetensorsFile::from_bytes(std::fs::read(dir(variant).join("reference.safetensors")).unwrap())
            .unwrap();
    let ids_info = file.header.get("input_ids").unwrap();
    let ids = file
        .tensor_bytes(ids_info)
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let hidden = file.to_f32(file.header.get("last_hidden_state").unwrap()).unwrap();
    Reference { ids, hidden }
}

fn run(gpu: &Gpu, variant: &str, dtype: DType, policy: QuantPolicy) -> (Vec<f32>, Reference) {
    let config =
        ClipTextConfig::from_json(&std::fs::read_to_string(dir(variant).join("config.json")).unwrap())
            .unwrap();
    let store =
        WeightStore::from_bytes(std::fs::read(dir(variant).join("model.safetensors")).unwrap()).unwrap();
    let model = ClipTextModel::load(&store.root(gpu, dtype, policy), &config).unwrap();
    store.require_all_used().unwrap();
    let r = reference(variant);
    let out = model.forward(gpu, &r.ids, 77).unwrap();
    assert_eq!(out.shape(), &[r.ids.len() / 77, 77, config.hidden_size]);
    (pollster::block_on(out.read_f32(gpu)).unwrap(), r)
}

#[test]
fn text_embeddings_match_transformers_in_f32() {
    let gpu = gpu();
    for variant in ["sd1", "sd2"] {
        let (got, r) = run(&gpu, variant, DType::F32, QuantPolicy::F32);
        let diff = max_abs_diff(&got, &r.hidden);
        println!("{variant}: max abs diff {diff:.2e}");
        assert!(diff <= 1e-3, "{variant}: differs from transformers by {diff}");
        // The prompts differ, so the embeddings must too (guards against a constant output).
        let row = 77 * 32;
        assert!(max_abs_diff(&got[..row], &got[row..2 * row]) > 0.1);
    }
}

#[test]
fn reduced_precision_paths_stay_within_stated_bounds() {
    // Relative RMS error against transformers' f32 output: f16 activations (f16 weights) 1%,
    // int8 weights 3%.
    let gpu = gpu();
    for variant in ["sd1", "sd2"] {
        for (label, dtype, policy, bound) in
            [("f16", DType::F16, QuantPolicy::F16, 0.01), ("int8", DType::F32, QuantPolicy::Q8, 0.03)]
        {
            let (got, r) = run(&gpu, variant, dtype, policy);
            let err = relative_rms_error(&got, &r.hidden);
            println!("{variant} {label}: relative RMS error {err:.2e}");
            assert!(err <= bound, "{variant} {label}: {err} over {bound}");
        }
    }
}

#[test]
fn config_constructors_describe_the_released_models() {
    let sd15 = ClipTextConfig::sd15();
    assert_eq!((sd15.hidden_size, sd15.num_hidden_layers, sd15.hidden_act.as_str()), (768, 12, "quick_gelu"));
    let sd21 = ClipTextConfig::sd21();
    assert_eq!((sd21.hidden_size, sd21.num_hidden_layers, sd21.hidden_act.as_str()), (1024, 23, "gelu"));
    assert!(ClipTextConfig::from_json(r#"{"vocab_size": 10, "hidden_size": 30, "intermediate_size": 4,
        "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "gelu"}"#)
    .is_err());
}
