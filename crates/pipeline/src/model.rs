//! A Stable Diffusion model on the GPU: tokenizer, text encoder, UNet, VAE and the training
//! noise schedule, loaded from the files of a diffusers folder (model_index.json, text_encoder/,
//! tokenizer/, unet/, vae/, scheduler/) through a `ModelFiles` source — the file system natively,
//! the blob store in the browser.

use darkroom_gpu::{DType, Gpu};
use darkroom_models::clip::ClipTextModel;
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::vae::{AutoencoderKLConfig, VaeDecoder, VaeEncoder};
use darkroom_models::{QuantPolicy, WeightStore};

use crate::schedulers::NoiseScheduleConfig;
use crate::tokenizer::ClipTokenizer;
use crate::PipelineError;

/// Where a model's files come from, by path relative to the model's root ("unet/config.json").
pub trait ModelFiles {
    /// The file's bytes, or `None` when there is no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, PipelineError>;
}

/// A diffusers folder on disk.
pub struct Folder(pub std::path::PathBuf);

impl ModelFiles for Folder {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, PipelineError> {
        let full = self.0.join(path);
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PipelineError::Files(format!("{}: {e}", full.display()))),
        }
    }
}

/// How weights sit on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// Activations (f16 needs the adapter's shader-f16).
    pub activations: DType,
    /// Storage of matmul and convolution weights.
    pub weights: QuantPolicy,
}

impl Precision {
    /// The weights as stored, in f32: the mode that reproduces diffusers.
    pub const F32: Precision = Precision { activations: DType::F32, weights: QuantPolicy::F32 };
}

pub struct StableDiffusion {
    /// Shown in PNG metadata ("Model: …").
    pub name: String,
    pub tokenizer: ClipTokenizer,
    pub clip: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae_config: AutoencoderKLConfig,
    pub vae_encoder: VaeEncoder,
    pub vae_decoder: VaeDecoder,
    pub schedule: NoiseScheduleConfig,
    pub precision: Precision,
}

fn required(files: &dyn ModelFiles, path: &str) -> Result<Vec<u8>, PipelineError> {
    files.read(path)?.ok_or_else(|| PipelineError::Files(format!("the model has no {path}")))
}

fn text(files: &dyn ModelFiles, path: &str) -> Result<String, PipelineError> {
    String::from_utf8(required(files, path)?)
        .map_err(|_| PipelineError::Files(format!("{path} is not UTF-8 text")))
}

/// The first of `names` under `dir` that exists (full-precision files before .fp16 ones).
fn weights(files: &dyn ModelFiles, dir: &str, names: &[&str]) -> Result<WeightStore, PipelineError> {
    for name in names {
        if let Some(bytes) = files.read(&format!("{dir}/{name}"))? {
            return WeightStore::from_bytes(bytes)
                .map_err(|e| PipelineError::Files(format!("{dir}/{name}: {e}")));
        }
    }
    Err(PipelineError::Files(format!("{dir}/ has none of {}", names.join(", "))))
}

fn config_error(path: &str) -> impl Fn(darkroom_models::config::ConfigError) -> PipelineError + '_ {
    move |e| PipelineError::Files(format!("{path}: {e}"))
}

impl StableDiffusion {
    /// Loads every component; unused or missing tensors are errors (a checkpoint that does not
    /// fit the config must not half-load).
    pub fn load(
        gpu: &Gpu,
        files: &dyn ModelFiles,
        name: &str,
        precision: Precision,
    ) -> Result<StableDiffusion, PipelineError> {
        if precision.activations == DType::F16 && !gpu.capabilities().shader_f16 {
            return Err(PipelineError::Input(
                "f16 precision needs the adapter's shader-f16 feature, which this GPU lacks; use f32".into(),
            ));
        }
        let (dtype, policy) = (precision.activations, precision.weights);
        let tokenizer = ClipTokenizer::from_files(
            &text(files, "tokenizer/vocab.json")?,
            &text(files, "tokenizer/merges.txt")?,
            files
                .read("tokenizer/special_tokens_map.json")?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .as_deref(),
        )?;

        let clip_config = ClipTextConfig::from_json(&text(files, "text_encoder/config.json")?)
            .map_err(config_error("text_encoder/config.json"))?;
        let store = weights(files, "text_encoder", &["model.safetensors", "model.fp16.safetensors"])?;
        let clip = ClipTextModel::load(&store.root(gpu, dtype, policy), &clip_config)?;
        let ignorable = |k: &String| k.ends_with("position_ids");
        if store.unused_keys().iter().any(|k| !ignorable(k)) {
            store.require_all_used()?;
        }
        drop(store);

        let unet_config = UNet2DConditionConfig::from_json(&text(files, "unet/config.json")?)
            .map_err(config_error("unet/config.json"))?;
        let diffusers = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
        let store = weights(files, "unet", &diffusers)?;
        let unet = UNet2DConditionModel::load(&store.root(gpu, dtype, policy), &unet_config)?;
        store.require_all_used()?;
        drop(store);

        let vae_config = AutoencoderKLConfig::from_json(&text(files, "vae/config.json")?)
            .map_err(config_error("vae/config.json"))?;
        let store = weights(files, "vae", &diffusers)?;
        let root = store.root(gpu, dtype, policy);
        let vae_encoder = VaeEncoder::load(&root, &vae_config)?;
        let vae_decoder = VaeDecoder::load(&root, &vae_config)?;
        store.require_all_used()?;
        drop(store);

        let schedule = NoiseScheduleConfig::from_json(&text(files, "scheduler/scheduler_config.json")?)
            .map_err(PipelineError::Files)?;
        if clip_config.hidden_size != unet_config.cross_attention_dim {
            return Err(PipelineError::Files(format!(
                "the text encoder's width {} does not match the UNet's cross-attention width {}",
                clip_config.hidden_size, unet_config.cross_attention_dim
            )));
        }
        Ok(StableDiffusion {
            name: name.to_string(),
            tokenizer,
            clip,
            unet,
            vae_config,
            vae_encoder,
            vae_decoder,
            schedule,
            precision,
        })
    }

    /// 9 input channels: latents, mask, masked-image latents (SD 1.5 inpainting and kin).
    pub fn is_inpainting(&self) -> bool {
        self.unet.config().in_channels == 9
    }

    /// What width and height must be multiples of: the VAE's factor times the UNet's.
    pub fn size_multiple(&self) -> usize {
        self.vae_config.scale() * (1 << (self.unet.config().block_out_channels.len() - 1))
    }
}
