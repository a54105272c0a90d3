//! Plain-Rust reference implementations of every op, used by tests to check the kernels.

/// `c[b] = a[b] · b[b]` for row-major `a` [batch, m, k] and `b` [batch, k, n] (or [k, n],
/// shared by every batch when `b` holds a single matrix).
pub fn matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
    let b_stride = if b.len() == k * n { 0 } else { k * n };
    let mut c = vec![0.0f32; batch * m * n];
    for bi in 0..batch {
        let a = &a[bi * m * k..][..m * k];
        let b = &b[bi * b_stride..][..k * n];
        let c = &mut c[bi * m * n..][..m * n];
        for i in 0..m {
            for p in 0..k {
                let av = a[i * k + p];
                for j in 0..n {
                    c[i * n + j] += av * b[p * n + j];
                }
            }
        }
    }
    c
}

/// A small deterministic generator for test data (xorshift32), identical in the browser test
/// so both sides can rebuild the same inputs from a seed.
pub struct TestRng(u32);

impl TestRng {
    pub fn new(seed: u32) -> Self {
        TestRng(seed.max(1))
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1), on a grid of 2^-23 so the value is exact in f32.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next_f32()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_a_hand_computed_product() {
        // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]
        let a = [1., 2., 3., 4., 5., 6.];
        let b = [7., 8., 9., 10., 11., 12.];
        assert_eq!(matmul(&a, &b, 1, 2, 3, 2), vec![58., 64., 139., 154.]);
    }

    #[test]
    fn shared_right_operand_is_used_for_every_batch() {
        let a = [1., 0., 0., 1., 2., 0., 0., 2.]; // two 2x2: I and 2I
        let b = [1., 2., 3., 4.];
        assert_eq!(matmul(&a, &b, 2, 2, 2, 2), vec![1., 2., 3., 4., 2., 4., 6., 8.]);
    }

    #[test]
    fn test_rng_is_the_documented_xorshift32() {
        // xorshift32 from seed 1: 270369, 67634689, 2647435461 (Marsaglia 2003, shifts 13/17/5)
        let mut rng = TestRng::new(1);
        assert_eq!([rng.next_u32(), rng.next_u32(), rng.next_u32()], [270369, 67634689, 2647435461]);
        let mut rng = TestRng::new(7);
        assert!(rng.vec(1000).iter().all(|v| (-1.0..1.0).contains(v)));
    }
}

/// Elementwise references, computed in f64 with libm's erf/tanh/exp.
pub mod elementwise {
    use crate::ops::Unary;

    pub fn unary(x: &[f32], op: Unary) -> Vec<f32> {
        x.iter()
            .map(|&v| {
                let v = v as f64;
                let y = match op {
                    Unary::Silu => v / (1.0 + (-v).exp()),
                    Unary::Gelu => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
                    Unary::QuickGelu => v / (1.0 + (-1.702 * v).exp()),
                    Unary::Relu => v.max(0.0),
                    Unary::TanhClamp(limit) => (v / limit as f64).tanh() * limit as f64,
                    Unary::ScaleShift(scale, shift) => v * scale as f64 + shift as f64,
                    Unary::LeakyRelu(slope) => {
                        if v >= 0.0 {
                            v
                        } else {
                            v * slope as f64
                        }
                    }
                };
                y as f32
            })
            .collect()
    }

    /// `a op b` with b repeated as numpy broadcasting would, given a's and b's shapes.
    pub fn broadcast(
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        op: fn(f32, f32) -> f32,
    ) -> Vec<f32> {
        let rank = a_shape.len();
        let b_dims: Vec<usize> =
            std::iter::repeat_n(1, rank - b_shape.len()).chain(b_shape.iter().copied()).collect();
        let mut out = Vec::with_capacity(a.len());
        let mut index = vec![0usize; rank];
        for &av in a {
            let mut bi = 0;
            for d in 0..rank {
                bi = bi * b_dims[d] + if b_dims[d] == 1 { 0 } else { index[d] };
            }
            out.push(op(av, b[bi]));
            for d in (0..rank).rev() {
                index[d] += 1;
                if index[d] < a_shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }

    pub fn geglu(x: &[f32], half: usize) -> Vec<f32> {
        x.chunks(2 * half)
            .flat_map(|row| {
                let (h, g) = row.split_at(half);
                let gelu = unary(g, Unary::Gelu);
                h.iter().zip(gelu).map(|(a, b)| a * b).collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn cfg(x: &[f32], scale: f32) -> Vec<f32> {
        let (u, c) = x.split_at(x.len() / 2);
        u.iter().zip(c).map(|(u, c)| u + scale * (c - u)).collect()
    }
}

/// Normalisation references, in f64.
pub mod norm {
    /// GroupNorm over x [B, C, spatial], then the fused activation.
    pub fn group_norm(
        x: &[f32],
        batch: usize,
        channels: usize,
        groups: usize,
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        fused: crate::ops::Fused,
    ) -> Vec<f32> {
        let spatial = x.len() / (batch * channels);
        let cpg = channels / groups;
        let mut out = vec![0f32; x.len()];
        for b in 0..batch {
            for g in 0..groups {
                let start = (b * channels + g * cpg) * spatial;
                let seg = &x[start..start + cpg * spatial];
                let n = seg.len() as f64;
                let mean = seg.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = seg.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                for (e, &v) in seg.iter().enumerate() {
                    let c = g * cpg + e / spatial;
                    let mut y = (v as f64 - mean) * rstd * gamma[c] as f64 + beta[c] as f64;
                    match fused {
                        crate::ops::Fused::None => {}
                        crate::ops::Fused::Silu => y /= 1.0 + (-y).exp(),
                        crate::ops::Fused::Relu => y = y.max(0.0),
                    }
                    out[start + e] = y as f32;
                }
            }
        }
        out
    }

    /// LayerNorm over the last dimension (`d`).
    pub fn layer_norm(x: &[f32], d: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                let n = d as f64;
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let rstd = 1.0 / (var + eps as f64).sqrt();
                row.iter()
                    .enumerate()
                    .map(move |(i, &v)| ((v as f64 - mean) * rstd * gamma[i] as f64 + beta[i] as f64) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// conv2d reference: direct loops, zero padding, in f64.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    (batch, cin, h, w): (usize, usize, usize, usize),
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    (pad_top, pad_left): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; batch * cout * oh * ow];
    for b in 0..batch {
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = bias.map_or(0.0, |b| b[o] as f64);
                    for c in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad_top as isize;
                                let ix = (ox * stride + kx) as isize - pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * cin + c) * h + iy as usize) * w + ix as usize] as f64;
                                let wv = weight[((o * cin + c) * kh + ky) * kw + kx] as f64;
                                sum += xv * wv;
                            }
                        }
                    }
                    out[((b * cout + o) * oh + oy) * ow + ox] = sum as f32;
                }
            }
        }
    }
    out
}

