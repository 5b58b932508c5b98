//! What a slot serves: its stable config and, optionally, an active rollout.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::kind;
use crate::strategy::RoundRobinCounter;
use crate::{BUCKETS, EvalContext, ResolveError, Share, SplitStrategy, StickinessKey};

/// A config value with its version. Cloning is cheap (the value is shared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedConfig {
    /// The config version id.
    pub version: u64,
    /// The config itself (model, prompt template, temperature, ...).
    pub value: Arc<Value>,
}

impl VersionedConfig {
    /// A versioned config.
    #[must_use]
    pub fn new(version: u64, value: Value) -> Self {
        Self { version, value: Arc::new(value) }
    }
}

/// Which side of a rollout a request is on.
///
/// Serialized as `"stable"`, `"canary"`, `"shadow"` or `{"arm": "name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The stable config.
    Stable,
    /// The candidate config of a canary rollout.
    Canary,
    /// Stable served, the candidate run in shadow.
    Shadow,
    /// A named arm of an A/B test.
    Arm(Arc<str>),
}

impl Variant {
    /// The OFREP variant name: `stable`, `canary`, `shadow` or the arm's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Stable => "stable",
            Self::Canary => "canary",
            Self::Shadow => "shadow",
            Self::Arm(name) => name,
        }
    }
}

/// One arm of an A/B test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// The arm's name (its OFREP variant); not `stable`, `canary` or `shadow`.
    pub name: Arc<str>,
    /// The arm's weight; the weights of all arms sum to 10,000 basis points.
    pub weight: Share,
    /// The config this arm serves.
    pub config: VersionedConfig,
}

impl Arm {
    /// An arm.
    #[must_use]
    pub fn new(name: &str, weight: Share, config: VersionedConfig) -> Self {
        Self { name: Arc::from(name), weight, config }
    }
}

/// What an admitted request gets.
///
/// Serialized with a `type` tag: `{"type": "canary", "candidate": {...}}`,
/// `{"type": "ab_test", "arms": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RolloutMode {
    /// Admitted requests are served the candidate.
    Canary {
        /// The candidate config.
        candidate: VersionedConfig,
    },
    /// Every request is served stable; admitted ones also carry a shadow directive with the
    /// candidate, for the caller to run it on the side.
    Shadow {
        /// The candidate config.
        candidate: VersionedConfig,
    },
    /// Admitted requests are split between ≥ 2 arms by weight, sticky through
    /// [`arm_bucket`](crate::arm_bucket) (which does not depend on the share, so ramping never
    /// moves a key between arms).
    AbTest {
        /// The arms, in order; their bucket ranges follow this order.
        arms: Vec<Arm>,
    },
}

/// An override: requests whose attribute equals a value get a fixed variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeOverride {
    /// The context attribute compared (e.g. `tenant`).
    pub attribute: String,
    /// The value it must equal (a string, number or boolean; numbers compare as JSON, so `1`
    /// does not equal `1.0`).
    pub equals: Value,
    /// The variant these requests get.
    pub variant: Variant,
}

/// Overrides applied before any strategy: pinned targeting keys first, then attribute matches
/// in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Targeting keys pinned to a variant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targeting_keys: BTreeMap<String, Variant>,
    /// Attribute matches, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeOverride>,
}

impl Overrides {
    /// Whether there are no overrides.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.targeting_keys.is_empty() && self.attributes.is_empty()
    }

    /// The variant an override assigns to `ctx`, if any.
    ///
    /// # Errors
    /// [`ResolveError::InvalidContext`] when a compared attribute is an object or an array.
    pub fn matching(&self, ctx: &EvalContext) -> Result<Option<&Variant>, ResolveError> {
        if !self.targeting_keys.is_empty()
            && let Some(key) = ctx.targeting_key.as_deref()
            && let Some(v) = self.targeting_keys.get(key)
        {
            return Ok(Some(v));
        }
        for rule in &self.attributes {
            if ctx.scalar_attribute(&rule.attribute)? == Some(&rule.equals) {
                return Ok(Some(&rule.variant));
            }
        }
        Ok(None)
    }
}

