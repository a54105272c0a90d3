//! Matmul of two activations, and linear layers (activation × packed weight + bias).

use crate::device::Gpu;
use crate::error::GpuError;
use crate::quant::WeightFormat;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};
use crate::weight::Weight;

pub(crate) const FILE: &str = "matmul.wgsl";

/// The tile edge for an m x n product, and whether that is the `BIG` variant.
fn tile(gpu: &Gpu, m: usize, n: usize) -> (usize, bool) {
    let big = match gpu.gemm_tiles() {
        crate::GemmTiles::Small | crate::GemmTiles::SplitK => false,
        crate::GemmTiles::Big => true,
        // Enough 128x128 tiles to occupy every core of a large GPU several times over; below
        // that, the 64x64 tile's four times as many workgroups keep more of it busy.
        crate::GemmTiles::Auto => m.div_ceil(128) * n.div_ceil(128) >= 256,
    };
    if big {
        (128, true)
    } else {
        (64, false)
    }
}

/// Workgroups below which a product with a weight splits K (on GPUs, where idle cores cost).
const SPLIT_BELOW: usize = 512;

/// Into how many ranges of K a product of `tiles` 64x64 workgroups splits, and each range's
/// length (a multiple of the kernel's K slice of 16).
fn k_splits(gpu: &Gpu, tiles: usize, k: usize) -> (usize, usize) {
    let slices = k.div_ceil(16).max(1);
    let wanted = match gpu.gemm_tiles() {
        crate::GemmTiles::SplitK => 3,
        crate::GemmTiles::Auto if gpu.capabilities().is_gpu() && tiles < SPLIT_BELOW => {
            // Ranges of at least 16 slices (256 of K): shorter ones measured slower split
            // (H200: 4096x320x320 in two ranges of 160 at 0.77x).
            SPLIT_BELOW.div_ceil(tiles.max(1)).min(slices / 16)
        }
        _ => 1,
    };
    let chunk = slices.div_ceil(wanted.clamp(1, slices));
    (slices.div_ceil(chunk), chunk * 16)
}

/// The GEMM kernel's uniform (matmul.wgsl's `Params`); conv2d fills the geometry too.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch_stride_a: u32,
    pub batch_stride_b: u32,
    pub batch_stride_c: u32,
    pub b_row_words: u32,
    pub groups_per_row: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub out_w: u32,
    pub kernel_h: u32,
    pub kernel_w: u32,
    pub stride: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub out_cols: u32,
    pub col_offset: u32,
    /// CONV: ceil(65536 / kernel_w) (matmul.wgsl divides taps by the kernel width with it).
    pub kw_magic: u32,
    /// SPLIT_K: ranges of K, each range's length, and the distance between C's copies.
    pub splits: u32,
    pub k_chunk: u32,
    pub split_stride: u32,
    pub _pad: [u32; 2],
}

pub(crate) fn variants() -> Vec<Variant> {
    let small = small_variants();
    // BIG for every plain variant (products with a BIG tile never split K).
    let big = small
        .iter()
        .filter(|v| !v.defines.contains(&"SPLIT_K"))
        .map(|v| Variant::new(FILE, v.act, &[&v.defines[..], &["BIG"]].concat()));
    let mut out = small.clone();
    out.extend(big);
    out
}

fn small_variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for act in [DType::F32, DType::F16] {
        for format in WeightFormat::ALL {
            // SPLIT_K: the ranges' pass (no epilogue), then the sum with each epilogue.
            let f = format.define();
            out.push(Variant::new(FILE, act, &[f, "SPLIT_K"]));
            out.push(Variant::new(FILE, act, &[f, "CONV", "SPLIT_K"]));
            for bias in [&[][..], &["BIAS"][..]] {
                out.push(Variant::new(FILE, act, &[&[f, "SPLIT_K"][..], bias].concat()).entry("split_sum"));
                for residual in [&[][..], &["RESIDUAL"][..]] {
                    for relu in [&[][..], &["RELU"][..]] {
                        let defines = [&[f, "CONV", "SPLIT_K"][..], bias, residual, relu].concat();
                        out.push(Variant::new(FILE, act, &defines).entry("split_sum"));
                    }
                }
            }
        }
        out.push(Variant::new(FILE, act, &["B_ACT"]));
        out.push(Variant::new(FILE, act, &["B_ACT", "TRANSPOSE_B"]));
        for format in WeightFormat::ALL {
            out.push(Variant::new(FILE, act, &[format.define()]));
            out.push(Variant::new(FILE, act, &[format.define(), "BIAS"]));
            for bias in [&[][..], &["BIAS"][..]] {
                for residual in [&[][..], &["RESIDUAL"][..]] {
                    for relu in [&[][..], &["RELU"][..]] {
                        let defines: Vec<&str> =
                            [&[format.define(), "CONV"][..], bias, residual, relu].concat();
                        out.push(Variant::new(FILE, act, &defines));
                    }
                }
            }
        }
    }
    out
}

