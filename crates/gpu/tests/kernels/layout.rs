use darkroom_gpu::ops::{self, copy_region, Region};
use darkroom_gpu::reference::{self, TestRng};
use darkroom_gpu::{DType, Tolerance};

use crate::common::*;

const EXACT: Tolerance = Tolerance { abs: 0.0, rel: 0.0 };

#[test]
fn upsample2x_repeats_each_pixel_into_a_2x2_block() {
    let gpu = gpu();
    for dtype in DTYPES {
        let (planes, h, w) = (2 * 5, 7, 3);
        let x = as_stored(&TestRng::new(1).vec(planes * h * w), dtype);
        let out = ops::upsample2x(&gpu, &upload(&gpu, &[2, 5, h, w], &x, dtype)).unwrap();
        assert_eq!(out.shape(), &[2, 5, 14, 6]);
        let got = read(&gpu, &out);
        assert_close(&got, &reference::upsample2x(&x, h, w), EXACT, &format!("upsample {dtype:?}"));
        // Independent spot check: output (plane 3, y 9, x 5) is input (plane 3, y 4, x 2).
        assert_eq!(got[(3 * 14 + 9) * 6 + 5], x[(3 * h + 4) * w + 2]);
    }
    assert_covers(&gpu, "layout.wgsl", &["UPSAMPLE"], &[]);
}

#[test]
fn bilinear_resize_matches_torch_interpolate() {
    let gpu = gpu();
    // torch.nn.functional.interpolate of arange(12).reshape(1, 1, 3, 4) ** 1.5 to 5x7, both
    // corner conventions (values printed by PyTorch 2.15), and a shrink to 2x3.
    let x: Vec<f32> = (0..12).map(|i| (i as f32).powf(1.5)).collect();
    let torch_unaligned_row2 = [8.0, 9.135_836, 10.953_173, 12.938_64, 14.970_034, 17.154_789, 18.520_26];
    let torch_aligned_row1 = [4.0, 5.045_085, 6.090_17, 7.426_426, 8.762_683, 10.310_444, 11.858_206];
    let torch_shrunk = [2.257_514, 4.670_32, 8.071_909, 19.649_65, 25.218_2, 31.225_403];
    let input = upload(&gpu, &[1, 1, 3, 4], &x, DType::F32);
    let unaligned = read(&gpu, &ops::resize_bilinear(&gpu, &input, 5, 7, false).unwrap());
    let aligned = read(&gpu, &ops::resize_bilinear(&gpu, &input, 5, 7, true).unwrap());
    let shrunk = read(&gpu, &ops::resize_bilinear(&gpu, &input, 2, 3, false).unwrap());
    let near = Tolerance { abs: 1e-5, rel: 1e-5 };
    assert_close(&unaligned[14..21], &torch_unaligned_row2, near, "unaligned row 2");
    assert_close(&aligned[7..14], &torch_aligned_row1, near, "aligned row 1");
    assert_close(&shrunk, &torch_shrunk, near, "shrunk");
    for dtype in DTYPES {
        for (h, w, oh, ow) in [(5, 3, 9, 5), (19, 19, 37, 37), (8, 6, 3, 4), (1, 4, 3, 8), (7, 7, 7, 7)] {
            for aligned in [false, true] {
                let planes = 2 * 3;
                let x = as_stored(&TestRng::new(9).vec(planes * h * w), dtype);
                let out =
                    ops::resize_bilinear(&gpu, &upload(&gpu, &[2, 3, h, w], &x, dtype), oh, ow, aligned)
                        .unwrap();
                assert_eq!(out.shape(), &[2, 3, oh, ow]);
                let want = reference::resize_bilinear(&x, h, w, oh, ow, aligned);
                let tol = if dtype == DType::F16 { Tolerance { abs: 2e-3, rel: 2e-3 } } else { near };
                let what = format!("bilinear {h}x{w} to {oh}x{ow} aligned {aligned} {dtype:?}");
                assert_close(&read(&gpu, &out), &want, tol, &what);
            }
        }
    }
    assert!(ops::resize_bilinear(&gpu, &upload(&gpu, &[1, 0, 0], &[], DType::F32), 2, 2, true).is_err());
    assert_covers(&gpu, "layout.wgsl", &["BILINEAR"], &[]);
    assert_covers(&gpu, "layout.wgsl", &["ALIGNED", "BILINEAR"], &[]);
}

