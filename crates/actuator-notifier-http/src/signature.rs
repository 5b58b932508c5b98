//! The `X-Actuator-Signature` header: HMAC-SHA256 over the timestamp and the body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature, `sha256=<64 lowercase hex digits>`.
pub const SIGNATURE_HEADER: &str = "X-Actuator-Signature";

type HmacSha256 = Hmac<Sha256>;

/// The bytes that are signed: the `X-Actuator-Timestamp` header's value (Unix seconds, in
/// decimal ASCII), one `.`, then the body exactly as sent.
pub fn signed_material(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + 1 + body.len());
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// Signs deliveries with a shared secret.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    /// A signer with the secret `secret` (its UTF-8 bytes are the HMAC key).
    pub fn new(secret: &str) -> Self {
        Self { key: secret.as_bytes().to_vec() }
    }

    /// The header value for `body` sent with the timestamp `timestamp`:
    /// `sha256=` and the hex HMAC-SHA256 of [`signed_material`].
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        // HMAC accepts a key of any length; `new_from_slice` cannot fail for it.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else { unreachable_key() };
        mac.update(&signed_material(timestamp, body));
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cold]
fn unreachable_key() -> ! {
    panic!("HMAC-SHA256 takes keys of every length")
}

/// Whether `signature` (the `X-Actuator-Signature` header) is the signature of `body` with
/// `timestamp` (the `X-Actuator-Timestamp` header) under `secret`, compared in constant
/// time. What a receiver runs, besides refusing timestamps too far from its clock.
pub fn verify_signature(secret: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else { return false };
    let Ok(expected) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(&signed_material(timestamp, body));
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_vector_and_verifies() {
        // The HMAC is RFC 4231's (test case 2), and the header is that HMAC over
        // "<timestamp>.<body>".
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"17.body");
        let direct = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(Signer::new("Jefe").sign("17", b"body"), direct);
        let s = Signer::new("s3cret");
        let sig = s.sign("1700000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify_signature("s3cret", "1700000000", b"{\"a\":1}", &sig));
        assert!(!verify_signature("other", "1700000000", b"{\"a\":1}", &sig));
        assert!(!verify_signature("s3cret", "1700000001", b"{\"a\":1}", &sig));
        assert!(!verify_signature("s3cret", "1700000000", b"{\"a\":2}", &sig));
        assert!(!verify_signature("s3cret", "1700000000", b"{\"a\":1}", "md5=00"));
        assert_eq!(format!("{s:?}"), "Signer(<secret>)");
    }
}
