//! Elementwise ops: activations, broadcast add/mul, scale/shift, GEGLU and the CFG combine.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "elementwise.wgsl";
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    inner: u32,
    b_len: u32,
    row_stride: u32,
    alpha: f32,
    beta: f32,
    gamma: f32,
    _pad: u32,
}

/// Activations and other one-input maps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Silu,
    /// Exact (erf) GELU, as diffusers' GEGLU and OpenCLIP use.
    Gelu,
    /// x · sigmoid(1.702 x), CLIP ViT-L's activation.
    QuickGelu,
    Relu,
    /// tanh(x / limit) · limit: TAESD's soft clamp of latents (limit 3).
    TanhClamp(f32),
    /// x · scale + shift.
    ScaleShift(f32, f32),
    /// x for x ≥ 0, else slope · x (ESRGAN's activation, slope 0.2).
    LeakyRelu(f32),
}

impl Unary {
    fn define(self) -> &'static str {
        match self {
            Unary::Silu => "SILU",
            Unary::Gelu => "GELU",
            Unary::QuickGelu => "QUICK_GELU",
            Unary::Relu => "RELU",
            Unary::TanhClamp(_) => "TANH_CLAMP",
            Unary::ScaleShift(..) => "SCALE_SHIFT",
            Unary::LeakyRelu(_) => "LEAKY_RELU",
        }
    }

    fn constants(self) -> (f32, f32) {
        match self {
            Unary::TanhClamp(limit) => (limit, 0.0),
            Unary::ScaleShift(scale, shift) => (scale, shift),
            Unary::LeakyRelu(slope) => (slope, 0.0),
            _ => (0.0, 0.0),
        }
    }
}

const ALL_DEFINES: [&str; 13] = [
    "SILU",
    "GELU",
    "QUICK_GELU",
    "RELU",
    "TANH_CLAMP",
    "SCALE_SHIFT",
    "LEAKY_RELU",
    "PRELU",
    "ADD",
    "MUL",
    "GEGLU",
    "CFG",
    "LINCOMB",
];

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| ALL_DEFINES.iter().map(move |d| Variant::new(FILE, act, &[d])))
        .collect()
}

fn error(op: &'static str, detail: String) -> GpuError {
    GpuError::Shape { op, detail }
}

/// Launch geometry for `n` invocations of 256-wide workgroups: (groups, row_stride).
pub(crate) fn grid(gpu: &Gpu, n: usize) -> Result<([u32; 3], u32), GpuError> {
    let groups = n.div_ceil(WORKGROUP).max(1);
    let max_x = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let x = groups.min(max_x);
    let y = groups.div_ceil(x);
    let stride = u32::try_from(x * WORKGROUP).map_err(|_| error("elementwise", "tensor too large".into()))?;
    Ok(([x as u32, y as u32, 1], stride))
}

/// Binds `params` at 0, the first input at 1, `out` at 2 and further inputs from 3 on — the
/// layout of every one-invocation-per-element shader (elementwise, layout, naive) — and
/// records the dispatch.
pub(crate) fn dispatch_map<P: bytemuck::Pod>(
    gpu: &Gpu,
    variant: &Variant,
    params: &P,
    inputs: &[&Tensor],
    out: &Tensor,
    groups: [u32; 3],
) -> Result<(), GpuError> {
    let pipeline = gpu.pipeline(variant)?;
    let uniform = gpu.uniform(params);
    let mut bindings = vec![(0, uniform.as_entire_binding()), (2, out.binding())];
    for (i, t) in inputs.iter().enumerate() {
        bindings.push((if i == 0 { 1 } else { 2 + i as u32 }, t.binding()));
    }
    gpu.dispatch(&pipeline, &bindings, groups)
}

