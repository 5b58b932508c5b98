//! The immutable routing table, its lock-free resolution, and the atomically swapped router.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use serde_json::Value;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::strategy::{GeoRule, random_draw, round_robin_admits, round_robin_arm_draw};
use crate::{
    EvalContext, Reason, Resolution, ResolveError, Rollout, RolloutMode, ShadowDirective,
    SlotRoute, SplitStrategy, Variant, VersionedConfig, arm_bucket, bucket, context::kind,
    unit_hash,
};

#[derive(Debug, Clone)]
struct Entry {
    route: Arc<SlotRoute>,
    /// xxh3 of the route's JSON: equal routes give equal fingerprints in every process.
    fingerprint: u64,
}

/// An immutable snapshot of every slot's route.
///
/// Build one with [`RoutingTable::insert`] (which validates), then hand it to
/// [`Router::publish`]; or resolve against it directly. Cloning is cheap-ish (one `Arc` per slot),
/// which is what copy-on-write updates do.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    revision: u64,
    slots: HashMap<Arc<str>, Entry>,
    /// Order-independent sum of the slots' content hashes.
    content: u64,
}

/// Marker hashed for a slot absent from the table in [`RoutingTable::etag_for`].
const ABSENT: u64 = 0x6162_7365_6e74_0000;

fn entry_hash(slot: &str, fingerprint: u64) -> u64 {
    let mut h = Xxh3::new();
    h.update(slot.as_bytes());
    h.update(&[0]);
    h.update(&fingerprint.to_le_bytes());
    h.digest()
}

impl RoutingTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the route of `slot`, returning the previous one.
    ///
    /// # Errors
    /// [`ResolveError::Parse`] when the route is invalid (see [`SlotRoute::validate`]); the
    /// table is then unchanged.
    pub fn insert(
        &mut self,
        slot: &str,
        route: SlotRoute,
    ) -> Result<Option<Arc<SlotRoute>>, ResolveError> {
        route.validate(slot)?;
        let json = serde_json::to_vec(&route).map_err(|e| {
            ResolveError::General(format!("slot `{slot}`: cannot serialize the route ({e})"))
        })?;
        let fingerprint = xxh3_64(&json);
        let old = self.remove(slot);
        self.content = self.content.wrapping_add(entry_hash(slot, fingerprint));
        self.slots.insert(Arc::from(slot), Entry { route: Arc::new(route), fingerprint });
        Ok(old)
    }

    /// Removes the route of `slot`, returning it.
    pub fn remove(&mut self, slot: &str) -> Option<Arc<SlotRoute>> {
        let old = self.slots.remove(slot)?;
        self.content = self.content.wrapping_sub(entry_hash(slot, old.fingerprint));
        Some(old.route)
    }

    /// The route of `slot`.
    #[must_use]
    pub fn get(&self, slot: &str) -> Option<&Arc<SlotRoute>> {
        self.slots.get(slot).map(|e| &e.route)
    }

    /// Number of slots.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slot.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot names, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = &Arc<str>> {
        self.slots.keys()
    }

    /// The revision [`Router`] gave this table when it was published (0 before).
    #[must_use]
    pub const fn revision(&self) -> u64 {
        self.revision
    }

    /// A content hash of the whole table, for an HTTP `ETag`.
    ///
    /// Equal contents give equal etags in every process and replica (it does not depend on the
    /// revision), so caches stay valid across restarts. Format it as you like, e.g.
    /// `format!("\"{:016x}\"", etag)`. O(1).
    #[must_use]
    pub fn etag(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(&self.content.to_le_bytes());
        h.update(&(self.slots.len() as u64).to_le_bytes());
        h.digest()
    }

    /// A content hash of the given slots (in the given order), for an HTTP `ETag` of a partial
    /// answer. Absent slots count too, so adding one changes it. O(number of slots), no
    /// allocation.
    #[must_use]
    pub fn etag_for<'a>(&self, slots: impl IntoIterator<Item = &'a str>) -> u64 {
        let mut h = Xxh3::new();
        for slot in slots {
            let fp = self.slots.get(slot).map_or(ABSENT, |e| e.fingerprint);
            h.update(slot.as_bytes());
            h.update(&[0]);
            h.update(&fp.to_le_bytes());
        }
        h.digest()
    }

    /// Which config `ctx` gets on `slot`. Takes no lock, does no IO; allocates nothing on the
    /// success path except for a stickiness attribute that is a number.
    ///
    /// # Errors
    /// [`ResolveError::FlagNotFound`] for an unknown slot,
    /// [`ResolveError::TargetingKeyMissing`] when a sticky strategy needs a key the context does
    /// not have, [`ResolveError::InvalidContext`] when an attribute used for targeting is an
    /// object or array (or a non-string region).
    pub fn resolve(&self, slot: &str, ctx: &EvalContext) -> Result<Resolution, ResolveError> {
        let entry = self
            .slots
            .get(slot)
            .ok_or_else(|| ResolveError::FlagNotFound { slot: slot.to_owned() })?;
        resolve_route(slot, &entry.route, ctx, self.revision)
    }

    /// Resolves several slots against this one snapshot, in order.
    pub fn resolve_batch<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a str>,
        ctx: &EvalContext,
    ) -> Vec<Result<Resolution, ResolveError>> {
        slots.into_iter().map(|s| self.resolve(s, ctx)).collect()
    }

    /// Resolves every slot (OFREP bulk evaluation), sorted by slot name.
    pub fn resolve_all(
        &self,
        ctx: &EvalContext,
    ) -> Vec<(Arc<str>, Result<Resolution, ResolveError>)> {
        let mut names: Vec<&Arc<str>> = self.slots.keys().collect();
        names.sort_unstable();
        names.into_iter().map(|s| (s.clone(), self.resolve(s, ctx))).collect()
    }
}

