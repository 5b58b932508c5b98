//! The result table every benchmark module appends rows to.

use std::fmt::Write as _;

/// What a target limits: the measured value, or its ratio to the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Limit {
    /// value ≤ limit.
    ValueAtMost(f64),
    /// value ≥ limit.
    ValueAtLeast(f64),
    /// value / baseline ≤ limit.
    RatioAtMost(f64),
    /// value / baseline ≥ limit (for throughputs).
    RatioAtLeast(f64),
}

/// One measurement.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    name: String,
    value: f64,
    unit: String,
    baseline: Option<f64>,
    target: Option<Limit>,
}

impl Row {
    /// A row with no baseline and no target (verdict `info`).
    pub(crate) fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Self { name: name.into(), value, unit: unit.into(), baseline: None, target: None }
    }

    /// Sets the baseline measured in the same run (same unit); the ratio is value / baseline.
    pub(crate) fn baseline(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// Sets the target the verdict checks.
    pub(crate) fn target(mut self, target: Limit) -> Self {
        self.target = Some(target);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }

    /// `None` without a target, else whether the target is met.
    pub(crate) fn passed(&self) -> Option<bool> {
        Some(match self.target? {
            Limit::ValueAtMost(l) => self.value <= l,
            Limit::ValueAtLeast(l) => self.value >= l,
            Limit::RatioAtMost(l) => self.ratio().is_some_and(|r| r <= l),
            Limit::RatioAtLeast(l) => self.ratio().is_some_and(|r| r >= l),
        })
    }
}

/// An ordered list of rows, rendered as a markdown table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Row>,
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// A ratio: two decimals, four below 0.01 (so a small ratio does not show as zero).
fn fmt_ratio(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 { format!("{x:.4}x") } else { format!("{x:.2}x") }
}

impl Table {
    /// Appends a row.
    pub(crate) fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Names of the rows whose target is missed.
    pub(crate) fn failures(&self) -> Vec<&str> {
        self.rows.iter().filter(|r| r.passed() == Some(false)).map(|r| r.name.as_str()).collect()
    }

    /// The table as markdown: name | value | unit | baseline | ratio | target | verdict.
    pub(crate) fn to_markdown(&self) -> String {
        let mut s = String::from(
            "| name | value | unit | baseline | ratio | target | verdict |\n|---|---:|---|---:|---:|---|---|\n",
        );
        for r in &self.rows {
            let baseline = r.baseline.map_or_else(|| "-".to_owned(), num);
            let ratio = r.ratio().map_or_else(|| "-".to_owned(), fmt_ratio);
            let target = match r.target {
                None => "-".to_owned(),
                Some(Limit::ValueAtMost(l)) => format!("≤ {} {}", num(l), r.unit),
                Some(Limit::ValueAtLeast(l)) => format!("≥ {} {}", num(l), r.unit),
                Some(Limit::RatioAtMost(l)) => format!("ratio ≤ {}", fmt_ratio(l)),
                Some(Limit::RatioAtLeast(l)) => format!("ratio ≥ {}", fmt_ratio(l)),
            };
            let verdict = match r.passed() {
                None => "info",
                Some(true) => "pass",
                Some(false) => "FAIL",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {baseline} | {ratio} | {target} | {verdict} |",
                r.name,
                num(r.value),
                r.unit
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_judges() {
        let mut t = Table::default();
        t.push(Row::new("a", 50.0, "ns/call").baseline(25.0).target(Limit::ValueAtMost(100.0)));
        t.push(Row::new("b", 3.0, "ns/call").baseline(1.0).target(Limit::RatioAtMost(2.0)));
        t.push(Row::new("c", 1.0, "x"));
        t.push(Row::new("d", 80.0, "req/s").baseline(100.0).target(Limit::RatioAtLeast(0.7)));
        let md = t.to_markdown();
        assert!(
            md.contains("| a | 50.00 | ns/call | 25.00 | 2.00x | ≤ 100 ns/call | pass |"),
            "{md}"
        );
        assert!(
            md.contains("| b | 3.00 | ns/call | 1.00 | 3.00x | ratio ≤ 2.00x | FAIL |"),
            "{md}"
        );
        assert!(md.contains("| c | 1.00 | x | - | - | - | info |"), "{md}");
        assert!(md.contains("| d | 80.00 | req/s | 100 | 0.80x | ratio ≥ 0.70x | pass |"), "{md}");
        assert_eq!(t.failures(), ["b"]);
        t.push(Row::new("e", 1.0, "ms").baseline(800.0).target(Limit::RatioAtMost(0.005)));
        let md = t.to_markdown();
        assert!(md.contains("| e | 1.00 | ms | 800 | 0.0013x | ratio ≤ 0.0050x | pass |"), "{md}");
    }
}
