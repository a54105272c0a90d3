//! The model-free measures against scikit-image and OpenCV (tests/fixtures/clip-score/palette.json,
//! from tests/reference/palette_reference.py): sRGB → CIELAB as `skimage.color.rgb2lab` (and
//! OpenCV's `COLOR_RGB2Lab` within its table interpolation), and each image's mean CIE76 ΔE to
//! the nearest colour of a palette.

use std::path::PathBuf;

use darkroom_pipeline::scores::{duplicate_of, near_duplicates, palette_delta_e, srgb_to_lab, Measures};
use darkroom_pipeline::Image;
use darkroom_workflow::brief::parse_hex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("clip-score/palette.json")).unwrap())
        .unwrap()
}

#[test]
fn lab_matches_scikit_image_and_opencv() {
    let want = reference();
    for (key, tolerance) in [("lab", 1e-6), ("lab_opencv", 0.5)] {
        let colours = want[key].as_object().unwrap();
        assert!(colours.len() >= 8);
        for (hex, lab) in colours {
            let got = srgb_to_lab(parse_hex(hex).unwrap());
            for (c, w) in got.iter().zip(lab.as_array().unwrap()) {
                assert!((c - w.as_f64().unwrap()).abs() < tolerance, "{key} {hex}: {got:?} vs {lab}");
            }
        }
    }
}

#[test]
fn palette_delta_e_matches_scikit_image() {
    let want = reference();
    let palettes = want["palettes"].as_object().unwrap();
    for (name, file) in [
        ("odd", "clip-score/odd.png"),
        ("astronaut", "images/astronaut.png"),
        ("coffee", "images/coffee.png"),
    ] {
        let image = Image::from_png(&std::fs::read(fixtures().join(file)).unwrap()).unwrap();
        for (pname, colours) in palettes {
            let palette: Vec<[u8; 3]> =
                colours.as_array().unwrap().iter().map(|c| parse_hex(c.as_str().unwrap()).unwrap()).collect();
            let got = palette_delta_e(&image, &palette).unwrap();
            let w = want["images"][name][pname].as_f64().unwrap();
            assert!((got - w).abs() < 1e-6, "{name} / {pname}: {got} vs scikit-image's {w}");
        }
    }
}

#[test]
fn palette_edge_cases() {
    let image = Image { width: 2, height: 1, rgba: vec![255, 0, 0, 255, 255, 0, 0, 255] };
    assert_eq!(palette_delta_e(&image, &[]), None);
    assert!(palette_delta_e(&image, &[[255, 0, 0]]).unwrap() < 1e-9);
    let measures = Measures::of(&image, &[[0, 0, 255]]);
    assert_eq!(measures.clipped_highlights, 1.0);
    assert!(measures.palette_delta_e.unwrap() > 100.0);
    assert!(near_duplicates(0b1011, 0b0011) && !near_duplicates(0, u64::MAX));
    // Each repeat points at the first of its kind, not at another repeat.
    let hashes = [Some(0u64), Some(u64::MAX), Some(0b11), None, Some(0b111)];
    assert_eq!(duplicate_of(&hashes), [None, None, Some(0), None, Some(0)]);
}
