//! The answer to "which config for this request?".

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Variant, VersionedConfig};

/// Why a request got its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The slot has no active rollout: stable for everyone (OFREP `STATIC`).
    NoRollout,
    /// The split strategy decided (OFREP `SPLIT`).
    Split,
    /// A targeting-key or attribute override matched (OFREP `TARGETING_MATCH`).
    Override,
    /// The request's region is excluded from the rollout (OFREP `TARGETING_MATCH`).
    RegionExcluded,
    /// The region was missing or unlisted, so the geographic default share split it
    /// (OFREP `DEFAULT`).
    RegionDefault,
}

impl Reason {
    /// The OFREP reason: `STATIC`, `SPLIT`, `TARGETING_MATCH` or `DEFAULT`.
    #[must_use]
    pub const fn ofrep(self) -> &'static str {
        match self {
            Self::NoRollout => "STATIC",
            Self::Split => "SPLIT",
            Self::Override | Self::RegionExcluded => "TARGETING_MATCH",
            Self::RegionDefault => "DEFAULT",
        }
    }
}

/// Run this candidate on the side; its output must not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowDirective {
    /// The candidate config to shadow.
    pub candidate: VersionedConfig,
}

/// The assignment of one request on one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The side the request is on.
    pub variant: Variant,
    /// The config to serve (version and shared value).
    pub config: VersionedConfig,
    /// The active rollout's id, if the slot has one.
    pub rollout_id: Option<Arc<str>>,
    /// The active rollout's phase index, if the slot has one.
    pub phase: Option<u32>,
    /// The sticky bucket (0..10_000) when a sticky strategy computed one.
    pub bucket: Option<u16>,
    /// The assignment-unit hash (0..65_536, see [`unit_hash`](crate::unit_hash)) of the
    /// stickiness key when a sticky strategy split the request: report it back with the
    /// outcome (`unit`) so the analysis can group one user's correlated requests.
    pub unit: Option<u16>,
    /// Whether the request is part of the comparison: `true` when the split strategy placed it
    /// at the phase's share (either side). `false` for traffic routed outside the share (an
    /// override or preview pin, an excluded region, a region at its own share) and for
    /// requests outside a partial-traffic A/B (not enrolled): report it back with the outcome
    /// (`in_experiment`) so the analysis leaves such requests out.
    pub in_experiment: bool,
    /// Why.
    pub reason: Reason,
    /// Set in shadow mode for admitted requests.
    pub shadow: Option<ShadowDirective>,
    /// The routing table revision this answer came from (monotone within a process).
    pub revision: u64,
}

impl Resolution {
    /// The OFREP variant name.
    #[must_use]
    pub fn variant_name(&self) -> &str {
        self.variant.name()
    }

    /// This resolution as borrowed data, e.g. to serialize it the way a
    /// [`ResolutionRef`] is.
    #[must_use]
    pub fn borrowed(&self) -> ResolutionRef<'_> {
        ResolutionRef {
            variant: &self.variant,
            config: &self.config,
            rollout_id: self.rollout_id.as_ref(),
            phase: self.phase,
            bucket: self.bucket,
            unit: self.unit,
            in_experiment: self.in_experiment,
            reason: self.reason,
            shadow: self.shadow.as_ref().map(|s| &s.candidate),
            revision: self.revision,
        }
    }

    /// OFREP `metadata`: `rolloutId`, `phase`, `bucket`, `unit`, `inExperiment` (with a rollout),
    /// `configVersion` (and `shadowVersion`),
    /// so telemetry can join outcomes to the assignment. Allocates; not for the hot path.
    #[must_use]
    pub fn ofrep_metadata(&self) -> Map<String, Value> {
        self.borrowed().ofrep_metadata()
    }
}

/// The assignment of one request on one slot, borrowed from the routing table it was resolved
/// against ([`RoutingTable::resolve_ref`](crate::RoutingTable::resolve_ref)).
///
/// It holds references only: resolving touches no reference count and allocates nothing, so
/// threads resolving against one snapshot write no shared memory. It lives as long as the
/// snapshot it borrows from (a [`TableGuard`](crate::TableGuard) or an
/// `Arc<RoutingTable>`); [`ResolutionRef::into_owned`] makes a [`Resolution`] that outlives it.
/// The fields mean what they mean in [`Resolution`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolutionRef<'t> {
    /// The side the request is on.
    pub variant: &'t Variant,
    /// The config to serve.
    pub config: &'t VersionedConfig,
    /// The active rollout's id, if the slot has one.
    pub rollout_id: Option<&'t Arc<str>>,
    /// The active rollout's phase index, if the slot has one.
    pub phase: Option<u32>,
    /// The sticky bucket (0..10_000) when a sticky strategy computed one.
    pub bucket: Option<u16>,
    /// The assignment-unit hash (0..65_536) when a sticky strategy split the request.
    pub unit: Option<u16>,
    /// Whether the request is part of the comparison (see [`Resolution::in_experiment`]).
    pub in_experiment: bool,
    /// Why.
    pub reason: Reason,
    /// The candidate to run on the side, set in shadow mode for admitted requests (the
    /// [`ShadowDirective`] of the owned resolution).
    pub shadow: Option<&'t VersionedConfig>,
    /// The routing table revision this answer came from.
    pub revision: u64,
}

impl<'t> ResolutionRef<'t> {
    /// The OFREP variant name.
    #[must_use]
    pub fn variant_name(&self) -> &'t str {
        self.variant.name()
    }

    /// The rollout id as a string slice.
    #[must_use]
    pub fn rollout_id_str(&self) -> Option<&'t str> {
        self.rollout_id.map(|id| &**id)
    }

    /// An owned [`Resolution`] (clones the shared `Arc`s: config value, rollout id, arm name).
    #[must_use]
    pub fn into_owned(self) -> Resolution {
        Resolution {
            variant: self.variant.clone(),
            config: self.config.clone(),
            rollout_id: self.rollout_id.cloned(),
            phase: self.phase,
            bucket: self.bucket,
            unit: self.unit,
            in_experiment: self.in_experiment,
            reason: self.reason,
            shadow: self.shadow.map(|c| ShadowDirective { candidate: c.clone() }),
            revision: self.revision,
        }
    }

    /// OFREP `metadata`, as [`Resolution::ofrep_metadata`]. Allocates; not for the hot path.
    #[must_use]
    pub fn ofrep_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("configVersion".into(), self.config.version.into());
        if let Some(id) = self.rollout_id {
            m.insert("rolloutId".into(), Value::String(id.to_string()));
        }
        if let Some(phase) = self.phase {
            m.insert("phase".into(), phase.into());
        }
        if let Some(bucket) = self.bucket {
            m.insert("bucket".into(), bucket.into());
        }
        if let Some(unit) = self.unit {
            m.insert("unit".into(), unit.into());
        }
        if self.rollout_id.is_some() {
            m.insert("inExperiment".into(), self.in_experiment.into());
        }
        if let Some(c) = self.shadow {
            m.insert("shadowVersion".into(), c.version.into());
        }
        m
    }
}

impl From<ResolutionRef<'_>> for Resolution {
    fn from(r: ResolutionRef<'_>) -> Self {
        r.into_owned()
    }
}
