//! Nearest and bilinear resizing, transposition and concatenation.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops::elementwise::{dispatch_map, grid};
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "layout.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    a_len: u32,
    b_len: u32,
    row_stride: u32,
    out_h: u32,
    out_w: u32,
    scale_h: u32,
    scale_w: u32,
}

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| {
            [
                Variant::new(FILE, act, &["UPSAMPLE"]),
                Variant::new(FILE, act, &["CONCAT"]),
                Variant::new(FILE, act, &["TRANSPOSE"]),
                Variant::new(FILE, act, &["PIXEL_SHUFFLE"]),
                Variant::new(FILE, act, &["PIXEL_UNSHUFFLE"]),
                Variant::new(FILE, act, &["BILINEAR"]),
                Variant::new(FILE, act, &["BILINEAR", "ALIGNED"]),
            ]
        })
        .collect()
}

/// One remap over `x` (and `b`) into a tensor of `shape`; `extra` fills the parameters only some
/// remaps use.
#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    defines: &[&'static str],
    x: &Tensor,
    b: Option<&Tensor>,
    shape: &[usize],
    a_len: usize,
    b_len: usize,
    extra: impl FnOnce(&mut Params),
) -> Result<Tensor, GpuError> {
    let define = defines[0];
    let out = Tensor::empty(gpu, shape, x.dtype());
    if out.is_empty() {
        return Ok(out);
    }
    let (groups, row_stride) = grid(gpu, out.len())?;
    let to_u32 = |v: usize| {
        u32::try_from(v)
            .map_err(|_| GpuError::Shape { op: define_op(define), detail: format!("{v} exceeds 32 bits") })
    };
    let mut params = Params {
        n: to_u32(out.len())?,
        a_len: to_u32(a_len)?,
        b_len: to_u32(b_len)?,
        row_stride,
        out_h: 0,
        out_w: 0,
        scale_h: 0,
        scale_w: 0,
    };
    extra(&mut params);
    let inputs: Vec<&Tensor> = std::iter::once(x).chain(b).collect();
    dispatch_map(gpu, &Variant::new(FILE, x.dtype(), defines), &params, &inputs, &out, groups)?;
    Ok(out)
}

fn define_op(define: &str) -> &'static str {
    match define {
        "CONCAT" => "concat",
        "TRANSPOSE" => "transpose",
        "PIXEL_SHUFFLE" => "pixel_shuffle",
        "PIXEL_UNSHUFFLE" => "pixel_unshuffle",
        "BILINEAR" => "resize_bilinear",
        _ => "upsample",
    }
}

/// Swaps the last two dimensions: [..., R, C] → [..., C, R].
pub fn transpose(gpu: &Gpu, x: &Tensor) -> Result<Tensor, GpuError> {
    let [lead @ .., r, c] = x.shape() else {
        return Err(GpuError::Shape {
            op: "transpose",
            detail: format!("needs [..., R, C], got {:?}", x.shape()),
        });
    };
    let mut shape = lead.to_vec();
    shape.extend([*c, *r]);
    run(gpu, &["TRANSPOSE"], x, None, &shape, *r, *c, |_| ())
}

/// Nearest-neighbour 2x upsampling of the last two dimensions: [..., H, W] → [..., 2H, 2W].
pub fn upsample2x(gpu: &Gpu, x: &Tensor) -> Result<Tensor, GpuError> {
    let [.., h, w] = x.shape() else {
        return Err(GpuError::Shape {
            op: "upsample",
            detail: format!("needs [..., H, W], got {:?}", x.shape()),
        });
    };
    upsample_nearest(gpu, x, 2 * h, 2 * w)
}

/// The shape of `x` [..., H, W] resized to `out_h` x `out_w`, with H and W.
fn resized_shape(
    op: &'static str,
    x: &Tensor,
    out_h: usize,
    out_w: usize,
) -> Result<(Vec<usize>, usize, usize), GpuError> {
    let [lead @ .., h, w] = x.shape() else {
        return Err(GpuError::Shape { op, detail: format!("needs [..., H, W], got {:?}", x.shape()) });
    };
    if (*h == 0 || *w == 0) && out_h * out_w != 0 {
        return Err(GpuError::Shape { op, detail: format!("cannot resize an empty {h}x{w} map") });
    }
    let mut shape = lead.to_vec();
    shape.extend([out_h, out_w]);
    Ok((shape, *h, *w))
}

