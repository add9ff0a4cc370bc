//! `POST /mcp`: the platform as an MCP server (Streamable HTTP), so MCP clients (Claude
//! Desktop, IDEs, other agents) hand work to employees.
//!
//! It sits behind the same middleware as `/v1`: the caller authenticates with an API key
//! or a JWT, is rate-limited, and acts in its own tenant. The endpoint is stateless (no
//! `Mcp-Session-Id`; every POST stands alone, JSON answers, SSE only while a `run_task`
//! sends progress), so any replica answers any request behind a load balancer.
//!
//! The tools call what the HTTP routes call — `orchestrator::submit` through the same
//! `CreateTask`, `tasks::decide_task`, `employee_chat::run_turn`, store reads scoped by
//! tenant — and their input schemas are those of the same request types. A read key is
//! shown the read tools only; calling a write tool with it is an MCP error naming the
//! missing scope.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use utoipa::PartialSchema;
use uuid::Uuid;

use super::employee_chat::{self, ChatTurn};
use super::error::ApiError;
use super::page;
use super::tasks::{CreateTask, Decision, TaskInput, answer_task, decide_task};
use crate::auth::{Principal, Scope};
use crate::orchestrator::{self, TaskView};
use crate::state::AppState;
use crate::store::{TaskFilter, TaskStatus};

/// Longest `wait_seconds` of `run_task`.
const MAX_WAIT_SECONDS: u64 = 120;
/// Default `wait_seconds` of `run_task`.
const DEFAULT_WAIT_SECONDS: u64 = 30;
/// Events `get_task` shows (the most recent).
const RECENT_EVENTS: usize = 20;

/// The `/mcp` service over the app's state.
pub fn service(state: AppState) -> StreamableHttpService<McpApi, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // Callers authenticate with a key or a token (no cookies), and the service runs
        // behind its own host names: the SDK's loopback-only Host check does not apply.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.config.max_body_bytes)
        .with_cancellation_token(state.tasks.shutdown.child_token());
    let api = McpApi { state };
    StreamableHttpService::new(
        move || Ok(api.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The tool provider of one request.
#[derive(Clone)]
pub struct McpApi {
    state: AppState,
}

/// One tool: its name, the scope it needs, what it does and its input schema.
struct Spec {
    name: &'static str,
    scope: Scope,
    description: &'static str,
    schema: fn() -> Value,
}

const TOOLS: &[Spec] = &[
    Spec {
        name: "list_employees",
        scope: Scope::Read,
        description: "List the employees of your tenant (newest first), with their role and tools.",
        schema: page_schema,
    },
    Spec {
        name: "run_task",
        scope: Scope::Write,
        description: "Hand a task to an employee. Waits up to wait_seconds (default 30, at most \
                      120) and returns the result when the task ends by then; otherwise the \
                      task id and status (follow it with get_task).",
        schema: run_task_schema,
    },
    Spec {
        name: "get_task",
        scope: Scope::Read,
        description: "A task's status, result or error, usage, and its most recent events.",
        schema: task_id_schema,
    },
    Spec {
        name: "list_pending_approvals",
        scope: Scope::Read,
        description: "Tasks paused on a tool call that needs a human decision, with the call.",
        schema: page_schema,
    },
    Spec {
        name: "approve_task",
        scope: Scope::Write,
        description: "Approve the tool call a task is paused on; the task resumes and runs it.",
        schema: decision_schema,
    },
    Spec {
        name: "reject_task",
        scope: Scope::Write,
        description: "Reject the tool call a task is paused on; the task resumes without it.",
        schema: decision_schema,
    },
    Spec {
        name: "answer_task",
        scope: Scope::Write,
        description: "Answer the question a task is waiting on (status waiting_input, asked \
                      with ask_human; get_task shows the question); the task resumes with \
                      the answer.",
        schema: answer_schema,
    },
    Spec {
        name: "chat_with_employee",
        scope: Scope::Write,
        description: "One conversational turn with an employee; pass the returned session_id \
                      to continue the conversation.",
        schema: chat_schema,
    },
];

/// The JSON schema of an API request type.
fn schema_of<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or_else(|_| json!({"type": "object"}))
}

/// `schema` with one more property (required or not).
fn with_property(mut schema: Value, name: &str, prop: Value, required: bool) -> Value {
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(name.to_string(), prop);
    }
    if required {
        match schema.get_mut("required").and_then(Value::as_array_mut) {
            Some(r) => r.push(Value::from(name)),
            None => schema["required"] = json!([name]),
        }
    }
    schema
}

fn page_schema() -> Value {
    json!({"type": "object", "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 100,
                  "description": "Page size, 1-100; default 20."},
        "cursor": {"type": "string", "description": "next_cursor of the previous page."}}})
}

fn run_task_schema() -> Value {
    with_property(
        schema_of::<CreateTask>(),
        "wait_seconds",
        json!({"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS,
               "description": "How long to wait for the end; default 30."}),
        false,
    )
}

