//! Sticky traffic splitting for LLM config rollouts.
//!
//! `actuator-canary` answers "which config for this request?" on the hot path of an LLM
//! application, and works alone as a bucketing library:
//!
//! * [`bucket`]: a frozen hash of `(slot, salt, key)` into 10,000 buckets (0.01% granularity).
//!   A key is inside a [`Share`] iff its bucket is below it, so ramps are monotone.
//! * [`SplitStrategy`]: weighted random, consistent hash, round robin, geographic; with
//!   [`Overrides`] on top, and canary, shadow or A/B ([`RolloutMode`]).
//! * [`RoutingTable`] and [`Router`]: an immutable snapshot of every slot's [`SlotRoute`] behind
//!   an `ArcSwap`; resolving takes no lock and does no IO. [`RoutingTable::resolve_ref`] (on a
//!   [`Router::load`] guard or a per-thread [`RouterReader`]) returns a [`ResolutionRef`]
//!   borrowed from the table, with no reference-count traffic; [`RoutingTable::resolve`] makes
//!   it an owned [`Resolution`].
//! * [`ResolveError`]: one error enum whose variants map 1:1 to OFREP error codes.
//!
//! ```
//! use actuator_canary::{EvalContext, Rollout, Router, Share, SlotRoute, VersionedConfig};
//! use serde_json::json;
//!
//! let router = Router::new();
//! let stable = VersionedConfig::new(1, json!({"model": "big"}));
//! let candidate = VersionedConfig::new(2, json!({"model": "small"}));
//! let rollout = Rollout::canary("r-42", candidate).with_share(Share::from_percent(5.0)?);
//! router.update_slot("llm.chat", SlotRoute::stable(stable).with_rollout(rollout))?;
//!
//! let r = router.resolve("llm.chat", &EvalContext::with_key("user-7"))?;
//! assert!(matches!(r.variant.name(), "stable" | "canary"));
//! assert_eq!(r.reason.ofrep(), "SPLIT");
//! # Ok::<(), actuator_canary::ResolveError>(())
//! ```

mod bucket;
mod context;
mod error;
mod resolution;
mod route;
mod strategy;
mod table;

pub use bucket::{ARM_SEED, BUCKET_SEED, BUCKETS, Share, UNIT_SEED, arm_bucket, bucket, unit_hash};
pub use context::{EvalContext, StickinessKey, TARGETING_KEY, kind as json_kind};
pub use error::ResolveError;
pub use resolution::{Reason, Resolution, ResolutionRef, ShadowDirective};
pub use route::{
    Arm, AttributeOverride, Overrides, Rollout, RolloutMode, SlotRoute, Variant, VersionedConfig,
};
pub use strategy::{GeoRules, SplitStrategy};
pub use table::{Router, RouterReader, RoutingTable, SlotId, TableGuard};
