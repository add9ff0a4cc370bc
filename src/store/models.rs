//! Row types shared by both backends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The tenant every bootstrap key belongs to; created by the first migration.
pub const DEFAULT_TENANT_ID: Uuid = Uuid::from_u128(1);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A key to insert: only the hash of its secret is ever stored.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    /// Requests per rate-limit window for this key; `None` = the configured default.
    pub rate_limit: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub rate_limit: Option<i32>,
}

/// The settable fields of an employee (everything but identity, version and times).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmployeeFields {
    pub name: String,
    pub role: String,
    pub instructions: String,
    /// Ordered fallback chain of `provider/model` candidates.
    pub model_policy: Vec<String>,
    pub allowed_tools: Vec<String>,
    pub max_steps: i32,
    /// Tokens (input + output) one task may spend.
    pub token_budget: i64,
    pub temperature: f64,
    /// Redact sensitive data from prompts before they leave for a vendor.
    pub redact_prompts: bool,
    /// Allowed tools that pause the task for a human decision before they run.
    #[serde(default)]
    pub approval_tools: Vec<String>,
    /// A JSON schema the final answer of the employee's tasks must satisfy (a task may
    /// set its own); `None`: free text.
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
    /// How long a task waits for a human's answer to `ask_human` before it fails with
    /// `input_timeout`.
    #[serde(default = "default_input_timeout")]
    pub input_timeout_seconds: i64,
}

/// The input timeout of an employee that sets none: one day.
pub const DEFAULT_INPUT_TIMEOUT_SECONDS: i64 = 86_400;

fn default_input_timeout() -> i64 {
    DEFAULT_INPUT_TIMEOUT_SECONDS
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Employee {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[serde(flatten)]
    pub fields: EmployeeFields,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Current time truncated to microseconds, the precision both backends keep, so a row
/// read back equals the row written.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// One AI vendor attempt or cache hit, as recorded for usage and cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiCallRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub task_id: Option<Uuid>,
    pub provider: String,
    pub model: String,
    /// `ok`, `error` or `cache_hit`.
    pub status: String,
    pub error_kind: Option<String>,
    pub http_status: Option<i32>,
    pub latency_us: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    /// Part of `output_tokens`: the vendor's reasoning tokens.
    #[serde(default)]
    pub reasoning_tokens: i64,
    /// Cost in nano-dollars (exact integer).
    pub cost_nanos: i64,
    pub cache_hit: bool,
    pub streamed: bool,
    pub created_at: DateTime<Utc>,
    /// The employee the call was made for; `None` for gateway calls.
    #[serde(default)]
    pub employee_id: Option<Uuid>,
}

/// How a usage report groups AI calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroupBy {
    /// By `employee_id` (calls without one form the `None` group).
    Employee,
    Model,
    /// By UTC calendar day of `created_at`, `YYYY-MM-DD`.
    Day,
    Provider,
}

impl UsageGroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Employee => "employee",
            Self::Model => "model",
            Self::Day => "day",
            Self::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "employee" => Some(Self::Employee),
            "model" => Some(Self::Model),
            "day" => Some(Self::Day),
            "provider" => Some(Self::Provider),
            _ => None,
        }
    }
}

/// One group of a usage report: sums over the tenant's `ai_calls` rows with
/// `from <= created_at < to` that share `key`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageGroup {
    /// Employee id, model, `YYYY-MM-DD` or provider; `None` for calls without an employee.
    pub key: Option<String>,
    /// Rows: vendor attempts plus cache hits.
    pub requests: i64,
    /// Rows with status `ok`.
    pub successes: i64,
    /// Rows with status `error`.
    pub errors: i64,
    /// Rows with status `cache_hit`.
    pub cache_hits: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    /// Part of `output_tokens`.
    pub reasoning_tokens: i64,
    pub cost_nanos: i64,
}

impl UsageGroup {
    /// Adds `g`'s sums to these (the key stays); saturating, never wrapping.
    pub fn absorb(&mut self, g: &UsageGroup) {
        let add = |a: &mut i64, b: i64| *a = a.saturating_add(b);
        add(&mut self.requests, g.requests);
        add(&mut self.successes, g.successes);
        add(&mut self.errors, g.errors);
        add(&mut self.cache_hits, g.cache_hits);
        add(&mut self.input_tokens, g.input_tokens);
        add(&mut self.output_tokens, g.output_tokens);
        add(&mut self.cached_tokens, g.cached_tokens);
        add(&mut self.cache_write_tokens, g.cache_write_tokens);
        add(&mut self.reasoning_tokens, g.reasoning_tokens);
        add(&mut self.cost_nanos, g.cost_nanos);
    }
}

/// A broken rule of a resource's fields: the field (dotted path, `model_policy[1]`) and
/// what it must be. Every front door shows it its own way (the API as a 422 naming the
/// field, the web console beside the field).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
