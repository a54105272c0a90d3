//! Loading weights by name: a prefix builder over a safetensors file (`vb.pp("down_blocks")
//! .pp(0)`), so modules load the keys diffusers writes and the code diffs against diffusers line
//! by line. Every key read is recorded, so a test can require a file to be consumed whole.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::sync::Mutex;

use darkroom_gpu::ops::{Conv2d, Padding};
use darkroom_gpu::{DType, Gpu, GpuError, Tensor, Weight, WeightFormat};
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
}

/// A safetensors file being loaded, with the keys read so far.
pub struct WeightStore {
    file: SafetensorsFile,
    used: Mutex<BTreeSet<String>>,
}

impl WeightStore {
    pub fn new(file: SafetensorsFile) -> WeightStore {
        WeightStore { file, used: Mutex::new(BTreeSet::new()) }
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<WeightStore, ModelError> {
        Ok(WeightStore::new(SafetensorsFile::from_bytes(bytes)?))
    }

    /// Keys of the file no module has read.
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.file.header.tensors.iter().map(|t| t.name.clone()).filter(|k| !used.contains(k)).collect()
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
        self.store.file.header.get(&self.key(name)).is_some()
    }

    /// The values of `name`, which must have `shape`, as f32; marks the key used.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let key = self.key(name);
        let info = self.store.file.header.get(&key).ok_or_else(|| ModelError::Missing(key.clone()))?;
        if info.shape.len() != shape.len() || info.shape.iter().zip(shape).any(|(&a, &b)| a as usize != b) {
            return Err(ModelError::Shape { key, expected: shape.to_vec(), found: info.shape.clone() });
        }
        let values = self.store.file.to_f32(info)?;
        self.store.used.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        Ok(values)
    }

    /// An f32 vector (norm gains and offsets) on the GPU.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor, ModelError> {
        Ok(Tensor::from_f32(self.gpu, &[len], &self.values(name, &[len])?, DType::F32)?)
    }

    /// `weight` [out, in] and, with `bias`, `bias` [out], under this prefix.
    pub fn linear(&self, out: usize, inp: usize, bias: bool) -> Result<Weight, ModelError> {
        let w = self.values("weight", &[out, inp])?;
        let b = if bias { Some(self.values("bias", &[out])?) } else { None };
        Ok(Weight::from_f32(self.gpu, out, inp, &w, b.as_deref(), self.policy.linear)?)
    }

    /// A conv layer's `weight` [out, in, k, k] (and `bias` [out]) under this prefix.
    pub fn conv(&self, out: usize, inp: usize, k: usize, bias: bool) -> Result<Weight, ModelError> {
        let w = self.values("weight", &[out, inp, k, k])?;
        let b = if bias { Some(self.values("bias", &[out])?) } else { None };
        Ok(Weight::from_f32(self.gpu, out, inp * k * k, &w, b.as_deref(), self.policy.conv)?)
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
