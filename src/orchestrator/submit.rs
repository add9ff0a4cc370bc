//! The one way a task enters the queue. `POST /v1/tasks`, the `delegate` tool and the
//! scheduler (and every later front door) hand a [`Submit`] to [`submit`], which
//! validates it, opens or checks the session, inserts the task with its first event (the
//! insert finds the employee among the tenant's) and wakes the claimers of this replica.
//!
//! Validation lives here, once: [`validate`] is a pure function of the request and the
//! task configuration, unit-tested below. Callers keep only their own concerns (HTTP
//! extraction and scopes, the delegation chain, the schedule's fire claim).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::TaskConfig;
use crate::egress::EgressPolicy;
use crate::state::AppState;
use crate::store::{Employee, NewTask, StoreError, Task, TaskEmployee, now};
use crate::telemetry::traces;
use tracing::Instrument;

/// Largest task input, as serialised JSON.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
/// Longest completion webhook URL.
pub const MAX_CALLBACK_URL_CHARS: usize = 2000;
/// How far in the past a `run_at` may be and still count as "now".
pub const RUN_AT_PAST_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// Which employee runs the task.
#[derive(Clone, Debug)]
pub enum EmployeeRef {
    /// An id or a name in the tenant, as a caller typed it.
    Key(String),
    /// An employee by id (a schedule's).
    Id(Uuid),
    /// Already read by the caller (the delegate tool checks the chain first).
    Resolved(Box<Employee>),
}

/// `Idempotency-Key` and the hash of the request it came with: a second submit with the
/// same key returns the first task when the hash matches, and conflicts otherwise.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    /// `None` when the caller derives the key from the request itself (schedules,
    /// delegation): any replay then returns the first task.
    pub body_hash: Option<String>,
}

/// The task this one was delegated by.
#[derive(Clone, Copy, Debug)]
pub struct Parent {
    pub task_id: Uuid,
    /// Depth of the new task (the parent's + 1).
    pub depth: i32,
}

/// A request to run a task. Optional fields take their defaults in [`validate`].
#[derive(Clone, Debug)]
pub struct Submit {
    pub tenant_id: Uuid,
    pub employee: EmployeeRef,
    pub input: Value,
    /// -100–100, default 0.
    pub priority: Option<i32>,
    /// Default now; a time in the past counts as now.
    pub run_at: Option<DateTime<Utc>>,
    /// 1–20, default `TASK_MAX_ATTEMPTS`.
    pub max_attempts: Option<i32>,
    pub session_id: Option<Uuid>,
    pub callback_url: Option<String>,
    /// A JSON object; default `{}`.
    pub metadata: Option<Value>,
    /// A JSON schema the answer must satisfy (overrides the employee's).
    pub output_schema: Option<Value>,
    pub idempotency: Option<Idempotency>,
    pub parent: Option<Parent>,
}

impl Submit {
    /// A request with every optional field at its default.
    pub fn new(tenant_id: Uuid, employee: EmployeeRef, input: Value) -> Self {
        Self {
            tenant_id,
            employee,
            input,
            priority: None,
            run_at: None,
            max_attempts: None,
            session_id: None,
            callback_url: None,
            metadata: None,
            output_schema: None,
            idempotency: None,
            parent: None,
        }
    }
}

/// Why a submit was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A field of the request is invalid (HTTP 422).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The `Idempotency-Key` itself is malformed (HTTP 400).
    #[error("{0}")]
    BadIdempotencyKey(String),
    /// The key was used before with a different request (HTTP 409).
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyConflict,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SubmitError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// The task as submitted; `created` is false when an idempotent replay returned the
/// existing task.
#[derive(Debug)]
pub struct Submitted {
    pub task: Task,
    pub created: bool,
}

/// A request that passed [`validate`], defaults filled in.
#[derive(Debug, PartialEq)]
pub struct Valid {
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
    pub metadata: Value,
}

