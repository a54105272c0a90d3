use darkroom_gpu::ops::{self, Conv2d, Padding};
use darkroom_gpu::reference::{self, TestRng};
use darkroom_gpu::{DType, GemmTiles, PackedWeight, Weight, WeightFormat};

use crate::common::*;

struct Case {
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    conv: Conv2d,
}

fn cases() -> Vec<Case> {
    let down =
        Conv2d { kernel: (3, 3), stride: 2, padding: Padding { top: 0, bottom: 1, left: 0, right: 1 } };
    vec![
        Case { batch: 1, cin: 3, h: 13, w: 11, cout: 5, conv: Conv2d::same(3) },
        Case { batch: 2, cin: 16, h: 9, w: 9, cout: 70, conv: Conv2d::same(3) },
        Case { batch: 1, cin: 33, h: 7, w: 12, cout: 17, conv: Conv2d::same(1) },
        // Stride 2 with symmetric padding (UNet/TAESD downsampling)…
        Case {
            batch: 1,
            cin: 8,
            h: 16,
            w: 15,
            cout: 8,
            conv: Conv2d { kernel: (3, 3), stride: 2, padding: Padding::same(1) },
        },
        // …and with the VAE encoder's bottom/right-only padding.
        Case { batch: 2, cin: 6, h: 16, w: 16, cout: 9, conv: down },
        // A UNet's lowest level at sizes its factor does not divide: 2x3 maps, and stride 2
        // from odd and even sides down to them.
        Case { batch: 2, cin: 64, h: 2, w: 3, cout: 64, conv: Conv2d::same(3) },
        Case {
            batch: 2,
            cin: 32,
            h: 3,
            w: 5,
            cout: 32,
            conv: Conv2d { kernel: (3, 3), stride: 2, padding: Padding::same(1) },
        },
        Case {
            batch: 1,
            cin: 32,
            h: 4,
            w: 6,
            cout: 32,
            conv: Conv2d { kernel: (3, 3), stride: 2, padding: Padding::same(1) },
        },
        // More output pixels than one 64-row tile, more channels than one 64-column tile.
        Case { batch: 1, cin: 4, h: 20, w: 20, cout: 130, conv: Conv2d::same(3) },
        // Kernels with more taps than a 16-wide K slice (5x5, 7x7 stride 2), non-square ones,
        // and 2x2 stride 2: the per-slice (channel, tap) stepping at every remainder.
        Case { batch: 1, cin: 5, h: 11, w: 9, cout: 7, conv: Conv2d::same(5) },
        Case {
            batch: 1,
            cin: 3,
            h: 19,
            w: 17,
            cout: 10,
            conv: Conv2d { kernel: (7, 7), stride: 2, padding: Padding::same(3) },
        },
        Case {
            batch: 2,
            cin: 9,
            h: 6,
            w: 10,
            cout: 6,
            conv: Conv2d {
                kernel: (1, 3),
                stride: 1,
                padding: Padding { top: 0, bottom: 0, left: 1, right: 1 },
            },
        },
        Case {
            batch: 1,
            cin: 11,
            h: 9,
            w: 5,
            cout: 4,
            conv: Conv2d {
                kernel: (3, 2),
                stride: 1,
                padding: Padding { top: 1, bottom: 1, left: 0, right: 1 },
            },
        },
        Case {
            batch: 1,
            cin: 13,
            h: 8,
            w: 12,
            cout: 5,
            conv: Conv2d { kernel: (2, 2), stride: 2, padding: Padding::same(0) },
        },
    ]
}