fn task_id_schema() -> Value {
    json!({"type": "object", "required": ["task_id"],
           "properties": {"task_id": {"type": "string", "format": "uuid"}}})
}

fn decision_schema() -> Value {
    with_property(
        schema_of::<Decision>(),
        "task_id",
        json!({"type": "string", "format": "uuid"}),
        true,
    )
}

fn answer_schema() -> Value {
    with_property(
        schema_of::<TaskInput>(),
        "task_id",
        json!({"type": "string", "format": "uuid"}),
        true,
    )
}

fn chat_schema() -> Value {
    with_property(
        schema_of::<ChatTurn>(),
        "employee",
        json!({"type": "string", "description": "Employee id or name."}),
        true,
    )
}

/// The caller the auth middleware let through (its `Principal` travels in the HTTP
/// request the SDK hands over).
fn principal(ctx: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("not authenticated", None))
}

fn tool(spec: &Spec) -> Tool {
    let schema = match (spec.schema)() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Tool::new(spec.name, spec.description, Arc::new(schema))
}

/// A tool's failure the caller reads: the API's message (an internal error is logged and
/// shown as such, with the request id).
fn failure(e: ApiError) -> CallToolResult {
    let text = match &e {
        ApiError::Internal(cause) => {
            tracing::error!(error = %cause, "MCP tool failed");
            format!(
                "internal error (request id {})",
                super::error::current_request_id()
            )
        }
        ApiError::Validation { field, message } => format!("{field}: {message}"),
        other => other.to_string(),
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn success(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
    r.structured_content = Some(v);
    r
}

/// Arguments into an API request type; a mismatch is a validation error naming the path.
fn parse<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        ApiError::validation(
            if path == "." {
                "arguments".into()
            } else {
                path
            },
            e.into_inner().to_string(),
        )
    })
}

fn task_id(args: &mut Map<String, Value>) -> Result<Uuid, ApiError> {
    args.remove("task_id")
        .and_then(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .ok_or_else(|| ApiError::validation("task_id", "must be a task id (UUID)"))
}

impl ServerHandler for McpApi {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "digital-employee",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Hand tasks to digital employees (run_task), follow them (get_task), decide \
                 on paused tool calls (list_pending_approvals, approve_task, reject_task) and \
                 chat with an employee (chat_with_employee).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = principal(&context)?;
        Ok(ListToolsResult::with_all_items(
            TOOLS
                .iter()
                .filter(|t| who.allows(t.scope))
                .map(tool)
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let who = principal(&context)?;
        let name = request.name.as_ref();
        let Some(spec) = TOOLS.iter().find(|t| t.name == name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool '{name}'"),
                None,
            ));
        };
        if !who.allows(spec.scope) {
            return Err(ErrorData::new(
                ErrorCode::INVALID_REQUEST,
                format!(
                    "'{name}' needs the {} scope; this key has only {}",
                    spec.scope.as_str(),
                    who.scope.as_str()
                ),
                None,
            ));
        }
        let args = request.arguments.unwrap_or_default();
        let outcome = match name {
            "list_employees" => self.list_employees(&who, args).await,
            "run_task" => self.run_task(&who, args, &context).await,
            "get_task" => self.get_task(&who, args).await,
            "list_pending_approvals" => self.pending_approvals(&who, args).await,
            "approve_task" => self.decide(&who, args, true).await,
            "reject_task" => self.decide(&who, args, false).await,
            "answer_task" => self.answer(&who, args).await,
            _ => self.chat(&who, args).await,
        };
        Ok(outcome.map_or_else(failure, success).into())
    }
}

impl McpApi {
    async fn list_employees(
        &self,
        who: &Principal,
        args: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let (limit, before) = page_args(&args)?;
        let p = self
            .state
            .store
            .list_employees(who.tenant_id, before, limit)
            .await?;
        let page: super::page::Page<super::employees::EmployeeView> = p.into();
        Ok(serde_json::to_value(page).unwrap_or(Value::Null))
    }

