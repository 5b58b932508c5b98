//! Secret config fields in resolutions: served as stored to applications (`client` tokens,
//! or anyone on an open daemon), masked for people's tokens (viewer, operator, admin).

use std::collections::HashMap;

use actuator_config::secrets::{has_secrets, mask};
use actuator_core::SlotName;
use serde_json::Value;

use crate::AppState;
use crate::auth::Principal;

/// Masks resolutions for one request, reading each slot's schema once.
pub(crate) struct Masker {
    on: bool,
    schemas: HashMap<String, Option<Value>>,
}

impl Masker {
    /// A masker for `principal`: it does nothing for those who see secrets.
    pub(crate) fn for_principal(principal: Option<&Principal>) -> Self {
        Self { on: principal.is_none_or(|p| !p.sees_secrets()), schemas: HashMap::new() }
    }

    /// Whether this request's answers are masked.
    pub(crate) fn active(&self) -> bool {
        self.on
    }

    /// Reads the schemas of `slots` (once each) so that [`Masker::mask`] can answer without
    /// waiting; does nothing for those who see secrets. Call it before taking a snapshot of the
    /// routing table, so that no snapshot is held across the store reads.
    pub(crate) async fn prepare(&mut self, st: &AppState, slots: &[&str]) {
        if !self.on {
            return;
        }
        for &slot in slots {
            if self.schemas.contains_key(slot) {
                continue;
            }
            let schema = match SlotName::new(slot) {
                Ok(name) => st.store().get_slot(&name).await.ok().flatten().and_then(|s| s.schema),
                Err(_) => None,
            };
            self.schemas.insert(slot.to_owned(), schema);
        }
    }

    /// The masked copy of `value`, a config served on `slot`, when it has secret fields to
    /// mask for this request; `None` when it is served as it is. Uses the schema read by
    /// [`Masker::prepare`] (a slot not prepared is judged without a schema).
    pub(crate) fn mask(&self, slot: &str, value: &Value) -> Option<Value> {
        if !self.on {
            return None;
        }
        let schema = self.schemas.get(slot).and_then(Option::as_ref);
        has_secrets(value, schema).then(|| mask(value, schema))
    }
}
