//! Who is calling: API keys (bootstrap whitelist and stored, hashed keys) and HS256 JWTs
//! resolved to a tenant and a scope; rate limiting; redaction of sensitive data.
//!
//! Only hashes of stored secrets are kept; comparisons of secrets are constant-time.
//! Stored keys are looked up on every request (one indexed read by prefix), never
//! cached, so a revocation is refused by every replica on its next request.
//! `last_used_at` is collected in memory and written in batches by [`KeyUsage::flush`].

pub mod jwt;
pub mod keys;
pub mod ratelimit;
pub mod redact;
pub mod session;
pub mod signing;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::Secret;
use crate::store::{DEFAULT_TENANT_ID, DynStore, StoreError};

/// Longest tenant name.
pub const MAX_TENANT_NAME: usize = 64;
/// The rule [`check_tenant_name`] applies, for error messages.
pub const TENANT_NAME_RULE: &str =
    "must be 1-64 characters of letters, digits, '-', '_' or '.', starting with a letter or digit";

/// Whether `name` may name a tenant (the API and the CLI apply the same rule).
pub fn check_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a caller may do.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// An authenticated caller, put in the request extensions by the auth middleware.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant_id: Uuid,
    /// The stored key's id; `None` for a whitelist key.
    pub key_id: Option<Uuid>,
    /// Highest scope granted; `admin` implies `write` implies `read`.
    pub scope: Scope,
    /// Rate-limit subject: `key:<id>`, `wl:<hash prefix>` for a whitelist key, or
    /// `jwt:<tenant>:<sub>`. Never contains a secret.
    pub subject: String,
    /// The key's own requests-per-window override, if any.
    pub rate_limit: Option<u32>,
}

impl Principal {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scope >= needed
    }

    /// True for admins of the default tenant: the operator, who manages tenants and the
    /// keys of any tenant. Admins of other tenants manage only their own keys.
    pub fn is_operator(&self) -> bool {
        self.scope == Scope::Admin && self.tenant_id == DEFAULT_TENANT_ID
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send X-API-Key or Authorization: Bearer")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error(transparent)]
    Store(StoreError),
}

/// Resolves presented credentials to a principal.
pub struct Authenticator {
    /// SHA-256 of each `API_KEY_WHITELIST` entry; the plain keys are not kept.
    whitelist: Vec<[u8; 32]>,
    store: DynStore,
    jwt: Option<jwt::JwtKeys>,
    /// Tenants known to exist, so a JWT's tenant is checked once, not per request.
    /// Tenants are never deleted; if that changes, this cache must learn of it.
    known_tenants: Mutex<HashSet<Uuid>>,
    pub usage: KeyUsage,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("whitelist_keys", &self.whitelist.len())
            .finish()
    }
}

impl Authenticator {
    pub fn new(whitelist: &[Secret], store: DynStore) -> Arc<Self> {
        Self::with_jwt(whitelist, &jwt::JwtOptions::default(), store)
    }

    /// With the JWT settings (no `JWT_SECRET_KEY`: bearer JWTs are refused).
    pub fn with_jwt(whitelist: &[Secret], jwt: &jwt::JwtOptions, store: DynStore) -> Arc<Self> {
        Arc::new(Self {
            whitelist: whitelist.iter().map(|k| sha256(k.expose())).collect(),
            store,
            jwt: jwt::JwtKeys::with_options(jwt),
            known_tenants: Mutex::new(HashSet::from([DEFAULT_TENANT_ID])),
            usage: KeyUsage::default(),
        })
    }

