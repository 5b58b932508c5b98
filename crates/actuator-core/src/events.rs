//! Which events a notifier is told about: the moments operators name in a notifier's
//! `events = [...]`, and the event kinds (audit actions) each moment covers.
//!
//! | name | event kinds |
//! | --- | --- |
//! | `config_applied` | `config.apply`, `config.revert`, `snapshot.restore` |
//! | `rollout_started` | `rollout.start` |
//! | `phase_promoted` | `rollout.promote`, `rollout.skip` |
//! | `paused` | `rollout.pause`, `rollout.gate_held` (a promotion gate refused or timed out; told on its first refusal) |
//! | `awaiting_approval` | `rollout.awaiting_promotion` |
//! | `inconclusive` | `rollout.inconclusive` |
//! | `rolled_back` | `rollout.rollback` (routing flipped back), `rollout.rolled_back` (rollback finished, with the stable's validation), `rollout.rollback_timeout` |
//! | `completed` | `rollout.complete` |
//! | `failed` | `rollout.fail` |
//! | `aborted` | `rollout.abort` |
//!
//! `all` selects every event, including kinds no name covers (`slot.create`,
//! `snapshot.create`, `config.stage`, `audit.acknowledge`).

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::plugin::PluginError;

/// A moment worth telling, as operators name it in `events = [...]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// A config version was made active outside a rollout (apply, revert, restore).
    ConfigApplied,
    /// A rollout started.
    RolloutStarted,
    /// A rollout moved to its next phase (by the analysis, a person, or a skip).
    PhasePromoted,
    /// A rollout was paused (by a person, or by the engine for a person to look).
    Paused,
    /// A rollout can be promoted and waits for a person (`auto_promote` off).
    AwaitingApproval,
    /// The analysis could not decide a phase within its budget.
    Inconclusive,
    /// A rollout is rolling back, or finished rolling back.
    RolledBack,
    /// A rollout completed.
    Completed,
    /// A rollout failed (an error retrying cannot cure).
    Failed,
    /// A rollout was aborted by a person.
    Aborted,
}

impl EventClass {
    /// Every class, in the order of the table above.
    pub const ALL: [Self; 10] = [
        Self::ConfigApplied,
        Self::RolloutStarted,
        Self::PhasePromoted,
        Self::Paused,
        Self::AwaitingApproval,
        Self::Inconclusive,
        Self::RolledBack,
        Self::Completed,
        Self::Failed,
        Self::Aborted,
    ];

    /// The name operators write.
    pub fn name(self) -> &'static str {
        match self {
            Self::ConfigApplied => "config_applied",
            Self::RolloutStarted => "rollout_started",
            Self::PhasePromoted => "phase_promoted",
            Self::Paused => "paused",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Inconclusive => "inconclusive",
            Self::RolledBack => "rolled_back",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }

    /// The event kinds this moment covers.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::ConfigApplied => &["config.apply", "config.revert", "snapshot.restore"],
            Self::RolloutStarted => &["rollout.start"],
            Self::PhasePromoted => &["rollout.promote", "rollout.skip"],
            Self::Paused => &["rollout.pause", "rollout.gate_held"],
            Self::AwaitingApproval => &["rollout.awaiting_promotion"],
            Self::Inconclusive => &["rollout.inconclusive"],
            Self::RolledBack => {
                &["rollout.rollback", "rollout.rolled_back", "rollout.rollback_timeout"]
            }
            Self::Completed => &["rollout.complete"],
            Self::Failed => &["rollout.fail"],
            Self::Aborted => &["rollout.abort"],
        }
    }

    /// The class of an event kind, if one covers it.
    pub fn of_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.kinds().contains(&kind))
    }

    /// The class named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for EventClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The events one notifier is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSelection {
    /// Every event, including kinds no [`EventClass`] covers.
    All,
    /// The events of these classes only (a bit per class).
    Only(ClassSet),
}

/// A set of [`EventClass`]es.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassSet(u16);

impl ClassSet {
    /// The set of these classes.
    pub fn of(classes: &[EventClass]) -> Self {
        Self(classes.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// Whether `class` is in the set.
    pub fn contains(self, class: EventClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// The classes in the set, in [`EventClass::ALL`] order.
    pub fn classes(self) -> Vec<EventClass> {
        EventClass::ALL.into_iter().filter(|c| self.contains(*c)).collect()
    }
}

impl EventSelection {
    /// The selection for `names` as written in a notifier's `events = [...]` (`all` or the
    /// names of [`EventClass`]); `plugin` names the notifier in the error. An unknown name
    /// and an empty list are refused.
    pub fn from_names<S: AsRef<str>>(plugin: &str, names: &[S]) -> Result<Self, PluginError> {
        if names.is_empty() {
            return Err(invalid(
                plugin,
                "an empty list would tell this notifier nothing; remove the notifier or name at least one event",
            ));
        }
        let mut set = ClassSet::default();
        for n in names {
            let n = n.as_ref();
            if n == "all" {
                return Ok(Self::All);
            }
            match EventClass::parse(n) {
                Some(c) => set.0 |= c.bit(),
                None => {
                    let known: Vec<&str> = EventClass::ALL.iter().map(|c| c.name()).collect();
                    return Err(invalid(
                        plugin,
                        &format!("unknown event {n:?}; known: all, {}", known.join(", ")),
                    ));
                }
            }
        }
        Ok(Self::Only(set))
    }

    /// Whether an event of `kind` is selected.
    pub fn allows(&self, kind: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => EventClass::of_kind(kind).is_some_and(|c| set.contains(c)),
        }
    }

    /// The names of the selection, for logs (`["all"]` or the class names).
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["all"],
            Self::Only(set) => set.classes().into_iter().map(EventClass::name).collect(),
        }
    }
}

fn invalid(plugin: &str, message: &str) -> PluginError {
    PluginError::InvalidConfig {
        plugin: plugin.to_owned(),
        field: "events".into(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_class_and_names_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in EventClass::ALL {
            assert_eq!(EventClass::parse(c.name()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
            for k in c.kinds() {
                assert!(seen.insert(*k), "{k} is in two classes");
                assert_eq!(EventClass::of_kind(k), Some(c));
            }
        }
        assert_eq!(EventClass::of_kind("slot.create"), None);
    }

    #[test]
    fn a_selection_lets_through_its_classes_only() {
        let s = EventSelection::from_names("pagerduty", &["rolled_back", "failed"]).unwrap();
        assert!(s.allows("rollout.rollback"));
        assert!(s.allows("rollout.rolled_back"));
        assert!(s.allows("rollout.fail"));
        assert!(!s.allows("rollout.complete"));
        assert!(!s.allows("slot.create"));
        assert_eq!(s.names(), vec!["rolled_back", "failed"]);
        let all = EventSelection::from_names("log", &["paused", "all"]).unwrap();
        assert!(all.allows("slot.create"));
    }

    #[test]
    fn unknown_and_empty_lists_are_refused_by_name() {
        let err = EventSelection::from_names("slack", &["rolled_back", "rollback"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("slack") && msg.contains("`events`"), "{msg}");
        assert!(msg.contains("\"rollback\"") && msg.contains("rolled_back"), "{msg}");
        let none: [&str; 0] = [];
        assert!(EventSelection::from_names("slack", &none).is_err());
    }
}
