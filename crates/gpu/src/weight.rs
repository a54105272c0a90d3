//! A weight matrix (and optional bias) resident on the GPU, in one of the packed formats.
//!
//! A weight larger than the adapter's `maxStorageBufferBindingSize` (128 MiB unless the adapter
//! grants more) is split by rows into parts that each fit one binding; kernels run once per
//! part, each writing its own slice of the output.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::quant::{PackedWeight, WeightFormat};

/// A buffer of weight bytes, counted in [`Gpu::weight_bytes`] until it is dropped.
pub(crate) struct WeightBuffer {
    pub buffer: wgpu::Buffer,
    pub bytes: u64,
    pub counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::ops::Deref for WeightBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for WeightBuffer {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WeightBuffer {
    /// A buffer with `contents`, counted in [`Gpu::weight_bytes`] while it lives.
    pub(crate) fn new(gpu: &Gpu, label: &str, contents: &[u8]) -> WeightBuffer {
        let bytes = contents.len() as u64;
        gpu.weight_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        WeightBuffer {
            buffer: gpu.buffer_with(label, contents, wgpu::BufferUsages::STORAGE),
            bytes,
            counter: gpu.weight_bytes.clone(),
        }
    }
}

/// Rows `first_row .. first_row + rows` of a weight, in buffers of their own.
pub(crate) struct WeightPart {
    pub first_row: usize,
    pub rows: usize,
    pub data: WeightBuffer,
    pub scales: Option<WeightBuffer>,
    /// f32, one per row of this part.
    pub bias: Option<WeightBuffer>,
}

pub struct Weight {
    pub format: WeightFormat,
    /// Outputs.
    pub rows: usize,
    /// Inputs (for a conv: in_channels · kh · kw).
    pub cols: usize,
    pub(crate) parts: Vec<WeightPart>,
    has_bias: bool,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Weight([{}, {}], {:?}, bias: {}, parts: {})",
            self.rows,
            self.cols,
            self.format,
            self.has_bias,
            self.parts.len()
        )
    }
}

impl Weight {
    pub fn upload(gpu: &Gpu, packed: &PackedWeight, bias: Option<&[f32]>) -> Result<Weight, GpuError> {
        Weight::upload_in_parts(gpu, packed, bias, gpu.limits().max_storage_buffer_binding_size)
    }

    /// As [`Weight::upload`], with parts of at most `max_part_bytes` (tests force splits with a
    /// small value; production uses the adapter's binding limit).
    pub fn upload_in_parts(
        gpu: &Gpu,
        packed: &PackedWeight,
        bias: Option<&[f32]>,
        max_part_bytes: u64,
    ) -> Result<Weight, GpuError> {
        if let Some(b) = bias {
            if b.len() != packed.rows {
                return Err(GpuError::Shape {
                    op: "weight upload",
                    detail: format!("{} bias values for {} output rows", b.len(), packed.rows),
                });
            }
        }
        let format = packed.format;
        let row_words = format.row_words(packed.cols);
        // Q4 scales are f16 pairs: keep parts on even rows' worth of groups so a part's scales
        // start on a word boundary.
        let groups = format.groups_per_row(packed.cols);
        let row_align = if format == WeightFormat::Q4 && groups % 2 == 1 { 2 } else { 1 };
        let row_bytes = (row_words.max(1) * 4) as u64;
        let mut rows_per_part = ((max_part_bytes / row_bytes) as usize / row_align) * row_align;
        if rows_per_part == 0 {
            return Err(GpuError::LimitTooSmall {
                limit: "maxStorageBufferBindingSize",
                have: max_part_bytes,
                need: row_bytes * row_align as u64,
                needed_for: "one row of this weight",
            });
        }
        rows_per_part = rows_per_part.min(packed.rows.max(1));

        let storage = |label: &str, contents: &[u8]| WeightBuffer::new(gpu, label, contents);
        let mut parts = Vec::new();
        let mut first_row = 0;
        while first_row < packed.rows || (packed.rows == 0 && parts.is_empty()) {
            let rows = rows_per_part.min(packed.rows - first_row);
            let data = &packed.data[first_row * row_words..(first_row + rows) * row_words];
            let scales: Option<&[u32]> = match format {
                WeightFormat::F32 | WeightFormat::F16 => None,
                WeightFormat::Q8 => Some(&packed.scales[first_row..first_row + rows]),
                WeightFormat::Q4 => {
                    let start = first_row * groups / 2;
                    let end = ((first_row + rows) * groups).div_ceil(2);
                    Some(&packed.scales[start..end])
                }
            };
            parts.push(WeightPart {
                first_row,
                rows,
                data: storage("weight", bytemuck::cast_slice(data)),
                scales: scales.map(|s| storage("weight scales", bytemuck::cast_slice(s))),
                bias: bias.map(|b| storage("bias", bytemuck::cast_slice(&b[first_row..first_row + rows]))),
            });
            if rows == 0 {
                break;
            }
            first_row += rows;
        }
        Ok(Weight { format, rows: packed.rows, cols: packed.cols, parts, has_bias: bias.is_some() })
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
                detail: format!("[{rows}, {cols}] needs {} values, got {}", rows * cols, values.len()),
            });
        }
        Weight::upload(gpu, &PackedWeight::pack(values, rows, cols, format), bias)
    }

    /// Adds (or replaces) the bias: weights streamed in before their bias get it afterwards.
    pub fn set_bias(&mut self, gpu: &Gpu, bias: &[f32]) -> Result<(), GpuError> {
        if bias.len() != self.rows {
            return Err(GpuError::Shape {
                op: "weight bias",
                detail: format!("{} bias values for {} output rows", bias.len(), self.rows),
            });
        }
        for part in &mut self.parts {
            let slice = &bias[part.first_row..part.first_row + part.rows];
            part.bias = Some(WeightBuffer::new(gpu, "bias", bytemuck::cast_slice(slice)));
        }
        self.has_bias = true;
        Ok(())
    }

    pub fn has_bias(&self) -> bool {
        self.has_bias
    }

    /// How many bindings the weight was split into.
    pub fn part_count(&self) -> usize {
        self.parts.len()
    }
}
