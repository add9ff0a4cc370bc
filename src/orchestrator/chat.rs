//! One synchronous turn of an employee in a conversation session: the same Agent Runtime
//! as a task (system prompt, session history, the LLM ⇄ tool loop, the employee's
//! limits) without the queue — no task row, no lease, steps kept in memory. A tool that
//! needs approval cannot pause a synchronous turn, so the model is told it cannot run.
//! The user and assistant messages are stored in the session only when the turn ends
//! with an answer. `POST /v1/employees/{id}/chat` and the web console's chat both call
//! [`turn`].

use uuid::Uuid;

use super::TaskQueue;
use crate::runtime::{self, Limits, MemorySink, Outcome, Run, Totals};
use crate::state::AppState;
use crate::store::{Employee, FieldError, StoreError};

/// Largest message of one turn.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A turn that answered.
#[derive(Debug)]
pub struct Turn {
    pub session_id: Uuid,
    pub answer: String,
    pub totals: Totals,
}

/// Why a turn did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The message is refused, or a limit (steps, tokens, cost) ended the turn (422).
    #[error(transparent)]
    Invalid(FieldError),
    /// A session of another tenant or employee (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The employee's model policy names no configured provider (409).
    #[error("{0}")]
    Unreachable(String),
    /// Every AI vendor failed (502).
    #[error("{0}")]
    Upstream(String),
    /// A budget had no room for a model call (429).
    #[error("budget exceeded: {0}")]
    Budget(Box<crate::ai::budget::BudgetExceeded>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An outcome a synchronous turn cannot have.
    #[error("unexpected outcome of a synchronous turn: {0}")]
    Unexpected(String),
}

/// Runs one turn of `employee` (already read in the caller's tenant) in `session_id`
/// (a new session when `None`).
pub async fn turn(
    state: &AppState,
    employee: Employee,
    session_id: Option<Uuid>,
    message: String,
    key_id: Option<Uuid>,
) -> Result<Turn, ChatError> {
    let tenant = employee.tenant_id;
    if super::is_blank(&message) {
        return Err(ChatError::Invalid(FieldError::new(
            "message",
            "must not be empty",
        )));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(ChatError::Invalid(FieldError::new(
            "message",
            format!("must be at most {MAX_MESSAGE_BYTES} bytes"),
        )));
    }
    // An employee whose model policy names no provider this deployment has could only
    // fail: say so (the employee, not the vendor, is what needs changing).
    let known = state.ai.provider_names();
    let reachable = employee.fields.model_policy.iter().any(|c| {
        c.split_once('/')
            .is_some_and(|(p, _)| known.iter().any(|k| k == p))
    });
    if !reachable {
        return Err(ChatError::Unreachable(format!(
            "this employee's model_policy names no configured provider (configured: {})",
            known.join(", ")
        )));
    }
    let session_id = session_id.unwrap_or_else(Uuid::now_v7);
    match state
        .store
        .ensure_session(tenant, session_id, employee.id)
        .await
    {
        Ok(_) => {}
        // Another tenant's session, or another employee's: not this employee's to see.
        Err(StoreError::NotFound) => return Err(ChatError::NotFound("session")),
        Err(e) => return Err(e.into()),
    }
    let history = state
        .store
        .list_messages(tenant, session_id, runtime::HISTORY_MESSAGES)
        .await?;
    let messages = runtime::conversation(&employee, history, message.clone());
    let limits = Limits::for_employee(&employee, &state.config.tasks);
    let queue = TaskQueue(state);
    let mut run = Run::new(state, &queue, &employee, None, 0, limits, messages);
    run.key_id = key_id;
    let sink = MemorySink::default();
    let outcome = run.run(&sink).await;
    let totals = run.totals;
    if let Some(b) = run.refused.take() {
        return Err(ChatError::Budget(Box::new(b)));
    }
    let answer = match outcome {
        Outcome::Succeeded { answer, .. } => answer,
        Outcome::Failed {
            error,
            retryable: true,
        } => return Err(ChatError::Upstream(error)),
        Outcome::Failed { error, .. } => {
            return Err(ChatError::Invalid(FieldError::new("message", error)));
        }
        // A memory sink never asks to cancel, loses no lease and a chat never pauses.
        other => return Err(ChatError::Unexpected(format!("{other:?}"))),
    };
    let msgs = runtime::session_turn(session_id, message, answer.clone(), None);
    state.store.append_messages(tenant, &msgs).await?;
    tracing::info!(employee_id = %employee.id, %session_id, steps = totals.steps, "chat turn");
    Ok(Turn {
        session_id,
        answer,
        totals,
    })
}
