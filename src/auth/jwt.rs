//! Bearer JWTs: HS256 signed with `JWT_SECRET_KEY`, carrying tenant, scope and subject.
//!
//! Only HS256 is accepted. A token whose header names any other algorithm (`none`,
//! `RS256`, `HS512`, …) is refused before its signature is looked at, so a public key
//! can never be used as an HMAC secret (RS/HS confusion) and an unsigned token never
//! passes. Expiry is required and checked with a few seconds of leeway for clock skew.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Scope;
use crate::config::Secret;

/// Default lifetime of a minted token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime `mint` accepts: long-lived credentials should be API keys, which can
/// be revoked.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Clock skew tolerated on `exp`.
const LEEWAY_SECONDS: u64 = 5;

/// The claims we sign and require.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to; the rate-limit subject.
    pub sub: String,
    /// The tenant the bearer acts in.
    pub tenant: Uuid,
    /// `read`, `write` or `admin`.
    pub scope: Scope,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("JWT_SECRET_KEY is not set, so tokens can be neither minted nor accepted")]
    NotConfigured,
    #[error("the lifetime must be between 1 second and 30 days")]
    BadTtl,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
}

/// True when `s` has the shape of a JWS compact token: three non-empty dot-separated
/// base64url parts (`header.payload.signature`). Our API keys contain no dot.
pub fn looks_like_jwt(s: &str) -> bool {
    let mut parts = 0;
    for p in s.split('.') {
        parts += 1;
        if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// Signs and verifies tokens with one HS256 secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

impl JwtKeys {
    /// `None` when no secret is configured.
    pub fn new(secret: &Secret) -> Option<JwtKeys> {
        if secret.is_empty() {
            return None;
        }
        let bytes = secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Some(JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        })
    }

    /// A token for `sub` in `tenant` with `scope`, valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        tenant: Uuid,
        scope: Scope,
        ttl: Duration,
    ) -> Result<String, JwtError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(JwtError::BadTtl);
        }
        let iat = now_secs();
        let claims = Claims {
            sub: sub.to_string(),
            tenant,
            scope,
            iat,
            exp: iat + ttl.as_secs().max(1),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| JwtError::Invalid)
    }

    /// Checks algorithm, signature and expiry; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() => Ok(data.claims),
            Ok(_) => Err(JwtError::Invalid),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(JwtError::Expired),
                _ => Err(JwtError::Invalid),
            },
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses a lifetime such as `3600`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::new("unit-test-secret-unit-test-secret")).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn round_trip_and_shape() {
        let k = keys();
        let t = k
            .mint("ci", Uuid::from_u128(7), Scope::Write, DEFAULT_TTL)
            .unwrap();
        assert!(looks_like_jwt(&t));
        let c = k.verify(&t).unwrap();
        assert_eq!(c.tenant, Uuid::from_u128(7));
        assert_eq!(c.scope, Scope::Write);
        assert_eq!(c.exp - c.iat, 3600);
        assert!(!looks_like_jwt("de_0123456789ab_secret"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c d"));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let k = keys();
        let t = k
            .mint("ci", Uuid::from_u128(7), Scope::Read, DEFAULT_TTL)
            .unwrap();
        // Tampered payload: scope raised to admin, old signature kept.
        let parts: Vec<&str> = t.split('.').collect();
        let now = now_secs();
        let payload = serde_json::json!({"sub":"ci","tenant":Uuid::from_u128(7),"scope":"admin","iat":now,"exp":now+3600});
        let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
        assert!(matches!(k.verify(&tampered), Err(JwtError::Invalid)));
        // alg none, no signature.
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg":"none","typ":"JWT"})),
            b64(&payload)
        );
        assert!(matches!(k.verify(&none), Err(JwtError::Invalid)));
        // Other algorithms named in the header.
        for alg in ["RS256", "HS512", "ES256"] {
            let forged = format!(
                "{}.{}.{}",
                b64(&serde_json::json!({"alg":alg,"typ":"JWT"})),
                b64(&payload),
                parts[2]
            );
            assert!(matches!(k.verify(&forged), Err(JwtError::Invalid)), "{alg}");
        }
        // Signed with another secret.
        let other = JwtKeys::new(&Secret::new("another-secret-another-secret-xx")).unwrap();
        let t2 = other
            .mint("ci", Uuid::from_u128(7), Scope::Read, DEFAULT_TTL)
            .unwrap();
        assert!(matches!(k.verify(&t2), Err(JwtError::Invalid)));
        // Expired.
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "ci".into(),
                tenant: Uuid::from_u128(7),
                scope: Scope::Read,
                iat: now - 7200,
                exp: now - 3600,
            },
            &EncodingKey::from_secret(b"unit-test-secret-unit-test-secret"),
        )
        .unwrap();
        assert!(matches!(k.verify(&expired), Err(JwtError::Expired)));
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("1w"), None);
        assert_eq!(parse_ttl("h"), None);
        let k = keys();
        assert!(matches!(
            k.mint(
                "x",
                Uuid::nil(),
                Scope::Read,
                Duration::from_secs(31 * 86_400)
            ),
            Err(JwtError::BadTtl)
        ));
    }
}
