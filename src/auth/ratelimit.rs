//! Sliding-window rate limiting per key or token subject.
//!
//! The window is a log of request times: a request is allowed when fewer than `limit`
//! requests were allowed in the last `window`. With `REDIS_URL` set the log is a Redis
//! sorted set per subject, updated by one Lua script per request, so all replicas share
//! it and the check-and-add is atomic; every request adds a member of its own (a fresh
//! UUID), so requests arriving in the same millisecond are all counted. The script reads
//! the Redis server's clock, so replicas with skewed clocks still agree. Without Redis the
//! log lives in this process.
//!
//! When Redis cannot be reached the caller gets [`Unavailable`] and applies
//! `RATE_LIMIT_REDIS_FAILURE`; after a failure Redis is left alone for a second so an
//! outage costs no latency per request.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The verdict on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The limit that applied.
    pub limit: u32,
    /// Requests still allowed in the current window (after this one).
    pub remaining: u32,
    /// Time until the oldest counted request leaves the window, i.e. until one more
    /// request is allowed when none is left (`Retry-After`, `X-RateLimit-Reset`).
    pub reset: Duration,
}

/// The shared store of the limiter could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store unavailable")]
pub struct Unavailable;

/// How long Redis is skipped after a failure.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// KEYS[1] the subject's sorted set; ARGV window (ms), limit, unique member.
/// Returns {allowed (0/1), remaining, ms until the oldest entry leaves the window}.
const SCRIPT: &str = r"
local key = KEYS[1]
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, ARGV[3])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', key, window)
local reset = window
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, limit - count, reset}
";

pub struct RateLimiter {
    window: Duration,
    backend: Backend,
}

enum Backend {
    Memory(Mutex<HashMap<String, VecDeque<Instant>>>),
    Redis(RedisBackend),
}

struct RedisBackend {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// Set after a failure: Redis is not tried again before this instant.
    skip_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("window", &self.window)
            .field("shared", &self.is_shared())
            .finish()
    }
}

impl RateLimiter {
    /// An in-process limiter.
    pub fn memory(window: Duration) -> RateLimiter {
        RateLimiter {
            window,
            backend: Backend::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// A limiter shared through Redis at `url`. Connects lazily: an unreachable Redis
    /// does not stop the start, it shows in `/ready` and in the failure policy.
    pub fn redis(url: &str, prefix: &str, window: Duration) -> anyhow::Result<RateLimiter> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("invalid REDIS_URL: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {:?}", e.kind()))?;
        Ok(RateLimiter {
            window,
            backend: Backend::Redis(RedisBackend {
                conn,
                script: redis::Script::new(SCRIPT),
                prefix: prefix.to_string(),
                skip_until: Mutex::new(None),
            }),
        })
    }

    /// True when the limit is shared across replicas (Redis).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts one request of `subject` against `limit` per window.
    pub async fn check(&self, subject: &str, limit: u32) -> Result<Decision, Unavailable> {
        match &self.backend {
            Backend::Memory(m) => Ok(self.check_memory(m, subject, limit, Instant::now())),
            Backend::Redis(r) => r.check(subject, limit, self.window).await,
        }
    }

    fn check_memory(
        &self,
        map: &Mutex<HashMap<String, VecDeque<Instant>>>,
        subject: &str,
        limit: u32,
        now: Instant,
    ) -> Decision {
        let mut map = match map.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let window = self.window;
        let expired = |t: &Instant| now.saturating_duration_since(*t) >= window;
        let log = map.entry(subject.to_string()).or_default();
        while log.front().is_some_and(expired) {
            log.pop_front();
        }
        let allowed = log.len() < limit as usize;
        if allowed {
            log.push_back(now);
        }
        let remaining = (limit as usize).saturating_sub(log.len()) as u32;
        let reset = log
            .front()
            .map(|t| window.saturating_sub(now.saturating_duration_since(*t)))
            .unwrap_or(window);
        Decision {
            allowed,
            limit,
            remaining,
            reset,
        }
    }

    /// Forgets the subjects of the in-process limiter with no request in the last window,
    /// so the map holds only recent callers. Run in the background (see `App::run`), never
    /// on a request: it walks the whole map under its lock. Returns how many are left.
    pub fn sweep(&self) -> usize {
        let Backend::Memory(map) = &self.backend else {
            return 0;
        };
        let now = Instant::now();
        let window = self.window;
        let mut map = match map.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.retain(|_, log| {
            while log
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                log.pop_front();
            }
            !log.is_empty()
        });
        map.len()
    }

    /// For `/ready`: `Ok(None)` without Redis, `Ok(Some(()))` when Redis answers a PING.
    pub async fn ping(&self) -> Result<Option<()>, Unavailable> {
        match &self.backend {
            Backend::Memory(_) => Ok(None),
            Backend::Redis(r) => {
                let mut conn = r.conn.clone();
                let pong = tokio::time::timeout(
                    REDIS_TIMEOUT * 2,
                    redis::cmd("PING").query_async::<String>(&mut conn),
                )
                .await;
                match pong {
                    Ok(Ok(_)) => Ok(Some(())),
                    _ => Err(Unavailable),
                }
            }
        }
    }
}