    async fn run_task(
        &self,
        who: &Principal,
        mut args: Map<String, Value>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, ApiError> {
        let wait = match args.remove("wait_seconds") {
            None | Some(Value::Null) => DEFAULT_WAIT_SECONDS,
            Some(v) => v
                .as_u64()
                .filter(|s| *s <= MAX_WAIT_SECONDS)
                .ok_or_else(|| {
                    ApiError::validation(
                        "wait_seconds",
                        format!("must be a whole number from 0 to {MAX_WAIT_SECONDS}"),
                    )
                })?,
        };
        let body: CreateTask = parse(Value::Object(args))?;
        let submitted =
            orchestrator::submit(&self.state, body.into_submit(who.tenant_id, None)).await?;
        let task = self
            .wait_for(
                who.tenant_id,
                submitted.task.id,
                Duration::from_secs(wait),
                ctx,
            )
            .await?;
        Ok(serde_json::to_value(task).unwrap_or(Value::Null))
    }

    /// The task once it has ended or paused for approval, or as it is when `wait` is up;
    /// progress notifications (steps so far, the status) when the client asked for them.
    async fn wait_for(
        &self,
        tenant: Uuid,
        id: Uuid,
        wait: Duration,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<TaskView, ApiError> {
        let deadline = Instant::now() + wait;
        let token = ctx.meta.get_progress_token();
        let mut events = self.state.tasks.events.subscribe();
        let mut last = None;
        loop {
            let finished = self.state.tasks.finished.notified();
            let t = self.state.store.get_task(tenant, id).await?;
            let paused = matches!(
                t.status,
                TaskStatus::WaitingApproval | TaskStatus::WaitingInput
            );
            if t.status.is_terminal() || paused || Instant::now() >= deadline {
                return Ok(TaskView::from(t));
            }
            if let Some(token) = &token {
                let now = (t.status, t.steps);
                if last != Some(now) {
                    last = Some(now);
                    let mut p = ProgressNotificationParam::new(token.clone(), f64::from(t.steps));
                    p.message = Some(format!("{} ({} steps)", t.status.as_str(), t.steps));
                    let _ = ctx.peer.notify_progress(p).await;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Another replica's progress is seen by polling; this one's by the hub.
            tokio::select! {
                _ = finished => {}
                _ = events.recv() => {}
                _ = ctx.ct.cancelled() => return Err(ApiError::BadRequest("cancelled".into())),
                _ = tokio::time::sleep(left.min(Duration::from_millis(500))) => {}
            }
        }
    }

    async fn get_task(
        &self,
        who: &Principal,
        mut args: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let id = task_id(&mut args)?;
        let t = self
            .state
            .store
            .get_task(who.tenant_id, id)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => ApiError::NotFound("no such task".into()),
                e => e.into(),
            })?;
        let all = orchestrator::all_events(&self.state, id).await?;
        let recent: Vec<_> = all.into_iter().rev().take(RECENT_EVENTS).rev().collect();
        Ok(json!({"task": TaskView::from(t), "recent_events": recent}))
    }

    async fn pending_approvals(
        &self,
        who: &Principal,
        args: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let (limit, before) = page_args(&args)?;
        let filter = TaskFilter {
            status: Some(TaskStatus::WaitingApproval),
            employee_id: None,
            created_after: None,
            created_before: None,
            parent_task_id: None,
        };
        let p = self
            .state
            .store
            .list_tasks(who.tenant_id, &filter, before, limit)
            .await?;
        let mut out = Vec::with_capacity(p.items.len());
        for t in p.items {
            let events = orchestrator::all_events(&self.state, t.id).await?;
            let call = events
                .iter()
                .rev()
                .find(|e| e.kind == "status" && e.payload["status"] == "waiting_approval")
                .map(|e| {
                    json!({"tool": e.payload["tool"], "arguments": e.payload["arguments"],
                           "reason": e.payload["reason"],
                           "idempotency_key": e.payload["idempotency_key"]})
                });
            out.push(json!({"task": TaskView::from(t), "pending_call": call}));
        }
        Ok(json!({"data": out, "next_cursor": p.next_cursor.map(page::encode)}))
    }

    async fn decide(
        &self,
        who: &Principal,
        mut args: Map<String, Value>,
        approve: bool,
    ) -> Result<Value, ApiError> {
        let id = task_id(&mut args)?;
        let d: Decision = parse(Value::Object(args))?;
        let view = decide_task(&self.state, who.tenant_id, id, approve, d.reason).await?;
        Ok(serde_json::to_value(view).unwrap_or(Value::Null))
    }

    async fn answer(
        &self,
        who: &Principal,
        mut args: Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let id = task_id(&mut args)?;
        let input: TaskInput = parse(Value::Object(args))?;
        let view = answer_task(&self.state, who.tenant_id, id, input.answer).await?;
        Ok(serde_json::to_value(view).unwrap_or(Value::Null))
    }

    async fn chat(&self, who: &Principal, mut args: Map<String, Value>) -> Result<Value, ApiError> {
        let key = match args.remove("employee") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(ApiError::validation(
                    "employee",
                    "must be an employee id or name",
                ));
            }
        };
        let turn: ChatTurn = parse(Value::Object(args))?;
        let employee = orchestrator::resolve_employee(&self.state, who.tenant_id, &key).await?;
        let reply = employee_chat::run_turn(&self.state, employee, turn, who.key_id).await?;
        Ok(serde_json::to_value(reply).unwrap_or(Value::Null))
    }
}

/// `limit` and `cursor` of a list tool, checked like the API's list parameters.
fn page_args(args: &Map<String, Value>) -> Result<(u32, Option<Uuid>), ApiError> {
    let limit = match args.get("limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ApiError::validation("limit", "must be a whole number"))?,
        ),
    };
    let cursor = args.get("cursor").and_then(Value::as_str);
    Ok((page::limit(limit)?, page::decode(cursor)?))
}
