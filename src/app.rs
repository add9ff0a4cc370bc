//! Builds the application state, starts the listeners and runs the graceful shutdown.
//!
//! Shutdown sequence (SIGTERM or Ctrl-C, or the future a test passes):
//! 1. `/ready` turns 503 at once (draining), the listeners keep accepting so probes and
//!    late requests are still answered;
//! 2. in-flight requests get up to `SHUTDOWN_GRACE_PERIOD` to finish;
//! 3. the listeners stop, open connections finish their current request, the database
//!    pool closes, and `run` returns `Ok` (exit code 0).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod threads;

use threads::ApiThreads;

use crate::auth::ratelimit::RateLimiter;
use crate::auth::{Authenticator, Scope, keys, redact};
use crate::config::Config;
use crate::egress::EgressPolicy;
use crate::state::{AppState, Hub, Lifecycle, Shared};
use crate::store::{self, DEFAULT_TENANT_ID};
use crate::telemetry;

/// How often the `last_used_at` times collected in memory are written.
const KEY_USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How often stored `/v1/responses` answers past their retention are purged.
const RESPONSES_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// How often expired budget reservations are reclaimed and the budget gauges sampled.
const BUDGET_SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// A built app: listeners bound, database connected and checked, not yet serving.
pub struct App {
    state: AppState,
    api_listener: TcpListener,
    metrics_listener: TcpListener,
    bootstrap_key: Option<String>,
    ai_writer: crate::ai::accounting::Writer,
    budget_settler: crate::ai::budget::Settler,
}

