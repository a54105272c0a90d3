//! A Stable Diffusion model on the GPU: tokenizer, text encoder, UNet, VAE and the training
//! noise schedule, loaded from the files of a diffusers folder (model_index.json, text_encoder/,
//! tokenizer/, unet/, vae/, scheduler/; SDXL adds text_encoder_2/ and tokenizer_2/) through a `ModelFiles` source — the file system natively,
//! the blob store in the browser.

use darkroom_gpu::{DType, Gpu};
use darkroom_models::config::{ClipTextConfig, UNet2DConditionConfig};
use darkroom_models::held::Held;

use crate::text_encoder::load_text_encoder;
pub use crate::text_encoder::{SdxlText, TextEncoder, TextEncoders};
use darkroom_models::unet::UNet2DConditionModel;
use darkroom_models::vae::{AutoencoderKLConfig, VaeDecoder, VaeEncoder};
use darkroom_models::{LoraMerge, QuantCache, QuantPolicy, Stager, WeightStore};
use darkroom_weights::lora::{Component, Lora};
use std::sync::Arc;

use crate::schedulers::NoiseScheduleConfig;
use crate::tokenizer::ClipTokenizer;
use crate::PipelineError;

/// Where a model's files come from, by path relative to the model's root ("unet/config.json"):
/// a folder natively, the download store in the browser. Weight files are read in ranges so
/// they stream through the GPU upload instead of sitting in memory whole.
#[allow(async_fn_in_trait)]
pub trait ModelFiles {
    /// The file's length, or `None` when there is no such file.
    async fn len(&self, path: &str) -> Result<Option<u64>, PipelineError>;
    /// `len` bytes from `start` (fewer only at the end of the file).
    async fn read_range(&self, path: &str, start: u64, len: u64) -> Result<Vec<u8>, PipelineError>;
    /// Names this version of the file in quantized-cache keys (changes when the file does).
    async fn identity(&self, path: &str) -> Result<String, PipelineError>;

    /// A whole (small) file.
    async fn read(&self, path: &str) -> Result<Option<Vec<u8>>, PipelineError> {
        match self.len(path).await? {
            Some(n) => Ok(Some(self.read_range(path, 0, n).await?)),
            None => Ok(None),
        }
    }
}

/// A tokenizer folder (`tokenizer`, SDXL's `tokenizer_2`) in either layout: `vocab.json` +
/// `merges.txt` (older savers) or `tokenizer.json` (current diffusers/transformers
/// `save_pretrained`).
/// `dir` "" is the model's root (a transformers folder).
pub(crate) async fn load_tokenizer(
    files: &impl ModelFiles,
    dir: &str,
) -> Result<ClipTokenizer, PipelineError> {
    let path = |name: &str| if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
    let optional = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
    let special = optional(files.read(&path("special_tokens_map.json")).await?);
    if files.len(&path("vocab.json")).await?.is_some() {
        return Ok(ClipTokenizer::from_files(
            &text(files, &path("vocab.json")).await?,
            &text(files, &path("merges.txt")).await?,
            special.as_deref(),
        )?);
    }
    match optional(files.read(&path("tokenizer.json")).await?) {
        Some(json) => Ok(ClipTokenizer::from_tokenizer_json(
            &json,
            optional(files.read(&path("tokenizer_config.json")).await?).as_deref(),
            special.as_deref(),
        )?),
        None => Err(PipelineError::Files(format!(
            "{} has neither vocab.json + merges.txt nor tokenizer.json",
            if dir.is_empty() { "the folder".to_string() } else { format!("{dir}/") }
        ))),
    }
}

/// Bytes per read while streaming a weight file.
pub const STREAM_CHUNK: u64 = 8 << 20;

/// A diffusers folder on disk.
pub struct Folder(pub std::path::PathBuf);

impl Folder {
    fn error(&self, path: &str, e: std::io::Error) -> PipelineError {
        PipelineError::Files(format!("{}: {e}", self.0.join(path).display()))
    }
}

impl ModelFiles for Folder {
    async fn len(&self, path: &str) -> Result<Option<u64>, PipelineError> {
        match std::fs::metadata(self.0.join(path)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(path, e)),
        }
    }

    async fn read_range(&self, path: &str, start: u64, len: u64) -> Result<Vec<u8>, PipelineError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(self.0.join(path)).map_err(|e| self.error(path, e))?;
        f.seek(SeekFrom::Start(start)).map_err(|e| self.error(path, e))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf).map_err(|e| self.error(path, e))?;
        Ok(buf)
    }

    async fn identity(&self, path: &str) -> Result<String, PipelineError> {
        let full = self.0.join(path);
        let meta = std::fs::metadata(&full).map_err(|e| self.error(path, e))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let canonical = full.canonicalize().unwrap_or(full);
        let text = format!("{}|{}|{}", canonical.display(), meta.len(), modified.map_or(0, |d| d.as_nanos()));
        Ok(short_hash(text.as_bytes()))
    }
}

