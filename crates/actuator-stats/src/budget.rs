//! One false-rollback budget for the whole rollout (statistics.md §5.7).
//!
//! Per metric m with weight w_m (Σ w_m = 1), a fresh e-process runs in every phase and is
//! multiplied onto the e-value frozen at the end of the previous phases:
//! `E_m = Π_{completed} e_m(end) · e_m(current)`. A metric whose test is a normal-mixture
//! mSPRT against a concurrent control may instead run one mixture over the pooled
//! (information-weighted) estimate of all such phases, `M_m` (set with
//! [`EvidenceLedger::set_pooled`]): the pooled statistic is a martingale in information time
//! whatever the shares, so one mixture spans the phases and pays its mixing cost once instead
//! of once per phase. `M_m` stays frozen in phases that do not pool, and
//! `E_m = Π e_m · M_m` is still an e-process (the factors move in disjoint periods). The rollout rolls back when the weighted
//! average `E = Σ_m w_m E_m ≥ 1/α_total`. This is an e-process for the global null "no metric
//! is worse", so Ville's inequality bounds the probability of any false rollback, across every
//! look, metric and phase, by α_total. It rejects whenever weighted Bonferroni
//! (`E_m ≥ 1/(w_m α_total)`) would.
//!
//! The product and the pooling assume that phases are independent given the past, which
//! holds when every request has its own key but not when the same users return phase after
//! phase under a sticky split: the canary's users of one phase are canary users again in the
//! next, so the phases share their users' traits. When units return
//! ([`crate::UnitRecurrence`], told with [`EvidenceLedger::set_units_recur`]), or while that
//! is not yet known, the ledger uses each phase's own evidence only, with the budget split
//! evenly over the K planned phases ([`EvidenceLedger::set_planned_phases`]): the rollout
//! rolls back when the current phase's `Σ_m w_m e_m ≥ K/α_total`. Each phase's test is valid
//! by itself (its variances are cluster-robust), so by the union bound the probability of
//! any false rollback over the K phases stays at most α_total whatever the phases share.

use serde::{Deserialize, Serialize};

use crate::cond_binom::log_sum_exp;
use crate::error::{Result, StatsError, check_probability};
use crate::recurrence::UnitsRecur;

/// One metric (or sub-test) in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Metric or sub-test name.
    pub name: String,
    /// Normalized weight w_m.
    pub weight: f64,
    /// ln of the product of e-values frozen at the end of completed phases.
    pub carried_log_e: f64,
    /// ln e of the current phase at the last update.
    pub current_log_e: f64,
    /// ln of the mixture over the pooled estimate of every phase that pools (0 when none).
    #[serde(default)]
    pub pooled_log_e: f64,
    /// ln e of the current phase's own evidence (its own mixture for a pooling test), what
    /// the ledger uses when phases share units.
    #[serde(default)]
    pub own_log_e: f64,
}

impl LedgerEntry {
    /// ln E_m = carried + pooled + current.
    pub fn log_e(&self) -> f64 {
        self.carried_log_e + self.pooled_log_e + self.current_log_e
    }
}

/// The evidence ledger of one rollout (or one treatment arm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceLedger {
    alpha_total: f64,
    entries: Vec<LedgerEntry>,
    /// Whether assignment units return across phases (state saved before this existed:
    /// no, the product).
    #[serde(default = "units_never_recur")]
    units: UnitsRecur,
    /// Phases the rollout plans (K of the per-phase split; at least the phases seen).
    #[serde(default = "one_phase")]
    planned_phases: u32,
    /// Phases closed so far.
    #[serde(default)]
    closed_phases: u32,
}

const fn units_never_recur() -> UnitsRecur {
    UnitsRecur::No
}

const fn one_phase() -> u32 {
    1
}

/// A non-finite ln e counts as 0 (no evidence).
const fn finite_or_zero(log_e: f64) -> f64 {
    if log_e.is_finite() { log_e } else { 0.0 }
}

/// What the ledger says at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerVerdict {
    /// ln of the weighted e-average.
    pub combined_log_e: f64,
    /// ln(1/α_total).
    pub log_threshold: f64,
    /// `combined_log_e ≥ log_threshold`.
    pub reject: bool,
    /// Names of metrics significant by themselves (`E_m ≥ 1/α_m`, α_m = w_m·α_total).
    pub significant: Vec<String>,
    /// The metric with the largest contribution w_m·E_m, if any.
    pub top_contributor: Option<String>,
}

