use darkroom_gpu::ops::{self, Unary};
use darkroom_gpu::reference::{elementwise as cpu, TestRng};
use darkroom_gpu::{DType, Tolerance};

use crate::common::*;

fn tol(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance { abs: 2e-6, rel: 2e-6 },
        DType::F16 => Tolerance { abs: 2e-3, rel: 2e-3 },
    }
}

#[test]
fn unary_ops_match_cpu() {
    let gpu = gpu();
    for dtype in DTYPES {
        // 1000 values from -6 to 6 plus random ones: covers erf's tails and the odd size.
        let mut values: Vec<f32> = (0..1000).map(|i| -6.0 + 12.0 * i as f32 / 999.0).collect();
        values.extend(TestRng::new(11).vec(333).iter().map(|v| v * 20.0));
        let x = as_stored(&values, dtype);
        let input = upload(&gpu, &[values.len()], &x, dtype);
        for op in [
            Unary::Silu,
            Unary::Gelu,
            Unary::QuickGelu,
            Unary::Relu,
            Unary::TanhClamp(3.0),
            Unary::ScaleShift(0.18215, -0.5),
            Unary::LeakyRelu(0.2),
        ] {
            let got = read(&gpu, &ops::unary(&gpu, &input, op).unwrap());
            assert_close(&got, &cpu::unary(&x, op), tol(dtype), &format!("{op:?} {dtype:?}"));
        }
    }
    for define in ["SILU", "GELU", "QUICK_GELU", "RELU", "TANH_CLAMP", "SCALE_SHIFT", "LEAKY_RELU"] {
        assert_covers(&gpu, "elementwise.wgsl", &[define], &[]);
    }
}

#[test]
fn add_and_mul_broadcast_like_numpy() {
    let gpu = gpu();
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 5, 7], &[3, 5, 7]),
        (&[77, 45], &[45]),
        (&[2, 6, 5, 3], &[2, 6, 1, 1]),
        (&[2, 6, 5, 3], &[6, 1, 1]),
        (&[4, 9], &[1]),
    ];
    for dtype in DTYPES {
        for (a_shape, b_shape) in cases {
            let mut rng = TestRng::new(a_shape.iter().product::<usize>() as u32 + b_shape.len() as u32);
            let a = as_stored(&rng.vec(a_shape.iter().product()), dtype);
            let b = as_stored(&rng.vec(b_shape.iter().product()), dtype);
            let (ta, tb) = (upload(&gpu, a_shape, &a, dtype), upload(&gpu, b_shape, &b, dtype));
            let sum = read(&gpu, &ops::add(&gpu, &ta, &tb).unwrap());
            assert_close(
                &sum,
                &cpu::broadcast(&a, a_shape, &b, b_shape, |x, y| x + y),
                tol(dtype),
                &format!("add {a_shape:?}+{b_shape:?}"),
            );
            let product = read(&gpu, &ops::mul(&gpu, &ta, &tb).unwrap());
            assert_close(
                &product,
                &cpu::broadcast(&a, a_shape, &b, b_shape, |x, y| x * y),
                tol(dtype),
                &format!("mul {a_shape:?}*{b_shape:?}"),
            );
        }
    }
    let a = upload(&gpu, &[2, 3, 4], &[0.0; 24], DType::F32);
    let b = upload(&gpu, &[2, 1, 4], &[0.0; 8], DType::F32);
    assert!(ops::add(&gpu, &a, &b).is_err(), "non-contiguous broadcast must be refused");
    assert_covers(&gpu, "elementwise.wgsl", &["ADD"], &[]);
    assert_covers(&gpu, "elementwise.wgsl", &["MUL"], &[]);
}

#[test]
fn prelu_takes_a_slope_per_channel_or_one_for_all() {
    let gpu = gpu();
    let shape = [2, 3, 4, 5];
    for dtype in DTYPES {
        let x = as_stored(&TestRng::new(5).vec(120), dtype);
        let input = upload(&gpu, &shape, &x, dtype);
        for slopes in [vec![0.25f32, -0.5, 0.1], vec![0.3]] {
            let s = as_stored(&slopes, dtype);
            let got = read(&gpu, &ops::prelu(&gpu, &input, &upload(&gpu, &[s.len()], &s, dtype)).unwrap());
            let want: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| if v >= 0.0 { v } else { v * s[if s.len() == 1 { 0 } else { (i / 20) % 3 }] })
                .collect();
            assert_close(&got, &want, tol(dtype), &format!("prelu {} slopes {dtype:?}", s.len()));
        }
    }
    let x = upload(&gpu, &shape, &[0.0; 120], DType::F32);
    assert!(
        ops::prelu(&gpu, &x, &upload(&gpu, &[2], &[0.0; 2], DType::F32)).is_err(),
        "2 slopes for 3 channels"
    );
    assert_covers(&gpu, "elementwise.wgsl", &["PRELU"], &[]);
}

