//! Fused multi-head attention (self, cross, causal) with online softmax.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "attention.wgsl";
const BQ: usize = 64;
/// The kernel's private arrays hold one query row of at most this many values.
pub const MAX_HEAD_DIM: usize = 160;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    nq: u32,
    nk: u32,
    heads: u32,
    head_dim: u32,
    q_stride: u32,
    kv_stride: u32,
    scale: f32,
    block_keys: u32,
}

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| [Variant::new(FILE, act, &[]), Variant::new(FILE, act, &["CAUSAL"])])
        .collect()
}

/// softmax(Q·Kᵀ / √D) · V per head. `q` [B, Nq, H·D], `k` and `v` [B, Nk, H·D] with the heads
/// side by side, as projections produce them. Returns [B, Nq, H·D]. Heads wider than
/// [`MAX_HEAD_DIM`] (single-head only, as in the VAE) take a materialised path.
pub fn attention(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Tensor, GpuError> {
    let error = |detail: String| GpuError::Shape { op: "attention", detail };
    let [batch, nq, width] = *q.shape() else {
        return Err(error(format!("q must be [B, N, H·D], got {:?}", q.shape())));
    };
    let [kb, nk, kw] = *k.shape() else {
        return Err(error(format!("k must be [B, N, H·D], got {:?}", k.shape())));
    };
    if v.shape() != k.shape() || kb != batch || kw != width {
        return Err(error(format!("q {:?}, k {:?}, v {:?} do not agree", q.shape(), k.shape(), v.shape())));
    }
    if heads == 0 || width % heads != 0 {
        return Err(error(format!("{width} features do not split into {heads} heads")));
    }
    if q.dtype() != k.dtype() || k.dtype() != v.dtype() {
        return Err(error("q, k and v must share a dtype".into()));
    }
    let head_dim = width / heads;
    if head_dim > MAX_HEAD_DIM {
        if heads != 1 || causal {
            return Err(error(format!(
                "head size {head_dim} exceeds the fused kernel's {MAX_HEAD_DIM}; wider heads are supported for single-head, unmasked attention only"
            )));
        }
        return attention_materialized(gpu, q, k, v, head_dim);
    }
    if causal && nq != nk {
        return Err(error(format!("causal attention needs as many keys as queries ({nq} vs {nk})")));
    }
    let out = Tensor::empty(gpu, q.shape(), q.dtype());
    if nq == 0 || batch == 0 {
        return Ok(out);
    }
    if nk == 0 {
        return Err(error("attention over zero keys".into()));
    }
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| error(format!("{v} exceeds 32 bits")));
    let params = Params {
        nq: to_u32(nq)?,
        nk: to_u32(nk)?,
        heads: to_u32(heads)?,
        head_dim: to_u32(head_dim)?,
        q_stride: to_u32(width)?,
        kv_stride: to_u32(width)?,
        scale: 1.0 / (head_dim as f32).sqrt(),
        // Keys per workgroup-memory tile: 2048 floats each for K and V (attention.wgsl).
        block_keys: to_u32((2048 / head_dim.max(1)).min(64))?,
    };
    let defines: &[&str] = if causal { &["CAUSAL"] } else { &[] };
    let pipeline = gpu.pipeline(&Variant::new(FILE, q.dtype(), defines))?;
    let uniform = gpu.uniform(&params);
    gpu.dispatch(
        &pipeline,
        &[
            (0, uniform.as_entire_binding()),
            (1, q.binding()),
            (2, k.binding()),
            (3, v.binding()),
            (4, out.binding()),
        ],
        [to_u32(nq.div_ceil(BQ))?, to_u32(batch * heads)?, 1],
    )?;
    Ok(out)
}

const SOFTMAX_FILE: &str = "softmax.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    row_len: u32,
    rows: u32,
    rows_per_grid_row: u32,
    scale: f32,
}

pub(crate) fn softmax_variants() -> Vec<Variant> {
    [DType::F32, DType::F16].into_iter().map(|act| Variant::new(SOFTMAX_FILE, act, &[])).collect()
}

/// softmax(scale · x) over the last dimension.
pub fn softmax(gpu: &Gpu, x: &Tensor, scale: f32) -> Result<Tensor, GpuError> {
    let Some(&row_len) = x.shape().last() else {
        return Err(GpuError::Shape { op: "softmax", detail: "scalar input".into() });
    };
    let out = Tensor::empty(gpu, x.shape(), x.dtype());
    let rows = x.len() / row_len.max(1);
    if rows == 0 || row_len == 0 {
        return Ok(out);
    }
    let per_row = rows.min(gpu.limits().max_compute_workgroups_per_dimension as usize);
    let to_u32 = |v: usize| {
        u32::try_from(v)
            .map_err(|_| GpuError::Shape { op: "softmax", detail: format!("{v} exceeds 32 bits") })
    };
    let params = SoftmaxParams {
        row_len: to_u32(row_len)?,
        rows: to_u32(rows)?,
        rows_per_grid_row: to_u32(per_row)?,
        scale,
    };
    let pipeline = gpu.pipeline(&Variant::new(SOFTMAX_FILE, x.dtype(), &[]))?;
    let uniform = gpu.uniform(&params);
    gpu.dispatch(
        &pipeline,
        &[(0, uniform.as_entire_binding()), (1, x.binding()), (2, out.binding())],
        [to_u32(per_row)?, to_u32(rows.div_ceil(per_row))?, 1],
    )?;
    Ok(out)
}

/// Single-head attention with the scores materialised: Q·Kᵀ by the tiled matmul, a row softmax,
/// then ·V. For head sizes beyond the fused kernel (the VAE's 512-wide head); the scores need
/// Nq·Nk values within one binding.
fn attention_materialized(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    head_dim: usize,
) -> Result<Tensor, GpuError> {
    let (nq, nk) = (q.shape()[1], k.shape()[1]);
    let bytes = (nq * nk * q.dtype().size_bytes()) as u64;
    let limit = gpu.limits().max_storage_buffer_binding_size;
    if bytes > limit {
        return Err(GpuError::LimitTooSmall {
            limit: "maxStorageBufferBindingSize",
            have: limit,
            need: bytes,
            needed_for:
                "the attention scores of a head wider than 160 at this image size; use a smaller image",
        });
    }
    let scores = crate::ops::matmul(gpu, q, k, true)?; // [B, Nq, Nk]
    let weights = softmax(gpu, &scores, 1.0 / (head_dim as f32).sqrt())?;
    crate::ops::matmul(gpu, &weights, v, false) // [B, Nq, D]
}
