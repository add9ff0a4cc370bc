//! Signing of outbound webhooks (task completions and webhook tool calls).
//!
//! `X-Digital-Employee-Signature: sha256=<hex HMAC-SHA256 of the exact body>`, keyed with
//! the tenant's webhook secret; the receiver recomputes it over the raw body.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-digital-employee-signature";
pub const EVENT_HEADER: &str = "x-digital-employee-event";
pub const DELIVERY_HEADER: &str = "x-digital-employee-delivery";
pub const ATTEMPT_HEADER: &str = "x-digital-employee-attempt";

/// A new random signing secret.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
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
        assert!(s.starts_with("whsec_") && s.len() == 6 + 64);
        assert_ne!(s, new_secret());
    }
}
