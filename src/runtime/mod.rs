//! The Agent Runtime: runs one employee's LLM ⇄ tool loop to a final answer or to a
//! limit, recording every step through a [`Sink`].
//!
//! It owns the conversation (system prompt from role and instructions, session history,
//! the input, and — when a task runs again after a crash, a lost lease, a retry or an
//! approval — the steps already recorded in `task_events`), the limits (steps, tokens,
//! cost, deadline) and the cancel checks. It does not own leases or task statuses: the
//! orchestrator turns an [`Outcome`] into the task's end. Vendors are reached only
//! through `state.ai`.
//!
//! Checkpoints (ADR 0015): every recorded step is one. A new attempt rebuilds the
//! conversation with [`Run::replay`] and continues at the first step not recorded: a
//! model turn that is recorded is never asked again, a tool call whose result is
//! recorded is never made again. A tool call is recorded `tool_started` before it is
//! made; one that was started and has no result is made again only when the tool is
//! idempotent ([`tools::idempotent`]), otherwise a human decides (`waiting_approval`,
//! reason `outcome unknown`).

pub mod calc;
mod queue;
pub mod schema;
pub mod tools;

pub use queue::{Queue, SubTask, SubTaskError};

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ai::CallContext;
use crate::ai::types::{ChatRequest, Message, Role, ToolCall};
use crate::config::TaskConfig;
use crate::state::AppState;
use crate::store::{
    Employee, NewEvent, SessionMessage, StepUpdate, StoreResult, TaskEvent, TaskStatus, now,
};

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded {
        answer: String,
        /// The answer as JSON, when an output schema asked for it (and it fits).
        output: Option<Value>,
    },
    /// `retryable` failures (vendor exhausted, storage unavailable) may run again.
    Failed {
        error: String,
        retryable: bool,
    },
    Cancelled,
    /// Paused on a tool call that needs a human decision.
    WaitingApproval,
    /// Waiting for delegated sub-tasks to end (no worker held meanwhile).
    WaitingSubtasks,
    /// Paused on a question to a person (`ask_human`), for at most `timeout_seconds`.
    WaitingInput {
        timeout_seconds: i64,
    },
    /// The worker no longer holds the task; stop without writing anything.
    LeaseLost,
}

/// Where a run records its steps. `Ok(None)`: the run must stop (lease lost);
/// `Ok(Some(cancel))`: whether a cancel was requested.
#[async_trait]
pub trait Sink: Send + Sync {
    async fn step(&self, step: StepUpdate) -> StoreResult<Option<bool>>;
}

/// Limits of one run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_steps: i32,
    pub token_budget: i64,
    pub cost_cap_nanos: Option<i64>,
    pub deadline: Instant,
}

/// Usage so far (including earlier attempts when resuming).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_nanos: i64,
    pub steps: i32,
}

/// A human decision on a paused tool call.
#[derive(Clone, Debug)]
struct Decision {
    approve: bool,
    reason: String,
}

/// One run of an employee.
pub struct Run<'a> {
    pub state: &'a AppState,
    /// Where delegated sub-tasks go.
    pub queue: &'a dyn Queue,
    pub employee: &'a Employee,
    pub task_id: Option<Uuid>,
    /// The stored API key the run was started with (a synchronous chat), so its
    /// budgets apply too.
    pub key_id: Option<Uuid>,
    /// The budget that refused a model call, when one ended the run.
    pub refused: Option<crate::ai::budget::BudgetExceeded>,
    pub depth: i32,
    pub limits: Limits,
    pub totals: Totals,
    /// Synchronous chat cannot pause for a human: approval tools answer with an error.
    pub can_pause: bool,
    /// The JSON schema the final answer must satisfy (the task's, else the employee's).
    pub output_schema: Option<Value>,
    /// Whether the one corrective turn for an invalid answer was used.
    corrected: bool,
    messages: Vec<Message>,
    pending: Vec<ToolCall>,
    /// The model step whose tool calls are `pending` (part of each call's stable id).
    pending_step: i32,
    decisions: HashMap<String, Decision>,
    /// Answers of people to `ask_human` calls, by call id.
    inputs: HashMap<String, String>,
    /// Call ids that already have a recorded result.
    answered: Vec<String>,
    /// Call ids recorded as started with no result (yet) and no decision since.
    started: HashSet<String>,
    /// The task, or this synchronous run: the first part of every call's stable id.
    run_id: Uuid,
    /// The last recorded step a replay found (a `resumed` event is written first).
    resumed_from: Option<i32>,
    /// The last step when it ended the run: not written yet, so the orchestrator writes
    /// it together with the task's end (one write instead of two).
    tail: Option<StepUpdate>,
}