impl App {
    /// Connects the store, checks (or, for the embedded SQLite default, applies) the
    /// schema, creates a bootstrap admin key when no key exists, and binds both ports.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        telemetry::metrics::install();
        crate::egress::export_metrics();
        redact::install(&config.redact_extra_patterns, config.secret_values());
        let store = store::connect(&store::ConnectOptions {
            url: config.database_url.expose().to_string(),
            max_connections: config.db_max_connections,
        })
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                config.database_url.redacted()
            )
        })?;

        let status = store
            .schema_status()
            .await
            .context("cannot read the schema version")?;
        if !status.unknown.is_empty() {
            anyhow::bail!(
                "the database has migrations {:?} that this binary does not know; \
                 run a newer digital-employee",
                status.unknown
            );
        }
        if !status.is_current() {
            if config.is_embedded_db() {
                let applied = store
                    .migrate()
                    .await
                    .context("migrating the embedded database")?;
                tracing::info!(?applied, "applied migrations to the embedded database");
            } else {
                anyhow::bail!(
                    "the database schema is outdated (pending migrations {:?}); \
                     run `digital-employee migrate` first",
                    status.pending
                );
            }
        }

        // Without a whitelist, the default tenant gets one admin key on first start; the
        // insert is atomic, so replicas starting together on an empty database mint one.
        let bootstrap_key = if config.api_key_whitelist.is_empty() {
            let issued =
                keys::issue_first(&store, DEFAULT_TENANT_ID, "bootstrap admin", Scope::Admin)
                    .await
                    .context("creating the bootstrap admin key")?;
            issued.map(|k| {
                tracing::info!(prefix = %k.record.prefix, "created the bootstrap admin key");
                k.secret
            })
        } else {
            None
        };

        let api_addr = SocketAddr::new(config.host, config.port);
        let api_listener = TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot listen on {api_addr} (PORT)"))?;
        let metrics_addr = SocketAddr::new(config.host, config.metrics_port);
        let metrics_listener = TcpListener::bind(metrics_addr).await.with_context(|| {
            format!("cannot listen on {metrics_addr} (PROMETHEUS_METRICS_PORT)")
        })?;

        let auth = Authenticator::with_jwt(
            &config.api_key_whitelist,
            &crate::auth::jwt::JwtOptions::from_config(&config),
            store.clone(),
        );
        let rate_limiter = match &config.redis_url {
            Some(url) => RateLimiter::redis(
                url.expose(),
                &config.rate_limit_key_prefix,
                config.rate_limit_window,
            )?,
            None => RateLimiter::memory(config.rate_limit_window),
        };
        // One vendor connection pool for the shared runtime, one per API thread.
        let lanes = config.api_threads + 1;
        let (ai, ai_writer, budget_settler) = crate::ai::build(&config.ai, store.clone(), lanes)
            .await
            .context("setting up the AI providers")?;
        let egress = Arc::new(EgressPolicy::new(config.egress_allow_cidrs.clone()));
        let hub = Hub::new(&egress).context("building the HTTP client for tenant-chosen URLs")?;
        let mcp = crate::mcp::Pool::new(&egress, store.clone())
            .context("building the HTTP client for MCP servers")?;
        Ok(App {
            state: AppState::new(Shared {
                config: Arc::new(config),
                store,
                ai,
                auth,
                rate_limiter: Arc::new(rate_limiter),
                auth_failures: Arc::default(),
                lifecycle: Arc::new(Lifecycle::default()),
                tasks: Arc::new(hub),
                egress,
                probes: Arc::default(),
                mcp: Arc::new(mcp),
            }),
            api_listener,
            metrics_listener,
            bootstrap_key,
            ai_writer,
            budget_settler,
        })
    }

    pub fn api_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.api_listener.local_addr()?)
    }

    pub fn metrics_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.metrics_listener.local_addr()?)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The admin key created on first start when `API_KEY_WHITELIST` is empty. The
    /// caller shows it once; only its hash is stored.
    pub fn take_bootstrap_key(&mut self) -> Option<String> {
        self.bootstrap_key.take()
    }

    /// Serves until `shutdown` resolves, then drains (see the module docs).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            state,
            api_listener,
            metrics_listener,
            ai_writer,
            budget_settler,
            ..
        } = self;
        let stop_listeners = CancellationToken::new();
        let tasks = TaskTracker::new();
        let handle = telemetry::metrics::install();

        let metrics_router =
            crate::api::metrics_router(handle.clone(), state.config.metrics_bearer_token.clone());
        let token = stop_listeners.clone();
        tasks.spawn(async move {
            let served = axum::serve(metrics_listener, metrics_router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });

        // Histograms need periodic upkeep when no exporter thread owns the recorder; the
        // same tick samples the process and database-pool gauges.
        let sampled_store = state.store.clone();
        tasks.spawn(every(
            Duration::from_secs(5),
            stop_listeners.clone(),
            move || {
                handle.run_upkeep();
                telemetry::process::sample(&sampled_store.pool_stats());
                std::future::ready(())
            },
        ));

        // AI call records are written until the API has stopped, then drained.
        let stop_writer = CancellationToken::new();
        tasks.spawn(ai_writer.run(stop_writer.clone()));
        // Budget settlements likewise, drained after the API and the workers stopped.
        tasks.spawn(budget_settler.run(stop_writer.clone()));
        // Budget reservations of dead replicas come back; the budget gauges are sampled.
        if let Some(budgets) = state.ai.budgets().cloned() {
            tasks.spawn(every(
                BUDGET_SWEEP_INTERVAL,
                stop_listeners.clone(),
                move || {
                    let budgets = budgets.clone();
                    async move { budgets.sweep().await }
                },
            ));
        }

        // The in-process rate limiter forgets idle callers here, off the request path.
        let limiter = state.rate_limiter.clone();
        let failures = state.auth_failures.clone();
        tasks.spawn(every(
            state.config.rate_limit_window.max(Duration::from_secs(1)),
            stop_listeners.clone(),
            move || {
                limiter.sweep();
                failures.sweep();
                std::future::ready(())
            },
        ));

        // `last_used_at` of API keys, written in batches (and once more at shutdown).
        let flush_state = state.clone();
        tasks.spawn(every(
            KEY_USAGE_FLUSH_INTERVAL,
            stop_listeners.clone(),
            move || {
                let state = flush_state.clone();
                async move { flush_key_usage(&state).await }
            },
        ));

        // Stored /v1/responses answers past their retention, removed in batches.
        let purge_store = state.store.clone();
        tasks.spawn(every(
            RESPONSES_PURGE_INTERVAL,
            stop_listeners.clone(),
            move || {
                let store = purge_store.clone();
                async move {
                    if let Err(e) = store
                        .purge_expired_responses(chrono::Utc::now(), 1000)
                        .await
                    {
                        tracing::warn!(error = %e, "purging expired responses failed");
                    }
                }
            },
        ));

        let api_router = crate::api::router_with_pages(state.clone(), crate::console::router());
        let token = stop_listeners.clone();
        let header_timeout = state.config.request_header_timeout;
        let mut api = match state.config.api_threads {
            0 => {
                Api::Shared(tasks.spawn(serve_api(api_listener, api_router, header_timeout, token)))
            }
            count => Api::Threads(ApiThreads::start(
                count,
                api_listener,
                api_router,
                header_timeout,
                token,
            )?),
        };
        // Task workers, reaper, scheduler: they stop claiming at once on shutdown and
        // get the same grace period as requests (see `orchestrator`).
        let workers = crate::orchestrator::Workers::start(&state, &tasks);
        tasks.close();

        let addr = SocketAddr::new(state.config.host, state.config.port);
        tracing::info!(%addr, "serving");

        shutdown.await;
        let grace = state.config.shutdown_grace_period;
        state.lifecycle.start_draining();
        tracing::info!(
            in_flight = state.lifecycle.in_flight(),
            grace_period_seconds = grace.as_secs_f64(),
            "shutdown requested: draining"
        );
        let started = tokio::time::Instant::now();
        workers.stop_claiming();
        state.tasks.shutdown.cancel();
        // Keep answering for the drain delay (with `Connection: close`, so proxies drop their
        // pooled connections to us after each response) before waiting for the last
        // requests: closing at once would cut connections a proxy is about to reuse.
        let drain_delay = state.config.shutdown_drain_delay.min(grace);
        let in_flight_done = async {
            tokio::time::sleep(drain_delay).await;
            state.lifecycle.wait_idle().await;
        };
        let (idle, ()) = tokio::join!(
            tokio::time::timeout(grace, in_flight_done),
            workers.drain(grace)
        );
        if idle.is_err() {
            tracing::warn!(
                in_flight = state.lifecycle.in_flight(),
                "grace period over with requests still in flight"
            );
        }
        stop_listeners.cancel();
        // Connections finishing their last request get what is left of the grace period
        // (and at least one second).
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, api.served()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "API serving failed"),
            Err(_) => tracing::warn!("connections still open after the grace period; closing"),
        }
        stop_writer.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
        state.mcp.shutdown(Duration::from_secs(5)).await;
        flush_key_usage(&state).await;
        state.store.close().await;
        // Last: connections opened on the API threads belong to their event loops.
        if let Api::Threads(threads) = api {
            threads.finish().await;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Where the API is served.
enum Api {
    /// On the shared runtime (`API_THREADS=0`).
    Shared(tokio::task::JoinHandle<()>),
    /// On threads of its own.
    Threads(ApiThreads),
}

impl Api {
    /// Resolves when the API has stopped serving.
    async fn served(&mut self) -> anyhow::Result<()> {
        match self {
            Api::Shared(task) => task
                .await
                .map_err(|e| anyhow::anyhow!("API listener task failed: {e}")),
            Api::Threads(threads) => threads.served().await,
        }
    }
}

/// Runs `tick` every `period` (the first time at once) until `stop` is cancelled.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = stop.cancelled() => break,
        }
    }
}

