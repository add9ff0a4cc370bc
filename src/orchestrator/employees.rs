//! The rules of an employee definition, shared by every front door (the API's 422s,
//! the web console's messages beside the fields), so there is one copy of them.

use super::is_blank;
use crate::ai::router::valid_model_name;
use crate::mcp::names;
use crate::store::EmployeeFields;
pub use crate::store::FieldError;

/// The model policy of an employee created without one: the built-in sandbox vendor.
pub const DEFAULT_MODEL_POLICY: &str = "sandbox/sandbox-1";

const MAX_NAME: usize = 64;
const MAX_ROLE: usize = 200;
const MAX_INSTRUCTIONS: usize = 32 * 1024;
const MAX_CANDIDATES: usize = 8;
const MAX_TOOLS: usize = 64;
/// The longest a task may wait for a person's answer: 30 days.
pub const MAX_INPUT_TIMEOUT_SECONDS: i64 = 30 * 86_400;

/// Business rules of an employee; the first broken one is returned, naming its field.
pub fn validate(f: &EmployeeFields) -> Result<(), FieldError> {
    let name_ok = !f.name.is_empty()
        && f.name.len() <= MAX_NAME
        && f.name.as_bytes()[0].is_ascii_alphanumeric()
        && f.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(FieldError::new(
            "name",
            "must be 1-64 characters of letters, digits, '-', '_' or '.', starting with a letter or digit",
        ));
    }
    if is_blank(&f.role) || f.role.chars().count() > MAX_ROLE {
        return Err(FieldError::new(
            "role",
            format!("must be 1-{MAX_ROLE} characters"),
        ));
    }
    if f.instructions.chars().count() > MAX_INSTRUCTIONS {
        return Err(FieldError::new(
            "instructions",
            format!("must be at most {MAX_INSTRUCTIONS} characters"),
        ));
    }
    if f.model_policy.is_empty() || f.model_policy.len() > MAX_CANDIDATES {
        return Err(FieldError::new(
            "model_policy",
            format!("must list 1-{MAX_CANDIDATES} provider/model candidates"),
        ));
    }
    for (i, c) in f.model_policy.iter().enumerate() {
        let ok = c.split_once('/').is_some_and(|(p, m)| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
                && valid_model_name(m)
        });
        if !ok {
            return Err(FieldError::new(
                format!("model_policy[{i}]"),
                "must be provider/model, e.g. openai/gpt-4o-mini",
            ));
        }
    }
    if f.allowed_tools.len() > MAX_TOOLS {
        return Err(FieldError::new(
            "allowed_tools",
            format!("must list at most {MAX_TOOLS} tools"),
        ));
    }
    for (i, t) in f.allowed_tools.iter().enumerate() {
        let ok = if t.starts_with(names::PREFIX) {
            names::Entry::parse(t).is_some()
        } else {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !ok {
            return Err(FieldError::new(
                format!("allowed_tools[{i}]"),
                "must be a tool name of letters, digits, '_' or '-', \
                 or mcp:<server>/<tool> (mcp:<server>/* for every tool of a server)",
            ));
        }
        if f.allowed_tools[..i].contains(t) {
            return Err(FieldError::new(
                format!("allowed_tools[{i}]"),
                "is listed twice",
            ));
        }
    }
    if f.approval_tools.len() > MAX_TOOLS {
        return Err(FieldError::new(
            "approval_tools",
            format!("must list at most {MAX_TOOLS} tools"),
        ));
    }
    for (i, t) in f.approval_tools.iter().enumerate() {
        if f.approval_tools[..i].contains(t) {
            return Err(FieldError::new(
                format!("approval_tools[{i}]"),
                "is listed twice",
            ));
        }
        let within = match names::Entry::parse(t) {
            Some(e) => names::entry_within(&e, &f.allowed_tools),
            None => f.allowed_tools.contains(t),
        };
        if !within {
            return Err(FieldError::new(
                format!("approval_tools[{i}]"),
                "must be one of allowed_tools",
            ));
        }
    }
    if !(1..=100).contains(&f.max_steps) {
        return Err(FieldError::new("max_steps", "must be between 1 and 100"));
    }
    if !(1..=10_000_000).contains(&f.token_budget) {
        return Err(FieldError::new(
            "token_budget",
            "must be between 1 and 10000000",
        ));
    }
    if !(0.0..=2.0).contains(&f.temperature) {
        return Err(FieldError::new("temperature", "must be between 0 and 2"));
    }
    if !(1..=MAX_INPUT_TIMEOUT_SECONDS).contains(&f.input_timeout_seconds) {
        return Err(FieldError::new(
            "input_timeout_seconds",
            format!("must be between 1 and {MAX_INPUT_TIMEOUT_SECONDS}"),
        ));
    }
    if let Some(s) = &f.output_schema {
        crate::runtime::schema::check_output_schema(s)
            .map_err(|m| FieldError::new("output_schema", m))?;
    }
    Ok(())
}