fn shape_error(detail: String) -> GpuError {
    GpuError::Shape { op: "matmul", detail }
}

pub(crate) fn u32_of(v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| shape_error(format!("{v} elements exceed 32-bit indexing")))
}

/// Splits a tensor into (batch, rows, cols) from its last two dimensions.
fn as_3d(t: &Tensor, name: &str) -> Result<(usize, usize, usize), GpuError> {
    match *t.shape() {
        [r, c] => Ok((1, r, c)),
        [b, r, c] => Ok((b, r, c)),
        _ => Err(shape_error(format!("{name} must be 2-D or 3-D, got {:?}", t.shape()))),
    }
}

/// `a` [batch, m, k] (or [m, k]) times `b`: [batch or 1, k, n], or with `transpose_b`
/// [batch or 1, n, k]. A 2-D or batch-1 `b` serves every batch. Returns [batch, m, n] (or
/// [m, n] for a 2-D `a`), in `a`'s dtype.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor, GpuError> {
    let (batch, m, k) = as_3d(a, "a")?;
    let (b_batch, b_rows, b_cols) = as_3d(b, "b")?;
    let (kb, n) = if transpose_b { (b_cols, b_rows) } else { (b_rows, b_cols) };
    if kb != k {
        return Err(shape_error(format!(
            "inner sizes differ: a {:?}, b {:?} (transpose_b: {transpose_b})",
            a.shape(),
            b.shape()
        )));
    }
    if b_batch != 1 && b_batch != batch {
        return Err(shape_error(format!("batch sizes differ: a {:?}, b {:?}", a.shape(), b.shape())));
    }
    if a.dtype() != b.dtype() {
        return Err(shape_error(format!("dtypes differ: {:?} and {:?}", a.dtype(), b.dtype())));
    }
    let out_shape: Vec<usize> = if a.shape().len() == 2 { vec![m, n] } else { vec![batch, m, n] };
    let out = Tensor::empty(gpu, &out_shape, a.dtype());
    let params = Params {
        m: u32_of(m)?,
        n: u32_of(n)?,
        k: u32_of(k)?,
        batch_stride_a: u32_of(m * k)?,
        batch_stride_b: if b_batch == 1 { 0 } else { u32_of(k * n)? },
        batch_stride_c: u32_of(m * n)?,
        out_cols: u32_of(n)?,
        ..Default::default()
    };
    let (tile, big) = tile(gpu, m, n);
    let mut defines = vec!["B_ACT"];
    if transpose_b {
        defines.push("TRANSPOSE_B");
    }
    if big {
        defines.push("BIG");
    }
    let pipeline = gpu.pipeline(&Variant::new(FILE, a.dtype(), &defines))?;
    let uniform = gpu.uniform(&params);
    gpu.dispatch(
        &pipeline,
        &[(0, uniform.as_entire_binding()), (1, a.binding()), (2, out.binding()), (3, b.binding())],
        [u32_of(n.div_ceil(tile))?, u32_of(m.div_ceil(tile))?, u32_of(batch)?],
    )?;
    Ok(out)
}

/// A linear layer: `x` [..., k] · `w`ᵀ (+ `w`'s bias) → [..., n], where `w` is [n, k].
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Weight) -> Result<Tensor, GpuError> {
    let Some((&k, lead)) = x.shape().split_last() else {
        return Err(shape_error("linear input must have at least one dimension".into()));
    };
    if k != w.cols {
        return Err(shape_error(format!(
            "input {:?} has {k} features, the weight expects {}",
            x.shape(),
            w.cols
        )));
    }
    let m: usize = lead.iter().product();
    let n = w.rows;
    let mut out_shape = lead.to_vec();
    out_shape.push(n);
    let out = Tensor::empty(gpu, &out_shape, x.dtype());
    let params = Params { m: u32_of(m)?, n: u32_of(n)?, k: u32_of(k)?, ..Default::default() };
    dispatch_with_weight(gpu, &params, &[], x, w, None, &out, 1)?;
    Ok(out)
}