/// 16 hex digits of sha256: a cache-key component.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Quantized weights cached in a folder (natively: `<cache>/quantized/`), one file per tensor.
pub struct FolderQuantCache(pub std::path::PathBuf);

impl FolderQuantCache {
    fn path(&self, key: &str) -> std::path::PathBuf {
        // Keys are "<source>/<tensor name>/<format>/v<n>": safe path parts once dots stay dots.
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "._-/".contains(c) { c } else { '_' })
            .collect();
        self.0.join(safe.replace("..", "_"))
    }
}

impl QuantCache for FolderQuantCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(key)).ok()
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        let path = self.path(key);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Written aside and renamed, so a crash never leaves a torn entry under the real name.
        let tmp = path.with_extension("partial");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// A LoRA to merge at load.
#[derive(Clone)]
pub struct AppliedLora {
    /// As the prompt names it (`<lora:name:scale>`) and PNG metadata records it.
    pub name: String,
    pub lora: Arc<Lora>,
    pub scale: f32,
    /// Identifies the file in quantized-weight cache keys (its content hash).
    pub id: String,
}

/// How weights sit on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// Activations (f16 needs the adapter's shader-f16).
    pub activations: DType,
    /// Storage of matmul and convolution weights.
    pub weights: QuantPolicy,
    /// Where the text encoders wait between prompts.
    pub text_encoders: TextEncoders,
}

impl Precision {
    /// The weights as stored, in f32: the mode that reproduces diffusers.
    pub const F32: Precision =
        Precision { activations: DType::F32, weights: QuantPolicy::F32, text_encoders: TextEncoders::Gpu };
}

/// The activations a VAE runs in beside a model in `dtype`: f32 for an SDXL VAE that says
/// `force_upcast` (SDXL's overflows f16; diffusers' SDXL pipelines upcast it), else `dtype`.
pub fn vae_dtype(sdxl: bool, config: &AutoencoderKLConfig, dtype: DType) -> DType {
    if sdxl && config.force_upcast {
        DType::F32
    } else {
        dtype
    }
}

/// Which pipeline a model folder is, from model_index.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x / 2.x: one text encoder.
    Sd,
    /// SDXL and SDXL-Turbo: two text encoders, added conditioning.
    Sdxl { force_zeros_for_empty_prompt: bool },
}

pub struct StableDiffusion {
    /// Shown in PNG metadata ("Model: …").
    pub name: String,
    pub tokenizer: ClipTokenizer,
    /// The (first) text encoder.
    pub clip: TextEncoder,
    /// SDXL's second encoder; `None` for SD 1.x/2.x.
    pub xl: Option<SdxlText>,
    pub unet: UNet2DConditionModel,
    pub vae_config: AutoencoderKLConfig,
    /// The VAE's activations: f32 for an SDXL VAE that says `force_upcast` (it overflows f16,
    /// and diffusers' SDXL pipelines upcast it), else the model's.
    pub vae_dtype: DType,
    /// Kept in host memory and uploaded for each image it encodes (txt2img never needs it).
    pub vae_encoder: Held<VaeEncoder>,
    pub vae_decoder: VaeDecoder,
    pub schedule: NoiseScheduleConfig,
    pub precision: Precision,
    /// Conditionings made recently, reused by runs with the same prompts.
    pub text_cache: crate::text::TextCache,
}

async fn required<F: ModelFiles>(files: &F, path: &str) -> Result<Vec<u8>, PipelineError> {
    files.read(path).await?.ok_or_else(|| PipelineError::Files(format!("the model has no {path}")))
}

async fn text<F: ModelFiles>(files: &F, path: &str) -> Result<String, PipelineError> {
    String::from_utf8(required(files, path).await?)
        .map_err(|_| PipelineError::Files(format!("{path} is not UTF-8 text")))
}

