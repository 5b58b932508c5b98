//! Conditional-binomial e-process on event counts (statistics.md §5.3, §5.10).
//!
//! Under H0 (the same per-request event probability in both arms and random assignment with
//! canary share π), an event comes from the canary with probability exactly π. Under a rate
//! ratio r it does so with probability `q_r(π) = rπ/(rπ + 1 − π)`. Mixing the likelihood ratio
//! over a half-normal prior on ln r gives an e-process that is exact at every sample size and
//! accepts a different π for every event (so allocation changes between phases are handled).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StatsError, check_positive, check_probability};

/// Which rate change the e-process looks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioDirection {
    /// The canary's event rate is higher (harm for errors).
    #[default]
    Increase,
    /// The canary's event rate is lower (benefit for errors).
    Decrease,
}

/// Parameters of the rate-ratio prior.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CondBinomConfig {
    /// Minimum detectable rate ratio (> 1), e.g. 2.0 for a doubling. Sets the prior scale
    /// `s = 1.133·ln(r_MDE)` (computed with the τ rule at α = 0.05, β = 0.2).
    pub mde_ratio: f64,
    /// Number of grid points G (default 40).
    pub grid_points: u32,
    /// Tolerance ratio 1 + ε ≥ 1: only rate ratios above it count as harm (default 1.0).
    pub tolerance_ratio: f64,
    /// Direction of the change to detect.
    pub direction: RatioDirection,
    /// Level used in the τ rule that sets the prior scale (the α given to this metric;
    /// 0.05 reproduces statistics.md's s = 1.133·ln r_MDE).
    #[serde(default = "default_scale_alpha")]
    pub scale_alpha: f64,
}

fn default_scale_alpha() -> f64 {
    0.05
}

impl Default for CondBinomConfig {
    fn default() -> Self {
        Self {
            mde_ratio: 2.0,
            grid_points: 40,
            tolerance_ratio: 1.0,
            direction: RatioDirection::Increase,
            scale_alpha: default_scale_alpha(),
        }
    }
}

impl CondBinomConfig {
    fn validate(&self) -> Result<()> {
        if !(self.mde_ratio.is_finite() && self.mde_ratio > 1.0) {
            return Err(StatsError::NotPositive {
                name: "mde_ratio - 1",
                value: self.mde_ratio - 1.0,
            });
        }
        if !(1..=1000).contains(&self.grid_points) {
            return Err(StatsError::NotPositive {
                name: "grid_points (1..=1000)",
                value: f64::from(self.grid_points),
            });
        }
        crate::error::check_probability("scale_alpha", self.scale_alpha)?;
        if !(self.tolerance_ratio.is_finite() && self.tolerance_ratio >= 1.0) {
            return Err(StatsError::NotPositive {
                name: "tolerance_ratio - 1 (use 1.0 for no tolerance)",
                value: self.tolerance_ratio - 1.0,
            });
        }
        Ok(())
    }

    /// Prior scale s = τ(ln r_MDE) at α = `scale_alpha`, β = 0.2 (0.785 for r_MDE = 2, α = 0.05).
    fn scale(&self) -> Result<f64> {
        crate::msprt::tau_from_mde(self.mde_ratio.ln(), self.scale_alpha, 0.2)
    }

    /// Grid of ln r_j (signed for the direction) and normalized log-weights.
    fn grid(&self) -> Result<Vec<(f64, f64)>> {
        let s = self.scale()?;
        let g = f64::from(self.grid_points);
        let sign = match self.direction {
            RatioDirection::Increase => 1.0,
            RatioDirection::Decrease => -1.0,
        };
        let xs: Vec<f64> = (1..=self.grid_points).map(|j| f64::from(j) * 4.0 * s / g).collect();
        let log_w: Vec<f64> = xs.iter().map(|x| -0.5 * (x / s) * (x / s)).collect();
        let norm = log_sum_exp(&log_w);
        Ok(xs.into_iter().zip(log_w).map(|(x, lw)| (sign * x, lw - norm)).collect())
    }

    /// The effective null share: π, or `q_{1+ε}(π)` with a tolerance (mirrored for decreases).
    fn null_share(&self, share: f64) -> f64 {
        let r = match self.direction {
            RatioDirection::Increase => self.tolerance_ratio,
            RatioDirection::Decrease => 1.0 / self.tolerance_ratio,
        };
        q_ratio(r, share)
    }
}

/// `q_r(π) = rπ/(rπ + 1 − π)`: the probability an event is from the canary under rate ratio r.
pub fn q_ratio(r: f64, share: f64) -> f64 {
    r * share / (r * share + 1.0 - share)
}

pub(crate) fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The conditional-binomial e-process: G log-likelihood ratios, updated per event or per
/// batch of events at a constant share. O(G) memory; serializable for exact resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionalBinomial {
    config: CondBinomConfig,
    log_l: Vec<f64>,
    events_canary: u64,
    events_control: u64,
}

