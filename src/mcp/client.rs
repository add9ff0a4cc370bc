//! Sessions with the tenants' MCP servers, tool-list refreshes and tool calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::egress::{EgressPolicy, Refusal, refusal_of};
use crate::store::{DynStore, McpServer, McpServerState, McpToolInfo, StoreResult, now};

/// Largest single MCP message (a tool list, a tool result) accepted from a server; a
/// larger one fails the request instead of filling memory.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Tools of one server kept in the cache.
pub const MAX_TOOLS: usize = 500;
/// The `_meta` key of a tool call that carries the call's stable id: the same when the
/// call is made again after a crash, so a server can drop a repeat.
pub const IDEMPOTENCY_META: &str = "digital-employee/idempotencyKey";
/// A session unused this long is closed (the next use opens a new one).
const IDLE: Duration = Duration::from_secs(300);
/// Sessions one replica keeps open; past it the least recently used closes.
const MAX_SESSIONS: usize = 256;

/// Why a call (or a refresh) did not get an answer from the server.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("refused by the egress policy: {}", .0.message())]
    Refused(Refusal),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The server could not be reached or broke the protocol (text scrubbed of secrets).
    #[error("{0}")]
    Failed(String),
}

/// One open session with a server, for the server's fields as of `version`.
struct Session {
    version: DateTime<Utc>,
    client: RunningService<RoleClient, Listener>,
    last_used: Mutex<Instant>,
}

impl Session {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    fn idle(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// The client side of a session: answers the server's notifications. A changed tool
/// list is read again and stored at once.
#[derive(Clone)]
struct Listener {
    store: DynStore,
    server: McpServer,
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("digital-employee", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        let s = &self.server;
        let state = match context.peer.list_all_tools().await {
            Ok(tools) => listed(tools),
            Err(e) => failed(s, &e.to_string()),
        };
        match self
            .store
            .set_mcp_server_state(s.tenant_id, s.id, s.updated_at, &state)
            .await
        {
            Ok(_) => tracing::info!(mcp_server_id = %s.id, status = %state.status,
                "MCP tool list changed; cache refreshed"),
            Err(e) => tracing::warn!(mcp_server_id = %s.id, error = %e,
                "cannot store the changed MCP tool list"),
        }
    }
}

/// The tool list a server answered, as the cache keeps it.
fn listed(tools: Vec<rmcp::model::Tool>) -> McpServerState {
    McpServerState {
        status: "ok".into(),
        last_error: None,
        tools: tools
            .into_iter()
            .take(MAX_TOOLS)
            .map(|t| McpToolInfo {
                name: t.name.into_owned(),
                description: t.description.map(|d| d.into_owned()),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect(),
        refreshed_at: Some(now()),
    }
}

/// A failed refresh: the tools of the last good one stay usable, the error is shown.
fn failed(server: &McpServer, error: &str) -> McpServerState {
    McpServerState {
        status: "error".into(),
        last_error: Some(scrub(server, error)),
        tools: server.state.tools.clone(),
        refreshed_at: Some(now()),
    }
}

/// `text` without the server's header values and token, then through the log redactor.
pub fn scrub(server: &McpServer, text: &str) -> String {
    let mut out = without_type_names(text);
    let f = &server.fields;
    for secret in f.headers.values().chain(f.bearer_token.iter()) {
        if !secret.is_empty() {
            out = out.replace(secret.as_str(), "***");
        }
    }
    let out: String = out.chars().take(1000).collect();
    crate::auth::redact::redact(&out).0
}

/// `text` without the bracketed Rust type paths the SDK puts in its transport errors
/// (`Transport [some::crate::Type<..>] error: …` becomes `Transport error: …`): they say
/// nothing to a user and expose how the service is built.
fn without_type_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(len) = rest[open..].find(']') else {
            break;
        };
        let inside = &rest[open + 1..open + len];
        let type_path = inside.contains("::")
            && inside
                .split(", ")
                .all(|part| !part.contains(char::is_whitespace));
        if type_path {
            out.push_str(rest[..open].strip_suffix(' ').unwrap_or(&rest[..open]));
        } else {
            out.push_str(&rest[..=open + len]);
        }
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The error of an MCP request: the egress refusal when that is what failed it.
fn call_error(server: &McpServer, e: &(dyn std::error::Error + 'static)) -> CallError {
    if let Some(r) = refusal_of(e) {
        return CallError::Refused(r);
    }
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cur = s.source();
    }
    CallError::Failed(scrub(server, &text))
}

/// Sessions with MCP servers, shared by the runtime and the API of one replica.
pub struct Pool {
    http: reqwest::Client,
    egress: Arc<EgressPolicy>,
    store: DynStore,
    sessions: tokio::sync::Mutex<HashMap<Uuid, Arc<Session>>>,
    /// Background refreshes (after a create or an update); waited for at shutdown.
    tracker: TaskTracker,
}

impl Pool {
    /// A pool whose connections go through `egress` (its client: checked resolution, no
    /// redirects, no proxy).
    pub fn new(egress: &Arc<EgressPolicy>, store: DynStore) -> reqwest::Result<Self> {
        Ok(Self {
            http: egress.client(Duration::from_secs(5))?,
            egress: egress.clone(),
            store,
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
        })
    }

    /// Opens a session: the egress check, then `initialize` within `timeout`.
    async fn connect(&self, server: &McpServer, timeout: Duration) -> Result<Session, CallError> {
        let f = &server.fields;
        let url = reqwest::Url::parse(&f.url).map_err(|_| CallError::Refused(Refusal::Scheme))?;
        self.egress
            .check_request(&url)
            .map_err(CallError::Refused)?;
        let mut headers = HashMap::new();
        for (k, v) in &f.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return Err(CallError::Failed(format!("header '{k}' is not valid")));
            };
            headers.insert(name, value);
        }
        // The session is opened for this call: its requests continue the caller's trace.
        if let Some(tp) = crate::telemetry::traces::current_traceparent()
            .and_then(|t| HeaderValue::from_str(&t).ok())
        {
            headers.insert(
                HeaderName::from_static(crate::telemetry::traces::TRACEPARENT),
                tp,
            );
        }
        let mut config = StreamableHttpClientTransportConfig::with_uri(f.url.as_str())
            .custom_headers(headers)
            .max_json_response_size(MAX_MESSAGE_BYTES)
            .max_sse_event_size(MAX_MESSAGE_BYTES);
        if let Some(token) = &f.bearer_token {
            config = config.auth_header(token.clone());
        }
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let listener = Listener {
            store: self.store.clone(),
            server: server.clone(),
        };
        let client = match tokio::time::timeout(timeout, listener.serve(transport)).await {
            Err(_) => return Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => return Err(call_error(server, &e)),
            Ok(Ok(c)) => c,
        };
        Ok(Session {
            version: server.updated_at,
            client,
            last_used: Mutex::new(Instant::now()),
        })
    }

    /// The open session with `server` (for its current fields), or a new one.
    async fn session(
        &self,
        server: &McpServer,
        timeout: Duration,
    ) -> Result<Arc<Session>, CallError> {
        {
            let mut open = self.sessions.lock().await;
            open.retain(|_, s| s.idle() < IDLE && !s.client.is_closed());
            if let Some(s) = open.get(&server.id)
                && s.version == server.updated_at
            {
                s.touch();
                return Ok(s.clone());
            }
        }
        let fresh = Arc::new(self.connect(server, timeout).await?);
        let mut open = self.sessions.lock().await;
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().max_by_key(|(_, s)| s.idle()).map(|(id, _)| *id)
        {
            open.remove(&oldest);
        }
        open.insert(server.id, fresh.clone());
        Ok(fresh)
    }

    /// Forgets the session with a server (it failed; the next use opens a new one).
    async fn drop_session(&self, id: Uuid) {
        self.sessions.lock().await.remove(&id);
    }

    /// Lists the server's tools (every page) within its timeout.
    pub async fn list_tools(&self, server: &McpServer) -> Result<Vec<McpToolInfo>, CallError> {
        let timeout = timeout_of(server);
        let started = Instant::now();
        let session = self.session(server, timeout).await?;
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, session.client.peer().list_all_tools()).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => {
                self.drop_session(server.id).await;
                Err(call_error(server, &e))
            }
            Ok(Ok(tools)) => Ok(listed(tools).tools),
        }
    }

