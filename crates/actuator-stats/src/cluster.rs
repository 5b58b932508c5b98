//! Cluster-robust ratio estimates over hashed user buckets (sticky assignment).
//!
//! With a sticky split every request of one user goes to one arm, and requests of one user are
//! correlated (one user's prompts fail more often, one tenant's documents are longer). Tests
//! that treat requests as independent then under-state their variance. Here each assignment
//! unit (user, session, tenant: whatever the stickiness key is) is hashed into one of `B`
//! buckets with a seed independent of the assignment hash, so buckets are independent groups
//! of users. Per bucket `b` a [`ClusteredRatio`] keeps the count `n_b` and the metric's sum
//! `s_b`: `2·B` numbers whatever the traffic.
//!
//! * estimate: the ratio of totals `r = Σ s_b / Σ n_b`;
//! * cluster-robust variance: the larger of the linearised sandwich
//!   `G/(G−1) · Σ_b e_b² / N²` and the leave-one-bucket-out jackknife
//!   `(G−1)/G · Σ_b e_b² / (N − n_b)²`, with residuals `e_b = s_b − r·n_b`, `N = Σ n_b` and
//!   `G` the non-empty buckets. With balanced buckets the two agree; when a few heavy users
//!   fill one bucket (high leverage `n_b/N`) the sandwich under-states the variance and the
//!   jackknife does not (the CR3 correction). With all values in one bucket the variance is
//!   not estimable (infinite: no evidence);
//! * design effect `D = V / V_iid` and effective sample size `n / D` (never above `n`).
//!
//! With one request per user `V` matches the i.i.d. variance up to bucket noise; with
//! clustering it grows by `D`. States merge by addition.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StatsError, check_finite};
use crate::msprt::Estimate;

/// Default number of buckets per arm and metric (a power of two).
pub const DEFAULT_CLUSTER_BUCKETS: usize = 128;

/// Non-empty buckets each arm needs before a clustered test counts (plug-in variance burn-in).
pub const MIN_NONEMPTY_BUCKETS: usize = 20;

/// Effective buckets (Kish: `N² / Σ n_b²`) each arm needs before a clustered test counts: a
/// variance estimated from fewer independent groups is too noisy for a test that looks
/// continuously (a few heavy users dominate an arm of a small share).
pub const MIN_EFFECTIVE_BUCKETS: f64 = 20.0;

/// Per-bucket counts and sums of one metric in one arm.
///
/// Kept sparse while at most half the buckets are filled (the filled buckets' indexes in
/// ascending order beside their counts and sums: 18 bytes per filled bucket, nothing at all
/// for a metric that never saw a value) and dense beyond (16 bytes per bucket: 2 KiB at the
/// default `B` = 128). Both forms give the same numbers bit for bit: every statistic runs
/// over the filled buckets in bucket order, and an empty bucket adds nothing.
///
/// Stored as its filled buckets only, `{"b": B, "i": [indexes], "n": [counts], "s": [sums]}`;
/// the dense form of earlier versions (`{"n": [B counts], "s": [B sums]}`) is read too.
#[derive(Debug, Clone)]
pub struct ClusteredRatio {
    /// `B`, a power of two in 2..=4096.
    buckets: u16,
    /// Whether `n` and `s` hold every bucket (`idx` is then empty).
    dense: bool,
    /// Sparse form: the filled buckets' indexes, ascending, parallel to `n` and `s`.
    idx: Vec<u16>,
    /// `n_b`: values recorded per bucket (per filled bucket while sparse).
    n: Vec<f64>,
    /// `s_b`: sum of the values per bucket (per filled bucket while sparse).
    s: Vec<f64>,
}

impl Default for ClusteredRatio {
    fn default() -> Self {
        Self::empty(DEFAULT_CLUSTER_BUCKETS as u16)
    }
}

impl PartialEq for ClusteredRatio {
    /// Equal when they have the same `B` and the same filled buckets, whatever their form.
    fn eq(&self, other: &Self) -> bool {
        self.buckets == other.buckets && self.iter().eq(other.iter())
    }
}

fn valid_buckets(buckets: usize) -> bool {
    (2..=4096).contains(&buckets) && buckets.is_power_of_two()
}

impl ClusteredRatio {
    const fn empty(buckets: u16) -> Self {
        Self { buckets, dense: false, idx: Vec::new(), n: Vec::new(), s: Vec::new() }
    }

    /// An empty state with `buckets` buckets (a power of two in 2..=4096).
    ///
    /// # Errors
    /// [`StatsError::NotPositive`] when `buckets` is not such a power of two.
    pub fn new(buckets: usize) -> Result<Self> {
        if !valid_buckets(buckets) {
            return Err(StatsError::NotPositive {
                name: "cluster buckets (a power of two in 2..=4096)",
                value: buckets as f64,
            });
        }
        // 4096 fits in 16 bits.
        Ok(Self::empty(buckets as u16))
    }

    /// Builds a state from per-bucket counts and sums (for tests and restores).
    ///
    /// # Errors
    /// [`StatsError::LengthMismatch`] when the lengths differ or are not a power of two in
    /// 2..=4096, [`StatsError::NotFinite`]/[`StatsError::NotPositive`] for a non-finite value or
    /// a negative count.
    pub fn from_buckets(n: Vec<f64>, s: Vec<f64>) -> Result<Self> {
        if n.len() != s.len() || !valid_buckets(n.len()) {
            return Err(StatsError::LengthMismatch {
                what: "cluster counts and sums (a power of two in 2..=4096)",
                expected: n.len().next_power_of_two().clamp(2, 4096),
                got: s.len(),
            });
        }
        for (&nb, &sb) in n.iter().zip(&s) {
            check_value(nb, sb)?;
        }
        let dense = Self { buckets: n.len() as u16, dense: true, idx: Vec::new(), n, s };
        Ok(dense.compacted())
    }

