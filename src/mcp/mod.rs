//! The MCP client: tools from the tenants' MCP servers (Streamable HTTP), for the Agent
//! Runtime and the `/v1/mcp-servers` API.
//!
//! [`Pool`] keeps one session per server on this replica (opened on first use, closed
//! when idle or when the server's fields change), refreshes a server's tool list into
//! the store (on demand and when the server says `notifications/tools/list_changed`),
//! and calls tools with a timeout and a response cap. Every connection goes through the
//! egress policy's client: names are checked when they resolve, no redirects, no proxy.
//! The headers and token of a server are sent, never logged, and scrubbed from every
//! error text that leaves this module.
//!
//! It sits below `state` (which holds the pool) and above `egress` and `store`; the
//! `/mcp` server endpoint is `api::mcp`, not here.

mod client;
pub mod names;

pub use client::{CallError, IDEMPOTENCY_META, Pool, result_value, timeout_of};
