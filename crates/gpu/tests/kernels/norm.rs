use darkroom_gpu::ops::{self, Fused};
use darkroom_gpu::reference::{norm as cpu, TestRng};
use darkroom_gpu::{DType, Tolerance};

use crate::common::*;

fn tol(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance { abs: 1e-5, rel: 1e-5 },
        DType::F16 => Tolerance { abs: 4e-3, rel: 2e-3 },
    }
}

#[test]
fn group_norm_matches_cpu_with_each_fused_activation() {
    let gpu = gpu();
    // (batch, channels, groups, spatial): SD's 32 groups, TAEF2's 4, an odd spatial size, a
    // segment far longer than the workgroup, and segments long enough to go in chunks (8192
    // values each; the last one short), as the VAE decoder's at full resolution.
    for &(batch, channels, groups, h, w) in &[
        (2, 64, 32, 5, 7),
        (1, 16, 4, 9, 9),
        (1, 8, 2, 40, 33),
        (3, 6, 3, 1, 1),
        (1, 8, 2, 130, 129),
        (2, 4, 1, 100, 100),
    ] {
        for dtype in DTYPES {
            for fused in [Fused::None, Fused::Silu, Fused::Relu] {
                let mut rng = TestRng::new((channels * h * w + groups) as u32);
                // An offset and scale so mean and variance matter.
                let x = as_stored(
                    &rng.vec(batch * channels * h * w).iter().map(|v| v * 3.0 + 1.5).collect::<Vec<_>>(),
                    dtype,
                );
                let gamma = rng.vec(channels);
                let beta = rng.vec(channels);
                let out = ops::group_norm(
                    &gpu,
                    &upload(&gpu, &[batch, channels, h, w], &x, dtype),
                    groups,
                    &upload(&gpu, &[channels], &gamma, DType::F32),
                    &upload(&gpu, &[channels], &beta, DType::F32),
                    1e-5,
                    fused,
                )
                .unwrap();
                let want = cpu::group_norm(&x, batch, channels, groups, &gamma, &beta, 1e-5, fused);
                assert_close(
                    &read(&gpu, &out),
                    &want,
                    tol(dtype),
                    &format!("group_norm {dtype:?} {fused:?} {batch}x{channels}x{h}x{w}/{groups}"),
                );
            }
        }
    }
    tiled_group_norm_matches_the_whole_images(&gpu);
    assert_covers(&gpu, "norm.wgsl", &[], &[]);
}

/// Statistics over tiles of unequal sizes (one long enough for several chunks), applied to one
/// tile with a border from its neighbours, equal the whole image's group norm there.
fn tiled_group_norm_matches_the_whole_images(gpu: &darkroom_gpu::Gpu) {
    let (channels, groups, h, w) = (8, 2, 70, 150);
    // Tile rectangles (y0, x0, y1, x1) covering the image once.
    let rects = [(0, 0, 30, 100), (0, 100, 30, 150), (30, 0, 70, 60), (30, 60, 70, 150)];
    for dtype in DTYPES {
        for fused in [Fused::None, Fused::Silu, Fused::Relu] {
            let mut rng = TestRng::new(11);
            let x = as_stored(
                &rng.vec(channels * h * w).iter().map(|v| v * 2.0 - 0.7).collect::<Vec<_>>(),
                dtype,
            );
            let (gamma, beta) = (rng.vec(channels), rng.vec(channels));
            let crop = |(y0, x0, y1, x1): (usize, usize, usize, usize)| -> Vec<f32> {
                (0..channels)
                    .flat_map(|c| (y0..y1).flat_map(move |y| (x0..x1).map(move |xx| (c, y, xx))))
                    .map(|(c, y, xx)| x[(c * h + y) * w + xx])
                    .collect()
            };
            let tiles: Vec<_> = rects
                .iter()
                .map(|&(y0, x0, y1, x1)| {
                    upload(gpu, &[1, channels, y1 - y0, x1 - x0], &crop((y0, x0, y1, x1)), dtype)
                })
                .collect();
            let stats = ops::GroupStats::over(gpu, &tiles.iter().collect::<Vec<_>>(), groups).unwrap();
            // The third tile with a 3-pixel border above and to the right.
            let bordered = (27, 0, 70, 63);
            let input = upload(gpu, &[1, channels, 43, 63], &crop(bordered), dtype);
            let gamma_t = upload(gpu, &[channels], &gamma, DType::F32);
            let beta_t = upload(gpu, &[channels], &beta, DType::F32);
            let out = stats.apply(gpu, &input, &gamma_t, &beta_t, 1e-5, fused).unwrap();
            let whole = cpu::group_norm(&x, 1, channels, groups, &gamma, &beta, 1e-5, fused);
            let want: Vec<f32> = (0..channels)
                .flat_map(|c| (27..70).flat_map(move |y| (0..63).map(move |xx| (c, y, xx))))
                .map(|(c, y, xx)| whole[(c * h + y) * w + xx])
                .collect();
            assert_close(
                &read(gpu, &out),
                &want,
                tol(dtype),
                &format!("tiled group_norm {dtype:?} {fused:?}"),
            );
        }
    }
    assert!(ops::GroupStats::over(gpu, &[], 2).is_err());
}

#[test]
fn layer_norm_matches_cpu() {
    let gpu = gpu();
    for &(rows, d) in &[(77, 768), (3, 1000), (130, 45)] {
        for dtype in DTYPES {
            let mut rng = TestRng::new((rows * d) as u32);
            let x = as_stored(&rng.vec(rows * d).iter().map(|v| v * 2.0 - 0.3).collect::<Vec<_>>(), dtype);
            let gamma = rng.vec(d);
            let beta = rng.vec(d);
            let out = ops::layer_norm(
                &gpu,
                &upload(&gpu, &[rows, d], &x, dtype),
                &upload(&gpu, &[d], &gamma, DType::F32),
                &upload(&gpu, &[d], &beta, DType::F32),
                1e-5,
            )
            .unwrap();
            let want = cpu::layer_norm(&x, d, &gamma, &beta, 1e-5);
            assert_close(&read(&gpu, &out), &want, tol(dtype), &format!("layer_norm {dtype:?} {rows}x{d}"));
        }
    }
}

#[test]
fn bad_group_counts_and_affine_sizes_are_errors() {
    let gpu = gpu();
    let x = upload(&gpu, &[1, 6, 2, 2], &[0.0; 24], DType::F32);
    let g6 = upload(&gpu, &[6], &[1.0; 6], DType::F32);
    assert!(ops::group_norm(&gpu, &x, 4, &g6, &g6, 1e-5, Fused::None).is_err());
    let g5 = upload(&gpu, &[5], &[1.0; 5], DType::F32);
    assert!(ops::group_norm(&gpu, &x, 3, &g5, &g6, 1e-5, Fused::None).is_err());
    assert!(ops::layer_norm(&gpu, &x, &g6, &g6, 1e-5).is_err());
}
