//! Whole pipelines against diffusers: every sampler, with and without CFG, a negative prompt,
//! batch 2, v-prediction, img2img and inpainting with 4- and 9-channel UNets, on the tiny
//! models of tests/fixtures/tiny-sd*, to diffusers' images (tests/fixtures/pipeline, from
//! tests/reference/pipeline_reference.py) within 2/255 per pixel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use darkroom_gpu::{Gpu, Requirements, Tensor};
use darkroom_models::NoCache;
use darkroom_pipeline::{
    generate, Folder, Image, ImageRef, Precision, Recipe, Request, StableDiffusion, Stage, TextEncoders,
    VaeTiling,
};
use darkroom_weights::SafetensorsFile;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn png(dir: &str, name: &str) -> Image {
    Image::from_png(&std::fs::read(fixtures().join(dir).join(name)).unwrap()).unwrap()
}

/// A case of `dir`/cases.json as a request. Cases name their init image and mask (or use
/// tests/fixtures/pipeline's init.png and mask.png); an `outpaint` case's recipe extends its init
/// image by the margins, as `darkroom generate --outpaint` does.
fn request(dir: &str, case: &Value) -> Request {
    let s = |k: &str| case[k].as_str().unwrap().to_string();
    let n = |k: &str| case[k].as_f64().unwrap();
    let file = |key: &str, default: &str| case[key].as_str().unwrap_or(default).to_string();
    let mode = s("mode");
    let outpaint = case["outpaint"].as_array().map(|m| {
        let m: Vec<usize> = m.iter().map(|v| v.as_u64().unwrap() as usize).collect();
        [m[0], m[1], m[2], m[3]]
    });
    let init_image = (mode != "txt2img").then(|| png(dir, &file("init", "init.png")));
    let mask = (mode == "inpaint" && outpaint.is_none()).then(|| png(dir, &file("mask", "mask.png")));
    let recipe = Recipe {
        prompt: s("prompt"),
        negative_prompt: s("negative"),
        seed: Some(n("seed") as u64),
        steps: n("steps") as usize,
        sampler: s("sampler").parse().unwrap(),
        cfg_scale: n("cfg") as f32,
        width: n("width") as usize,
        height: n("height") as usize,
        batch_size: n("batch") as usize,
        init: init_image.as_ref().map(|_| ImageRef::Attachment(0)),
        mask: mask.as_ref().map(|_| ImageRef::Attachment(1)),
        outpaint,
        strength: case["strength"].as_f64(),
        ..Recipe::default()
    };
    Request::new(recipe, init_image, mask).unwrap()
}

fn sized(width: usize, height: usize, mut request: Request) -> Request {
    request.recipe.width = width;
    request.recipe.height = height;
    request
}

fn load(gpu: &Gpu, folder: &str, precision: Precision) -> StableDiffusion {
    let files = Folder(fixtures().join(folder));
    let mut progress = |_: &str, _: u64, _: u64| {};
    pollster::block_on(StableDiffusion::load(gpu, &files, &NoCache, folder, precision, &mut progress))
        .unwrap()
}

/// Runs a request, returning the images and the final latents.
fn run(gpu: &Gpu, model: &StableDiffusion, request: &Request) -> (Vec<Image>, Vec<f32>) {
    let last: RefCell<Option<Tensor>> = RefCell::new(None);
    let mut steps = Vec::new();
    let mut progress = |p: &darkroom_pipeline::Progress| {
        if p.stage == Stage::Denoising {
            steps.push((p.step, p.total));
            *last.borrow_mut() = p.latents.cloned();
        }
        true
    };
    let out = pollster::block_on(generate(gpu, model, request, &mut progress)).unwrap();
    let total = steps.last().unwrap().1;
    assert_eq!(steps, (0..=total).map(|s| (s, total)).collect::<Vec<_>>(), "progress reports every step");
    let latents = pollster::block_on(last.into_inner().unwrap().read_f32(gpu)).unwrap();
    (out.into_iter().map(|g| g.image).collect(), latents)
}

