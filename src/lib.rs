//! digital-employee: runs AI "digital employees" in production.
//!
//! Module map (imports flow downward only):
//! `cli` → `app` → `api` → `auth` → `store`, `telemetry`; `config` is read once at start.
//! See `docs/ARCHITECTURE.md`.

pub mod ai;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ops;
pub mod orchestrator;
pub mod runtime;
pub mod state;
pub mod store;
pub mod telemetry;
