//! ControlNet pipelines and preprocessors against their references (tests/fixtures/controlnet,
//! from tests/reference/controlnet_reference.py): OpenCV's Canny, PIL's Lanczos resize, and
//! diffusers' StableDiffusionControlNet(Img2Img)Pipeline on tiny seeded ControlNets.

use std::path::PathBuf;

use darkroom_pipeline::preprocess::{canny, lineart, resize_lanczos};
use darkroom_pipeline::Image;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/controlnet")
}

fn png(path: PathBuf) -> Image {
    Image::from_png(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn cases() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

#[test]
fn canny_matches_opencv() {
    for case in cases()["canny"].as_array().unwrap() {
        let image = png(dir().join("../images").join(case["image"].as_str().unwrap()));
        let want = png(dir().join(case["edges"].as_str().unwrap()));
        let got = canny(&image, case["low"].as_f64().unwrap(), case["high"].as_f64().unwrap());
        assert_eq!((got.width, got.height), (want.width, want.height));
        let n = got.width * got.height;
        let equal = got.rgba.chunks(4).zip(want.rgba.chunks(4)).filter(|(a, b)| a[0] == b[0]).count();
        let edges = want.rgba.chunks(4).filter(|p| p[0] == 255).count();
        println!("{}: {equal} of {n} pixels equal ({edges} edge pixels)", case["edges"]);
        assert!(edges > n / 20, "the fixture has edges");
        assert!(equal as f64 >= 0.99 * n as f64, "{}: {} pixels differ", case["edges"], n - equal);
    }
}

#[test]
fn lineart_matches_a1111s_lineart_standard() {
    for case in cases()["lineart"].as_array().unwrap() {
        let image = png(dir().join("../images").join(case["image"].as_str().unwrap()));
        let want = png(dir().join(case["lineart"].as_str().unwrap()));
        let got = lineart(&image);
        assert_eq!((got.width, got.height), (want.width, want.height));
        let n = got.width * got.height;
        let pairs = || got.rgba.chunks(4).zip(want.rgba.chunks(4));
        let equal = pairs().filter(|(a, b)| a[0] == b[0]).count();
        let worst = pairs().map(|(a, b)| a[0].abs_diff(b[0])).max().unwrap();
        let lines = want.rgba.chunks(4).filter(|p| p[0] > 64).count();
        println!("{}: {equal} of {n} equal, worst {worst} ({lines} line pixels)", case["lineart"]);
        assert!(lines > n / 50, "the fixture has lines");
        assert!(equal as f64 >= 0.99 * n as f64 && worst <= 1, "{}", case["lineart"]);
    }
}

#[test]
fn lanczos_resize_matches_pil() {
    for case in cases()["resize"].as_array().unwrap() {
        let image = png(dir().join(case["image"].as_str().unwrap()));
        let want = png(dir().join(case["resized"].as_str().unwrap()));
        let (w, h) = (case["width"].as_u64().unwrap() as usize, case["height"].as_u64().unwrap() as usize);
        let got = resize_lanczos(&image, w, h);
        assert_eq!((got.width, got.height), (want.width, want.height));
        let worst = got.rgba.iter().zip(&want.rgba).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        let differ = got.rgba.iter().zip(&want.rgba).filter(|(a, b)| a != b).count();
        println!("{}: {differ} values differ, by at most {worst}", case["resized"]);
        assert_eq!(differ, 0, "{}", case["resized"]);
    }
}

mod pipelines {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;

    use darkroom_gpu::{Gpu, Requirements};
    use darkroom_models::NoCache;
    use darkroom_pipeline::{
        generate, Control, ControlNet, ControlUnit, Folder, ImageRef, Precision, Recipe, Request,
        StableDiffusion,
    };
    use darkroom_weights::SafetensorsFile;

    /// A ControlNet folder: `tiny-controlnet-a` in tests/fixtures/controlnet, or a path under
    /// tests/fixtures (`sdxl-controlnet/tiny-sdxl-controlnet-a`).
    fn load_net(gpu: &Gpu, name: &str) -> Arc<ControlNet> {
        let files = Folder(if name.contains('/') { dir().join("..").join(name) } else { dir().join(name) });
        Arc::new(
            pollster::block_on(ControlNet::load(
                gpu,
                &files,
                &NoCache,
                name,
                Precision::F32,
                &mut |_, _, _| {},
            ))
            .unwrap(),
        )
    }

    /// A case of a cases.json; its control images are tests/fixtures/controlnet's, its units'
    /// ControlNets `nets` by key, recorded under the name `{prefix}{key}`.
    fn request(case: &Value, nets: &HashMap<String, Arc<ControlNet>>, prefix: &str) -> Request {
        let n = |k: &str| case[k].as_f64().unwrap();
        let mode = case["mode"].as_str().unwrap();
        let init = (mode != "txt2img").then(|| png(dir().join("../pipeline/init.png")));
        let mask = (mode == "inpaint").then(|| png(dir().join("../pipeline/mask.png")));
        let mut controls = Vec::new();
        let units: Vec<ControlUnit> = case["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                let net = u["net"].as_str().unwrap();
                let image = u["image"].as_str().unwrap();
                controls.push(Control { net: nets[net].clone(), image: png(dir().join(image)), map: None });
                ControlUnit {
                    model: format!("{prefix}{net}"),
                    image: Some(ImageRef::File(image.into())),
                    weight: u["weight"].as_f64().unwrap(),
                    start: u["start"].as_f64().unwrap(),
                    end: u["end"].as_f64().unwrap(),
                    ..ControlUnit::default()
                }
            })
            .collect();
        let recipe = Recipe {
            prompt: case["prompt"].as_str().unwrap().into(),
            negative_prompt: case["negative"].as_str().unwrap().into(),
            seed: Some(n("seed") as u64),
            steps: n("steps") as usize,
            sampler: case["sampler"].as_str().unwrap().parse().unwrap(),
            cfg_scale: n("cfg") as f32,
            width: n("width") as usize,
            height: n("height") as usize,
            batch_size: n("batch") as usize,
            init: init.as_ref().map(|_| ImageRef::Attachment(0)),
            mask: mask.as_ref().map(|_| ImageRef::Attachment(1)),
            strength: case["strength"].as_f64(),
            controls: units,
            ..Recipe::default()
        };
        let mut request = Request::new(recipe, init, mask).unwrap();
        request.controls = controls;
        request
    }

    /// Every case of cases.json through `generate` against diffusers' ControlNet pipelines:
    /// one and two units, weights, guidance start/end, CFG on and off, img2img, inpainting, batch 2 and a
    /// control image the pipeline resizes.
    #[test]
    fn controlnet_pipelines_match_diffusers() {
        pipelines_match(dir(), "tiny-sd", "tiny-controlnet-");
    }

    /// The same cases with SDXL ControlNets on tiny-sdxl against diffusers' SDXL ControlNet
    /// pipelines (the ControlNets take the pooled text embeddings and time ids too; an empty
    /// negative is zeros).
    #[test]
    fn sdxl_controlnet_pipelines_match_diffusers() {
        pipelines_match(
            dir().join("../sdxl-controlnet"),
            "tiny-sdxl",
            "sdxl-controlnet/tiny-sdxl-controlnet-",
        );
    }

    fn pipelines_match(fixture: PathBuf, base: &str, nets_prefix: &str) {
        let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
        let reference =
            SafetensorsFile::from_bytes(std::fs::read(fixture.join("reference.safetensors")).unwrap())
                .unwrap();
        let want = |key: &str| reference.to_f32(reference.header.get(key).unwrap()).unwrap();
        let files = Folder(dir().join("..").join(base));
        let model = pollster::block_on(StableDiffusion::load(
            &gpu,
            &files,
            &NoCache,
            base,
            Precision::F32,
            &mut |_, _, _| {},
        ))
        .unwrap();
        let record = nets_prefix.rsplit('/').next().unwrap();
        let cases: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("cases.json")).unwrap()).unwrap();
        // Every ControlNet the cases name, loaded once.
        let mut nets: HashMap<String, Arc<ControlNet>> = HashMap::new();
        for unit in cases["cases"].as_array().unwrap().iter().flat_map(|c| c["units"].as_array().unwrap()) {
            let key = unit["net"].as_str().unwrap();
            nets.entry(key.to_string()).or_insert_with(|| load_net(&gpu, &format!("{nets_prefix}{key}")));
        }
        let mut failures = Vec::new();
        for case in cases["cases"].as_array().unwrap() {
            assert_eq!(case["folder"], base);
            let name = case["name"].as_str().unwrap();
            let request = request(case, &nets, record);
            let out = pollster::block_on(generate(&gpu, &model, &request, &mut |_| true)).unwrap();
            let images = want(&format!("{name}/image")); // [B, H, W, 3] in 0..1
            let mut worst = 0.0f32;
            for (b, g) in out.iter().enumerate() {
                let n = g.image.width * g.image.height;
                for (i, p) in g.image.rgba.chunks(4).enumerate() {
                    for c in 0..3 {
                        let d = (p[c] as f32 - images[(b * n + i) * 3 + c] * 255.0).abs();
                        worst = worst.max(d);
                    }
                }
            }
            // Without the units the image is another one: the control matters in every case.
            let mut plain = request.clone();
            plain.recipe.controls.clear();
            plain.controls.clear();
            let free = pollster::block_on(generate(&gpu, &model, &plain, &mut |_| true)).unwrap();
            let moved = free[0]
                .image
                .rgba
                .iter()
                .zip(&out[0].image.rgba)
                .map(|(a, b)| a.abs_diff(*b) as f64)
                .sum::<f64>()
                / free[0].image.rgba.len() as f64;
            println!("{name}: worst {worst:.2}/255; the control moves pixels by {moved:.1}/255 on average");
            let infotext = out[0].params.to_infotext();
            if worst > 2.0
                || moved < 2.0
                || !infotext.contains(&format!("ControlNet 0: \"Module: none, Model: {record}"))
            {
                failures.push(format!("{name}: worst {worst}, moved {moved}, {infotext}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_controlnet_for_another_model_or_a_missing_image_is_refused() {
        let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
        let model = pollster::block_on(StableDiffusion::load(
            &gpu,
            &Folder(dir().join("../tiny-sd-deep")),
            &NoCache,
            "tiny-sd-deep",
            Precision::F32,
            &mut |_, _, _| {},
        ))
        .unwrap();
        let nets: HashMap<String, Arc<ControlNet>> =
            [("a".to_string(), load_net(&gpu, "tiny-controlnet-a"))].into_iter().collect();
        let case = &cases()["cases"][0];
        let request = request(case, &nets, "tiny-controlnet-");
        let err =
            pollster::block_on(generate(&gpu, &model, &request, &mut |_| true)).unwrap_err().to_string();
        assert!(err.contains("ControlNet tiny-controlnet-a does not fit tiny-sd-deep"), "{err}");
        let mut short = request.clone();
        short.controls.clear();
        let err = pollster::block_on(generate(&gpu, &model, &short, &mut |_| true)).unwrap_err().to_string();
        assert!(err.contains("1 control units but 0"), "{err}");
    }
}