/// Runs every case of `dir`/cases.json against diffusers' images and latents in
/// `dir`/reference.safetensors, the VAE decoding as `tiling` says; returns the samplers seen.
fn check_cases(
    dir: &str,
    tiling: VaeTiling,
    precision: Precision,
) -> std::collections::BTreeSet<&'static str> {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let reference = SafetensorsFile::from_bytes(
        std::fs::read(fixtures().join(dir).join("reference.safetensors")).unwrap(),
    )
    .unwrap();
    let want = |key: &str| {
        let info = reference.header.tensors.iter().find(|t| t.name == key).unwrap();
        reference.to_f32(info).unwrap()
    };
    let cases: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(dir).join("cases.json")).unwrap())
            .unwrap();
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    let mut failures = Vec::new();
    let mut seen_samplers = std::collections::BTreeSet::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let folder = case["folder"].as_str().unwrap().to_string();
        let model = models.entry(folder.clone()).or_insert_with(|| load(&gpu, &folder, precision));
        let mut request = request(dir, case);
        request.vae_tiling = tiling;
        seen_samplers.insert(request.recipe.sampler.id());
        let (images, latents) = run(&gpu, model, &request);

        let want_latents = want(&format!("{name}/latents"));
        let rel = darkroom_gpu::relative_rms_error(&latents, &want_latents);

        let want_image = want(&format!("{name}/image")); // [B, H, W, 3] in 0..1
        let (w, h) = (request.recipe.width, request.recipe.height);
        assert_eq!(want_image.len(), request.recipe.batch_size * w * h * 3, "{name}: reference size");
        let mut worst = 0.0f32;
        for (b, image) in images.iter().enumerate() {
            assert_eq!((image.width, image.height), (w, h), "{name}");
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        let got = image.rgba[(y * w + x) * 4 + c] as f32;
                        let reference = want_image[((b * h + y) * w + x) * 3 + c] * 255.0;
                        worst = worst.max((got - reference).abs());
                    }
                }
            }
        }
        println!("{name:40} latents rel. RMS {rel:.2e}, worst pixel {worst:.2}/255");
        if worst > 2.0 || rel > 1e-4 {
            failures.push(format!("{name}: worst pixel {worst:.2}/255, latents rel. RMS {rel:.2e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    seen_samplers
}

#[test]
fn images_match_diffusers_for_every_sampler_and_mode() {
    let seen_samplers = check_cases("pipeline", VaeTiling::Auto, Precision::F32);
    assert_eq!(seen_samplers.len(), darkroom_pipeline::Sampler::ALL.len(), "every sampler is tested");
}

/// Sizes that are multiples of 8 but not of the UNet's factor (80x48 on a 3-level UNet, 72x40 on
/// the 2-level ones): txt2img, img2img, 4- and 9-channel inpainting and outpainting, SD 1.x and
/// 2.x, against diffusers (tests/reference/sizes_reference.py). tiny-sd-deep is also a folder as
/// today's `save_pretrained` writes it: a tokenizer.json without vocab.json and merges.txt.
/// These decode in tiles of 2 latent pixels (edge tiles of 1), so the tiled VAE decode is held
/// to diffusers' untiled images too.
/// SDXL (tests/reference/sdxl_reference.py, tests/fixtures/tiny-sdxl*): two text encoders,
/// pooled embeddings and time ids, an empty negative prompt as zeros, every sampler, CFG on and
/// off, batch 2, a square size, img2img, inpainting and outpainting with 4- and 9-channel UNets.
/// The SDXL cases run with the text encoders kept on the host (uploaded for each encoding, one
/// at a time), as browsers and integrated GPUs run them.
#[test]
fn sdxl_images_match_diffusers_for_every_sampler_and_mode() {
    let host = Precision { text_encoders: TextEncoders::Host, ..Precision::F32 };
    let seen_samplers = check_cases("sdxl", VaeTiling::Auto, host);
    assert_eq!(seen_samplers.len(), darkroom_pipeline::Sampler::ALL.len(), "every sampler is tested");
}

#[test]
fn images_match_diffusers_at_sizes_the_unet_factor_does_not_divide() {
    check_cases("sizes", VaeTiling::Tiles(2), Precision::F32);
}

/// f16 activations and int8 weights: the fast paths stay close to diffusers' f32 image (mean
/// per-pixel error), on adapters with shader-f16.
#[test]
fn f16_and_int8_paths_stay_close_to_diffusers() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    if !gpu.capabilities().shader_f16 {
        println!("skipped: this adapter has no shader-f16");
        return;
    }
    // SDXL's VAE says force_upcast: it decodes in f32 while the rest runs in f16, as diffusers.
    for (dir, folder, case, vae_dtype) in [
        ("pipeline", "tiny-sd", "euler_cfg", darkroom_gpu::DType::F16),
        ("sdxl", "tiny-sdxl", "euler_cfg_empty_negative", darkroom_gpu::DType::F32),
    ] {
        let reference = SafetensorsFile::from_bytes(
            std::fs::read(fixtures().join(dir).join("reference.safetensors")).unwrap(),
        )
        .unwrap();
        let key = format!("{case}/image");
        let info = reference.header.tensors.iter().find(|t| t.name == key).unwrap();
        let want = reference.to_f32(info).unwrap();
        let cases: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join(dir).join("cases.json")).unwrap())
                .unwrap();
        let request = request(dir, cases.iter().find(|c| c["name"] == case).unwrap());
        let modes = [
            ("f16", darkroom_models::QuantPolicy::F16, 1.5),
            ("f16 + int8", darkroom_models::QuantPolicy::Q8, 3.0),
        ];
        for (name, weights, limit) in modes {
            let precision = Precision { activations: darkroom_gpu::DType::F16, weights, ..Precision::F32 };
            let model = load(&gpu, folder, precision);
            assert_eq!(model.vae_dtype, vae_dtype, "{folder}");
            let (images, _) = run(&gpu, &model, &request);
            let got = &images[0].rgba;
            let mean: f32 =
                (0..want.len()).map(|i| (got[i / 3 * 4 + i % 3] as f32 - want[i] * 255.0).abs()).sum::<f32>()
                    / want.len() as f32;
            println!("{folder} {name}: mean error {mean:.2}/255");
            assert!(mean <= limit, "{folder} {name}: mean error {mean:.2}/255 above {limit}");
        }
    }
}