/// An active rollout on a slot.
///
/// Build with [`Rollout::canary`], [`Rollout::shadow`] or [`Rollout::ab_test`] and the `with_*`
/// methods; all defaults are safe (phase 0, share 0%, consistent hash on the targeting key, salt
/// = rollout id, no overrides). Deserializing validates, and a missing `salt` defaults to `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RolloutSpec")]
pub struct Rollout {
    /// The rollout id, echoed in every resolution for telemetry joins.
    pub id: Arc<str>,
    /// The phase index (0 = first step of the ramp).
    pub phase: u32,
    /// Salt of the bucketing hash: keep it for the whole rollout (so ramps are monotone) and
    /// change it between rollouts (so their canary populations are independent).
    pub salt: Arc<str>,
    /// How requests are admitted.
    pub strategy: SplitStrategy,
    /// The share admitted (geographic rules may override it per region).
    pub share: Share,
    /// The context field sticky strategies bucket on.
    pub stickiness: StickinessKey,
    /// What admitted requests get.
    pub mode: RolloutMode,
    /// Overrides applied before the strategy.
    pub overrides: Overrides,
    #[serde(skip)]
    pub(crate) counter: RoundRobinCounter,
}

#[derive(Deserialize)]
struct RolloutSpec {
    id: Arc<str>,
    #[serde(default)]
    phase: u32,
    #[serde(default)]
    salt: Option<Arc<str>>,
    #[serde(default)]
    strategy: SplitStrategy,
    #[serde(default)]
    share: Share,
    #[serde(default)]
    stickiness: StickinessKey,
    mode: RolloutMode,
    #[serde(default)]
    overrides: Overrides,
}

impl TryFrom<RolloutSpec> for Rollout {
    type Error = ResolveError;
    fn try_from(s: RolloutSpec) -> Result<Self, ResolveError> {
        let r = Self {
            salt: s.salt.unwrap_or_else(|| s.id.clone()),
            id: s.id,
            phase: s.phase,
            strategy: s.strategy,
            share: s.share,
            stickiness: s.stickiness,
            mode: s.mode,
            overrides: s.overrides,
            counter: RoundRobinCounter::default(),
        };
        r.validate()?;
        Ok(r)
    }
}

impl Rollout {
    fn with_mode(id: &str, mode: RolloutMode) -> Self {
        let id: Arc<str> = Arc::from(id);
        Self {
            salt: id.clone(),
            id,
            phase: 0,
            strategy: SplitStrategy::default(),
            share: Share::ZERO,
            stickiness: StickinessKey::default(),
            mode,
            overrides: Overrides::default(),
            counter: RoundRobinCounter::default(),
        }
    }

    /// A canary rollout serving `candidate` to its share.
    #[must_use]
    pub fn canary(id: &str, candidate: VersionedConfig) -> Self {
        Self::with_mode(id, RolloutMode::Canary { candidate })
    }

    /// A shadow rollout: stable served, `candidate` shadowed for its share.
    #[must_use]
    pub fn shadow(id: &str, candidate: VersionedConfig) -> Self {
        Self::with_mode(id, RolloutMode::Shadow { candidate })
    }

    /// An A/B test between `arms` for its share.
    #[must_use]
    pub fn ab_test(id: &str, arms: Vec<Arm>) -> Self {
        Self::with_mode(id, RolloutMode::AbTest { arms })
    }

    /// Sets the share.
    #[must_use]
    pub fn with_share(mut self, share: Share) -> Self {
        self.share = share;
        self
    }

    /// Sets the phase index.
    #[must_use]
    pub fn with_phase(mut self, phase: u32) -> Self {
        self.phase = phase;
        self
    }