    /// Refreshes the cached tool list (or records why it failed) and returns the row as
    /// stored. A refresh that raced an update of the server's fields stores nothing and
    /// returns the row as it is now.
    pub async fn refresh(&self, server: &McpServer) -> StoreResult<McpServer> {
        let state = match self.list_tools(server).await {
            Ok(tools) => McpServerState {
                status: "ok".into(),
                last_error: None,
                tools,
                refreshed_at: Some(now()),
            },
            Err(e) => failed(server, &e.to_string()),
        };
        if state.status == "ok" {
            tracing::info!(mcp_server_id = %server.id, tools = state.tools.len(), "MCP server refreshed");
        } else {
            tracing::warn!(mcp_server_id = %server.id, error = state.last_error.as_deref().unwrap_or(""),
                "MCP server refresh failed");
        }
        match self
            .store
            .set_mcp_server_state(server.tenant_id, server.id, server.updated_at, &state)
            .await?
        {
            Some(s) => Ok(s),
            None => self.store.get_mcp_server(server.tenant_id, server.id).await,
        }
    }

    /// Refreshes in the background (after a create or an update, so the API answers at
    /// once); tracked, and waited for at shutdown.
    pub fn refresh_later(self: &Arc<Self>, server: McpServer) {
        let pool = self.clone();
        self.tracker.spawn(async move {
            if let Err(e) = pool.refresh(&server).await {
                tracing::warn!(mcp_server_id = %server.id, error = %e, "cannot store an MCP refresh");
            }
        });
    }