impl RedisBackend {
    async fn check(
        &self,
        subject: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Decision, Unavailable> {
        if self.skipping() {
            return Err(Unavailable);
        }
        let mut conn = self.conn.clone();
        let member = uuid::Uuid::now_v7().simple().to_string();
        let window_ms = window.as_millis().max(1) as u64;
        let mut invocation = self.script.key(format!("{}{subject}", self.prefix));
        invocation.arg(window_ms).arg(limit).arg(member);
        let result = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            invocation.invoke_async::<(i64, i64, i64)>(&mut conn),
        )
        .await;
        match result {
            Ok(Ok((allowed, remaining, reset_ms))) => Ok(Decision {
                allowed: allowed == 1,
                limit,
                remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                reset: Duration::from_millis(reset_ms.clamp(0, window_ms as i64) as u64),
            }),
            Ok(Err(e)) => {
                self.skip(format!("{:?}", e.kind()));
                Err(Unavailable)
            }
            Err(_) => {
                self.skip("timeout".into());
                Err(Unavailable)
            }
        }
    }

    fn skipping(&self) -> bool {
        let guard = match self.skip_until.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.is_some_and(|t| Instant::now() < t)
    }

    fn skip(&self, reason: String) {
        let mut guard = match self.skip_until.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Logged once per back-off period, not once per request.
        tracing::warn!(error = %reason, "rate limiter: Redis unreachable");
        *guard = Some(Instant::now() + REDIS_BACKOFF);
    }
}

/// Client addresses refused for a while after too many failed authentications.
///
/// Failures are counted in the shared limiter (`authfail:<address>`, so every replica
/// sees them); once an address is over the limit, this replica remembers it here until
/// the window has passed, so its further attempts are refused before any credential is
/// checked and before any round trip. Successful requests only look an address up here.
#[derive(Debug, Default)]
pub struct AuthFailures {
    blocked: Mutex<HashMap<std::net::IpAddr, Instant>>,
}

impl AuthFailures {
    /// Until when `addr` is refused, if it is.
    pub fn blocked_until(&self, addr: std::net::IpAddr) -> Option<Instant> {
        let map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&addr).copied().filter(|t| *t > Instant::now())
    }

    /// Refuses `addr` until `until`.
    pub fn block(&self, addr: std::net::IpAddr, until: Instant) {
        let mut map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(addr, until);
    }

    /// Forgets addresses whose block ended (background sweep).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| *t > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_window_is_exact_and_slides() {
        let rl = RateLimiter::memory(Duration::from_secs(10));
        let Backend::Memory(m) = &rl.backend else {
            unreachable!()
        };
        let t0 = Instant::now();
        for i in 0..3 {
            let d = rl.check_memory(m, "k", 3, t0 + Duration::from_millis(i));
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i as u32);
        }
        let d = rl.check_memory(m, "k", 3, t0 + Duration::from_secs(1));
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset, Duration::from_secs(9));
        // Another subject has its own window.
        assert!(rl.check_memory(m, "other", 3, t0).allowed);
        // After the oldest leaves the window one more is allowed.
        let d = rl.check_memory(m, "k", 3, t0 + Duration::from_secs(10));
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(
            !rl.check_memory(m, "k", 3, t0 + Duration::from_secs(10))
                .allowed
        );
    }

    #[test]
    fn the_sweep_forgets_idle_subjects_and_checks_never_sweep() {
        let rl = RateLimiter::memory(Duration::from_millis(50));
        let Backend::Memory(m) = &rl.backend else {
            unreachable!()
        };
        let long_ago = Instant::now() - Duration::from_secs(1);
        for i in 0..20_000 {
            rl.check_memory(m, &format!("s{i}"), 10, long_ago);
        }
        // A check walks only its own subject, whatever the size of the map.
        rl.check_memory(m, "fresh", 10, Instant::now());
        assert_eq!(m.lock().unwrap().len(), 20_001);
        assert_eq!(rl.sweep(), 1, "only the fresh subject is left");
    }
}
