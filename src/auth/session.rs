//! Sessions of the web console: a person signs in once with an API key or a JWT, and the
//! browser then holds only a random session id in an `HttpOnly` cookie.
//!
//! Only a SHA-256 of the id is stored. A session acts exactly as the credential it was
//! opened with (tenant, scope, rate-limit subject and override) and no longer than it:
//! a JWT's expiry caps the session's absolute end, a revoked key ends its sessions on the
//! next request, and a whitelist key taken off `API_KEY_WHITELIST` ends its sessions at
//! the next start. Sessions end after `SESSION_IDLE_TIMEOUT` unused or
//! `SESSION_ABSOLUTE_TIMEOUT` after sign-in, whichever comes first.
//!
//! The CSRF token of a session is derived from its id (a SHA-256 under a different
//! label), so it needs no storage, cannot be computed from the stored hash, and is known
//! only to pages served to the holder of the cookie.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::{AuthError, Authenticator, Principal, Scope, jwt, sha256};
use crate::store::{SessionRecord, StoreError, StoreResult};

/// Name of the session cookie.
pub const COOKIE: &str = "de_session";

/// `last_seen_at` is written at most this often per session, so reading pages costs no
/// write per request; the idle timeout is therefore exact to within this much.
const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// Put on a response of a page that refused a credential (a wrong key in the sign-in
/// form), so the HTTP layer counts it against the client address like a refused request.
#[derive(Clone, Copy, Debug)]
pub struct SignInRefused;

/// Whether the session cookie must be marked `Secure` for this request: `COOKIE_SECURE`,
/// or a trusted proxy says the browser came over HTTPS.
#[derive(Clone, Copy, Debug)]
pub struct CookieSecure(pub bool);

/// The session timeouts (`SESSION_IDLE_TIMEOUT`, `SESSION_ABSOLUTE_TIMEOUT`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub idle: Duration,
    pub absolute: Duration,
}

/// A live session: who acts, and the token its forms must carry.
#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    /// The token every state-changing request of this session must carry.
    pub csrf: String,
    /// Hex SHA-256 of the session id (to end it).
    pub id_hash: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// The value of cookie `name` in the `Cookie` header values given.
pub fn cookie_value<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Option<&'a str> {
    cookie_headers
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A new random id: 256 bits, URL-safe base64 (sessions, sign-in form tokens).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The stored form of a session id.
pub fn hash_id(id: &str) -> String {
    hex::encode(sha256(id))
}

/// The CSRF token of the session with this id.
pub fn csrf_token(id: &str) -> String {
    hex::encode(sha256(&format!("csrf:{id}")))
}

/// Constant-time comparison of a presented CSRF token with the expected one.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    !presented.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Authenticator {
    /// Checks a credential pasted into the sign-in form like a request's credential, and
    /// returns its principal with the time it stops being valid (a JWT's `exp`).
    pub async fn authenticate_for_session(
        &self,
        presented: &str,
    ) -> Result<(Principal, Option<DateTime<Utc>>), AuthError> {
        let principal = self.authenticate(presented).await?;
        let expires = if jwt::looks_like_jwt(presented) {
            let keys = self.jwt.as_ref().ok_or(AuthError::Invalid)?;
            let claims = keys.verify(presented).map_err(|_| AuthError::Invalid)?;
            i64::try_from(claims.exp)
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, 0))
        } else {
            None
        };
        Ok((principal, expires))
    }

    /// Whether the whitelist key behind a `wl:` subject is still configured.
    fn whitelist_subject_active(&self, subject: &str) -> bool {
        self.whitelist
            .iter()
            .any(|d| super::whitelist_subject(d) == subject)
    }

    /// Opens a session for `principal`; returns the session id for the cookie. Stale
    /// sessions are swept on the way, so the table holds only live ones (plus those that
    /// went stale since the last sign-in).
    pub async fn open_session(
        &self,
        principal: &Principal,
        credential_expires: Option<DateTime<Utc>>,
        t: Timeouts,
    ) -> StoreResult<String> {
        let now = crate::store::now();
        let idle_before = now - chrono::Duration::from_std(t.idle).unwrap_or_default();
        if let Err(e) = self.store.delete_stale_sessions(now, idle_before).await {
            // The sweep is housekeeping: a stale row is refused when read anyway.
            tracing::warn!(error = %e, "could not sweep stale console sessions");
        }
        let mut expires_at = after(now, t.absolute);
        if let Some(exp) = credential_expires {
            expires_at = expires_at.min(exp);
        }
        let id = new_id();
        self.store
            .create_session(&SessionRecord {
                id_hash: hash_id(&id),
                tenant_id: principal.tenant_id,
                key_id: principal.key_id,
                scope: principal.scope.as_str().to_string(),
                subject: principal.subject.clone(),
                rate_limit: principal.rate_limit.map(i64::from),
                created_at: now,
                last_seen_at: now,
                expires_at,
                key_revoked: false,
            })
            .await?;
        Ok(id)
    }

    /// The live session with this id; `Ok(None)` when there is none or it has ended
    /// (an ended one is deleted).
    pub async fn resume_session(&self, id: &str, t: Timeouts) -> StoreResult<Option<Session>> {
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        let id_hash = hash_id(id);
        let rec = match self.store.get_session(&id_hash).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let now = crate::store::now();
        let scope = Scope::parse(&rec.scope);
        let alive = now < rec.expires_at
            && now < after(rec.last_seen_at, t.idle)
            && !rec.key_revoked
            && scope.is_some()
            && (!rec.subject.starts_with("wl:") || self.whitelist_subject_active(&rec.subject));
        let Some(scope) = scope.filter(|_| alive) else {
            self.store.delete_session(&id_hash).await?;
            return Ok(None);
        };
        if now >= after(rec.last_seen_at, TOUCH_EVERY) {
            self.store.touch_session(&id_hash, now).await?;
        }
        if let Some(key) = rec.key_id {
            self.usage.record(rec.tenant_id, key);
        }
        Ok(Some(Session {
            principal: Principal {
                tenant_id: rec.tenant_id,
                key_id: rec.key_id,
                scope,
                subject: rec.subject,
                rate_limit: rec.rate_limit.and_then(|n| u32::try_from(n).ok()),
            },
            csrf: csrf_token(id),
            id_hash,
        }))
    }

    /// Ends a session on the server (sign-out).
    pub async fn close_session(&self, id_hash: &str) -> StoreResult<()> {
        self.store.delete_session(id_hash).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tokens() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_ne!(hash_id(&a), csrf_token(&a));
        assert_eq!(csrf_token(&a), csrf_token(&a));
        assert!(csrf_matches(&csrf_token(&a), &csrf_token(&a)));
        assert!(!csrf_matches(&csrf_token(&a), &csrf_token(&b)));
        assert!(!csrf_matches(&csrf_token(&a), ""));
    }
}
