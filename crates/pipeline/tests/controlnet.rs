//! ControlNet pipelines and preprocessors against their references (tests/fixtures/controlnet,
//! from tests/reference/controlnet_reference.py): OpenCV's Canny, PIL's Lanczos resize, and
//! diffusers' StableDiffusionControlNet(Img2Img)Pipeline on tiny seeded ControlNets.

use std::path::PathBuf;

use darkroom_pipeline::preprocess::{canny, resize_lanczos};
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