    /// Checks a presented credential: a JWT (three dot-separated base64url parts) or an
    /// API key.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        if jwt::looks_like_jwt(presented) {
            self.authenticate_jwt(presented).await
        } else {
            self.authenticate_key(presented).await
        }
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let keys = self.jwt.as_ref().ok_or(AuthError::Invalid)?;
        let claims = keys.verify(token).map_err(|e| match e {
            jwt::JwtError::Expired => AuthError::Expired,
            _ => AuthError::Invalid,
        })?;
        self.check_tenant(claims.tenant).await?;
        Ok(Principal {
            tenant_id: claims.tenant,
            key_id: None,
            scope: claims.scope,
            subject: format!("jwt:{}:{}", claims.tenant, claims.sub),
            rate_limit: None,
        })
    }

    async fn check_tenant(&self, tenant: Uuid) -> Result<(), AuthError> {
        if lock(&self.known_tenants).contains(&tenant) {
            return Ok(());
        }
        match self.store.get_tenant(tenant).await {
            Ok(_) => {
                lock(&self.known_tenants).insert(tenant);
                Ok(())
            }
            Err(StoreError::NotFound) => Err(AuthError::Invalid),
            Err(e) => Err(AuthError::Store(e)),
        }
    }

    /// Checks an API key: a whitelist key (admin of the default tenant) or a stored key.
    pub async fn authenticate_key(&self, presented: &str) -> Result<Principal, AuthError> {
        let digest = sha256(presented);
        // Compare against every entry so timing does not reveal which one matched.
        let mut matched = subtle::Choice::from(0);
        for k in &self.whitelist {
            matched |= k.ct_eq(&digest);
        }
        if bool::from(matched) {
            return Ok(Principal {
                tenant_id: DEFAULT_TENANT_ID,
                key_id: None,
                scope: Scope::Admin,
                subject: whitelist_subject(&digest),
                rate_limit: None,
            });
        }
        let Some((prefix, secret)) = keys::split(presented) else {
            return Err(AuthError::Invalid);
        };
        let record = match self.store.find_api_key(prefix).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Err(AuthError::Invalid),
            Err(e) => return Err(AuthError::Store(e)),
        };
        let expected = hex::decode(&record.secret_hash).map_err(|_| AuthError::Invalid)?;
        if !bool::from(sha256(secret).as_slice().ct_eq(expected.as_slice())) {
            return Err(AuthError::Invalid);
        }
        let scope = record
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s))
            .max()
            .ok_or(AuthError::Invalid)?;
        self.usage.record(record.tenant_id, record.id);
        Ok(Principal {
            tenant_id: record.tenant_id,
            key_id: Some(record.id),
            scope,
            subject: format!("key:{}", record.id),
            rate_limit: record.rate_limit.and_then(|n| u32::try_from(n).ok()),
        })
    }

    /// Mints a JWT (for the `token` command and tests).
    pub fn mint_jwt(
        &self,
        sub: &str,
        tenant: Uuid,
        scope: Scope,
        ttl: std::time::Duration,
    ) -> Result<String, jwt::JwtError> {
        self.jwt
            .as_ref()
            .ok_or(jwt::JwtError::NotConfigured)?
            .mint(sub, tenant, scope, ttl)
    }
}

/// `last_used_at` of stored keys, collected in memory and written in batches, so that
/// authenticating costs no database write. At most one flush interval of usage times is
/// lost if the process dies; a clean shutdown flushes.
#[derive(Debug, Default)]
pub struct KeyUsage {
    pending: Mutex<HashMap<Uuid, (Uuid, DateTime<Utc>)>>,
}

impl KeyUsage {
    pub fn record(&self, tenant: Uuid, key: Uuid) {
        lock(&self.pending).insert(key, (tenant, crate::store::now()));
    }

    /// Writes what was collected; on failure puts it back for the next flush.
    pub async fn flush(&self, store: &DynStore) -> Result<usize, StoreError> {
        let batch: Vec<(Uuid, Uuid, DateTime<Utc>)> = std::mem::take(&mut *lock(&self.pending))
            .into_iter()
            .map(|(key, (tenant, at))| (tenant, key, at))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.touch_api_keys(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = lock(&self.pending);
                for (tenant, key, at) in batch {
                    let entry = pending.entry(key).or_insert((tenant, at));
                    if entry.1 < at {
                        *entry = (tenant, at);
                    }
                }
                Err(e)
            }
        }
    }
}

/// Locks a mutex, recovering the data if a holder panicked (the maps stay consistent:
/// every critical section is a single insert or take).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The subject of a whitelist key: `wl:` and the first 8 bytes of its digest in hex.
pub(crate) fn whitelist_subject(digest: &[u8; 32]) -> String {
    let mut hex = [0u8; 16];
    // 8 bytes are always 16 hex digits, which are ASCII.
    let _ = hex::encode_to_slice(&digest[..8], &mut hex);
    let mut subject = String::with_capacity(3 + hex.len());
    subject.push_str("wl:");
    subject.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    subject
}

pub(crate) fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_whitelist_subject_is_wl_and_the_digest_start_in_hex() {
        let digest = super::sha256("bench-key-0123456789");
        let subject = super::whitelist_subject(&digest);
        assert_eq!(subject, format!("wl:{}", hex::encode(&digest[..8])));
        assert_eq!(subject.len(), 19);
    }
}
