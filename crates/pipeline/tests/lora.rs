//! LoRAs merged at load against diffusers' `load_lora_weights` + `fuse_lora` on the tiny SD 1.x
//! model (tests/fixtures/lora, from tests/reference/lora_reference.py): the same images within
//! 2/255 per pixel, and a LoRA for another model refused by name.

use std::path::PathBuf;
use std::sync::Arc;

use darkroom_gpu::{Gpu, Requirements};
use darkroom_models::{is_merged_key, MemoryCache, NoCache, QuantCache, QuantPolicy};
use darkroom_pipeline::{generate, AppliedLora, Folder, Precision, Request, StableDiffusion};
use darkroom_weights::lora::Lora;
use darkroom_weights::SafetensorsFile;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn load(gpu: &Gpu, loras: &[AppliedLora]) -> Result<StableDiffusion, darkroom_pipeline::PipelineError> {
    load_cached(gpu, "tiny-sd", loras, &NoCache, Precision::F32)
}

fn load_cached<C: QuantCache>(
    gpu: &Gpu,
    folder: &str,
    loras: &[AppliedLora],
    cache: &C,
    precision: Precision,
) -> Result<StableDiffusion, darkroom_pipeline::PipelineError> {
    let mut progress = |_: &str, _: u64, _: u64| {};
    pollster::block_on(StableDiffusion::load_with_loras(
        gpu,
        &Folder(fixtures().join(folder)),
        cache,
        folder,
        precision,
        loras,
        &mut progress,
    ))
}

fn lora(scale: f32) -> AppliedLora {
    lora_file("lora/tiny-lora.safetensors", scale)
}

fn lora_file(path: &str, scale: f32) -> AppliedLora {
    let bytes = std::fs::read(fixtures().join(path)).unwrap();
    AppliedLora {
        name: "tiny-lora".into(),
        lora: Arc::new(Lora::from_bytes(&bytes).unwrap()),
        scale,
        id: "tiny-lora".into(),
    }
}

/// `dir`/cases.json's images with `file` merged at each case's scale on `folder`, against
/// diffusers' fused images in `dir`/reference.safetensors.
fn check_lora_cases(folder: &str, dir: &str, file: &str, precision: Precision) {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let reference = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join(dir).join("reference.safetensors")).unwrap(),
    )
    .unwrap();
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(dir).join("cases.json")).unwrap())
            .unwrap();
    let mut images = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let scale = case["lora_scale"].as_f64().unwrap() as f32;
        let loras = if scale > 0.0 { vec![lora_file(&format!("{dir}/{file}"), scale)] } else { Vec::new() };
        let model = load_cached(&gpu, folder, &loras, &NoCache, precision).unwrap();
        let n = |k: &str| case[k].as_f64().unwrap();
        let mut prompt = case["prompt"].as_str().unwrap().to_string();
        if scale > 0.0 {
            // The tag is how the prompt names the LoRA; it is not encoded as words.
            prompt.push_str(&format!(" <lora:tiny-lora:{scale}>"));
        }
        let mut request = Request::txt2img(
            &prompt,
            n("seed") as u64,
            n("steps") as usize,
            case["sampler"].as_str().unwrap().parse().unwrap(),
            n("cfg") as f32,
        );
        request.recipe.negative_prompt = case["negative"].as_str().unwrap().to_string();
        request.recipe.width = n("width") as usize;
        request.recipe.height = n("height") as usize;
        let out =
            pollster::block_on(generate(&gpu, &model, &request, &mut |_: &darkroom_pipeline::Progress| true))
                .unwrap();
        let info = reference.header.get(&format!("case{index}")).unwrap();
        let want = reference.to_f32(info).unwrap();
        let got = &out[0].image.rgba;
        let (w, h) = (request.recipe.width, request.recipe.height);
        let mut worst = 0.0f32;
        for p in 0..w * h {
            for c in 0..3 {
                worst = worst.max((got[p * 4 + c] as f32 - want[p * 3 + c] * 255.0).abs());
            }
        }
        println!("{folder}: LoRA scale {scale}: worst pixel {worst:.2}/255");
        assert!(worst <= 2.0, "{folder}: scale {scale}: worst pixel {worst}/255 off diffusers");
        images.push(got.clone());
    }
    let changed = images[0].iter().zip(&images[1]).filter(|(a, b)| a.abs_diff(**b) > 8).count();
    assert!(changed > images[0].len() / 10, "the LoRA must visibly change the image ({changed} channels)");
}

#[test]
fn lora_images_match_diffusers_fused_lora() {
    check_lora_cases("tiny-sd", "lora", "tiny-lora.safetensors", Precision::F32);
}

/// kohya's SDXL layout: `lora_te1_`/`lora_te2_` and LDM-named UNet modules (input_blocks,
/// middle_block, output_blocks, down- and upsamplers, resnet shortcuts), renamed for the UNet as
/// diffusers' converter does (tests/reference/sdxl_lora_reference.py). The text encoders are
/// kept on the host here: their host copies carry the merged layers.
#[test]
fn sdxl_kohya_lora_matches_diffusers_fused_lora() {
    let host = Precision { text_encoders: darkroom_pipeline::TextEncoders::Host, ..Precision::F32 };
    check_lora_cases("tiny-sdxl", "sdxl-lora", "tiny-sdxl-lora.safetensors", host);
    // On an SD 1.x model the same file is refused as SDXL's.
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let err =
        load(&gpu, &[lora_file("sdxl-lora/tiny-sdxl-lora.safetensors", 1.0)]).err().unwrap().to_string();
    assert!(err.contains("for SDXL"), "{err}");
}

#[test]
fn a_lora_for_another_model_is_refused_by_name() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let mut other = lora(1.0);
    let mut updates = (*other.lora).clone();
    let any = updates.updates.values().next().unwrap().clone();
    updates.updates.insert("lora_unet_down_blocks_7_attentions_0_proj_in".into(), any);
    other.lora = Arc::new(updates);
    let err = load(&gpu, &[other]).err().expect("a foreign layer is an error").to_string();
    assert!(err.contains("another model family") && err.contains("down_blocks_7"), "{err}");
}

/// Quantized weights a LoRA does not change share the base model's cache entries; the ones it
/// changes are cached under keys naming the LoRA and its scale (which a cache can tell apart and
/// decline), so another scale re-merges only those.
#[test]
fn only_the_layers_a_lora_changes_get_cache_entries_of_their_own() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let q8 = Precision { weights: QuantPolicy::Q8, ..Precision::F32 };
    let cache = MemoryCache::default();
    let keys = || -> Vec<String> { cache.0.lock().unwrap().keys().cloned().collect() };
    load_cached(&gpu, "tiny-sd", &[], &cache, q8).unwrap();
    let base = keys();
    assert!(!base.is_empty() && !base.iter().any(|k| is_merged_key(k)), "{base:?}");

    load_cached(&gpu, "tiny-sd", &[lora(0.8)], &cache, q8).unwrap();
    let merged: Vec<String> = keys().into_iter().filter(|k| !base.contains(k)).collect();
    let changed = lora(0.8).lora.updates.len();
    assert_eq!(merged.len(), changed, "one new entry per layer the LoRA changes: {merged:?}");
    assert!(merged.iter().all(|k| is_merged_key(k) && k.contains("@0.8")), "{merged:?}");
    assert!(merged.len() < base.len());

    load_cached(&gpu, "tiny-sd", &[lora(0.5)], &cache, q8).unwrap();
    assert_eq!(keys().len(), base.len() + 2 * changed, "another scale adds only the changed layers");
}