/// Prompts past 75 tokens run in chunks (the context grows by 77 per chunk, the negative prompt
/// padded to match), and emphasis changes the image while weight 1 changes nothing.
#[test]
fn long_and_weighted_prompts_condition_the_image() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu, "tiny-sd", Precision::F32);
    let base = sized(
        64,
        48,
        Request::txt2img(
            "a photograph of an astronaut riding a horse",
            5,
            2,
            darkroom_pipeline::Sampler::Euler,
            7.5,
        ),
    );
    let image = |prompt: &str, negative: &str| {
        let mut r = base.clone();
        r.recipe.prompt = prompt.into();
        r.recipe.negative_prompt = negative.into();
        run(&gpu, &model, &r).0.remove(0).rgba
    };
    let plain = image("a photograph of an astronaut riding a horse", "");
    assert_eq!(image("a photograph of an (astronaut:1.0) riding a horse", ""), plain, "weight 1 is a no-op");
    assert_ne!(image("a photograph of an (astronaut:1.6) riding a horse", ""), plain, "emphasis matters");
    let long = format!("a photograph of an astronaut riding a horse, {}", vec!["detailed"; 90].join(" "));
    let long_image = image(&long, "blurry");
    assert_ne!(long_image, plain);
    assert_ne!(image(&format!("{long} BREAK a red hat"), "blurry"), long_image, "a third chunk counts too");
}

/// Returning false from the progress callback stops between steps with `Cancelled`, and the
/// model stays usable.
#[test]
fn cancelling_stops_between_steps_and_leaves_the_model_usable() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu, "tiny-sd", Precision::F32);
    let request = sized(64, 48, Request::txt2img("a cat", 1, 6, darkroom_pipeline::Sampler::Euler, 7.5));
    let mut seen = 0;
    let mut stop_at_two = |p: &darkroom_pipeline::Progress| {
        if p.stage == Stage::Denoising {
            seen = p.step;
        }
        !(p.stage == Stage::Denoising && p.step == 2)
    };
    let err = pollster::block_on(generate(&gpu, &model, &request, &mut stop_at_two)).unwrap_err();
    assert!(matches!(err, darkroom_pipeline::PipelineError::Cancelled), "{err}");
    assert_eq!(seen, 2, "stopped at the step asked");
    let (images, _) = run(&gpu, &model, &request);
    assert_eq!(images.len(), 1, "the next generation runs normally");
}

