//! Loading weights by name: a prefix builder over a safetensors file (`vb.pp("down_blocks")
//! .pp(0)`), so modules load the keys diffusers writes and the code diffs against diffusers line
//! by line. Every key read is recorded, so a test can require a file to be consumed whole.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::sync::{Arc, Mutex};

use darkroom_gpu::ops::{Conv2d, Padding};
use darkroom_gpu::reference::TestRng;
use darkroom_gpu::{DType, Gpu, GpuError, PackedWeight, Tensor, Weight, WeightFormat};
use darkroom_weights::lora::{module_name, Component, Lora};
use darkroom_weights::safetensors::{decode_f32, Dtype, Header, SafetensorsStream, TensorInfo};
use darkroom_weights::{SafetensorsError, SafetensorsFile};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("the weights have no tensor `{0}`: is this the right model file?")]
    Missing(String),
    #[error("tensor `{key}` has shape {found:?}, the model expects {expected:?}: the file is for a different model or configuration")]
    Shape { key: String, expected: Vec<usize>, found: Vec<u64> },
    #[error("the weights hold tensors this model does not use: {0:?}")]
    Unused(Vec<String>),
    #[error(transparent)]
    File(#[from] SafetensorsError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{0}")]
    Input(String),
}

/// Which format each kind of weight is stored in on the GPU. Norms and biases always stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantPolicy {
    pub linear: WeightFormat,
    pub conv: WeightFormat,
}

impl QuantPolicy {
    pub const F32: QuantPolicy = QuantPolicy { linear: WeightFormat::F32, conv: WeightFormat::F32 };
    pub const F16: QuantPolicy = QuantPolicy { linear: WeightFormat::F16, conv: WeightFormat::F16 };
    pub const Q8: QuantPolicy = QuantPolicy { linear: WeightFormat::Q8, conv: WeightFormat::Q8 };

    /// The policy for text encoders: never coarser than int8. A 4-bit UNet costs little
    /// quality; 4-bit text encoders blur what the prompt says (and are a small share of the
    /// weights), so with 4-bit matmuls they stay int8.
    pub fn for_text_encoder(self) -> QuantPolicy {
        let floor = |f: WeightFormat| if f == WeightFormat::Q4 { WeightFormat::Q8 } else { f };
        QuantPolicy { linear: floor(self.linear), conv: floor(self.conv) }
    }
}

/// Marks a quantized-cache key whose weight has LoRAs merged in (a cache may decline those:
/// each LoRA and scale makes another copy of the layers it changes).
pub const MERGED_KEY_MARK: char = '+';

/// Whether a quantized-cache key holds a LoRA-merged weight.
pub fn is_merged_key(key: &str) -> bool {
    key.contains(MERGED_KEY_MARK)
}

/// LoRAs merged into one component's matrices as a [`Stager`] packs them (W += scale · alpha /
/// rank · up · down), with the modules applied so far: a LoRA module no weight took is for another
/// model, and loading says so instead of silently ignoring it.
#[derive(Clone)]
pub struct LoraMerge {
    component: Component,
    /// (LoRA, scale, an identity for cache keys: its content hash).
    loras: Vec<(Arc<Lora>, f32, String)>,
    applied: Arc<Mutex<BTreeSet<String>>>,
}

impl LoraMerge {
    pub fn new(component: Component, loras: Vec<(Arc<Lora>, f32, String)>) -> LoraMerge {
        LoraMerge { component, loras, applied: Arc::default() }
    }

    /// Adds every LoRA's update for the weight `key` ([rows, cols]) to `values`.
    fn apply(&self, key: &str, values: &mut [f32], rows: usize, cols: usize) -> Result<(), ModelError> {
        let module = module_name(self.component, key);
        for (lora, scale, _) in &self.loras {
            if let Some(update) = lora.get(&module) {
                update
                    .merge_into(values, rows, cols, *scale)
                    .map_err(|e| ModelError::Input(format!("{module}: {e}")))?;
                self.applied.lock().unwrap_or_else(|p| p.into_inner()).insert(module.clone());
            }
        }
        Ok(())
    }

    /// Records that `key`'s LoRA modules were merged (a cached, already merged weight).
    fn record(&self, key: &str) {
        let module = module_name(self.component, key);
        if self.loras.iter().any(|(lora, _, _)| lora.get(&module).is_some()) {
            self.applied.lock().unwrap_or_else(|p| p.into_inner()).insert(module);
        }
    }