impl EvidenceLedger {
    /// A ledger with the given (name, weight) pairs; weights are normalized to sum to 1.
    ///
    /// # Errors
    /// [`StatsError::InvalidWeights`] for an empty list or non-positive weights,
    /// [`StatsError::UnknownMetric`] for a duplicate name, or an invalid `alpha_total`.
    pub fn new(alpha_total: f64, weights: &[(String, f64)]) -> Result<Self> {
        let alpha_total = check_probability("alpha_total", alpha_total)?;
        if weights.is_empty() {
            return Err(StatsError::InvalidWeights("no metrics".into()));
        }
        if weights.iter().any(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            return Err(StatsError::InvalidWeights(format!("{weights:?}")));
        }
        for (i, (n, _)) in weights.iter().enumerate() {
            if weights[..i].iter().any(|(m, _)| m == n) {
                return Err(StatsError::UnknownMetric(n.clone()));
            }
        }
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let entries = weights
            .iter()
            .map(|(n, w)| LedgerEntry {
                name: n.clone(),
                weight: w / total,
                carried_log_e: 0.0,
                current_log_e: 0.0,
                pooled_log_e: 0.0,
                own_log_e: 0.0,
            })
            .collect();
        Ok(Self {
            alpha_total,
            entries,
            units: UnitsRecur::No,
            planned_phases: 1,
            closed_phases: 0,
        })
    }

    /// Sets K, the phases the rollout plans (at least 1); the per-phase split of the budget
    /// when phases share units uses the larger of K and the phases seen so far.
    pub fn set_planned_phases(&mut self, phases: u32) {
        self.planned_phases = phases.max(1);
    }

    /// Tells the ledger whether assignment units return across phases (module comment). A
    /// `Yes` is final: later calls do not undo it.
    pub fn set_units_recur(&mut self, units: UnitsRecur) {
        if self.units != UnitsRecur::Yes {
            self.units = units;
        }
    }

    /// What the ledger assumes about returning units.
    pub const fn units_recur(&self) -> UnitsRecur {
        self.units
    }

    /// `true` when each phase's own evidence is used against a per-phase share of the budget
    /// (units return, or it is not yet known).
    pub fn per_phase(&self) -> bool {
        self.units != UnitsRecur::No
    }

    /// ln K of the per-phase split (0 when the phases multiply).
    pub fn phase_penalty(&self) -> f64 {
        if self.per_phase() {
            f64::from(self.planned_phases.max(self.closed_phases + 1)).ln()
        } else {
            0.0
        }
    }

    /// The ln e of `entry` that the verdict uses: its own phase's when [`Self::per_phase`],
    /// the product over phases otherwise.
    pub fn counted_log_e(&self, entry: &LedgerEntry) -> f64 {
        if self.per_phase() { entry.own_log_e } else { entry.log_e() }
    }

    /// α_total.
    pub const fn alpha_total(&self) -> f64 {
        self.alpha_total
    }

