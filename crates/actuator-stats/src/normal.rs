//! Standard normal helpers with a numerically safe log-CDF.

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::erf::erfc;

use crate::error::{Result, check_probability};

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Standard normal CDF Φ(x).
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal survival function 1 − Φ(x), accurate in the upper tail.
pub fn norm_sf(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// Standard normal density φ(x).
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x - LN_SQRT_2PI).exp()
}

/// ln φ(x): the log density, finite for every finite `x`.
pub fn ln_norm_pdf(x: f64) -> f64 {
    -0.5 * x * x - LN_SQRT_2PI
}

/// ln Φ(x), finite for every finite `x`.
///
/// For x < −20 the asymptotic series `−x²/2 − ln(−x) − ½ ln 2π + ln(1 − 1/x² + 3/x⁴ − 15/x⁶)`
/// is used, so the result never underflows to −∞ (statistics.md §5.10).
pub fn ln_norm_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x >= -20.0 {
        let p = norm_cdf(x);
        if x > 5.0 { (-norm_sf(x)).ln_1p() } else { p.ln() }
    } else {
        let x2 = x * x;
        let series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2);
        -0.5 * x2 - (-x).ln() - LN_SQRT_2PI + series.ln()
    }
}

/// Standard normal quantile z_p = Φ⁻¹(p) for p in (0, 1).
///
/// # Errors
/// [`crate::StatsError::InvalidProbability`] when `p` is not strictly between 0 and 1.
pub fn norm_quantile(p: f64) -> Result<f64> {
    let p = check_probability("p", p)?;
    // Normal::new(0, 1) cannot fail: both parameters are valid constants.
    Ok(standard_normal().inverse_cdf(p))
}

pub(crate) fn standard_normal() -> Normal {
    Normal::standard()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_cdf_matches_direct_and_is_continuous() {
        for &x in &[-5.0, -1.0, 0.0, 1.0, 3.0] {
            assert!((ln_norm_cdf(x) - norm_cdf(x).ln()).abs() < 1e-12);
        }
        let below = ln_norm_cdf(-20.0 - 1e-9);
        let above = ln_norm_cdf(-20.0);
        assert!((below - above).abs() < 1e-6, "{below} vs {above}");
        assert!(ln_norm_cdf(-1e6).is_finite());
        assert!(ln_norm_cdf(40.0) <= 0.0);
    }

    #[test]
    fn quantiles() {
        assert!((norm_quantile(0.95).unwrap() - 1.644_853_626_951_472_2).abs() < 1e-9);
        assert!((norm_quantile(0.8).unwrap() - 0.841_621_233_572_914_3).abs() < 1e-9);
        assert!(norm_quantile(1.0).is_err());
    }
}
