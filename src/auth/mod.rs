//! Who is calling: API keys (bootstrap whitelist and stored, hashed keys) resolved to a
//! tenant and scopes.
//!
//! Only hashes of stored secrets are kept; comparisons of secrets are constant-time.

pub mod keys;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::Secret;
use crate::store::{DEFAULT_TENANT_ID, DynStore, StoreError};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
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
}

impl Principal {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scope >= needed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send X-API-Key or Authorization: Bearer")]
    Missing,
    #[error("invalid credentials")]
    Invalid,
    #[error(transparent)]
    Store(StoreError),
}

/// Resolves presented credentials to a principal.
pub struct Authenticator {
    /// SHA-256 of each `API_KEY_WHITELIST` entry; the plain keys are not kept.
    whitelist: Vec<[u8; 32]>,
    store: DynStore,
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
        Arc::new(Self {
            whitelist: whitelist.iter().map(|k| sha256(k.expose())).collect(),
            store,
        })
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
        Ok(Principal {
            tenant_id: record.tenant_id,
            key_id: Some(record.id),
            scope,
        })
    }
}

pub(crate) fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}
