use darkroom_gpu::reference::{self, TestRng};
use darkroom_gpu::{ops, DType, GemmTiles, GpuError, PackedWeight, Tensor, Weight, WeightFormat};

use crate::common::*;

/// [N, K] → [K, N]
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| values[r * cols + c])).collect()
}

#[test]
fn matmul_matches_cpu_for_both_dtypes_layouts_and_odd_shapes() {
    let gpu = gpu();
    // Every GEMM tiling (64x64, 128x128 `BIG`, 64x64 with K split) at every shape.
    for tiles in [GemmTiles::Small, GemmTiles::Big, GemmTiles::SplitK] {
        gpu.set_gemm_tiles(tiles);
        let shapes = [
            (1, 1, 1, 1, false),
            (1, 64, 16, 64, false),
            (1, 67, 45, 53, false),
            (1, 130, 77, 65, false),
            (3, 17, 33, 70, false),
            (2, 77, 40, 96, true), // one b shared by every batch
            (1, 3, 300, 5, false),
        ];
        for dtype in DTYPES {
            for transpose_b in [false, true] {
                for &(batch, m, k, n, shared) in &shapes {
                    let mut rng = TestRng::new((batch * 1_000_003 + m * 1009 + k * 31 + n) as u32);
                    let a = as_stored(&rng.vec(batch * m * k), dtype);
                    let b_batch = if shared { 1 } else { batch };
                    let b_kn = as_stored(&rng.vec(b_batch * k * n), dtype);
                    // The same matrices, laid out as [n, k] when the kernel reads b transposed.
                    let b_stored: Vec<f32> = if transpose_b {
                        b_kn.chunks(k * n).flat_map(|m| transpose(m, k, n)).collect()
                    } else {
                        b_kn.clone()
                    };
                    let b_shape = match (shared, transpose_b) {
                        (true, false) => vec![k, n],
                        (true, true) => vec![n, k],
                        (false, false) => vec![batch, k, n],
                        (false, true) => vec![batch, n, k],
                    };
                    let ta = upload(&gpu, &[batch, m, k], &a, dtype);
                    let tb = upload(&gpu, &b_shape, &b_stored, dtype);
                    let out = ops::matmul(&gpu, &ta, &tb, transpose_b).unwrap();
                    assert_eq!(out.shape(), &[batch, m, n]);
                    assert_eq!(out.dtype(), dtype);
                    let want = reference::matmul(&a, &b_kn, batch, m, k, n);
                    assert_close(
                        &read(&gpu, &out),
                        &want,
                        sum_tolerance(dtype, k),
                        &format!("{dtype:?} transpose_b={transpose_b} batch {batch} {m}x{k}x{n}"),
                    );
                }
            }
        }
    }
    assert_covers(&gpu, "matmul.wgsl", &["B_ACT"], &[]);
}

#[test]
fn linear_matches_cpu_on_the_dequantized_weights_for_every_format() {
    let gpu = gpu();
    // Every GEMM tiling (64x64, 128x128 `BIG`, 64x64 with K split) at every shape.
    for tiles in [GemmTiles::Small, GemmTiles::Big, GemmTiles::SplitK] {
        gpu.set_gemm_tiles(tiles);
        for dtype in DTYPES {
            for format in WeightFormat::ALL {
                for &(lead, k, n, with_bias) in &[
                    (&[77usize][..], 45, 70, true),
                    (&[2, 33][..], 96, 31, false),
                    (&[5][..], 300, 129, true),
                ] {
                    let m: usize = lead.iter().product();
                    let mut rng = TestRng::new((k * 7 + n * 13 + m) as u32);
                    let x = as_stored(&rng.vec(m * k), dtype);
                    let w = rng.vec(n * k);
                    let bias = rng.vec(n);
                    let packed = PackedWeight::pack(&w, n, k, format);
                    let weight = Weight::upload(&gpu, &packed, with_bias.then_some(&bias[..])).unwrap();
                    let mut shape = lead.to_vec();
                    shape.push(k);
                    let out = ops::linear(&gpu, &upload(&gpu, &shape, &x, dtype), &weight).unwrap();
                    let mut want_shape = lead.to_vec();
                    want_shape.push(n);
                    assert_eq!(out.shape(), want_shape.as_slice());

                    let wt = transpose(&packed.dequantize(), n, k);
                    let mut want = reference::matmul(&x, &wt, 1, m, k, n);
                    if with_bias {
                        for (i, v) in want.iter_mut().enumerate() {
                            *v += bias[i % n];
                        }
                    }
                    assert_close(
                        &read(&gpu, &out),
                        &want,
                        sum_tolerance(dtype, k),
                        &format!("linear {dtype:?} {format:?} bias={with_bias} {m}x{k}x{n}"),
                    );
                }
            }
        }
    }
    assert_covers(&gpu, "matmul.wgsl", &[], &["B_ACT", "CONV"]);
}

#[test]
fn quantized_linear_stays_within_its_stated_error_of_the_float_result() {
    // Stated bounds, relative RMS error of the output against f32 weights on uniform random
    // data: f16 0.1%, int8 per channel 1%, 4-bit groups of 32 10%.
    let gpu = gpu();
    let (m, k, n) = (64, 320, 96);
    let mut rng = TestRng::new(77);
    let x = rng.vec(m * k);
    let w = rng.vec(n * k);
    let exact = reference::matmul(&x, &transpose(&w, n, k), 1, m, k, n);
    let input = upload(&gpu, &[m, k], &x, DType::F32);
    for (format, bound) in [(WeightFormat::F16, 1e-3), (WeightFormat::Q8, 1e-2), (WeightFormat::Q4, 0.1)] {
        let weight = Weight::from_f32(&gpu, n, k, &w, None, format).unwrap();
        let got = read(&gpu, &ops::linear(&gpu, &input, &weight).unwrap());
        let err = relative_rms_error(&got, &exact);
        assert!(err < bound, "{format:?}: relative RMS error {err} over {bound}");
        assert!(err > 0.0, "{format:?}: no quantization error at all is suspicious");
    }
}

