//! Drafts, then finals: a batch made as drafts (TAESD) and each draft finished from the latents
//! its PNG carries equals the direct full-quality generation pixel for pixel, with the same
//! parameters; img2img and a tiled VAE decode as well.

use std::path::PathBuf;

use darkroom_gpu::{DType, Gpu, Requirements};
use darkroom_models::taesd::{TaesdConfig, TaesdDecoder};
use darkroom_models::{NoCache, QuantPolicy, WeightStore};
use darkroom_pipeline::draft::Kept;
use darkroom_pipeline::{
    draft, finish, generate, Folder, Image, ImageRef, Precision, Recipe, Request, StableDiffusion, VaeTiling,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn setup() -> (Gpu, StableDiffusion, TaesdDecoder) {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let files = Folder(fixtures().join("tiny-sd"));
    let mut progress = |_: &str, _: u64, _: u64| {};
    let model = pollster::block_on(StableDiffusion::load(
        &gpu,
        &files,
        &NoCache,
        "tiny-sd",
        Precision::F32,
        &mut progress,
    ))
    .unwrap();
    let bytes = std::fs::read(fixtures().join("taesd-test/taesd_decoder.safetensors")).unwrap();
    let store = WeightStore::from_bytes(bytes).unwrap();
    let taesd = TaesdDecoder::load(&store.root(&gpu, DType::F32, QuantPolicy::F32), TaesdConfig::SD).unwrap();
    (gpu, model, taesd)
}

/// Drafts of `request`, each finished from its PNG, against `generate`'s images.
fn drafts_finish_as_made_directly(
    gpu: &Gpu,
    model: &StableDiffusion,
    taesd: &TaesdDecoder,
    request: Request,
) {
    let mut quiet = |_: &darkroom_pipeline::Progress| true;
    let direct = pollster::block_on(generate(gpu, model, &request, &mut quiet)).unwrap();
    let drafts = pollster::block_on(draft(gpu, model, taesd, &request, &mut quiet)).unwrap();
    assert_eq!(drafts.len(), direct.len());
    for (k, (d, want)) in drafts.iter().zip(&direct).enumerate() {
        assert_eq!((d.image.width, d.image.height), (want.image.width, want.image.height));
        assert_ne!(d.image.rgba, want.image.rgba, "a draft is TAESD's decode, not the VAE's");
        assert!(d.params.extra.contains(&("Draft".into(), "TAESD".into())));
        let png = d.to_png().unwrap();
        let kept = Kept::from_png(&png).unwrap().expect("the draft's PNG carries its latents");
        assert_eq!(kept.index, k);
        // The PNG is still an ordinary image with the draft's pixels.
        assert_eq!(Image::from_png(&png).unwrap().rgba, d.image.rgba);
        let done = pollster::block_on(finish(gpu, model, &kept, request.vae_tiling, &mut quiet)).unwrap();
        assert_eq!(done.image.rgba, want.image.rgba, "image {k}: the finished draft is the direct image");
        assert_eq!(done.params, want.params);
        assert!(done.kept.is_none());
    }
}

#[test]
fn a_txt2img_batch_finished_from_its_drafts_is_the_direct_batch() {
    let (gpu, model, taesd) = setup();
    let recipe = Recipe {
        prompt: "a lighthouse at dusk".into(),
        negative_prompt: "fog".into(),
        seed: Some(1234),
        steps: 3,
        sampler: "euler_a".parse().unwrap(),
        cfg_scale: 6.0,
        width: 64,
        height: 48,
        batch_size: 2,
        ..Recipe::default()
    };
    drafts_finish_as_made_directly(&gpu, &model, &taesd, Request::new(recipe.clone(), None, None).unwrap());
    // Tiled decoding too (the finish decodes as the request would have).
    let mut tiled = Request::new(Recipe { batch_size: 1, ..recipe }, None, None).unwrap();
    tiled.vae_tiling = VaeTiling::Tiles(4);
    drafts_finish_as_made_directly(&gpu, &model, &taesd, tiled);
}

#[test]
fn an_img2img_draft_finishes_as_made_directly() {
    let (gpu, model, taesd) = setup();
    let init = Image::from_png(&std::fs::read(fixtures().join("pipeline/init.png")).unwrap()).unwrap();
    let recipe = Recipe {
        prompt: "a harbour".into(),
        seed: Some(77),
        steps: 4,
        sampler: "dpmpp_2m_karras".parse().unwrap(),
        cfg_scale: 5.0,
        width: init.width,
        height: init.height,
        init: Some(ImageRef::Attachment(0)),
        strength: Some(0.6),
        ..Recipe::default()
    };
    drafts_finish_as_made_directly(&gpu, &model, &taesd, Request::new(recipe, Some(init), None).unwrap());
}

#[test]
fn a_draft_is_finished_only_by_a_model_that_makes_its_latents() {
    let (gpu, model, taesd) = setup();
    let recipe =
        Recipe { prompt: "x".into(), seed: Some(1), steps: 1, width: 64, height: 64, ..Recipe::default() };
    let request = Request::new(recipe.clone(), None, None).unwrap();
    let mut quiet = |_: &darkroom_pipeline::Progress| true;
    let made = pollster::block_on(draft(&gpu, &model, &taesd, &request, &mut quiet)).unwrap();
    let kept = made[0].kept.clone().unwrap();
    let wrong = Kept { shape: [1, 8, 8, 8], values: vec![0.0; 8 * 8 * 8], ..kept };
    let e = pollster::block_on(finish(&gpu, &model, &wrong, VaeTiling::Auto, &mut quiet)).unwrap_err();
    assert!(e.to_string().contains("finish it with the model that made it"), "{e}");
    // A draft recipe is not made by `generate`, which would decode it with the full VAE.
    let drafted = Request::new(Recipe { draft: true, ..recipe }, None, None).unwrap();
    assert!(pollster::block_on(generate(&gpu, &model, &drafted, &mut quiet)).is_err());
}
