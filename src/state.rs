//! The state shared by every part of a running replica: configuration, store, AI router,
//! authenticator and rate limiter, the request [`Lifecycle`] (draining, in-flight count)
//! and the in-process [`Hub`] of wake-ups.
//!
//! It sits below everything that uses it (`api`, `orchestrator`, `runtime`) and imports
//! none of them; `app` builds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ai::AiRouter;
use crate::auth::Authenticator;
use crate::auth::ratelimit::{AuthFailures, RateLimiter};
use crate::config::Config;
use crate::egress::EgressPolicy;
use crate::store::DynStore;
use crate::telemetry;

/// Shared state of one running app: one reference-counted pointer, so the clone every
/// middleware layer and handler takes of it costs one atomic increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What an [`AppState`] holds.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: DynStore,
    pub ai: Arc<AiRouter>,
    pub auth: Arc<Authenticator>,
    pub rate_limiter: Arc<RateLimiter>,
    /// Client addresses refused after too many failed authentications.
    pub auth_failures: Arc<AuthFailures>,
    pub lifecycle: Arc<Lifecycle>,
    pub tasks: Arc<Hub>,
    /// Where tenant-chosen URLs may point (`EGRESS_ALLOW_CIDRS`).
    pub egress: Arc<EgressPolicy>,
    /// The last readiness checks of the dependencies (database, schema, Redis).
    pub probes: Arc<ProbeCache>,
    /// Sessions with the tenants' MCP servers (under the egress policy).
    pub mcp: Arc<crate::mcp::Pool>,
}

/// One dependency check of the readiness probe.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub name: &'static str,
    pub ok: bool,
    pub detail: Option<String>,
}

/// Readiness checks reused for a short while, so a probe storm (every kubelet, load
/// balancer and monitor asking every second) costs the database and Redis one round of
/// checks per interval; concurrent probes wait for the one refresh in flight.
#[derive(Default)]
pub struct ProbeCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, Vec<ProbeResult>)>>,
}

impl ProbeCache {
    /// The cached results when younger than `ttl`, else the results of `refresh`.
    pub async fn get_or_refresh<F, Fut>(&self, ttl: Duration, refresh: F) -> Vec<ProbeResult>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Vec<ProbeResult>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, results)) = last.as_ref()
            && at.elapsed() < ttl
        {
            return results.clone();
        }
        let results = refresh().await;
        *last = Some((std::time::Instant::now(), results.clone()));
        results
    }
}

/// Draining flag and in-flight request count, for readiness and graceful shutdown.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// The `http_requests_in_flight` gauge, looked up once (at the first request, when
    /// the recorder is installed) instead of twice per request.
    gauge: std::sync::OnceLock<metrics::Gauge>,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a request until the guard drops.
    pub fn track(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.gauge().increment(1.0);
        InFlightGuard(self.clone())
    }

    fn gauge(&self) -> &metrics::Gauge {
        self.gauge
            .get_or_init(|| metrics::gauge!(telemetry::metrics::HTTP_REQUESTS_IN_FLIGHT))
    }

    /// Waits until no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the in-flight count on drop (also when a request is cancelled).
pub struct InFlightGuard(Arc<Lifecycle>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.gauge().decrement(1.0);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The id sent on [`Hub::events`] to mean "every task" (see [`Hub::catch_up_all`]).
pub const TASKS_ALL: Uuid = Uuid::nil();

/// In-process signals shared by the API and the workers of one replica.
pub struct Hub {
    /// Work may be available (a submit, a release, a slot freed).
    wake: Notify,
    /// Some task ended (delegation waits on it).
    pub finished: Notify,
    /// Ids of tasks with new events (SSE followers listen); [`TASKS_ALL`]: every task.
    pub events: broadcast::Sender<Uuid>,
    /// Cancelled when the replica shuts down (SSE streams end).
    pub shutdown: CancellationToken,
    /// Client of the `http_request` tool, webhook tools and completion webhooks: every
    /// target under the egress policy, no redirects, no proxy.
    pub http: reqwest::Client,
    /// A completion webhook was queued (the delivery loop listens).
    pub webhooks: Notify,
    /// Live event streams per tenant on this replica.
    streams: Mutex<HashMap<Uuid, u32>>,
}

/// One live event stream, counted for its tenant until dropped (the stream ended or the
/// client went away).
pub struct StreamSlot {
    hub: Arc<Hub>,
    tenant: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.hub.lock_streams();
        if let Some(n) = open.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
        drop(open);
        metrics::gauge!(telemetry::metrics::SSE_STREAMS_OPEN).decrement(1.0);
    }
}

impl Hub {
    /// A hub whose HTTP client sends tenants' requests under `egress`.
    pub fn new(egress: &Arc<EgressPolicy>) -> reqwest::Result<Self> {
        let http = egress.client(Duration::from_secs(5))?;
        Ok(Self {
            wake: Notify::new(),
            finished: Notify::new(),
            events: broadcast::channel(4096).0,
            shutdown: CancellationToken::new(),
            http,
            webhooks: Notify::new(),
            streams: Mutex::new(HashMap::new()),
        })
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, u32>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new event stream of `tenant`; `None` when it already holds `max`.
    pub fn open_stream(self: &Arc<Self>, tenant: Uuid, max: u32) -> Option<StreamSlot> {
        let mut open = self.lock_streams();
        let n = open.entry(tenant).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(open);
        metrics::gauge!(telemetry::metrics::SSE_STREAMS_OPEN).increment(1.0);
        Some(StreamSlot {
            hub: self.clone(),
            tenant,
        })
    }

    /// Wakes one idle claimer of this replica.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The claim loop's wake-up signal (a submit, a release, a slot freed).
    pub fn wake_signal(&self) -> &Notify {
        &self.wake
    }

    /// Tells SSE followers on this replica that a task has new events.
    pub fn task_changed(&self, id: Uuid) {
        let _ = self.events.send(id);
    }

    /// Tells every SSE follower on this replica to re-read its task's log: wake-ups may
    /// have been missed (the notification connection was down).
    pub fn catch_up_all(&self) {
        let _ = self.events.send(TASKS_ALL);
    }
}
