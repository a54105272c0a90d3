//! The end-to-end check the app runs on start and the CLI runs on demand: a matmul on the GPU
//! against the CPU reference, from a seed both sides (and the browser test) can rebuild.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::ops;
use crate::reference::{self, TestRng};
use crate::tensor::{DType, Tensor};
use crate::tolerance::{compare, Tolerance};

/// Sizes that are deliberately not multiples of the 64x64 tile or the 16-wide K slice.
pub const MATMUL_SHAPE: (usize, usize, usize) = (67, 45, 53);
pub const MATMUL_SEED: u32 = 2024;

#[derive(Debug, Clone)]
pub struct MatmulReport {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub seed: u32,
    /// The GPU's output, row-major [m, n].
    pub output: Vec<f32>,
    pub max_abs_err: f32,
    pub passed: bool,
}

/// Inputs: `a` [m, k] then `b` [k, n], drawn in that order from `TestRng::new(seed)`.
pub fn matmul_inputs(m: usize, k: usize, n: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let mut rng = TestRng::new(seed);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    (a, b)
}

pub async fn matmul_check(
    gpu: &Gpu,
    m: usize,
    k: usize,
    n: usize,
    seed: u32,
) -> Result<MatmulReport, GpuError> {
    let (a, b) = matmul_inputs(m, k, n, seed);
    let ta = Tensor::from_f32(gpu, &[m, k], &a, DType::F32)?;
    let tb = Tensor::from_f32(gpu, &[k, n], &b, DType::F32)?;
    let output = ops::matmul(gpu, &ta, &tb, false)?.read_f32(gpu).await?;
    let expected = reference::matmul(&a, &b, 1, m, k, n);
    let cmp = compare(&output, &expected, Tolerance::f32_sum(k));
    Ok(MatmulReport {
        m,
        k,
        n,
        seed,
        output,
        max_abs_err: cmp.max_abs_err,
        passed: cmp.passed,
    })
}
