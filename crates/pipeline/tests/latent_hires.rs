//! The hires fix's latent upscale against diffusers (tests/fixtures/pipeline/latent_hires.safetensors,
//! from tests/reference/latent_hires_reference.py): the first pass's latents as diffusers' txt2img
//! makes them, resized as torch's `interpolate` resizes them (bilinear without antialiasing,
//! nearest), and img2img given latents instead of an image as diffusers runs it.

use std::path::PathBuf;

use darkroom_gpu::{Gpu, Requirements};
use darkroom_models::NoCache;
use darkroom_pipeline::recipe::hires_second_pass;
use darkroom_pipeline::upscale::{resize_latents, LatentScale};
use darkroom_pipeline::{generate, sample, Folder, Hires, Precision, Recipe, Request, StableDiffusion};
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn latent_hires_matches_diffusers() {
    let r = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join("pipeline/latent_hires.safetensors")).unwrap(),
    )
    .unwrap();
    let get = |name: &str| r.to_f32(r.header.get(name).unwrap()).unwrap();
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
    let mut quiet = |_: &darkroom_pipeline::Progress| true;

    // The first pass's latents.
    let (first, shape) = pollster::block_on(sample(
        &gpu,
        &model,
        &Request::new(recipe.clone(), None, None).unwrap(),
        &mut quiet,
    ))
    .unwrap();
    assert_eq!(shape, [1, 4, 6, 8]);
    let want = get("first");
    let worst = first.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "first pass latents off diffusers' by {worst}");

    for (mode, name, upscaler) in
        [(LatentScale::Bilinear, "bilinear", "Latent"), (LatentScale::Nearest, "nearest", "Latent (nearest)")]
    {
        // torch's interpolate, from diffusers' own first-pass latents.
        let up = resize_latents(&want, [4, 6, 8], (12, 16), mode);
        let torch = get(&format!("up_{name}"));
        // Up to f32 rounding (torch may fuse the products).
        let worst =
            up.iter().zip(&torch).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "{name}: resized latents off torch's by {worst} (relative)");

        // img2img from those latents.
        let hires = Hires { scale: 2.0, steps: 5, strength: 0.6, upscaler: upscaler.into() };
        assert_eq!(hires.latent(), Some(mode));
        let second = hires_second_pass(&Recipe { hires: Some(hires.clone()), ..recipe.clone() }, &hires, 21);
        assert_eq!((second.width, second.height, second.steps), (128, 96, 5));
        let mut request = Request::new(second, None, None).unwrap();
        request.init_latents = Some(torch.clone());
        let made = pollster::block_on(generate(&gpu, &model, &request, &mut quiet)).unwrap();
        let want_image = get(&format!("image_{name}"));
        let rgba = &made[0].image.rgba;
        let worst = (0..want_image.len())
            .map(|i| (rgba[i / 3 * 4 + i % 3] as f32 - want_image[i] * 255.0).abs())
            .fold(0.0f32, f32::max);
        println!("{name}: worst pixel {worst:.2}/255 vs diffusers");
        assert!(worst <= 2.0, "{name}: worst pixel {worst:.2}/255 off diffusers' img2img from latents");
    }

    // Latents of the wrong size are refused by name.
    let hires = Hires { scale: 2.0, steps: 5, strength: 0.6, upscaler: "Latent".into() };
    let mut request = Request::new(hires_second_pass(&recipe, &hires, 21), None, None).unwrap();
    request.init_latents = Some(vec![0.0; 10]);
    let Err(e) = pollster::block_on(generate(&gpu, &model, &request, &mut quiet)) else {
        panic!("latents of the wrong size were taken");
    };
    let e = e.to_string();
    assert!(e.contains("from latents"), "{e}");
}
