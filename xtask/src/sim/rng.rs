//! A small, fast, seeded generator and the distributions the traffic model draws from.

/// splitmix64: one step of the seed scrambler (also a good 64-bit hash of an integer).
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 64 random bits.
pub(crate) fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal from two independent 64-bit words (Box–Muller).
pub(crate) fn normal_from(a: u64, b: u64) -> f64 {
    let u1 = unit(a).max(f64::MIN_POSITIVE);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * unit(b)).cos()
}

/// xoshiro256** seeded through splitmix64: reproducible on every platform.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        let a = mix(seed);
        let b = mix(a);
        let c = mix(b);
        let d = mix(c);
        Self { s: [a, b, c, d | 1] }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        unit(self.next_u64())
    }

    pub(crate) fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal.
    pub(crate) fn normal(&mut self) -> f64 {
        let (a, b) = (self.next_u64(), self.next_u64());
        normal_from(a, b)
    }

    /// Poisson(λ): multiplication method below 30, a rounded normal (continuity-corrected)
    /// above, which is what a request count per second needs.
    pub(crate) fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0u64;
            let mut p = self.uniform();
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            return k;
        }
        let x = lambda + lambda.sqrt() * self.normal() + 0.5;
        if x <= 0.0 { 0 } else { x.floor() as u64 }
    }

    /// Uniform integer in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi.saturating_sub(lo).saturating_add(1);
        lo + ((self.uniform() * span as f64) as u64).min(span - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_has_the_right_mean_on_both_branches() {
        let mut r = Rng::new(7);
        for lambda in [0.4, 5.0, 50.0, 500.0] {
            let n = 20_000;
            let mean = (0..n).map(|_| r.poisson(lambda) as f64).sum::<f64>() / f64::from(n);
            assert!(
                (mean - lambda).abs() < 4.0 * (lambda / f64::from(n)).sqrt() + 0.01,
                "{lambda}: {mean}"
            );
        }
    }

    #[test]
    fn the_stream_is_fixed_by_the_seed() {
        let a: Vec<u64> = (0..5).scan(Rng::new(1), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::new(1), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..5).scan(Rng::new(2), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
