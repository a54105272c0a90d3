//! conv2d as an implicit GEMM on the shared tiled kernel (matmul.wgsl's CONV mode).

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops::matmul::{dispatch_with_weight, u32_of, Params};
use crate::tensor::Tensor;
use crate::weight::Weight;

/// Zero padding on each side, in pixels. Symmetric for most convs; the VAE encoder's stride-2
/// downsampling pads only the bottom and right (diffusers' `F.pad(x, (0, 1, 0, 1))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn same(p: usize) -> Padding {
        Padding { top: p, bottom: p, left: p, right: p }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: Padding,
}

impl Conv2d {
    /// kxk, stride 1, padding k/2: the shape-preserving conv of ResNet blocks.
    pub fn same(k: usize) -> Conv2d {
        Conv2d { kernel: (k, k), stride: 1, padding: Padding::same(k / 2) }
    }

    /// Output height and width for an input of `h`×`w`.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let ph = h + self.padding.top + self.padding.bottom;
        let pw = w + self.padding.left + self.padding.right;
        if self.stride == 0 || ph < self.kernel.0 || pw < self.kernel.1 {
            return None;
        }
        Some(((ph - self.kernel.0) / self.stride + 1, (pw - self.kernel.1) / self.stride + 1))
    }
}

/// `x` [B, Cin, H, W] convolved with `w` [Cout, Cin·kh·kw] (+ its bias), plus `residual`
/// [B, Cout, OH, OW] when given. Returns [B, Cout, OH, OW].
pub fn conv2d(
    gpu: &Gpu,
    x: &Tensor,
    w: &Weight,
    conv: Conv2d,
    residual: Option<&Tensor>,
) -> Result<Tensor, GpuError> {
    conv2d_fused(gpu, x, w, conv, residual, false)
}

/// [`conv2d`], then max(0, ·) when `relu`, in the same kernel.
pub fn conv2d_fused(
    gpu: &Gpu,
    x: &Tensor,
    w: &Weight,
    conv: Conv2d,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor, GpuError> {
    let error = |detail: String| GpuError::Shape { op: "conv2d", detail };
    let [batch, cin, h, wd] = *x.shape() else {
        return Err(error(format!("input must be [B, C, H, W], got {:?}", x.shape())));
    };
    let (kh, kw) = conv.kernel;
    if w.cols != cin * kh * kw {
        return Err(error(format!(
            "weight [{}, {}] does not fit {cin} input channels with a {kh}x{kw} kernel",
            w.rows, w.cols
        )));
    }
    let (oh, ow) = conv.output_size(h, wd).ok_or_else(|| {
        error(format!("a {kh}x{kw} kernel does not fit a {h}x{wd} input with {:?}", conv.padding))
    })?;
    // The kernel divides a tap index by the kernel width as (tap · ceil(2¹⁶ / kw)) >> 16, exact
    // while taps · kw < 2¹⁶ (any kernel up to 40x40).
    if kh * kw * kw >= 1 << 16 || kh == 0 || kw == 0 {
        return Err(error(format!("a {kh}x{kw} kernel is outside the sizes conv2d supports")));
    }
    let cout = w.rows;
    let out_shape = [batch, cout, oh, ow];
    if let Some(r) = residual {
        if r.shape() != out_shape || r.dtype() != x.dtype() {
            return Err(error(format!("residual {r:?} must match the output {out_shape:?}")));
        }
    }
    let out = Tensor::empty(gpu, &out_shape, x.dtype());
    let m = oh * ow;
    let params = Params {
        m: u32_of(m)?,
        n: u32_of(cout)?,
        k: u32_of(cin * kh * kw)?,
        batch_stride_a: u32_of(cin * h * wd)?,
        batch_stride_b: 0,
        batch_stride_c: u32_of(cout * m)?,
        in_h: u32_of(h)?,
        in_w: u32_of(wd)?,
        out_w: u32_of(ow)?,
        kernel_h: u32_of(kh)?,
        kernel_w: u32_of(kw)?,
        stride: u32_of(conv.stride)?,
        pad_top: u32_of(conv.padding.top)?,
        pad_left: u32_of(conv.padding.left)?,
        kw_magic: u32_of((1usize << 16).div_ceil(kw))?,
        ..Default::default()
    };
    dispatch_with_weight(
        gpu,
        &params,
        if relu { &["CONV", "RELU"] } else { &["CONV"] },
        x,
        w,
        residual,
        &out,
        batch,
    )?;
    Ok(out)
}