#[test]
fn conv2d_matches_cpu_for_every_weight_format_dtype_and_geometry() {
    let gpu = gpu();
    // Every GEMM tiling (64x64, 128x128 `BIG`, 64x64 with K split) at every shape.
    for tiles in [GemmTiles::Small, GemmTiles::Big, GemmTiles::SplitK] {
        gpu.set_gemm_tiles(tiles);
        for (index, case) in cases().iter().enumerate() {
            let (kh, kw) = case.conv.kernel;
            let (oh, ow) = case.conv.output_size(case.h, case.w).unwrap();
            let mut rng = TestRng::new(index as u32 + 100);
            let x = rng.vec(case.batch * case.cin * case.h * case.w);
            let weight = rng.vec(case.cout * case.cin * kh * kw);
            let bias = rng.vec(case.cout);
            let residual = rng.vec(case.batch * case.cout * oh * ow);
            for dtype in DTYPES {
                let xs = as_stored(&x, dtype);
                let rs = as_stored(&residual, dtype);
                let input = upload(&gpu, &[case.batch, case.cin, case.h, case.w], &xs, dtype);
                for format in WeightFormat::ALL {
                    // Every epilogue combination; ReLU on alternate cases keeps the run short.
                    let relu = index % 2 == 1;
                    for (with_bias, with_residual) in
                        [(false, false), (true, false), (false, true), (true, true)]
                    {
                        let packed = PackedWeight::pack(&weight, case.cout, case.cin * kh * kw, format);
                        let w = Weight::upload(&gpu, &packed, with_bias.then_some(&bias[..])).unwrap();
                        let res = upload(&gpu, &[case.batch, case.cout, oh, ow], &rs, dtype);
                        let out = ops::conv2d_fused(
                            &gpu,
                            &input,
                            &w,
                            case.conv,
                            with_residual.then_some(&res),
                            relu,
                        )
                        .unwrap();
                        assert_eq!(out.shape(), &[case.batch, case.cout, oh, ow]);
                        let mut want = reference::conv2d(
                            &xs,
                            (case.batch, case.cin, case.h, case.w),
                            &packed.dequantize(),
                            with_bias.then_some(&bias[..]),
                            case.cout,
                            (kh, kw),
                            case.conv.stride,
                            (case.conv.padding.top, case.conv.padding.left),
                            (oh, ow),
                        );
                        if with_residual {
                            want.iter_mut().zip(&rs).for_each(|(v, r)| *v += r);
                        }
                        if relu {
                            want.iter_mut().for_each(|v| *v = v.max(0.0));
                        }
                        assert_close(
                        &read(&gpu, &out),
                        &want,
                        sum_tolerance(dtype, case.cin * kh * kw),
                        &format!("case {index} {dtype:?} {format:?} bias={with_bias} residual={with_residual} relu={relu}"),
                    );
                    }
                }
            }
        }
    }
    assert_covers(&gpu, "matmul.wgsl", &["CONV"], &[]);
}

#[test]
fn conv2d_refuses_mismatched_weights_and_tiny_inputs() {
    let gpu = gpu();
    let x = upload(&gpu, &[1, 3, 4, 4], &[0.0; 48], DType::F32);
    let w = Weight::from_f32(&gpu, 2, 4 * 9, &[0.0; 72], None, WeightFormat::F32).unwrap();
    assert!(ops::conv2d(&gpu, &x, &w, Conv2d::same(3), None).is_err(), "4 input channels expected, 3 given");
    let w = Weight::from_f32(&gpu, 2, 3 * 25, &[0.0; 150], None, WeightFormat::F32).unwrap();
    let no_pad = Conv2d { kernel: (5, 5), stride: 1, padding: Padding::same(0) };
    let tiny = upload(&gpu, &[1, 3, 3, 3], &[0.0; 27], DType::F32);
    assert!(ops::conv2d(&gpu, &tiny, &w, no_pad, None).is_err(), "5x5 kernel on a 3x3 image");
    let bad_residual = upload(&gpu, &[1, 2, 3, 3], &[0.0; 18], DType::F32);
    let w = Weight::from_f32(&gpu, 2, 27, &[0.0; 54], None, WeightFormat::F32).unwrap();
    assert!(ops::conv2d(&gpu, &x, &w, Conv2d::same(3), Some(&bad_residual)).is_err());
}
