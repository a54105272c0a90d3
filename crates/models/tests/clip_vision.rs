//! CLIP's vision tower and both projections against transformers' `CLIPModel` on a tiny seeded
//! model (tests/fixtures/clip-score, from tests/reference/clip_score_reference.py): image and
//! text embeddings within 1e-4, CLIP scores (torchmetrics' definition) within 0.05.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, DType, Tensor};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::clip_vision::{clip_score, ClipVisionConfig, ClipVisionModel};
use darkroom_models::config::ClipTextConfig;
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip-score")
}

#[test]
fn image_and_text_embeddings_and_clip_scores_match_transformers() {
    let gpu = gpu();
    let config = std::fs::read_to_string(dir().join("model/config.json")).unwrap();
    let (vision_cfg, projection) = ClipVisionConfig::from_clip_json(&config).unwrap();
    assert_eq!((vision_cfg.image_size, vision_cfg.patch_size, projection), (32, 8, Some(16)));
    let text_cfg = ClipTextConfig::from_clip_json(&config).unwrap();
    let store =
        WeightStore::from_bytes(std::fs::read(dir().join("model/model.safetensors")).unwrap()).unwrap();
    let root = store.root(&gpu, DType::F32, QuantPolicy::F32);
    let vision = ClipVisionModel::load(&root, &vision_cfg, projection).unwrap();
    let text = ClipTextModel::load(&root, &text_cfg).unwrap();
    let unused: Vec<String> =
        store.unused_keys().into_iter().filter(|k| !k.ends_with("position_ids")).collect();
    assert_eq!(unused, ["logit_scale"], "every tower weight is read");

    let r = SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    let get = |name: &str| r.to_f32(r.header.get(name).unwrap()).unwrap();
    let pixels = Tensor::from_f32(&gpu, &[2, 3, 32, 32], &get("pixel_values"), DType::F32).unwrap();
    let image = pollster::block_on(vision.forward(&gpu, &pixels)).unwrap();
    assert_eq!(image.shape(), [2, 16]);
    let image = pollster::block_on(image.read_f32(&gpu)).unwrap();
    let di = max_abs_diff(&image, &get("image_embeds"));
    let ids: Vec<u32> = get("input_ids").iter().map(|&v| v as u32).collect();
    let out = pollster::block_on(text.forward_sdxl(&gpu, &ids, 77, true, &[])).unwrap();
    let texts = pollster::block_on(out.pooled.unwrap().read_f32(&gpu)).unwrap();
    let dt = max_abs_diff(&texts, &get("text_embeds"));
    println!("image embeddings {di:.2e}, text embeddings {dt:.2e}");
    assert!(di <= 1e-4 && dt <= 1e-4, "image {di}, text {dt}");
    let want = get("clip_score");
    for i in 0..2 {
        for j in 0..2 {
            let got = clip_score(&image[i * 16..(i + 1) * 16], &texts[j * 16..(j + 1) * 16]);
            assert!(
                (got - want[i * 2 + j]).abs() <= 0.05,
                "image {i}, text {j}: {got} vs {}",
                want[i * 2 + j]
            );
        }
    }
    assert!(want.iter().any(|&s| s > 1.0) && want.contains(&0.0), "scores both above and clamped at 0");
}