fn run(
    gpu: &Gpu,
    define: &'static str,
    x: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
    inner: usize,
    b_len: usize,
    (alpha, beta): (f32, f32),
) -> Result<Tensor, GpuError> {
    let out = Tensor::empty(gpu, out_shape, x.dtype());
    let n = out.len();
    if n == 0 {
        return Ok(out);
    }
    let (groups, row_stride) = grid(gpu, n)?;
    let to_u32 =
        |v: usize| u32::try_from(v).map_err(|_| error("elementwise", format!("{v} exceeds 32 bits")));
    let params = Params {
        n: to_u32(n)?,
        inner: to_u32(inner.max(1))?,
        b_len: to_u32(b_len.max(1))?,
        row_stride,
        alpha,
        beta,
        gamma: 0.0,
        _pad: 0,
    };
    let inputs: Vec<&Tensor> = std::iter::once(x).chain(b).collect();
    dispatch_map(gpu, &Variant::new(FILE, x.dtype(), &[define]), &params, &inputs, &out, groups)?;
    Ok(out)
}

pub fn unary(gpu: &Gpu, x: &Tensor, op: Unary) -> Result<Tensor, GpuError> {
    run(gpu, op.define(), x, None, x.shape(), 1, 1, op.constants())
}

/// How `b` broadcasts over `a`: b's dimensions, aligned right and with leading 1s dropped, must
/// equal a contiguous run of a's dimensions, each other dimension of b being 1. Returns
/// (inner, b_len): b[(i / inner) % b_len] pairs with a[i].
fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<(usize, usize), GpuError> {
    let fail = || error(op, format!("cannot broadcast {b:?} over {a:?}"));
    if b.len() > a.len() {
        return Err(fail());
    }
    let padded: Vec<usize> = std::iter::repeat_n(1, a.len() - b.len()).chain(b.iter().copied()).collect();
    let non_one: Vec<usize> = (0..padded.len()).filter(|&d| padded[d] != 1).collect();
    let (lo, hi) = match (non_one.first(), non_one.last()) {
        (Some(&lo), Some(&hi)) => (lo, hi + 1),
        _ => return Ok((1, 1)), // b holds one value
    };
    if (lo..hi).any(|d| padded[d] != a[d]) {
        return Err(fail());
    }
    Ok((a[hi..].iter().product(), a[lo..hi].iter().product()))
}

fn binary(
    gpu: &Gpu,
    op: &'static str,
    define: &'static str,
    a: &Tensor,
    b: &Tensor,
) -> Result<Tensor, GpuError> {
    if a.dtype() != b.dtype() {
        return Err(error(op, format!("dtypes differ: {:?} and {:?}", a.dtype(), b.dtype())));
    }
    let (inner, b_len) = broadcast(op, a.shape(), b.shape())?;
    run(gpu, define, a, Some(b), a.shape(), inner, b_len, (0.0, 0.0))
}

/// `a + b`, `b` broadcast over `a` (bias per channel, time embedding per batch and channel…).
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor, GpuError> {
    binary(gpu, "add", "ADD", a, b)
}

/// PyTorch's `PReLU`: x for x ≥ 0, else `slope` · x, with one slope per channel of x
/// [B, C, H, W] (`slope` [C]) or one for all (`slope` [1]).
pub fn prelu(gpu: &Gpu, x: &Tensor, slope: &Tensor) -> Result<Tensor, GpuError> {
    let shape: Vec<usize> = match (x.shape(), slope.len()) {
        (_, 1) => vec![1],
        ([_, c, _, _], n) if n == *c => vec![*c, 1, 1],
        (s, n) => return Err(error("prelu", format!("{n} slopes for a map of shape {s:?}"))),
    };
    let slope = slope.reshape(&shape)?;
    binary(gpu, "prelu", "PRELU", x, &slope)
}

/// `a * b`, `b` broadcast over `a`.
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor, GpuError> {
    binary(gpu, "mul", "MUL", a, b)
}

