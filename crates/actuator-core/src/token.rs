//! API tokens: a name, a role, and the SHA-256 of the secret (the secret itself is shown
//! once, when the token is made, and never stored).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CoreError;

/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME: usize = 64;

/// Most tokens a store keeps (a token table is read into memory by every server).
pub const MAX_TOKENS: usize = 1000;

/// Prefix of every secret the actuator makes, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "act_";

/// Shortest secret accepted from outside (an environment variable, `token create --secret`).
pub const MIN_SECRET_LEN: usize = 24;

/// Longest secret accepted.
pub const MAX_SECRET_LEN: usize = 256;

/// What a token may do. The management roles are ordered: an `admin` may do what an
/// `operator` may, an `operator` what a `viewer` may. `client` is separate: what an
/// application holds (resolve, OFREP, observations), and the only role that sees secrets.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Resolve, OFREP and observations; sees secret config fields.
    Client,
    /// Reads everything except secrets.
    Viewer,
    /// Configs, snapshots, rollouts and manual control, besides what a viewer may.
    Operator,
    /// Tokens, audit verification and acknowledgement, besides what an operator may.
    Admin,
}

impl Role {
    /// Every role, weakest management role first, `client` first of all.
    pub const ALL: [Self; 4] = [Self::Client, Self::Viewer, Self::Operator, Self::Admin];

    /// The role's name in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] naming the roles.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        Self::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            CoreError::InvalidRequest(format!(
                "unknown role {s:?}; use admin, operator, viewer or client"
            ))
        })
    }

    /// Whether this management role includes `other` (admin ⊇ operator ⊇ viewer). `client`
    /// includes only itself.
    pub fn includes(self, other: Self) -> bool {
        match (self, other) {
            (Self::Client, Self::Client) => true,
            (Self::Client, _) | (_, Self::Client) => false,
            (a, b) => a >= b,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token to store: its name, role and the hash of its secret ([`hash_secret`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// Unique name; it is the audit actor of everything done with the token.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub hash: String,
}

/// A stored token (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret, hex. Not served by the API.
    #[serde(skip_serializing)]
    pub hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Checks a token name: 1 to [`MAX_TOKEN_NAME`] bytes of letters, digits, `.`, `_`, `-`,
/// `:` and `@`, so that it can stand as an audit actor in a log line.
///
/// # Errors
/// [`CoreError::InvalidRequest`] saying what is allowed.
pub fn validate_token_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOKEN_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidRequest(format!(
            "token name {name:?} must be 1 to {MAX_TOKEN_NAME} characters of letters, digits, '.', '-', '_', ':' or '@'"
        )))
    }
}

/// Checks a secret given from outside: [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] visible
/// ASCII characters, so it can travel in an `Authorization` header.
///
/// # Errors
/// [`CoreError::InvalidRequest`] saying what is required.
pub fn validate_secret(secret: &str) -> Result<(), CoreError> {
    let ok = (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidRequest(format!(
            "a token secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} visible ASCII characters (no spaces)"
        )))
    }
}

/// The SHA-256 of a secret, hex: what the store keeps and looks tokens up by. Secrets are
/// long and random, so an unsalted fast hash is enough: it cannot be reversed by guessing.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: [`TOKEN_PREFIX`] and 244 random bits from the operating system's
/// generator (two version-4 UUIDs), in hex.
pub fn generate_secret() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{TOKEN_PREFIX}{}{}", a.simple(), b.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_weaker_management_roles_and_client_only_itself() {
        assert!(Role::Admin.includes(Role::Operator) && Role::Admin.includes(Role::Viewer));
        assert!(Role::Operator.includes(Role::Viewer) && !Role::Operator.includes(Role::Admin));
        assert!(!Role::Viewer.includes(Role::Operator));
        assert!(Role::Client.includes(Role::Client) && !Role::Client.includes(Role::Viewer));
        assert!(!Role::Admin.includes(Role::Client));
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(Role::parse("root").unwrap_err().to_string().contains("admin, operator"));
    }

    #[test]
    fn secrets_are_random_prefixed_and_hashed_stably() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        validate_secret(&a).unwrap();
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(hash_secret(&a).len(), 64);
        assert!(validate_secret("short").is_err());
        assert!(validate_secret(&format!("{a} x")).is_err());
    }

    #[test]
    fn token_names_are_safe_in_a_log_line() {
        validate_token_name("ci-deployer@team.a").unwrap();
        for bad in ["", "a b", "x\nactor=admin", &"n".repeat(65)] {
            assert!(validate_token_name(bad).is_err(), "{bad:?}");
        }
    }
}
