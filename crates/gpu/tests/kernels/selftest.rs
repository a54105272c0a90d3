use darkroom_gpu::selftest;

use crate::common::gpu;

#[test]
fn selftest_passes_and_its_output_is_the_product() {
    let gpu = gpu();
    let (m, k, n) = selftest::MATMUL_SHAPE;
    let report = pollster::block_on(selftest::matmul_check(&gpu, m, k, n, selftest::MATMUL_SEED)).unwrap();
    assert!(report.passed, "{report:?}");
    assert_eq!(report.output.len(), m * n);
    // Element (0,0) computed here independently of the reference implementation.
    let (a, b) = selftest::matmul_inputs(m, k, n, selftest::MATMUL_SEED);
    let c00: f32 = (0..k).map(|p| a[p] * b[p * n]).sum();
    assert!((report.output[0] - c00).abs() < 1e-4, "{} vs {c00}", report.output[0]);
}

#[test]
fn device_reports_its_capabilities() {
    let gpu = gpu();
    let caps = gpu.capabilities();
    assert!(!caps.adapter_name.is_empty());
    assert!(caps.max_storage_buffer_binding_size >= 128 << 20);
    assert!(caps.max_compute_invocations_per_workgroup >= 256);
}

#[test]
fn kernel_suite_passes_on_both_activation_types() {
    let gpu = gpu();
    for dtype in crate::common::DTYPES {
        let checks = pollster::block_on(selftest::kernel_suite(&gpu, dtype)).unwrap();
        assert!(checks.len() >= 10, "{checks:?}");
        let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
        assert!(failed.is_empty(), "{dtype:?}: {failed:?}");
    }
}
