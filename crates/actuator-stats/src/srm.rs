//! Sample-ratio-mismatch guard: a Beta-binomial (Dirichlet-multinomial) mixture e-value for
//! assignment counts against the configured shares (statistics.md §5.8), and its clustered
//! counterpart for sticky assignment, which counts assignment units instead of requests.

use statrs::function::gamma::ln_gamma;

use crate::error::{Result, StatsError, check_positive};

/// Default prior concentration A: a_k = A·π_k, so a = 100π and b = 100(1−π) for two arms.
pub const DEFAULT_CONCENTRATION: f64 = 100.0;

/// Default level for halting on SRM: halt at e ≥ 1/0.001.
pub const DEFAULT_SRM_ALPHA: f64 = 0.001;

/// ln e of the SRM test: `ln Γ(A) − ln Γ(A+N) + Σ_k [ln Γ(a_k+n_k) − ln Γ(a_k) − n_k ln π_k]`.
///
/// For two arms this is `ln [B(a+n_t, b+n_c) / (B(a,b) π^{n_t} (1−π)^{n_c})]`. It is an
/// e-process under H0 (the counts follow the configured shares); halt when it reaches
/// ln(1/α_srm).
///
/// # Errors
/// [`StatsError::LengthMismatch`] when the lengths differ or fewer than two arms are given,
/// [`StatsError::InvalidWeights`] when shares are not positive or do not sum to 1 (±1e-6).
pub fn srm_log_e(counts: &[u64], shares: &[f64], concentration: f64) -> Result<f64> {
    if counts.len() != shares.len() || counts.len() < 2 {
        return Err(StatsError::LengthMismatch {
            what: "SRM counts and shares",
            expected: shares.len().max(2),
            got: counts.len(),
        });
    }
    let a = check_positive("concentration", concentration)?;
    let total: f64 = shares.iter().sum();
    if shares.iter().any(|s| !(s.is_finite() && *s > 0.0)) || (total - 1.0).abs() > 1e-6 {
        return Err(StatsError::InvalidWeights(format!(
            "SRM shares {shares:?} must be positive and sum to 1"
        )));
    }
    let n: f64 = counts.iter().map(|&c| c as f64).sum();
    let mut out = ln_gamma(a) - ln_gamma(a + n);
    for (&c, &p) in counts.iter().zip(shares) {
        let (nk, ak) = (c as f64, a * p);
        out += ln_gamma(ak + nk) - ln_gamma(ak) - nk * p.ln();
    }
    Ok(out)
}

/// Convenience wrapper: `true` when the SRM e-value reaches `1/alpha`.
///
/// # Errors
/// As [`srm_log_e`].
pub fn srm_mismatch(counts: &[u64], shares: &[f64], alpha: f64) -> Result<bool> {
    let alpha = crate::error::check_probability("srm alpha", alpha)?;
    Ok(srm_log_e(counts, shares, DEFAULT_CONCENTRATION)? >= (1.0 / alpha).ln())
}

/// Relative share mismatch the clustered SRM mixture is tuned for: τ is set from an MDE of
/// `0.2 · min(π, 1 − π)` at the SRM level (a 5% canary getting 4% or 6% of the traffic).
pub const CLUSTERED_SRM_RELATIVE_MDE: f64 = 0.2;