/// What the strategy decided before the mode is applied.
enum Pick<'r> {
    Stable,
    Admitted,
    Pinned(&'r Variant),
}

/// How an admitted A/B request draws its arm.
enum ArmDraw<'k> {
    Sticky(&'k str),
    Random,
    RoundRobin(u64),
}

fn resolve_route(
    slot: &str,
    route: &SlotRoute,
    ctx: &EvalContext,
    revision: u64,
) -> Result<Resolution, ResolveError> {
    let Some(rollout) = &route.rollout else {
        return Ok(Resolution {
            variant: Variant::Stable,
            config: route.stable.clone(),
            rollout_id: None,
            phase: None,
            bucket: None,
            unit: None,
            in_experiment: false,
            reason: Reason::NoRollout,
            shadow: None,
            revision,
        });
    };
    let done = |variant, config, bucket, unit, in_experiment, reason, shadow| {
        Ok(Resolution {
            variant,
            config,
            rollout_id: Some(rollout.id.clone()),
            phase: Some(rollout.phase),
            bucket,
            unit,
            in_experiment,
            reason,
            shadow,
            revision,
        })
    };

    // Pinned traffic (overrides, preview pins) is outside the phase share.
    if let Some(v) = rollout.overrides.matching(ctx)? {
        let (variant, config, shadow) = serve(slot, route, rollout, Pick::Pinned(v), None)?;
        return done(variant, config, None, None, false, Reason::Override, shadow);
    }

    let sticky_key;
    let (share, reason) = match &rollout.strategy {
        SplitStrategy::Geographic(geo) => {
            let region = match ctx.scalar_attribute(&geo.attribute)? {
                None => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return Err(ResolveError::invalid_context(
                        &geo.attribute,
                        format!("is {}: send the region as a string", kind(other)),
                    ));
                }
            };
            match geo.rule(region, rollout.share) {
                GeoRule::Excluded => {
                    return done(
                        Variant::Stable,
                        route.stable.clone(),
                        None,
                        None,
                        false,
                        Reason::RegionExcluded,
                        None,
                    );
                }
                GeoRule::Listed(s) => (s, Reason::Split),
                GeoRule::Default(s) => (s, Reason::RegionDefault),
            }
        }
        _ => (rollout.share, Reason::Split),
    };
    // A region at its own share is split, but not at the phase's share: outside the comparison.
    let at_phase_share = share == rollout.share;

    let (admitted, bucket_seen, unit, arm_draw) = match &rollout.strategy {
        SplitStrategy::ConsistentHash | SplitStrategy::Geographic(_) => {
            sticky_key = ctx.stickiness_value(&rollout.stickiness)?.ok_or_else(|| {
                ResolveError::TargetingKeyMissing {
                    slot: slot.to_owned(),
                    attribute: rollout.stickiness.field_name().to_owned(),
                }
            })?;
            let b = bucket(slot, &rollout.salt, &sticky_key);
            let u = unit_hash(slot, &rollout.salt, &sticky_key);
            (share.contains(b), Some(b), Some(u), ArmDraw::Sticky(&sticky_key))
        }
        SplitStrategy::WeightedRandom => {
            (share.contains(random_draw()), None, None, ArmDraw::Random)
        }
        SplitStrategy::RoundRobin => {
            let n = rollout.counter.next();
            (round_robin_admits(n, share), None, None, ArmDraw::RoundRobin(n))
        }
    };
    // Outside a partial-traffic A/B test a request is not enrolled: it is served stable but is
    // not the A/B control arm.
    let enrolled = admitted || !matches!(rollout.mode, RolloutMode::AbTest { .. });
    let pick = if admitted { Pick::Admitted } else { Pick::Stable };
    let (variant, config, shadow) = serve(slot, route, rollout, pick, Some((arm_draw, share)))?;
    done(variant, config, bucket_seen, unit, at_phase_share && enrolled, reason, shadow)
}

