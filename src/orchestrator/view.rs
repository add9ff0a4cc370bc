//! The public shape of a task, as the API answers it and completion webhooks send it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::{Task, TaskStatus};

/// A task as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub employee_id: Uuid,
    pub status: TaskStatus,
    #[schema(value_type = Object)]
    pub input: Value,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub parent_task_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The schema the answer must satisfy, when the task set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    /// `{"output": "<final answer>"}` once succeeded (the answer's JSON under an output
    /// schema).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// Cost in nano-dollars (exact) and in US dollars.
    pub cost_nanos: i64,
    pub cost_usd: f64,
    pub steps: i32,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        Self {
            id: t.id,
            employee_id: t.employee_id,
            status: t.status,
            input: t.input,
            priority: t.priority,
            run_at: t.run_at,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            parent_task_id: t.parent_task_id,
            session_id: t.session_id,
            idempotency_key: t.idempotency_key,
            callback_url: t.callback_url,
            metadata: t.metadata,
            output_schema: t.output_schema,
            result: t.result,
            error: t.error,
            tokens_in: t.tokens_in,
            tokens_out: t.tokens_out,
            cost_nanos: t.cost_nanos,
            cost_usd: crate::ai::pricing::usd(t.cost_nanos),
            steps: t.steps,
            cancel_requested: t.cancel_requested,
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
            updated_at: t.updated_at,
        }
    }
}
