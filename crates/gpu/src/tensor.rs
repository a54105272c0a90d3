//! A GPU tensor: a pooled storage buffer with a shape and an element type.

use std::sync::Arc;

use half::f16;

use crate::device::Gpu;
use crate::error::GpuError;
use crate::pool::PooledBuffer;

/// Activation element types. f16 needs the adapter's `shader-f16`; kernels accumulate in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// Row-major and contiguous. Ops take tensors and return new ones; `reshape` shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    buffer: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.dtype)
    }
}

/// Bytes a tensor of `elements` needs: bindings are sized in whole 4-byte words.
fn storage_bytes(elements: usize, dtype: DType) -> u64 {
    ((elements * dtype.size_bytes()).div_ceil(4) * 4).max(4) as u64
}

impl Tensor {
    /// Uploads `data` (row-major) as a tensor of `shape`, converted to `dtype`.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32], dtype: DType) -> Result<Tensor, GpuError> {
        let elements: usize = shape.iter().product();
        if elements != data.len() {
            return Err(GpuError::Shape {
                op: "upload",
                detail: format!("shape {shape:?} holds {elements} values, got {}", data.len()),
            });
        }
        let mut bytes = match dtype {
            DType::F32 => bytemuck::cast_slice::<f32, u8>(data).to_vec(),
            DType::F16 => data.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        };
        bytes.resize(storage_bytes(elements, dtype) as usize, 0);
        let buffer = gpu.pool.take(&gpu.device, bytes.len() as u64, Some(&bytes));
        Ok(Tensor { buffer: Arc::new(buffer), shape: shape.to_vec(), dtype })
    }

    /// An uninitialised tensor for an op's output.
    pub(crate) fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Tensor {
        let bytes = storage_bytes(shape.iter().product(), dtype);
        let buffer = gpu.pool.take(&gpu.device, bytes, None);
        Tensor { buffer: Arc::new(buffer), shape: shape.to_vec(), dtype }
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

    /// The same data viewed with another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, GpuError> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(GpuError::Shape {
                op: "reshape",
                detail: format!("{:?} cannot become {shape:?}", self.shape),
            });
        }
        Ok(Tensor { buffer: self.buffer.clone(), shape: shape.to_vec(), dtype: self.dtype })
    }

    pub(crate) fn byte_len(&self) -> u64 {
        storage_bytes(self.len(), self.dtype)
    }

    /// The binding for this tensor's bytes (the pooled buffer may be larger).
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer.buffer,
            offset: 0,
            size: wgpu::BufferSize::new(self.byte_len()),
        })
    }

    /// Copies the tensor back to the CPU as f32, submitting all recorded work first. Also
    /// surfaces any error the device reported since the last readback, so a broken kernel is an
    /// error here rather than silent garbage.
    pub async fn read_f32(&self, gpu: &Gpu) -> Result<Vec<f32>, GpuError> {
        let bytes = read_buffer(gpu, &self.buffer.buffer, self.byte_len()).await?;
        let n = self.len();
        Ok(match self.dtype {
            DType::F32 => {
                bytes.chunks_exact(4).take(n).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            DType::F16 => {
                bytes.chunks_exact(2).take(n).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
        })
    }
}

/// Copies the first `bytes` of `buffer` to the CPU after submitting all recorded work, and
/// reports any error the device raised meanwhile.
pub(crate) async fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, GpuError> {
    if let Some(why) = gpu.lost() {
        return Err(GpuError::DeviceLost(why));
    }
    if gpu.is_record_only() {
        gpu.flush();
        return Ok(vec![0; bytes as usize]);
    }
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.record(|encoder| encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes));
    gpu.flush();

    let (tx, rx) = futures_channel::oneshot::channel();
    let slice = staging.slice(..);
    slice.map_async(wgpu::MapMode::Read, move |result| {
        let _ = tx.send(result);
    });
    gpu.poll_wait();
    rx.await
        .map_err(|_| {
            gpu.explain(GpuError::Readback("the device was lost before the mapping finished".into()))
        })?
        .map_err(|e| gpu.explain(GpuError::Readback(e.to_string())))?;
    gpu.take_error()?;
    let view = slice.get_mapped_range().map_err(|e| gpu.explain(GpuError::Readback(e.to_string())))?;
    let data = view.to_vec();
    drop(view);
    staging.unmap();
    Ok(data)
}
