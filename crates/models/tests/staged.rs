//! Loading from a stream (`Stager`): the file fed in odd slices gives exactly the model the
//! whole-file load gives (UNet in f32 and int8, CLIP with its embedding tables), a second load
//! with the quantized cache quantizes nothing, and a truncated stream is an error.

use std::path::{Path, PathBuf};

use darkroom_gpu::{DType, Gpu, Requirements, Tensor, WeightFormat};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::{MemoryCache, NoCache, QuantCache, QuantPolicy, StageStats, Stager, WeightStore};
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn gpu() -> Gpu {
    pollster::block_on(Gpu::open(&Requirements::default())).unwrap()
}

fn staged<C: QuantCache>(
    gpu: &Gpu,
    path: &Path,
    policy: QuantPolicy,
    cache: &C,
) -> (WeightStore, StageStats) {
    let bytes = std::fs::read(path).unwrap();
    let mut stager = Stager::new(gpu, bytes.len() as u64, policy, "test-source");
    for part in bytes.chunks(100_003) {
        pollster::block_on(stager.push(part, cache)).unwrap();
    }
    let stats = stager.stats;
    (stager.finish().unwrap(), stats)
}

fn unet_output(gpu: &Gpu, store: &WeightStore, policy: QuantPolicy) -> Vec<f32> {
    let dir = fixtures().join("sd/unet_sd1");
    let config =
        UNet2DConditionConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let unet = UNet2DConditionModel::load(&store.root(gpu, DType::F32, policy), &config).unwrap();
    store.require_all_used().unwrap();
    let reference =
        SafetensorsFile::from_bytes(std::fs::read(dir.join("reference.safetensors")).unwrap()).unwrap();
    let get = |name: &str| {
        let info = reference.header.get(name).unwrap();
        (reference.to_f32(info).unwrap(), info.shape.iter().map(|&d| d as usize).collect::<Vec<_>>())
    };
    let ((sample, s_shape), (context, c_shape), (timesteps, _)) =
        (get("sample"), get("encoder_hidden_states"), get("timesteps"));
    let out = unet
        .forward(
            gpu,
            &Tensor::from_f32(gpu, &s_shape, &sample, DType::F32).unwrap(),
            &timesteps,
            &Tensor::from_f32(gpu, &c_shape, &context, DType::F32).unwrap(),
        )
        .unwrap();
    pollster::block_on(out.read_f32(gpu)).unwrap()
}

#[test]
fn a_streamed_unet_equals_the_whole_file_one_and_the_cache_skips_quantizing() {
    let gpu = gpu();
    let path = fixtures().join("sd/unet_sd1/model.safetensors");
    for policy in
        [QuantPolicy::F32, QuantPolicy::Q8, QuantPolicy { linear: WeightFormat::Q4, conv: WeightFormat::Q8 }]
    {
        let whole = WeightStore::from_bytes(std::fs::read(&path).unwrap()).unwrap();
        let want = unet_output(&gpu, &whole, policy);
        let cache = MemoryCache::default();
        let (store, first) = staged(&gpu, &path, policy, &cache);
        assert_eq!(unet_output(&gpu, &store, policy), want, "{policy:?}: streamed load differs");
        let quantizes = policy.linear != WeightFormat::F32;
        assert_eq!(first.from_cache, 0);
        assert_eq!(first.quantized > 0, quantizes, "{first:?}");
        assert_eq!(first.bytes, std::fs::metadata(&path).unwrap().len());

        let (again, second) = staged(&gpu, &path, policy, &cache);
        assert_eq!(second.quantized, 0, "{policy:?}: the second load re-quantized: {second:?}");
        assert_eq!(second.from_cache, first.quantized);
        assert_eq!(unet_output(&gpu, &again, policy), want, "{policy:?}: cached load differs");
    }
}

#[test]
fn a_streamed_text_encoder_keeps_its_embedding_tables() {
    let gpu = gpu();
    let dir = fixtures().join("clip/sd1");
    let config =
        ClipTextConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let ids: Vec<u32> = (0..77)
        .map(|i| {
            if i == 0 {
                49406
            } else if i < 5 {
                320 + i
            } else {
                49407
            }
        })
        .collect();
    let encode = |store: &WeightStore| {
        let clip = ClipTextModel::load(&store.root(&gpu, DType::F32, QuantPolicy::Q8), &config).unwrap();
        store.require_all_used().unwrap();
        pollster::block_on(clip.forward(&gpu, &ids, 77).unwrap().read_f32(&gpu)).unwrap()
    };
    let whole = WeightStore::from_bytes(std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
    let (store, _) = staged(&gpu, &dir.join("model.safetensors"), QuantPolicy::Q8, &NoCache);
    assert_eq!(encode(&store), encode(&whole));
}

#[test]
fn a_truncated_stream_is_an_error_not_a_half_model() {
    let gpu = gpu();
    let bytes = std::fs::read(fixtures().join("sd/vae/model.safetensors")).unwrap();
    let mut stager = Stager::new(&gpu, bytes.len() as u64, QuantPolicy::F32, "t");
    pollster::block_on(stager.push(&bytes[..bytes.len() / 2], &NoCache)).unwrap();
    let err = stager.finish().err().expect("half a file does not finish");
    assert!(err.to_string().contains("incomplete"), "{err}");
}
