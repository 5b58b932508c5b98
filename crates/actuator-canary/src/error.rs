//! The crate's one error type, whose variants map 1:1 to OFREP error codes.

/// Every error this crate returns.
///
/// Each variant maps to exactly one OFREP error code (see [`ResolveError::code`]), so an HTTP
/// layer can forward it unchanged: `PARSE_ERROR`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT`,
/// `FLAG_NOT_FOUND` and `GENERAL`. Messages are lowercase and say what to do.
///
/// Definition errors (a share above 100%, arm weights that do not add up, an override that names
/// a missing arm) are reported as [`ResolveError::Parse`]: they are bad input that was rejected
/// before it changed anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Input could not be parsed or a definition is invalid (OFREP `PARSE_ERROR`).
    #[error("{0}")]
    Parse(String),
    /// A sticky strategy needs a stickiness key the context does not carry
    /// (OFREP `TARGETING_KEY_MISSING`).
    #[error(
        "slot `{slot}` assigns traffic by `{attribute}` but the context has none: send a non-empty `{attribute}`"
    )]
    TargetingKeyMissing {
        /// The slot being resolved.
        slot: String,
        /// The context field the rollout is sticky on (`targetingKey`, `sessionId`, ...).
        attribute: String,
    },
    /// A context attribute used for targeting has an unusable type (OFREP `INVALID_CONTEXT`).
    #[error("context attribute `{attribute}` {problem}")]
    InvalidContext {
        /// The offending attribute.
        attribute: String,
        /// What is wrong and what to send instead.
        problem: String,
    },
    /// The slot is not in the routing table (OFREP `FLAG_NOT_FOUND`).
    #[error("slot `{slot}` is not configured: check the flag key or publish a route for it")]
    FlagNotFound {
        /// The unknown slot.
        slot: String,
    },
    /// Anything else (OFREP `GENERAL`).
    #[error("{0}")]
    General(String),
}

impl ResolveError {
    /// The OFREP error code of this error.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Parse(_) => "PARSE_ERROR",
            Self::TargetingKeyMissing { .. } => "TARGETING_KEY_MISSING",
            Self::InvalidContext { .. } => "INVALID_CONTEXT",
            Self::FlagNotFound { .. } => "FLAG_NOT_FOUND",
            Self::General(_) => "GENERAL",
        }
    }

    pub(crate) fn invalid_context(attribute: &str, problem: impl Into<String>) -> Self {
        Self::InvalidContext { attribute: attribute.to_owned(), problem: problem.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::ResolveError;

    #[test]
    fn codes_map_one_to_one() {
        let all = [
            ResolveError::Parse("x".into()),
            ResolveError::TargetingKeyMissing {
                slot: "s".into(),
                attribute: "targetingKey".into(),
            },
            ResolveError::invalid_context("region", "is an array: send a string"),
            ResolveError::FlagNotFound { slot: "s".into() },
            ResolveError::General("x".into()),
        ];
        let codes: Vec<_> = all.iter().map(ResolveError::code).collect();
        assert_eq!(
            codes,
            [
                "PARSE_ERROR",
                "TARGETING_KEY_MISSING",
                "INVALID_CONTEXT",
                "FLAG_NOT_FOUND",
                "GENERAL"
            ]
        );
        for e in &all {
            let msg = e.to_string();
            assert_eq!(msg, msg.to_lowercase().replace("targetingkey", "targetingKey"), "{msg}");
        }
    }
}
