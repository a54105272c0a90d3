//! Shared by the model tests.

use std::path::Path;

use darkroom_gpu::{Gpu, Requirements};

pub fn gpu() -> Gpu {
    pollster::block_on(Gpu::open(&Requirements::default())).expect("a Vulkan adapter (lavapipe in CI)")
}

// Each test binary includes this module and uses only part of it.
#[allow(dead_code)]
/// Writes planar RGB in [0, 1] as a PNG under target/test-output/, to look at.
pub fn save_png(name: &str, planar: &[f32], w: usize, h: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-output");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                rgb[(y * w + x) * 3 + c] =
                    (planar[(c * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header().unwrap().write_image_data(&rgb).unwrap();
}
