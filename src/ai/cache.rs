//! Exact-match result cache: key = SHA-256 of the tenant, the candidate chain and the
//! canonical request. The tenant is part of the key so one tenant never receives (or
//! learns the existence of) another's answer.
//! In memory (bounded, TTL) by default; Redis when `REDIS_URL` is set, so replicas share
//! hits. A cache failure is never a request failure: it counts as a miss; and after one,
//! Redis is left alone for a second, so an outage adds no latency to calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long one Redis round trip may take before it counts as a miss.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is not asked after a failure.
const REDIS_REST: Duration = Duration::from_secs(1);

pub struct RedisCache {
    conn: redis::aio::ConnectionManager,
    ttl: Duration,
    /// Set after a failure: until then every lookup is a miss without a round trip (the
    /// connection manager's own reconnection would otherwise hold each call for seconds).
    resting_until: Mutex<Option<Instant>>,
}

impl RedisCache {
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = redis::aio::ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            ttl,
            resting_until: Mutex::new(None),
        })
    }

    /// Runs `cmd`, or `None` when Redis fails, is slow or rests after a failure.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let resting = {
            let mut rest = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
            let resting = rest.is_some_and(|t| Instant::now() < t);
            if !resting {
                *rest = None;
            }
            resting
        };
        if resting {
            return None;
        }
        let mut c = self.conn.clone();
        match tokio::time::timeout(REDIS_TIMEOUT * 2, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.rest(&format!("{:?}", e.kind()));
                None
            }
            Err(_) => {
                self.rest("timeout");
                None
            }
        }
    }

    fn rest(&self, reason: &str) {
        let mut rest = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        if rest.is_none() {
            tracing::warn!(
                error = reason,
                "AI result cache: Redis unreachable; calls miss the cache"
            );
        }
        *rest = Some(Instant::now() + REDIS_REST);
    }
}

#[async_trait]
impl ResultCache for RedisCache {
    async fn get(&self, key: &str) -> Option<ChatResponse> {
        let raw: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        serde_json::from_slice(&raw?).ok()
    }
    async fn put(&self, key: &str, value: &ChatResponse) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        let secs = self.ttl.as_secs().max(1);
        let _: Option<()> = self
            .query(redis::cmd("SET").arg(key).arg(bytes).arg("EX").arg(secs))
            .await;
    }
}
