//! `darkroom bench kernels`: GFLOP/s of the tiled kernels at Stable Diffusion UNet shapes, each
//! beside a plain one-invocation-per-output kernel of ours measured in the same run.

use std::time::Instant;

use darkroom_gpu::ops::{self, naive, Conv2d};
use darkroom_gpu::reference::TestRng;
use darkroom_gpu::{DType, Gpu, GpuError, Tensor, Weight, WeightFormat};

pub struct Options {
    /// Quarter-size shapes, for a quick look on slow (software) adapters.
    pub quick: bool,
    pub runs: usize,
}

/// Median wall time of `runs` executions of `f`, each submitted and waited for, after one
/// warm-up run that also compiles the pipelines.
fn time(gpu: &Gpu, runs: usize, mut f: impl FnMut() -> Result<Tensor, GpuError>) -> Result<f64, GpuError> {
    f()?;
    gpu.finish()?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = f()?;
        gpu.finish()?;
        samples.push(start.elapsed().as_secs_f64());
        drop(out);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Ok(samples[samples.len() / 2])
}

struct Row {
    name: String,
    gflop: f64,
    ours: f64,
    plain: f64,
}

fn tensor(gpu: &Gpu, rng: &mut TestRng, shape: &[usize]) -> Result<Tensor, GpuError> {
    Tensor::from_f32(gpu, shape, &rng.vec(shape.iter().product()), DType::F32)
}

pub fn kernels(gpu: &Gpu, opts: &Options) -> Result<(), GpuError> {
    let pixels = if opts.quick { 1024 } else { 4096 };
    let side = if opts.quick { 32 } else { 64 };
    let mut rng = TestRng::new(1);
    let mut rows = Vec::new();

    for (k, n) in [(320, 320), (320, 1280)] {
        let x = tensor(gpu, &mut rng, &[pixels, k])?;
        let w_values = rng.vec(n * k);
        let w = Weight::from_f32(gpu, n, k, &w_values, None, WeightFormat::F32)?;
        let w_plain = Tensor::from_f32(gpu, &[n, k], &w_values, DType::F32)?;
        rows.push(Row {
            name: format!("linear {pixels}x{k}x{n} f32"),
            gflop: 2.0 * (pixels * k * n) as f64 / 1e9,
            ours: time(gpu, opts.runs, || ops::linear(gpu, &x, &w))?,
            plain: time(gpu, opts.runs, || naive::matmul(gpu, &x, &w_plain))?,
        });
    }

    {
        let c = 320;
        let x = tensor(gpu, &mut rng, &[c, side, side])?;
        let x4 = x.reshape(&[1, c, side, side])?;
        let w_values = rng.vec(c * c * 9);
        let w = Weight::from_f32(gpu, c, c * 9, &w_values, None, WeightFormat::F32)?;
        let w_plain = Tensor::from_f32(gpu, &[c, c * 9], &w_values, DType::F32)?;
        rows.push(Row {
            name: format!("conv 3x3 {c}->{c} at {side}x{side}"),
            gflop: 2.0 * (side * side * c * c * 9) as f64 / 1e9,
            ours: time(gpu, opts.runs, || ops::conv2d(gpu, &x4, &w, Conv2d::same(3), None))?,
            plain: time(gpu, opts.runs, || naive::conv2d(gpu, &x, &w_plain, 3, 1, 1))?,
        });
    }

    for (name, nk, heads, head_dim) in [("self-attention", pixels, 8, 40), ("cross-attention", 77, 8, 40)] {
        let width = heads * head_dim;
        let q = tensor(gpu, &mut rng, &[pixels, width])?;
        let k = tensor(gpu, &mut rng, &[nk, width])?;
        let v = tensor(gpu, &mut rng, &[nk, width])?;
        let (q3, k3, v3) =
            (q.reshape(&[1, pixels, width])?, k.reshape(&[1, nk, width])?, v.reshape(&[1, nk, width])?);
        rows.push(Row {
            name: format!("{name} {pixels}x{nk}, {heads} heads x {head_dim}"),
            gflop: 4.0 * (pixels * nk * width) as f64 / 1e9,
            ours: time(gpu, opts.runs, || ops::attention(gpu, &q3, &k3, &v3, heads, false))?,
            plain: time(gpu, opts.runs, || naive::attention(gpu, &q, &k, &v, heads))?,
        });
    }

    let caps = gpu.capabilities();
    println!("adapter: {} ({}, {})", caps.adapter_name, caps.backend, caps.device_type);
    println!("median of {} runs after a warm-up; plain = one invocation per output, same run\n", opts.runs);
    println!(
        "{:<44} {:>8} {:>10} {:>10} {:>10} {:>9}",
        "kernel", "GFLOP", "ours ms", "ours GF/s", "plain GF/s", "speed-up"
    );
    for r in &rows {
        println!(
            "{:<44} {:>8.2} {:>10.1} {:>10.2} {:>10.2} {:>8.2}x",
            r.name,
            r.gflop,
            r.ours * 1e3,
            r.gflop / r.ours,
            r.gflop / r.plain,
            r.plain / r.ours
        );
    }
    let peak = gpu.pool_stats().peak_allocated_bytes;
    println!("\npeak pooled GPU memory: {:.1} MiB", peak as f64 / (1 << 20) as f64);
    Ok(())
}
