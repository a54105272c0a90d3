//! Token + position embedding lookup (on the GPU) and the sinusoidal timestep embedding.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops::elementwise::grid;
use crate::quant::WeightFormat;
use crate::shaders::Variant;
use crate::tensor::{DType, Tensor};
use crate::weight::Weight;

const FILE: &str = "embedding.wgsl";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    width: u32,
    seq_len: u32,
    row_stride: u32,
    row_words: u32,
    groups_per_row: u32,
    first_id: u32,
    part_rows: u32,
}

pub(crate) fn variants() -> Vec<Variant> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|act| WeightFormat::ALL.into_iter().map(move |f| Variant::new(FILE, act, &[f.define()])))
        .collect()
}

/// `ids` [batch, seq_len] (row-major) → [batch, seq_len, D] = tokens[id] + positions[t].
/// `tokens` is [vocab, D]; `positions` is [≥ seq_len, D] in the output's dtype.
pub fn embed_tokens(
    gpu: &Gpu,
    ids: &[u32],
    seq_len: usize,
    tokens: &Weight,
    positions: &Tensor,
) -> Result<Tensor, GpuError> {
    let error = |detail: String| GpuError::Shape { op: "embed_tokens", detail };
    if seq_len == 0 || ids.len() % seq_len != 0 {
        return Err(error(format!("{} ids do not form rows of {seq_len}", ids.len())));
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= tokens.rows) {
        return Err(error(format!("token id {bad} is outside the vocabulary of {}", tokens.rows)));
    }
    let width = tokens.cols;
    match *positions.shape() {
        [p, d] if p >= seq_len && d == width => {}
        _ => return Err(error(format!("positions {:?} must be [≥{seq_len}, {width}]", positions.shape()))),
    }
    let batch = ids.len() / seq_len;
    let out = Tensor::empty(gpu, &[batch, seq_len, width], positions.dtype());
    if out.is_empty() {
        return Ok(out);
    }
    let (groups, row_stride) = grid(gpu, out.len())?;
    let to_u32 = |v: usize| u32::try_from(v).map_err(|_| error(format!("{v} exceeds 32 bits")));
    let id_buffer = gpu.buffer_with("token ids", bytemuck::cast_slice(ids), wgpu::BufferUsages::STORAGE);
    let pipeline = gpu.pipeline(&Variant::new(FILE, positions.dtype(), &[tokens.format.define()]))?;
    for part in &tokens.parts {
        let params = Params {
            n: to_u32(out.len())?,
            width: to_u32(width)?,
            seq_len: to_u32(seq_len)?,
            row_stride,
            row_words: to_u32(tokens.format.row_words(width))?,
            groups_per_row: to_u32(tokens.format.groups_per_row(width))?,
            first_id: to_u32(part.first_row)?,
            part_rows: to_u32(part.rows)?,
        };
        let uniform = gpu.uniform(&params);
        let mut bindings = vec![
            (0, uniform.as_entire_binding()),
            (1, id_buffer.as_entire_binding()),
            (2, out.binding()),
            (3, part.data.as_entire_binding()),
            (4, positions.binding()),
        ];
        if let Some(scales) = &part.scales {
            bindings.push((5, scales.as_entire_binding()));
        }
        gpu.dispatch(&pipeline, &bindings, groups)?;
    }
    Ok(out)
}

/// diffusers' `get_timestep_embedding`, computed on the CPU in f32 in the same order of
/// operations (a GPU `sin` of arguments near 1000 is not accurate enough): for each timestep,
/// `[sin(t·f), cos(t·f)]` (or `[cos, sin]` with `flip_sin_to_cos`) with
/// `f_k = exp(−ln(10000) · k / (dim/2 − downscale_freq_shift))`. Returns [timesteps, dim] values.
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f32,
) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f32.ln()) * k as f32 / (half as f32 - downscale_freq_shift)).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let sin = args.iter().map(|a| a.sin());
        let cos = args.iter().map(|a| a.cos());
        let start = out.len();
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
        // An odd `dim` is zero-padded at the end, as diffusers does.
        out.resize(start + dim, 0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::timestep_embedding;

    #[test]
    fn timestep_embedding_has_the_diffusers_layout() {
        let e = timestep_embedding(&[0.0, 1.0], 8, true, 0.0);
        // t = 0: cos half 1, sin half 0.
        assert_eq!(&e[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // t = 1, k = 0: frequency 1 → cos(1), sin(1); k = 2: 10000^(-1/2) = 0.01.
        assert!((e[8] - 1f32.cos()).abs() < 1e-7 && (e[12] - 1f32.sin()).abs() < 1e-7);
        assert!((e[14] - 0.01f32.sin()).abs() < 1e-7, "{}", e[14]);
        let unflipped = timestep_embedding(&[1.0], 8, false, 0.0);
        assert_eq!(unflipped[0], 1f32.sin());
        assert_eq!(timestep_embedding(&[5.0], 7, true, 0.0).len(), 7);
    }
}
