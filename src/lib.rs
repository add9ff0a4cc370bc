//! digital-employee: runs AI "digital employees" in production.
//!
//! Modules are layers; imports only point down (`tests/architecture.rs` checks it):
//! `cli` → `app` → `api`, `console` → `orchestrator` → `runtime` → `state` → `ai`, `egress`, `ops` →
//! `telemetry` → `auth` → `store` → `config`. See `docs/ARCHITECTURE.md`.

pub mod ai;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod egress;
pub mod mcp;
pub mod ops;
pub mod orchestrator;
pub mod runtime;
pub mod state;
pub mod store;
pub mod telemetry;
