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

#[test]
fn attention_matches_cpu_for_self_cross_causal_and_odd_lengths() {
    let gpu = gpu();
    // (batch, nq, nk, heads, head_dim, causal): SD 1.5 self-attention at head sizes 40 and 160,
    // cross-attention over CLIP's 77 tokens, SD 2's 64-wide heads, CLIP's causal self-attention,
    // and lengths off every tile size; each of SD's head sizes masked and not.
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
    ];
    for (index, &(batch, nq, nk, heads, head_dim, causal)) in cases.iter().enumerate() {
        let width = heads * head_dim;
        let mut rng = TestRng::new(index as u32 + 7);
        // Scaled so the softmax is peaked, where a wrong max or normaliser shows.
        let q: Vec<f32> = rng.vec(batch * nq * width).iter().map(|v| v * 3.0).collect();
        let k: Vec<f32> = rng.vec(batch * nk * width).iter().map(|v| v * 3.0).collect();
        let v = rng.vec(batch * nk * width);
        for dtype in DTYPES {
            let (qs, ks, vs) = (as_stored(&q, dtype), as_stored(&k, dtype), as_stored(&v, dtype));
            let out = ops::attention(
                &gpu,
                &upload(&gpu, &[batch, nq, width], &qs, dtype),
                &upload(&gpu, &[batch, nk, width], &ks, dtype),
                &upload(&gpu, &[batch, nk, width], &vs, dtype),
                heads,
                causal,
            )
            .unwrap();
            let want = reference::attention(&qs, &ks, &vs, batch, nq, nk, heads, head_dim, causal);
            assert_close(&read(&gpu, &out), &want, tol(dtype), &format!("case {index} {dtype:?}"));
        }
    }
    assert_covers(&gpu, "attention.wgsl", &[], &[]);
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
        ops::attention(&gpu, &t(&[1, 2, 400]), &t(&[1, 2, 400]), &t(&[1, 2, 400]), 2, false).is_err(),
        "two heads of 200: wider than the fused kernel and not single-head"
    );
    assert!(
        ops::attention(&gpu, &t(&[1, 2, 200]), &t(&[1, 2, 200]), &t(&[1, 2, 200]), 1, true).is_err(),
        "a causal wide head"
    );
}

#[test]
fn wide_single_head_attention_takes_the_materialised_path() {
    // The VAE's mid block: one head as wide as the channels (512 in SD's VAE).
    let gpu = gpu();
    for dtype in DTYPES {
        let (batch, nq, nk, d) = (1, 70, 70, 300);
        let mut rng = TestRng::new(17);
        let q = as_stored(&rng.vec(batch * nq * d), dtype);
        let k = as_stored(&rng.vec(batch * nk * d), dtype);
        let v = as_stored(&rng.vec(batch * nk * d), dtype);
        let out = ops::attention(
            &gpu,
            &upload(&gpu, &[batch, nq, d], &q, dtype),
            &upload(&gpu, &[batch, nk, d], &k, dtype),
            &upload(&gpu, &[batch, nk, d], &v, dtype),
            1,
            false,
        )
        .unwrap();
        let want = reference::attention(&q, &k, &v, batch, nq, nk, 1, d, false);
        assert_close(&read(&gpu, &out), &want, tol(dtype), &format!("wide head {dtype:?}"));
    }
    assert_covers(&gpu, "softmax.wgsl", &[], &[]);
}

#[test]
fn softmax_rows_sum_to_one_and_match_cpu() {
    let gpu = gpu();
    let (rows, len) = (5, 1000);
    let x: Vec<f32> = TestRng::new(4).vec(rows * len).iter().map(|v| v * 30.0).collect();
    let got = read(&gpu, &ops::softmax(&gpu, &upload(&gpu, &[rows, len], &x, DType::F32), 0.5).unwrap());
    for r in 0..rows {
        let row = &x[r * len..][..len];
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b * 0.5)) as f64;
        let total: f64 = row.iter().map(|&v| (v as f64 * 0.5 - m).exp()).sum();
        for (i, &v) in row.iter().enumerate() {
            let want = ((v as f64 * 0.5 - m).exp() / total) as f32;
            assert!((got[r * len + i] - want).abs() <= 1e-6 + 1e-4 * want, "row {r} col {i}");
        }
        let sum: f32 = got[r * len..][..len].iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "row {r} sums to {sum}");
    }
}
