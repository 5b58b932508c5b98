//! Secret config fields in resolutions: served as stored to applications (`client` tokens,
//! or anyone on an open daemon), masked for people's tokens (viewer, operator, admin).

use std::collections::HashMap;
use std::sync::Arc;

use actuator_canary::Resolution;
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

    /// Masks the secret fields of `r`, a resolution of `slot`.
    pub(crate) async fn apply(&mut self, st: &AppState, slot: &str, r: &mut Resolution) {
        if !self.on {
            return;
        }
        if !self.schemas.contains_key(slot) {
            let schema = match SlotName::new(slot) {
                Ok(name) => st.store().get_slot(&name).await.ok().flatten().and_then(|s| s.schema),
                Err(_) => None,
            };
            self.schemas.insert(slot.to_owned(), schema);
        }
        let schema = self.schemas.get(slot).and_then(Option::as_ref);
        if has_secrets(&r.config.value, schema) {
            r.config.value = Arc::new(mask(&r.config.value, schema));
        }
    }
}
