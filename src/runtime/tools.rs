//! Built-in tools: `calculator`, `current_time`, `memory_get`, `memory_set`,
//! `http_request`, `delegate` and `ask_human` (answered by the runtime: the task waits
//! for a person's answer). An employee is offered only the tools on its
//! `allowed_tools`; arguments are validated against the tool's schema before it runs,
//! and every failure is returned to the model as a tool error it can act on.
//!
//! Webhook tools (`/v1/tools`) are defined per tenant: an allowed name that is not
//! built in is looked up among them, and a call is POSTed to its URL, signed like the
//! completion webhooks.
//!
//! MCP tools (`mcp:<server>/<tool>`, `mcp:<server>/*`) come from the tenant's MCP servers
//! (`/v1/mcp-servers`): offered with the schemas the server listed, under a vendor-safe
//! alias, checked against that schema and called through `state.mcp`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use super::schema;
use super::{Queue, SubTask, SubTaskError};
use crate::ai::types::ToolDef;
use crate::auth::signing;
use crate::egress::{Refusal, refusal_of};
use crate::mcp::names::{self, Entry};
use crate::mcp::{CallError, result_value};
use crate::state::AppState;
use crate::store::{Employee, StoreError, TaskStatus, WebhookTool, now};

/// The event of a webhook tool call, in `X-Digital-Employee-Event`.
pub const TOOL_CALL_EVENT: &str = "tool.call";

/// Names of the built-in tools.
pub const BUILTIN: &[&str] = &[
    "calculator",
    "current_time",
    "memory_get",
    "memory_set",
    "http_request",
    "delegate",
    "ask_human",
];

/// The built-in tool that parks a task until a person answers its question.
pub const ASK_HUMAN: &str = "ask_human";

/// Who is calling a tool, for tools that touch tenant data or spawn work.
pub struct ToolCtx<'a> {
    pub state: &'a AppState,
    pub queue: &'a dyn Queue,
    pub employee: &'a Employee,
    pub task_id: Option<Uuid>,
    pub depth: i32,
    pub deadline: Instant,
    /// The call's stable id (task, step, call index; see [`call_key`]): the same on
    /// every attempt, so a receiver can drop a repeat.
    pub call_key: &'a str,
}

/// The stable id of a tool call: the task (or the synchronous run), the model step that
/// asked for it and its index among that step's calls. Webhook tools get it in
/// [`IDEMPOTENCY_HEADER`] (and as their `webhook-id`), MCP tools in the request's
/// `_meta` under [`MCP_IDEMPOTENCY_META`].
pub fn call_key(run: Uuid, step: i32, index: usize) -> String {
    format!("{run}:{step}:{index}")
}

/// The header carrying a webhook tool call's stable id.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The `_meta` key carrying an MCP tool call's stable id.
pub const MCP_IDEMPOTENCY_META: &str = crate::mcp::IDEMPOTENCY_META;

/// Whether a call may simply be made again when an earlier attempt started it and its
/// outcome was never recorded (ADR 0015): the built-in tools (reads, a keyed write, an
/// idempotent submit) and `http_request` GET. Webhook and MCP tools are not: a repeat
/// of theirs goes to a human first.
pub fn idempotent(name: &str, arguments: &str) -> bool {
    match name {
        "http_request" => serde_json::from_str::<Value>(arguments)
            .ok()
            .and_then(|a| a.get("method").and_then(Value::as_str).map(|m| m == "GET"))
            .unwrap_or(false),
        n => BUILTIN.contains(&n),
    }
}

