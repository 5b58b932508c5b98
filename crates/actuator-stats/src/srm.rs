//! Sample-ratio-mismatch guard: a Beta-binomial (Dirichlet-multinomial) mixture e-value for
//! assignment counts against the configured shares (statistics.md §5.8).

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
}