    /// Calls `tool` with `arguments` within `timeout`. An error the tool reports is an
    /// `Ok` result with `is_error` set; `Err` means no answer.
    pub async fn call(
        &self,
        server: &McpServer,
        tool: &str,
        arguments: Map<String, Value>,
        timeout: Duration,
        idempotency_key: Option<&str>,
    ) -> Result<CallToolResult, CallError> {
        let started = Instant::now();
        let session = self.session(server, timeout).await?;
        let left = timeout.saturating_sub(started.elapsed());
        let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        if let Some(key) = idempotency_key {
            let mut meta = Map::new();
            meta.insert(IDEMPOTENCY_META.to_string(), Value::from(key));
            params.meta = Some(meta.into());
        }
        match tokio::time::timeout(left, session.client.peer().call_tool(params)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => {
                self.drop_session(server.id).await;
                Err(call_error(server, &e))
            }
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Closes every session and waits (up to `grace`) for background refreshes.
    pub async fn shutdown(&self, grace: Duration) {
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        let open: Vec<Arc<Session>> = self.sessions.lock().await.drain().map(|(_, s)| s).collect();
        for s in open {
            s.client.cancellation_token().cancel();
        }
    }
}

/// The server's own timeout.
pub fn timeout_of(server: &McpServer) -> Duration {
    Duration::from_millis(u64::try_from(server.fields.timeout_ms).unwrap_or(0).max(1))
}

/// A tool result as the model sees it: `(is_error, content)`. Structured content when
/// the server gave it, else the text (JSON when it parses), other blocks described
/// without their data; at most `max` bytes of text (`truncated` says when cut).
pub fn result_value(r: &CallToolResult, max: usize) -> (bool, Value) {
    let is_error = r.is_error.unwrap_or(false);
    let mut texts = Vec::new();
    let mut others = Vec::new();
    for block in &r.content {
        match block {
            ContentBlock::Text(t) => texts.push(t.text.as_str()),
            other => {
                let mut v = serde_json::to_value(other).unwrap_or(Value::Null);
                if let Some(data) = v.get("data").and_then(Value::as_str) {
                    let n = data.len();
                    v["data"] = Value::from(format!("<{n} bytes of base64 left out>"));
                }
                if let Some(res) = v.get_mut("resource")
                    && let Some(blob) = res.get("blob").and_then(Value::as_str)
                {
                    let n = blob.len();
                    res["blob"] = Value::from(format!("<{n} bytes of base64 left out>"));
                }
                others.push(v);
            }
        }
    }
    let text = texts.join("\n");
    if is_error {
        let msg = if text.is_empty() {
            "the tool reported an error".to_string()
        } else {
            text
        };
        return (true, json!({ "error": cut(&msg, max).0 }));
    }
    if let Some(s) = &r.structured_content
        && s.to_string().len() <= max
    {
        return (false, s.clone());
    }
    let (kept, truncated) = cut(&text, max);
    let main = if truncated {
        json!({"text": kept, "truncated": true})
    } else {
        match serde_json::from_str::<Value>(&kept) {
            Ok(v) if !kept.trim().is_empty() => v,
            _ => Value::from(kept),
        }
    };
    if others.is_empty() {
        (false, main)
    } else {
        (false, json!({"content": main, "attachments": others}))
    }
}

/// `s` cut to at most `max` bytes on a character boundary; whether it was cut.
fn cut(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_string(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn transport_errors_lose_their_type_paths() {
        let text = "Transport send error: Transport [rmcp::transport::worker::WorkerTransport<rmcp::transport::streamable_http_client::StreamableHttpClientWorker<reqwest::Client, a::B>>] error: Client error: error sending request";
        assert_eq!(
            without_type_names(text),
            "Transport send error: Transport error: Client error: error sending request"
        );
        for kept in [
            "status [500] from the server",
            "see [docs::setup here]",
            "an open [bracket",
            "",
        ] {
            assert_eq!(without_type_names(kept), kept);
        }
    }

    #[test]
    fn results_map_to_what_the_model_sees() {
        let ok = CallToolResult::success(vec![ContentBlock::text("{\"n\": 3}")]);
        assert_eq!(result_value(&ok, 100), (false, json!({"n": 3})));
        let text = CallToolResult::success(vec![ContentBlock::text("hello")]);
        assert_eq!(result_value(&text, 100), (false, json!("hello")));
        let long = CallToolResult::success(vec![ContentBlock::text("é".repeat(10))]);
        let (_, v) = result_value(&long, 5);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["text"], "éé");
        let err = CallToolResult::error(vec![ContentBlock::text("no such file")]);
        assert_eq!(
            result_value(&err, 100),
            (true, json!({"error": "no such file"}))
        );
        let mut structured = CallToolResult::success(vec![ContentBlock::text("x")]);
        structured.structured_content = Some(json!({"rows": 2}));
        assert_eq!(result_value(&structured, 100), (false, json!({"rows": 2})));
        let img = CallToolResult::success(vec![ContentBlock::image("QUJD", "image/png")]);
        let (_, v) = result_value(&img, 100);
        assert_eq!(v["attachments"][0]["mimeType"], "image/png");
        assert!(
            v["attachments"][0]["data"]
                .as_str()
                .unwrap()
                .contains("4 bytes")
        );
    }
}