/// With live previews every denoising report carries the latents on the CPU (the last ones are
/// the final latents), and the image is the same as without.
#[test]
fn live_previews_report_the_latents_every_step_without_changing_the_image() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu, "tiny-sd", Precision::F32);
    let plain = sized(64, 48, Request::txt2img("a cat", 3, 3, darkroom_pipeline::Sampler::Euler, 7.5));
    let live = Request { live_preview: true, ..plain.clone() };
    let (expected, final_latents) = run(&gpu, &model, &plain);
    let mut reports = Vec::new();
    let mut progress = |p: &darkroom_pipeline::Progress| {
        if p.stage == Stage::Denoising {
            reports.push((p.step, p.latent_values.map(<[f32]>::to_vec)));
        }
        true
    };
    let images = pollster::block_on(generate(&gpu, &model, &live, &mut progress)).unwrap();
    assert_eq!(images[0].image.rgba, expected[0].rgba);
    assert_eq!(reports.len(), 4, "steps 0..=3");
    for (step, values) in &reports {
        let values = values.as_ref().unwrap_or_else(|| panic!("step {step} has no latent values"));
        assert_eq!(values.len(), 4 * 6 * 8);
    }
    assert_eq!(reports.last().unwrap().1.as_deref(), Some(final_latents.as_slice()));
    assert_ne!(reports[0].1, reports[3].1, "the latents change as denoising goes");
    let preview =
        darkroom_pipeline::latent_preview::approximate_rgb(reports[3].1.as_ref().unwrap(), [1, 4, 6, 8], 0)
            .unwrap();
    assert_eq!((preview.width, preview.height), (8, 6));
}

/// SDXL conditioning beyond diffusers' 77 tokens, A1111's way on both encoders: a long prompt runs
/// in 77-token windows on each (the context grows by 77 per chunk, both encoders' widths side by
/// side), weight 1 changes nothing, emphasis changes the context, and the pooled embedding stays
/// the first chunk's.
#[test]
fn sdxl_long_and_weighted_prompts_condition_both_encoders() {
    use darkroom_pipeline::text::{encode_sdxl, Vocabulary};
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu, "tiny-sdxl", Precision::F32);
    let xl = model.xl.as_ref().unwrap();
    let encode = |prompt: &str, negative: &str| {
        let c = pollster::block_on(encode_sdxl(
            &gpu,
            (&model.tokenizer, &model.clip),
            xl,
            &Vocabulary::default(),
            prompt,
            negative,
            1,
            true,
        ))
        .unwrap();
        let shape = c.context.shape().to_vec();
        let context = pollster::block_on(c.context.read_f32(&gpu)).unwrap();
        let pooled = pollster::block_on(c.pooled.unwrap().read_f32(&gpu)).unwrap();
        (shape, context, pooled)
    };
    let plain = encode("a photograph of an astronaut riding a horse", "");
    assert_eq!(plain.0, [2, 77, 72], "negative and positive rows, 32 + 40 wide");
    assert!(plain.1[..77 * 72].iter().all(|&v| v == 0.0), "the empty negative is zeros");
    assert!(plain.2[..24].iter().all(|&v| v == 0.0), "and so is its pooled embedding");
    assert_eq!(
        encode("a photograph of an (astronaut:1.0) riding a horse", "").1,
        plain.1,
        "weight 1 is a no-op"
    );
    let weighted = encode("a photograph of an (astronaut:1.6) riding a horse", "");
    assert_ne!(weighted.1, plain.1, "emphasis matters");
    assert_eq!(weighted.2, plain.2, "the pooled embedding is not weighted, as A1111");
    let long = format!("a photograph of an astronaut riding a horse, {}", vec!["detailed"; 90].join(" "));
    let (shape, _, pooled) = encode(&long, "blurry");
    assert_eq!(shape, [2, 154, 72], "two chunks, the negative padded to match");
    assert_eq!(pooled.len(), 2 * 24);
    let first_chunk = encode(
        &format!("a photograph of an astronaut riding a horse, {}", vec!["detailed"; 50].join(" ")),
        "blurry",
    );
    assert_ne!(first_chunk.2[24..], pooled[24..], "the pooled embedding follows the first chunk's words");
}

