//! Depth Anything against transformers' `DepthAnythingForDepthEstimation` on a tiny seeded model
//! (tests/fixtures/depth-anything, from tests/reference/depth_reference.py): the depth of a
//! square input at the grid the positions were learned at, and of a wider one (positions
//! interpolated bicubically), within 1e-3 in f32; f16 within a looser bound.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, DType, Tensor};
use darkroom_models::depth_anything::{DepthAnything, DepthAnythingConfig};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/depth-anything")
}

fn config() -> DepthAnythingConfig {
    DepthAnythingConfig::from_json(&std::fs::read_to_string(dir().join("model/config.json")).unwrap())
        .unwrap()
}

fn store() -> WeightStore {
    WeightStore::from_bytes(std::fs::read(dir().join("model/model.safetensors")).unwrap()).unwrap()
}

#[test]
fn depth_matches_transformers_at_the_learned_grid_and_an_interpolated_one() {
    let gpu = gpu();
    let config = config();
    assert_eq!(config.layers_read, [1, 2, 3, 4]);
    let r = SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    let get = |name: &str| r.to_f32(r.header.get(name).unwrap()).unwrap();
    for (dtype, policy, tolerance) in
        [(DType::F32, QuantPolicy::F32, 1e-3), (DType::F16, QuantPolicy::F16, 3e-2)]
    {
        let store = store();
        let model = DepthAnything::load(&store.root(&gpu, dtype, policy), &config).unwrap();
        assert_eq!(store.unused_keys(), Vec::<String>::new(), "every weight is read");
        for (name, h, w) in [("square", 56, 56), ("wide", 70, 98)] {
            let pixels =
                Tensor::from_f32(&gpu, &[1, 3, h, w], &get(&format!("{name}_pixels")), dtype).unwrap();
            let depth = pollster::block_on(model.forward(&gpu, &pixels)).unwrap();
            assert_eq!((depth.width, depth.height), (w, h));
            let want = get(&format!("{name}_depth"));
            let diff = max_abs_diff(&depth.values, &want);
            let range = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            println!("{name} {dtype:?}: max |diff| {diff:.2e} (depth up to {range:.3})");
            assert!(diff <= tolerance, "{name} {dtype:?}: {diff}");
        }
    }
}

#[test]
fn inputs_it_cannot_take_are_refused() {
    let gpu = gpu();
    let config = config();
    let store = store();
    let model = DepthAnything::load(&store.root(&gpu, DType::F32, QuantPolicy::F32), &config).unwrap();
    for shape in [[1, 3, 13, 56], [1, 4, 56, 56], [2, 3, 56, 56]] {
        let pixels = Tensor::from_f32(&gpu, &shape, &vec![0.0; shape.iter().product()], DType::F32).unwrap();
        assert!(pollster::block_on(model.forward(&gpu, &pixels)).is_err(), "{shape:?}");
    }
}