/// The definition of a built-in tool, or `None` for an unknown name.
pub fn definition(name: &str) -> Option<ToolDef> {
    let (description, parameters) = match name {
        "calculator" => (
            "Evaluate an arithmetic expression (+ - * / % ^ and parentheses).",
            json!({"type": "object", "required": ["expression"], "additionalProperties": false,
                   "properties": {"expression": {"type": "string", "maxLength": 1000}}}),
        ),
        "current_time" => (
            "The current date and time in UTC (RFC 3339).",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        "memory_get" => (
            "Read a value this employee saved earlier under a key.",
            json!({"type": "object", "required": ["key"], "additionalProperties": false,
                   "properties": {"key": {"type": "string", "maxLength": 200}}}),
        ),
        "memory_set" => (
            "Save a value under a key, for later tasks of this employee.",
            json!({"type": "object", "required": ["key", "value"], "additionalProperties": false,
                   "properties": {"key": {"type": "string", "maxLength": 200},
                                  "value": {"type": "string", "maxLength": 10000}}}),
        ),
        "http_request" => (
            "Fetch a URL on an allowed host with GET or POST; returns status and body.",
            json!({"type": "object", "required": ["method", "url"], "additionalProperties": false,
                   "properties": {"method": {"type": "string", "enum": ["GET", "POST"]},
                                  "url": {"type": "string", "maxLength": 2000},
                                  "body": {"type": "string", "maxLength": 100000}}}),
        ),
        "delegate" => (
            "Hand a sub-task to another employee (by name) and wait for its answer.",
            json!({"type": "object", "required": ["employee", "input"], "additionalProperties": false,
                   "properties": {"employee": {"type": "string", "maxLength": 64},
                                  "input": {"type": "string", "maxLength": 100000}}}),
        ),
        "ask_human" => (
            "Ask a person a question and wait for the answer (the task pauses until someone \
             answers). Use it when you cannot go on without a human's information or decision.",
            json!({"type": "object", "required": ["question"], "additionalProperties": false,
                   "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 4000}}}),
        ),
        _ => return None,
    };
    Some(ToolDef {
        name: name.to_string(),
        description: Some(description.to_string()),
        parameters,
    })
}

/// The tools offered to an employee: its allowed tools that exist.
pub fn offered(employee: &Employee) -> Vec<ToolDef> {
    employee
        .fields
        .allowed_tools
        .iter()
        .filter_map(|n| definition(n))
        .collect()
}

/// The tools offered to an employee, and the canonical `mcp:<server>/<tool>` name of
/// each MCP tool's alias.
#[derive(Debug, Default)]
pub struct Offered {
    pub defs: Vec<ToolDef>,
    pub aliases: HashMap<String, String>,
}

impl Offered {
    /// The name a call is known by: the canonical name of an MCP alias, else `name`.
    pub fn canonical<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.get(name).map_or(name, String::as_str)
    }
}

/// Whether a call of `name` (canonical) pauses for a human decision first.
pub fn needs_approval(employee: &Employee, name: &str) -> bool {
    let approval = &employee.fields.approval_tools;
    match Entry::parse(name) {
        Some(e) => names::listed(approval, e.server, e.tool),
        None => approval.iter().any(|t| t == name),
    }
}

/// The tools offered to an employee: its allowed built-in tools, then the tenant's
/// webhook tools it is allowed, then the MCP tools it is allowed (as their servers last
/// listed them). Tools that cannot be read are left out.
pub async fn offered_all(state: &AppState, employee: &Employee) -> Offered {
    let mut offered = Offered {
        defs: offered(employee),
        aliases: HashMap::new(),
    };
    let allowed = &employee.fields.allowed_tools;
    let names: Vec<String> = allowed
        .iter()
        .filter(|n| !BUILTIN.contains(&n.as_str()) && !n.starts_with(names::PREFIX))
        .cloned()
        .collect();
    if !names.is_empty() {
        match state
            .store
            .find_webhook_tools(employee.tenant_id, &names)
            .await
        {
            Ok(found) => offered.defs.extend(names.iter().filter_map(|n| {
                found.iter().find(|t| &t.fields.name == n).map(|t| ToolDef {
                    name: t.fields.name.clone(),
                    description: Some(t.fields.description.clone()),
                    parameters: t.fields.parameters.clone(),
                })
            })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook tools; offering the others")
            }
        }
    }
    let mut servers: Vec<String> = allowed
        .iter()
        .filter_map(|n| Entry::parse(n))
        .map(|e| e.server.to_string())
        .collect();
    servers.dedup();
    if servers.is_empty() {
        return offered;
    }
    match state
        .store
        .find_mcp_servers(employee.tenant_id, &servers)
        .await
    {
        Ok(found) => {
            for s in &found {
                let server = &s.fields.name;
                for t in &s.state.tools {
                    let on_server_list = s
                        .fields
                        .tool_allowlist
                        .as_ref()
                        .is_none_or(|l| l.contains(&t.name));
                    if !on_server_list || !names::listed(allowed, server, &t.name) {
                        continue;
                    }
                    let alias = names::alias(server, &t.name);
                    let canonical = names::canonical(server, &t.name);
                    offered.defs.push(ToolDef {
                        name: alias.clone(),
                        description: Some(match &t.description {
                            Some(d) => format!("{d} (MCP tool {canonical})"),
                            None => format!("MCP tool {canonical}"),
                        }),
                        parameters: t.input_schema.clone(),
                    });
                    offered.aliases.insert(alias, canonical);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the MCP servers; offering the others"),
    }
    offered
}

/// How a tool call ended, for the model and the metrics.
pub struct ToolOutcome {
    /// `ok`, `error`, `invalid` or `denied`.
    pub outcome: &'static str,
    pub content: Value,
}

impl ToolOutcome {
    fn ok(content: Value) -> Self {
        Self {
            outcome: "ok",
            content,
        }
    }
    fn err(outcome: &'static str, msg: impl Into<String>) -> Self {
        Self {
            outcome,
            content: json!({ "error": msg.into() }),
        }
    }
    pub fn is_error(&self) -> bool {
        self.outcome != "ok"
    }
}

/// Parses, validates and runs one call; with tracing on, an `execute_tool` span.
pub async fn run(ctx: &ToolCtx<'_>, name: &str, arguments: &str) -> ToolOutcome {
    let outcome = if crate::telemetry::traces::enabled() {
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = %format!("execute_tool {name}"),
            otel.kind = "internal",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = name,
            gen_ai.tool.type = if BUILTIN.contains(&name) { "function" } else { "extension" },
            tool.outcome = tracing::field::Empty,
        );
        let outcome = run_inner(ctx, name, arguments)
            .instrument(span.clone())
            .await;
        span.record("tool.outcome", outcome.outcome);
        if outcome.is_error() {
            crate::telemetry::traces::set_error(&span, outcome.outcome);
        }
        outcome
    } else {
        run_inner(ctx, name, arguments).await
    };
    metrics::counter!(crate::telemetry::metrics::TOOL_CALLS_TOTAL,
        "tool" => if BUILTIN.contains(&name) {
            name.to_string()
        } else if name.starts_with(names::PREFIX) {
            "mcp".to_string()
        } else if outcome.outcome == "denied" {
            "unknown".to_string()
        } else {
            "webhook".to_string()
        },
        "outcome" => outcome.outcome)
    .increment(1);
    outcome
}

async fn run_inner(ctx: &ToolCtx<'_>, name: &str, arguments: &str) -> ToolOutcome {
    if let Some(entry) = Entry::parse(name).filter(|e| e.tool != "*") {
        return mcp_call(ctx, entry, arguments).await;
    }
    if !ctx.employee.fields.allowed_tools.iter().any(|t| t == name) {
        return ToolOutcome::err("denied", format!("tool '{name}' is not allowed"));
    }
    let mut webhook = None;
    let def = match definition(name) {
        Some(d) => d,
        None => {
            let names = [name.to_string()];
            match ctx
                .state
                .store
                .find_webhook_tools(ctx.employee.tenant_id, &names)
                .await
            {
                Ok(found) => match found.into_iter().next() {
                    Some(t) => {
                        let d = ToolDef {
                            name: t.fields.name.clone(),
                            description: Some(t.fields.description.clone()),
                            parameters: t.fields.parameters.clone(),
                        };
                        webhook = Some(t);
                        d
                    }
                    None => return ToolOutcome::err("denied", format!("unknown tool '{name}'")),
                },
                Err(e) => return ToolOutcome::err("error", store_msg(&e)),
            }
        }
    };
    let args = match parse_arguments(arguments) {
        Ok(v) => v,
        Err(o) => return o,
    };
    if let Err(e) = schema::validate(&def.parameters, &args) {
        return ToolOutcome::err("invalid", format!("invalid arguments: {e}"));
    }
    if let Some(tool) = webhook {
        return webhook_call(ctx, &tool, args).await;
    }
    let s = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    let tenant = ctx.employee.tenant_id;
    match name {
        "calculator" => match super::calc::eval(s("expression")) {
            Ok(v) => ToolOutcome::ok(json!({ "result": v })),
            Err(e) => ToolOutcome::err("error", e),
        },
        "current_time" => ToolOutcome::ok(json!({ "utc": now().to_rfc3339() })),
        "memory_get" => match ctx
            .state
            .store
            .memory_get(tenant, ctx.employee.id, s("key"))
            .await
        {
            Ok(v) => ToolOutcome::ok(json!({ "key": s("key"), "value": v })),
            Err(e) => ToolOutcome::err("error", store_msg(&e)),
        },
        "memory_set" => match ctx
            .state
            .store
            .memory_set(tenant, ctx.employee.id, s("key"), &Value::from(s("value")))
            .await
        {
            Ok(()) => ToolOutcome::ok(json!({ "saved": s("key") })),
            Err(e) => ToolOutcome::err("error", store_msg(&e)),
        },
        "http_request" => http_request(ctx, s("method"), s("url"), args.get("body")).await,
        "delegate" => delegate(ctx, s("employee"), s("input")).await,
        // A task's run answers `ask_human` itself (it waits for the person); reaching here
        // means there is nobody to wait for.
        ASK_HUMAN => ToolOutcome::err(
            "denied",
            "there is no person to ask in a synchronous chat; answer with what you have",
        ),
        _ => ToolOutcome::err("denied", format!("unknown tool '{name}'")),
    }
}

/// The arguments of a call: empty means `{}`.
fn parse_arguments(arguments: &str) -> Result<Value, ToolOutcome> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(arguments)
        .map_err(|e| ToolOutcome::err("invalid", format!("arguments are not JSON: {e}")))
}

/// Calls an MCP tool: allowed by the employee and by the server's allow-list, listed by
/// the server's last refresh, arguments valid for its schema; within the server's
/// timeout (and the task's deadline), the result cut to `HTTP_TOOL_MAX_BYTES`. An error
/// the tool reports, or a server that cannot be reached, is a tool error.
async fn mcp_call(ctx: &ToolCtx<'_>, entry: Entry<'_>, arguments: &str) -> ToolOutcome {
    let Entry { server, tool } = entry;
    let canonical = names::canonical(server, tool);
    if !names::listed(&ctx.employee.fields.allowed_tools, server, tool) {
        return ToolOutcome::err("denied", format!("tool '{canonical}' is not allowed"));
    }
    let found = match ctx
        .state
        .store
        .find_mcp_servers(ctx.employee.tenant_id, &[server.to_string()])
        .await
    {
        Ok(f) => f,
        Err(e) => return ToolOutcome::err("error", store_msg(&e)),
    };
    let Some(s) = found.into_iter().next() else {
        return ToolOutcome::err(
            "error",
            format!("the tenant has no MCP server named '{server}' (deleted?)"),
        );
    };
    if let Some(list) = &s.fields.tool_allowlist
        && !list.iter().any(|t| t == tool)
    {
        return ToolOutcome::err(
            "denied",
            format!("tool '{tool}' is not on the allow-list of MCP server '{server}'"),
        );
    }
    let Some(info) = s.state.tools.iter().find(|t| t.name == tool) else {
        return ToolOutcome::err(
            "error",
            format!(
                "MCP server '{server}' did not list a tool '{tool}' at its last refresh ({})",
                s.state
                    .last_error
                    .as_deref()
                    .unwrap_or(s.state.status.as_str())
            ),
        );
    };
    let args = match parse_arguments(arguments) {
        Ok(v) => v,
        Err(o) => return o,
    };
    if let Err(e) = schema::validate(&info.input_schema, &args) {
        return ToolOutcome::err("invalid", format!("invalid arguments: {e}"));
    }
    let Value::Object(map) = args else {
        return ToolOutcome::err("invalid", "arguments must be a JSON object");
    };
    let timeout =
        crate::mcp::timeout_of(&s).min(ctx.deadline.saturating_duration_since(Instant::now()));
    match ctx
        .state
        .mcp
        .call(&s, tool, map, timeout, Some(ctx.call_key))
        .await
    {
        Err(CallError::Refused(r)) => egress_denied(r),
        Err(CallError::Timeout(t)) => ToolOutcome::err(
            "error",
            format!("MCP tool '{canonical}' did not answer within {t:?}"),
        ),
        Err(CallError::Failed(m)) => ToolOutcome::err(
            "error",
            format!("MCP server '{server}' could not run '{tool}': {m}"),
        ),
        Ok(r) => match result_value(&r, ctx.state.config.tasks.http_max_bytes) {
            (true, content) => ToolOutcome {
                outcome: "error",
                content,
            },
            (false, content) => ToolOutcome::ok(content),
        },
    }
}

fn store_msg(e: &StoreError) -> String {
    tracing::warn!(error = %e, "tool storage error");
    "storage is unavailable; try again later".into()
}

async fn http_request(
    ctx: &ToolCtx<'_>,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> ToolOutcome {
    let cfg = &ctx.state.config.tasks;
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return ToolOutcome::err("invalid", "url is not a valid absolute URL");
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return ToolOutcome::err("invalid", "only http and https URLs are allowed");
    }
    if !host_allowed(&cfg.http_allowed_hosts, &parsed) {
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        return ToolOutcome::err("denied", format!("host '{host}' is not on the allow-list"));
    }
    if let Err(r) = ctx.state.egress.check_request(&parsed) {
        return egress_denied(r);
    }
    let client = &ctx.state.tasks.http;
    let req = if method == "POST" {
        client
            .post(parsed)
            .body(body.and_then(Value::as_str).unwrap_or_default().to_string())
    } else {
        client.get(parsed)
    };
    let timeout = cfg
        .http_timeout
        .min(ctx.deadline.saturating_duration_since(Instant::now()));
    let fetch = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let room = cfg.http_max_bytes.saturating_sub(buf.len());
            if chunk.len() > room {
                buf.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>((status, buf, truncated))
    };
    match tokio::time::timeout(timeout, fetch).await {
        Err(_) => ToolOutcome::err("error", format!("timed out after {timeout:?}")),
        Ok(Err(e)) => request_failed(e, "request failed"),
        Ok(Ok((status, buf, truncated))) => ToolOutcome::ok(json!({
            "status": status,
            "body": String::from_utf8_lossy(&buf),
            "truncated": truncated,
        })),
    }
}

/// Whether `HTTP_TOOL_ALLOWED_HOSTS` lets `url` through: an entry `host:port` allows that
/// port, an entry `host` only the scheme's default port (80 for http, 443 for https).
fn host_allowed(allowed: &[String], url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let with_port = format!("{host}:{port}");
    // `Url::port` is `None` exactly when the port is the scheme's default.
    let default_port = url.port().is_none();
    allowed
        .iter()
        .any(|h| *h == with_port || (default_port && *h == host))
}

fn egress_denied(r: Refusal) -> ToolOutcome {
    ToolOutcome::err(
        "denied",
        format!("refused by the egress policy: {}", r.message()),
    )
}

/// A request that failed: refused by the egress policy at connect time, or otherwise.
fn request_failed(e: reqwest::Error, what: &str) -> ToolOutcome {
    match refusal_of(&e) {
        Some(r) => egress_denied(r),
        None => ToolOutcome::err("error", format!("{what}: {}", e.without_url())),
    }
}

/// Reads a response body up to `max` bytes; `(bytes, truncated)`.
async fn read_capped(
    resp: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// POSTs a call of a webhook tool, signed with the tenant's webhook secret; a 2xx body
/// is the result (JSON when it parses, else text), anything else a tool error.
async fn webhook_call(ctx: &ToolCtx<'_>, tool: &WebhookTool, args: Value) -> ToolOutcome {
    let name = &tool.fields.name;
    let url = match reqwest::Url::parse(&tool.fields.url) {
        Ok(u) => u,
        Err(_) => return egress_denied(Refusal::Scheme),
    };
    if let Err(r) = ctx.state.egress.check_request(&url) {
        return egress_denied(r);
    }
    let body = json!({
        "tool": name,
        "arguments": args,
        "task_id": ctx.task_id,
        "employee_id": ctx.employee.id,
        "call_id": ctx.call_key,
    })
    .to_string();
    let secret = match ctx
        .state
        .store
        .webhook_secret(ctx.employee.tenant_id, &signing::new_secret())
        .await
    {
        Ok(s) => s,
        Err(e) => return ToolOutcome::err("error", store_msg(&e)),
    };
    let timeout = Duration::from_millis(u64::try_from(tool.fields.timeout_ms).unwrap_or(0))
        .min(ctx.deadline.saturating_duration_since(Instant::now()));
    let max = ctx.state.config.tasks.http_max_bytes;
    let req = ctx
        .state
        .tasks
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "digital-employee-tools")
        .header(signing::EVENT_HEADER, TOOL_CALL_EVENT)
        .header(IDEMPOTENCY_HEADER, ctx.call_key)
        // A call made again (on resume) is the same message: the same `webhook-id`.
        .headers(signing::headers(&secret, ctx.call_key, body.as_bytes()))
        .body(body);
    let req = crate::telemetry::traces::propagate(req);
    let call = async {
        let resp = req.send().await?;
        let status = resp.status();
        let (buf, truncated) = read_capped(resp, max).await?;
        Ok::<_, reqwest::Error>((status, buf, truncated))
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => ToolOutcome::err(
            "error",
            format!("tool '{name}' did not answer within {timeout:?}"),
        ),
        Ok(Err(e)) => request_failed(e, &format!("tool '{name}' request failed")),
        Ok(Ok((status, buf, _))) if !status.is_success() => {
            let text: String = String::from_utf8_lossy(&buf).chars().take(500).collect();
            ToolOutcome::err(
                "error",
                format!("tool '{name}' answered HTTP {}: {text}", status.as_u16()),
            )
        }
        Ok(Ok((_, buf, truncated))) => {
            let parsed = if truncated {
                None
            } else {
                serde_json::from_slice::<Value>(&buf).ok()
            };
            ToolOutcome::ok(
                parsed.unwrap_or_else(|| Value::from(String::from_utf8_lossy(&buf).into_owned())),
            )
        }
    }
}

/// Runs a sub-task on another employee of the tenant and waits for its end. Refuses a
/// cycle (an employee already working on this chain of tasks) and a chain deeper than
/// `DELEGATION_MAX_DEPTH`.
async fn delegate(ctx: &ToolCtx<'_>, target: &str, input: &str) -> ToolOutcome {
    let store = &ctx.state.store;
    let tenant = ctx.employee.tenant_id;
    let max_depth = ctx.state.config.tasks.delegation_max_depth;
    if ctx.depth + 1 > max_depth {
        return ToolOutcome::err(
            "denied",
            format!("delegation depth limit ({max_depth}) reached"),
        );
    }
    let callee = match store.find_employee_by_name(tenant, target).await {
        Ok(e) => e,
        Err(StoreError::NotFound) => {
            return ToolOutcome::err("error", format!("no employee named '{target}'"));
        }
        Err(e) => return ToolOutcome::err("error", store_msg(&e)),
    };
    // The chain of employees already working: this one and those of the parent tasks.
    let mut chain = vec![ctx.employee.id];
    let mut cursor = match ctx.task_id {
        Some(id) => store.get_task(tenant, id).await.ok(),
        None => None,
    };
    while let Some(t) = cursor {
        chain.push(t.employee_id);
        cursor = match t.parent_task_id {
            Some(p) if chain.len() < 64 => store.get_task(tenant, p).await.ok(),
            _ => None,
        };
    }
    if chain.contains(&callee.id) {
        return ToolOutcome::err(
            "denied",
            format!(
                "delegation cycle refused: '{target}' is already working on this chain of tasks"
            ),
        );
    }
    let sub = SubTask {
        employee: callee,
        input: input.to_string(),
        parent_task_id: ctx.task_id,
        depth: ctx.depth + 1,
        delegated_by: ctx.employee.fields.name.clone(),
    };
    let child = match ctx.queue.submit_subtask(sub).await {
        Ok(t) => t,
        Err(SubTaskError::Refused(msg)) => return ToolOutcome::err("error", msg),
        Err(SubTaskError::Unavailable) => {
            return ToolOutcome::err("error", "storage is unavailable; try again later");
        }
    };
    // A task waiting here lends its worker slot, so the sub-task can run even when every
    // slot of this replica is held by a waiting parent; it takes one back to go on.
    let lent = match ctx.task_id {
        Some(_) => ctx.queue.lend_slot(),
        None => None,
    };
    let outcome = wait_for_subtask(ctx, target, &child).await;
    if let Some(slot) = lent {
        slot.take_back().await;
    }
    outcome
}

/// Waits for a delegated task to end (or the caller's deadline).
async fn wait_for_subtask(
    ctx: &ToolCtx<'_>,
    target: &str,
    child: &crate::store::Task,
) -> ToolOutcome {
    let store = &ctx.state.store;
    let tenant = ctx.employee.tenant_id;
    loop {
        let waiter = ctx.state.tasks.finished.notified();
        match store.get_task(tenant, child.id).await {
            Ok(t) if t.status.is_terminal() => {
                return if t.status == TaskStatus::Succeeded {
                    ToolOutcome::ok(json!({
                        "task_id": t.id,
                        "employee": target,
                        "output": t.result.as_ref().and_then(|r| r.get("output")).cloned(),
                    }))
                } else {
                    ToolOutcome::err(
                        "error",
                        format!(
                            "sub-task {} ended {}: {}",
                            t.id,
                            t.status.as_str(),
                            t.error.unwrap_or_default()
                        ),
                    )
                };
            }
            Ok(_) => {}
            Err(e) => return ToolOutcome::err("error", store_msg(&e)),
        }
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ToolOutcome::err(
                "error",
                format!("sub-task {} did not finish before the deadline", child.id),
            );
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), waiter).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn an_allow_list_entry_without_a_port_means_the_default_port() {
        let allowed = vec!["api.example.com".to_string(), "127.0.0.1:8080".to_string()];
        let ok = |u: &str| host_allowed(&allowed, &reqwest::Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://api.example.com/x"));
        assert!(ok("https://API.example.com:443/x"));
        assert!(!ok("https://api.example.com:8443/x"), "another port");
        assert!(!ok("http://api.example.com:22/"), "another port");
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1/"));
        assert!(!ok("https://other.example.com/"));
    }

    #[test]
    fn the_allow_list_matches_the_host_the_request_goes_to_and_nothing_like_it() {
        let allowed = vec!["api.example.com".to_string(), "[::1]:9000".to_string()];
        let ok = |u: &str| host_allowed(&allowed, &reqwest::Url::parse(u).unwrap());
        // The host the request goes to decides, not text elsewhere in the URL.
        assert!(!ok("https://api.example.com@evil.example/"), "userinfo");
        assert!(ok("https://user:pw@api.example.com/"));
        assert!(!ok("https://evil.example/?next=api.example.com"));
        assert!(!ok("https://evil.example/api.example.com"));
        assert!(!ok("https://evil.example#api.example.com"));
        // Nothing that merely contains or extends the name.
        assert!(!ok("https://x.api.example.com/"), "a subdomain");
        assert!(!ok("https://api.example.com.evil.example/"), "a suffix");
        assert!(!ok("https://xapi.example.com/"));
        assert!(!ok("https://api.example.com./"), "the root-dot spelling");
        // The default port is the scheme's: 80 for http, 443 for https, written or not.
        assert!(ok("http://api.example.com:80/"));
        assert!(ok("https://api.example.com:443/"));
        assert!(!ok("https://api.example.com:80/"));
        // IPv6 with an explicit port.
        assert!(ok("http://[::1]:9000/"));
        assert!(!ok("http://[::1]:9001/"));
        assert!(!ok("http://[::1]/"));
        // An empty list lets nothing through.
        let none: Vec<String> = Vec::new();
        assert!(!host_allowed(
            &none,
            &reqwest::Url::parse("https://api.example.com/").unwrap()
        ));
    }

    #[test]
    fn empty_arguments_are_an_empty_object_and_bad_json_is_invalid() {
        assert_eq!(parse_arguments("").ok(), Some(json!({})));
        assert_eq!(parse_arguments("  \n").ok(), Some(json!({})));
        assert_eq!(parse_arguments(r#"{"a":1}"#).ok(), Some(json!({"a": 1})));
        let Err(err) = parse_arguments("{nope") else {
            panic!("bad JSON accepted");
        };
        assert!(err.is_error());
        assert_eq!(err.outcome, "invalid");
    }
}