#[test]
fn runs_with_the_same_prompts_reuse_the_text_encoding() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu, "tiny-sd", Precision::F32);
    let request = |prompt: &str, steps: usize, cfg: f32| {
        let recipe = Recipe {
            prompt: prompt.into(),
            negative_prompt: "blurry".into(),
            seed: Some(3),
            steps,
            sampler: "euler".parse().unwrap(),
            cfg_scale: cfg,
            width: 32,
            height: 32,
            ..Recipe::default()
        };
        Request::new(recipe, None, None).unwrap()
    };
    let encodings = || model.text_cache.encodings();
    run(&gpu, &model, &request("a fox", 2, 7.0));
    assert_eq!(encodings(), 1);
    // Other steps and CFG (still guided): the same conditioning.
    let (kept, _) = run(&gpu, &model, &request("a fox", 3, 5.0));
    assert_eq!(encodings(), 1);
    // No CFG (no negative rows), another prompt: encoded anew.
    run(&gpu, &model, &request("a fox", 2, 1.0));
    run(&gpu, &model, &request("an owl", 2, 7.0));
    assert_eq!(encodings(), 3);
    // A reused conditioning gives the image a fresh model makes.
    let fresh = load(&gpu, "tiny-sd", Precision::F32);
    let (made, _) = run(&gpu, &fresh, &request("a fox", 3, 5.0));
    assert_eq!(
        kept.iter().map(|i| &i.rgba).collect::<Vec<_>>(),
        made.iter().map(|i| &i.rgba).collect::<Vec<_>>()
    );
    // Past the cache's size the oldest is encoded again.
    for i in 0..darkroom_pipeline::text::TextCache::ENTRIES {
        run(&gpu, &model, &request(&format!("prompt {i}"), 1, 7.0));
    }
    let before = encodings();
    run(&gpu, &model, &request("a fox", 1, 7.0));
    assert_eq!(encodings(), before + 1);
}

/// Text encoders kept on the host: the GPU holds their weights only while a prompt is encoded
/// (and the VAE encoder only while an init image is encoded)
/// (none after a generation, when the resident model keeps all of them), the images are the
/// resident model's to the bit (the SDXL cases and the SDXL LoRA cases run this way against
/// diffusers too).
#[test]
fn text_encoders_kept_on_the_host_leave_the_gpu_between_prompts() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let request = |prompt: &str| {
        let recipe = Recipe {
            prompt: prompt.into(),
            negative_prompt: "blurry".into(),
            seed: Some(5),
            steps: 2,
            sampler: "euler".parse().unwrap(),
            cfg_scale: 6.0,
            width: 32,
            height: 32,
            ..Recipe::default()
        };
        Request::new(recipe, None, None).unwrap()
    };
    let host = Precision { text_encoders: TextEncoders::Host, ..Precision::F32 };
    for folder in ["tiny-sd", "tiny-sdxl"] {
        let before = gpu.weight_bytes();
        let resident = load(&gpu, folder, Precision::F32);
        let resident_bytes = gpu.weight_bytes() - before;
        assert!(!resident.clip.is_on_host());
        let (want, _) = run(&gpu, &resident, &request("a fox in snow"));
        drop(resident);
        assert_eq!(gpu.weight_bytes(), before, "{folder}: a dropped model frees its weights");

        let parked = load(&gpu, folder, host);
        let parked_bytes = gpu.weight_bytes() - before;
        assert!(parked.clip.is_on_host());
        assert_eq!(
            parked.xl.as_ref().map(|xl| xl.clip.is_on_host()),
            (folder == "tiny-sdxl").then_some(true)
        );
        assert!(
            parked_bytes < resident_bytes,
            "{folder}: {parked_bytes} bytes on the GPU with the text encoders on the host, {resident_bytes} without"
        );
        for prompt in ["a fox in snow", "an owl at night", "a fox in snow"] {
            let (got, _) = run(&gpu, &parked, &request(prompt));
            assert_eq!(
                gpu.weight_bytes() - before,
                parked_bytes,
                "{folder}: the encoders left the GPU again"
            );
            if prompt == "a fox in snow" {
                assert_eq!(
                    got.iter().map(|i| &i.rgba).collect::<Vec<_>>(),
                    want.iter().map(|i| &i.rgba).collect::<Vec<_>>(),
                    "{folder}: the same image as with the encoders resident"
                );
            }
        }
        // The VAE encoder waits on the host in every model: img2img uploads it and frees it.
        assert!(parked.vae_encoder.is_on_host());
        let mut img2img = request("a fox in snow");
        img2img.recipe.strength = Some(0.6);
        img2img.recipe.init = Some(ImageRef::Attachment(0));
        let img2img = Request::new(img2img.recipe, Some(want[0].clone()), None).unwrap();
        let (made, _) = run(&gpu, &parked, &img2img);
        assert_eq!(made.len(), 1);
        assert_eq!(gpu.weight_bytes() - before, parked_bytes, "{folder}: the VAE encoder left the GPU");
    }
}