/// Checks every field that needs no storage to check and fills in the defaults.
/// `egress` refuses a callback whose host is an internal IP literal.
pub fn validate(
    req: &Submit,
    cfg: &TaskConfig,
    egress: &EgressPolicy,
) -> Result<Valid, SubmitError> {
    if let Some(idem) = &req.idempotency {
        validate_idempotency_key(&idem.key)?;
    }
    check_input(&req.input).map_err(|m| SubmitError::invalid("input", m))?;
    if req.input.to_string().len() > MAX_INPUT_BYTES {
        return Err(SubmitError::invalid(
            "input",
            format!("must be at most {MAX_INPUT_BYTES} bytes"),
        ));
    }
    let priority = req.priority.unwrap_or(0);
    if !(-100..=100).contains(&priority) {
        return Err(SubmitError::invalid(
            "priority",
            "must be between -100 and 100",
        ));
    }
    let max_attempts = req.max_attempts.unwrap_or(cfg.max_attempts);
    if !(1..=20).contains(&max_attempts) {
        return Err(SubmitError::invalid(
            "max_attempts",
            "must be between 1 and 20",
        ));
    }
    let now = now();
    let run_at = match req.run_at {
        None => now,
        // A little in the past (clock skew, a queued client retry) means "now"; a time in
        // the past never buys a place ahead of tasks queued earlier (claims order by
        // priority, then `run_at`).
        Some(t) if t >= now - RUN_AT_PAST_TOLERANCE => t.max(now),
        Some(_) => {
            return Err(SubmitError::invalid(
                "run_at",
                "must not be more than 5 minutes in the past",
            ));
        }
    };
    if run_at > now + chrono::Duration::days(i64::from(cfg.max_delay_days)) {
        return Err(SubmitError::invalid(
            "run_at",
            format!(
                "must be at most {} days ahead (TASK_MAX_DELAY_DAYS)",
                cfg.max_delay_days
            ),
        ));
    }
    if let Some(u) = &req.callback_url {
        validate_callback_url(u, egress)?;
    }
    let metadata = req.metadata.clone().unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err(SubmitError::invalid("metadata", "must be a JSON object"));
    }
    if let Some(s) = &req.output_schema {
        crate::runtime::schema::check_output_schema(s)
            .map_err(|m| SubmitError::invalid("output_schema", m))?;
    }
    if let Some(p) = &req.parent
        && p.depth > cfg.delegation_max_depth
    {
        return Err(SubmitError::invalid(
            "parent",
            format!(
                "delegation depth limit ({}) reached",
                cfg.delegation_max_depth
            ),
        ));
    }
    Ok(Valid {
        priority,
        run_at,
        max_attempts,
        metadata,
    })
}

/// An `Idempotency-Key`: 1–200 characters, not blank.
pub fn validate_idempotency_key(key: &str) -> Result<(), SubmitError> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(SubmitError::BadIdempotencyKey(format!(
            "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible characters"
        )));
    }
    Ok(())
}

/// A port number, 0–65535.
pub const PORT_PATTERN: &str =
    "([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/// Whether `u` has the shape of the http(s) URLs the API stores: a host name or IP
/// literal, an optional port, then visible ASCII (the document shows the host-name form).
pub fn url_shape_ok(u: &str) -> bool {
    static SHAPE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(&format!(
            r"^https?://([A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9][A-Za-z0-9-]*)*|\[[0-9A-Fa-f:.]+\])(:{PORT_PATTERN})?(/[!-~]*)?$"
        ))
        .ok()
    });
    SHAPE.as_ref().is_some_and(|re| re.is_match(u))
}

/// Whether a text holds nothing but white space (Unicode white space and the separator
/// controls U+001C–U+001F, as JSON Schema's `\S` sees them).
pub fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// The input of a task (or of a schedule's tasks): a text that is not blank, or a JSON
/// object. The error says what is wrong.
pub fn check_input(input: &Value) -> Result<(), &'static str> {
    match input {
        Value::String(s) if is_blank(s) => Err("must not be blank"),
        Value::String(_) | Value::Object(_) => Ok(()),
        _ => Err("must be a text or a JSON object"),
    }
}

/// A completion webhook target: an absolute http(s) URL with a host that the egress
/// policy does not refuse outright (an internal IP literal; names are checked at delivery).
pub fn validate_callback_url(u: &str, egress: &EgressPolicy) -> Result<(), SubmitError> {
    let bad = || SubmitError::invalid("callback_url", "must be an absolute http or https URL");
    if u.len() > MAX_CALLBACK_URL_CHARS {
        return Err(SubmitError::invalid(
            "callback_url",
            format!("must be at most {MAX_CALLBACK_URL_CHARS} characters"),
        ));
    }
    if !url_shape_ok(u) {
        return Err(bad());
    }
    let url = reqwest::Url::parse(u).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    egress
        .check_url(&url)
        .map_err(|r| SubmitError::invalid("callback_url", r.message()))
}

/// What an `employee` key names: an id when it reads as one, otherwise a name.
fn employee_key(key: &str) -> TaskEmployee {
    match Uuid::parse_str(key) {
        Ok(id) => TaskEmployee::Id(id),
        Err(_) => TaskEmployee::Name(key.to_string()),
    }
}