/// Attention reference: softmax(QKᵀ/√D)V per head, in f64. Layouts as `ops::attention`.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    nq: usize,
    nk: usize,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Vec<f32> {
    let width = heads * head_dim;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0f32; batch * nq * width];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..nq {
                let qi = &q[(b * nq + i) * width + h * head_dim..][..head_dim];
                let keys = if causal { i + 1 } else { nk };
                let scores: Vec<f64> = (0..keys)
                    .map(|j| {
                        let kj = &k[(b * nk + j) * width + h * head_dim..][..head_dim];
                        qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..head_dim {
                    let value: f64 = (0..keys)
                        .map(|j| weights[j] * v[(b * nk + j) * width + h * head_dim + d] as f64)
                        .sum();
                    out[(b * nq + i) * width + h * head_dim + d] = (value / total) as f32;
                }
            }
        }
    }
    out
}

/// Nearest 2x upsampling of [planes, h, w].
pub fn upsample2x(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    x.chunks(h * w)
        .flat_map(|plane| (0..4 * h * w).map(move |i| plane[(i / (2 * w) / 2) * w + (i % (2 * w)) / 2]))
        .collect()
}

/// Nearest resize of [planes, h, w] to [planes, oh, ow] as PyTorch indexes it: source
/// `min(floor(o · (in / out) in f32), in − 1)`.
pub fn upsample_nearest(x: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let source = |o: usize, from: usize, to: usize| {
        let scale = from as f32 / to as f32;
        ((o as f32 * scale).floor() as usize).min(from - 1)
    };
    x.chunks(h * w)
        .flat_map(|plane| (0..oh * ow).map(move |i| plane[source(i / ow, h, oh) * w + source(i % ow, w, ow)]))
        .collect()
}

/// Concatenation along a dimension, given the rows before it (`outer`) and each input's row
/// length from that dimension on.
pub fn concat(a: &[f32], b: &[f32], outer: usize) -> Vec<f32> {
    let (ra, rb) = (a.len() / outer, b.len() / outer);
    (0..outer).flat_map(|r| a[r * ra..][..ra].iter().chain(&b[r * rb..][..rb]).copied()).collect()
}

/// Bilinear resize of [planes, h, w] to [planes, oh, ow] in f64, as PyTorch's
/// `interpolate(mode="bilinear")` defines the source coordinate: `o · (in − 1)/(out − 1)` with
/// `align_corners`, else `max((o + ½) · in/out − ½, 0)`; the two nearest rows and columns
/// weighted by distance, the last one repeated at the far edge.
pub fn resize_bilinear(x: &[f32], h: usize, w: usize, oh: usize, ow: usize, align_corners: bool) -> Vec<f32> {
    let source = |o: usize, from: usize, to: usize| -> (usize, usize, f64) {
        let s = if align_corners {
            if to > 1 {
                o as f64 * (from as f64 - 1.0) / (to as f64 - 1.0)
            } else {
                0.0
            }
        } else {
            ((o as f64 + 0.5) * from as f64 / to as f64 - 0.5).max(0.0)
        };
        let lo = (s.floor() as usize).min(from - 1);
        (lo, (lo + 1).min(from - 1), s - lo as f64)
    };
    x.chunks(h * w)
        .flat_map(|plane| {
            (0..oh * ow).map(move |i| {
                let (y0, y1, ly) = source(i / ow, h, oh);
                let (x0, x1, lx) = source(i % ow, w, ow);
                let at = |y: usize, x: usize| plane[y * w + x] as f64;
                let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
                let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
                ((1.0 - ly) * top + ly * bottom) as f32
            })
        })
        .collect()
}
