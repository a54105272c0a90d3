//! Mersenne Twister MT19937, the engine behind `torch.Generator("cpu").manual_seed(seed)`, so a
//! seed here draws the same numbers as in diffusers and the same seed gives the same image.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER: u32 = 0x8000_0000;
const LOWER: u32 = 0x7fff_ffff;

#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl Mt19937 {
    /// torch seeds its CPU generator with the low 32 bits of the seed (`mt19937(seed)` in
    /// aten's CPUGeneratorImpl), like `std::mt19937(seed)`.
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { state, index: N }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_seed_matches_the_published_sequence() {
        // std::mt19937 with its default seed 5489 (Matsumoto & Nishimura's reference mt19937ar).
        let mut mt = Mt19937::new(5489);
        assert_eq!(
            [mt.next_u32(), mt.next_u32(), mt.next_u32()],
            [3_499_211_612, 581_869_302, 3_890_346_734]
        );
    }

    #[test]
    fn ten_thousandth_output_is_the_cpp_standard_value() {
        // C++ [rand.predef]: the 10000th consecutive invocation of a default-constructed
        // std::mt19937 produces 4123659995.
        let mut mt = Mt19937::new(5489);
        let last = (0..10_000).map(|_| mt.next_u32()).last().unwrap();
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn seeds_above_32_bits_use_the_low_word_as_torch_does() {
        let mut a = Mt19937::new(42);
        let mut b = Mt19937::new((7u64 << 32) | 42);
        assert_eq!(a.next_u32(), b.next_u32());
    }
}

/// `torch.Generator("cpu")`: the same seed gives the same `torch.randn` values, so the same seed
/// gives diffusers' initial latents (and ancestral noise) — and therefore its image.
#[derive(Clone)]
pub struct TorchGenerator {
    mt: Mt19937,
    /// torch's scalar normal sampler makes values in pairs and keeps the second for next time.
    next_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub fn manual_seed(seed: u64) -> Self {
        TorchGenerator { mt: Mt19937::new(seed), next_normal: None }
    }

    /// torch's `uniform_real_distribution<float>`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        ((self.mt.next_u32() & 0x00ff_ffff) as f64 / (1u64 << 24) as f64) as f32
    }

    /// torch's `uniform_real_distribution<double>`: 53 bits of two draws (first draw high).
    fn uniform_f64(&mut self) -> f64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 / (1u64 << 53) as f64
    }

    /// torch's scalar `normal_distribution<double>` (Box–Muller, second value cached).
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n, generator=self)` in f32. From 16 values on torch fills uniforms first and
    /// transforms them 16 at a time (the last 16 redrawn when n is not a multiple of 16); below
    /// 16 it draws one scalar normal per value.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for start in (0..=n - 16).step_by(16) {
            box_muller_16(&mut data[start..start + 16]);
        }
        if n % 16 != 0 {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }
}

/// torch's `normal_fill_16`: values j and j + 8 become a Box–Muller pair, in f32.
fn box_muller_16(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0 * std::f64::consts::PI * u2 as f64) as f32;
        data[j] = radius * theta.cos();
        data[j + 8] = radius * theta.sin();
    }
}