/// The system prompt of an employee.
/// The conversation with e-mails, card numbers, SSNs, credentials and configured patterns
/// replaced in every message text; returns how many were replaced.
fn redact_messages(messages: &[Message]) -> (Vec<Message>, usize) {
    let mut total = 0;
    let out = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(text) = &m.content {
                let (clean, n) = crate::auth::redact::redact(text);
                total += n;
                m.content = Some(clean);
            }
            m
        })
        .collect();
    (out, total)
}

pub fn system_prompt(e: &Employee) -> String {
    let mut s = format!(
        "You are {}, {}.",
        e.fields.name,
        e.fields.role.trim_end_matches('.')
    );
    if !e.fields.instructions.trim().is_empty() {
        s.push_str("\n\n");
        s.push_str(&e.fields.instructions);
    }
    s
}

/// A task input as the user turn: a string as is, anything else as JSON text.
pub fn input_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Messages of a session's history sent with a run (the most recent ones).
pub const HISTORY_MESSAGES: u32 = 50;

/// The conversation a run starts from: the employee's system prompt, the session
/// history (oldest first) and the user turn.
pub fn conversation(
    employee: &Employee,
    history: Vec<SessionMessage>,
    user: String,
) -> Vec<Message> {
    let mut messages = Vec::with_capacity(history.len() + 2);
    messages.push(Message::system(system_prompt(employee)));
    messages.extend(history.into_iter().map(|m| {
        if m.role == "assistant" {
            Message::assistant(m.content)
        } else {
            Message::user(m.content)
        }
    }));
    messages.push(Message::user(user));
    messages
}

/// The user and assistant messages a turn that ended with an answer adds to its session.
pub fn session_turn(
    session_id: Uuid,
    user: String,
    answer: String,
    task_id: Option<Uuid>,
) -> [SessionMessage; 2] {
    [
        SessionMessage {
            id: Uuid::now_v7(),
            session_id,
            role: "user".into(),
            content: user,
            task_id,
            created_at: now(),
        },
        SessionMessage {
            id: Uuid::now_v7(),
            session_id,
            role: "assistant".into(),
            content: answer,
            task_id,
            created_at: now(),
        },
    ]
}

impl Limits {
    /// The limits of a run of `employee` starting now: its steps and token budget, the
    /// deployment's cost cap and deadline.
    pub fn for_employee(employee: &Employee, cfg: &TaskConfig) -> Limits {
        Limits {
            max_steps: employee.fields.max_steps,
            token_budget: employee.fields.token_budget,
            cost_cap_nanos: cfg.cost_cap_nanos,
            deadline: Instant::now() + cfg.deadline,
        }
    }
}

impl<'a> Run<'a> {
    /// A run over `messages` (system, history and the user turn, already built).
    pub fn new(
        state: &'a AppState,
        queue: &'a dyn Queue,
        employee: &'a Employee,
        task_id: Option<Uuid>,
        depth: i32,
        limits: Limits,
        messages: Vec<Message>,
    ) -> Self {
        Self {
            state,
            queue,
            employee,
            task_id,
            key_id: None,
            refused: None,
            depth,
            limits,
            totals: Totals::default(),
            can_pause: task_id.is_some(),
            output_schema: employee.fields.output_schema.clone(),
            corrected: false,
            messages,
            pending: Vec::new(),
            pending_step: 0,
            decisions: HashMap::new(),
            inputs: HashMap::new(),
            answered: Vec::new(),
            started: HashSet::new(),
            run_id: task_id.unwrap_or_else(Uuid::now_v7),
            resumed_from: None,
            tail: None,
        }
    }

