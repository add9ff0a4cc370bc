//! `POST /v1/employees/{id}/chat`: one synchronous turn of an employee in a session.
//!
//! The turn runs through the same Agent Runtime as a task (system prompt, session
//! history, the LLM ⇄ tool loop, the employee's limits) but without the queue: no task
//! row, no lease, steps kept in memory. A tool that needs approval cannot pause a
//! synchronous turn, so the model is told it cannot run. The user and assistant messages
//! are stored in the session only when the turn ends with an answer, so a task submitted
//! later with the same `session_id` sees the same history.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use crate::auth::Scope;
use crate::orchestrator::TaskQueue;
use crate::runtime::{self, Limits, MemorySink, Outcome, Run};
use crate::state::AppState;
use crate::store::{Employee, StoreError};

const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// One user turn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatTurn {
    /// Session to continue; a new one is created when absent (or when this id is new).
    #[serde(default)]
    pub session_id: Option<Uuid>,
    /// What the user says.
    #[schema(example = "What is 2 + 3 * 4?")]
    pub message: String,
}

/// Tokens and cost of a turn, all steps included.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TurnUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Cost in nano-dollars (exact) and in US dollars.
    pub cost_nanos: i64,
    pub cost_usd: f64,
}

/// The employee's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatReply {
    pub session_id: Uuid,
    pub answer: String,
    pub usage: TurnUsage,
    /// LLM calls made for this turn.
    pub steps: i32,
}

/// Run one synchronous turn of the employee in a session.
///
/// Answers when the model gives a final answer. A turn that hits one of the employee's
/// limits (steps, tokens, cost, deadline) answers 422 with the reason; every AI vendor
/// failing answers 502. Nothing is stored in the session then.
#[utoipa::path(post, path = "/v1/employees/{id}/chat", tag = "employees",
    params(("id" = Uuid, Path, description = "Employee id")),
    request_body = ChatTurn,
    responses(
        (status = 200, description = "The answer, the session and the usage", body = ChatReply),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the write scope", body = ErrorBody),
        (status = 404, description = "No such employee or session in this tenant", body = ErrorBody),
        (status = 409, description = "The employee's model policy names no configured provider", body = ErrorBody),
        (status = 422, description = "Invalid field, or a limit ended the turn", body = ErrorBody),
        (status = 502, description = "Every AI vendor failed", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<ChatTurn>,
) -> ApiResult<Json<ChatReply>> {
    caller.require(Scope::Write)?;
    let tenant = caller.0.tenant_id;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("employee not found".into()))?;
    let employee = match state.store.get_employee(tenant, id).await {
        Ok(e) => e,
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("employee not found".into())),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(run_turn(&state, employee, body).await?))
}

/// One turn of `employee` (already read in the caller's tenant): the HTTP route and the
/// MCP endpoint's `chat_with_employee` both run it.
pub(super) async fn run_turn(
    state: &AppState,
    employee: Employee,
    body: ChatTurn,
) -> ApiResult<ChatReply> {
    let tenant = employee.tenant_id;
    if crate::orchestrator::is_blank(&body.message) {
        return Err(ApiError::validation("message", "must not be empty"));
    }
    if body.message.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::validation(
            "message",
            format!("must be at most {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    // An employee whose model policy names no provider this deployment has could only
    // fail: say so (the employee, not the vendor, is what needs changing).
    let known = state.ai.provider_names();
    let reachable = employee.fields.model_policy.iter().any(|c| {
        c.split_once('/')
            .is_some_and(|(p, _)| known.iter().any(|k| k == p))
    });
    if !reachable {
        return Err(ApiError::Conflict(format!(
            "this employee's model_policy names no configured provider (configured: {})",
            known.join(", ")
        )));
    }
    let session_id = body.session_id.unwrap_or_else(Uuid::now_v7);
    match state
        .store
        .ensure_session(tenant, session_id, employee.id)
        .await
    {
        Ok(_) => {}
        // Another employee's session of this tenant: not this employee's to see. (Another
        // tenant's session with this id is a different session: keys are per tenant.)
        Err(StoreError::NotFound) => return Err(ApiError::NotFound("session not found".into())),
        Err(e) => return Err(e.into()),
    }
    let history = state
        .store
        .list_messages(tenant, session_id, runtime::HISTORY_MESSAGES)
        .await?;
    let messages = runtime::conversation(&employee, history, body.message.clone());
    let limits = Limits::for_employee(&employee, &state.config.tasks);
    let queue = TaskQueue(state);
    let mut run = Run::new(state, &queue, &employee, None, 0, limits, messages);
    let sink = MemorySink::default();
    let outcome = run.run(&sink).await;
    let totals = run.totals;
    let answer = match outcome {
        Outcome::Succeeded { answer, .. } => answer,
        Outcome::Failed {
            error,
            retryable: true,
        } => {
            return Err(ApiError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message: error,
                attempts: Vec::new(),
            });
        }
        Outcome::Failed { error, .. } => return Err(ApiError::validation("message", error)),
        // A memory sink never asks to cancel, loses no lease and a chat never pauses.
        other => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "unexpected outcome of a synchronous turn: {other:?}"
            )));
        }
    };
    let msgs = runtime::session_turn(session_id, body.message, answer.clone(), None);
    state.store.append_messages(tenant, &msgs).await?;
    tracing::info!(employee_id = %employee.id, %session_id, steps = totals.steps, "chat turn");
    Ok(ChatReply {
        session_id,
        answer,
        usage: TurnUsage {
            input_tokens: totals.tokens_in,
            output_tokens: totals.tokens_out,
            cost_nanos: totals.cost_nanos,
            cost_usd: crate::ai::pricing::usd(totals.cost_nanos),
        },
        steps: totals.steps,
    })
}