    /// Sets the strategy.
    #[must_use]
    pub fn with_strategy(mut self, strategy: SplitStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the salt (default: the rollout id).
    #[must_use]
    pub fn with_salt(mut self, salt: &str) -> Self {
        self.salt = Arc::from(salt);
        self
    }

    /// Sets the stickiness key.
    #[must_use]
    pub fn with_stickiness(mut self, stickiness: StickinessKey) -> Self {
        self.stickiness = stickiness;
        self
    }

    /// Sets the overrides.
    #[must_use]
    pub fn with_overrides(mut self, overrides: Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Pins a targeting key to a variant.
    #[must_use]
    pub fn pin_key(mut self, key: &str, variant: Variant) -> Self {
        self.overrides.targeting_keys.insert(key.to_owned(), variant);
        self
    }

    /// Pins requests whose `attribute` equals `equals` to a variant.
    #[must_use]
    pub fn pin_attribute(mut self, attribute: &str, equals: Value, variant: Variant) -> Self {
        self.overrides.attributes.push(AttributeOverride {
            attribute: attribute.to_owned(),
            equals,
            variant,
        });
        self
    }

    /// Checks the rollout: id and salt set and free of NUL, arms named uniquely with weights
    /// summing to 10,000, overrides naming variants this mode has, geographic rules consistent.
    ///
    /// # Errors
    /// [`ResolveError::Parse`] naming the first problem.
    pub fn validate(&self) -> Result<(), ResolveError> {
        let id = &self.id;
        let bad = |what: String| Err(ResolveError::Parse(format!("rollout `{id}`: {what}")));
        if id.is_empty() {
            return Err(ResolveError::Parse("a rollout needs a non-empty id".into()));
        }
        if self.salt.is_empty() || self.salt.contains('\0') {
            return bad(
                "the salt must be non-empty and free of NUL bytes: pick another salt".into()
            );
        }
        if let SplitStrategy::Geographic(g) = &self.strategy {
            g.validate().or_else(|e| bad(e.to_string()))?;
        }
        if let StickinessKey::Attribute(name) = &self.stickiness
            && name.is_empty()
        {
            return bad("the stickiness attribute needs a name".into());
        }
        if let RolloutMode::AbTest { arms } = &self.mode {
            if arms.len() < 2 {
                return bad(format!("an a/b test needs at least 2 arms, got {}", arms.len()));
            }
            let total: u32 = arms.iter().map(|a| u32::from(a.weight.basis_points())).sum();
            if total != u32::from(BUCKETS) {
                return bad(format!(
                    "arm weights sum to {total} basis points: make them sum to 10000"
                ));
            }
            for (i, arm) in arms.iter().enumerate() {
                if arm.name.is_empty() || matches!(&*arm.name, "stable" | "canary" | "shadow") {
                    return bad(format!(
                        "arm name `{}` is reserved or empty: rename the arm",
                        arm.name
                    ));
                }
                if arms[..i].iter().any(|a| a.name == arm.name) {
                    return bad(format!(
                        "arm `{}` appears twice: give arms unique names",
                        arm.name
                    ));
                }
            }
        }
        let overrides = self.overrides.targeting_keys.values();
        let attribute_rules = self.overrides.attributes.iter();
        for rule in attribute_rules.clone() {
            if matches!(rule.equals, Value::Null | Value::Array(_) | Value::Object(_)) {
                return bad(format!(
                    "override on `{}` compares with {}: use a string, number or boolean",
                    rule.attribute,
                    kind(&rule.equals)
                ));
            }
        }
        for variant in overrides.chain(attribute_rules.map(|r| &r.variant)) {
            let ok = match (&self.mode, variant) {
                (_, Variant::Stable)
                | (RolloutMode::Canary { .. }, Variant::Canary)
                | (RolloutMode::Shadow { .. }, Variant::Shadow) => true,
                (RolloutMode::AbTest { arms }, Variant::Arm(name)) => {
                    arms.iter().any(|a| a.name == *name)
                }
                _ => false,
            };
            if !ok {
                return bad(format!(
                    "an override pins variant `{}`, which this rollout's mode does not serve: pin one of its variants",
                    variant.name()
                ));
            }
        }
        Ok(())
    }
}

/// Everything a slot serves: the stable config and an optional active rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRoute {
    /// The config served when no rollout admits the request.
    pub stable: VersionedConfig,
    /// The active rollout, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

impl SlotRoute {
    /// A route serving only `stable`.
    #[must_use]
    pub fn stable(stable: VersionedConfig) -> Self {
        Self { stable, rollout: None }
    }

    /// Sets the active rollout.
    #[must_use]
    pub fn with_rollout(mut self, rollout: Rollout) -> Self {
        self.rollout = Some(rollout);
        self
    }

    /// Checks the route for `slot` (slot named and free of NUL, rollout valid).
    ///
    /// # Errors
    /// [`ResolveError::Parse`] naming the first problem.
    pub fn validate(&self, slot: &str) -> Result<(), ResolveError> {
        if slot.is_empty() || slot.contains('\0') {
            return Err(ResolveError::Parse(format!(
                "slot name {slot:?} must be non-empty and free of NUL bytes: rename the slot"
            )));
        }
        match &self.rollout {
            Some(r) => r.validate().map_err(|e| ResolveError::Parse(format!("slot `{slot}`: {e}"))),
            None => Ok(()),
        }
    }
}
