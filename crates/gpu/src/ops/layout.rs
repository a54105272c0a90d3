//! Nearest 2x upsampling and concatenation.

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
}

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| {
            [
                Variant::new(FILE, act, &["UPSAMPLE2X"]),
                Variant::new(FILE, act, &["CONCAT"]),
                Variant::new(FILE, act, &["TRANSPOSE"]),
            ]
        })
        .collect()
}

fn run(
    gpu: &Gpu,
    define: &'static str,
    x: &Tensor,
    b: Option<&Tensor>,
    shape: &[usize],
    a_len: usize,
    b_len: usize,
) -> Result<Tensor, GpuError> {
    let out = Tensor::empty(gpu, shape, x.dtype());
    if out.is_empty() {
        return Ok(out);
    }
    let (groups, row_stride) = grid(gpu, out.len())?;
    let to_u32 = |v: usize| {
        u32::try_from(v)
            .map_err(|_| GpuError::Shape { op: define_op(define), detail: format!("{v} exceeds 32 bits") })
    };
    let params = Params { n: to_u32(out.len())?, a_len: to_u32(a_len)?, b_len: to_u32(b_len)?, row_stride };
    let inputs: Vec<&Tensor> = std::iter::once(x).chain(b).collect();
    dispatch_map(gpu, &Variant::new(FILE, x.dtype(), &[define]), &params, &inputs, &out, groups)?;
    Ok(out)
}

fn define_op(define: &str) -> &'static str {
    match define {
        "CONCAT" => "concat",
        "TRANSPOSE" => "transpose",
        _ => "upsample2x",
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
    run(gpu, "TRANSPOSE", x, None, &shape, *r, *c)
}

/// Nearest-neighbour 2x upsampling of the last two dimensions: [..., H, W] → [..., 2H, 2W].
pub fn upsample2x(gpu: &Gpu, x: &Tensor) -> Result<Tensor, GpuError> {
    let [lead @ .., h, w] = x.shape() else {
        return Err(GpuError::Shape {
            op: "upsample2x",
            detail: format!("needs [..., H, W], got {:?}", x.shape()),
        });
    };
    let mut shape = lead.to_vec();
    shape.extend([2 * h, 2 * w]);
    run(gpu, "UPSAMPLE2X", x, None, &shape, *h, *w)
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
    run(gpu, "CONCAT", a, Some(b), &shape, sa[dim] * inner, sb[dim] * inner)
}
