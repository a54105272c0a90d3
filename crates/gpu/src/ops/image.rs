//! Tensors ↔ RGBA8 pixels, for display, PNG output and image inputs.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops::elementwise::grid;
use crate::pool::PooledBuffer;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};

const FILE: &str = "image.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pixels: u32,
    channels: u32,
    row_stride: u32,
    _pad: u32,
    m: [[f32; 4]; 4],
}

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| [Variant::new(FILE, act, &["TO_RGBA8"]), Variant::new(FILE, act, &["FROM_RGBA8"])])
        .collect()
}

/// An RGBA8 image on the GPU, one u32 per pixel (R in the low byte).
pub struct Rgba8Image {
    buffer: PooledBuffer,
    pub width: usize,
    pub height: usize,
}

/// How channels become colours: `rgb = clamp(matrix · x + bias, 0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorMap {
    /// Rows r, g, b; one column per input channel (up to 4).
    pub matrix: [[f32; 4]; 3],
    pub bias: [f32; 3],
}

impl ColorMap {
    /// RGB already in [0, 1] (TAESD's output).
    pub const RGB: ColorMap = ColorMap {
        matrix: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
        bias: [0.0, 0.0, 0.0],
    };

    /// A decoded image in [-1, 1] (VAE and TAESD output) to [0, 1].
    pub const SIGNED_RGB: ColorMap = ColorMap {
        matrix: [[0.5, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0]],
        bias: [0.5, 0.5, 0.5],
    };
}

fn error(op: &'static str, detail: String) -> GpuError {
    GpuError::Shape { op, detail }
}

fn params(
    gpu: &Gpu,
    pixels: usize,
    channels: usize,
    m: [[f32; 4]; 4],
) -> Result<(Params, [u32; 3]), GpuError> {
    let (groups, row_stride) = grid(gpu, pixels)?;
    let pixels = u32::try_from(pixels).map_err(|_| error("image", "too many pixels".into()))?;
    Ok((Params { pixels, channels: channels as u32, row_stride, _pad: 0, m }, groups))
}

impl Rgba8Image {
    /// `x` [1, C ≤ 4, H, W] through `map` to pixels.
    pub fn from_tensor(gpu: &Gpu, x: &Tensor, map: ColorMap) -> Result<Rgba8Image, GpuError> {
        let [1, channels @ 1..=4, height, width] = *x.shape() else {
            return Err(error("to_rgba8", format!("needs [1, C ≤ 4, H, W], got {:?}", x.shape())));
        };
        let pixels = width * height;
        let buffer = gpu.pool.take(&gpu.device, (pixels.max(1) * 4) as u64, None);
        let [r, g, b] = map.matrix;
        let m = [r, g, b, [map.bias[0], map.bias[1], map.bias[2], 0.0]];
        let (params, groups) = params(gpu, pixels, channels, m)?;
        let pipeline = gpu.pipeline(&Variant::new(FILE, x.dtype(), &["TO_RGBA8"]))?;
        let uniform = gpu.uniform(&params);
        gpu.dispatch(
            &pipeline,
            &[(0, uniform.as_entire_binding()), (1, x.binding()), (2, buffer.buffer.as_entire_binding())],
            groups,
        )?;
        Ok(Rgba8Image { buffer, width, height })
    }

    /// Uploads RGBA8 bytes (4 per pixel, row-major).
    pub fn upload(gpu: &Gpu, rgba: &[u8], width: usize, height: usize) -> Result<Rgba8Image, GpuError> {
        if rgba.len() != width * height * 4 || rgba.is_empty() {
            return Err(error(
                "rgba8 upload",
                format!("{width}x{height} needs {} bytes, got {}", width * height * 4, rgba.len()),
            ));
        }
        let buffer = gpu.pool.take(&gpu.device, rgba.len() as u64, Some(rgba));
        Ok(Rgba8Image { buffer, width, height })
    }

    /// The pixels as [1, 3, H, W] = byte / 255 · scale + shift (2, −1 for the VAE's [-1, 1]).
    pub fn to_tensor(&self, gpu: &Gpu, dtype: DType, scale: f32, shift: f32) -> Result<Tensor, GpuError> {
        let out = Tensor::empty(gpu, &[1, 3, self.height, self.width], dtype);
        let mut m = [[0.0; 4]; 4];
        m[0] = [scale, shift, 0.0, 0.0];
        let (params, groups) = params(gpu, self.width * self.height, 3, m)?;
        let pipeline = gpu.pipeline(&Variant::new(FILE, dtype, &["FROM_RGBA8"]))?;
        let uniform = gpu.uniform(&params);
        gpu.dispatch(
            &pipeline,
            &[
                (0, uniform.as_entire_binding()),
                (1, self.buffer.buffer.as_entire_binding()),
                (2, out.binding()),
            ],
            groups,
        )?;
        Ok(out)
    }

    /// RGBA8 bytes, 4 per pixel, row-major.
    pub async fn read(&self, gpu: &Gpu) -> Result<Vec<u8>, GpuError> {
        let bytes = (self.width * self.height * 4) as u64;
        let mut data = crate::tensor::read_buffer(gpu, &self.buffer.buffer, bytes).await?;
        data.truncate(bytes as usize);
        Ok(data)
    }
}