    /// Rebuilds the conversation from every step recorded by earlier attempts (a crash,
    /// a lost lease, a retry, an approval pause: all the same), so the run continues at
    /// the first step not recorded, on any replica. The usage of those steps is already
    /// in the task row (`totals`), never added again.
    pub fn replay(&mut self, events: &[TaskEvent]) {
        let mut step = 0;
        let mut last_answer: Option<String> = None;
        for e in events {
            match e.kind.as_str() {
                "llm_call" => {
                    step += 1;
                    let m = &e.payload["message"];
                    let calls: Vec<ToolCall> =
                        serde_json::from_value(m["tool_calls"].clone()).unwrap_or_default();
                    if calls.is_empty() {
                        // A refused final answer (output schema): its correction follows.
                        last_answer = Some(m["content"].as_str().unwrap_or("").to_string());
                        continue;
                    }
                    self.messages.push(Message {
                        role: Role::Assistant,
                        content: m["content"].as_str().map(str::to_owned),
                        tool_calls: calls.clone(),
                        tool_call_id: None,
                    });
                    self.pending = calls;
                    self.pending_step = e.payload["step"]
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .unwrap_or(step);
                }
                "message" if e.payload.get("problem").is_some() => {
                    let problem = e.payload["problem"].as_str().unwrap_or("");
                    self.messages
                        .push(Message::assistant(last_answer.take().unwrap_or_default()));
                    self.messages.push(Message::user(correction(
                        problem,
                        self.output_schema.as_ref().unwrap_or(&Value::Null),
                    )));
                    self.corrected = true;
                }
                "tool_started" => {
                    if let Some(id) = e.payload["call_id"].as_str() {
                        self.started.insert(id.to_string());
                        // A decision to make a call that is not idempotent is spent once
                        // the call was made: a repeat needs a new one.
                        let repeatable = self.pending.iter().any(|c| {
                            c.id == id
                                && tools::idempotent(
                                    e.payload["tool"].as_str().unwrap_or(""),
                                    &c.arguments,
                                )
                        });
                        if !repeatable {
                            self.decisions.remove(id);
                        }
                    }
                }
                "tool_result" => {
                    let id = e.payload["call_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    self.messages.push(Message::tool_result(
                        id.clone(),
                        e.payload["content"].to_string(),
                    ));
                    self.started.remove(&id);
                    self.answered.push(id);
                }
                "input" => {
                    if let Some(id) = e.payload["call_id"].as_str() {
                        let answer = e.payload["answer"].as_str().unwrap_or("").to_string();
                        self.inputs.insert(id.to_string(), answer);
                    }
                }
                "approval" => {
                    if let Some(id) = e.payload["call_id"].as_str() {
                        self.started.remove(id);
                        self.decisions.insert(
                            id.to_string(),
                            Decision {
                                approve: e.payload["decision"] == "approve",
                                reason: e.payload["reason"].as_str().unwrap_or("").to_string(),
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        if step > 0 {
            self.resumed_from = Some(step);
        }
    }

    fn ctx(&self) -> CallContext {
        CallContext {
            tenant_id: self.employee.tenant_id,
            key_id: self.key_id,
            task_id: self.task_id,
            employee_id: Some(self.employee.id),
        }
    }

    fn limit_reached(&self) -> Option<String> {
        let l = &self.limits;
        let used = self.totals.tokens_in + self.totals.tokens_out;
        if used > l.token_budget {
            return Some(format!(
                "token budget exceeded: {used} tokens used of {} allowed",
                l.token_budget
            ));
        }
        if let Some(cap) = l.cost_cap_nanos
            && self.totals.cost_nanos > cap
        {
            return Some(format!(
                "cost cap exceeded: ${:.6} spent of ${:.6} allowed",
                crate::ai::pricing::usd(self.totals.cost_nanos),
                crate::ai::pricing::usd(cap)
            ));
        }
        if Instant::now() >= l.deadline {
            return Some("deadline exceeded before a final answer".into());
        }
        None
    }

    /// Runs to an outcome. The final model turn is not written through the sink: it is
    /// left in [`Run::take_tail`] for the caller to write with the outcome.
    pub async fn run(&mut self, sink: &dyn Sink) -> Outcome {
        let offered = tools::offered_all(self.state, self.employee).await;
        if let Some(step) = self.resumed_from.take() {
            let ev = NewEvent::new(
                "resumed",
                json!({"step": step, "pending_calls": self.pending.iter()
                    .filter(|c| !self.answered.contains(&c.id)).count()}),
            );
            match self
                .record(
                    sink,
                    StepUpdate {
                        events: vec![ev],
                        ..Default::default()
                    },
                )
                .await
            {
                Err(o) => return o,
                Ok(true) => return Outcome::Cancelled,
                Ok(false) => {}
            }
        }
        loop {
            // 1. Tool calls of the last model turn that have no result yet.
            let pending = std::mem::take(&mut self.pending);
            let step = self.pending_step;
            // Sub-tasks of this step still running: once every call is made, the task waits.
            let mut running_children = 0usize;
            for (index, call) in pending.iter().enumerate() {
                if self.answered.contains(&call.id) {
                    continue;
                }
                // An MCP tool offered under its alias is known by its canonical name.
                let name = offered.canonical(&call.name);
                let key = tools::call_key(self.run_id, step, index);
                if name == tools::ASK_HUMAN && self.can_pause {
                    match self.ask_human(sink, call, &key).await {
                        Ok(content) => {
                            if let Err(o) = self
                                .record_result(sink, call, name, "ok", content, &key)
                                .await
                            {
                                return o;
                            }
                            continue;
                        }
                        Err(o) => return o,
                    }
                }
                // Started by an earlier attempt, no result: did it happen? Only an
                // idempotent call may simply be made again.
                let unknown =
                    self.started.contains(&call.id) && !tools::idempotent(name, &call.arguments);
                // A decision not spent yet (a call of unknown outcome that a human
                // rejected, or approved and not yet made) holds even for a tool that does
                // not ask for approval by itself.
                let needs_approval = tools::needs_approval(self.employee, name)
                    || unknown
                    || self.decisions.contains_key(&call.id);
                let (outcome, content) = if needs_approval && self.can_pause {
                    match self.decisions.get(&call.id).cloned() {
                        None => {
                            let mut extra = json!({"call_id": call.id, "tool": name,
                                       "arguments": call.arguments, "idempotency_key": key});
                            if unknown {
                                extra["reason"] = json!(OUTCOME_UNKNOWN);
                            }
                            let ev = NewEvent::status(TaskStatus::WaitingApproval, extra);
                            return match self
                                .record(
                                    sink,
                                    StepUpdate {
                                        events: vec![ev],
                                        ..Default::default()
                                    },
                                )
                                .await
                            {
                                Err(o) => o,
                                Ok(_) => Outcome::WaitingApproval,
                            };
                        }
                        Some(d) if d.approve => {
                            match self.call_tool(sink, call, name, &key).await {
                                Ok(r) => (r.outcome, r.content),
                                Err(o) => return o,
                            }
                        }
                        Some(d) => (
                            "rejected",
                            json!({"error": format!("a human reviewer rejected this call{}",
                                if d.reason.is_empty() { String::new() } else { format!(": {}", d.reason) })}),
                        ),
                    }
                } else if needs_approval {
                    (
                        "denied",
                        json!({"error": "this tool needs a human approval and cannot run in a synchronous chat"}),
                    )
                } else {
                    match self.call_tool(sink, call, name, &key).await {
                        Ok(r) if r.outcome == tools::WAITING => {
                            running_children += 1;
                            continue;
                        }
                        Ok(r) => (r.outcome, r.content),
                        Err(o) => return o,
                    }
                };
                if let Err(o) = self
                    .record_result(sink, call, name, outcome, content, &key)
                    .await
                {
                    return o;
                }
            }

            if running_children > 0 {
                let ev = NewEvent::status(
                    TaskStatus::WaitingSubtasks,
                    json!({ "running_subtasks": running_children }),
                );
                return match self
                    .record(
                        sink,
                        StepUpdate {
                            events: vec![ev],
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Err(o) => o,
                    Ok(_) => Outcome::WaitingSubtasks,
                };
            }

            // 2. Limits, before any further vendor call.
            if let Some(reason) = self.limit_reached() {
                return Outcome::Failed {
                    error: reason,
                    retryable: false,
                };
            }
            if self.totals.steps >= self.limits.max_steps {
                return Outcome::Failed {
                    error: format!(
                        "max_steps reached: {} steps without a final answer",
                        self.limits.max_steps
                    ),
                    retryable: false,
                };
            }

            // 3. One model call. With `redact_prompts`, sensitive data never leaves for a
            // vendor; the count is recorded in the step's event.
            let (messages, redactions) = if self.employee.fields.redact_prompts {
                redact_messages(&self.messages)
            } else {
                (self.messages.clone(), 0)
            };
            let mut req = ChatRequest::new("", messages);
            req.tools = offered.defs.clone();
            req.temperature = Some(self.employee.fields.temperature);
            let started = std::time::Instant::now();
            req.response_format = self.output_schema.as_ref().map(
                |s| json!({"type": "json_schema", "json_schema": {"name": "output", "schema": s}}),
            );
            let routed = match self
                .state
                .ai
                .chat(&self.employee.fields.model_policy, &req, self.ctx())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // A budget without room is not cured by retrying soon: the run
                    // fails; a budget that could not be checked may run again.
                    if let Some(b) = e.budget_exceeded() {
                        let error = format!("{BUDGET_EXCEEDED}: {b}");
                        self.refused = Some(b.clone());
                        return Outcome::Failed {
                            error,
                            retryable: false,
                        };
                    }
                    return Outcome::Failed {
                        error: e.to_string(),
                        retryable: true,
                    };
                }
            };
            let resp = routed.response;
            let usage = resp.usage;
            let step = self.totals.steps + 1;
            let mut update = StepUpdate {
                tokens_in: usage.input_tokens as i64,
                tokens_out: usage.output_tokens as i64,
                cost_nanos: routed.cost_nanos,
                steps: 1,
                events: vec![NewEvent::new(
                    "llm_call",
                    json!({
                        "step": step,
                        "provider": routed.provider, "model": routed.model,
                        "tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens,
                        "cost_nanos": routed.cost_nanos, "cache_hit": routed.cache_hit,
                        "latency_ms": started.elapsed().as_millis() as u64,
                        "failed_attempts": routed.failed_attempts.len(),
                        "redactions": redactions,
                        "message": {"content": resp.content, "tool_calls": resp.tool_calls},
                    }),
                )],
            };
            for (index, c) in resp.tool_calls.iter().enumerate() {
                update.events.push(NewEvent::new(
                    "tool_call",
                    json!({"call_id": c.id, "tool": offered.canonical(&c.name),
                           "arguments": c.arguments,
                           "idempotency_key": tools::call_key(self.run_id, step, index)}),
                ));
            }
            let answer = resp.content.clone().unwrap_or_default();
            let final_turn = resp.tool_calls.is_empty();
            if final_turn {
                update.events.push(NewEvent::new(
                    "message",
                    json!({"role": "assistant", "content": answer}),
                ));
            }
            // Only a final answer is held to the output schema.
            let checked = match (&self.output_schema, final_turn) {
                (Some(schema), true) => check_answer(schema, &answer).map(Some),
                _ => Ok(None),
            };
            if let (Err(problem), false) = (&checked, self.corrected) {
                // One corrective turn: the model sees why its answer was refused.
                self.corrected = true;
                update.events.push(NewEvent::new(
                    "message",
                    json!({"role": "system", "problem": problem, "content": format!(
                        "the answer does not satisfy the output schema ({problem}); asked once more")}),
                ));
                let cancel = match self.record(sink, update).await {
                    Err(o) => return o,
                    Ok(c) => c,
                };
                if cancel {
                    return Outcome::Cancelled;
                }
                self.messages.push(Message::assistant(answer));
                self.messages.push(Message::user(correction(
                    problem,
                    self.output_schema.as_ref().unwrap_or(&Value::Null),
                )));
                continue;
            }
            if final_turn {
                // The run ends here either way: the step is written with the end.
                self.add(&update);
                self.tail = Some(update);
                if let Some(reason) = self.limit_reached() {
                    return Outcome::Failed {
                        error: reason,
                        retryable: false,
                    };
                }
                return match checked {
                    Ok(output) => Outcome::Succeeded { answer, output },
                    Err(problem) => Outcome::Failed {
                        error: format!("{INVALID_OUTPUT}: {problem}"),
                        retryable: false,
                    },
                };
            }
            let cancel = match self.record(sink, update).await {
                Err(o) => return o,
                Ok(c) => c,
            };
            if let Some(reason) = self.limit_reached() {
                return Outcome::Failed {
                    error: reason,
                    retryable: false,
                };
            }
            if cancel {
                return Outcome::Cancelled;
            }
            self.messages.push(Message {
                role: Role::Assistant,
                content: resp.content,
                tool_calls: resp.tool_calls.clone(),
                tool_call_id: None,
            });
            self.pending = resp.tool_calls;
            self.pending_step = step;
        }
    }

    /// The answer to an `ask_human` call, or the pause that waits for it: a
    /// `waiting_input` status event with the question (a call without a valid question is
    /// answered with the error instead).
    async fn ask_human(
        &mut self,
        sink: &dyn Sink,
        call: &ToolCall,
        key: &str,
    ) -> Result<Value, Outcome> {
        if let Some(answer) = self.inputs.get(&call.id) {
            return Ok(json!({ "answer": answer }));
        }
        let question = serde_json::from_str::<Value>(&call.arguments)
            .ok()
            .and_then(|a| a.get("question").and_then(Value::as_str).map(str::to_owned))
            .filter(|q| !q.trim().is_empty());
        let Some(question) = question else {
            return Ok(json!({"error": "invalid arguments: `question` must be a non-empty text"}));
        };
        let timeout_seconds = self.employee.fields.input_timeout_seconds;
        let ev = NewEvent::status(
            TaskStatus::WaitingInput,
            json!({"call_id": call.id, "question": question, "idempotency_key": key,
                   "timeout_seconds": timeout_seconds}),
        );
        match self
            .record(
                sink,
                StepUpdate {
                    events: vec![ev],
                    ..Default::default()
                },
            )
            .await
        {
            Err(o) => Err(o),
            Ok(_) => Err(Outcome::WaitingInput { timeout_seconds }),
        }
    }

    /// Writes the result of a call (and adds it to the conversation); `Err` ends the run.
    async fn record_result(
        &mut self,
        sink: &dyn Sink,
        call: &ToolCall,
        name: &str,
        outcome: &str,
        content: Value,
        key: &str,
    ) -> Result<(), Outcome> {
        self.messages
            .push(Message::tool_result(call.id.clone(), content.to_string()));
        self.answered.push(call.id.clone());
        self.started.remove(&call.id);
        let ev = NewEvent::new(
            "tool_result",
            json!({"call_id": call.id, "tool": name, "outcome": outcome,
                   "content": content, "idempotency_key": key}),
        );
        let cancel = self
            .record(
                sink,
                StepUpdate {
                    events: vec![ev],
                    ..Default::default()
                },
            )
            .await?;
        if cancel {
            return Err(Outcome::Cancelled);
        }
        Ok(())
    }

    /// Makes one tool call. For a task it is recorded `tool_started` first, so that an
    /// attempt after a crash knows the call may have happened.
    async fn call_tool(
        &mut self,
        sink: &dyn Sink,
        call: &ToolCall,
        name: &str,
        key: &str,
    ) -> Result<tools::ToolOutcome, Outcome> {
        if self.task_id.is_some() {
            let ev = NewEvent::new(
                "tool_started",
                json!({"call_id": call.id, "tool": name, "idempotency_key": key}),
            );
            let cancel = self
                .record(
                    sink,
                    StepUpdate {
                        events: vec![ev],
                        ..Default::default()
                    },
                )
                .await?;
            if cancel {
                return Err(Outcome::Cancelled);
            }
            self.started.insert(call.id.clone());
        }
        let ctx = tools::ToolCtx {
            state: self.state,
            queue: self.queue,
            employee: self.employee,
            task_id: self.task_id,
            depth: self.depth,
            deadline: self.limits.deadline,
            call_key: key,
        };
        // Boxed: a tool's future (an MCP session, a webhook request, a delegation) is far
        // larger than the rest of the run's, and would otherwise be part of every running
        // task's footprint, most of which wait on a model, not a tool (22 KiB of the run's
        // 27 KiB).
        Ok(Box::pin(tools::run(&ctx, name, &call.arguments)).await)
    }

    /// The step that ended the run, when it is not written yet (see [`Run::run`]): the
    /// caller must write it with the run's outcome.
    pub fn take_tail(&mut self) -> Option<StepUpdate> {
        self.tail.take()
    }

    fn add(&mut self, step: &StepUpdate) {
        self.totals.tokens_in += step.tokens_in;
        self.totals.tokens_out += step.tokens_out;
        self.totals.cost_nanos += step.cost_nanos;
        self.totals.steps += step.steps;
    }

    /// Writes a step; `Ok(cancel requested)`, or the outcome that ends the run.
    async fn record(&mut self, sink: &dyn Sink, step: StepUpdate) -> Result<bool, Outcome> {
        self.add(&step);
        match sink.step(step).await {
            Ok(Some(cancel)) => Ok(cancel),
            Ok(None) => Err(Outcome::LeaseLost),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a step");
                Err(Outcome::Failed {
                    error: "storage unavailable while recording a step".into(),
                    retryable: true,
                })
            }
        }
    }
}

/// How a task refused by a budget fails (the error's prefix); it is not retried.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// The reason of a `waiting_approval` pause on a call an earlier attempt started but
/// whose result was never recorded (a tool that is not idempotent).
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// How a task whose answer never satisfied its output schema fails (the error's prefix).
pub const INVALID_OUTPUT: &str = "invalid_output";

/// The answer as JSON valid for `schema`, or what is wrong with it.
pub fn check_answer(schema: &Value, answer: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_str(answer.trim()).map_err(|e| format!("the answer is not JSON: {e}"))?;
    schema::validate(schema, &v)?;
    Ok(v)
}

/// The user turn that asks again after an invalid answer.
fn correction(problem: &str, schema: &Value) -> String {
    format!(
        "Your answer was refused: {problem}. Reply again with only a JSON value that \
         satisfies this JSON schema, and nothing else: {schema}"
    )
}

/// A sink that keeps steps in memory (synchronous chat: no task row).
#[derive(Default)]
pub struct MemorySink {
    pub events: std::sync::Mutex<Vec<NewEvent>>,
}

#[async_trait]
impl Sink for MemorySink {
    async fn step(&self, step: StepUpdate) -> StoreResult<Option<bool>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(step.events);
        Ok(Some(false))
    }
}
