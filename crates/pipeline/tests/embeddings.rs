//! Textual-inversion embeddings against diffusers' `load_textual_inversion` on the tiny SD and
//! SDXL models (tests/fixtures/embeddings, from tests/reference/embedding_reference.py): an A1111
//! `.safetensors` (emb_params) named in the prompt, an A1111 `.pt` (string_to_param, read by the
//! safe .pt reader) named in the negative prompt, and an SDXL pair (clip_l, clip_g); the same
//! images within 2/255. An embedding that does not fit the model is refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use darkroom_gpu::{Gpu, Requirements};
use darkroom_models::NoCache;
use darkroom_pipeline::text::NamedEmbedding;
use darkroom_pipeline::{generate, Folder, Precision, Request, StableDiffusion};
use darkroom_weights::embedding::{name_from_file, Embedding};
use darkroom_weights::SafetensorsFile;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn load(gpu: &Gpu, folder: &str) -> StableDiffusion {
    let mut progress = |_: &str, _: u64, _: u64| {};
    pollster::block_on(StableDiffusion::load(
        gpu,
        &Folder(fixtures().join(folder)),
        &NoCache,
        folder,
        Precision::F32,
        &mut progress,
    ))
    .unwrap()
}

fn embedding(file: &str) -> NamedEmbedding {
    let bytes = std::fs::read(fixtures().join("embeddings").join(file)).unwrap();
    NamedEmbedding { name: name_from_file(file), embedding: Arc::new(Embedding::from_bytes(&bytes).unwrap()) }
}

/// The image (RGBA) and the final latents.
fn image(
    gpu: &Gpu,
    model: &StableDiffusion,
    embeddings: &[NamedEmbedding],
    case: &Value,
) -> Result<(Vec<u8>, Vec<f32>), String> {
    let n = |k: &str| case[k].as_f64().unwrap();
    let mut request = Request::txt2img(
        case["prompt"].as_str().unwrap(),
        n("seed") as u64,
        n("steps") as usize,
        case["sampler"].as_str().unwrap().parse().unwrap(),
        n("cfg") as f32,
    );
    request.recipe.negative_prompt = case["negative"].as_str().unwrap().to_string();
    request.recipe.width = n("width") as usize;
    request.recipe.height = n("height") as usize;
    request.embeddings = embeddings.to_vec();
    let mut latents = Vec::new();
    let mut progress = |p: &darkroom_pipeline::Progress| {
        if let (darkroom_pipeline::Stage::Denoising, Some(values)) = (p.stage, p.latent_values) {
            if p.step == p.total {
                latents = values.to_vec();
            }
        }
        true
    };
    let out = pollster::block_on(generate(gpu, model, &request, &mut progress)).map_err(|e| e.to_string())?;
    Ok((out[0].image.rgba.clone(), latents))
}

#[test]
fn embeddings_match_diffusers_load_textual_inversion() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let dir = fixtures().join("embeddings");
    let reference =
        SafetensorsFile::from_bytes(std::fs::read(dir.join("reference.safetensors")).unwrap()).unwrap();
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let model = load(&gpu, case["folder"].as_str().unwrap());
        let (_, without) = image(&gpu, &model, &[], case).unwrap();
        let embeddings: Vec<NamedEmbedding> =
            case["embeddings"].as_array().unwrap().iter().map(|f| embedding(f.as_str().unwrap())).collect();
        let (got, latents) = image(&gpu, &model, &embeddings, case).unwrap();
        let want = reference.to_f32(reference.header.get(name).unwrap()).unwrap();
        let worst = (0..want.len())
            .map(|i| (got[i / 3 * 4 + i % 3] as f32 - want[i] * 255.0).abs())
            .fold(0.0f32, f32::max);
        let want_latents =
            reference.to_f32(reference.header.get(&format!("{name}/latents")).unwrap()).unwrap();
        let rel = darkroom_gpu::relative_rms_error(&latents, &want_latents);
        // The tiny models' pixels barely follow the prompt; their latents do.
        let moved = darkroom_gpu::relative_rms_error(&without, &want_latents);
        println!("{name}: worst pixel {worst:.2}/255, latents {rel:.1e} off diffusers ({moved:.1e} without the embedding)");
        assert!(
            worst <= 2.0 && rel <= 1e-4,
            "{name}: worst pixel {worst}/255, latents {rel:.1e} off diffusers"
        );
        assert!(moved > 100.0 * rel.max(1e-6), "{name}: the embedding must change the latents ({moved:.1e})");
    }
}

#[test]
fn an_embedding_for_another_model_is_refused_by_name_when_used() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu, "tiny-sd");
    let embeddings = [embedding("xlstyle.safetensors"), embedding("tinystyle.safetensors")];
    let case = serde_json::json!({"prompt": "a cat, tinystyle", "negative": "", "seed": 1, "steps": 1,
        "sampler": "euler", "cfg": 7.0, "width": 64, "height": 48});
    image(&gpu, &model, &embeddings, &case).expect("an unused unfit embedding is no obstacle");
    let case = serde_json::json!({"prompt": "a cat", "negative": "xlstyle", "seed": 1, "steps": 1,
        "sampler": "euler", "cfg": 7.0, "width": 64, "height": 48});
    let err = image(&gpu, &model, &embeddings, &case).unwrap_err();
    assert!(err.contains("xlstyle") && err.contains("SDXL embedding"), "{err}");
}