/// ln e of the sample-ratio check when assignment is sticky (units, not requests).
///
/// With a sticky split the share of requests an arm receives is a ratio over users: heavy
/// users move it far more than binomial noise allows, so [`srm_log_e`] halts healthy rollouts.
/// Here `arm[b]` are the arm's requests and `total[b]` all requests (every arm) of the users
/// hashed into bucket b (an assignment-independent hash). The estimate `θ̂ = Σ arm / Σ total − π`
/// gets the cluster-robust variance
/// `V = max(G/(G−1) · Σ_b (arm_b − p̂ total_b)² / N², π(1−π)/N) + π(1−π) · max_b total_b² / N²`
/// (`p̂ = Σ arm / N`, G the non-empty buckets): the binomial floor keeps the variance from collapsing while an
/// arm has seen few requests (none at the first second of a phase), and the last term, the
/// null variance of the heaviest bucket, keeps it from collapsing when a few heavy users carry
/// the traffic and all happen to sit in the larger arm,
/// and the two-sided normal-mixture mSPRT `½ ln(V/(V+τ²)) + τ²θ̂²/(2V(V+τ²))` with τ from
/// [`CLUSTERED_SRM_RELATIVE_MDE`]. Returns 0 (no evidence) before
/// [`MIN_NONEMPTY_BUCKETS`](crate::MIN_NONEMPTY_BUCKETS) buckets hold traffic. A real routing
/// bug (a whole tenant or region on the wrong arm) still moves the share far outside V.
///
/// # Errors
/// [`StatsError::LengthMismatch`] when the lengths differ or are below 2,
/// [`StatsError::InvalidProbability`] for a share or alpha outside (0, 1),
/// [`StatsError::InconsistentCounts`] when an arm count exceeds its bucket total.
pub fn srm_clustered_log_e(arm: &[f64], total: &[f64], share: f64, alpha: f64) -> Result<f64> {
    if arm.len() != total.len() || arm.len() < 2 {
        return Err(StatsError::LengthMismatch {
            what: "clustered SRM arm and total buckets",
            expected: total.len().max(2),
            got: arm.len(),
        });
    }
    let pi = crate::error::check_probability("expected share", share)?;
    let alpha = crate::error::check_probability("srm alpha", alpha)?;
    if arm.iter().zip(total).any(|(a, n)| !(a.is_finite() && n.is_finite() && *a >= 0.0 && a <= n))
    {
        return Err(StatsError::InconsistentCounts(
            "an arm's requests in a bucket exceed the bucket's total".into(),
        ));
    }
    let n: f64 = total.iter().sum();
    let non_empty = total.iter().filter(|&&x| x > 0.0).count();
    if n <= 0.0 || non_empty < crate::cluster::MIN_NONEMPTY_BUCKETS {
        return Ok(0.0);
    }
    let g = non_empty as f64;
    let share_hat = arm.iter().sum::<f64>() / n;
    // Residuals around the observed share: a routing bug that moves every bucket the same
    // way does not inflate them (residuals under π would, and hide the bug).
    let ss: f64 = arm
        .iter()
        .zip(total)
        .map(|(a, t)| {
            let r = a - share_hat * t;
            r * r
        })
        .sum();
    // Floors: the null variance of the heaviest bucket alone (when a few heavy users carry the
    // traffic and all sit in the larger arm their residuals are about p̂·n instead of
    // (1−π)·n), and the binomial π(1−π)/N of independent requests (at the start of a phase
    // an arm may have no request yet: p̂ = 0 and every residual is 0).
    let heaviest = total.iter().copied().fold(0.0, f64::max);
    let v = (g / (g - 1.0) * ss / (n * n)).max(pi * (1.0 - pi) / n)
        + pi * (1.0 - pi) * heaviest * heaviest / (n * n);
    let theta = share_hat - pi;
    if !(v > 0.0 && v.is_finite()) {
        return Ok(0.0);
    }
    let tau =
        crate::msprt::tau_from_mde(CLUSTERED_SRM_RELATIVE_MDE * pi.min(1.0 - pi), alpha, 0.2)?;
    let t2 = tau * tau;
    let s = v + t2;
    Ok(0.5 * (v / s).ln() + t2 * theta * theta / (2.0 * v * s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::function::beta::ln_beta;

    #[test]
    fn binomial_form_matches_beta_formula() {
        let (nt, nc, pi) = (130u64, 870u64, 0.1);
        let (a, b) = (100.0 * pi, 100.0 * (1.0 - pi));
        let expect = ln_beta(a + nt as f64, b + nc as f64)
            - ln_beta(a, b)
            - nt as f64 * f64::ln(pi)
            - nc as f64 * (1.0 - pi).ln();
        let got = srm_log_e(&[nt, nc], &[pi, 1.0 - pi], 100.0).unwrap();
        assert!((got - expect).abs() < 1e-8, "{got} vs {expect}");
    }

    #[test]
    fn balanced_counts_do_not_alarm_but_skewed_do() {
        assert!(!srm_mismatch(&[5000, 5000], &[0.5, 0.5], 0.001).unwrap());
        assert!(srm_mismatch(&[4500, 5500], &[0.5, 0.5], 0.001).unwrap());
        assert!(!srm_mismatch(&[100, 9900], &[0.01, 0.99], 0.001).unwrap());
        assert!(srm_mismatch(&[0, 20000], &[0.01, 0.99], 0.001).unwrap());
        assert!(srm_log_e(&[1, 2], &[0.5, 0.6], 100.0).is_err());
        assert!(srm_log_e(&[1], &[1.0], 100.0).is_err());
    }

    /// 32 buckets, canary share 0.1. Expected value computed independently in python3:
    /// `p̂ = Σa/N`, `V = max(G/(G−1)·Σ(a−p̂n)²/N², π(1−π)/N) + π(1−π)·max(n)²/N²` (G = 32), `θ = p̂ − π`, `τ = 0.2·0.1·sqrt(C_α)/(z_{0.999}+z_{0.8})`,
    /// `ln e = ½ ln(V/(V+τ²)) + τ²θ²/(2V(V+τ²))`.
    const GOLDEN_CLUSTERED: f64 = 2.272_995_967_923_193_5;

    #[test]
    fn clustered_golden() {
        let total: Vec<f64> = (0..32).map(|b| f64::from(100 + 7 * b)).collect();
        let arm: Vec<f64> = (0..32).map(|b| f64::from(10 + (b % 5))).collect();
        let got = srm_clustered_log_e(&arm, &total, 0.1, 0.001).unwrap();
        assert!((got - GOLDEN_CLUSTERED).abs() < 1e-9, "{got}");
    }

    #[test]
    fn clustered_needs_buckets_and_catches_a_whole_tenant() {
        // fewer than 20 non-empty buckets: no evidence yet
        let mut total = vec![0.0; 128];
        let mut arm = vec![0.0; 128];
        for b in 0..10 {
            total[b] = 1000.0;
            arm[b] = 500.0;
        }
        assert_eq!(srm_clustered_log_e(&arm, &total, 0.05, 0.001).unwrap(), 0.0);
        // 128 buckets at the right share with heavy buckets: no alarm
        let total: Vec<f64> = (0..128).map(|b| if b % 17 == 0 { 5_000.0 } else { 500.0 }).collect();
        let arm: Vec<f64> = total
            .iter()
            .enumerate()
            .map(|(b, t)| if b % 2 == 0 { t * 0.06 } else { t * 0.04 })
            .collect();
        assert!(srm_clustered_log_e(&arm, &total, 0.05, 0.001).unwrap() < (1000.0f64).ln());
        // a whole tenant (its users, 10% of each bucket's requests, hashed over every bucket)
        // routed to the canary: the share moves to about 14.5%, far outside V: alarm
        let arm2: Vec<f64> = arm.iter().zip(&total).map(|(a, t)| a * 0.9 + t * 0.1).collect();
        assert!(srm_clustered_log_e(&arm2, &total, 0.05, 0.001).unwrap() > (1000.0f64).ln());
        // the first second of a phase: 48 requests of 48 users, none on the 5% arm yet
        // (probability 0.085): no alarm, where the bare sandwich (all residuals 0) would halt
        let total: Vec<f64> = (0..128).map(|b| if b < 48 { 1.0 } else { 0.0 }).collect();
        let none = vec![0.0; 128];
        assert!(srm_clustered_log_e(&none, &total, 0.05, 0.001).unwrap() < 1.0);
        assert!(srm_clustered_log_e(&[1.0], &[1.0], 0.5, 0.001).is_err());
        assert!(srm_clustered_log_e(&[2.0, 0.0], &[1.0, 1.0], 0.5, 0.001).is_err());
    }
}
