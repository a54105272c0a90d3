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
    Ok(MatmulReport { m, k, n, seed, output, max_abs_err: cmp.max_abs_err, passed: cmp.passed })
}

/// One kernel's check in [`kernel_suite`].
#[derive(Debug, Clone)]
pub struct KernelCheck {
    pub name: &'static str,
    pub max_abs_err: f32,
    pub passed: bool,
}

fn suite_tolerance(dtype: DType, terms: usize) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance { abs: 1e-5 + 2e-6 * terms as f32, rel: 1e-4 },
        DType::F16 => Tolerance { abs: 3e-3 + 2e-6 * terms as f32, rel: 3e-3 },
    }
}

fn round(values: Vec<f32>, dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => values,
        DType::F16 => values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
    }
}

/// A small run of every kernel family on this device, each against its CPU reference: the
/// browser runs it to prove the kernels compile and compute right under its WGSL compiler.
pub async fn kernel_suite(gpu: &Gpu, dtype: DType) -> Result<Vec<KernelCheck>, GpuError> {
    use crate::ops::{Conv2d, Padding, Unary};
    use crate::quant::{PackedWeight, WeightFormat};
    use crate::weight::Weight;

    let mut rng = TestRng::new(31);
    let mut checks = Vec::new();
    let mut record = |name, got: Vec<f32>, want: Vec<f32>, tol| {
        let cmp = compare(&got, &want, tol);
        checks.push(KernelCheck { name, max_abs_err: cmp.max_abs_err, passed: cmp.passed });
    };
    let t = |shape: &[usize], v: &[f32]| Tensor::from_f32(gpu, shape, v, dtype);
    let f32_param = |v: &[f32]| Tensor::from_f32(gpu, &[v.len()], v, DType::F32);

    // Linear layers with quantized weights (dequantized in the kernel's inner loop).
    for (name, format) in
        [("linear int8 + bias", WeightFormat::Q8), ("linear 4-bit + bias", WeightFormat::Q4)]
    {
        let (m, k, n) = (33, 70, 45);
        let x = round(rng.vec(m * k), dtype);
        let packed = PackedWeight::pack(&rng.vec(n * k), n, k, format);
        let bias = rng.vec(n);
        let w = Weight::upload(gpu, &packed, Some(&bias))?;
        let got = ops::linear(gpu, &t(&[m, k], &x)?, &w)?.read_f32(gpu).await?;
        let deq = packed.dequantize();
        let wt: Vec<f32> =
            (0..k).flat_map(|c| (0..n).map(move |r| (r, c))).map(|(r, c)| deq[r * k + c]).collect();
        let mut want = reference::matmul(&x, &wt, 1, m, k, n);
        want.iter_mut().enumerate().for_each(|(i, v)| *v += bias[i % n]);
        record(name, got, want, suite_tolerance(dtype, k));
    }

    // Convolutions: 3x3 with a residual, and the VAE's asymmetric stride-2 downsampling.
    let down =
        Conv2d { kernel: (3, 3), stride: 2, padding: Padding { top: 0, bottom: 1, left: 0, right: 1 } };
    for (name, conv, residual) in
        [("conv2d 3x3 + residual", Conv2d::same(3), true), ("conv2d stride 2", down, false)]
    {
        let (cin, h, w, cout) = (8, 12, 10, 12);
        let (oh, ow) = conv.output_size(h, w).unwrap_or((0, 0));
        let x = round(rng.vec(cin * h * w), dtype);
        let packed = PackedWeight::pack(&rng.vec(cout * cin * 9), cout, cin * 9, WeightFormat::F16);
        let bias = rng.vec(cout);
        let res = round(rng.vec(cout * oh * ow), dtype);
        let weight = Weight::upload(gpu, &packed, Some(&bias))?;
        let res_t = t(&[1, cout, oh, ow], &res)?;
        let got = ops::conv2d(gpu, &t(&[1, cin, h, w], &x)?, &weight, conv, residual.then_some(&res_t))?
            .read_f32(gpu)
            .await?;
        let pads = (conv.padding.top, conv.padding.left);
        let mut want = reference::conv2d(
            &x,
            (1, cin, h, w),
            &packed.dequantize(),
            Some(&bias),
            cout,
            (3, 3),
            conv.stride,
            pads,
            (oh, ow),
        );
        if residual {
            want.iter_mut().zip(&res).for_each(|(v, r)| *v += r);
        }
        record(name, got, want, suite_tolerance(dtype, cin * 9));
    }

    // Attention: causal self-attention (CLIP) and cross-attention over 77 tokens (UNet).
    for (name, nq, nk, heads, head_dim, causal) in
        [("attention causal", 50, 50, 2, 24, true), ("attention cross", 40, 77, 8, 8, false)]
    {
        let width = heads * head_dim;
        let q = round(rng.vec(nq * width).iter().map(|v| v * 2.0).collect(), dtype);
        let k = round(rng.vec(nk * width).iter().map(|v| v * 2.0).collect(), dtype);
        let v = round(rng.vec(nk * width), dtype);
        let got = ops::attention(
            gpu,
            &t(&[1, nq, width], &q)?,
            &t(&[1, nk, width], &k)?,
            &t(&[1, nk, width], &v)?,
            heads,
            causal,
        )?
        .read_f32(gpu)
        .await?;
        let want = reference::attention(&q, &k, &v, 1, nq, nk, heads, head_dim, causal);
        record(name, got, want, suite_tolerance(dtype, head_dim));
    }

    // Normalisation.
    let (c, hw, groups) = (16, 36, 4);
    let x = round(rng.vec(c * hw).iter().map(|v| v * 3.0 + 1.0).collect(), dtype);
    let (gamma, beta) = (rng.vec(c), rng.vec(c));
    let got = ops::group_norm(
        gpu,
        &t(&[1, c, 6, 6], &x)?,
        groups,
        &f32_param(&gamma)?,
        &f32_param(&beta)?,
        1e-5,
        ops::Fused::Silu,
    )?
    .read_f32(gpu)
    .await?;
    record(
        "group norm + SiLU",
        got,
        reference::norm::group_norm(&x, 1, c, groups, &gamma, &beta, 1e-5, ops::Fused::Silu),
        suite_tolerance(dtype, 1),
    );
    let (rows, d) = (9, 70);
    let x = round(rng.vec(rows * d), dtype);
    let (gamma, beta) = (rng.vec(d), rng.vec(d));
    let got = ops::layer_norm(gpu, &t(&[rows, d], &x)?, &f32_param(&gamma)?, &f32_param(&beta)?, 1e-5)?
        .read_f32(gpu)
        .await?;
    record(
        "layer norm",
        got,
        reference::norm::layer_norm(&x, d, &gamma, &beta, 1e-5),
        suite_tolerance(dtype, 1),
    );

    // Elementwise and layout.
    let x = round(rng.vec(6 * 2 * 21).iter().map(|v| v * 4.0).collect(), dtype);
    let got = ops::geglu(gpu, &t(&[6, 42], &x)?)?.read_f32(gpu).await?;
    record("GEGLU (erf GELU)", got, reference::elementwise::geglu(&x, 21), suite_tolerance(dtype, 1));
    let got = ops::unary(gpu, &t(&[x.len()], &x)?, Unary::QuickGelu)?.read_f32(gpu).await?;
    record("quick GELU", got, reference::elementwise::unary(&x, Unary::QuickGelu), suite_tolerance(dtype, 1));
    let (a, b) = (round(rng.vec(2 * 3 * 20), dtype), round(rng.vec(2 * 5 * 20), dtype));
    let joined = ops::concat(gpu, &t(&[2, 3, 4, 5], &a)?, &t(&[2, 5, 4, 5], &b)?, 1)?;
    let got = ops::upsample2x(gpu, &joined)?.read_f32(gpu).await?;
    record(
        "concat + upsample 2x",
        got,
        reference::upsample2x(&reference::concat(&a, &b, 2), 4, 5),
        Tolerance { abs: 0.0, rel: 0.0 },
    );

    Ok(checks)
}
