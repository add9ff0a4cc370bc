//! Metric names and the global Prometheus recorder.
//!
//! The recorder is process-global (the `metrics` facade allows one); it is installed
//! once and every app instance in the process renders the same registry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter `{method, endpoint, status}`; `endpoint` is the route template.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram `{method, endpoint}`, seconds.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// Gauge `{version}` = 1.
pub const BUILD_INFO: &str = "digital_employee_build_info";
/// Gauge: authenticated-path requests being served right now (probes excluded).
pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";

/// Gauge: resident set size of the process, bytes.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// Gauge: open file descriptors of the process.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Gauge `{state}`: database pool connections, `state` = `idle` or `in_use`.
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
/// Gauge: the pool's upper bound (`DB_MAX_CONNECTIONS`).
pub const DB_POOL_MAX_CONNECTIONS: &str = "db_pool_max_connections";

/// The `endpoint` label of requests that matched no route, so raw paths never become
/// label values.
pub const UNMATCHED_ENDPOINT: &str = "unmatched";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first call and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours then renders
            // nothing but the process still serves.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests served, by method, route template and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    metrics::describe_gauge!(HTTP_REQUESTS_IN_FLIGHT, "HTTP requests being served");
    metrics::describe_gauge!(BUILD_INFO, "Always 1; labelled with the running version");
    metrics::describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        metrics::Unit::Bytes,
        "Resident memory of the process"
    );
    metrics::describe_gauge!(PROCESS_OPEN_FDS, "Open file descriptors of the process");
    metrics::describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections by state (idle, in_use)"
    );
    metrics::describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        "Largest number of connections the database pool may open"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
