//! The depth preprocessor end to end against transformers (tests/reference/depth_reference.py):
//! odd.png (97x61) through DPTImageProcessor (PIL backend, 518 pixels, aspect kept, multiples
//! of 14), the tiny seeded Depth Anything, post_process_depth_estimation back to 97x61, and the
//! min-max scaled grey map.

use std::path::PathBuf;

use darkroom_gpu::{Gpu, Requirements};
use darkroom_pipeline::depth::{input_size, DepthModel};
use darkroom_pipeline::{Folder, Image, Precision};
use darkroom_weights::SafetensorsFile;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/depth-anything")
}

#[test]
fn the_depth_map_of_a_photograph_matches_transformers() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let files = Folder(dir().join("model"));
    let model = pollster::block_on(DepthModel::load(&gpu, &files, "tiny", Precision::F32)).unwrap();
    let image = Image::from_png(&std::fs::read(dir().join("../clip-score/odd.png")).unwrap()).unwrap();
    let r = SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    let get = |name: &str| r.to_f32(r.header.get(name).unwrap()).unwrap();
    let size = get("odd_input_size");
    assert_eq!(input_size(97, 61), (size[1] as usize, size[0] as usize));

    let depth = pollster::block_on(model.depth(&gpu, &image)).unwrap();
    assert_eq!((depth.width, depth.height), (97, 61));
    let want = get("odd_depth");
    let range = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // PIL's bicubic resize on 8-bit pixels is matched bit for bit; what remains is f32 rounding.
    let diff = darkroom_gpu::max_abs_diff(&depth.values, &want);
    println!("depth: max |diff| {diff:.2e} of values up to {range:.3}");
    assert!(diff <= 1e-3 * range.max(1.0), "{diff}");

    let map = pollster::block_on(model.control_map(&gpu, &image)).unwrap();
    let want_map = get("odd_map");
    let levels: Vec<f32> = map.rgba.chunks_exact(4).map(|p| p[0] as f32).collect();
    assert!(map.rgba.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255), "grey, opaque");
    let off: Vec<f32> = levels.iter().zip(&want_map).map(|(a, b)| (a - b).abs()).collect();
    let equal = off.iter().filter(|&&d| d == 0.0).count() as f64 / off.len() as f64;
    let worst = off.iter().fold(0.0f32, |m, &d| m.max(d));
    println!("map: {:.2}% of levels equal, worst {worst}", 100.0 * equal);
    assert!(equal >= 0.99 && worst <= 1.0, "{equal} equal, worst {worst}");
    // Not a flat map: near and far differ across the photograph.
    assert!(levels.contains(&0.0) && levels.contains(&255.0));
}

#[test]
fn a_folder_without_a_depth_model_is_refused_by_name() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let files = Folder(dir());
    let e = pollster::block_on(DepthModel::load(&gpu, &files, "elsewhere", Precision::F32)).err().unwrap();
    assert!(e.to_string().contains("elsewhere has no config.json"), "{e}");
}
