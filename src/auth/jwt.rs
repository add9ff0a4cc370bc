//! Bearer JWTs: HS256 signed with `JWT_SECRET_KEY`, carrying tenant, scope and subject.
//!
//! Only HS256 is accepted. A token whose header names any other algorithm (`none`,
//! `RS256`, `HS512`, …) is refused before its signature is looked at, so a public key
//! can never be used as an HMAC secret (RS/HS confusion) and an unsigned token never
//! passes. Expiry is required and checked with a few seconds of leeway for clock skew;
//! a token living longer than `JWT_MAX_LIFETIME_SECONDS` (`exp − iat`) or issued in the
//! future is refused. With `JWT_ISSUER` / `JWT_AUDIENCE` set, `iss` / `aud` must match.
//!
//! Rotation without downtime: set the new secret as `JWT_SECRET_KEY` and the old one as
//! `JWT_SECRET_KEY_PREVIOUS`; tokens signed with either are accepted, new ones are signed
//! with the new one. Drop the previous secret once the old tokens have expired.

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
    /// Issuer (`JWT_ISSUER`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (`JWT_AUDIENCE`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// How tokens are signed and what a token must be to be accepted.
#[derive(Clone, Default)]
pub struct JwtOptions {
    /// `JWT_SECRET_KEY`: signs new tokens, verifies.
    pub secret: Secret,
    /// `JWT_SECRET_KEY_PREVIOUS`: verifies only.
    pub previous: Secret,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `JWT_MAX_LIFETIME_SECONDS`.
    pub max_lifetime: Duration,
}

impl std::fmt::Debug for JwtOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtOptions")
            .field("previous_set", &!self.previous.is_empty())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl JwtOptions {
    /// The options the configuration sets.
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            secret: c.jwt_secret_key.clone(),
            previous: c.jwt_secret_key_previous.clone(),
            issuer: c.jwt_issuer.clone(),
            audience: c.jwt_audience.clone(),
            max_lifetime: c.jwt_max_lifetime,
        }
    }
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

/// Signs tokens with the current HS256 secret; verifies with it and the previous one.
pub struct JwtKeys {
    encoding: EncodingKey,
    /// The current key, then the previous one when rotating.
    decoding: Vec<DecodingKey>,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    max_lifetime: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys([redacted])")
    }
}

impl JwtKeys {
    /// Keys for one secret and no other requirement; `None` when it is empty.
    pub fn new(secret: &Secret) -> Option<JwtKeys> {
        Self::with_options(&JwtOptions {
            secret: secret.clone(),
            max_lifetime: MAX_TTL,
            ..JwtOptions::default()
        })
    }

