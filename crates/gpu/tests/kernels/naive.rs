//! The benchmark's plain kernels must be right too, or the speed ratios mean nothing.

use darkroom_gpu::ops::naive;
use darkroom_gpu::reference::{self, TestRng};
use darkroom_gpu::{DType, Tolerance};

use crate::common::*;

#[test]
fn naive_kernels_match_cpu() {
    let gpu = gpu();
    let mut rng = TestRng::new(12);
    let (m, k, n) = (37, 50, 29);
    let (x, w) = (rng.vec(m * k), rng.vec(n * k));
    let got = read(
        &gpu,
        &naive::matmul(&gpu, &upload(&gpu, &[m, k], &x, DType::F32), &upload(&gpu, &[n, k], &w, DType::F32))
            .unwrap(),
    );
    let wt: Vec<f32> = (0..k).flat_map(|c| (0..n).map(move |r| (r, c))).map(|(r, c)| w[r * k + c]).collect();
    assert_close(&got, &reference::matmul(&x, &wt, 1, m, k, n), Tolerance::f32_sum(k), "naive matmul");

    let (cin, h, wd, cout) = (5, 9, 11, 7);
    let (x, w) = (rng.vec(cin * h * wd), rng.vec(cout * cin * 9));
    let got = read(
        &gpu,
        &naive::conv2d(
            &gpu,
            &upload(&gpu, &[cin, h, wd], &x, DType::F32),
            &upload(&gpu, &[cout, cin * 9], &w, DType::F32),
            3,
            2,
            1,
        )
        .unwrap(),
    );
    let want = reference::conv2d(&x, (1, cin, h, wd), &w, None, cout, (3, 3), 2, (1, 1), (5, 6));
    assert_close(&got, &want, Tolerance::f32_sum(cin * 9), "naive conv");

    let (nq, nk, heads, d) = (30, 77, 4, 8);
    let (q, kk, v) = (rng.vec(nq * heads * d), rng.vec(nk * heads * d), rng.vec(nk * heads * d));
    let t = |rows: usize, values: &[f32]| upload(&gpu, &[rows, heads * d], values, DType::F32);
    let got = read(&gpu, &naive::attention(&gpu, &t(nq, &q), &t(nk, &kk), &t(nk, &v), heads).unwrap());
    let want = reference::attention(&q, &kk, &v, 1, nq, nk, heads, d, false);
    assert_close(&got, &want, Tolerance { abs: 2e-5, rel: 1e-4 }, "naive attention");
    assert_covers(&gpu, "naive.wgsl", &[], &[]);
}
