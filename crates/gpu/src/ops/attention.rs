//! Fused multi-head attention (self, cross, causal) with online softmax.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "attention.wgsl";
const BQ: usize = 32;
/// Output columns one workgroup of the tiled kernel covers at most: 160 (`COLS` = 10) for the
/// heads of SD's UNets and text encoders; heads wider than that (the VAE's single 512-wide head)
/// take up to 256 per workgroup (`COLS` = 16) and split the rest across workgroups, each of
/// which recomputes the scores, so fewer splits save work.
const MAX_CHUNK: usize = 160;
const MAX_WIDE_CHUNK: usize = 256;

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
    /// The row kernel's keys per workgroup-memory tile; unused by the tiled kernel.
    block_keys: u32,
}

const COLS: [&str; 16] = [
    "COLS=1", "COLS=2", "COLS=3", "COLS=4", "COLS=5", "COLS=6", "COLS=7", "COLS=8", "COLS=9", "COLS=10",
    "COLS=11", "COLS=12", "COLS=13", "COLS=14", "COLS=15", "COLS=16",
];

/// The kernel's compile-time sizes for a head of `head_dim`: (output columns per invocation,
/// keys of V staged at once, workgroups across the columns). V's staging holds 1664 floats.
fn tiling(head_dim: usize) -> (usize, &'static str, usize) {
    let widest = if head_dim > MAX_CHUNK { MAX_WIDE_CHUNK } else { MAX_CHUNK };
    let chunks = head_dim.div_ceil(widest).max(1);
    let cols = head_dim.div_ceil(chunks).div_ceil(16).max(1);
    let vk = match cols {
        ..=3 => "VK=32",
        4..=6 => "VK=16",
        7..=13 => "VK=8",
        _ => "VK=4",
    };
    (cols, vk, head_dim.div_ceil(16 * cols).max(1))
}

fn variant(act: DType, head_dim: usize, causal: bool) -> Variant {
    let (cols, vk, _) = tiling(head_dim);
    let mut defines = vec![COLS[cols - 1], vk];
    if causal {
        defines.push("CAUSAL");
    }
    Variant::new(FILE, act, &defines)
}

pub(crate) fn variants() -> Vec<Variant> {
    // Every (COLS, VK) pair some head size picks: 1..=10 columns per invocation for heads up
    // to 160, 11..=16 for wider ones (a head of 16·c for c ≥ 11 takes c columns in one group).
    let head_sizes = (1..=16).map(|cols| cols * 16);
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| head_sizes.clone().flat_map(move |d| [variant(act, d, false), variant(act, d, true)]))
        .collect()
}

/// Checks the shapes shared by both attention kernels; returns (batch, nq, nk, head_dim).
fn check(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Result<[usize; 4], GpuError> {
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
    if causal && nq != nk {
        return Err(error(format!("causal attention needs as many keys as queries ({nq} vs {nk})")));
    }
    if nk == 0 && nq > 0 && batch > 0 {
        return Err(error("attention over zero keys".into()));
    }
    Ok([batch, nq, nk, width / heads])
}

fn to_u32(v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::Shape { op: "attention", detail: format!("{v} exceeds 32 bits") })
}

/// softmax(Q·Kᵀ / √D) · V per head. `q` [B, Nq, H·D], `k` and `v` [B, Nk, H·D] with the heads
/// side by side, as projections produce them. Returns [B, Nq, H·D]. Any head size: heads wider
/// than 160 (the VAE's single 512-wide head) split their output columns across workgroups, each
/// recomputing the scores, so no Nq×Nk buffer exists at any size.
pub fn attention(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Tensor, GpuError> {
    let dims @ [batch, nq, _, head_dim] = check(q, k, v, heads, causal)?;
    let (_, _, column_groups) = tiling(head_dim);
    let groups = [nq.div_ceil(BQ), batch * heads, column_groups];
    run(gpu, &variant(q.dtype(), head_dim, causal), [q, k, v], dims, heads, 0, groups)
}

/// Fills the uniform both kernels share and dispatches `variant` over `groups` workgroups into
/// a new output (left unwritten when it is empty).
fn run(
    gpu: &Gpu,
    variant: &Variant,
    [q, k, v]: [&Tensor; 3],
    dims: [usize; 4],
    heads: usize,
    block_keys: usize,
    groups: [usize; 3],
) -> Result<Tensor, GpuError> {
    let [batch, nq, nk, head_dim] = dims;
    let out = Tensor::empty(gpu, q.shape(), q.dtype());
    if nq == 0 || batch == 0 || head_dim == 0 {
        return Ok(out);
    }
    let width = heads * head_dim;
    let params = Params {
        nq: to_u32(nq)?,
        nk: to_u32(nk)?,
        heads: to_u32(heads)?,
        head_dim: to_u32(head_dim)?,
        q_stride: to_u32(width)?,
        kv_stride: to_u32(width)?,
        scale: 1.0 / (head_dim as f32).sqrt(),
        block_keys: to_u32(block_keys)?,
    };
    let pipeline = gpu.pipeline(variant)?;
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
        [to_u32(groups[0])?, to_u32(groups[1])?, to_u32(groups[2])?],
    )?;
    Ok(out)
}

const ROWS_FILE: &str = "attention_rows.wgsl";
/// The row kernel's private arrays hold one query row of at most this many values.
pub const ROWS_MAX_HEAD_DIM: usize = 160;

pub(crate) fn rows_variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| [Variant::new(ROWS_FILE, act, &[]), Variant::new(ROWS_FILE, act, &["CAUSAL"])])
        .collect()
}

/// The previous fused kernel (a query row per four invocations, online softmax, no tiling of the
/// products), kept so `darkroom bench kernels` can show what the tiled kernel gains. Same
/// contract as [`attention`], head sizes up to [`ROWS_MAX_HEAD_DIM`].
pub fn attention_rows(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Tensor, GpuError> {
    let dims @ [batch, nq, _, head_dim] = check(q, k, v, heads, causal)?;
    if head_dim > ROWS_MAX_HEAD_DIM {
        return Err(GpuError::Shape {
            op: "attention",
            detail: format!("head size {head_dim} exceeds the row kernel's {ROWS_MAX_HEAD_DIM}"),
        });
    }
    let defines: &[&str] = if causal { &["CAUSAL"] } else { &[] };
    // Keys per workgroup-memory tile: 2048 floats each for K and V (attention_rows.wgsl).
    let block_keys = (2048 / head_dim).min(64);
    let groups = [nq.div_ceil(64), batch * heads, 1];
    run(gpu, &Variant::new(ROWS_FILE, q.dtype(), defines), [q, k, v], dims, heads, block_keys, groups)
}