    /// Builds a state from its filled buckets: indexes ascending and below `buckets`.
    ///
    /// # Errors
    /// As [`ClusteredRatio::from_buckets`], and [`StatsError::LengthMismatch`] when the three
    /// lists differ in length or an index is out of range or out of order.
    pub fn from_filled(buckets: usize, idx: &[u32], n: Vec<f64>, s: Vec<f64>) -> Result<Self> {
        let mut c = Self::new(buckets)?;
        if idx.len() != n.len() || n.len() != s.len() || idx.len() > buckets {
            return Err(StatsError::LengthMismatch {
                what: "cluster indexes, counts and sums",
                expected: idx.len(),
                got: n.len().max(s.len()),
            });
        }
        let ordered = idx.windows(2).all(|w| w[0] < w[1]);
        if !ordered || idx.last().is_some_and(|&b| b as usize >= buckets) {
            return Err(StatsError::LengthMismatch {
                what: "cluster bucket indexes (ascending, below the bucket count)",
                expected: buckets,
                got: idx.last().map_or(0, |&b| b as usize + 1),
            });
        }
        for (&nb, &sb) in n.iter().zip(&s) {
            check_value(nb, sb)?;
        }
        c.idx = idx.iter().map(|&b| b as u16).collect();
        c.n = n;
        c.s = s;
        Ok(c.compacted())
    }

    /// The form that suits how many buckets are filled: sparse at most half, else dense.
    fn compacted(mut self) -> Self {
        let filled = self.iter().count();
        if filled * 2 > self.buckets() {
            if !self.dense {
                self.densify();
            }
            return self;
        }
        let (idx, (n, s)): (Vec<u16>, (Vec<f64>, Vec<f64>)) =
            self.iter().map(|(b, nb, sb)| (b as u16, (nb, sb))).unzip();
        Self { buckets: self.buckets, dense: false, idx, n, s }
    }

    fn densify(&mut self) {
        let b = self.buckets();
        let mut n = vec![0.0; b];
        let mut s = vec![0.0; b];
        for (k, &i) in self.idx.iter().enumerate() {
            n[usize::from(i)] = self.n[k];
            s[usize::from(i)] = self.s[k];
        }
        *self = Self { buckets: self.buckets, dense: true, idx: Vec::new(), n, s };
    }

    /// Where bucket `b` (< B) lives in `n` and `s`, made room for when it is new.
    fn position(&mut self, b: usize) -> usize {
        if self.dense {
            return b;
        }
        // b < B ≤ 4096.
        match self.idx.binary_search(&(b as u16)) {
            Ok(p) => p,
            Err(_) if (self.idx.len() + 1) * 2 > self.buckets() => {
                self.densify();
                b
            }
            Err(p) => {
                self.idx.insert(p, b as u16);
                self.n.insert(p, 0.0);
                self.s.insert(p, 0.0);
                p
            }
        }
    }

    /// Number of buckets `B`.
    pub fn buckets(&self) -> usize {
        usize::from(self.buckets)
    }

    /// The bucket a unit hash falls in: `unit mod B`.
    pub fn bucket_of(&self, unit: u64) -> usize {
        // B is a power of two, so the mask is the remainder; the result is < B.
        (unit & (u64::from(self.buckets) - 1)) as usize
    }

    /// Records one value for the unit hashed to `unit` (reduced modulo `B`).
    ///
    /// # Errors
    /// [`StatsError::NotFinite`] for NaN/∞; nothing changes.
    pub fn add(&mut self, unit: u64, value: f64) -> Result<()> {
        let v = check_finite("value", value)?;
        let p = self.position(self.bucket_of(unit));
        self.n[p] += 1.0;
        self.s[p] += v;
        Ok(())
    }

