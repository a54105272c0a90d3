//! The matmul kernel on a real wgpu device (Mesa lavapipe in CI) against the CPU reference.

use darkroom_gpu::reference::{self, TestRng};
use darkroom_gpu::{compare, ops, selftest, Gpu, GpuError, Requirements, Tensor, Tolerance};

fn gpu() -> Gpu {
    pollster::block_on(Gpu::open(&Requirements::default())).unwrap_or_else(|e| {
        panic!("native GPU tests need a Vulkan/Metal/DX12 adapter (on Linux without a GPU: `cargo xtask setup` installs Mesa lavapipe): {e}")
    })
}

fn check(gpu: &Gpu, batch: usize, m: usize, k: usize, n: usize, shared_b: bool) {
    let mut rng = TestRng::new((batch * 1_000_003 + m * 1009 + k * 31 + n) as u32);
    let a = rng.vec(batch * m * k);
    let b_batch = if shared_b { 1 } else { batch };
    let b = rng.vec(b_batch * k * n);
    let ta = Tensor::from_f32(gpu, &[batch, m, k], &a).unwrap();
    let tb = if shared_b {
        Tensor::from_f32(gpu, &[k, n], &b).unwrap()
    } else {
        Tensor::from_f32(gpu, &[batch, k, n], &b).unwrap()
    };
    let out = ops::matmul(gpu, &ta, &tb).unwrap();
    assert_eq!(out.shape(), &[batch, m, n]);
    let got = pollster::block_on(out.read_f32(gpu)).unwrap();
    let want = reference::matmul(&a, &b, batch, m, k, n);
    let cmp = compare(&got, &want, Tolerance::f32_sum(k));
    assert!(
        cmp.passed,
        "batch {batch} {m}x{k}x{n} shared_b={shared_b}: {cmp:?}"
    );
}

#[test]
fn matmul_matches_cpu_on_odd_and_tile_sized_shapes() {
    let gpu = gpu();
    for &(batch, m, k, n, shared) in &[
        (1, 1, 1, 1, false),
        (1, 64, 16, 64, false),
        (1, 67, 45, 53, false),
        (1, 130, 77, 65, false),
        (3, 17, 33, 70, false),
        (2, 77, 40, 96, true),
        (1, 3, 300, 5, false),
    ] {
        check(&gpu, batch, m, k, n, shared);
    }
}

#[test]
fn selftest_passes_and_its_output_is_the_product() {
    let gpu = gpu();
    let (m, k, n) = selftest::MATMUL_SHAPE;
    let report =
        pollster::block_on(selftest::matmul_check(&gpu, m, k, n, selftest::MATMUL_SEED)).unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(report.output.len(), m * n);
    // Element (0,0) computed here independently of the reference implementation.
    let (a, b) = selftest::matmul_inputs(m, k, n, selftest::MATMUL_SEED);
    let c00: f32 = (0..k).map(|p| a[p] * b[p * n]).sum();
    assert!(
        (report.output[0] - c00).abs() < 1e-4,
        "{} vs {c00}",
        report.output[0]
    );
}

#[test]
fn mismatched_shapes_are_errors_not_panics() {
    let gpu = gpu();
    let a = Tensor::from_f32(&gpu, &[2, 3], &[0.0; 6]).unwrap();
    let b = Tensor::from_f32(&gpu, &[4, 2], &[0.0; 8]).unwrap();
    assert!(matches!(
        ops::matmul(&gpu, &a, &b),
        Err(GpuError::Shape { op: "matmul", .. })
    ));
    assert!(matches!(
        Tensor::from_f32(&gpu, &[2, 2], &[0.0; 3]),
        Err(GpuError::Shape { .. })
    ));
}

#[test]
fn device_reports_its_capabilities() {
    let gpu = gpu();
    let caps = gpu.capabilities();
    assert!(!caps.adapter_name.is_empty());
    assert!(caps.max_storage_buffer_binding_size >= 128 << 20);
    assert!(caps.max_compute_invocations_per_workgroup >= 256);
}