impl ConditionalBinomial {
    /// A fresh e-process (e = 1).
    ///
    /// # Errors
    /// When the configuration is invalid (MDE ratio ≤ 1, tolerance < 1, grid size 0).
    pub fn new(config: CondBinomConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            log_l: vec![0.0; config.grid_points as usize],
            events_canary: 0,
            events_control: 0,
        })
    }

    /// The configuration.
    pub const fn config(&self) -> &CondBinomConfig {
        &self.config
    }

    /// Adds one event at canary share `share` (the assignment probability at that moment).
    ///
    /// # Errors
    /// [`StatsError::InvalidProbability`] when `share` is not in (0, 1); the state is unchanged.
    pub fn observe(&mut self, from_canary: bool, share: f64) -> Result<()> {
        if from_canary {
            self.observe_counts(1, 0, share)
        } else {
            self.observe_counts(0, 1, share)
        }
    }

    /// Adds `canary` and `control` events seen at a constant share. Identical to calling
    /// [`Self::observe`] once per event.
    ///
    /// # Errors
    /// [`StatsError::InvalidProbability`] when `share` is not in (0, 1); the state is unchanged.
    pub fn observe_counts(&mut self, canary: u64, control: u64, share: f64) -> Result<()> {
        let share = check_probability("canary share", share)?;
        self.log_l = self.log_l_after(canary, control, share)?;
        self.events_canary += canary;
        self.events_control += control;
        Ok(())
    }

    fn log_l_after(&self, canary: u64, control: u64, share: f64) -> Result<Vec<f64>> {
        let pi = self.config.null_share(share);
        let (xt, xc) = (canary as f64, control as f64);
        let grid = self.config.grid()?;
        Ok(self
            .log_l
            .iter()
            .zip(grid)
            .map(|(l, (x, _))| {
                let q = q_ratio(x.exp(), pi);
                l + xt * (q / pi).ln() + xc * ((1.0 - q) / (1.0 - pi)).ln()
            })
            .collect())
    }

    /// ln e = ln Σ_j w_j L_j (log-sum-exp).
    pub fn log_e(&self) -> f64 {
        match self.config.grid() {
            Ok(grid) => {
                let terms: Vec<f64> =
                    self.log_l.iter().zip(grid).map(|(l, (_, lw))| l + lw).collect();
                log_sum_exp(&terms)
            }
            Err(_) => 0.0,
        }
    }

    /// ln e of this state plus a batch of counts at `share`, without changing the state.
    /// Lets a caller keep raw per-phase counts and evaluate the e-value at every look.
    ///
    /// # Errors
    /// [`StatsError::InvalidProbability`] when `share` is not in (0, 1).
    pub fn log_e_with(&self, canary: u64, control: u64, share: f64) -> Result<f64> {
        let share = check_probability("canary share", share)?;
        let mut tmp = self.clone();
        tmp.log_l = self.log_l_after(canary, control, share)?;
        Ok(tmp.log_e())
    }

    /// Events counted so far from (canary, control).
    pub const fn events(&self) -> (u64, u64) {
        (self.events_canary, self.events_control)
    }
}

/// One-shot ln e for counts at a constant share with the default prior (r_MDE = 2, G = 40).
///
/// # Errors
/// As [`ConditionalBinomial::observe_counts`].
pub fn cond_binom_log_e(
    canary: u64,
    control: u64,
    share: f64,
    config: CondBinomConfig,
) -> Result<f64> {
    check_positive("mde_ratio", config.mde_ratio)?;
    ConditionalBinomial::new(config)?.log_e_with(canary, control, share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_values() {
        let c = CondBinomConfig::default();
        let e = cond_binom_log_e(30, 15, 0.5, c).unwrap();
        assert!((e - 1.929_81).abs() < 1e-5, "{e}");
        let e = cond_binom_log_e(12, 6000, 600.0 / 594_600.0, c).unwrap();
        assert!((e - 1.594_50).abs() < 1e-5, "{e}");
    }

    #[test]
    fn per_event_equals_batch_and_share_changes_are_handled() {
        let mut a = ConditionalBinomial::new(CondBinomConfig::default()).unwrap();
        let mut b = a.clone();
        for i in 0..30 {
            a.observe(i % 3 == 0, 0.05).unwrap();
        }
        b.observe_counts(10, 20, 0.05).unwrap();
        assert!((a.log_e() - b.log_e()).abs() < 1e-9);
        a.observe_counts(4, 4, 0.5).unwrap();
        b.observe_counts(4, 4, 0.5).unwrap();
        assert!((a.log_e() - b.log_e()).abs() < 1e-9);
        assert_eq!(a.events(), (14, 24));
        assert!(a.observe(true, 1.0).is_err());
        assert_eq!(a.events(), (14, 24));
    }

    #[test]
    fn decrease_direction_mirrors() {
        let up = CondBinomConfig::default();
        let down = CondBinomConfig { direction: RatioDirection::Decrease, ..up };
        let a = cond_binom_log_e(30, 15, 0.5, up).unwrap();
        let b = cond_binom_log_e(15, 30, 0.5, down).unwrap();
        assert!((a - b).abs() < 1e-9);
    }

    #[test]
    fn tolerance_makes_it_harder() {
        let c = CondBinomConfig::default();
        let tol = CondBinomConfig { tolerance_ratio: 1.2, ..c };
        assert!(
            cond_binom_log_e(30, 15, 0.5, tol).unwrap() < cond_binom_log_e(30, 15, 0.5, c).unwrap()
        );
    }

    proptest! {
        #[test]
        fn e_value_is_non_negative_and_finite(xt in 0u64..5000, xc in 0u64..5000, share in 0.001f64..0.999) {
            let e = cond_binom_log_e(xt, xc, share, CondBinomConfig::default()).unwrap();
            prop_assert!(e.is_finite());
            prop_assert!(e.exp() >= 0.0);
        }

        #[test]
        fn more_canary_events_never_lower_evidence(xt in 0u64..500, xc in 0u64..500) {
            let c = CondBinomConfig::default();
            let a = cond_binom_log_e(xt, xc, 0.3, c).unwrap();
            let b = cond_binom_log_e(xt + 1, xc, 0.3, c).unwrap();
            prop_assert!(b >= a - 1e-12);
        }
    }
}