    /// Adds `other` bucket by bucket (the merge of two workers' states).
    ///
    /// # Errors
    /// [`StatsError::IncompatibleMerge`] when the bucket counts differ.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if self.buckets != other.buckets {
            return Err(StatsError::IncompatibleMerge("cluster bucket counts differ"));
        }
        for (b, nb, sb) in other.iter() {
            let p = self.position(b);
            self.n[p] += nb;
            self.s[p] += sb;
        }
        Ok(())
    }

    /// The filled buckets in bucket order: `(b, n_b, s_b)`, leaving out buckets that hold
    /// nothing (`n_b = s_b = 0`).
    pub fn iter(&self) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
        let dense = self.dense;
        self.n.iter().zip(&self.s).enumerate().filter_map(move |(k, (&nb, &sb))| {
            let b = if dense { k } else { usize::from(self.idx[k]) };
            (nb != 0.0 || sb != 0.0).then_some((b, nb, sb))
        })
    }

    /// Per-bucket counts `n_b` for every bucket, empty ones as 0 (a copy: `B` numbers).
    pub fn dense_counts(&self) -> Vec<f64> {
        if self.dense {
            return self.n.clone();
        }
        let mut n = vec![0.0; self.buckets()];
        for (k, &i) in self.idx.iter().enumerate() {
            n[usize::from(i)] = self.n[k];
        }
        n
    }

    /// Whether every bucket is held (more than half were filled), as opposed to only the
    /// filled ones.
    pub fn is_dense(&self) -> bool {
        self.dense
    }

    /// `Σ n_b` (from +0: an empty state gives 0 in either form).
    pub fn count(&self) -> f64 {
        self.n.iter().fold(0.0, |a, &b| a + b)
    }

    /// `Σ s_b` (from +0).
    pub fn sum(&self) -> f64 {
        self.s.iter().fold(0.0, |a, &b| a + b)
    }

    /// Buckets holding at least one value.
    pub fn non_empty(&self) -> usize {
        self.n.iter().filter(|&&x| x > 0.0).count()
    }

    /// The ratio estimate `Σ s_b / Σ n_b`, or `None` when empty.
    pub fn ratio(&self) -> Option<f64> {
        let n = self.count();
        (n > 0.0).then(|| self.sum() / n)
    }

    /// Kish's effective number of buckets `N² / Σ n_b²` (0 when empty): how many equally
    /// filled buckets would carry the same information.
    pub fn effective_buckets(&self) -> f64 {
        let n = self.count();
        let sq = self.n.iter().fold(0.0, |a, &x| a + x * x);
        if sq > 0.0 { n * n / sq } else { 0.0 }
    }

    /// The cluster-robust variance of the ratio (the larger of the sandwich and the
    /// jackknife, module comment), or `None` when empty.
    pub fn variance(&self) -> Option<f64> {
        self.variance_at(self.ratio()?)
    }

    /// The same sandwich variance with the residuals centred at `center` instead of the
    /// estimate: the variance under a null value (statistics.md §5.3 evaluates the promotion
    /// variance of error rates under the margin). `None` when empty or `center` is not finite.
    pub fn variance_at(&self, center: f64) -> Option<f64> {
        let n = self.count();
        if !(n > 0.0 && center.is_finite()) {
            return None;
        }
        let mut g = 0.0_f64;
        let mut sandwich = 0.0_f64;
        let mut jackknife = 0.0_f64;
        for (&nb, &sb) in self.n.iter().zip(&self.s) {
            if nb <= 0.0 {
                continue;
            }
            g += 1.0;
            let e = sb - center * nb;
            sandwich += e * e;
            let rest = n - nb;
            if rest <= 0.0 {
                // Every value sits in this one bucket: nothing to compare it with.
                return Some(f64::INFINITY);
            }
            jackknife += (e / rest) * (e / rest);
        }
        if g < 2.0 {
            return Some(f64::INFINITY);
        }
        let sandwich = g / (g - 1.0) * sandwich / (n * n);
        let jackknife = (g - 1.0) / g * jackknife;
        Some(sandwich.max(jackknife))
    }

    /// Design effect `D = V / v_iid` for the i.i.d. variance `v_iid` of the same ratio, or
    /// `None` when either is unavailable or `v_iid` is not positive.
    pub fn design_effect(&self, v_iid: f64) -> Option<f64> {
        let v = self.variance()?;
        (v_iid > 0.0 && v_iid.is_finite() && v.is_finite()).then(|| v / v_iid)
    }

    /// Effective sample size `n / max(D, 1)`: requests discounted for clustering; never above
    /// the raw count. `None` when the design effect is unavailable.
    pub fn effective_count(&self, v_iid: f64) -> Option<f64> {
        let d = self.design_effect(v_iid)?;
        Some(self.count() / d.max(1.0))
    }

    /// Approximate bytes held: the struct and what its lists hold (nothing while no value
    /// was recorded, 18 bytes per filled bucket while sparse, 16·B once dense).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.idx.capacity() * std::mem::size_of::<u16>()
            + (self.n.capacity() + self.s.capacity()) * std::mem::size_of::<f64>()
    }
}

fn check_value(nb: f64, sb: f64) -> Result<()> {
    check_finite("cluster count", nb)?;
    check_finite("cluster sum", sb)?;
    if nb < 0.0 {
        return Err(StatsError::NotPositive { name: "cluster count (>= 0)", value: nb });
    }
    Ok(())
}

/// The stored form: the filled buckets only.
#[derive(Serialize, Deserialize)]
struct ClusterWire {
    /// `B`; absent in the dense form of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<usize>,
    /// Filled bucket indexes; absent in the dense form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<Vec<u32>>,
    n: Vec<f64>,
    s: Vec<f64>,
}

impl Serialize for ClusteredRatio {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        let mut i = Vec::new();
        let mut n = Vec::new();
        let mut s = Vec::new();
        for (b, nb, sb) in self.iter() {
            i.push(b as u32);
            n.push(nb);
            s.push(sb);
        }
        ClusterWire { b: Some(self.buckets()), i: Some(i), n, s }.serialize(ser)
    }
}

impl<'de> Deserialize<'de> for ClusteredRatio {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        let w = ClusterWire::deserialize(de)?;
        let built = match (w.b, w.i) {
            (None, None) => Self::from_buckets(w.n, w.s),
            (Some(b), Some(i)) => Self::from_filled(b, &i, w.n, w.s),
            _ => {
                return Err(serde::de::Error::custom(
                    "cluster statistics need both `b` and `i`, or neither",
                ));
            }
        };
        built.map_err(serde::de::Error::custom)
    }
}

/// `true` when both arms have at least [`MIN_NONEMPTY_BUCKETS`] non-empty buckets and
/// [`MIN_EFFECTIVE_BUCKETS`] effective ones, so a clustered test may count.
pub fn burned_in(canary: &ClusteredRatio, control: &ClusteredRatio) -> bool {
    let ok = |c: &ClusteredRatio| {
        c.non_empty() >= MIN_NONEMPTY_BUCKETS && c.effective_buckets() >= MIN_EFFECTIVE_BUCKETS
    };
    ok(canary) && ok(control)
}

/// An arm's variance of its proportion under the null rate `p`: the binomial `p(1−p)/n`
/// times the arm's design effect `D = max(1, V̂/(r(1−r)/n))`, with `V̂` its cluster-robust
/// variance around its own rate `r`.
///
/// The design effect carries the clustering (users whose requests fail together) and the
/// binomial at the null rate carries the scale, as in the i.i.d. pooled test: centring an
/// arm's residuals at a null rate instead would add the arm's real difference from it to the
/// variance (a canary at twice the error rate would look twice as noisy and be caught half as
/// fast). `D ≥ 1` because requests of one user are alike, not opposite; below that the
/// estimate is bucket noise, and the empirical residuals of a rare event are too small while
/// few events have been seen (no error yet: every residual is 0).
fn null_variance(arm: &ClusteredRatio, p: f64) -> f64 {
    let n = arm.count();
    if n <= 0.0 {
        return 0.0;
    }
    (p * (1.0 - p)).max(0.0) / n * proportion_design_effect(arm)
}