    /// What the weight `key` depends on besides the file: the identity and scale of each LoRA
    /// that changes it (nothing for weights no LoRA touches, which share the base model's
    /// cache entries). Always starts with [`MERGED_KEY_MARK`] when not empty.
    fn identity(&self, key: &str) -> String {
        let module = module_name(self.component, key);
        self.loras
            .iter()
            .filter(|(lora, _, _)| lora.get(&module).is_some())
            .map(|(_, scale, id)| format!("{MERGED_KEY_MARK}{id}@{scale}"))
            .collect()
    }

    /// Fails naming this component's LoRA modules that no weight took.
    pub fn require_all_applied(&self) -> Result<(), ModelError> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = module_name(self.component, "");
        let missing: Vec<&String> = self
            .loras
            .iter()
            .flat_map(|(lora, _, _)| lora.updates.keys())
            .filter(|m| m.starts_with(prefix.as_str()) && !applied.contains(*m))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ModelError::Input(format!(
            "the LoRA changes {} layers this model does not have (e.g. {}): it is for another model family",
            missing.len(),
            missing[0]
        )))
    }
}

/// A safetensors file being loaded, with the keys read so far: either a whole file in memory,
/// or one staged as it streamed in ([`Stager`]: matrices already packed and on the GPU, the
/// rest kept as bytes).
pub struct WeightStore {
    backing: Backing,
    used: Mutex<BTreeSet<String>>,
}

enum Backing {
    Whole(SafetensorsFile),
    Staged {
        header: Header,
        tensors: Mutex<HashMap<String, Staged>>,
    },
    /// Any key, with the shape the module asks for: seeded values (benchmarks at real model
    /// shapes without the files).
    Random {
        seed: u32,
    },
}

/// The header of a [`Backing::Random`] store: empty (every key is answered on request).
static EMPTY_HEADER: std::sync::LazyLock<Header> = std::sync::LazyLock::new(Header::default);

enum Staged {
    Raw(TensorInfo, Vec<u8>),
    Matrix(Weight),
    /// Packed and kept in host memory ([`Stager::keep_on_host`]): uploaded each time a module
    /// loads it.
    Packed(PackedWeight),
}

impl WeightStore {
    pub fn new(file: SafetensorsFile) -> WeightStore {
        WeightStore { backing: Backing::Whole(file), used: Mutex::new(BTreeSet::new()) }
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<WeightStore, ModelError> {
        Ok(WeightStore::new(SafetensorsFile::from_bytes(bytes)?))
    }

    /// A store that answers every key with seeded values of the requested shape, scaled like
    /// an initialised network (norm gains 1, biases and offsets 0, matrices uniform in
    /// ±1/sqrt(fan-in)), so activations stay finite at any depth. For benchmarks: timing and
    /// memory at a real model's shapes without its files.
    pub fn random(seed: u32) -> WeightStore {
        WeightStore { backing: Backing::Random { seed }, used: Mutex::new(BTreeSet::new()) }
    }

    pub fn header(&self) -> &Header {
        match &self.backing {
            Backing::Whole(file) => &file.header,
            Backing::Staged { header, .. } => header,
            Backing::Random { .. } => &EMPTY_HEADER,
        }
    }

    /// Keys of the file no module has read.
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.header().tensors.iter().map(|t| t.name.clone()).filter(|k| !used.contains(k)).collect()
    }