    /// `None` when no secret is configured.
    pub fn with_options(o: &JwtOptions) -> Option<JwtKeys> {
        if o.secret.is_empty() {
            return None;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        let mut required = vec!["exp", "iat", "sub"];
        if let Some(iss) = &o.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &o.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let mut decoding = vec![DecodingKey::from_secret(o.secret.expose().as_bytes())];
        if !o.previous.is_empty() {
            decoding.push(DecodingKey::from_secret(o.previous.expose().as_bytes()));
        }
        Some(JwtKeys {
            encoding: EncodingKey::from_secret(o.secret.expose().as_bytes()),
            decoding,
            validation,
            issuer: o.issuer.clone(),
            audience: o.audience.clone(),
            max_lifetime: o.max_lifetime,
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
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| JwtError::Invalid)
    }

    /// Checks algorithm, signature (current key, then the previous one), expiry, issuer,
    /// audience and lifetime; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        for key in &self.decoding {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return self.check_lifetime(data.claims),
                Err(e) => match e.kind() {
                    // Another key may have signed it: try the next one.
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {}
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        return Err(JwtError::Expired);
                    }
                    _ => return Err(JwtError::Invalid),
                },
            }
        }
        Err(JwtError::Invalid)
    }

    fn check_lifetime(&self, c: Claims) -> Result<Claims, JwtError> {
        let lifetime = c.exp.saturating_sub(c.iat);
        let from_the_future = c.iat > now_secs() + LEEWAY_SECONDS;
        if c.sub.is_empty() || lifetime > self.max_lifetime.as_secs() || from_the_future {
            return Err(JwtError::Invalid);
        }
        Ok(c)
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
                iss: None,
                aud: None,
            },
            &EncodingKey::from_secret(b"unit-test-secret-unit-test-secret"),
        )
        .unwrap();
        assert!(matches!(k.verify(&expired), Err(JwtError::Expired)));
    }

    fn options(secret: &str) -> JwtOptions {
        JwtOptions {
            secret: Secret::new(secret),
            max_lifetime: MAX_TTL,
            ..JwtOptions::default()
        }
    }

    #[test]
    fn a_rotation_accepts_the_previous_secret_and_signs_with_the_new() {
        let old = JwtKeys::with_options(&options("old-secret-old-secret-old-secret")).unwrap();
        let old_token = old
            .mint("ci", Uuid::nil(), Scope::Read, DEFAULT_TTL)
            .unwrap();
        let rotated = JwtKeys::with_options(&JwtOptions {
            previous: Secret::new("old-secret-old-secret-old-secret"),
            ..options("new-secret-new-secret-new-secret")
        })
        .unwrap();
        assert_eq!(rotated.verify(&old_token).unwrap().sub, "ci");
        let new_token = rotated
            .mint("ci", Uuid::nil(), Scope::Read, DEFAULT_TTL)
            .unwrap();
        assert!(rotated.verify(&new_token).is_ok());
        assert!(matches!(old.verify(&new_token), Err(JwtError::Invalid)));
        // After the rotation is over, the old secret's tokens are refused.
        let done = JwtKeys::with_options(&options("new-secret-new-secret-new-secret")).unwrap();
        assert!(matches!(done.verify(&old_token), Err(JwtError::Invalid)));
    }

    #[test]
    fn issuer_audience_and_lifetime_are_enforced_when_configured() {
        let strict = JwtKeys::with_options(&JwtOptions {
            issuer: Some("https://id.example".into()),
            audience: Some("digital-employee".into()),
            max_lifetime: Duration::from_secs(7200),
            ..options("strict-secret-strict-secret-strict")
        })
        .unwrap();
        let t = strict
            .mint("ci", Uuid::nil(), Scope::Read, DEFAULT_TTL)
            .unwrap();
        let c = strict.verify(&t).unwrap();
        assert_eq!(c.iss.as_deref(), Some("https://id.example"));
        assert_eq!(c.aud.as_deref(), Some("digital-employee"));
        // Same secret, but no issuer and audience in the token.
        let plain = JwtKeys::with_options(&options("strict-secret-strict-secret-strict")).unwrap();
        let bare = plain
            .mint("ci", Uuid::nil(), Scope::Read, DEFAULT_TTL)
            .unwrap();
        assert!(matches!(strict.verify(&bare), Err(JwtError::Invalid)));
        // Another issuer or audience.
        for (iss, aud) in [
            ("https://evil.example", "digital-employee"),
            ("https://id.example", "other"),
        ] {
            let other = JwtKeys::with_options(&JwtOptions {
                issuer: Some(iss.into()),
                audience: Some(aud.into()),
                ..options("strict-secret-strict-secret-strict")
            })
            .unwrap();
            let t = other
                .mint("ci", Uuid::nil(), Scope::Read, DEFAULT_TTL)
                .unwrap();
            assert!(
                matches!(strict.verify(&t), Err(JwtError::Invalid)),
                "{iss} {aud}"
            );
        }
        // Longer-lived than the maximum.
        let long = JwtKeys::with_options(&JwtOptions {
            issuer: Some("https://id.example".into()),
            audience: Some("digital-employee".into()),
            ..options("strict-secret-strict-secret-strict")
        })
        .unwrap();
        let t = long
            .mint(
                "ci",
                Uuid::nil(),
                Scope::Read,
                Duration::from_secs(3 * 3600),
            )
            .unwrap();
        assert!(matches!(strict.verify(&t), Err(JwtError::Invalid)));
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