/// Nearest-neighbour resize of the last two dimensions to `out_h` x `out_w`, indexed as PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode="nearest")`: source row `floor(oy · (H / out_h))`
/// with the ratio in f32. diffusers' UNet upsamples this way to the skip connection's size when
/// the latents are not a multiple of the UNet's factor (e.g. 5 → 9, not 10).
pub fn upsample_nearest(gpu: &Gpu, x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor, GpuError> {
    let (shape, h, w) = resized_shape("upsample", x, out_h, out_w)?;
    let ratio = |from: usize, to: usize| if to == 0 { 0.0f32 } else { from as f32 / to as f32 };
    run(gpu, &["UPSAMPLE"], x, None, &shape, h, w, |p| {
        p.out_h = out_h as u32;
        p.out_w = out_w as u32;
        p.scale_h = ratio(h, out_h).to_bits();
        p.scale_w = ratio(w, out_w).to_bits();
    })
}

/// Bilinear resize of the last two dimensions to `out_h` x `out_w`, as PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=…)` (the DPT neck and
/// head of Depth Anything use both corner conventions).
pub fn resize_bilinear(
    gpu: &Gpu,
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> Result<Tensor, GpuError> {
    let (shape, h, w) = resized_shape("resize_bilinear", x, out_h, out_w)?;
    // PyTorch's scales: (in - 1)/(out - 1) with aligned corners (0 for one output row), else in/out.
    let scale = |from: usize, to: usize| match (align_corners, to) {
        (true, 0 | 1) | (false, 0) => 0.0f32,
        (true, _) => (from as f32 - 1.0) / (to as f32 - 1.0),
        (false, _) => from as f32 / to as f32,
    };
    let (sh, sw) = (scale(h, out_h), scale(w, out_w));
    let set = |p: &mut Params| {
        p.out_h = out_h as u32;
        p.out_w = out_w as u32;
        p.scale_h = sh.to_bits();
        p.scale_w = sw.to_bits();
    };
    if align_corners {
        run(gpu, &["BILINEAR", "ALIGNED"], x, None, &shape, h, w, set)
    } else {
        run(gpu, &["BILINEAR"], x, None, &shape, h, w, set)
    }
}

/// PyTorch's `pixel_shuffle`: [B, C·r², H, W] → [B, C, H·r, W·r] (ESRGAN-family upsampling).
pub fn pixel_shuffle(gpu: &Gpu, x: &Tensor, r: usize) -> Result<Tensor, GpuError> {
    let &[b, c, h, w] = x.shape() else {
        return Err(GpuError::Shape {
            op: "pixel_shuffle",
            detail: format!("needs [B, C, H, W], got {:?}", x.shape()),
        });
    };
    if r == 0 || c % (r * r) != 0 {
        return Err(GpuError::Shape {
            op: "pixel_shuffle",
            detail: format!("{c} channels do not split into {r}x{r}"),
        });
    }
    let shape = [b, c / (r * r), h * r, w * r];
    run(gpu, &["PIXEL_SHUFFLE"], x, None, &shape, h, w, |p| {
        (p.out_h, p.out_w, p.scale_h) = ((h * r) as u32, (w * r) as u32, r as u32);
    })
}

/// PyTorch's `pixel_unshuffle`: [B, C, H·r, W·r] → [B, C·r², H, W] (RRDBNet's input at scales
/// 1 and 2).
pub fn pixel_unshuffle(gpu: &Gpu, x: &Tensor, r: usize) -> Result<Tensor, GpuError> {
    let &[b, c, h, w] = x.shape() else {
        return Err(GpuError::Shape {
            op: "pixel_unshuffle",
            detail: format!("needs [B, C, H, W], got {:?}", x.shape()),
        });
    };
    if r == 0 || h % r != 0 || w % r != 0 {
        return Err(GpuError::Shape {
            op: "pixel_unshuffle",
            detail: format!("{h}x{w} does not divide by {r}"),
        });
    }
    let shape = [b, c * r * r, h / r, w / r];
    run(gpu, &["PIXEL_UNSHUFFLE"], x, None, &shape, h, w, |p| {
        (p.out_h, p.out_w, p.scale_h) = ((h / r) as u32, (w / r) as u32, r as u32);
    })
}

/// Concatenates `a` and `b` along dimension `dim`; all other dimensions must agree.
pub fn concat(gpu: &Gpu, a: &Tensor, b: &Tensor, dim: usize) -> Result<Tensor, GpuError> {
    let error = |detail: String| GpuError::Shape { op: "concat", detail };
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != sb.len() || dim >= sa.len() || (0..sa.len()).any(|d| d != dim && sa[d] != sb[d]) {
        return Err(error(format!("cannot concatenate {sa:?} and {sb:?} along dimension {dim}")));
    }
    if a.dtype() != b.dtype() {
        return Err(error("a and b must share a dtype".into()));
    }
    let inner: usize = sa[dim + 1..].iter().product();
    let mut shape = sa.to_vec();
    shape[dim] = sa[dim] + sb[dim];
    run(gpu, &["CONCAT"], a, Some(b), &shape, sa[dim] * inner, sb[dim] * inner, |_| ())
}
