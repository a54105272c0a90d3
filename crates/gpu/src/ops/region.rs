//! Rectangles between feature maps: a tile with its border gathered from the tiles around it, a
//! finished tile pasted into the whole image (the tiled VAE decode).

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops::elementwise::{dispatch_map, grid};
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "region.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    row_stride: u32,
    h: u32,
    w: u32,
    src_h: u32,
    src_w: u32,
    dst_h: u32,
    dst_w: u32,
    src_y: u32,
    src_x: u32,
    dst_y: u32,
    dst_x: u32,
    scale: u32,
    _pad: [u32; 3],
}

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16].map(|act| Variant::new(FILE, act, &[])).to_vec()
}

/// Which rectangle goes where: `h` x `w` pixels from (`src_y`, `src_x`) of the source seen
/// through a nearest `scale`x upsampling (coordinates of the upsampled source) to (`dst_y`,
/// `dst_x`) of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub src_y: usize,
    pub src_x: usize,
    pub dst_y: usize,
    pub dst_x: usize,
    pub h: usize,
    pub w: usize,
    pub scale: usize,
}

/// Copies `region` of `src` [B, C, H, W] into `dst` [B, C, H', W'] (same B·C and type), in
/// place: work recorded before reads `dst` as it was, work recorded after sees the copy.
pub fn copy_region(gpu: &Gpu, src: &Tensor, dst: &Tensor, region: Region) -> Result<(), GpuError> {
    let error = |detail: String| GpuError::Shape { op: "copy_region", detail };
    let ([sb, sc, sh, sw], [db, dc, dh, dw]) = (src.shape(), dst.shape()) else {
        return Err(error(format!("needs [B, C, H, W] maps, got {:?} and {:?}", src.shape(), dst.shape())));
    };
    let Region { src_y, src_x, dst_y, dst_x, h, w, scale } = region;
    if sb * sc != db * dc || src.dtype() != dst.dtype() {
        return Err(error(format!("cannot copy between {src:?} and {dst:?}")));
    }
    let fits = scale > 0
        && src_y + h <= sh * scale
        && src_x + w <= sw * scale
        && dst_y + h <= *dh
        && dst_x + w <= *dw;
    if !fits {
        return Err(error(format!("{region:?} does not fit {:?} → {:?}", src.shape(), dst.shape())));
    }
    let n = sb * sc * h * w;
    if n == 0 {
        return Ok(());
    }
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| error(format!("{v} exceeds 32 bits")));
    let (groups, row_stride) = grid(gpu, n)?;
    let params = Params {
        n: to_u32(n)?,
        row_stride,
        h: to_u32(h)?,
        w: to_u32(w)?,
        src_h: to_u32(*sh)?,
        src_w: to_u32(*sw)?,
        dst_h: to_u32(*dh)?,
        dst_w: to_u32(*dw)?,
        src_y: to_u32(src_y)?,
        src_x: to_u32(src_x)?,
        dst_y: to_u32(dst_y)?,
        dst_x: to_u32(dst_x)?,
        scale: to_u32(scale)?,
        _pad: [0; 3],
    };
    dispatch_map(gpu, &Variant::new(FILE, src.dtype(), &[]), &params, &[src], dst, groups)
}

/// An uninitialised [B, C, H, W] map to paste regions into.
pub fn blank(gpu: &Gpu, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::empty(gpu, shape, dtype)
}