/// Streams the first of `names` under `dir` that exists (full-precision files before .fp16
/// ones) through a [`Stager`]: packed, quantized (or taken from `cache`) and uploaded tensor by
/// tensor (`on_host`: packed matrices kept in host memory instead, [`Stager::keep_on_host`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn load_weights<F: ModelFiles, C: QuantCache>(
    gpu: &Gpu,
    files: &F,
    cache: &C,
    policy: QuantPolicy,
    dir: &str,
    names: &[&str],
    lora: Option<LoraMerge>,
    on_host: bool,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<WeightStore, PipelineError> {
    for name in names {
        let path = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
        let Some(len) = files.len(&path).await? else { continue };
        let source = files.identity(&path).await?;
        let mut stager = Stager::new(gpu, len, policy, &source);
        if let Some(lora) = lora {
            stager = stager.with_lora(lora);
        }
        if on_host {
            stager = stager.keep_on_host();
        }
        let mut done = 0;
        while done < len {
            let bytes = files.read_range(&path, done, STREAM_CHUNK.min(len - done)).await?;
            if bytes.is_empty() {
                return Err(PipelineError::Files(format!("{path} ended at {done} of {len} bytes")));
            }
            stager.push(&bytes, cache).await.map_err(|e| PipelineError::Files(format!("{path}: {e}")))?;
            done += bytes.len() as u64;
            progress(&path, done, len);
        }
        return stager.finish().map_err(|e| PipelineError::Files(format!("{path}: {e}")));
    }
    let place = if dir.is_empty() { "the folder".to_string() } else { format!("{dir}/") };
    Err(PipelineError::Files(format!("{place} has none of {}", names.join(", "))))
}

fn config_error(path: &str) -> impl Fn(darkroom_models::config::ConfigError) -> PipelineError + '_ {
    move |e| PipelineError::Files(format!("{path}: {e}"))
}

/// Pipeline classes this engine runs (model_index.json's `_class_name`); others are refused by
/// name before anything loads.
const PIPELINES: [&str; 3] =
    ["StableDiffusionPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionImg2ImgPipeline"];
const XL_PIPELINES: [&str; 3] =
    ["StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"];

/// The pipeline family model_index.json names (SD when there is no model_index.json: a folder
/// of SD components).
pub async fn family<F: ModelFiles>(files: &F) -> Result<Family, PipelineError> {
    let Some(index) = files.read("model_index.json").await? else { return Ok(Family::Sd) };
    let index: serde_json::Value =
        serde_json::from_slice(&index).map_err(|e| PipelineError::Files(format!("model_index.json: {e}")))?;
    let Some(class) = index.get("_class_name").and_then(|v| v.as_str()) else { return Ok(Family::Sd) };
    if PIPELINES.contains(&class) {
        return Ok(Family::Sd);
    }
    if XL_PIPELINES.contains(&class) {
        let set = |key: &str| {
            index
                .get(key)
                .is_some_and(|v| v.as_array().is_none_or(|a| a.first().is_some_and(|v| !v.is_null())))
        };
        // The refiner has only the second encoder and conditions on an aesthetic score.
        if index.get("requires_aesthetics_score").and_then(|v| v.as_bool()) == Some(true)
            || !set("text_encoder")
        {
            return Err(PipelineError::Files(format!(
                "an SDXL refiner ({class} without a first text encoder): not supported yet"
            )));
        }
        let force_zeros = index.get("force_zeros_for_empty_prompt").and_then(|v| v.as_bool()).unwrap_or(true);
        return Ok(Family::Sdxl { force_zeros_for_empty_prompt: force_zeros });
    }
    Err(PipelineError::Files(format!("a {class}: not supported yet")))
}

/// The LoRAs with LDM/SGM-named UNet modules (kohya's SDXL files) renamed for this model's UNet.
async fn diffusers_named<F: ModelFiles>(
    files: &F,
    loras: &[AppliedLora],
) -> Result<Vec<AppliedLora>, PipelineError> {
    if !loras.iter().any(|l| l.lora.has_ldm_unet_names()) {
        return Ok(loras.to_vec());
    }
    let cfg = UNet2DConditionConfig::from_json(&text(files, "unet/config.json").await?)
        .map_err(config_error("unet/config.json"))?;
    let attention = |types: &[String]| types.iter().map(|t| t.starts_with("CrossAttn")).collect();
    let layout = darkroom_weights::lora::UnetLayout {
        layers_per_block: cfg.layers_per_block,
        down_attention: attention(&cfg.down_block_types),
        up_attention: attention(&cfg.up_block_types),
    };
    loras
        .iter()
        .map(|l| {
            if !l.lora.has_ldm_unet_names() {
                return Ok(l.clone());
            }
            let renamed = l
                .lora
                .with_diffusers_unet_names(&layout)
                .map_err(|e| PipelineError::Input(format!("LoRA {}: {e}", l.name)))?;
            Ok(AppliedLora { lora: Arc::new(renamed), ..l.clone() })
        })
        .collect()
}