#[test]
fn upsample_to_a_size_indexes_as_torch_nearest() {
    let gpu = gpu();
    for dtype in DTYPES {
        // A UNet's upsample to an odd skip size (5 → 9, 3 → 5), a shrink and an identity.
        for (h, w, oh, ow) in [(5, 3, 9, 5), (3, 2, 5, 3), (4, 6, 3, 6), (7, 7, 7, 7), (13, 5, 26, 10)] {
            let planes = 2 * 3;
            let x = as_stored(&TestRng::new(4).vec(planes * h * w), dtype);
            let out = ops::upsample_nearest(&gpu, &upload(&gpu, &[2, 3, h, w], &x, dtype), oh, ow).unwrap();
            assert_eq!(out.shape(), &[2, 3, oh, ow]);
            let got = read(&gpu, &out);
            let want = reference::upsample_nearest(&x, h, w, oh, ow);
            assert_close(&got, &want, EXACT, &format!("upsample {h}x{w} to {oh}x{ow} {dtype:?}"));
        }
        // Independent of the reference: torch.nn.functional.interpolate(size=(9, 5)) of a 5x3 map
        // reads rows [0, 0, 1, 1, 2, 2, 3, 3, 4] and columns [0, 0, 1, 1, 2].
        let x: Vec<f32> = (0..15).map(|v| v as f32).collect();
        let got =
            read(&gpu, &ops::upsample_nearest(&gpu, &upload(&gpu, &[1, 1, 5, 3], &x, dtype), 9, 5).unwrap());
        let (rows, cols) = ([0, 0, 1, 1, 2, 2, 3, 3, 4], [0, 0, 1, 1, 2]);
        let want: Vec<f32> =
            rows.iter().flat_map(|&r| cols.iter().map(move |&c| (r * 3 + c) as f32)).collect();
        assert_eq!(got, want, "{dtype:?}");
    }
}

#[test]
fn concat_joins_along_any_dimension() {
    let gpu = gpu();
    for dtype in DTYPES {
        let mut rng = TestRng::new(2);
        // Channels of a skip connection: [2, 3, 4, 5] ++ [2, 6, 4, 5] → [2, 9, 4, 5].
        let a = as_stored(&rng.vec(2 * 3 * 20), dtype);
        let b = as_stored(&rng.vec(2 * 6 * 20), dtype);
        let out = ops::concat(
            &gpu,
            &upload(&gpu, &[2, 3, 4, 5], &a, dtype),
            &upload(&gpu, &[2, 6, 4, 5], &b, dtype),
            1,
        )
        .unwrap();
        assert_eq!(out.shape(), &[2, 9, 4, 5]);
        assert_close(&read(&gpu, &out), &reference::concat(&a, &b, 2), EXACT, "channels");
        // Along the last dimension, and along the first (a batch of two prompts).
        let out = ops::concat(
            &gpu,
            &upload(&gpu, &[2, 3, 20], &a, dtype),
            &upload(&gpu, &[2, 3, 40], &b, dtype),
            2,
        )
        .unwrap();
        assert_close(&read(&gpu, &out), &reference::concat(&a, &b, 6), EXACT, "last");
        let out =
            ops::concat(&gpu, &upload(&gpu, &[1, 120], &a, dtype), &upload(&gpu, &[2, 120], &b, dtype), 0)
                .unwrap();
        assert_eq!(read(&gpu, &out), [a.clone(), b.clone()].concat());
    }
    let t = |s: &[usize]| upload(&gpu, s, &vec![0.0; s.iter().product()], DType::F32);
    assert!(ops::concat(&gpu, &t(&[2, 3, 4]), &t(&[2, 3, 5]), 1).is_err());
    assert!(ops::concat(&gpu, &t(&[2, 3]), &t(&[2, 3]), 2).is_err());
    assert_covers(&gpu, "layout.wgsl", &["CONCAT"], &[]);
}

#[test]
fn transpose_swaps_the_last_two_dimensions() {
    let gpu = gpu();
    for dtype in DTYPES {
        let (batch, rows, cols) = (3, 7, 45);
        let x = as_stored(&TestRng::new(8).vec(batch * rows * cols), dtype);
        let out = ops::transpose(&gpu, &upload(&gpu, &[batch, rows, cols], &x, dtype)).unwrap();
        assert_eq!(out.shape(), &[batch, cols, rows]);
        let got = read(&gpu, &out);
        for b in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(got[(b * cols + c) * rows + r], x[(b * rows + r) * cols + c]);
                }
            }
        }
    }
    assert_covers(&gpu, "layout.wgsl", &["TRANSPOSE"], &[]);
}

