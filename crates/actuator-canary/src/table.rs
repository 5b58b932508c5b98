//! The immutable routing table, its lock-free resolution, and the atomically swapped router.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Cache, Guard};
use hashbrown::HashTable;
use serde_json::Value;
use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_64_with_seed};

use crate::bucket::{JOIN_BYTES, StickyInput, StickyPrefix};
use crate::resolution::ResolutionRef;
use crate::strategy::{GeoRule, random_draw, round_robin_admits, round_robin_arm_draw};
use crate::{
    EvalContext, Reason, Resolution, ResolveError, Rollout, RolloutMode, SlotRoute, SplitStrategy,
    Variant, VersionedConfig, context::kind,
};

/// Seed of the slot-name hash of the table's index (ASCII `slotname`). Process-local: it only
/// places slots in the index and is never persisted. Slot names are written by operators, not
/// by requests, so they cannot be chosen to collide.
const SLOT_SEED: u64 = 0x736c_6f74_6e61_6d65;

fn slot_hash(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), SLOT_SEED)
}

/// A slot name hashed once, for callers that resolve the same slot again and again
/// ([`RoutingTable::resolve_id`] skips hashing the name).
///
/// ```
/// use actuator_canary::{EvalContext, Router, SlotId, SlotRoute, VersionedConfig};
/// let router = Router::new();
/// router.update_slot("llm.chat", SlotRoute::stable(VersionedConfig::new(1, serde_json::json!({}))))?;
/// let chat = SlotId::new("llm.chat");
/// let table = router.load();
/// assert_eq!(table.resolve_id(&chat, &EvalContext::new())?.config.version, 1);
/// # Ok::<(), actuator_canary::ResolveError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotId {
    name: Arc<str>,
    hash: u64,
}

impl SlotId {
    /// Hashes `name` once.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self { name: Arc::from(name), hash: slot_hash(name) }
    }

    /// The slot name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What resolving a slot reads, prepared once when the route is inserted.
#[derive(Debug)]
struct Compiled {
    route: Arc<SlotRoute>,
    /// `slot ‖ 0 ‖ salt ‖ 0` of the rollout (empty without one): a request appends its key.
    sticky_prefix: StickyPrefix,
    /// `Variant::Arm` of each A/B arm, in order (empty in other modes), so that a resolution
    /// borrows its variant instead of building one.
    arms: Box<[Variant]>,
}

