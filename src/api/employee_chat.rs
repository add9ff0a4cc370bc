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
use crate::orchestrator::chat::{self, ChatError};
use crate::state::AppState;
use crate::store::{Employee, StoreError};

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
        (status = 429, description = "Rate limited, or a budget has no room for a model call (`budget_exceeded`, with the budget and its `reset_at`)", body = ErrorBody),
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
    Ok(Json(
        run_turn(&state, employee, body, caller.0.key_id).await?,
    ))
}

/// One turn of `employee` (already read in the caller's tenant): the HTTP route and the
/// MCP endpoint's `chat_with_employee` both run it.
pub(super) async fn run_turn(
    state: &AppState,
    employee: Employee,
    body: ChatTurn,
    key_id: Option<Uuid>,
) -> ApiResult<ChatReply> {
    let chat::Turn {
        session_id,
        answer,
        totals,
    } = chat::turn(state, employee, body.session_id, body.message, key_id)
        .await
        .map_err(|e| match e {
            ChatError::Invalid(f) => ApiError::validation(f.field, f.message),
            e @ ChatError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ChatError::Unreachable(m) => ApiError::Conflict(m),
            ChatError::Upstream(message) => ApiError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message,
                attempts: Vec::new(),
            },
            ChatError::Budget(b) => ApiError::BudgetExceeded(b),
            ChatError::Store(e) => e.into(),
            e @ ChatError::Unexpected(_) => ApiError::Internal(anyhow::Error::new(e)),
        })?;
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