/// The design effect of a proportion's arm, `max(1, V̂/(r(1−r)/n))` with `V̂` its
/// cluster-robust variance around its own rate `r`; 1 while it has no event (or only events),
/// infinite when its variance is not estimable (one bucket).
pub fn proportion_design_effect(arm: &ClusteredRatio) -> f64 {
    let n = arm.count();
    match (arm.ratio(), arm.variance()) {
        (Some(r), Some(v)) if r > 0.0 && r < 1.0 && n > 0.0 => {
            let own = r * (1.0 - r) / n;
            if v.is_finite() { (v / own).max(1.0) } else { f64::INFINITY }
        }
        _ => 1.0,
    }
}

fn both(canary: &ClusteredRatio, control: &ClusteredRatio) -> Result<(f64, f64)> {
    if canary.buckets() != control.buckets() {
        return Err(StatsError::IncompatibleMerge("cluster bucket counts differ"));
    }
    match (canary.ratio(), control.ratio()) {
        (Some(t), Some(c)) => Ok((t, c)),
        _ => Err(StatsError::NotEnoughData("each arm needs at least one value")),
    }
}

/// Difference of ratios `r_t − r_c` with `V = V_t + V_c` (each the sandwich at its own ratio).
/// For means such as ln latency or quality.
///
/// # Errors
/// [`StatsError::NotEnoughData`] when an arm is empty, [`StatsError::IncompatibleMerge`] when
/// the bucket counts differ.
pub fn ratio_difference(canary: &ClusteredRatio, control: &ClusteredRatio) -> Result<Estimate> {
    let (t, c) = both(canary, control)?;
    let v = canary.variance_at(t).unwrap_or(0.0) + control.variance_at(c).unwrap_or(0.0);
    Estimate::new(t - c, v)
}

/// Difference of proportions `r_t − r_c` with the variance under H0: θ = 0: each arm's
/// binomial variance at the smoothed pooled rate `p̄ = (S_t + S_c + ½)/(N_t + N_c + 1)` times
/// its design effect. The clustered analogue of the pooled `V0` (use it for rollback).
///
/// # Errors
/// As [`ratio_difference`].
pub fn proportion_difference_pooled(
    canary: &ClusteredRatio,
    control: &ClusteredRatio,
) -> Result<Estimate> {
    let (t, c) = both(canary, control)?;
    let pbar = (canary.sum() + control.sum() + 0.5) / (canary.count() + control.count() + 1.0);
    let v = null_variance(canary, pbar) + null_variance(control, pbar);
    Estimate::new(t - c, v)
}

/// Difference of proportions with the variance under the promotion null `p_t = p_c + δ`
/// (statistics.md §5.3): `p̃_c = clip((S_t + S_c − N_t δ + ½)/(N_t + N_c + 1))`,
/// `p̃_t = p̃_c + δ`, and each arm's binomial variance at its null rate times its design
/// effect.
///
/// # Errors
/// As [`ratio_difference`], plus [`StatsError::NotFinite`] for a non-finite δ.
pub fn proportion_difference_under_margin(
    canary: &ClusteredRatio,
    control: &ClusteredRatio,
    delta: f64,
) -> Result<Estimate> {
    check_finite("delta", delta)?;
    let (t, c) = both(canary, control)?;
    let (nt, nc) = (canary.count(), control.count());
    let eps: f64 = 1e-6;
    let lo = eps.max(-delta + eps);
    let hi = (1.0 - delta - eps).min(1.0 - eps);
    let raw = (canary.sum() + control.sum() - nt * delta + 0.5) / (nt + nc + 1.0);
    let pc = if lo <= hi { raw.clamp(lo, hi) } else { 0.5 };
    let pt = pc + delta;
    let v = null_variance(canary, pt) + null_variance(control, pc);
    Estimate::new(t - c, v)
}

/// Buckets of the per-unit error table kept beside the [`DEFAULT_CLUSTER_BUCKETS`] ones under a
/// sticky split: 4096, the most a [`ClusteredRatio`] holds. Unit hashes are 16 bits, so a bucket
/// holds the units of 16 hash values: with 10,000 users about 2.4 users per bucket (fewer per
/// arm), where a 128-bucket table mixes about 80, and a heavy user's bucket is mostly that user.
pub const UNIT_BUCKETS: usize = 4096;

/// The intraclass correlation ρ of a binary outcome within units, pooled over arms: the
/// one-way ANOVA estimator `ρ̂ = Σ_a Σ_b [(s_b − p_a n_b)² / (n_b p_a(1−p_a)) − 1] / Σ_a Σ_b (n_b − 1)`,
/// each arm centred at its own rate `p_a`, clipped to `[0, 1]`.
///
/// Under a random-effects model (a unit's requests fail with its own propensity, of mean `p`
/// and variance `τ²`) `E[(s_b − p n_b)² / n_b] = p(1−p) + (n_b − 1) τ²`, so the ratio estimates
/// `ρ = τ² / (p(1−p))`: 0 for independent requests, 1 when a unit's requests all fail or all
/// succeed. Each arm is centred at its own rate and scaled by its own `p_a(1−p_a)`, so a canary
/// whose every unit fails twice as often does not look heterogeneous. An arm without both
/// outcomes adds nothing; with no information at all ρ̂ is 0.
pub fn intraclass_correlation(arms: &[&ClusteredRatio]) -> f64 {
    let mut num = 0.0_f64;
    let mut den = 0.0_f64;
    for arm in arms {
        let Some(p) = arm.ratio().filter(|p| *p > 0.0 && *p < 1.0) else { continue };
        let q = p * (1.0 - p);
        for (_, nb, sb) in arm.iter() {
            if nb <= 0.0 {
                continue;
            }
            let e = sb - p * nb;
            num += e * e / (nb * q) - 1.0;
            den += nb - 1.0;
        }
    }
    if den > 0.0 && num.is_finite() { (num / den).clamp(0.0, 1.0) } else { 0.0 }
}