async fn flush_key_usage(state: &AppState) {
    if let Err(e) = state.auth.usage.flush(&state.store).await {
        tracing::warn!(error = %e, "could not record API key usage; will retry");
    }
}

/// Serves the API like `axum::serve`, plus a deadline for reading request headers
/// (`REQUEST_HEADER_TIMEOUT`), which `axum::serve` does not offer: a client that opens a
/// connection and trickles its headers is disconnected instead of holding a slot.
/// On `stop` it accepts no more connections, asks open ones to finish their current
/// request, and returns when all are closed.
async fn serve_api(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let connections = Connections::new(router, header_timeout, stop.clone());
    accept_until(listener, &stop, |stream, peer| {
        connections.reserve();
        connections.serve(stream, peer);
    })
    .await;
    connections.drain().await;
}

/// Accepts connections on `listener` until `stop` is cancelled, handing each (with
/// `TCP_NODELAY` set) to `each`; the listener is closed when it returns.
async fn accept_until(
    listener: TcpListener,
    stop: &CancellationToken,
    mut each: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        each(stream, peer);
    }
}

/// The API's connections on one runtime: each served on a task of the runtime that
/// calls [`Connections::serve`], with the header-read deadline, the peer address in every
/// request, and a graceful end on `stop`. Clones share the count of open connections.
#[derive(Clone)]
struct Connections {
    builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    router: axum::Router,
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Connections reserved for or served by this runtime and not yet closed.
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Connections {
    fn new(router: axum::Router, header_timeout: Duration, stop: CancellationToken) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioTimer};
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        Connections {
            builder: Arc::new(builder),
            router,
            stop,
            tracker: TaskTracker::new(),
            open: Arc::default(),
        }
    }

    /// Open connections, counting those reserved but not yet served.
    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a connection about to be handed to [`Connections::serve`] (or dropped with
    /// [`Connections::unreserve`]).
    fn reserve(&self) {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes back a reservation whose connection was not served.
    fn unreserve(&self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serves `stream` (reserved) on a task of the current runtime until it closes.
    fn serve(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        use hyper_util::rt::TokioIo;
        use hyper_util::service::TowerToHyperService;

        /// Ends the reservation when the connection's task ends, however it ends.
        struct Closed(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Closed {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let closed = Closed(self.open.clone());
        // Every request knows the address it came from (failed-authentication limits).
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                })
                .service(self.router.clone()),
        );
        let builder = self.builder.clone();
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            let _closed = closed;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                    return;
                }
                () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }

    /// Waits until every connection served here has closed (call after the last serve).
    async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not
/// when the future is first polled, so call it before announcing readiness: a signal that
/// arrives in between is then a clean shutdown rather than the default "terminate".
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