type Served = (Variant, VersionedConfig, Option<ShadowDirective>);

fn serve(
    slot: &str,
    route: &SlotRoute,
    rollout: &Rollout,
    pick: Pick<'_>,
    arm_draw: Option<(ArmDraw<'_>, crate::Share)>,
) -> Result<Served, ResolveError> {
    let stable = || (Variant::Stable, route.stable.clone(), None);
    let mismatch = |v: &Variant| {
        ResolveError::General(format!(
            "slot `{slot}`: rollout `{}` cannot serve variant `{}`: republish a valid route",
            rollout.id,
            v.name()
        ))
    };
    Ok(match (pick, &rollout.mode) {
        (Pick::Stable | Pick::Pinned(Variant::Stable), _) => stable(),
        (Pick::Admitted | Pick::Pinned(Variant::Canary), RolloutMode::Canary { candidate }) => {
            (Variant::Canary, candidate.clone(), None)
        }
        (Pick::Admitted | Pick::Pinned(Variant::Shadow), RolloutMode::Shadow { candidate }) => (
            Variant::Shadow,
            route.stable.clone(),
            Some(ShadowDirective { candidate: candidate.clone() }),
        ),
        (Pick::Pinned(v @ Variant::Arm(name)), RolloutMode::AbTest { arms }) => {
            let arm = arms.iter().find(|a| a.name == *name).ok_or_else(|| mismatch(v))?;
            (Variant::Arm(arm.name.clone()), arm.config.clone(), None)
        }
        (Pick::Admitted, RolloutMode::AbTest { arms }) => {
            let draw = match arm_draw {
                Some((ArmDraw::Sticky(key), _)) => arm_bucket(slot, &rollout.salt, key),
                Some((ArmDraw::RoundRobin(n), share)) => round_robin_arm_draw(n, share),
                Some((ArmDraw::Random, _)) | None => random_draw(),
            };
            let mut upper = 0u32;
            let arm = arms
                .iter()
                .find(|a| {
                    upper += u32::from(a.weight.basis_points());
                    u32::from(draw) < upper
                })
                .ok_or_else(|| {
                    ResolveError::General(format!(
                        "slot `{slot}`: arm weights of rollout `{}` do not cover 10000 basis points: republish a valid route",
                        rollout.id
                    ))
                })?;
            (Variant::Arm(arm.name.clone()), arm.config.clone(), None)
        }
        (Pick::Pinned(v), _) => return Err(mismatch(v)),
    })
}

/// Holds the current [`RoutingTable`] behind an [`ArcSwap`]: readers never lock, writers
/// replace the whole snapshot atomically (copy-on-write) and are serialized among themselves.
pub struct Router {
    current: ArcSwap<RoutingTable>,
    writer: Mutex<()>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.current.load();
        f.debug_struct("Router")
            .field("revision", &t.revision)
            .field("slots", &t.slots.len())
            .finish_non_exhaustive()
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with an empty table at revision 0.
    #[must_use]
    pub fn new() -> Self {
        Self { current: ArcSwap::from_pointee(RoutingTable::new()), writer: Mutex::new(()) }
    }

    /// The current snapshot; resolve several things against it for a consistent view.
    #[must_use]
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// The current revision.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.current.load().revision
    }

    fn write(
        &self,
        change: impl FnOnce(&RoutingTable) -> Result<RoutingTable, ResolveError>,
    ) -> Result<u64, ResolveError> {
        let _guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = self.current.load();
        let mut next = change(&cur)?;
        next.revision = cur.revision + 1;
        let revision = next.revision;
        self.current.store(Arc::new(next));
        Ok(revision)
    }

    /// Replaces the whole table atomically; returns the new revision.
    ///
    /// # Errors
    /// Never fails today (tables are validated as they are built); the `Result` leaves room for
    /// cross-slot checks.
    pub fn publish(&self, table: RoutingTable) -> Result<u64, ResolveError> {
        self.write(|_| Ok(table))
    }

    /// Adds or replaces one slot's route (copy-on-write); returns the new revision.
    ///
    /// # Errors
    /// [`ResolveError::Parse`] when the route is invalid; nothing changes.
    pub fn update_slot(&self, slot: &str, route: SlotRoute) -> Result<u64, ResolveError> {
        route.validate(slot)?;
        self.write(|cur| {
            let mut next = cur.clone();
            next.insert(slot, route)?;
            Ok(next)
        })
    }

    /// Removes one slot (copy-on-write); returns the new revision.
    ///
    /// # Errors
    /// [`ResolveError::FlagNotFound`] when the slot is not in the table; nothing changes.
    pub fn remove_slot(&self, slot: &str) -> Result<u64, ResolveError> {
        self.write(|cur| {
            let mut next = cur.clone();
            match next.remove(slot) {
                Some(_) => Ok(next),
                None => Err(ResolveError::FlagNotFound { slot: slot.to_owned() }),
            }
        })
    }

    /// Which config `ctx` gets on `slot`, from the current snapshot. Lock-free; see
    /// [`RoutingTable::resolve`].
    ///
    /// # Errors
    /// As [`RoutingTable::resolve`].
    pub fn resolve(&self, slot: &str, ctx: &EvalContext) -> Result<Resolution, ResolveError> {
        self.current.load().resolve(slot, ctx)
    }

    /// Resolves several slots against one snapshot, in order.
    pub fn resolve_batch<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a str>,
        ctx: &EvalContext,
    ) -> Vec<Result<Resolution, ResolveError>> {
        self.current.load().resolve_batch(slots, ctx)
    }

    /// Resolves every slot against one snapshot, sorted by slot name.
    pub fn resolve_all(
        &self,
        ctx: &EvalContext,
    ) -> Vec<(Arc<str>, Result<Resolution, ResolveError>)> {
        self.current.load().resolve_all(ctx)
    }
}