#[test]
fn mismatched_shapes_are_errors_not_panics() {
    let gpu = gpu();
    let a = Tensor::from_f32(&gpu, &[2, 3], &[0.0; 6], DType::F32).unwrap();
    let b = Tensor::from_f32(&gpu, &[4, 2], &[0.0; 8], DType::F32).unwrap();
    assert!(matches!(ops::matmul(&gpu, &a, &b, false), Err(GpuError::Shape { op: "matmul", .. })));
    assert!(matches!(Tensor::from_f32(&gpu, &[2, 2], &[0.0; 3], DType::F32), Err(GpuError::Shape { .. })));
    let w = Weight::from_f32(&gpu, 4, 5, &[0.0; 20], None, WeightFormat::Q8).unwrap();
    assert!(matches!(ops::linear(&gpu, &a, &w), Err(GpuError::Shape { .. })));
    assert!(Weight::from_f32(&gpu, 4, 5, &[0.0; 20], Some(&[0.0; 3]), WeightFormat::F32).is_err());
}

#[test]
fn pool_reuses_buffers_in_a_steady_loop() {
    let gpu = gpu();
    let w = Weight::from_f32(&gpu, 64, 64, &TestRng::new(1).vec(64 * 64), None, WeightFormat::F32).unwrap();
    let x = upload(&gpu, &[32, 64], &TestRng::new(2).vec(32 * 64), DType::F32);
    let step = || {
        let h = ops::linear(&gpu, &x, &w).unwrap();
        let h = ops::linear(&gpu, &h, &w).unwrap();
        read(&gpu, &h)
    };
    let first = step();
    let created = gpu.pool_stats().buffers_created;
    for _ in 0..5 {
        assert_eq!(step(), first, "reused buffers must not change results");
    }
    let stats = gpu.pool_stats();
    assert_eq!(stats.buffers_created, created, "a steady loop should allocate nothing new");
    assert!(stats.peak_allocated_bytes >= stats.in_use_bytes && stats.in_use_bytes > 0);
    drop(x);
    gpu.trim_pool();
    assert_eq!(gpu.pool_stats().allocated_bytes, 0, "{:?}", gpu.pool_stats());
}

#[test]
fn weights_split_across_bindings_give_identical_results() {
    // Weights over maxStorageBufferBindingSize are split by rows; force splits with a tiny part
    // size (odd part counts, Q4 rows with an odd number of scale groups) and compare with the
    // unsplit weight, which must agree bit for bit.
    let gpu = gpu();
    // Every GEMM tiling (64x64, 128x128 `BIG`, 64x64 with K split) at every shape.
    for tiles in [GemmTiles::Small, GemmTiles::Big, GemmTiles::SplitK] {
        gpu.set_gemm_tiles(tiles);
        let (m, k, n) = (40, 70, 75); // 70 inputs = 3 Q4 groups per row
        let mut rng = TestRng::new(21);
        let x = upload(&gpu, &[m, k], &rng.vec(m * k), DType::F32);
        let image = upload(&gpu, &[1, 7, 6, 5], &rng.vec(7 * 30), DType::F32);
        let values = rng.vec(n * k);
        let conv_values = rng.vec(n * 7 * 9);
        let bias = rng.vec(n);
        for format in WeightFormat::ALL {
            let packed = PackedWeight::pack(&values, n, k, format);
            let whole = Weight::upload(&gpu, &packed, Some(&bias)).unwrap();
            let split = Weight::upload_in_parts(&gpu, &packed, Some(&bias), 600).unwrap();
            assert!(split.part_count() >= 3, "{format:?}: {split:?}");
            let a = read(&gpu, &ops::linear(&gpu, &x, &whole).unwrap());
            let b = read(&gpu, &ops::linear(&gpu, &x, &split).unwrap());
            assert_eq!(a, b, "linear {format:?}");

            let packed = PackedWeight::pack(&conv_values, n, 7 * 9, format);
            let whole = Weight::upload(&gpu, &packed, Some(&bias)).unwrap();
            let split = Weight::upload_in_parts(&gpu, &packed, Some(&bias), 700).unwrap();
            assert!(split.part_count() >= 3);
            let conv = ops::Conv2d::same(3);
            let a = read(&gpu, &ops::conv2d(&gpu, &image, &whole, conv, None).unwrap());
            let b = read(&gpu, &ops::conv2d(&gpu, &image, &split, conv, None).unwrap());
            assert_eq!(a, b, "conv {format:?}");

            // Token table: ids spread over every part.
            let ids: Vec<u32> = (0..12).map(|i| (i * 37 % n) as u32).collect();
            let positions = upload(&gpu, &[12, k], &rng.vec(12 * k), DType::F32);
            let packed = PackedWeight::pack(&values, n, k, format);
            let whole = Weight::upload(&gpu, &packed, None).unwrap();
            let split = Weight::upload_in_parts(&gpu, &packed, None, 600).unwrap();
            let a = read(&gpu, &ops::embed_tokens(&gpu, &ids, 12, &whole, &positions).unwrap());
            let b = read(&gpu, &ops::embed_tokens(&gpu, &ids, 12, &split, &positions).unwrap());
            assert_eq!(a, b, "embedding {format:?}");
        }
        let packed = PackedWeight::pack(&values, n, k, WeightFormat::F32);
        assert!(Weight::upload_in_parts(&gpu, &packed, None, 100).is_err(), "a part smaller than one row");
    }
}