/// Runs the GEMM kernel with `w` as B, once per part of the weight: fills the weight fields of
/// `params`, picks the variant (weight format, bias, residual, `extra` defines, the tile for
/// `params.m` rows) and binds everything. `params.n` is the weight's full output count; `batch`
/// is the grid's z.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch_with_weight(
    gpu: &Gpu,
    params: &Params,
    extra: &[&'static str],
    a: &Tensor,
    w: &Weight,
    residual: Option<&Tensor>,
    out: &Tensor,
    batch: usize,
) -> Result<(), GpuError> {
    let m = params.m as usize;
    // One tile for every part, chosen for the whole weight.
    let (tile, big) = tile(gpu, m, w.rows);
    let (splits, k_chunk) =
        if big { (1, 0) } else { k_splits(gpu, m.div_ceil(tile) * w.rows.div_ceil(tile) * batch, w.cols) };
    let mut defines = vec![w.format.define()];
    defines.extend_from_slice(extra);
    if w.has_bias() {
        defines.push("BIAS");
    }
    if residual.is_some() {
        defines.push("RESIDUAL");
    }
    if big {
        defines.push("BIG");
    }
    // C's full size (batches and every part's columns): the distance between its copies.
    let c_len = batch * (params.batch_stride_c as usize).max(m * w.rows);
    // SPLIT_K: each range's sums in its own copy of C (the ranges' pass has no epilogue), added
    // up by the `split_sum` pass, which applies the epilogue.
    let (pipeline, split) = if splits > 1 {
        let ranges: Vec<&str> =
            defines.iter().copied().filter(|d| *d == w.format.define() || *d == "CONV").collect();
        let partial = Tensor::empty(gpu, &[splits * c_len], DType::F32);
        let sum = Variant::new(FILE, a.dtype(), &[&defines[..], &["SPLIT_K"]].concat()).entry("split_sum");
        (
            gpu.pipeline(&Variant::new(FILE, a.dtype(), &[&ranges[..], &["SPLIT_K"]].concat()))?,
            Some((partial, gpu.pipeline(&sum)?)),
        )
    } else {
        (gpu.pipeline(&Variant::new(FILE, a.dtype(), &defines))?, None)
    };
    for part in &w.parts {
        let params = Params {
            n: u32_of(part.rows)?,
            out_cols: u32_of(w.rows)?,
            col_offset: u32_of(part.first_row)?,
            b_row_words: u32_of(w.format.row_words(w.cols))?,
            groups_per_row: u32_of(w.format.groups_per_row(w.cols))?,
            splits: u32_of(splits)?,
            k_chunk: u32_of(k_chunk)?,
            split_stride: if splits > 1 { u32_of(c_len)? } else { 0 },
            ..*params
        };
        let uniform = gpu.uniform(&params);
        let mut bindings =
            vec![(0, uniform.as_entire_binding()), (1, a.binding()), (3, part.data.as_entire_binding())];
        if let Some(scales) = &part.scales {
            bindings.push((4, scales.as_entire_binding()));
        }
        // What the epilogue binds: C, the bias, the residual.
        let mut epilogue = vec![(2, out.binding())];
        if let Some(bias) = &part.bias {
            epilogue.push((5, bias.as_entire_binding()));
        }
        if let Some(r) = residual {
            epilogue.push((6, r.binding()));
        }
        let groups = [u32_of(part.rows.div_ceil(tile))?, u32_of(m.div_ceil(tile))?, u32_of(batch * splits)?];
        match &split {
            None => {
                bindings.extend(epilogue);
                gpu.dispatch(&pipeline, &bindings, groups)?;
            }
            Some((partial, sum)) => {
                bindings.push((7, partial.binding()));
                gpu.dispatch(&pipeline, &bindings, groups)?;
                let mut sum_bindings = vec![(0, uniform.as_entire_binding()), (7, partial.binding())];
                sum_bindings.extend(epilogue);
                let outputs = (m * part.rows).div_ceil(256);
                let x = outputs.min(gpu.limits().max_compute_workgroups_per_dimension as usize);
                gpu.dispatch(sum, &sum_bindings, [u32_of(x)?, u32_of(outputs.div_ceil(x))?, u32_of(batch)?])?;
            }
        }
    }
    Ok(())
}