#[test]
fn copy_region_moves_rectangles_through_an_optional_2x_upsampling() {
    let gpu = gpu();
    let (planes, sh, sw, dh, dw) = (3, 5, 7, 12, 9);
    for dtype in DTYPES {
        let src: Vec<f32> = (0..planes * sh * sw).map(|i| i as f32).collect();
        let base: Vec<f32> = (0..planes * dh * dw).map(|i| -(i as f32)).collect();
        for region in [
            Region { src_y: 1, src_x: 2, dst_y: 3, dst_x: 0, h: 4, w: 5, scale: 1 },
            Region { src_y: 3, src_x: 1, dst_y: 0, dst_x: 2, h: 7, w: 7, scale: 2 },
        ] {
            let dst = upload(&gpu, &[1, planes, dh, dw], &base, dtype);
            copy_region(&gpu, &upload(&gpu, &[1, planes, sh, sw], &src, dtype), &dst, region).unwrap();
            let mut want = base.clone();
            for p in 0..planes {
                for y in 0..region.h {
                    for x in 0..region.w {
                        let (sy, sx) = ((region.src_y + y) / region.scale, (region.src_x + x) / region.scale);
                        want[(p * dh + region.dst_y + y) * dw + region.dst_x + x] =
                            src[(p * sh + sy) * sw + sx];
                    }
                }
            }
            let want = as_stored(&want, dtype);
            assert_close(&read(&gpu, &dst), &want, EXACT, &format!("{region:?} {dtype:?}"));
        }
        // Out of bounds on either side is an error, not a stray write.
        let dst = upload(&gpu, &[1, planes, dh, dw], &base, dtype);
        let src_t = upload(&gpu, &[1, planes, sh, sw], &src, dtype);
        let too_far = Region { src_y: 0, src_x: 0, dst_y: 10, dst_x: 0, h: 3, w: 2, scale: 1 };
        assert!(copy_region(&gpu, &src_t, &dst, too_far).is_err());
        let past_source = Region { src_y: 8, src_x: 0, dst_y: 0, dst_x: 0, h: 3, w: 2, scale: 2 };
        assert!(copy_region(&gpu, &src_t, &dst, past_source).is_err());
    }
    assert_covers(&gpu, "region.wgsl", &[], &[]);
}

/// PyTorch's pixel_shuffle / pixel_unshuffle by their definition (a reshape and a permute),
/// and the round trip.
#[test]
fn pixel_shuffle_and_unshuffle_match_pytorchs_definition() {
    let gpu = gpu();
    let (b, c, h, w, r) = (2, 3, 4, 5, 2);
    for dtype in DTYPES {
        let n = b * c * r * r * h * w;
        let x: Vec<f32> = as_stored(&(0..n).map(|i| i as f32 * 0.01).collect::<Vec<_>>(), dtype);
        let input = upload(&gpu, &[b, c * r * r, h, w], &x, dtype);
        let shuffled = ops::pixel_shuffle(&gpu, &input, r).unwrap();
        assert_eq!(shuffled.shape(), &[b, c, h * r, w * r]);
        // out[n, ch, y*r + i, x*r + j] = in[n, ch*r*r + i*r + j, y, x]
        let mut want = vec![0.0f32; n];
        for (nb, ch, y, xx, i, j) in shuffle_positions(b, c, h, w, r) {
            let src = ((nb * c * r * r + ch * r * r + i * r + j) * h + y) * w + xx;
            let dst = ((nb * c + ch) * h * r + y * r + i) * w * r + xx * r + j;
            want[dst] = x[src];
        }
        let got = read(&gpu, &shuffled);
        assert_eq!(got, want, "pixel_shuffle {dtype:?}");
        let back = read(&gpu, &ops::pixel_unshuffle(&gpu, &shuffled, r).unwrap());
        assert_eq!(back, x, "pixel_unshuffle undoes it {dtype:?}");
    }
    let odd = upload(&gpu, &[1, 3, 5, 4], &[0.0; 60], DType::F32);
    assert!(ops::pixel_unshuffle(&gpu, &odd, 2).is_err());
    assert!(ops::pixel_shuffle(&gpu, &odd, 2).is_err(), "3 channels do not split into 2x2");
    assert_covers(&gpu, "layout.wgsl", &["PIXEL_SHUFFLE"], &[]);
    assert_covers(&gpu, "layout.wgsl", &["PIXEL_UNSHUFFLE"], &[]);
}

fn shuffle_positions(
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    r: usize,
) -> Vec<(usize, usize, usize, usize, usize, usize)> {
    let mut out = Vec::new();
    for nb in 0..b {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    for i in 0..r {
                        for j in 0..r {
                            out.push((nb, ch, y, x, i, j));
                        }
                    }
                }
            }
        }
    }
    out
}