/// Per-unit weighting of an arm's per-bucket counts: bucket `b` counts its requests and events
/// with the weight `W_b = 1 / (1 + (n_b − 1) ρ)`, the inverse of its design effect under the
/// random-effects model of [`intraclass_correlation`] (generalised least squares: the bucket's
/// rate `s_b/n_b` has variance `p(1−p)(1 + (n_b − 1)ρ)/n_b`, so `W_b n_b` is its information).
/// A unit whose `n_b` is far above `1/ρ` counts about `1/ρ` requests' worth; with ρ = 0 every
/// request counts once and the state is returned unchanged.
///
/// # Errors
/// None in practice (the weighted counts are finite and non-negative); the state's own checks.
pub fn unit_weighted(arm: &ClusteredRatio, rho: f64) -> Result<ClusteredRatio> {
    let rho = check_finite("intraclass correlation", rho)?.clamp(0.0, 1.0);
    let mut idx = Vec::new();
    let mut n = Vec::new();
    let mut s = Vec::new();
    for (b, nb, sb) in arm.iter() {
        let w = 1.0 / (1.0 + (nb - 1.0).max(0.0) * rho);
        idx.push(b as u32);
        n.push(w * nb);
        s.push(w * sb);
    }
    ClusteredRatio::from_filled(arm.buckets(), &idx, n, s)
}

/// The error comparison of a sticky split by unit rather than by request (rollback side).
///
/// Both arms' per-unit tables ([`UNIT_BUCKETS`]) are weighted by [`unit_weighted`] with the ρ̂
/// of both ([`intraclass_correlation`]); the same weight function of a unit's own request count
/// applies in both arms, and a unit's traffic does not depend on its arm, so under "no
/// different" both weighted rates estimate the same quantity: the rate over units, each
/// counted up to about `1/ρ` requests. The exact event test then runs on the weighted
/// effective counts: events `x_a / D`, with `x_a = Σ W_b s_b` and `D` the larger design effect
/// of the two weighted rates ([`proportion_design_effect`], at least 1), at the canary's share
/// `m_t / (m_t + m_c)` of the weighted requests `m_a = Σ W_b n_b` (conditioning on the traffic
/// each arm received, which the candidate does not change).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitErrors {
    /// ρ̂ of both arms.
    pub icc: f64,
    /// The canary's weighted table.
    pub canary: ClusteredRatio,
    /// The control's weighted table.
    pub control: ClusteredRatio,
}

impl UnitErrors {
    /// Weights both arms' per-unit error tables (n_b = requests, s_b = error events).
    ///
    /// # Errors
    /// [`StatsError::IncompatibleMerge`] when the bucket counts differ,
    /// [`StatsError::NotEnoughData`] when an arm has no request.
    pub fn new(canary: &ClusteredRatio, control: &ClusteredRatio) -> Result<Self> {
        if canary.buckets() != control.buckets() {
            return Err(StatsError::IncompatibleMerge("cluster bucket counts differ"));
        }
        if canary.count() <= 0.0 || control.count() <= 0.0 {
            return Err(StatsError::NotEnoughData("each arm needs at least one request"));
        }
        let icc = intraclass_correlation(&[canary, control]);
        Ok(Self { icc, canary: unit_weighted(canary, icc)?, control: unit_weighted(control, icc)? })
    }

    /// The larger design effect of the two weighted rates (at least 1; infinite when a
    /// variance is not estimable).
    pub fn design_effect(&self) -> f64 {
        proportion_design_effect(&self.canary).max(proportion_design_effect(&self.control))
    }

    /// The canary's share of the weighted requests, `m_t / (m_t + m_c)`.
    pub fn share(&self) -> f64 {
        let (t, c) = (self.canary.count(), self.control.count());
        t / (t + c)
    }

    /// The effective error events of the canary and the control (`x_a / D`, rounded), the
    /// counts the exact event test takes at [`UnitErrors::share`]; `None` when the design
    /// effect is not finite (no evidence).
    pub fn effective_events(&self) -> Option<(u64, u64)> {
        let d = self.design_effect();
        if !d.is_finite() {
            return None;
        }
        // Non-negative and finite; far below u64::MAX (at most the requests).
        let round = |x: f64| (x / d).round().max(0.0) as u64;
        Some((round(self.canary.sum()), round(self.control.sum())))
    }
}