    /// Fails naming the unused keys, if any: a model that "loads" but ignores weights is wrong.
    pub fn require_all_used(&self) -> Result<(), ModelError> {
        let unused = self.unused_keys();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Unused(unused))
        }
    }

    pub fn root<'a>(&'a self, gpu: &'a Gpu, dtype: DType, policy: QuantPolicy) -> Vb<'a> {
        Vb { store: self, gpu, prefix: String::new(), dtype, policy }
    }

    fn mark_used(&self, key: &str) {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string());
    }

    /// The tensor's values as f32 (not for a staged matrix: that lives on the GPU).
    fn values_of(&self, key: &str, info: &TensorInfo) -> Result<Vec<f32>, ModelError> {
        match &self.backing {
            Backing::Whole(file) => Ok(file.to_f32(info)?),
            Backing::Staged { tensors, .. } => {
                match tensors.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
                    Some(Staged::Raw(info, bytes)) => Ok(decode_f32(info, bytes)?),
                    Some(Staged::Matrix(_) | Staged::Packed(_)) => Err(ModelError::Input(format!(
                        "`{key}` was streamed to the GPU as a weight matrix but is read as values \
                     (staging rule: see loader::is_matrix)"
                    ))),
                    None => Err(ModelError::Missing(key.to_string())),
                }
            }
            Backing::Random { seed } => Ok(random_values(*seed, key, &info.shape)),
        }
    }

    /// A staged matrix: taken out of the store when it is on the GPU (each such weight is
    /// consumed once), uploaded from its host copy when it was kept on the host.
    fn take_matrix(&self, gpu: &Gpu, key: &str) -> Result<Option<Weight>, ModelError> {
        let Backing::Staged { tensors, .. } = &self.backing else { return Ok(None) };
        let mut map = tensors.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(key) {
            Some(Staged::Matrix(weight)) => Ok(Some(weight)),
            Some(Staged::Packed(packed)) => {
                let weight = Weight::upload(gpu, &packed, None);
                map.insert(key.to_string(), Staged::Packed(packed));
                Ok(Some(weight?))
            }
            Some(other) => {
                map.insert(key.to_string(), other);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Drops the staged tensors whose names `keep` refuses (their keys stay in the header and
    /// count as used if they were): what a module built from this store no longer needs.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Backing::Staged { tensors, .. } = &self.backing {
            tensors.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| keep(k));
        }
    }
}

/// Seeded values for `key` (the seed mixed with the key's bytes, so each tensor differs).
fn random_values(seed: u32, key: &str, shape: &[u64]) -> Vec<f32> {
    let len = shape.iter().product::<u64>() as usize;
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let parent = key.rsplit('.').nth(1).unwrap_or("");
    let is_norm = parent.contains("norm") || parent.starts_with("ln") || parent.contains("layer_norm");
    if leaf == "bias" || (is_norm && leaf != "weight") {
        return vec![0.0; len];
    }
    if is_norm && shape.len() == 1 {
        return vec![1.0; len];
    }
    let fan_in = match shape {
        [_, rest @ ..] if !rest.is_empty() => rest.iter().product::<u64>(),
        _ => shape.first().copied().unwrap_or(1),
    }
    .max(1);
    let scale = (1.0 / fan_in as f64).sqrt() as f32;
    let mut rng = TestRng::new(key.bytes().fold(seed ^ 0x9e37_79b9, |h, b| h.rotate_left(5) ^ u32::from(b)));
    (0..len).map(|_| rng.next_f32() * scale).collect()
}

/// Whether a streamed tensor is a weight matrix to pack and upload at once (2-D linear and
/// 4-D conv weights) rather than bytes kept for the module to read (norms, biases, and CLIP's
/// embedding tables, which the text encoder reads as values).
pub fn is_matrix(name: &str, shape: &[u64]) -> bool {
    (shape.len() == 2 || shape.len() == 4) && !name.ends_with("_embedding.weight")
}

/// Where quantized weights are kept between visits, keyed by the source file's identity, the
/// tensor, the format and [`darkroom_gpu::quant::PACKED_FORMAT_VERSION`].
#[allow(async_fn_in_trait)]
pub trait QuantCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    async fn put(&self, key: &str, bytes: Vec<u8>);
}

/// No cache: quantize every time.
pub struct NoCache;

impl QuantCache for NoCache {
    async fn get(&self, _key: &str) -> Option<Vec<u8>> {
        None
    }
    async fn put(&self, _key: &str, _bytes: Vec<u8>) {}
}

/// An in-memory cache (tests, and a session's repeated loads).
#[derive(Default)]
pub struct MemoryCache(pub Mutex<HashMap<String, Vec<u8>>>);

impl QuantCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), bytes);
    }
}

/// What a staged load did, for progress and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageStats {
    pub tensors: usize,
    /// Matrices quantized here (int8 / 4-bit) …
    pub quantized: usize,
    /// … and matrices whose quantized form came from the cache instead.
    pub from_cache: usize,
    pub bytes: u64,
}

