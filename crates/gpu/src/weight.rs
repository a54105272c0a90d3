//! A weight matrix (and optional bias) resident on the GPU, in one of the packed formats.

use wgpu::util::DeviceExt;

use crate::device::Gpu;
use crate::error::GpuError;
use crate::quant::{PackedWeight, WeightFormat};

pub struct Weight {
    pub format: WeightFormat,
    /// Outputs.
    pub rows: usize,
    /// Inputs (for a conv: in_channels · kh · kw).
    pub cols: usize,
    pub(crate) data: wgpu::Buffer,
    pub(crate) scales: Option<wgpu::Buffer>,
    /// f32, one per row.
    pub(crate) bias: Option<wgpu::Buffer>,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Weight([{}, {}], {:?}, bias: {})",
            self.rows,
            self.cols,
            self.format,
            self.bias.is_some()
        )
    }
}

impl Weight {
    pub fn upload(
        gpu: &Gpu,
        packed: &PackedWeight,
        bias: Option<&[f32]>,
    ) -> Result<Weight, GpuError> {
        if let Some(b) = bias {
            if b.len() != packed.rows {
                return Err(GpuError::Shape {
                    op: "weight upload",
                    detail: format!("{} bias values for {} output rows", b.len(), packed.rows),
                });
            }
        }
        let max_binding = gpu.limits().max_storage_buffer_binding_size;
        let bytes = (packed.data.len() * 4) as u64;
        if bytes > max_binding {
            return Err(GpuError::LimitTooSmall {
                limit: "maxStorageBufferBindingSize",
                have: max_binding,
                need: bytes,
                needed_for:
                    "a weight matrix this large in one binding; use a smaller weight format",
            });
        }
        let storage = |label: &str, contents: &[u8]| {
            gpu.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: if contents.is_empty() {
                        &[0u8; 4]
                    } else {
                        contents
                    },
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        Ok(Weight {
            format: packed.format,
            rows: packed.rows,
            cols: packed.cols,
            data: storage("weight", bytemuck::cast_slice(&packed.data)),
            scales: (!packed.scales.is_empty())
                .then(|| storage("weight scales", bytemuck::cast_slice(&packed.scales))),
            bias: bias.map(|b| storage("bias", bytemuck::cast_slice(b))),
        })
    }

    /// Packs `values` ([rows, cols], row-major) into `format` and uploads it.
    pub fn from_f32(
        gpu: &Gpu,
        rows: usize,
        cols: usize,
        values: &[f32],
        bias: Option<&[f32]>,
        format: WeightFormat,
    ) -> Result<Weight, GpuError> {
        if values.len() != rows * cols {
            return Err(GpuError::Shape {
                op: "weight upload",
                detail: format!(
                    "[{rows}, {cols}] needs {} values, got {}",
                    rows * cols,
                    values.len()
                ),
            });
        }
        Weight::upload(gpu, &PackedWeight::pack(values, rows, cols, format), bias)
    }
}