/// Relative difference of ratios `r_t / r_c − 1` with the delta-method variance
/// `V_t / r_c² + r_t² V_c / r_c⁴` (statistics.md §5.5 with clustered variances). For cost.
///
/// # Errors
/// As [`ratio_difference`], and [`StatsError::NotEnoughData`] when the control ratio is ≤ 0.
pub fn relative_ratio_difference(
    canary: &ClusteredRatio,
    control: &ClusteredRatio,
) -> Result<Estimate> {
    let (t, c) = both(canary, control)?;
    if c <= 0.0 {
        return Err(StatsError::NotEnoughData("the control mean must be above zero"));
    }
    let vt = canary.variance_at(t).unwrap_or(0.0);
    let vc = control.variance_at(c).unwrap_or(0.0);
    Estimate::new(t / c - 1.0, vt / (c * c) + t * t * vc / (c * c * c * c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, rel: f64) {
        assert!((a - b).abs() <= rel * b.abs().max(1e-300), "{a} vs {b}");
    }

    /// The per-unit error comparison on hand-made tables of 8 buckets. Expected values
    /// computed independently in python3 with exact fractions
    /// (`crates/actuator-stats/golden/unit_errors.py`):
    /// ρ̂ = Σ_a Σ_b [(s_b − p_a n_b)²/(n_b p_a(1−p_a)) − 1] / Σ_a Σ_b (n_b − 1)
    ///    = 1971185/41178912; W_b = 1/(1 + (n_b − 1)ρ̂); each weighted rate's D is the larger of
    /// 1 and its cluster-robust variance (max of sandwich and jackknife) over r(1−r)/m.
    #[test]
    fn unit_errors_golden() {
        let t = ClusteredRatio::from_buckets(
            vec![1.0, 3.0, 0.0, 50.0, 2.0, 10.0, 0.0, 4.0],
            vec![0.0, 1.0, 0.0, 6.0, 0.0, 1.0, 0.0, 0.0],
        )
        .unwrap();
        let c = ClusteredRatio::from_buckets(
            vec![2.0, 5.0, 120.0, 1.0, 8.0, 0.0, 3.0, 6.0],
            vec![0.0, 0.0, 5.0, 1.0, 1.0, 0.0, 0.0, 1.0],
        )
        .unwrap();
        close(intraclass_correlation(&[&t, &c]), 1_971_185.0 / 41_178_912.0, 1e-12);
        let u = UnitErrors::new(&t, &c).unwrap();
        close(u.icc, 0.047_868_797_504_897_65, 1e-12);
        close(u.canary.count(), 31.078_359_526_091_784, 1e-12);
        close(u.canary.sum(), 3.404_943_384_928_007_5, 1e-12);
        close(u.control.count(), 38.596_521_764_641_395, 1e-12);
        close(u.control.sum(), 3.302_567_696_121_521_6, 1e-12);
        close(proportion_design_effect(&u.canary), 1.0, 1e-12);
        close(proportion_design_effect(&u.control), 1.014_098_782_510_695_7, 1e-12);
        close(u.design_effect(), 1.014_098_782_510_695_7, 1e-12);
        close(u.share(), 0.446_048_259_435_287_1, 1e-12);
        assert_eq!(u.effective_events(), Some((3, 3)));
    }

    /// Independent requests (one per unit, or units whose requests fail independently): ρ̂ is
    /// 0 and the weighted tables are the raw ones, so the comparison is the request-level one.
    #[test]
    fn no_heterogeneity_leaves_the_counts_alone() {
        let n = vec![4.0; 8];
        let s = vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let t = ClusteredRatio::from_buckets(n, s).unwrap();
        // within-bucket binomial spread only: every bucket 0 or 1 event of 4 at p = 1/16
        assert_eq!(intraclass_correlation(&[&t]), 0.0);
        let w = unit_weighted(&t, 0.0).unwrap();
        assert_eq!(w, t);
        // ρ = 1: a bucket counts as one request
        let one = unit_weighted(&t, 1.0).unwrap();
        close(one.count(), 8.0, 1e-12);
        close(one.sum(), 0.5, 1e-12);
        assert!(unit_weighted(&t, f64::NAN).is_err());
    }

    /// What a user notices: one heavy user with a high error propensity on the canary makes the
    /// request-level rate look three times control's, while the other units are alike; the
    /// per-unit comparison counts that user about `1/ρ̂` requests and sees a small difference.
    #[test]
    fn a_heavy_unit_does_not_carry_the_arm() {
        // Request `i` of bucket `b` fails when a hash of (b, i) falls below the rate.
        let fails = |b: u64, i: u64, rate: f64| {
            let mut z =
                b.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 29;
            ((z >> 11) as f64 / (1u64 << 53) as f64) < rate
        };
        let table = |units: std::ops::Range<u64>, heavy: bool| {
            let mut n = vec![0.0; 512];
            let mut s = vec![0.0; 512];
            if heavy {
                n[0] = 4000.0;
                s[0] = (0..4000).filter(|&i| fails(0, i, 0.20)).count() as f64;
            }
            for b in units {
                n[b as usize] = 20.0;
                s[b as usize] = (0..20).filter(|&i| fails(b, i, 0.05)).count() as f64;
            }
            ClusteredRatio::from_buckets(n, s).unwrap()
        };
        // canary: the heavy user and 100 users of 20 requests at 5 %; control: 300 such users
        let t = table(1..101, true);
        let c = table(101..401, false);
        let by_request = t.ratio().unwrap() / c.ratio().unwrap();
        assert!(by_request > 2.5, "{by_request}");
        let u = UnitErrors::new(&t, &c).unwrap();
        assert!(u.icc > 0.0, "{}", u.icc);
        let by_unit = u.canary.ratio().unwrap() / u.control.ratio().unwrap();
        // the heavy user counts about 1/ρ̂ requests of its 4,000
        assert!(u.canary.count() < 2000.0 + 1.0 / u.icc, "{}", u.canary.count());
        assert!(by_unit < 1.5, "{by_unit} vs {by_request}");
    }

    /// Four buckets, hand-made: n = [10, 20, 0, 30], s = [1, 4, 0, 3], so G = 3 non-empty.
    /// r = 8/60; sandwich = 3/2 · Σ e_b² / 60² = 13/10800, jackknife = 2/3 · Σ (e_b/(60 − n_b))²
    /// = 17/11250, and V is the larger. Expected values computed independently in python3
    /// with fractions: `e = [s - r*n ...]`, `sw = F(3,2)*sum(e*e)/3600`,
    /// `jk = F(2,3)*sum((e/(60-n))**2 for non-empty)`.
    #[test]
    fn cluster_variance_golden() {
        let c = ClusteredRatio::from_buckets(vec![10.0, 20.0, 0.0, 30.0], vec![1.0, 4.0, 0.0, 3.0])
            .unwrap();
        close(c.ratio().unwrap(), 0.133_333_333_333_333_34, 1e-15);
        // the jackknife is larger here: the 30-value bucket has leverage 1/2
        close(c.variance().unwrap(), 17.0 / 11250.0, 1e-12);
        // centred at 0.2
        close(c.variance_at(0.2).unwrap(), 0.006_933_333_333_333_333, 1e-12);
        assert_eq!(c.non_empty(), 3);
        // Kish: 60² / (100 + 400 + 900)
        close(c.effective_buckets(), 3600.0 / 1400.0, 1e-12);
        // i.i.d. binomial variance r(1−r)/n = (2/15)(13/15)/60; D = (17/11250) / that
        let v_iid = (2.0 / 15.0) * (13.0 / 15.0) / 60.0;
        close(c.design_effect(v_iid).unwrap(), 0.784_615_384_615_384_6, 1e-12);
        assert_eq!(c.effective_count(v_iid), Some(60.0));
    }

    #[test]
    fn one_bucket_carries_no_evidence() {
        let one = ClusteredRatio::from_buckets(vec![0.0, 50.0, 0.0, 0.0], vec![0.0, 5.0, 0.0, 0.0])
            .unwrap();
        assert_eq!(one.variance(), Some(f64::INFINITY));
        let other =
            ClusteredRatio::from_buckets(vec![40.0, 0.0, 30.0, 30.0], vec![2.0, 0.0, 1.0, 1.0])
                .unwrap();
        assert!(ratio_difference(&one, &other).is_err(), "an infinite variance is no estimate");
    }

    /// Two arms of four buckets: canary n = [100, 50, 80, 70], s = [3, 1, 6, 2]; control
    /// n = [90, 60, 75, 75], s = [1, 2, 1, 2]. Expected values from python3 with exact fractions
    /// (formulas of the module comment, each arm's V the larger of sandwich and jackknife, and for
    /// proportions the binomial at the null centre times max(1, the arm's design effect); pooled centre p̄ = (12 + 6 + ½)/601; margin centres
    /// p̃_c = (18 − 300·0.005 + ½)/601 and p̃_t = p̃_c + 0.005).
    #[test]
    fn differences_golden() {
        let t =
            ClusteredRatio::from_buckets(vec![100.0, 50.0, 80.0, 70.0], vec![3.0, 1.0, 6.0, 2.0])
                .unwrap();
        let c =
            ClusteredRatio::from_buckets(vec![90.0, 60.0, 75.0, 75.0], vec![1.0, 2.0, 1.0, 2.0])
                .unwrap();
        let d = ratio_difference(&t, &c).unwrap();
        close(d.theta, 0.02, 1e-12);
        close(d.variance, 1.879_364_217_955_839e-4, 1e-9);
        let p = proportion_difference_pooled(&t, &c).unwrap();
        close(p.theta, 0.02, 1e-12);
        close(p.variance, 2.247_775_470_294_796_4e-4, 1e-9);
        let m = proportion_difference_under_margin(&t, &c, 0.005).unwrap();
        close(m.variance, 2.267_950_429_047_107_2e-4, 1e-9);
        let r = relative_ratio_difference(&t, &c).unwrap();
        close(r.theta, 1.0, 1e-12);
        close(r.variance, 0.669_529_263_105_739_8, 1e-9);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(ClusteredRatio::new(100).is_err());
        assert!(ClusteredRatio::new(1).is_err());
        assert!(ClusteredRatio::new(128).is_ok());
        let mut c = ClusteredRatio::default();
        assert!(c.add(1, f64::NAN).is_err());
        assert_eq!(c.count(), 0.0);
        assert!(c.ratio().is_none() && c.variance().is_none());
        assert!(c.merge(&ClusteredRatio::new(64).unwrap()).is_err());
        assert!(ClusteredRatio::from_buckets(vec![1.0; 3], vec![1.0; 3]).is_err());
        assert!(ClusteredRatio::from_buckets(vec![-1.0, 1.0], vec![1.0, 1.0]).is_err());
    }

    #[test]
    fn stored_forms_read_back_and_bad_ones_are_refused() {
        // The dense form of earlier versions reads as the same state.
        let old = r#"{"n":[1.0,0.0,2.0,0.0],"s":[0.5,0.0,1.0,0.0]}"#;
        let c: ClusteredRatio = serde_json::from_str(old).unwrap();
        assert_eq!(
            c,
            ClusteredRatio::from_buckets(vec![1.0, 0.0, 2.0, 0.0], vec![0.5, 0.0, 1.0, 0.0])
                .unwrap()
        );
        assert!(!c.is_dense(), "two of four filled: sparse");
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"b":4,"i":[0,2],"n":[1.0,2.0],"s":[0.5,1.0]}"#
        );
        // A metric that saw nothing holds nothing.
        let empty = ClusteredRatio::default();
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"b":128,"i":[],"n":[],"s":[]}"#);
        assert_eq!(empty.approx_bytes(), std::mem::size_of::<ClusteredRatio>());
        for bad in [
            r#"{"b":4,"i":[2,0],"n":[1.0,1.0],"s":[0.0,0.0]}"#,
            r#"{"b":4,"i":[4],"n":[1.0],"s":[0.0]}"#,
            r#"{"b":4,"i":[0],"n":[1.0,2.0],"s":[0.0]}"#,
            r#"{"b":3,"i":[0],"n":[1.0],"s":[0.0]}"#,
            r#"{"b":4,"i":[0],"n":[-1.0],"s":[0.0]}"#,
            r#"{"b":4,"n":[1.0],"s":[0.0]}"#,
            r#"{"n":[1.0,2.0,3.0],"s":[0.0,0.0,0.0]}"#,
        ] {
            assert!(serde_json::from_str::<ClusteredRatio>(bad).is_err(), "{bad}");
        }
    }

    /// splitmix64, for reproducible simulations.
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unif(x: u64) -> f64 {
        (mix(x) >> 11) as f64 / (1u64 << 53) as f64
    }

    proptest! {
        #[test]
        fn merge_is_addition(a in proptest::collection::vec((0u64..10_000, 0.0f64..10.0), 0..200),
                             b in proptest::collection::vec((0u64..10_000, 0.0f64..10.0), 0..200)) {
            let mut all = ClusteredRatio::default();
            let mut left = ClusteredRatio::default();
            let mut right = ClusteredRatio::default();
            for &(u, v) in &a { all.add(u, v).unwrap(); left.add(u, v).unwrap(); }
            for &(u, v) in &b { all.add(u, v).unwrap(); right.add(u, v).unwrap(); }
            left.merge(&right).unwrap();
            prop_assert_eq!(left.iter().count(), all.iter().count());
            for ((bx, nx, sx), (by, ny, sy)) in left.iter().zip(all.iter()) {
                prop_assert_eq!(bx, by);
                prop_assert_eq!(nx, ny);
                prop_assert!((sx - sy).abs() < 1e-9);
            }
            let back: ClusteredRatio = serde_json::from_str(&serde_json::to_string(&left).unwrap()).unwrap();
            prop_assert_eq!(back, left);
        }

        /// The sparse form (few buckets filled) and the dense one (every bucket held) give
        /// the same statistics bit for bit, and survive a round trip through JSON.
        #[test]
        fn sparse_and_dense_agree(vals in proptest::collection::vec((0u64..1_000_000, 0.0f64..50.0), 0..300)) {
            let mut sparse = ClusteredRatio::default();
            let mut n = vec![0.0; DEFAULT_CLUSTER_BUCKETS];
            let mut s = vec![0.0; DEFAULT_CLUSTER_BUCKETS];
            for &(u, v) in &vals {
                sparse.add(u, v).unwrap();
                let b = (u % DEFAULT_CLUSTER_BUCKETS as u64) as usize;
                n[b] += 1.0;
                s[b] += v;
            }
            let dense = ClusteredRatio { buckets: 128, dense: true, idx: Vec::new(), n, s };
            let filled = dense.iter().count();
            prop_assert_eq!(sparse.is_dense(), filled * 2 > 128);
            prop_assert_eq!(&sparse, &dense);
            prop_assert_eq!(sparse.count().to_bits(), dense.count().to_bits());
            prop_assert_eq!(sparse.sum().to_bits(), dense.sum().to_bits());
            prop_assert_eq!(sparse.non_empty(), dense.non_empty());
            prop_assert_eq!(sparse.effective_buckets().to_bits(), dense.effective_buckets().to_bits());
            prop_assert_eq!(sparse.variance().map(f64::to_bits), dense.variance().map(f64::to_bits));
            let text = serde_json::to_string(&sparse).unwrap();
            let back: ClusteredRatio = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back.variance().map(f64::to_bits), dense.variance().map(f64::to_bits));
            prop_assert_eq!(back.is_dense(), sparse.is_dense());
            if !sparse.is_dense() {
                // Only filled buckets are held.
                prop_assert!(sparse.approx_bytes() <= std::mem::size_of::<ClusteredRatio>() + 18 * 2 * filled.max(2));
            }
        }

        #[test]
        fn effective_n_never_exceeds_n(vals in proptest::collection::vec((0u64..1_000, 0u8..2), 2..400)) {
            let mut c = ClusteredRatio::default();
            for &(u, e) in &vals { c.add(u, f64::from(e)).unwrap(); }
            let n = c.count();
            let r = c.ratio().unwrap();
            if r > 0.0 && r < 1.0 {
                let eff = c.effective_count(r * (1.0 - r) / n).unwrap();
                prop_assert!(eff <= n + 1e-9 && eff > 0.0, "{} > {}", eff, n);
            }
        }

        #[test]
        fn one_request_per_user_matches_iid(seed in 0u64..1_000) {
            // 20,000 users with one request each at a 5% error rate: the clustered variance
            // must match p(1−p)/n within bucket noise (B = 128: relative sd ≈ sqrt(2/127) =
            // 0.125, so the band is about ±4.5 sd; the average over seeds is pinned below).
            let mut c = ClusteredRatio::default();
            for u in 0..20_000u64 {
                let unit = mix(seed.wrapping_mul(1_000_003).wrapping_add(u));
                let err = unif(unit ^ 0x5555) < 0.05;
                c.add(unit, f64::from(u8::from(err))).unwrap();
            }
            let r = c.ratio().unwrap();
            let v_iid = r * (1.0 - r) / c.count();
            let d = c.design_effect(v_iid).unwrap();
            prop_assert!((0.45..1.6).contains(&d), "design effect {}", d);
        }
    }

    #[test]
    fn one_request_per_user_design_effect_averages_one() {
        let mut total = 0.0;
        for seed in 0..40u64 {
            let mut c = ClusteredRatio::default();
            for u in 0..5_000u64 {
                let unit = mix(seed.wrapping_mul(7_919).wrapping_add(u) ^ 0xabcd);
                c.add(unit, f64::from(u8::from(unif(unit ^ 0x77) < 0.1))).unwrap();
            }
            let r = c.ratio().unwrap();
            total += c.design_effect(r * (1.0 - r) / c.count()).unwrap();
        }
        let mean = total / 40.0;
        assert!((0.93..1.07).contains(&mean), "mean design effect {mean}");
    }

    #[test]
    fn clustered_users_raise_the_design_effect() {
        // 2,000 users, each with 25 requests and a user-level error rate drawn from
        // {1%, 21%}: strongly clustered, so D must be well above 1 and n_eff well below n.
        let mut c = ClusteredRatio::default();
        for u in 0..2_000u64 {
            let unit = mix(u);
            let p = if unif(unit ^ 1) < 0.1 { 0.21 } else { 0.01 };
            for k in 0..25u64 {
                let e = unif(unit ^ (k + 7).wrapping_mul(0x9e37)) < p;
                c.add(unit, f64::from(u8::from(e))).unwrap();
            }
        }
        let r = c.ratio().unwrap();
        let v_iid = r * (1.0 - r) / c.count();
        let d = c.design_effect(v_iid).unwrap();
        assert!(d > 2.0, "design effect {d}");
        assert!(c.effective_count(v_iid).unwrap() < c.count() / 2.0);
    }
}
