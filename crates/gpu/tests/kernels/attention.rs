use darkroom_gpu::ops;
use darkroom_gpu::reference::{self, TestRng};
use darkroom_gpu::{DType, Tolerance};

use crate::common::*;

fn tol(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance { abs: 2e-5, rel: 1e-4 },
        DType::F16 => Tolerance { abs: 3e-3, rel: 3e-3 },
    }
}

fn run_case(
    gpu: &darkroom_gpu::Gpu,
    kernel: fn(
        &darkroom_gpu::Gpu,
        &darkroom_gpu::Tensor,
        &darkroom_gpu::Tensor,
        &darkroom_gpu::Tensor,
        usize,
        bool,
    ) -> Result<darkroom_gpu::Tensor, darkroom_gpu::GpuError>,
    seed: u32,
    (batch, nq, nk, heads, head_dim, causal): (usize, usize, usize, usize, usize, bool),
) {
    let width = heads * head_dim;
    let mut rng = TestRng::new(seed);
    // Scaled so the softmax is peaked, where a wrong max or normaliser shows.
    let q: Vec<f32> = rng.vec(batch * nq * width).iter().map(|v| v * 3.0).collect();
    let k: Vec<f32> = rng.vec(batch * nk * width).iter().map(|v| v * 3.0).collect();
    let v = rng.vec(batch * nk * width);
    for dtype in DTYPES {
        let (qs, ks, vs) = (as_stored(&q, dtype), as_stored(&k, dtype), as_stored(&v, dtype));
        let out = kernel(
            gpu,
            &upload(gpu, &[batch, nq, width], &qs, dtype),
            &upload(gpu, &[batch, nk, width], &ks, dtype),
            &upload(gpu, &[batch, nk, width], &vs, dtype),
            heads,
            causal,
        )
        .unwrap();
        let want = reference::attention(&qs, &ks, &vs, batch, nq, nk, heads, head_dim, causal);
        let what = format!("{batch}x{nq}x{nk}, {heads} heads x {head_dim}, causal {causal}, {dtype:?}");
        assert_close(&read(gpu, &out), &want, tol(dtype), &what);
    }
}

#[test]
fn attention_matches_cpu_for_self_cross_causal_and_odd_lengths() {
    let gpu = gpu();
    // (batch, nq, nk, heads, head_dim, causal): SD 1.5 self-attention at head sizes 40 and 160,
    // cross-attention over CLIP's 77 tokens, SD 2's 64-wide heads, CLIP's causal self-attention,
    // and lengths off every tile size (32 queries, 64 keys, 16 dimensions); each of SD's head
    // sizes masked and not; every columns-per-invocation variant (head sizes 1..=160).
    let cases = [
        (1, 67, 67, 2, 40, true),
        (1, 50, 77, 2, 80, false),
        (1, 45, 45, 2, 80, true),
        (1, 30, 30, 1, 160, true),
        (2, 100, 100, 8, 40, false),
        (1, 70, 77, 8, 160, false),
        (2, 65, 77, 5, 64, false),
        (1, 77, 77, 12, 64, true),
        (1, 3, 9, 1, 7, false),
        (1, 130, 130, 2, 16, true),
        (1, 33, 129, 1, 1, false),
        (1, 20, 20, 3, 17, true),
        (1, 31, 65, 2, 33, false),
        (1, 40, 40, 1, 50, true),
        (1, 64, 64, 1, 95, false),
        (1, 12, 12, 1, 97, true),
        (1, 10, 70, 1, 113, false),
        (1, 36, 36, 1, 130, true),
        (1, 9, 200, 1, 150, false),
    ];
    for (index, &case) in cases.iter().enumerate() {
        run_case(&gpu, ops::attention, index as u32 + 7, case);
    }
    // Every columns-per-invocation variant, masked and not, at a head size that fills it
    // unevenly.
    for cols in 1..=16 {
        for causal in [false, true] {
            let head_dim = 16 * cols - (cols % 3) * 3;
            run_case(&gpu, ops::attention, 50 + cols as u32, (1, 35, 35, 1, head_dim, causal));
        }
    }
    assert_covers(&gpu, "attention.wgsl", &[], &[]);
}

#[test]
fn heads_wider_than_one_workgroup_split_their_columns() {
    // The VAE's mid block: one head as wide as the channels (512 in SD's VAE), and wide heads
    // in other arrangements: several heads, causal, a width that splits unevenly.
    let gpu = gpu();
    for (index, case) in [
        (1, 70, 70, 1, 512, false),
        (1, 33, 90, 2, 300, false),
        (1, 40, 40, 1, 161, true),
        (2, 17, 17, 1, 321, true),
    ]
    .into_iter()
    .enumerate()
    {
        run_case(&gpu, ops::attention, 100 + index as u32, case);
    }
}

#[test]
fn the_previous_row_kernel_still_matches_cpu() {
    // Kept for `darkroom bench kernels`' before/after column.
    let gpu = gpu();
    for (index, case) in
        [(1, 67, 67, 2, 40, true), (2, 70, 77, 8, 160, false), (1, 3, 9, 1, 7, false)].into_iter().enumerate()
    {
        run_case(&gpu, ops::attention_rows, 200 + index as u32, case);
    }
    assert_covers(&gpu, "attention_rows.wgsl", &[], &[]);
}

#[test]
fn causal_first_row_copies_the_first_value() {
    // With the causal mask, query 0 sees only key 0: its output is exactly v[0].
    let gpu = gpu();
    let (n, width) = (20, 16);
    let mut rng = TestRng::new(3);
    let (q, k, v) = (rng.vec(n * width), rng.vec(n * width), rng.vec(n * width));
    let t = |x: &[f32]| upload(&gpu, &[1, n, width], x, DType::F32);
    let out = read(&gpu, &ops::attention(&gpu, &t(&q), &t(&k), &t(&v), 2, true).unwrap());
    assert_close(&out[..width], &v[..width], darkroom_gpu::Tolerance { abs: 1e-6, rel: 1e-6 }, "row 0");
}

#[test]
fn attention_refuses_bad_shapes() {
    let gpu = gpu();
    let t = |shape: &[usize]| upload(&gpu, shape, &vec![0.0; shape.iter().product()], DType::F32);
    assert!(
        ops::attention(&gpu, &t(&[1, 4, 12]), &t(&[1, 5, 12]), &t(&[1, 5, 12]), 5, false).is_err(),
        "12 % 5"
    );
    assert!(
        ops::attention(&gpu, &t(&[1, 4, 12]), &t(&[1, 5, 12]), &t(&[1, 6, 12]), 3, false).is_err(),
        "k vs v"
    );
    assert!(
        ops::attention(&gpu, &t(&[1, 4, 12]), &t(&[1, 5, 12]), &t(&[1, 5, 12]), 3, true).is_err(),
        "causal needs nq == nk"
    );
    assert!(
        ops::attention(&gpu, &t(&[1, 4, 12]), &t(&[1, 0, 12]), &t(&[1, 0, 12]), 3, false).is_err(),
        "no keys"
    );
    assert!(
        ops::attention_rows(&gpu, &t(&[1, 2, 400]), &t(&[1, 2, 400]), &t(&[1, 2, 400]), 2, false).is_err(),
        "the row kernel takes heads up to 160"
    );
}