#[test]
fn geglu_and_cfg_match_cpu() {
    let gpu = gpu();
    for dtype in DTYPES {
        let mut rng = TestRng::new(5);
        let x = as_stored(&rng.vec(2 * 13 * 2 * 37).iter().map(|v| v * 4.0).collect::<Vec<_>>(), dtype);
        let got = read(&gpu, &ops::geglu(&gpu, &upload(&gpu, &[2, 13, 74], &x, dtype)).unwrap());
        assert_close(&got, &cpu::geglu(&x, 37), tol(dtype), &format!("geglu {dtype:?}"));

        let x = as_stored(&rng.vec(2 * 4 * 9 * 7), dtype);
        let out = ops::cfg_combine(&gpu, &upload(&gpu, &[2, 4, 9, 7], &x, dtype), 7.5).unwrap();
        assert_eq!(out.shape(), &[1, 4, 9, 7]);
        let cfg_tol = Tolerance { abs: tol(dtype).abs * 8.0, rel: tol(dtype).rel };
        assert_close(&read(&gpu, &out), &cpu::cfg(&x, 7.5), cfg_tol, &format!("cfg {dtype:?}"));
    }
    assert_covers(&gpu, "elementwise.wgsl", &["GEGLU"], &[]);
    assert_covers(&gpu, "elementwise.wgsl", &["CFG"], &[]);
}

#[test]
fn lincomb_matches_cpu_for_one_to_three_terms() {
    let gpu = gpu();
    for dtype in DTYPES {
        let mut rng = TestRng::new(17);
        let shape = [2, 4, 6, 5];
        let n: usize = shape.iter().product();
        let data: Vec<Vec<f32>> = (0..3).map(|_| as_stored(&rng.vec(n), dtype)).collect();
        let tensors: Vec<_> = data.iter().map(|d| upload(&gpu, &shape, d, dtype)).collect();
        let coefficients = [1.25f32, -0.75, 3.5];
        for terms in 1..=3 {
            let args: Vec<(f32, &darkroom_gpu::Tensor)> =
                (0..terms).map(|i| (coefficients[i], &tensors[i])).collect();
            let got = read(&gpu, &ops::lincomb(&gpu, &args).unwrap());
            let want: Vec<f32> =
                (0..n).map(|j| (0..terms).map(|i| coefficients[i] * data[i][j]).sum()).collect();
            let t = Tolerance { abs: tol(dtype).abs * 4.0, rel: tol(dtype).rel };
            assert_close(&got, &want, t, &format!("lincomb of {terms} {dtype:?}"));
        }
        let other = upload(&gpu, &[n], &data[0], dtype);
        assert!(ops::lincomb(&gpu, &[(1.0, &tensors[0]), (1.0, &other)]).is_err());
        assert!(ops::lincomb(&gpu, &[]).is_err());
    }
    assert_covers(&gpu, "elementwise.wgsl", &["LINCOMB"], &[]);
}

#[test]
fn large_tensors_use_the_second_dispatch_dimension() {
    // 17M elements: more than 65535 workgroups of 256 in one dimension.
    let gpu = gpu();
    let n = 65_536 * 256 + 1000;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 - 500.0).collect();
    let got = read(&gpu, &ops::unary(&gpu, &upload(&gpu, &[n], &x, DType::F32), Unary::Relu).unwrap());
    assert_eq!(got.len(), n);
    assert!(got.iter().zip(&x).all(|(g, v)| *g == v.max(0.0)), "tail elements were not computed");
}

/// A lost device (here destroyed, as a driver reset would) makes the next readback fail with
/// `DeviceLost` at once, instead of hanging on a mapping that never completes or passing for a
/// validation error.
#[test]
fn a_lost_device_is_reported_as_lost() {
    let gpu = gpu();
    let input = upload(&gpu, &[8], &[1.0; 8], DType::F32);
    let doubled = ops::unary(&gpu, &input, Unary::ScaleShift(2.0, 0.0)).unwrap();
    assert_eq!(read(&gpu, &doubled), vec![2.0; 8]);
    assert_eq!(gpu.lost(), None);
    gpu.destroy();
    assert!(gpu.lost().is_some());
    let outcome = ops::unary(&gpu, &input, Unary::Silu).and_then(|t| pollster::block_on(t.read_f32(&gpu)));
    match outcome {
        Err(darkroom_gpu::GpuError::DeviceLost(_)) => {}
        other => panic!("expected DeviceLost, got {other:?}"),
    }
}