    /// All entries.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&LedgerEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut LedgerEntry> {
        self.entries
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| StatsError::UnknownMetric(name.to_string()))
    }

    /// α_m = w_m·α_total for metric `name`.
    pub fn alpha_for(&self, name: &str) -> Option<f64> {
        self.entry(name).map(|e| e.weight * self.alpha_total)
    }

    /// Sets the current-phase ln e of metric `name` (non-finite values count as 0, no evidence).
    ///
    /// # Errors
    /// [`StatsError::UnknownMetric`] when `name` was not registered.
    pub fn set_current(&mut self, name: &str, log_e: f64) -> Result<()> {
        let e = self.entry_mut(name)?;
        e.current_log_e = finite_or_zero(log_e);
        e.own_log_e = e.current_log_e;
        Ok(())
    }

    /// Sets the current phase's own ln e of metric `name` where it differs from its current
    /// factor (a pooling test: its mixture over this phase alone). Call after
    /// [`Self::set_current`], which sets both.
    ///
    /// # Errors
    /// [`StatsError::UnknownMetric`] when `name` was not registered.
    pub fn set_own(&mut self, name: &str, log_e: f64) -> Result<()> {
        let e = self.entry_mut(name)?;
        e.own_log_e = finite_or_zero(log_e);
        Ok(())
    }

    /// Sets ln M of metric `name`: its mixture over the pooled estimate of every phase that
    /// pools, this one included (non-finite values count as 0). The value spans phases and is
    /// not reset by [`Self::close_phase`].
    ///
    /// # Errors
    /// [`StatsError::UnknownMetric`] when `name` was not registered.
    pub fn set_pooled(&mut self, name: &str, log_e: f64) -> Result<()> {
        let e = self.entry_mut(name)?;
        e.pooled_log_e = finite_or_zero(log_e);
        Ok(())
    }

    /// Ends the phase: multiplies each current e-value into the carried product and resets it.
    pub fn close_phase(&mut self) {
        for e in &mut self.entries {
            e.carried_log_e += e.current_log_e;
            e.current_log_e = 0.0;
            e.own_log_e = 0.0;
        }
        self.closed_phases = self.closed_phases.saturating_add(1);
    }

    /// Continues the evidence of `earlier` (a ledger of the same rollout whose phases are
    /// closed): for every metric of the same name, its product of phase e-values is
    /// multiplied onto this ledger's carried product. Optional continuation keeps the product
    /// an e-process, so the budget of `earlier` and this ledger is one. Returns the names
    /// that had no counterpart (their evidence is dropped, which can only lower E).
    pub fn absorb(&mut self, earlier: &Self) -> Vec<String> {
        if earlier.units == UnitsRecur::Yes || self.units == UnitsRecur::No {
            self.units = earlier.units;
        }
        self.planned_phases = self.planned_phases.max(earlier.planned_phases);
        self.closed_phases = self.closed_phases.max(earlier.closed_phases);
        let mut missing = Vec::new();
        for o in &earlier.entries {
            match self.entries.iter_mut().find(|e| e.name == o.name) {
                Some(e) => e.carried_log_e += o.log_e(),
                None => missing.push(o.name.clone()),
            }
        }
        missing
    }

    /// ln Σ_m w_m E_m; when phases share units, ln (Σ_m w_m e_m / K) over the current
    /// phase's own e-values (module comment).
    pub fn combined_log_e(&self) -> f64 {
        let terms: Vec<f64> =
            self.entries.iter().map(|e| e.weight.ln() + self.counted_log_e(e)).collect();
        log_sum_exp(&terms) - self.phase_penalty()
    }

    /// The verdict at this look.
    pub fn verdict(&self) -> LedgerVerdict {
        let combined = self.combined_log_e();
        let log_threshold = (1.0 / self.alpha_total).ln();
        let significant = self
            .entries
            .iter()
            .filter(|e| {
                self.counted_log_e(e)
                    >= (1.0 / (e.weight * self.alpha_total)).ln() + self.phase_penalty()
            })
            .map(|e| e.name.clone())
            .collect();
        let top_contributor = self
            .entries
            .iter()
            .max_by(|a, b| {
                (a.weight.ln() + self.counted_log_e(a))
                    .total_cmp(&(b.weight.ln() + self.counted_log_e(b)))
            })
            .map(|e| e.name.clone());
        LedgerVerdict {
            combined_log_e: combined,
            log_threshold,
            reject: combined >= log_threshold,
            significant,
            top_contributor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> EvidenceLedger {
        let w = [("errors", 0.4), ("latency", 0.2), ("tail", 0.2), ("cost", 0.1), ("quality", 0.1)];
        EvidenceLedger::new(0.05, &w.map(|(n, w)| (n.to_string(), w))).unwrap()
    }

    #[test]
    fn pooled_evidence_spans_phases_and_multiplies_with_the_rest() {
        let mut l = ledger();
        // phase 1: latency pools (ln M = 1.5), errors multiply (ln e = 0.5)
        l.set_pooled("latency", 1.5).unwrap();
        l.set_current("errors", 0.5).unwrap();
        l.close_phase();
        let lat = l.entry("latency").unwrap();
        assert_eq!((lat.carried_log_e, lat.pooled_log_e, lat.current_log_e), (0.0, 1.5, 0.0));
        // phase 2: the pooled mixture is replaced, not multiplied, by its value over both
        l.set_pooled("latency", 2.0).unwrap();
        l.set_current("errors", 0.25).unwrap();
        assert!((l.entry("latency").unwrap().log_e() - 2.0).abs() < 1e-12);
        assert!((l.entry("errors").unwrap().log_e() - 0.75).abs() < 1e-12);
        // a phase that does not pool (the watch step) multiplies its own factor onto it
        l.close_phase();
        l.set_current("latency", 0.5).unwrap();
        assert!((l.entry("latency").unwrap().log_e() - 2.5).abs() < 1e-12);
        assert!(l.set_pooled("nope", 1.0).is_err());
        l.set_pooled("latency", f64::NAN).unwrap();
        assert!((l.entry("latency").unwrap().log_e() - 0.5).abs() < 1e-12, "NaN counts as 0");
        // the pooled part survives a round trip, and older state without it reads as 0
        let back: EvidenceLedger =
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        let old = r#"{"name":"x","weight":1.0,"carried_log_e":0.5,"current_log_e":0.0}"#;
        let e: LedgerEntry = serde_json::from_str(old).unwrap();
        assert_eq!(e.pooled_log_e, 0.0);
    }

    #[test]
    fn weighted_bonferroni_implies_average() {
        let mut l = ledger();
        assert!((l.combined_log_e()).abs() < 1e-12, "all e = 1 gives E = 1");
        // errors alone at 1/alpha_m = 1/0.02 = 50
        l.set_current("errors", 50.001f64.ln()).unwrap();
        let v = l.verdict();
        assert!(v.reject);
        assert_eq!(v.significant, vec!["errors".to_string()]);
        assert!((l.alpha_for("errors").unwrap() - 0.02).abs() < 1e-12);
    }

    #[test]
    fn evidence_multiplies_across_phases() {
        let mut l = ledger();
        l.set_current("latency", 3f64.ln()).unwrap();
        l.close_phase();
        l.set_current("latency", 4f64.ln()).unwrap();
        assert!((l.entry("latency").unwrap().log_e() - 12f64.ln()).abs() < 1e-12);
        assert!(l.set_current("nope", 1.0).is_err());
        assert!(EvidenceLedger::new(0.05, &[("a".into(), 1.0), ("a".into(), 1.0)]).is_err());
        assert!(EvidenceLedger::new(0.05, &[("a".into(), -1.0)]).is_err());
    }

    #[test]
    fn when_units_return_each_phase_is_judged_alone_at_its_share_of_the_budget() {
        let mut l = ledger();
        l.set_planned_phases(5);
        l.set_units_recur(UnitsRecur::Yes);
        // errors: phase 1 ln e = 3, then phase 2 ln e = 2 — the product (e^5 ≈ 148 > 50)
        // would reject, but no phase alone reaches K/α_m = 5/0.02 = 250
        l.set_current("errors", 3.0).unwrap();
        assert!(!l.verdict().reject);
        l.close_phase();
        l.set_current("errors", 2.0).unwrap();
        let v = l.verdict();
        assert!(!v.reject && v.significant.is_empty(), "{v:?}");
        assert!((l.entry("errors").unwrap().log_e() - 5.0).abs() < 1e-12, "still recorded");
        // one phase beyond 250 on its own does
        l.set_current("errors", 250.001f64.ln()).unwrap();
        let v = l.verdict();
        assert!(v.reject && v.significant == vec!["errors".to_string()], "{v:?}");
        // a pooling test counts its own phase's mixture, not the pool
        let mut l = ledger();
        l.set_units_recur(UnitsRecur::Undetermined);
        l.set_planned_phases(2);
        l.set_pooled("latency", 9.0).unwrap();
        l.set_current("latency", 0.0).unwrap();
        l.set_own("latency", 1.0).unwrap();
        let expect = (0.2_f64.ln() + 1.0).exp() + 0.8;
        assert!((l.combined_log_e() - (expect.ln() - 2f64.ln())).abs() < 1e-9);
        // a Yes is final; absorbing carries it and K over
        l.set_units_recur(UnitsRecur::Yes);
        l.set_units_recur(UnitsRecur::No);
        assert!(l.per_phase());
        let mut later = ledger();
        later.absorb(&l);
        assert_eq!(later.units_recur(), UnitsRecur::Yes);
        assert!((later.phase_penalty() - 2f64.ln()).abs() < 1e-12);
        // with independent phases nothing changes
        let mut l = ledger();
        l.set_units_recur(UnitsRecur::No);
        l.set_planned_phases(5);
        assert_eq!(l.phase_penalty(), 0.0);
        l.set_current("errors", 3.0).unwrap();
        l.close_phase();
        l.set_current("errors", 2.0).unwrap();
        assert!(l.verdict().reject, "the product of independent phases");
    }

    #[test]
    fn absorbed_evidence_continues_the_product() {
        let mut early = ledger();
        early.set_current("errors", 3f64.ln()).unwrap();
        early.close_phase();
        early.set_current("errors", 2f64.ln()).unwrap();
        early.close_phase();
        let mut later = ledger();
        assert!(later.absorb(&early).is_empty());
        later.set_current("errors", 5f64.ln()).unwrap();
        assert!((later.entry("errors").unwrap().log_e() - 30f64.ln()).abs() < 1e-12);
        let other = EvidenceLedger::new(0.05, &[("gone".into(), 1.0)]).unwrap();
        assert_eq!(later.absorb(&other), vec!["gone".to_string()]);
    }
}
