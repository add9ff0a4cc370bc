//! Signing of outbound webhooks (task completions and webhook tool calls), keyed with the
//! tenant's webhook secret.
//!
//! Two signatures ride on every request:
//! - [Standard Webhooks](https://www.standardwebhooks.com/): `webhook-id` (the delivery's
//!   id, the same on every retry), `webhook-timestamp` (Unix seconds of this attempt) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the key
//!   being the base64 part of the `whsec_…` secret, decoded. Because the timestamp is
//!   signed, a receiver can refuse replays: reject a timestamp more than five minutes
//!   from its clock, and remember ids it has handled. Its SDKs verify these headers as
//!   they are.
//! - the original `X-Digital-Employee-Signature: sha256=<hex HMAC-SHA256 of the body>`
//!   (keyed with the whole secret string), kept for receivers written against it; it
//!   signs no time, so it cannot stop a replay.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderValue};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-digital-employee-signature";
pub const EVENT_HEADER: &str = "x-digital-employee-event";
pub const DELIVERY_HEADER: &str = "x-digital-employee-delivery";
pub const ATTEMPT_HEADER: &str = "x-digital-employee-attempt";
/// Standard Webhooks headers.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// A new random signing secret: `whsec_` and 32 random bytes in base64 (the Standard
/// Webhooks form).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// The HMAC key of a secret for the Standard Webhooks signature: the base64 after
/// `whsec_` decoded (secrets issued before this scheme, 64 hex digits, decode too), or
/// the secret's bytes when it is not base64.
fn standard_key(secret: &str) -> Vec<u8> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD
        .decode(b64)
        .unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the `webhook-signature` value.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(&standard_key(secret)) {
        Ok(m) => m,
        // HMAC takes a key of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Every signing header of one request sent now: the Standard Webhooks three (message
/// `id`, this moment's timestamp, the v1 signature) and the original body signature.
pub fn headers(secret: &str, id: &str, body: &[u8]) -> HeaderMap {
    let timestamp = chrono::Utc::now().timestamp();
    let mut map = HeaderMap::new();
    for (name, value) in [
        (WEBHOOK_ID_HEADER, id.to_string()),
        (WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string()),
        (
            WEBHOOK_SIGNATURE_HEADER,
            standard_signature(secret, id, timestamp, body),
        ),
        (SIGNATURE_HEADER, signature(secret, body)),
    ] {
        // Ids, digits, hex and base64: always valid header values.
        if let Ok(v) = HeaderValue::try_from(value) {
            map.insert(name, v);
        }
    }
    map
}

/// `sha256=<hex HMAC-SHA256 of body>`, the value of the signature header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes a key of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_of_the_body() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = new_secret();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 44, "{s}");
        assert_eq!(standard_key(&s).len(), 32);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn standard_webhooks_signature_matches_the_reference() {
        // The example of the Standard Webhooks specification (also what its SDKs compute).
        let sig = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // The timestamp and the id are signed: changing either changes the signature.
        let body = br#"{"test": 2432232314}"#;
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_ne!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_331, body),
            sig
        );
        assert_ne!(
            standard_signature(secret, "msg_other", 1_614_265_330, body),
            sig
        );
        // A secret of the older hex form still signs (its hex digits decode as base64).
        let old = format!("whsec_{}", "ab".repeat(32));
        assert!(standard_signature(&old, "id", 1, b"x").starts_with("v1,"));
    }
}
