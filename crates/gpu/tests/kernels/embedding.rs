use darkroom_gpu::ops::{self, ColorMap, Rgba8Image};
use darkroom_gpu::reference::TestRng;
use darkroom_gpu::{DType, PackedWeight, Tolerance, Weight, WeightFormat};

use crate::common::*;

#[test]
fn token_and_position_lookup_matches_cpu_for_every_table_format() {
    let gpu = gpu();
    let (vocab, width, seq) = (300, 40, 9);
    let mut rng = TestRng::new(9);
    let table = rng.vec(vocab * width);
    let positions = rng.vec(12 * width); // longer than the sequence, as CLIP's 77 > used tokens
    let ids: Vec<u32> = (0..2 * seq).map(|i| (rng.next_u32() % vocab as u32).max(i as u32 % 3)).collect();
    for dtype in DTYPES {
        let pos = as_stored(&positions, dtype);
        for format in WeightFormat::ALL {
            let packed = PackedWeight::pack(&table, vocab, width, format);
            let tokens = Weight::upload(&gpu, &packed, None).unwrap();
            let out = ops::embed_tokens(&gpu, &ids, seq, &tokens, &upload(&gpu, &[12, width], &pos, dtype))
                .unwrap();
            assert_eq!(out.shape(), &[2, seq, width]);
            let deq = packed.dequantize();
            let want: Vec<f32> = ids
                .iter()
                .enumerate()
                .flat_map(|(row, &id)| {
                    let t = row % seq;
                    (0..width).map(move |c| (id as usize, t, c))
                })
                .map(|(id, t, c)| deq[id * width + c] + pos[t * width + c])
                .collect();
            let tol = Tolerance { abs: if dtype == DType::F16 { 2e-3 } else { 1e-6 }, rel: 1e-3 };
            assert_close(&read(&gpu, &out), &want, tol, &format!("{dtype:?} {format:?}"));
        }
    }
    let tokens = Weight::from_f32(&gpu, vocab, width, &table, None, WeightFormat::F32).unwrap();
    let pos = upload(&gpu, &[12, width], &positions, DType::F32);
    let err = ops::embed_tokens(&gpu, &[1, 2, 300], 3, &tokens, &pos).unwrap_err().to_string();
    assert!(err.contains("token id 300"), "{err}");
    assert!(ops::embed_tokens(&gpu, &[1; 13], 13, &tokens, &pos).is_err(), "13 positions > 12");
    assert_covers(&gpu, "embedding.wgsl", &[], &[]);
}

#[test]
fn images_round_trip_through_rgba8() {
    let gpu = gpu();
    let (w, h) = (13, 7);
    let mut rng = TestRng::new(4);
    let rgba: Vec<u8> = (0..w * h)
        .flat_map(|_| {
            let v = rng.next_u32().to_le_bytes();
            [v[0], v[1], v[2], 255]
        })
        .collect();
    for dtype in DTYPES {
        let image = Rgba8Image::upload(&gpu, &rgba, w, h).unwrap();
        let tensor = image.to_tensor(&gpu, dtype, 2.0, -1.0).unwrap();
        assert_eq!(tensor.shape(), &[1, 3, h, w]);
        let values = read(&gpu, &tensor);
        // Pixel (x 5, y 2), green channel: byte / 255 * 2 - 1.
        let p = 2 * w + 5;
        let expected = rgba[p * 4 + 1] as f32 / 255.0 * 2.0 - 1.0;
        assert!((values[h * w + p] - expected).abs() < 2e-3, "{} vs {expected}", values[h * w + p]);
        let back = Rgba8Image::from_tensor(&gpu, &tensor, ColorMap::SIGNED_RGB).unwrap();
        let bytes = pollster::block_on(back.read(&gpu)).unwrap();
        assert_eq!(bytes, rgba, "{dtype:?}: [-1, 1] and back must give the same bytes");
    }
    assert_covers(&gpu, "image.wgsl", &[], &[]);
}

#[test]
fn to_rgba8_clamps_and_applies_the_colour_map() {
    let gpu = gpu();
    // Two pixels, four channels (a latent): a map that reads channel 3 into red, channels 0 and 1
    // averaged into green, nothing into blue, plus a bias.
    let x = [
        2.0, -1.0, /* ch0 */ 0.5, 0.5, /* ch1 */ 9.0, 9.0, /* ch2 */ 0.25, -3.0, /* ch3 */
    ];
    let map = ColorMap {
        matrix: [[0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        bias: [0.0, 0.0, 0.2],
    };
    let t = upload(&gpu, &[1, 4, 1, 2], &x, DType::F32);
    let bytes = pollster::block_on(Rgba8Image::from_tensor(&gpu, &t, map).unwrap().read(&gpu)).unwrap();
    // Pixel 0: r = 0.25 → 64, g = (2 + 0.5) / 2 = 1.25 → clamped 255, b = 0.2 → 51.
    // Pixel 1: r = -3 → 0, g = (-1 + 0.5) / 2 → 0, b = 51.
    assert_eq!(bytes, [64, 255, 51, 255, 0, 0, 51, 255]);
    assert!(Rgba8Image::upload(&gpu, &[0; 7], 1, 2).is_err());
}
