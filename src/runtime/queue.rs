//! How the runtime reaches the task queue without depending on the orchestrator: a run
//! that delegates hands a [`SubTask`] to a [`Queue`], then parks its task in
//! `waiting_subtasks` until the sub-tasks end. The orchestrator implements the trait over
//! its one submit path.

use async_trait::async_trait;
use uuid::Uuid;

use crate::store::{Employee, Task};

/// A task one employee hands another.
#[derive(Clone, Debug)]
pub struct SubTask {
    /// Who runs it (already resolved and checked against the delegation chain).
    pub employee: Employee,
    pub input: String,
    /// The delegating task; `None` for a synchronous chat turn.
    pub parent_task_id: Option<Uuid>,
    /// Depth of the sub-task (the parent's + 1).
    pub depth: i32,
    /// Name of the delegating employee, kept in the sub-task's metadata.
    pub delegated_by: String,
}

/// Why a sub-task was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubTaskError {
    /// The request was refused; the message is for the model.
    #[error("{0}")]
    Refused(String),
    /// Storage failed (logged where it happened).
    #[error("storage is unavailable")]
    Unavailable,
}

/// The queue as the runtime sees it.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Queues a sub-task; a replay of the same delegation returns the first one.
    async fn submit_subtask(&self, sub: SubTask) -> Result<Task, SubTaskError>;
}
