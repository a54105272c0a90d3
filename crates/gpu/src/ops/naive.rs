//! Plain one-invocation-per-output kernels (naive.wgsl), f32 only: the peers that benchmarks
//! measure the tiled kernels against. Tested against the same CPU references.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops::elementwise::{dispatch_map, grid};
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "naive.wgsl";

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    row_stride: u32,
    p: [u32; 4],
    stride: u32,
    pad: u32,
    _pad: [u32; 2],
}

pub(crate) fn variants() -> Vec<Variant> {
    ["MATMUL", "CONV", "ATTENTION"].iter().map(|d| Variant::new(FILE, DType::F32, &[d])).collect()
}

fn error(detail: String) -> GpuError {
    GpuError::Shape { op: "naive", detail }
}

fn check_f32(tensors: &[&Tensor]) -> Result<(), GpuError> {
    match tensors.iter().find(|t| t.dtype() != DType::F32) {
        Some(t) => Err(error(format!("naive kernels take f32 tensors, got {t:?}"))),
        None => Ok(()),
    }
}

fn to_u32(v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| error(format!("{v} exceeds 32 bits")))
}

fn run(
    gpu: &Gpu,
    define: &'static str,
    mut params: Params,
    inputs: &[&Tensor],
    out: &Tensor,
) -> Result<(), GpuError> {
    let (groups, row_stride) = grid(gpu, out.len().max(1))?;
    params.row_stride = row_stride;
    dispatch_map(gpu, &Variant::new(FILE, DType::F32, &[define]), &params, inputs, out, groups)
}

/// `x` [M, K] · `w`ᵀ with `w` [N, K] → [M, N].
pub fn matmul(gpu: &Gpu, x: &Tensor, w: &Tensor) -> Result<Tensor, GpuError> {
    check_f32(&[x, w])?;
    let (&[m, k], &[n, k2]) = (x.shape(), w.shape()) else {
        return Err(error(format!(
            "matmul needs [M, K] and [N, K], got {:?} and {:?}",
            x.shape(),
            w.shape()
        )));
    };
    if k != k2 {
        return Err(error(format!("inner sizes differ: {k} and {k2}")));
    }
    let out = Tensor::empty(gpu, &[m, n], DType::F32);
    let params = Params { m: to_u32(m)?, n: to_u32(n)?, k: to_u32(k)?, ..Default::default() };
    run(gpu, "MATMUL", params, &[x, w], &out)?;
    Ok(out)
}

/// Square-kernel conv2d of one image `x` [Cin, H, W] with `w` [Cout, Cin·ks·ks], symmetric
/// padding → [Cout, OH, OW].
pub fn conv2d(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<Tensor, GpuError> {
    check_f32(&[x, w])?;
    let (&[cin, h, wd], &[cout, k]) = (x.shape(), w.shape()) else {
        return Err(error(format!(
            "conv2d needs [Cin, H, W] and [Cout, K], got {:?} and {:?}",
            x.shape(),
            w.shape()
        )));
    };
    if k != cin * kernel * kernel || stride == 0 || h + 2 * pad < kernel || wd + 2 * pad < kernel {
        return Err(error(format!("weight {:?} / geometry does not fit input {:?}", w.shape(), x.shape())));
    }
    let (oh, ow) = ((h + 2 * pad - kernel) / stride + 1, (wd + 2 * pad - kernel) / stride + 1);
    let out = Tensor::empty(gpu, &[cout, oh, ow], DType::F32);
    let params = Params {
        m: to_u32(oh * ow)?,
        n: to_u32(cout)?,
        k: to_u32(k)?,
        p: [to_u32(h)?, to_u32(wd)?, to_u32(ow)?, to_u32(kernel)?],
        stride: to_u32(stride)?,
        pad: to_u32(pad)?,
        ..Default::default()
    };
    run(gpu, "CONV", params, &[x, w], &out)?;
    Ok(out)
}

/// Attention of `q` [Nq, H·D] over `k`, `v` [Nk, H·D] → [Nq, H·D], no mask.
pub fn attention(gpu: &Gpu, q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor, GpuError> {
    check_f32(&[q, k, v])?;
    let (&[nq, width], &[nk, kw]) = (q.shape(), k.shape()) else {
        return Err(error(format!(
            "attention needs [N, H·D] tensors, got {:?} and {:?}",
            q.shape(),
            k.shape()
        )));
    };
    if kw != width || v.shape() != k.shape() || heads == 0 || width % heads != 0 {
        return Err(error(format!(
            "q {:?}, k {:?}, v {:?} with {heads} heads do not agree",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let head_dim = width / heads;
    let out = Tensor::empty(gpu, &[nq, width], DType::F32);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let params = Params {
        m: to_u32(nq)?,
        n: to_u32(heads)?,
        k: to_u32(head_dim)?,
        p: [to_u32(nk)?, scale.to_bits(), 0, 0],
        ..Default::default()
    };
    run(gpu, "ATTENTION", params, &[q, k, v], &out)?;
    Ok(out)
}