impl StableDiffusion {
    /// What a recipe is validated against, from the model's configs alone (before loading):
    /// an unsupported pipeline or UNet is refused here by name.
    pub async fn inspect<F: ModelFiles>(
        files: &F,
        name: &str,
    ) -> Result<crate::recipe::ModelInfo, PipelineError> {
        let family = family(files).await?;
        let unet = UNet2DConditionConfig::from_json(&text(files, "unet/config.json").await?)
            .map_err(config_error("unet/config.json"))?;
        let vae = AutoencoderKLConfig::from_json(&text(files, "vae/config.json").await?)
            .map_err(config_error("vae/config.json"))?;
        if (family != Family::Sd) != unet.text_time().is_some() {
            return Err(PipelineError::Files(format!(
                "model_index.json names {} pipeline but unet/config.json is {} UNet",
                if family == Family::Sd { "an SD" } else { "an SDXL" },
                if unet.text_time().is_some() { "an SDXL (text_time)" } else { "an SD" }
            )));
        }
        Ok(crate::recipe::ModelInfo {
            name: name.to_string(),
            inpainting: unet.in_channels == 9,
            size_multiple: vae.scale(),
            sdxl: family != Family::Sd,
        })
    }

    /// Loads every component; unused or missing tensors are errors (a checkpoint that does not
    /// fit the config must not half-load).
    /// `progress` sees (file, bytes read, file length) as weights stream in.
    pub async fn load<F: ModelFiles, C: QuantCache>(
        gpu: &Gpu,
        files: &F,
        cache: &C,
        name: &str,
        precision: Precision,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<StableDiffusion, PipelineError> {
        Self::load_with_loras(gpu, files, cache, name, precision, &[], progress).await
    }

    /// As [`StableDiffusion::load`], with LoRAs merged into the text encoder's and the UNet's
    /// weights as they load. A LoRA with layers the model lacks is an error (it is for another
    /// model family).
    pub async fn load_with_loras<F: ModelFiles, C: QuantCache>(
        gpu: &Gpu,
        files: &F,
        cache: &C,
        name: &str,
        precision: Precision,
        loras: &[AppliedLora],
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<StableDiffusion, PipelineError> {
        if precision.activations == DType::F16 && !gpu.capabilities().shader_f16 {
            return Err(PipelineError::Input(
                "f16 precision needs the adapter's shader-f16 feature, which this GPU lacks; use f32".into(),
            ));
        }
        let (dtype, policy) = (precision.activations, precision.weights);
        let info = StableDiffusion::inspect(files, name).await?;
        if !info.sdxl && loras.iter().any(|l| l.lora.is_sdxl()) {
            return Err(PipelineError::Input(darkroom_weights::lora::LoraError::Sdxl.to_string()));
        }
        let loras = diffusers_named(files, loras).await?;
        let merge = |component| {
            (!loras.is_empty()).then(|| {
                LoraMerge::new(
                    component,
                    loras.iter().map(|l| (l.lora.clone(), l.scale, l.id.clone())).collect(),
                )
            })
        };
        let (te_merge, unet_merge) = (merge(Component::TextEncoder), merge(Component::Unet));
        let tokenizer = load_tokenizer(files, "tokenizer").await?;

        let clip_config = ClipTextConfig::from_json(&text(files, "text_encoder/config.json").await?)
            .map_err(config_error("text_encoder/config.json"))?;
        let clip =
            load_text_encoder(gpu, files, cache, "text_encoder", clip_config, precision, te_merge, progress)
                .await?;

        let xl = match family(files).await? {
            Family::Sd => None,
            Family::Sdxl { force_zeros_for_empty_prompt } => {
                let config = ClipTextConfig::from_json(&text(files, "text_encoder_2/config.json").await?)
                    .map_err(config_error("text_encoder_2/config.json"))?;
                if config.projection_dim.is_none() {
                    return Err(PipelineError::Files(
                        "text_encoder_2/config.json has no projection_dim (SDXL's second encoder is a CLIPTextModelWithProjection)".into(),
                    ));
                }
                let merge = merge(Component::TextEncoder2);
                let clip = load_text_encoder(
                    gpu,
                    files,
                    cache,
                    "text_encoder_2",
                    config,
                    precision,
                    merge,
                    progress,
                )
                .await?;
                Some(SdxlText {
                    tokenizer: load_tokenizer(files, "tokenizer_2").await?,
                    clip,
                    force_zeros_for_empty_prompt,
                })
            }
        };

        let unet_config = UNet2DConditionConfig::from_json(&text(files, "unet/config.json").await?)
            .map_err(config_error("unet/config.json"))?;
        let diffusers = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];
        let store =
            load_weights(gpu, files, cache, policy, "unet", &diffusers, unet_merge.clone(), false, progress)
                .await?;
        let unet = UNet2DConditionModel::load(&store.root(gpu, dtype, policy), &unet_config)?;
        store.require_all_used()?;
        if let Some(merge) = &unet_merge {
            merge.require_all_applied()?;
        }
        drop(store);

        let vae_config = AutoencoderKLConfig::from_json(&text(files, "vae/config.json").await?)
            .map_err(config_error("vae/config.json"))?;
        // The VAE's matrices stay in host memory: the decoder is uploaded now and stays; the
        // encoder (img2img and inpainting only) is uploaded when an image is encoded.
        let store = load_weights(gpu, files, cache, policy, "vae", &diffusers, None, true, progress).await?;
        let vae_dtype = vae_dtype(xl.is_some(), &vae_config, dtype);
        let vae_decoder = VaeDecoder::load(&store.root(gpu, vae_dtype, policy), &vae_config)?;
        store.retain(|key| !key.starts_with("decoder.") && !key.starts_with("post_quant_conv."));
        let config = vae_config.clone();
        let build = move |vb: &darkroom_models::Vb| VaeEncoder::load(vb, &config);
        let vae_encoder = Held::load(gpu, store, (vae_dtype, policy), build, |_| false, true)?;

        let schedule = NoiseScheduleConfig::from_json(&text(files, "scheduler/scheduler_config.json").await?)
            .map_err(PipelineError::Files)?;
        let context_width =
            clip.config().hidden_size + xl.as_ref().map_or(0, |xl| xl.clip.config().hidden_size);
        if context_width != unet_config.cross_attention_dim {
            return Err(PipelineError::Files(format!(
                "the text encoders' width {context_width} does not match the UNet's cross-attention width {}",
                unet_config.cross_attention_dim
            )));
        }
        if let (Some(xl), Some((pooled, _))) = (&xl, unet_config.text_time()) {
            if xl.clip.config().projection_dim != Some(pooled) {
                return Err(PipelineError::Files(format!(
                    "text_encoder_2's projection ({:?} wide) does not fit the UNet's added conditioning ({pooled} wide)",
                    xl.clip.config().projection_dim
                )));
            }
        }
        debug_assert_eq!(info.sdxl, xl.is_some());
        Ok(StableDiffusion {
            name: name.to_string(),
            tokenizer,
            clip,
            xl,
            unet,
            vae_config,
            vae_dtype,
            vae_encoder,
            vae_decoder,
            schedule,
            precision,
            text_cache: Default::default(),
        })
    }

    /// `embeddings` laid out for this model's text encoders.
    pub fn vocabulary(&self, embeddings: &[crate::text::NamedEmbedding]) -> crate::text::Vocabulary {
        let first = self.clip.config();
        let encoders: Vec<(usize, Option<bool>)> = match &self.xl {
            Some(xl) => vec![(first.hidden_size, Some(false)), (xl.clip.config().hidden_size, Some(true))],
            None => vec![(first.hidden_size, None)],
        };
        crate::text::Vocabulary::new(embeddings, &encoders, first.vocab_size)
    }

    /// What a recipe is validated against.
    pub fn info(&self) -> crate::recipe::ModelInfo {
        crate::recipe::ModelInfo {
            name: self.name.clone(),
            inpainting: self.is_inpainting(),
            size_multiple: self.size_multiple(),
            sdxl: self.xl.is_some(),
        }
    }

    /// 9 input channels: latents, mask, masked-image latents (SD 1.5 inpainting and kin).
    pub fn is_inpainting(&self) -> bool {
        self.unet.config().in_channels == 9
    }

    /// What width and height must be multiples of: the VAE's factor (8 for SD), as diffusers
    /// and A1111 take — the UNet resizes to its skip connections where its own factor does not
    /// divide the latents.
    pub fn size_multiple(&self) -> usize {
        self.vae_config.scale()
    }
}
