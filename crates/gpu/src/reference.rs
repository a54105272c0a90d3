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
        assert_eq!(
            matmul(&a, &b, 2, 2, 2, 2),
            vec![1., 2., 3., 4., 2., 4., 6., 8.]
        );
    }

    #[test]
    fn test_rng_is_the_documented_xorshift32() {
        // xorshift32 from seed 1: 270369, 67634689, 2647435461 (Marsaglia 2003, shifts 13/17/5)
        let mut rng = TestRng::new(1);
        assert_eq!(
            [rng.next_u32(), rng.next_u32(), rng.next_u32()],
            [270369, 67634689, 2647435461]
        );
        let mut rng = TestRng::new(7);
        assert!(rng.vec(1000).iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
