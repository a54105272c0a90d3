//! The hires fix as the app's worker runs it (`job::generate` with a recipe that asks for it):
//! with a latent upscaler, diffusers composing txt2img, torch's `interpolate` and img2img from
//! latents (tests/fixtures/pipeline/latent_hires.safetensors) within 2/255; with Lanczos, the
//! first pass, a Lanczos resize and img2img composed by hand, pixel for pixel — for each image of
//! a batch of two runs; with an upscaler model, the model's upscale, Lanczos to the size and
//! img2img composed by hand; a model the job was not given is refused by name.

use std::path::PathBuf;

use darkroom_engine::job;
use darkroom_gpu::{Gpu, Requirements};
use darkroom_models::NoCache;
use darkroom_pipeline::preprocess::resize_lanczos;
use darkroom_pipeline::recipe::hires_second_pass;
use darkroom_pipeline::{generate, Folder, Hires, Precision, Recipe, Request, StableDiffusion};
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The hires fix's second pass composed by hand: `image` resized by Lanczos to the pass's size,
/// then img2img with the pass's recipe.
fn second_pass_by_hand(
    gpu: &Gpu,
    model: &StableDiffusion,
    second: Recipe,
    image: &darkroom_pipeline::Image,
) -> Vec<darkroom_pipeline::Generated> {
    let big = resize_lanczos(image, second.width, second.height);
    let mut quiet = |_: &darkroom_pipeline::Progress| true;
    pollster::block_on(generate(gpu, model, &Request::new(second, Some(big), None).unwrap(), &mut quiet))
        .unwrap()
}

#[test]
fn the_hires_fix_in_a_job_matches_its_composition() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let files = Folder(fixtures().join("tiny-sd"));
    let mut quiet_load = |_: &str, _: u64, _: u64| {};
    let model = pollster::block_on(StableDiffusion::load(
        &gpu,
        &files,
        &NoCache,
        "tiny-sd",
        Precision::F32,
        &mut quiet_load,
    ))
    .unwrap();
    let mut quiet = |_: &job::Event| true;
    let recipe = Recipe {
        prompt: "a lighthouse on a cliff at dusk".into(),
        seed: Some(21),
        steps: 4,
        cfg_scale: 7.0,
        sampler: "euler".parse().unwrap(),
        width: 64,
        height: 48,
        ..Recipe::default()
    };

    // Latent: against diffusers.
    let latent = Hires { scale: 2.0, steps: 5, strength: 0.6, upscaler: "Latent".into() };
    let asked = Recipe { hires: Some(latent), ..recipe.clone() };
    let made = pollster::block_on(job::generate(
        &gpu,
        &model,
        job::Helpers::default(),
        &Request::new(asked, None, None).unwrap(),
        &mut quiet,
    ))
    .unwrap();
    let r = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join("pipeline/latent_hires.safetensors")).unwrap(),
    )
    .unwrap();
    let want = r.to_f32(r.header.get("image_bilinear").unwrap()).unwrap();
    let rgba = &made[0].image.rgba;
    let worst = (0..want.len())
        .map(|i| (rgba[i / 3 * 4 + i % 3] as f32 - want[i] * 255.0).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 2.0, "latent hires: worst pixel {worst}/255 off diffusers");
    let text = made[0].params.to_infotext();
    assert!(
        text.contains("Size: 64x48") && text.contains("Hires upscaler: Latent") && text.contains("Seed: 21"),
        "{text}"
    );

    // Lanczos, two runs of two images: each equals its own composition.
    let lanczos = Hires { scale: 1.5, steps: 2, strength: 0.5, upscaler: "lanczos".into() };
    let asked =
        Recipe { hires: Some(lanczos.clone()), batch_size: 2, batch_count: 2, steps: 2, ..recipe.clone() };
    let made = pollster::block_on(job::generate(
        &gpu,
        &model,
        job::Helpers::default(),
        &Request::new(asked.clone(), None, None).unwrap(),
        &mut quiet,
    ))
    .unwrap();
    assert_eq!(made.len(), 4);
    let mut plain = |p: &darkroom_pipeline::Progress| {
        let _ = p;
        true
    };
    let base = Recipe { hires: None, ..asked.clone() };
    for run in 0..2 {
        let first = pollster::block_on(generate(
            &gpu,
            &model,
            &Request::new(base.run(run), None, None).unwrap(),
            &mut plain,
        ))
        .unwrap();
        for (i, image) in first.iter().enumerate() {
            let seed = image.params.seed;
            let by_hand =
                second_pass_by_hand(&gpu, &model, hires_second_pass(&asked, &lanczos, seed), &image.image);
            let ours = &made[run * 2 + i];
            assert_eq!((ours.image.width, ours.image.height), (96, 72));
            assert_eq!(ours.image.rgba, by_hand[0].image.rgba, "run {run} image {i}");
            assert_eq!(ours.params.seed, seed);
            assert_eq!(ours.params.seed, 21 + (run * 2 + i) as u64);
        }
    }

    // An upscaler model: upscaled by it (2x), Lanczos to 1.5x, img2img.
    let upscaler = darkroom_pipeline::upscale::load_upscaler(
        &gpu,
        std::fs::read(fixtures().join("upscale/compact_x2.safetensors")).unwrap(),
        darkroom_gpu::DType::F32,
    )
    .unwrap();
    let by_model = Hires { scale: 1.5, steps: 2, strength: 0.5, upscaler: "compact_x2".into() };
    let asked = Recipe { hires: Some(by_model.clone()), steps: 2, ..recipe.clone() };
    let helpers = job::Helpers { taesd: None, upscaler: Some(&upscaler) };
    let made = pollster::block_on(job::generate(
        &gpu,
        &model,
        helpers,
        &Request::new(asked.clone(), None, None).unwrap(),
        &mut quiet,
    ))
    .unwrap();
    let base = Recipe { hires: None, ..asked.clone() };
    let first =
        pollster::block_on(generate(&gpu, &model, &Request::new(base, None, None).unwrap(), &mut plain))
            .unwrap();
    let mut tiles = |_: usize, _: usize| true;
    let doubled = pollster::block_on(darkroom_pipeline::upscale::upscale(
        &gpu,
        &upscaler,
        darkroom_gpu::DType::F32,
        &first[0].image,
        None,
        &mut tiles,
    ))
    .unwrap();
    assert_eq!((doubled.width, doubled.height), (128, 96));
    let by_hand = second_pass_by_hand(&gpu, &model, hires_second_pass(&asked, &by_model, 21), &doubled);
    assert_eq!(made[0].image.rgba, by_hand[0].image.rgba, "hires with an upscaler model");
    assert!(
        made[0].params.to_infotext().contains("Hires upscaler: compact_x2"),
        "{}",
        made[0].params.to_infotext()
    );

    // A model the job was not given is refused by name.
    let with_model =
        Recipe { hires: Some(Hires { upscaler: "4x-UltraSharp.pth".into(), ..Hires::default() }), ..recipe };
    let Err(e) = pollster::block_on(job::generate(
        &gpu,
        &model,
        job::Helpers::default(),
        &Request::new(with_model, None, None).unwrap(),
        &mut quiet,
    )) else {
        panic!("a hires upscaler model ran without being loaded");
    };
    assert!(e.to_string().contains("4x-UltraSharp.pth is a model that is not loaded"), "{e}");
}
