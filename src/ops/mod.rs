//! Operator tools behind the `health-check`, `analyze-logs`, `backup`, `restore` and
//! `smoke` commands.
//!
//! These run outside the server process (from cron, a container `HEALTHCHECK`, a deploy
//! script or an operator's shell). They talk to the service the way an operator would —
//! over HTTP, through the database's own tools, by reading the log — and never reach
//! into a running server's memory. `cli/` parses flags and prints; the work is here.

pub mod backup;
pub mod health;
pub mod logs;
pub mod smoke;
pub(crate) mod sysinfo;
