//! The random number source: a Mersenne Twister (mt19937, as Caffe uses) seeded from the
//! solver's `random_seed`, with the distributions fillers, dropout and data augmentation need.
//! Same seed, same numbers, on every machine and thread count. (Bit-identity with Caffe's boost
//! distributions is not promised: same formulas, same distributions.)

pub struct CaffeRng {
    mt: [u32; 624],
    idx: usize,
    spare_normal: Option<f64>,
}

impl CaffeRng {
    pub fn new(seed: u64) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed as u32;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        CaffeRng {
            mt,
            idx: 624,
            spare_normal: None,
        }
    }

    /// A seed from the clock and process id, for `random_seed: -1` (Caffe reads /dev/urandom).
    pub fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        CaffeRng::new(t ^ ((std::process::id() as u64) << 32))
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.idx = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as u64;
        let b = (self.next_u32() >> 6) as u64;
        ((a << 26) | b) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let v = lo as f64 + (hi as f64 - lo as f64) * self.next_f64();
        (v as f32).clamp(lo.min(hi), hi.max(lo))
    }

    /// Normal(mean, std) by Box-Muller (the spare value is kept for the next call).
    pub fn gaussian(&mut self, mean: f32, std: f32) -> f32 {
        let z = if let Some(z) = self.spare_normal.take() {
            z
        } else {
            let u1 = loop {
                let u = self.next_f64();
                if u > 0.0 {
                    break u;
                }
            };
            let u2 = self.next_f64();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = 2.0 * std::f64::consts::PI * u2;
            self.spare_normal = Some(r * t.sin());
            r * t.cos()
        };
        (mean as f64 + std as f64 * z) as f32
    }

    /// True with probability p.
    pub fn bernoulli(&mut self, p: f32) -> bool {
        self.next_f64() < p as f64
    }

    /// Uniform integer in [0, n) (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::CaffeRng;

    #[test]
    fn mt19937_reference_value() {
        // The 10000th output of mt19937 seeded 5489 is 4123659995 (C++ standard, [rand.predef]).
        let mut r = CaffeRng::new(5489);
        let mut v = 0;
        for _ in 0..10000 {
            v = r.next_u32();
        }
        assert_eq!(v, 4_123_659_995);
    }

    #[test]
    fn gaussian_moments() {
        let mut r = CaffeRng::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.gaussian(1.0, 2.0) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert!((var - 4.0).abs() < 0.08, "{var}");
    }
}