/// A store answer about the employee `key` named: a missing one is an invalid `employee`
/// field.
fn employee_found<T>(found: Result<T, StoreError>, key: &str) -> Result<T, SubmitError> {
    match found {
        Ok(v) => Ok(v),
        Err(StoreError::NotFound) => Err(SubmitError::invalid(
            "employee",
            format!("no employee '{key}' in this tenant"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The tenant's employee by id or name; a missing one is an invalid `employee` field.
pub async fn resolve_employee(
    state: &AppState,
    tenant: Uuid,
    key: &str,
) -> Result<Employee, SubmitError> {
    let found = match employee_key(key) {
        TaskEmployee::Id(id) => state.store.get_employee(tenant, id).await,
        TaskEmployee::Name(name) => state.store.find_employee_by_name(tenant, &name).await,
    };
    employee_found(found, key)
}

/// Validates, checks the session, inserts the task (with its first event; an employee
/// the tenant does not have is an invalid `employee` field) and wakes this replica's
/// claimers. A replay of an idempotency key returns
/// the first task (`created: false`), or [`SubmitError::IdempotencyConflict`] when the
/// request differs.
pub async fn submit(state: &AppState, req: Submit) -> Result<Submitted, SubmitError> {
    if !traces::enabled() {
        return submit_in(state, req).await;
    }
    let span = tracing::info_span!(
        "submit_task",
        otel.name = "submit_task",
        task.id = tracing::field::Empty,
        task.created = tracing::field::Empty,
    );
    let out = submit_in(state, req).instrument(span.clone()).await;
    match &out {
        Ok(s) => {
            span.record("task.id", tracing::field::display(s.task.id));
            span.record("task.created", s.created);
        }
        Err(e) => traces::set_error(
            &span,
            match e {
                SubmitError::Invalid { .. } | SubmitError::BadIdempotencyKey(_) => "invalid",
                SubmitError::IdempotencyConflict => "idempotency_conflict",
                SubmitError::Store(_) => "storage",
            },
        ),
    }
    out
}

async fn submit_in(state: &AppState, req: Submit) -> Result<Submitted, SubmitError> {
    let valid = validate(&req, &state.config.tasks, &state.egress)?;
    let tenant = req.tenant_id;
    // The insert finds the employee among the tenant's itself (no round trip of its own);
    // only a session, which must be the employee's, needs it found first.
    let (mut employee, key) = match req.employee {
        EmployeeRef::Key(key) => (employee_key(&key), key),
        EmployeeRef::Id(id) => (TaskEmployee::Id(id), id.to_string()),
        EmployeeRef::Resolved(e) if e.tenant_id == tenant => {
            (TaskEmployee::Id(e.id), e.id.to_string())
        }
        EmployeeRef::Resolved(_) => {
            return Err(SubmitError::invalid(
                "employee",
                "belongs to another tenant",
            ));
        }
    };
    if let Some(sid) = req.session_id {
        let e = resolve_employee(state, tenant, &key).await?;
        match state.store.ensure_session(tenant, sid, e.id).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(SubmitError::invalid(
                    "session_id",
                    "belongs to another employee",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        employee = TaskEmployee::Id(e.id);
    }
    let (idempotency_key, request_hash) = match req.idempotency {
        Some(i) => (Some(i.key), i.body_hash),
        None => (None, None),
    };
    let new = NewTask {
        tenant_id: tenant,
        employee,
        input: req.input,
        priority: valid.priority,
        run_at: valid.run_at,
        max_attempts: valid.max_attempts,
        idempotency_key,
        request_hash,
        parent_task_id: req.parent.map(|p| p.task_id),
        depth: req.parent.map_or(0, |p| p.depth),
        session_id: req.session_id,
        callback_url: req.callback_url,
        metadata: valid.metadata,
        output_schema: req.output_schema,
        // The submit span's context (tracing on): the run continues this trace.
        trace_context: traces::current_traceparent(),
    };
    let (task, created) = employee_found(state.store.create_task(&new).await, &key)?;
    if created {
        state.tasks.wake();
        tracing::info!(task_id = %task.id, employee_id = %task.employee_id, "task submitted");
    } else if task.request_hash != new.request_hash {
        return Err(SubmitError::IdempotencyConflict);
    }
    Ok(Submitted { task, created })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> TaskConfig {
        crate::config::Config::from_lookup(|_| None).unwrap().tasks
    }

    fn validate(req: &Submit, cfg: &TaskConfig) -> Result<Valid, SubmitError> {
        super::validate(req, cfg, &EgressPolicy::default())
    }

    fn validate_callback_url(u: &str) -> Result<(), SubmitError> {
        super::validate_callback_url(u, &EgressPolicy::default())
    }

    fn req(input: Value) -> Submit {
        Submit::new(Uuid::nil(), EmployeeRef::Key("e".into()), input)
    }

    fn field(r: Result<Valid, SubmitError>) -> String {
        match r {
            Err(SubmitError::Invalid { field, .. }) => field.to_string(),
            Err(SubmitError::BadIdempotencyKey(_)) => "Idempotency-Key".into(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let c = cfg();
        let v = validate(&req(json!("do it")), &c).unwrap();
        assert_eq!(v.priority, 0);
        assert_eq!(v.max_attempts, c.max_attempts);
        assert_eq!(v.metadata, json!({}));
        assert!((now() - v.run_at).num_seconds().abs() < 60);
        let mut r = req(json!({"ticket": 42}));
        r.priority = Some(-100);
        r.max_attempts = Some(20);
        r.metadata = Some(json!({"k": "v"}));
        let v = validate(&r, &c).unwrap();
        assert_eq!((v.priority, v.max_attempts), (-100, 20));
        assert_eq!(v.metadata, json!({"k": "v"}));
        // A run_at a little in the past is now (no jumping the queue); further back is
        // refused; a future one is kept up to the horizon.
        let mut r = req(json!("x"));
        r.run_at = Some(now() - chrono::Duration::minutes(4));
        let v = validate(&r, &c).unwrap();
        assert!((now() - v.run_at).num_seconds().abs() < 60, "{}", v.run_at);
        r.run_at = Some(now() - chrono::Duration::days(365));
        assert_eq!(field(validate(&r, &c)), "run_at");
        let later = now() + chrono::Duration::hours(1);
        r.run_at = Some(later);
        assert_eq!(validate(&r, &c).unwrap().run_at, later);
        r.run_at = Some(now() + chrono::Duration::days(i64::from(c.max_delay_days) + 1));
        assert_eq!(field(validate(&r, &c)), "run_at");
    }

    #[test]
    fn each_field_is_checked() {
        let c = cfg();
        assert_eq!(field(validate(&req(Value::Null), &c)), "input");
        assert_eq!(field(validate(&req(json!("  ")), &c)), "input");
        let big = "x".repeat(MAX_INPUT_BYTES);
        assert_eq!(field(validate(&req(json!(big)), &c)), "input");
        for (p, ok) in [(-101, false), (-100, true), (100, true), (101, false)] {
            let mut r = req(json!("x"));
            r.priority = Some(p);
            assert_eq!(validate(&r, &c).is_ok(), ok, "priority {p}");
        }
        for (n, ok) in [(0, false), (1, true), (20, true), (21, false)] {
            let mut r = req(json!("x"));
            r.max_attempts = Some(n);
            assert_eq!(validate(&r, &c).is_ok(), ok, "max_attempts {n}");
        }
        let mut r = req(json!("x"));
        r.metadata = Some(json!([1]));
        assert_eq!(field(validate(&r, &c)), "metadata");
        let mut r = req(json!("x"));
        r.parent = Some(Parent {
            task_id: Uuid::nil(),
            depth: c.delegation_max_depth + 1,
        });
        assert_eq!(field(validate(&r, &c)), "parent");
        r.parent = Some(Parent {
            task_id: Uuid::nil(),
            depth: c.delegation_max_depth,
        });
        assert!(validate(&r, &c).is_ok());
    }

    #[test]
    fn callback_urls_must_be_absolute_http() {
        for ok in ["http://example.com/hook", "https://h:8443/a?b=c"] {
            assert!(validate_callback_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/x",
            "/relative",
            "http://",
            "not a url",
            "file:///etc/passwd",
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://10.0.0.7/",
        ] {
            assert!(validate_callback_url(bad).is_err(), "{bad}");
        }
        let open = EgressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(super::validate_callback_url("http://127.0.0.1:8080/hook", &open).is_ok());
        assert!(super::validate_callback_url("http://10.0.0.7/", &open).is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_CHARS));
        assert!(validate_callback_url(&long).is_err());
    }

    #[test]
    fn idempotency_keys_are_one_to_two_hundred_visible_characters() {
        assert!(validate_idempotency_key("order-42").is_ok());
        assert!(validate_idempotency_key(&"k".repeat(200)).is_ok());
        for bad in [String::new(), "   ".into(), "k".repeat(201)] {
            assert!(
                matches!(
                    validate_idempotency_key(&bad),
                    Err(SubmitError::BadIdempotencyKey(_))
                ),
                "{bad:?}"
            );
        }
        let mut r = req(json!("x"));
        r.idempotency = Some(Idempotency {
            key: String::new(),
            body_hash: None,
        });
        assert_eq!(field(validate(&r, &cfg())), "Idempotency-Key");
    }
}
