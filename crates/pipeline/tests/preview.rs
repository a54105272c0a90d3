//! The live preview: image i of a batch of latents through TAESD equals decoding that image's
//! latents alone (the real TAEF2 decoder weights; the preview does not care which TAESD).

use darkroom_gpu::ops::{ColorMap, Rgba8Image};
use darkroom_gpu::reference::TestRng;
use darkroom_gpu::{DType, Gpu, Requirements, Tensor};
use darkroom_models::taesd::{TaesdConfig, TaesdDecoder};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_pipeline::preview;

#[test]
fn preview_decodes_the_chosen_image_of_a_batch() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/taef2/taef2_decoder.safetensors");
    let store = WeightStore::from_bytes(std::fs::read(path).unwrap()).unwrap();
    let decoder =
        TaesdDecoder::load(&store.root(&gpu, DType::F32, QuantPolicy::F32), TaesdConfig::TAEF2).unwrap();
    let (c, h, w) = (32, 3, 4);
    let values = TestRng::new(9).vec(2 * c * h * w);
    let batch = Tensor::from_f32(&gpu, &[2, c, h, w], &values, DType::F32).unwrap();
    let got = pollster::block_on(preview(&gpu, &decoder, &batch, 1)).unwrap();
    assert_eq!((got.width, got.height), (32, 24));

    let alone = Tensor::from_f32(&gpu, &[1, c, h, w], &values[c * h * w..], DType::F32).unwrap();
    let rgb = decoder.forward(&gpu, &alone).unwrap();
    let want =
        pollster::block_on(Rgba8Image::from_tensor(&gpu, &rgb, ColorMap::RGB).unwrap().read(&gpu)).unwrap();
    assert_eq!(got.rgba, want);
    let first = pollster::block_on(preview(&gpu, &decoder, &batch, 0)).unwrap();
    assert_ne!(first.rgba, got.rgba, "image 0 is not image 1");
    assert!(pollster::block_on(preview(&gpu, &decoder, &batch, 2)).is_err());
}

/// The SD-latent TAESD (4 channels, no midblock pool) against PyTorch, on seeded random weights
/// in the real file's layout (tests/reference/taesd_sd_reference.py).
#[test]
fn the_sd_taesd_decoder_matches_pytorch() {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/taesd-test");
    let store =
        WeightStore::from_bytes(std::fs::read(format!("{dir}/taesd_decoder.safetensors")).unwrap()).unwrap();
    let decoder =
        TaesdDecoder::load(&store.root(&gpu, DType::F32, QuantPolicy::F32), TaesdConfig::SD).unwrap();
    let reference = darkroom_weights::SafetensorsFile::from_bytes(
        std::fs::read(format!("{dir}/reference.safetensors")).unwrap(),
    )
    .unwrap();
    let get = |name: &str| reference.to_f32(reference.header.get(name).unwrap()).unwrap();
    let latents = Tensor::from_f32(&gpu, &[1, 4, 6, 8], &get("latents"), DType::F32).unwrap();
    let out = decoder.forward(&gpu, &latents).unwrap();
    assert_eq!(out.shape(), &[1, 3, 48, 64]);
    let got = pollster::block_on(out.read_f32(&gpu)).unwrap();
    let want = get("decoded");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-5 + 1e-4 * scale, "max abs error {worst} (outputs up to {scale})");
}