/// Loads a safetensors file as its bytes arrive: each weight matrix is packed in the policy's
/// format (quantized, or taken from the cache) and uploaded as soon as it is complete, so memory
/// holds one tensor at a time plus the small ones. `finish` gives the [`WeightStore`] modules
/// load from as usual.
pub struct Stager<'a> {
    gpu: &'a Gpu,
    policy: QuantPolicy,
    /// Identifies the source file in cache keys (its sha256, or the manifest's id + path).
    source: String,
    stream: SafetensorsStream,
    tensors: HashMap<String, Staged>,
    lora: Option<LoraMerge>,
    /// Keep packed matrices in host memory instead of uploading them ([`Stager::keep_on_host`]).
    on_host: bool,
    pub stats: StageStats,
}

impl<'a> Stager<'a> {
    pub fn new(gpu: &'a Gpu, file_len: u64, policy: QuantPolicy, source: &str) -> Stager<'a> {
        Stager {
            gpu,
            policy,
            source: source.to_string(),
            stream: SafetensorsStream::new(file_len),
            tensors: HashMap::new(),
            lora: None,
            on_host: false,
            stats: StageStats::default(),
        }
    }

    /// Merges `lora` into each matrix before it is packed (and into the cache keys).
    pub fn with_lora(mut self, lora: LoraMerge) -> Stager<'a> {
        self.lora = Some(lora);
        self
    }

    /// Keeps every packed matrix in host memory rather than on the GPU: the store's modules
    /// upload them when they load and give them back when dropped, so a module needed briefly
    /// (a text encoder between prompts) can leave the GPU and come back without the file.
    pub fn keep_on_host(mut self) -> Stager<'a> {
        self.on_host = true;
        self
    }

    /// Feeds the file's next bytes.
    pub async fn push<C: QuantCache>(&mut self, bytes: &[u8], cache: &C) -> Result<(), ModelError> {
        self.stats.bytes += bytes.len() as u64;
        for (info, data) in self.stream.push(bytes)? {
            self.stats.tensors += 1;
            if !is_matrix(&info.name, &info.shape) {
                self.tensors.insert(info.name.clone(), Staged::Raw(info, data));
                continue;
            }
            let rows = info.shape[0] as usize;
            let cols = info.shape[1..].iter().product::<u64>() as usize;
            let format = if info.shape.len() == 2 { self.policy.linear } else { self.policy.conv };
            let quantized = matches!(format, WeightFormat::Q8 | WeightFormat::Q4);
            let merged = self.lora.as_ref().map(|l| l.identity(&info.name)).unwrap_or_default();
            let key = format!(
                "{}{merged}/{}/{format:?}/v{}",
                self.source,
                info.name,
                darkroom_gpu::quant::PACKED_FORMAT_VERSION
            );
            let cached = if quantized {
                cache.get(&key).await.and_then(|b| PackedWeight::from_bytes(&b))
            } else {
                None
            };
            let packed = match cached.filter(|p| p.rows == rows && p.cols == cols && p.format == format) {
                Some(p) => {
                    self.stats.from_cache += 1;
                    if let Some(lora) = &self.lora {
                        lora.record(&info.name);
                    }
                    p
                }
                None => {
                    let mut values = decode_f32(&info, &data)?;
                    if let Some(lora) = &self.lora {
                        lora.apply(&info.name, &mut values, rows, cols)?;
                    }
                    let p = PackedWeight::pack(&values, rows, cols, format);
                    if quantized {
                        self.stats.quantized += 1;
                        cache.put(&key, p.to_bytes()).await;
                    }
                    p
                }
            };
            drop(data);
            let staged = if self.on_host {
                Staged::Packed(packed)
            } else {
                Staged::Matrix(Weight::upload(self.gpu, &packed, None)?)
            };
            self.tensors.insert(info.name, staged);
        }
        Ok(())
    }

    /// The staged file, once every byte has arrived.
    pub fn finish(self) -> Result<WeightStore, ModelError> {
        if !self.stream.is_complete() {
            return Err(ModelError::Input(format!(
                "the weights file ended early ({} bytes arrived): the download is incomplete",
                self.stats.bytes
            )));
        }
        let header = self.stream.header().cloned().expect("complete streams have a header");
        Ok(WeightStore {
            backing: Backing::Staged { header, tensors: Mutex::new(self.tensors) },
            used: Mutex::new(BTreeSet::new()),
        })
    }
}

