//! Stored API keys: `de_<prefix>_<secret>`.
//!
//! The 12-hex-digit prefix is public (it identifies the key in lists and logs); the
//! 32-byte secret is shown once at creation and only its SHA-256 is stored. A fast hash
//! is right here: the secret is 256 random bits, so there is nothing to brute-force.

use base64::Engine;
use rand::RngCore;
use uuid::Uuid;

use super::{Scope, sha256};
use crate::store::{ApiKeyRecord, DynStore, NewApiKey, StoreResult};

const MARK: &str = "de_";

/// A newly created key: the record and the secret, which exists only here.
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("prefix", &self.record.prefix)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Splits a presented key into prefix and secret, or `None` if it is not of our form.
pub fn split(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(MARK)?;
    let (prefix, secret) = rest.split_once('_')?;
    let ok =
        prefix.len() == 12 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty();
    ok.then_some((prefix, secret))
}

/// Creates and stores a key; returns it with its secret (the only time it is visible).
/// Issues the first key of a tenant, the bootstrap admin key, unless the tenant already
/// has one (several replicas starting together on an empty database mint one key).
pub async fn issue_first(
    store: &DynStore,
    tenant_id: Uuid,
    name: &str,
    scope: Scope,
) -> StoreResult<Option<IssuedKey>> {
    let (new, secret) = generate(tenant_id, name, scope, None);
    Ok(store
        .insert_first_api_key(&new)
        .await?
        .map(|record| IssuedKey { record, secret }))
}

pub async fn issue(
    store: &DynStore,
    tenant_id: Uuid,
    name: &str,
    scope: Scope,
    rate_limit: Option<i32>,
) -> StoreResult<IssuedKey> {
    let (new, secret) = generate(tenant_id, name, scope, rate_limit);
    let record = store.insert_api_key(&new).await?;
    Ok(IssuedKey { record, secret })
}

/// Longest key name.
pub const MAX_NAME: usize = 100;
/// Largest per-key rate limit.
pub const MAX_RATE_LIMIT: i32 = 1_000_000;

/// A key someone asks for, with who asks.
pub struct KeyRequest<'a> {
    pub tenant_id: Uuid,
    pub name: &'a str,
    pub scope: Scope,
    pub rate_limit: Option<i32>,
    /// The caller is the operator (an admin of the default tenant).
    pub by_operator: bool,
}

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefusal {
    /// A field is invalid (HTTP 422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The caller may not ask for this (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The tenant has as many keys as it may (HTTP 409).
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Creates a key under the rules every front door applies: a printable name, a rate
/// limit in range and above `default_limit` (`RATE_LIMIT_REQUESTS`) only for the
/// operator, and at most `max_keys` (`TENANT_MAX_KEYS`) active keys per tenant.
pub async fn create(
    store: &DynStore,
    req: KeyRequest<'_>,
    default_limit: u32,
    max_keys: u32,
) -> Result<IssuedKey, KeyRefusal> {
    // Kept as given; blank (white space only) is refused, as are control characters.
    let name = req.name;
    if name.chars().all(char::is_whitespace)
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(KeyRefusal::Invalid {
            field: "name",
            message: format!("must be 1-{MAX_NAME} printable characters"),
        });
    }
    if let Some(n) = req.rate_limit
        && !(1..=MAX_RATE_LIMIT).contains(&n)
    {
        return Err(KeyRefusal::Invalid {
            field: "rate_limit",
            message: format!("must be between 1 and {MAX_RATE_LIMIT}"),
        });
    }
    // A tenant's admin may lower its keys' limit, not lift it: only the operator sets a
    // key's limit above the deployment's per-key default.
    if let Some(n) = req.rate_limit
        && !req.by_operator
        && i64::from(n) > i64::from(default_limit)
    {
        return Err(KeyRefusal::Forbidden(format!(
            "only the operator sets a key's rate_limit above {default_limit} (RATE_LIMIT_REQUESTS)"
        )));
    }
    // Checked before the insert: two creates racing at the cap may both pass.
    if store.count_active_api_keys(req.tenant_id).await? >= i64::from(max_keys) {
        return Err(KeyRefusal::Full(format!(
            "this tenant already has {max_keys} active keys (TENANT_MAX_KEYS); revoke one first"
        )));
    }
    let issued = issue(store, req.tenant_id, name, req.scope, req.rate_limit).await?;
    tracing::info!(key_id = %issued.record.id, prefix = %issued.record.prefix,
        tenant_id = %req.tenant_id, scope = req.scope.as_str(), "api key created");
    Ok(issued)
}

/// A new key: the row to store (hash only) and the secret to show once.
fn generate(
    tenant_id: Uuid,
    name: &str,
    scope: Scope,
    rate_limit: Option<i32>,
) -> (NewApiKey, String) {
    let mut prefix_bytes = [0u8; 6];
    let mut secret_bytes = [0u8; 32];
    {
        // The thread-local generator is not `Send`: drop it before any await.
        let mut rng = rand::rng();
        rng.fill_bytes(&mut prefix_bytes);
        rng.fill_bytes(&mut secret_bytes);
    }
    let prefix = hex::encode(prefix_bytes);
    let secret_part = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    let new = NewApiKey {
        id: Uuid::now_v7(),
        tenant_id,
        name: name.to_string(),
        prefix: prefix.clone(),
        secret_hash: hex::encode(sha256(&secret_part)),
        scopes: vec![scope.as_str().to_string()],
        rate_limit,
    };
    (new, format!("{MARK}{prefix}_{secret_part}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_accepts_only_our_form() {
        assert_eq!(
            split("de_0123456789ab_secret_with_underscore"),
            Some(("0123456789ab", "secret_with_underscore"))
        );
        assert_eq!(split("de_0123456789ab_"), None);
        assert_eq!(split("de_0123_secret"), None);
        assert_eq!(split("sk-something"), None);
        assert_eq!(split("de_zzzzzzzzzzzz_secret"), None);
    }
}
