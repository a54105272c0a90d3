use wgpu::util::DeviceExt;

use crate::device::Gpu;
use crate::error::GpuError;
use crate::shaders;
use crate::tensor::{DType, Tensor};

const TILE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_stride_a: u32,
    batch_stride_b: u32,
    batch_stride_c: u32,
    _pad: [u32; 2],
}

/// `a` [batch, m, k] (or [m, k]) times `b` [batch, k, n] or [k, n] (shared by every batch).
/// Returns [batch, m, n], or [m, n] when `a` is 2-D.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor, GpuError> {
    let shape_error = |detail: String| GpuError::Shape {
        op: "matmul",
        detail,
    };
    let (batch, m, k) = match *a.shape() {
        [m, k] => (1, m, k),
        [batch, m, k] => (batch, m, k),
        _ => {
            return Err(shape_error(format!(
                "a must be 2-D or 3-D, got {:?}",
                a.shape()
            )))
        }
    };
    let (b_batch, kb, n) = match *b.shape() {
        [k, n] => (1, k, n),
        [batch, k, n] => (batch, k, n),
        _ => {
            return Err(shape_error(format!(
                "b must be 2-D or 3-D, got {:?}",
                b.shape()
            )))
        }
    };
    if kb != k {
        return Err(shape_error(format!(
            "inner sizes differ: a {:?}, b {:?}",
            a.shape(),
            b.shape()
        )));
    }
    if b_batch != 1 && b_batch != batch {
        return Err(shape_error(format!(
            "batch sizes differ: a {:?}, b {:?}",
            a.shape(),
            b.shape()
        )));
    }
    if a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(shape_error("only f32 operands are supported".into()));
    }
    let groups = [n.div_ceil(TILE), m.div_ceil(TILE), batch];
    let max_groups = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if groups.iter().any(|&g| g > max_groups) {
        return Err(GpuError::LimitTooSmall {
            limit: "maxComputeWorkgroupsPerDimension",
            have: max_groups as u64,
            need: *groups.iter().max().unwrap_or(&0) as u64,
            needed_for: "a matmul this large",
        });
    }

    let out_shape: Vec<usize> = if a.shape().len() == 2 {
        vec![m, n]
    } else {
        vec![batch, m, n]
    };
    let out = Tensor::empty(gpu, &out_shape, DType::F32);
    if out.is_empty() {
        return Ok(out);
    }
    let to_u32 = |v: usize| {
        u32::try_from(v).map_err(|_| shape_error(format!("{v} elements exceed 32-bit indexing")))
    };
    let params = Params {
        m: to_u32(m)?,
        n: to_u32(n)?,
        k: to_u32(k)?,
        batch_stride_a: to_u32(m * k)?,
        batch_stride_b: if b_batch == 1 { 0 } else { to_u32(k * n)? },
        batch_stride_c: to_u32(m * n)?,
        _pad: [0; 2],
    };
    let uniform = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("matmul params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let pipeline = gpu.pipeline("matmul_f32", shaders::MATMUL);
    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("matmul"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: uniform.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: a.buffer.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: b.buffer.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: out.buffer.as_entire_binding(),
            },
        ],
    });
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0] as u32, groups[1] as u32, groups[2] as u32);
    }
    gpu.queue.submit([encoder.finish()]);
    Ok(out)
}
