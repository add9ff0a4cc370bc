//! The rules of a webhook tool a tenant defines, shared by every front door (the API's
//! 422s, the web console's messages beside the fields).

use crate::egress::EgressPolicy;
use crate::runtime::tools::BUILTIN;
use crate::store::{FieldError, WebhookToolFields};

const MAX_DESCRIPTION: usize = 1000;
const MAX_PARAMETERS_BYTES: usize = 64 * 1024;
const MAX_URL: usize = 2000;

/// A webhook tool's timeout in milliseconds from `timeout_seconds` (1–60).
pub fn timeout_ms(seconds: u32) -> Result<i64, FieldError> {
    if !(1..=60).contains(&seconds) {
        return Err(FieldError::new(
            "timeout_seconds",
            "must be between 1 and 60",
        ));
    }
    Ok(i64::from(seconds) * 1000)
}

/// Business rules of a webhook tool; the first broken one is returned, naming its field.
pub fn validate_webhook_tool(
    f: &WebhookToolFields,
    egress: &EgressPolicy,
) -> Result<(), FieldError> {
    let name_ok = !f.name.is_empty()
        && f.name.len() <= 64
        && f.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(FieldError::new(
            "name",
            "must be 1-64 characters of letters, digits, '_' or '-'",
        ));
    }
    if BUILTIN.contains(&f.name.as_str()) {
        return Err(FieldError::new(
            "name",
            format!("'{}' is the name of a built-in tool", f.name),
        ));
    }
    if super::is_blank(&f.description) || f.description.chars().count() > MAX_DESCRIPTION {
        return Err(FieldError::new(
            "description",
            format!("must be 1-{MAX_DESCRIPTION} characters"),
        ));
    }
    if !f.parameters.is_object() {
        return Err(FieldError::new(
            "parameters",
            "must be a JSON schema object",
        ));
    }
    if f.parameters.to_string().len() > MAX_PARAMETERS_BYTES {
        return Err(FieldError::new(
            "parameters",
            format!("must be at most {MAX_PARAMETERS_BYTES} bytes"),
        ));
    }
    let url_ok = f.url.len() <= MAX_URL
        && super::url_shape_ok(&f.url)
        && reqwest::Url::parse(&f.url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
    if !url_ok {
        return Err(FieldError::new(
            "url",
            format!("must be an absolute http or https URL of at most {MAX_URL} characters"),
        ));
    }
    // An internal IP literal is refused now; a name is checked when a call resolves it.
    if let Ok(u) = reqwest::Url::parse(&f.url)
        && let Err(r) = egress.check_url(&u)
    {
        return Err(FieldError::new("url", r.message()));
    }
    Ok(())
}