impl Compiled {
    fn new(slot: &str, route: SlotRoute) -> Self {
        let (sticky_prefix, arms) = match &route.rollout {
            None => (StickyPrefix::default(), Box::default()),
            Some(r) => {
                let arms = match &r.mode {
                    RolloutMode::AbTest { arms } => {
                        arms.iter().map(|a| Variant::Arm(a.name.clone())).collect()
                    }
                    _ => Box::default(),
                };
                (StickyPrefix::new(slot, &r.salt), arms)
            }
        };
        Self { route: Arc::new(route), sticky_prefix, arms }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// [`slot_hash`] of `slot`.
    hash: u64,
    slot: Arc<str>,
    /// xxh3 of the route's JSON: equal routes give equal fingerprints in every process.
    fingerprint: u64,
    compiled: Arc<Compiled>,
}

/// An immutable snapshot of every slot's route.
///
/// Build one with [`RoutingTable::insert`] (which validates), then hand it to
/// [`Router::publish`]; or resolve against it directly. Slots are indexed by a hash of their
/// name computed once per lookup ([`SlotId`] carries it precomputed). Cloning is cheap-ish (one
/// `Arc` per slot), which is what copy-on-write updates do.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    revision: u64,
    slots: HashTable<Entry>,
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

static STABLE: Variant = Variant::Stable;
static CANARY: Variant = Variant::Canary;
static SHADOW: Variant = Variant::Shadow;

impl RoutingTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&self, hash: u64, slot: &str) -> Option<&Entry> {
        self.slots.find(hash, |e| e.hash == hash && *e.slot == *slot)
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
        let hash = slot_hash(slot);
        let entry = Entry {
            hash,
            slot: Arc::from(slot),
            fingerprint,
            compiled: Arc::new(Compiled::new(slot, route)),
        };
        self.slots.insert_unique(hash, entry, |e| e.hash);
        Ok(old)
    }

    /// Removes the route of `slot`, returning it.
    pub fn remove(&mut self, slot: &str) -> Option<Arc<SlotRoute>> {
        let hash = slot_hash(slot);
        let found = self.slots.find_entry(hash, |e| e.hash == hash && *e.slot == *slot).ok()?;
        let (old, _) = found.remove();
        self.content = self.content.wrapping_sub(entry_hash(slot, old.fingerprint));
        Some(old.compiled.route.clone())
    }

    /// The route of `slot`.
    #[must_use]
    pub fn get(&self, slot: &str) -> Option<&Arc<SlotRoute>> {
        self.entry(slot_hash(slot), slot).map(|e| &e.compiled.route)
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
        self.slots.iter().map(|e| &e.slot)
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
            let fp = self.entry(slot_hash(slot), slot).map_or(ABSENT, |e| e.fingerprint);
            h.update(slot.as_bytes());
            h.update(&[0]);
            h.update(&fp.to_le_bytes());
        }
        h.digest()
    }

    /// Which config `ctx` gets on `slot`, borrowed from this table. Takes no lock, does no
    /// IO, touches no reference count; allocates nothing on the success path except for a
    /// stickiness attribute that is a number.
    ///
    /// # Errors
    /// [`ResolveError::FlagNotFound`] for an unknown slot,
    /// [`ResolveError::TargetingKeyMissing`] when a sticky strategy needs a key the context does
    /// not have, [`ResolveError::InvalidContext`] when an attribute used for targeting is an
    /// object or array (or a non-string region).
    #[inline]
    pub fn resolve_ref(
        &self,
        slot: &str,
        ctx: &EvalContext,
    ) -> Result<ResolutionRef<'_>, ResolveError> {
        self.resolve_hashed(slot_hash(slot), slot, ctx)
    }

    /// [`RoutingTable::resolve_ref`] with the slot name hashed beforehand.
    ///
    /// # Errors
    /// As [`RoutingTable::resolve_ref`].
    #[inline]
    pub fn resolve_id(
        &self,
        slot: &SlotId,
        ctx: &EvalContext,
    ) -> Result<ResolutionRef<'_>, ResolveError> {
        self.resolve_hashed(slot.hash, &slot.name, ctx)
    }

    fn resolve_hashed(
        &self,
        hash: u64,
        slot: &str,
        ctx: &EvalContext,
    ) -> Result<ResolutionRef<'_>, ResolveError> {
        let entry = self
            .entry(hash, slot)
            .ok_or_else(|| ResolveError::FlagNotFound { slot: slot.to_owned() })?;
        resolve_route(slot, &entry.compiled, ctx, self.revision)
    }

    /// Which config `ctx` gets on `slot`, as an owned [`Resolution`] (the config value and the
    /// rollout id are shared through `Arc`): [`RoutingTable::resolve_ref`] then
    /// [`ResolutionRef::into_owned`].
    ///
    /// # Errors
    /// As [`RoutingTable::resolve_ref`].
    pub fn resolve(&self, slot: &str, ctx: &EvalContext) -> Result<Resolution, ResolveError> {
        self.resolve_ref(slot, ctx).map(ResolutionRef::into_owned)
    }

    /// Resolves several slots against this one snapshot, in order.
    pub fn resolve_batch<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a str>,
        ctx: &EvalContext,
    ) -> Vec<Result<Resolution, ResolveError>> {
        slots.into_iter().map(|s| self.resolve(s, ctx)).collect()
    }

    /// Resolves every slot (OFREP bulk evaluation), sorted by slot name, borrowed from this
    /// table.
    pub fn resolve_all_ref(
        &self,
        ctx: &EvalContext,
    ) -> Vec<(&str, Result<ResolutionRef<'_>, ResolveError>)> {
        let mut entries: Vec<&Entry> = self.slots.iter().collect();
        entries.sort_unstable_by(|a, b| a.slot.cmp(&b.slot));
        entries
            .into_iter()
            .map(|e| (&*e.slot, resolve_route(&e.slot, &e.compiled, ctx, self.revision)))
            .collect()
    }

    /// Resolves every slot (OFREP bulk evaluation), sorted by slot name.
    pub fn resolve_all(
        &self,
        ctx: &EvalContext,
    ) -> Vec<(Arc<str>, Result<Resolution, ResolveError>)> {
        let mut entries: Vec<&Entry> = self.slots.iter().collect();
        entries.sort_unstable_by(|a, b| a.slot.cmp(&b.slot));
        entries
            .into_iter()
            .map(|e| {
                let r = resolve_route(&e.slot, &e.compiled, ctx, self.revision);
                (e.slot.clone(), r.map(ResolutionRef::into_owned))
            })
            .collect()
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
    Sticky(StickyInput<'k>),
    Random,
    RoundRobin(u64),
}

fn resolve_route<'t>(
    slot: &str,
    compiled: &'t Compiled,
    ctx: &EvalContext,
    revision: u64,
) -> Result<ResolutionRef<'t>, ResolveError> {
    let route: &'t SlotRoute = &compiled.route;
    let Some(rollout) = &route.rollout else {
        return Ok(ResolutionRef {
            variant: &STABLE,
            config: &route.stable,
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
    let done = |(variant, config, shadow): Served<'t>, bucket, unit, in_experiment, reason| {
        Ok(ResolutionRef {
            variant,
            config,
            rollout_id: Some(&rollout.id),
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
        let served = serve(slot, compiled, rollout, Pick::Pinned(v), None)?;
        return done(served, None, None, false, Reason::Override);
    }

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
                    let served = (&STABLE, &route.stable, None);
                    return done(served, None, None, false, Reason::RegionExcluded);
                }
                GeoRule::Listed(s) => (s, Reason::Split),
                GeoRule::Default(s) => (s, Reason::RegionDefault),
            }
        }
        _ => (rollout.share, Reason::Split),
    };
    // A region at its own share is split, but not at the phase's share: outside the comparison.
    let at_phase_share = share == rollout.share;
    // Outside a partial-traffic A/B test a request is not enrolled: it is served stable but is
    // not the A/B control arm.
    let ab = matches!(rollout.mode, RolloutMode::AbTest { .. });

    let (served, bucket_seen, unit, admitted) = match &rollout.strategy {
        SplitStrategy::ConsistentHash | SplitStrategy::Geographic(_) => {
            let sticky_key = ctx.stickiness_value(&rollout.stickiness)?.ok_or_else(|| {
                ResolveError::TargetingKeyMissing {
                    slot: slot.to_owned(),
                    attribute: rollout.stickiness.field_name().to_owned(),
                }
            })?;
            // One joined input for every hash of this request.
            let mut buf = [0; JOIN_BYTES];
            let input = compiled.sticky_prefix.join(sticky_key.as_bytes(), &mut buf);
            let b = input.bucket();
            let admitted = share.contains(b);
            let pick = if admitted { Pick::Admitted } else { Pick::Stable };
            let served =
                serve(slot, compiled, rollout, pick, Some((ArmDraw::Sticky(input), share)))?;
            (served, Some(b), Some(input.unit()), admitted)
        }
        SplitStrategy::WeightedRandom => {
            let admitted = share.contains(random_draw());
            let pick = if admitted { Pick::Admitted } else { Pick::Stable };
            (
                serve(slot, compiled, rollout, pick, Some((ArmDraw::Random, share)))?,
                None,
                None,
                admitted,
            )
        }
        SplitStrategy::RoundRobin => {
            let n = rollout.counter.next();
            let admitted = round_robin_admits(n, share);
            let pick = if admitted { Pick::Admitted } else { Pick::Stable };
            let served =
                serve(slot, compiled, rollout, pick, Some((ArmDraw::RoundRobin(n), share)))?;
            (served, None, None, admitted)
        }
    };
    let enrolled = admitted || !ab;
    done(served, bucket_seen, unit, at_phase_share && enrolled, reason)
}

