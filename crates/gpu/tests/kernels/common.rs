pub use darkroom_gpu::tolerance::relative_rms_error;
use darkroom_gpu::{compare, DType, Gpu, Requirements, Tensor, Tolerance};
use half::f16;

pub fn gpu() -> Gpu {
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap_or_else(|e| {
        panic!("kernel tests need a Vulkan/Metal/DX12 adapter (on Linux without a GPU: `cargo xtask setup` installs Mesa lavapipe): {e}")
    });
    assert!(
        gpu.capabilities().shader_f16,
        "kernel tests cover the f16 path and need an adapter with shader-f16 (lavapipe has it)"
    );
    gpu
}

pub const DTYPES: [DType; 2] = [DType::F32, DType::F16];

/// The values a tensor of `dtype` actually holds after upload.
pub fn as_stored(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => values.to_vec(),
        DType::F16 => values.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
    }
}

pub fn upload(gpu: &Gpu, shape: &[usize], values: &[f32], dtype: DType) -> Tensor {
    Tensor::from_f32(gpu, shape, values, dtype).unwrap()
}

pub fn read(gpu: &Gpu, t: &Tensor) -> Vec<f32> {
    pollster::block_on(t.read_f32(gpu)).unwrap()
}

/// Tolerance for an output that sums `terms` products, per activation type. The f16 path
/// accumulates in f32, so beyond f32's error it only adds the output's rounding to f16.
pub fn sum_tolerance(dtype: DType, terms: usize) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::f32_sum(terms),
        DType::F16 => Tolerance { abs: 1e-3 + 2e-6 * terms as f32, rel: 1.5e-3 },
    }
}

pub fn assert_close(got: &[f32], want: &[f32], tol: Tolerance, context: &str) {
    assert_eq!(got.len(), want.len(), "{context}: length");
    let cmp = compare(got, want, tol);
    assert!(
        cmp.passed,
        "{context}: element {} is {} but should be {} (max abs error {}, tolerance {tol:?})",
        cmp.worst_index, got[cmp.worst_index], want[cmp.worst_index], cmp.max_abs_err
    );
}

/// Asserts that `gpu` compiled every variant of `file` whose defines include all of `with` and
/// none of `without`: the test that calls it exercised each of those variants. A static check
/// (tests/shaders_validate.rs) requires every shader to be named in such a call.
pub fn assert_covers(gpu: &Gpu, file: &str, with: &[&str], without: &[&str]) {
    let compiled = gpu.compiled_variant_keys();
    let missing: Vec<String> = darkroom_gpu::shaders::all_variants()
        .into_iter()
        .filter(|v| v.file == file)
        .filter(|v| {
            with.iter().all(|d| v.defines.contains(d)) && !without.iter().any(|d| v.defines.contains(d))
        })
        .map(|v| v.key())
        .filter(|key| !compiled.contains(key))
        .collect();
    assert!(missing.is_empty(), "variants of {file} that no test here ran: {missing:?}");
}
