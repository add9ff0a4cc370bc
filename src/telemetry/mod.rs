//! Telemetry: JSON logs, Prometheus metrics and OpenTelemetry traces.
//!
//! Metric names are fixed by the alerts and the dashboard under `deploy/monitoring/`;
//! they are declared once in [`metrics`] and nowhere else.

pub mod log_sink;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod traces;