/// The variant, the config served and the shadow candidate, all borrowed from the table.
type Served<'t> = (&'t Variant, &'t VersionedConfig, Option<&'t VersionedConfig>);

fn serve<'t>(
    slot: &str,
    compiled: &'t Compiled,
    rollout: &'t Rollout,
    pick: Pick<'t>,
    arm_draw: Option<(ArmDraw<'_>, crate::Share)>,
) -> Result<Served<'t>, ResolveError> {
    let route: &'t SlotRoute = &compiled.route;
    let mismatch = |v: &Variant| {
        ResolveError::General(format!(
            "slot `{slot}`: rollout `{}` cannot serve variant `{}`: republish a valid route",
            rollout.id,
            v.name()
        ))
    };
    Ok(match (pick, &rollout.mode) {
        (Pick::Stable | Pick::Pinned(Variant::Stable), _) => (&STABLE, &route.stable, None),
        (Pick::Admitted | Pick::Pinned(Variant::Canary), RolloutMode::Canary { candidate }) => {
            (&CANARY, candidate, None)
        }
        (Pick::Admitted | Pick::Pinned(Variant::Shadow), RolloutMode::Shadow { candidate }) => {
            (&SHADOW, &route.stable, Some(candidate))
        }
        (Pick::Pinned(v @ Variant::Arm(name)), RolloutMode::AbTest { arms }) => {
            let arm = arms.iter().find(|a| a.name == *name).ok_or_else(|| mismatch(v))?;
            (v, &arm.config, None)
        }
        (Pick::Admitted, RolloutMode::AbTest { arms }) => {
            let draw = match arm_draw {
                Some((ArmDraw::Sticky(input), _)) => input.arm_bucket(),
                Some((ArmDraw::RoundRobin(n), share)) => round_robin_arm_draw(n, share),
                Some((ArmDraw::Random, _)) | None => random_draw(),
            };
            let mut upper = 0u32;
            let (i, arm) = arms
                .iter()
                .enumerate()
                .find(|(_, a)| {
                    upper += u32::from(a.weight.basis_points());
                    u32::from(draw) < upper
                })
                .ok_or_else(|| {
                    ResolveError::General(format!(
                        "slot `{slot}`: arm weights of rollout `{}` do not cover 10000 basis points: republish a valid route",
                        rollout.id
                    ))
                })?;
            let variant = compiled.arms.get(i).ok_or_else(|| {
                ResolveError::General(format!(
                    "slot `{slot}`: rollout `{}` has no prepared arm {i}: republish the route",
                    rollout.id
                ))
            })?;
            (variant, &arm.config, None)
        }
        (Pick::Pinned(v), _) => return Err(mismatch(v)),
    })
}

