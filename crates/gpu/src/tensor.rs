//! A GPU tensor: a storage buffer with a shape and an element type.

use crate::device::Gpu;
use crate::error::GpuError;
use wgpu::util::DeviceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
        }
    }
}

/// Row-major, contiguous. Ops take tensors and return new ones.
pub struct Tensor {
    pub(crate) buffer: wgpu::Buffer,
    shape: Vec<usize>,
    dtype: DType,
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// Uploads `data` (row-major) as an f32 tensor of `shape`.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor, GpuError> {
        let elements: usize = shape.iter().product();
        if elements != data.len() {
            return Err(GpuError::Shape {
                op: "upload",
                detail: format!(
                    "shape {shape:?} holds {elements} values, got {}",
                    data.len()
                ),
            });
        }
        let buffer = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("tensor"),
                // A zero-size buffer cannot be bound; an empty tensor still gets one element.
                contents: if data.is_empty() {
                    &[0u8; 4]
                } else {
                    bytemuck::cast_slice(data)
                },
                usage: STORAGE_USAGE,
            });
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    /// An uninitialised tensor for an op's output.
    pub(crate) fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Tensor {
        let bytes = (shape.iter().product::<usize>() * dtype.size_bytes()).max(4) as u64;
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tensor"),
            size: bytes,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the tensor back to the CPU. Also surfaces any error the device reported since the
    /// last readback, so a broken kernel is an error here rather than silent garbage.
    pub async fn read_f32(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        let bytes = (self.len() * self.dtype.size_bytes()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, bytes);
        gpu.queue.submit([encoder.finish()]);

        let (tx, rx) = futures_channel::oneshot::channel();
        let slice = staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = tx.send(result);
        });
        gpu.poll_wait();
        rx.await
            .map_err(|_| {
                GpuError::Readback("the device was lost before the mapping finished".into())
            })?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        gpu.take_error()?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let values = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(values)
    }
}
