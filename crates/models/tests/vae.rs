//! AutoencoderKL against diffusers on a tiny seeded model (tests/reference/sd_reference.py).

use std::path::{Path, PathBuf};

use darkroom_gpu::{max_abs_diff, relative_rms_error, DType, Gpu, Tensor};
use darkroom_models::vae::{AutoencoderKLConfig, VaeDecoder, VaeEncoder};
use darkroom_models::{QuantPolicy, WeightStore};
use darkroom_weights::SafetensorsFile;

mod common;
use common::gpu;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sd/vae")
}

fn reference(name: &str) -> (Vec<f32>, Vec<usize>) {
    let file =
        SafetensorsFile::from_bytes(std::fs::read(dir().join("reference.safetensors")).unwrap()).unwrap();
    let info = file.header.get(name).unwrap();
    (file.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect())
}

/// (moments from encoding the reference image, pixels from decoding the reference latents)
fn run(gpu: &Gpu, dtype: DType, policy: QuantPolicy) -> (Vec<f32>, Vec<f32>) {
    let config =
        AutoencoderKLConfig::from_json(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    assert_eq!(config.scale(), 8);
    let store = WeightStore::from_bytes(std::fs::read(dir().join("model.safetensors")).unwrap()).unwrap();
    let root = store.root(gpu, dtype, policy);
    let encoder = VaeEncoder::load(&root, &config).unwrap();
    let decoder = VaeDecoder::load(&root, &config).unwrap();
    store.require_all_used().unwrap();

    let (image, image_shape) = reference("image");
    let (latents, latent_shape) = reference("latents");
    let moments = encoder.forward(gpu, &Tensor::from_f32(gpu, &image_shape, &image, dtype).unwrap()).unwrap();
    let decoded =
        decoder.forward(gpu, &Tensor::from_f32(gpu, &latent_shape, &latents, dtype).unwrap()).unwrap();
    assert_eq!(decoded.shape(), &[1, 3, latent_shape[2] * 8, latent_shape[3] * 8]);
    (pollster::block_on(moments.read_f32(gpu)).unwrap(), pollster::block_on(decoded.read_f32(gpu)).unwrap())
}

#[test]
fn vae_encode_and_decode_match_diffusers_in_f32() {
    let gpu = gpu();
    let (moments, pixels) = run(&gpu, DType::F32, QuantPolicy::F32);
    let (dm, dp) =
        (max_abs_diff(&moments, &reference("moments").0), max_abs_diff(&pixels, &reference("decoded").0));
    println!("moments max diff {dm:.2e}, pixels max diff {dp:.2e}");
    assert!(dm <= 1e-3, "encoder moments differ by {dm}");
    assert!(dp <= 2e-3, "decoded pixels differ by {dp}");
}

#[test]
fn vae_reduced_precision_paths_stay_within_stated_bounds() {
    // Relative RMS error of decoded pixels against diffusers' f32: f16 activations 1%, int8 2%.
    let gpu = gpu();
    let want = reference("decoded").0;
    for (label, dtype, policy, bound) in
        [("f16", DType::F16, QuantPolicy::F16, 0.01), ("int8", DType::F32, QuantPolicy::Q8, 0.02)]
    {
        let (_, pixels) = run(&gpu, dtype, policy);
        let err = relative_rms_error(&pixels, &want);
        println!("{label}: relative RMS error {err:.2e}");
        assert!(err <= bound, "{label}: {err} over {bound}");
    }
}

#[test]
fn sd_config_has_the_released_shape() {
    let sd = AutoencoderKLConfig::sd();
    assert_eq!((sd.scale(), sd.latent_channels, sd.scaling_factor), (8, 4, 0.18215));
    assert!(AutoencoderKLConfig::from_json(r#"{"block_out_channels": [30]}"#).is_err());
    // SDXL's VAE config (force_upcast, latents_mean null) reads; latent statistics are refused.
    let sdxl = r#"{"block_out_channels": [128, 256, 512, 512], "scaling_factor": 0.13025,
        "force_upcast": true, "latents_mean": null, "latents_std": null}"#;
    let cfg = AutoencoderKLConfig::from_json(sdxl).unwrap();
    assert!(cfg.force_upcast && (cfg.scaling_factor - 0.13025).abs() < 1e-7);
    let edm = r#"{"block_out_channels": [128], "latents_mean": [0.1, 0.2, 0.3, 0.4]}"#;
    let err = AutoencoderKLConfig::from_json(edm).unwrap_err().to_string();
    assert!(err.contains("latents_mean"), "{err}");
    let fp16_fix = r#"{"block_out_channels": [128], "force_upcast": false}"#;
    assert!(!AutoencoderKLConfig::from_json(fp16_fix).unwrap().force_upcast);
}

/// The decoder and the reference latents.
fn decoder_and_latents(gpu: &Gpu, dtype: DType) -> (VaeDecoder, Tensor) {
    let config =
        AutoencoderKLConfig::from_json(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    let store = WeightStore::from_bytes(std::fs::read(dir().join("model.safetensors")).unwrap()).unwrap();
    let decoder = VaeDecoder::load(
        &store.root(gpu, dtype, if dtype == DType::F16 { QuantPolicy::F16 } else { QuantPolicy::F32 }),
        &config,
    )
    .unwrap();
    let (latents, shape) = reference("latents");
    (decoder, Tensor::from_f32(gpu, &shape, &latents, dtype).unwrap())
}

#[test]
fn tiled_decode_matches_diffusers_at_every_tile_size() {
    // Tiles of 1, 2 and 3 latent pixels over 4x5 latents: edge tiles of every shape, borders
    // gathered from up to eight neighbours, group norms over tiles of unequal sizes.
    let gpu = gpu();
    let (decoder, latents) = decoder_and_latents(&gpu, DType::F32);
    let want = reference("decoded").0;
    for tile in [1, 2, 3, 5] {
        let out = decoder.forward_tiled(&gpu, &latents, tile).unwrap();
        assert_eq!(out.shape(), &[1, 3, 32, 40]);
        let got = pollster::block_on(out.read_f32(&gpu)).unwrap();
        let d = max_abs_diff(&got, &want);
        println!("tile {tile}: max diff {d:.2e} against diffusers");
        assert!(d <= 2e-3, "tile {tile}: decoded pixels differ by {d}");
    }
}

#[test]
fn tiled_decode_equals_the_untiled_one_in_f16() {
    let gpu = gpu();
    if !gpu.capabilities().shader_f16 {
        return;
    }
    let (decoder, latents) = decoder_and_latents(&gpu, DType::F16);
    let whole = pollster::block_on(decoder.forward(&gpu, &latents).unwrap().read_f32(&gpu)).unwrap();
    for tile in [1, 2] {
        let tiled =
            pollster::block_on(decoder.forward_tiled(&gpu, &latents, tile).unwrap().read_f32(&gpu)).unwrap();
        let d = max_abs_diff(&tiled, &whole);
        let want = reference("decoded").0;
        let (e_tiled, e_whole) = (max_abs_diff(&tiled, &want), max_abs_diff(&whole, &want));
        println!("tile {tile}: {d:.2e} from the untiled f16 decode; from diffusers' f32 {e_tiled:.2e} (untiled {e_whole:.2e})");
        // f16 rounding of values about 1 (the statistics are summed in another order), and no
        // further from diffusers than the untiled f16 decode is.
        assert!(d <= 1e-2, "tile {tile}: {d}");
        assert!(e_tiled <= 1.5 * e_whole + 2e-3, "tile {tile}: {e_tiled} vs untiled {e_whole}");
    }
}

#[test]
fn tiled_decode_refuses_a_batch_and_a_zero_tile() {
    let gpu = gpu();
    let (decoder, latents) = decoder_and_latents(&gpu, DType::F32);
    assert!(decoder.forward_tiled(&gpu, &latents, 0).is_err());
    let two = darkroom_gpu::ops::concat(&gpu, &latents, &latents, 0).unwrap();
    assert!(decoder.forward_tiled(&gpu, &two, 2).is_err());
}

/// The tiled decode's working memory: with 16 tiles, the pool's peak during the decode (what
/// the GPU holds beyond the weights) stays under a third of the whole-image decode's, as each layer's
/// input tiles leave the GPU once their output tiles exist; recording the decode without running
/// it allocates exactly as running it does. An SD-shaped decoder at a quarter
/// of its widths, seeded weights, 128x128 pixels in f32.
#[test]
fn tiled_decode_holds_far_less_than_the_whole_image() {
    let gpu = gpu();
    let config =
        AutoencoderKLConfig { block_out_channels: vec![32, 64, 128, 128], ..AutoencoderKLConfig::sd() };
    let store = WeightStore::random(11);
    let decoder = VaeDecoder::load(&store.root(&gpu, DType::F32, QuantPolicy::F32), &config).unwrap();
    let values: Vec<f32> = (0..4 * 16 * 16).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let latents = Tensor::from_f32(&gpu, &[1, 4, 16, 16], &values, DType::F32).unwrap();
    let peak = |tile: Option<usize>| {
        gpu.trim_pool();
        gpu.reset_pool_peak();
        let start = gpu.pool_stats().allocated_bytes;
        let out = match tile {
            Some(t) => decoder.forward_tiled(&gpu, &latents, t),
            None => decoder.forward(&gpu, &latents),
        }
        .unwrap();
        let pixels = pollster::block_on(out.read_f32(&gpu)).unwrap();
        (gpu.pool_stats().peak_allocated_bytes - start, pixels)
    };
    let (whole, want) = peak(None);
    let (tiled, got) = peak(Some(4));
    println!(
        "whole decode {:.1} MiB, tiles of 4 latent pixels {:.1} MiB",
        whole as f64 / 1048576.0,
        tiled as f64 / 1048576.0
    );
    assert!(max_abs_diff(&got, &want) <= 1e-3, "the tiled decode is the whole one's");
    assert!(tiled * 3 < whole, "tiled {tiled} bytes vs whole {whole}");
    // Recorded without running (`bench models --memory`), the pool allocates the same.
    gpu.set_record_only(true);
    let (whole_recorded, zeros) = peak(None);
    let (tiled_recorded, _) = peak(Some(4));
    gpu.set_record_only(false);
    assert!(zeros.iter().all(|&v| v == 0.0), "nothing ran");
    assert_eq!((whole_recorded, tiled_recorded), (whole, tiled));
}