/// A snapshot of the [`Router`]'s table, held without touching its reference count (an
/// `arc-swap` guard). Dereferences to the [`RoutingTable`]; resolutions borrowed from it
/// ([`RoutingTable::resolve_ref`]) live as long as the guard.
///
/// Meant to be short-lived (one request): each thread has a few fast slots for guards, and
/// further guards take a slower path. Hold an `Arc` from [`Router::snapshot`] instead across
/// long waits.
pub struct TableGuard(Guard<Arc<RoutingTable>>);

impl Deref for TableGuard {
    type Target = RoutingTable;

    fn deref(&self) -> &RoutingTable {
        &self.0
    }
}

/// A per-thread reader of a [`Router`]: it keeps the last table it saw and checks, with one
/// atomic load, that it is still the current one, so a resolve touches no shared counter and
/// no guard slot at all. The fastest path for an application thread that resolves in a loop.
///
/// It holds a reference to the table it last saw, so an old table is freed only when the
/// reader next loads (or is dropped); keep one per thread, not one per request.
///
/// ```
/// use actuator_canary::{EvalContext, Router, SlotRoute, VersionedConfig};
/// let router = Router::new();
/// router.update_slot("llm.chat", SlotRoute::stable(VersionedConfig::new(1, serde_json::json!({}))))?;
/// let mut reader = router.reader();
/// assert_eq!(reader.load().resolve_ref("llm.chat", &EvalContext::new())?.config.version, 1);
/// router.update_slot("llm.chat", SlotRoute::stable(VersionedConfig::new(2, serde_json::json!({}))))?;
/// assert_eq!(reader.load().resolve_ref("llm.chat", &EvalContext::new())?.config.version, 2);
/// # Ok::<(), actuator_canary::ResolveError>(())
/// ```
pub struct RouterReader<'r>(Cache<&'r ArcSwap<RoutingTable>, Arc<RoutingTable>>);

impl RouterReader<'_> {
    /// The current table (reloaded only when a writer replaced it since the last call).
    #[inline]
    pub fn load(&mut self) -> &RoutingTable {
        self.0.load()
    }
}

impl fmt::Debug for RouterReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterReader").finish_non_exhaustive()
    }
}

impl fmt::Debug for TableGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableGuard")
            .field("revision", &self.0.revision)
            .field("slots", &self.0.slots.len())
            .finish_non_exhaustive()
    }
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

    /// The current snapshot as an `Arc` (one reference-count increment); resolve several
    /// things against it for a consistent view. [`Router::load`] is cheaper for one request.
    #[must_use]
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// The current snapshot, guarded without a reference-count increment: the fast path for
    /// [`RoutingTable::resolve_ref`] (`router.load().resolve_ref(slot, &ctx)`).
    #[must_use]
    #[inline]
    pub fn load(&self) -> TableGuard {
        TableGuard(self.current.load())
    }

    /// A reader that caches the current table for one thread (see [`RouterReader`]).
    #[must_use]
    pub fn reader(&self) -> RouterReader<'_> {
        RouterReader(Cache::new(&self.current))
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
