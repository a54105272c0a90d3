//! The benchmark's instruments: per-kernel timestamps and the weight byte count must describe
//! the work actually recorded, or `darkroom bench models` reports fiction.

use darkroom_gpu::ops::{self, Unary};
use darkroom_gpu::reference::TestRng;
use darkroom_gpu::{DType, Weight, WeightFormat};

use crate::common::*;

#[test]
fn profile_counts_each_dispatch_under_its_kernel() {
    let gpu = gpu();
    let mut rng = TestRng::new(5);
    let x = upload(&gpu, &[64, 48], &rng.vec(64 * 48), DType::F32);
    let w = Weight::from_f32(&gpu, 40, 48, &rng.vec(40 * 48), None, WeightFormat::F32).unwrap();
    // Before profiling: not counted.
    let _ = ops::linear(&gpu, &x, &w).unwrap();
    if !gpu.begin_profile() {
        assert!(
            !gpu.device.features().contains(darkroom_gpu::wgpu::Features::TIMESTAMP_QUERY),
            "timestamps available but profiling refused"
        );
        return;
    }
    let y = ops::linear(&gpu, &x, &w).unwrap();
    let y = ops::unary(&gpu, &y, Unary::Silu).unwrap();
    let y = ops::unary(&gpu, &y, Unary::Silu).unwrap();
    let kernels = pollster::block_on(gpu.end_profile()).unwrap();
    let calls = |file: &str| {
        kernels.iter().filter(|k| k.kernel.starts_with(file)).map(|k| k.dispatches).sum::<usize>()
    };
    assert_eq!(calls("matmul.wgsl"), 1, "{kernels:?}");
    assert_eq!(calls("elementwise.wgsl"), 2, "{kernels:?}");
    assert_eq!(kernels.iter().map(|k| k.dispatches).sum::<usize>(), 3, "{kernels:?}");
    assert!(kernels.iter().all(|k| k.seconds.is_finite() && k.seconds >= 0.0), "{kernels:?}");
    assert!(kernels.windows(2).all(|p| p[0].seconds >= p[1].seconds), "largest first: {kernels:?}");
    // The work still computes: profiling only adds timestamps.
    assert_eq!(read(&gpu, &y).len(), 64 * 40);
    // Off again: nothing recorded, an empty profile.
    let _ = ops::unary(&gpu, &y, Unary::Silu).unwrap();
    assert!(pollster::block_on(gpu.end_profile()).unwrap().is_empty());
}

#[test]
fn weight_bytes_count_every_live_part() {
    let gpu = gpu();
    let start = gpu.weight_bytes();
    let (rows, cols) = (24, 64);
    let values = TestRng::new(9).vec(rows * cols);
    let bias = vec![0.5; rows];
    let f32_weight = Weight::from_f32(&gpu, rows, cols, &values, Some(&bias), WeightFormat::F32).unwrap();
    let f32_bytes = (rows * cols * 4 + rows * 4) as u64;
    assert_eq!(gpu.weight_bytes() - start, f32_bytes);
    let q8_weight = Weight::from_f32(&gpu, rows, cols, &values, None, WeightFormat::Q8).unwrap();
    // One byte per value plus one f32 scale per row.
    let q8_bytes = (rows * cols + rows * 4) as u64;
    assert_eq!(gpu.weight_bytes() - start, f32_bytes + q8_bytes);
    // A dropped weight gives its bytes back.
    drop(f32_weight);
    assert_eq!(gpu.weight_bytes() - start, q8_bytes);
    drop(q8_weight);
    assert_eq!(gpu.weight_bytes(), start);
}