/// The prefix builder: a position in the weight names, with the device, activation type and
/// quantization policy to load with.
#[derive(Clone)]
pub struct Vb<'a> {
    store: &'a WeightStore,
    pub gpu: &'a Gpu,
    prefix: String,
    pub dtype: DType,
    pub policy: QuantPolicy,
}

impl<'a> Vb<'a> {
    /// One level down: `vb.pp("conv").pp(0)` → `conv.0.`.
    pub fn pp(&self, name: impl Display) -> Vb<'a> {
        let mut next = self.clone();
        next.prefix = format!("{}{name}.", self.prefix);
        next
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn contains(&self, name: &str) -> bool {
        matches!(self.store.backing, Backing::Random { .. })
            || self.store.header().get(&self.key(name)).is_some()
    }

    /// The header entry of `name`, checked against `shape`.
    fn checked(&self, name: &str, shape: &[usize]) -> Result<(String, TensorInfo), ModelError> {
        let key = self.key(name);
        if let Backing::Random { .. } = self.store.backing {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let info = TensorInfo { name: key.clone(), dtype: Dtype::F32, shape, start: 0, end: 0 };
            return Ok((key, info));
        }
        let info = self.store.header().get(&key).ok_or_else(|| ModelError::Missing(key.clone()))?;
        if info.shape.len() != shape.len() || info.shape.iter().zip(shape).any(|(&a, &b)| a as usize != b) {
            return Err(ModelError::Shape { key, expected: shape.to_vec(), found: info.shape.clone() });
        }
        Ok((key, info.clone()))
    }

    /// The values of `name`, which must have `shape`, as f32; marks the key used.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (key, info) = self.checked(name, shape)?;
        let values = self.store.values_of(&key, &info)?;
        self.store.mark_used(&key);
        Ok(values)
    }

    /// A weight matrix: the staged one (already on the GPU) or packed now from the file.
    fn matrix(
        &self,
        shape: &[usize],
        rows: usize,
        cols: usize,
        format: WeightFormat,
        bias: bool,
    ) -> Result<Weight, ModelError> {
        let (key, _) = self.checked("weight", shape)?;
        let b = if bias { Some(self.values("bias", &[rows])?) } else { None };
        if let Some(mut weight) = self.store.take_matrix(self.gpu, &key)? {
            self.store.mark_used(&key);
            if let Some(b) = &b {
                weight.set_bias(self.gpu, b)?;
            }
            return Ok(weight);
        }
        let w = self.values("weight", shape)?;
        Ok(Weight::from_f32(self.gpu, rows, cols, &w, b.as_deref(), format)?)
    }

    /// An f32 vector (norm gains and offsets) on the GPU.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_f32(self.gpu, &[len], &self.values(name, &[len])?, DType::F32)?)
    }

    /// `weight` [out, in] and, with `bias`, `bias` [out], under this prefix.
    pub fn linear(&self, out: usize, inp: usize, bias: bool) -> Result<Weight, ModelError> {
        self.matrix(&[out, inp], out, inp, self.policy.linear, bias)
    }

    /// A conv layer's `weight` [out, in, k, k] (and `bias` [out]) under this prefix.
    pub fn conv(&self, out: usize, inp: usize, k: usize, bias: bool) -> Result<Weight, ModelError> {
        self.matrix(&[out, inp, k, k], out, inp * k * k, self.policy.conv, bias)
    }
}

/// A conv layer: its weight and geometry.
pub struct ConvLayer {
    pub weight: Weight,
    pub geometry: Conv2d,
}

impl ConvLayer {
    /// kxk, padding k/2, the given stride.
    pub fn load(
        vb: &Vb,
        out: usize,
        inp: usize,
        k: usize,
        stride: usize,
        bias: bool,
    ) -> Result<ConvLayer, ModelError> {
        Ok(ConvLayer {
            weight: vb.conv(out, inp, k, bias)?,
            geometry: Conv2d { kernel: (k, k), stride, padding: Padding::same(k / 2) },
        })
    }

    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Tensor, GpuError> {
        darkroom_gpu::ops::conv2d_fused(gpu, x, &self.weight, self.geometry, residual, relu)
    }
}
