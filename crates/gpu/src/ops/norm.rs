//! Group norm (+ fused SiLU) and layer norm.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "norm.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    seg_len: u32,
    groups: u32,
    ch_per_group: u32,
    spatial: u32,
    eps: f32,
    segments_per_row: u32,
    segments: u32,
    chunk_len: u32,
    chunks: u32,
    _pad: [u32; 2],
}

/// Segments at least this long, fewer than [`CHUNK_BELOW`] of them, are normalised in chunks
/// of this many values by `chunk_stats` + `chunk_apply`.
const CHUNK_LEN: usize = 8192;
const CHUNK_BELOW: usize = 512;

pub(crate) fn variants() -> Vec<Variant> {
    let fused = [&[][..], &["FUSE_SILU"][..], &["FUSE_RELU"][..]];
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| {
            fused.into_iter().flat_map(move |f| {
                [Variant::new(FILE, act, f), Variant::new(FILE, act, f).entry("chunk_apply")]
            })
        })
        .chain([DType::F32, DType::F16].map(|act| Variant::new(FILE, act, &[]).entry("chunk_stats")))
        .collect()
}

/// An activation applied right after the normalisation, in the same kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fused {
    None,
    /// ResNet blocks of the UNet and VAE.
    Silu,
    /// TAESD's midblock pool.
    Relu,
}

impl Fused {
    fn defines(self) -> &'static [&'static str] {
        match self {
            Fused::None => &[],
            Fused::Silu => &["FUSE_SILU"],
            Fused::Relu => &["FUSE_RELU"],
        }
    }
}

fn error(op: &'static str, detail: String) -> GpuError {
    GpuError::Shape { op, detail }
}

fn check_affine(op: &'static str, gamma: &Tensor, beta: &Tensor, channels: usize) -> Result<(), GpuError> {
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.len() != channels || t.dtype() != DType::F32 {
            return Err(error(op, format!("{name} must be {channels} f32 values, got {t:?}")));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    segments: usize,
    seg_len: usize,
    groups: usize,
    ch_per_group: usize,
    spatial: usize,
    eps: f32,
    fused: Fused,
) -> Result<Tensor, GpuError> {
    let out = Tensor::empty(gpu, x.shape(), x.dtype());
    if out.is_empty() {
        return Ok(out);
    }
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| error("norm", format!("{v} exceeds 32 bits")));
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let per_row = segments.min(max);
    let rows = segments.div_ceil(per_row);
    let chunks = seg_len.div_ceil(CHUNK_LEN);
    let chunked = chunks > 1 && segments < CHUNK_BELOW;
    let params = Params {
        seg_len: to_u32(seg_len)?,
        groups: to_u32(groups)?,
        ch_per_group: to_u32(ch_per_group)?,
        spatial: to_u32(spatial)?,
        eps,
        segments_per_row: to_u32(per_row)?,
        segments: to_u32(segments)?,
        chunk_len: if chunked { to_u32(CHUNK_LEN)? } else { 0 },
        chunks: if chunked { to_u32(chunks)? } else { 0 },
        _pad: [0; 2],
    };
    if chunked {
        let uniform = gpu.uniform(&params);
        let stats = Tensor::empty(gpu, &[segments * chunks * 2], DType::F32);
        let grid = [to_u32(chunks)?, to_u32(segments)?, 1];
        let pass = gpu.pipeline(&Variant::new(FILE, x.dtype(), &[]).entry("chunk_stats"))?;
        gpu.dispatch(
            &pass,
            &[(0, uniform.as_entire_binding()), (1, x.binding()), (5, stats.binding())],
            grid,
        )?;
        let pass = gpu.pipeline(&Variant::new(FILE, x.dtype(), fused.defines()).entry("chunk_apply"))?;
        let bindings = [
            (0, uniform.as_entire_binding()),
            (1, x.binding()),
            (2, out.binding()),
            (3, gamma.binding()),
            (4, beta.binding()),
            (5, stats.binding()),
        ];
        gpu.dispatch(&pass, &bindings, grid)?;
        return Ok(out);
    }
    let pipeline = gpu.pipeline(&Variant::new(FILE, x.dtype(), fused.defines()))?;
    let uniform = gpu.uniform(&params);
    gpu.dispatch(
        &pipeline,
        &[
            (0, uniform.as_entire_binding()),
            (1, x.binding()),
            (2, out.binding()),
            (3, gamma.binding()),
            (4, beta.binding()),
        ],
        [to_u32(per_row)?, to_u32(rows)?, 1],
    )?;
    Ok(out)
}

/// GroupNorm over `x` [B, C, ...spatial] with `groups` groups, then the `fused` activation.
/// `gamma`, `beta`: [C] f32.
pub fn group_norm(
    gpu: &Gpu,
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    fused: Fused,
) -> Result<Tensor, GpuError> {
    let (batch, channels) = match *x.shape() {
        [b, c, ..] => (b, c),
        _ => return Err(error("group_norm", format!("input must be [B, C, ...], got {:?}", x.shape()))),
    };
    if groups == 0 || channels % groups != 0 {
        return Err(error("group_norm", format!("{channels} channels cannot form {groups} groups")));
    }
    check_affine("group_norm", gamma, beta, channels)?;
    let spatial: usize = x.shape()[2..].iter().product();
    let ch_per_group = channels / groups;
    run(
        gpu,
        x,
        gamma,
        beta,
        batch * groups,
        ch_per_group * spatial,
        groups,
        ch_per_group,
        spatial,
        eps,
        fused,
    )
}

/// LayerNorm over the last dimension of `x`. `gamma`, `beta`: [D] f32.
pub fn layer_norm(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor, GpuError> {
    let Some(&d) = x.shape().last() else {
        return Err(error("layer_norm", "scalar input".into()));
    };
    check_affine("layer_norm", gamma, beta, d)?;
    let rows = x.len() / d.max(1);
    run(gpu, x, gamma, beta, rows, d, 1, d, 1, eps, Fused::None)
}