/// diffusers' GEGLU after its projection: [.., 2D] → [.., D] = first half · gelu(second half).
pub fn geglu(gpu: &Gpu, x: &Tensor) -> Result<Tensor, GpuError> {
    let (&last, lead) = x.shape().split_last().ok_or_else(|| error("geglu", "scalar input".into()))?;
    if last % 2 != 0 {
        return Err(error("geglu", format!("last dimension of {:?} must be even", x.shape())));
    }
    let mut shape = lead.to_vec();
    shape.push(last / 2);
    run(gpu, "GEGLU", x, None, &shape, last / 2, 1, (0.0, 0.0))
}

/// Classifier-free guidance: `x` [2·B, …] holds the unconditional predictions first, then the
/// conditional ones; returns [B, …] = u + scale · (c − u).
pub fn cfg_combine(gpu: &Gpu, x: &Tensor, scale: f32) -> Result<Tensor, GpuError> {
    let (&first, rest) = x.shape().split_first().ok_or_else(|| error("cfg", "scalar input".into()))?;
    if first % 2 != 0 {
        return Err(error(
            "cfg",
            format!("batch of {:?} must be even (unconditional + conditional)", x.shape()),
        ));
    }
    let mut shape = vec![first / 2];
    shape.extend_from_slice(rest);
    let half = shape.iter().product();
    run(gpu, "CFG", x, None, &shape, half, 1, (scale, 0.0))
}

/// `Σ cᵢ · xᵢ` over one to three tensors of one shape and dtype, computed in f32: the samplers'
/// updates (x + (σ' − σ)·ε, DPM++'s three-term step, mask blending …) in one pass.
pub fn lincomb(gpu: &Gpu, terms: &[(f32, &Tensor)]) -> Result<Tensor, GpuError> {
    let (&(_, first), rest) = terms.split_first().ok_or_else(|| error("lincomb", "no terms".into()))?;
    if rest.len() > 2 {
        return Err(error("lincomb", format!("at most 3 terms, got {}", terms.len())));
    }
    if let Some((_, t)) = rest.iter().find(|(_, t)| t.shape() != first.shape() || t.dtype() != first.dtype())
    {
        return Err(error(
            "lincomb",
            format!("{:?} {:?} and {:?} {:?} differ", first.shape(), first.dtype(), t.shape(), t.dtype()),
        ));
    }
    let coefficient = |i: usize| terms.get(i).map_or(0.0, |t| t.0);
    let operand = |i: usize| terms.get(i).map_or(first, |t| t.1);
    let out = Tensor::empty(gpu, first.shape(), first.dtype());
    let n = out.len();
    if n == 0 {
        return Ok(out);
    }
    let (groups, row_stride) = grid(gpu, n)?;
    let params = Params {
        n: u32::try_from(n).map_err(|_| error("lincomb", format!("{n} elements exceed 32 bits")))?,
        inner: 1,
        b_len: 1,
        row_stride,
        alpha: coefficient(0),
        beta: coefficient(1),
        gamma: coefficient(2),
        _pad: 0,
    };
    let variant = Variant::new(FILE, first.dtype(), &["LINCOMB"]);
    dispatch_map(gpu, &variant, &params, &[first, operand(1), operand(2)], &out, groups)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::broadcast;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast("t", &[2, 3, 4], &[2, 3, 4]), Ok((1, 24)));
        assert_eq!(broadcast("t", &[5, 8], &[8]), Ok((1, 8))); // bias
        assert_eq!(broadcast("t", &[2, 320, 8, 8], &[2, 320, 1, 1]), Ok((64, 640))); // time embedding
        assert_eq!(broadcast("t", &[2, 320, 8, 8], &[320, 1, 1]), Ok((64, 320))); // per-channel
        assert_eq!(broadcast("t", &[2, 3], &[1]), Ok((1, 1)));
        assert!(broadcast("t", &[2, 3, 4], &[2, 1, 4]).is_err()); // not contiguous
        assert!(broadcast("t", &[2, 3], &[4]).is_err());
        assert!(broadcast("t", &[3], &[2, 3]).is_err());
    }
}
