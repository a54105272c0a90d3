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
    part_offset: u32,
    parts: u32,
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
        .chain([DType::F32, DType::F16].map(|act| Variant::new(FILE, act, &[]).entry("part_stats")))
        .chain(
            [DType::F32, DType::F16].into_iter().flat_map(|act| {
                fused.into_iter().map(move |f| Variant::new(FILE, act, f).entry("part_apply"))
            }),
        )
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
        part_offset: 0,
        parts: 0,
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

/// Group-norm statistics of an image held as tiles ([1, C, h, w] each, together covering the
/// image once): [`GroupStats::apply`] normalises any tile — or a tile with a border taken from
/// its neighbours — exactly as a group norm over the whole image would.
pub struct GroupStats {
    /// (count, mean, sum of squared deviations, 0) per chunk of each tile, group-major.
    parts: Tensor,
    groups: usize,
    entries: usize,
}

fn tile_dims(op: &'static str, x: &Tensor, groups: usize) -> Result<(usize, usize), GpuError> {
    match *x.shape() {
        [1, c, h, w] if groups > 0 && c % groups == 0 => Ok((c / groups, h * w)),
        _ => Err(error(
            op,
            format!("needs a [1, C, H, W] tile with C a multiple of {groups}, got {:?}", x.shape()),
        )),
    }
}

impl GroupStats {
    /// The statistics of `tiles` with `groups` groups.
    pub fn over(gpu: &Gpu, tiles: &[&Tensor], groups: usize) -> Result<GroupStats, GpuError> {
        let to_u32 =
            |v: usize| u32::try_from(v).map_err(|_| error("group_norm", format!("{v} exceeds 32 bits")));
        let mut layout = Vec::with_capacity(tiles.len());
        let mut entries = 0;
        let mut channels = None;
        for t in tiles {
            let (cpg, spatial) = tile_dims("group_norm", t, groups)?;
            if *channels.get_or_insert(t.shape()[1]) != t.shape()[1] || t.dtype() != tiles[0].dtype() {
                return Err(error("group_norm", format!("tiles disagree: {t:?} beside {:?}", tiles[0])));
            }
            let chunks = (cpg * spatial).div_ceil(CHUNK_LEN).max(1);
            layout.push((cpg, spatial, entries, chunks));
            entries += chunks;
        }
        if entries == 0 {
            return Err(error("group_norm", "no tiles to take statistics over".into()));
        }
        let parts = Tensor::empty(gpu, &[groups * entries * 4], DType::F32);
        let pipeline = |act| gpu.pipeline(&Variant::new(FILE, act, &[]).entry("part_stats"));
        for (t, (cpg, spatial, offset, chunks)) in tiles.iter().zip(layout) {
            if t.is_empty() {
                continue;
            }
            let params = Params {
                seg_len: to_u32(cpg * spatial)?,
                groups: to_u32(groups)?,
                ch_per_group: to_u32(cpg)?,
                spatial: to_u32(spatial)?,
                eps: 0.0,
                segments_per_row: to_u32(groups)?,
                segments: to_u32(groups)?,
                chunk_len: to_u32(CHUNK_LEN)?,
                chunks: to_u32(chunks)?,
                part_offset: to_u32(offset)?,
                parts: to_u32(entries)?,
            };
            let uniform = gpu.uniform(&params);
            gpu.dispatch(
                &pipeline(t.dtype())?,
                &[(0, uniform.as_entire_binding()), (1, t.binding()), (6, parts.binding())],
                [to_u32(chunks)?, to_u32(groups)?, 1],
            )?;
        }
        Ok(GroupStats { parts, groups, entries })
    }

    /// `x` [1, C, h, w] normalised with these statistics, then `fused`.
    pub fn apply(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
        fused: Fused,
    ) -> Result<Tensor, GpuError> {
        let to_u32 =
            |v: usize| u32::try_from(v).map_err(|_| error("group_norm", format!("{v} exceeds 32 bits")));
        let (cpg, spatial) = tile_dims("group_norm", x, self.groups)?;
        check_affine("group_norm", gamma, beta, cpg * self.groups)?;
        let out = Tensor::empty(gpu, x.shape(), x.dtype());
        if out.is_empty() {
            return Ok(out);
        }
        let chunks = (cpg * spatial).div_ceil(CHUNK_LEN);
        let params = Params {
            seg_len: to_u32(cpg * spatial)?,
            groups: to_u32(self.groups)?,
            ch_per_group: to_u32(cpg)?,
            spatial: to_u32(spatial)?,
            eps,
            segments_per_row: to_u32(self.groups)?,
            segments: to_u32(self.groups)?,
            chunk_len: to_u32(CHUNK_LEN)?,
            chunks: to_u32(chunks)?,
            part_offset: 0,
            parts: to_u32(self.entries)?,
        };
        let uniform = gpu.uniform(&params);
        let pipeline = gpu.pipeline(&Variant::new(FILE, x.dtype(), fused.defines()).entry("part_apply"))?;
        gpu.dispatch(
            &pipeline,
            &[
                (0, uniform.as_entire_binding()),
                (1, x.binding()),
                (2, out.binding()),
                (3, gamma.binding()),
                (4, beta.binding()),
                (6, self.parts.binding()),
            ],
            [to_u32(chunks)?, to_u32(self.groups)?, 1],
        )?;
        Ok(out)
    }
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
