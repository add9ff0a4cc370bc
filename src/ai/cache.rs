//! Exact-match result cache: key = SHA-256 of the tenant, the candidate chain and the
//! canonical request. The tenant is part of the key so one tenant never receives (or
//! learns the existence of) another's answer.
//! In memory (bounded, TTL) by default; Redis when `REDIS_URL` is set, so replicas share
//! hits. A cache failure is never a request failure: it counts as a miss.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::types::{ChatRequest, ChatResponse};

#[async_trait]
pub trait ResultCache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<ChatResponse>;
    async fn put(&self, key: &str, value: &ChatResponse);
}

/// Only deterministic requests are cached, or those that ask for it.
pub fn cacheable(req: &ChatRequest) -> bool {
    match req.cache {
        Some(explicit) => explicit,
        None => req.temperature.unwrap_or(1.0) == 0.0,
    }
}

/// The cache key of `tenant`'s request routed over `candidates`.
pub fn key(tenant: Uuid, candidates: &[String], req: &ChatRequest) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    for c in candidates {
        h.update(c.as_bytes());
        h.update([0]);
    }
    // serde_json writes struct fields in declaration order: a canonical form.
    h.update(serde_json::to_vec(req).unwrap_or_default());
    format!("de:ai:{}", hex::encode(h.finalize()))
}

pub struct MemoryCache {
    inner: moka::future::Cache<String, Arc<ChatResponse>>,
}

impl MemoryCache {
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .build(),
        }
    }
}

#[async_trait]
impl ResultCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<ChatResponse> {
        self.inner.get(key).await.map(|v| (*v).clone())
    }
    async fn put(&self, key: &str, value: &ChatResponse) {
        self.inner
            .insert(key.to_string(), Arc::new(value.clone()))
            .await;
    }
}

pub struct RedisCache {
    conn: redis::aio::ConnectionManager,
    ttl: Duration,
}

impl RedisCache {
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self { conn, ttl })
    }
}

#[async_trait]
impl ResultCache for RedisCache {
    async fn get(&self, key: &str) -> Option<ChatResponse> {
        let mut c = self.conn.clone();
        let raw: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(&mut c).await.ok()?;
        serde_json::from_slice(&raw?).ok()
    }
    async fn put(&self, key: &str, value: &ChatResponse) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let mut c = self.conn.clone();
        let secs = self.ttl.as_secs().max(1);
        let _: Result<(), _> = redis::cmd("SET")
            .arg(key)
            .arg(bytes)
            .arg("EX")
            .arg(secs)
            .query_async(&mut c)
            .await;
    }
}
