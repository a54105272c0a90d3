//! Upscalers against spandrel (tests/reference/upscale_reference.py): seeded RRDBNet (scale 4,
//! scale 2 with pixel-unshuffle, old ESRGAN names) and SRVGGNetCompact (scale 4 and 2) from
//! .safetensors and .pth, the architecture detected from the weights, outputs as PyTorch's.

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, DType, Tensor};
use darkroom_models::upscale::{weights_file, Architecture, Upscaler, UpscalerInfo};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upscale")
}

fn file(case: &str) -> Vec<u8> {
    ["safetensors", "pth"]
        .iter()
        .find_map(|ext| std::fs::read(dir().join(format!("{case}.{ext}"))).ok())
        .unwrap()
}

/// The input image as [1, 3, H, W] in [0, 1].
fn input() -> (Vec<f32>, [usize; 4]) {
    let decoder = png::Decoder::new(std::io::Cursor::new(std::fs::read(dir().join("input.png")).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut planar = vec![0.0; 3 * w * h];
    for i in 0..w * h {
        for c in 0..3 {
            planar[c * w * h + i] = buf[i * 3 + c] as f32 / 255.0;
        }
    }
    (planar, [1, 3, h, w])
}

#[test]
fn every_case_matches_spandrel() {
    let gpu = gpu();
    let reference =
        SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    let (x, shape) = input();
    let expected = [
        ("rrdb_x4", 4, "rrdb"),
        ("rrdb_x2", 2, "rrdb"),
        ("esrgan_old_x4", 4, "rrdb"),
        ("compact_x4", 4, "compact"),
        ("compact_x2", 2, "compact"),
    ];
    for (case, scale, kind) in expected {
        let store = WeightStore::from_bytes(weights_file(file(case)).unwrap()).unwrap();
        let info = UpscalerInfo::detect(store.header()).unwrap();
        assert_eq!(info.scale, scale, "{case}");
        assert_eq!(matches!(info.architecture, Architecture::Rrdb { .. }), kind == "rrdb", "{case}");
        for (dtype, policy, bound) in
            [(DType::F32, QuantPolicy::F32, 2e-4), (DType::F16, QuantPolicy::F16, 3e-2)]
        {
            if dtype == DType::F16 && !gpu.capabilities().shader_f16 {
                continue;
            }
            let model = Upscaler::load(&store.root(&gpu, dtype, policy), info).unwrap();
            store.require_all_used().unwrap();
            let out = model.forward(&gpu, &Tensor::from_f32(&gpu, &shape, &x, dtype).unwrap()).unwrap();
            assert_eq!(out.shape(), &[1, 3, shape[2] * scale, shape[3] * scale], "{case}");
            let got = pollster::block_on(out.read_f32(&gpu)).unwrap();
            let want = reference.to_f32(reference.header.get(&format!("{case}/output")).unwrap()).unwrap();
            let diff = max_abs_diff(&got, &want);
            println!("{case} {dtype:?}: max abs diff {diff:.2e} ({:.2}/255)", diff * 255.0);
            assert!(diff <= bound, "{case} {dtype:?}: {diff}");
        }
    }
}

#[test]
fn files_that_are_not_upscalers_are_refused_by_name() {
    let unet = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tiny-sd/unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let store = WeightStore::from_bytes(weights_file(unet).unwrap()).unwrap();
    let err = UpscalerInfo::detect(store.header()).unwrap_err().to_string();
    assert!(err.contains("not an upscaler"), "{err}");
    assert!(weights_file(b"PK\x03\x04 not really".to_vec()).is_err());
    let evil = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pth/evil.pth"))
        .unwrap();
    assert!(weights_file(evil).unwrap_err().to_string().contains("refused"));
}
