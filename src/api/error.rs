//! The one JSON error shape of the API and the mapping from failures to statuses.
//!
//! Policy: every failure answers `{"error":{"type","message","request_id"}}` with the
//! status its type names. Client errors carry a message meant for the caller. A server
//! error (500) carries only a generic message and the request id; its cause is logged
//! once, here, with the same request id, so an operator can find it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::orchestrator::SubmitError;
use crate::store::StoreError;

/// The id of the current request (set by the request middleware, see
/// [`crate::telemetry::logging::REQUEST`]), or an empty string outside a request.
pub fn current_request_id() -> String {
    crate::telemetry::logging::REQUEST
        .try_with(|r| r.id().to_owned())
        .unwrap_or_default()
}

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind, e.g. `validation_error`, `not_found`, `conflict`.
    #[serde(rename = "type")]
    #[schema(example = "validation_error")]
    pub kind: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The request's `X-Request-Id`, for support and log search.
    pub request_id: String,
    /// For validation errors: the offending field (dotted path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For upstream (AI vendor) failures: every attempt made, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub attempts: Option<Vec<crate::ai::router::AttemptReport>>,
    /// For `budget_exceeded`: the budget without room (`budget_id`, `scope`, `period`,
    /// `limit_usd`, `used_usd`, `needed_usd`) and `reset_at`, when its window ends
    /// (null for a budget without a period).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub budget: Option<crate::ai::budget::BudgetExceeded>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// Too many requests; the caller may retry after this many seconds.
    #[error("rate limit exceeded; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The tenant holds as many live event streams as it may; one ends within its
    /// lifetime, so the caller may retry after `retry_after` seconds.
    #[error(
        "this tenant already holds {max} live event streams on this replica; retry after \
         {retry_after} s, or read the events as JSON"
    )]
    TooManyStreams { max: u32, retry_after: u64 },
    /// This client address failed to authenticate too often; refused until the window
    /// has passed.
    #[error("too many failed authentications from this address; retry after {retry_after} s")]
    TooManyAuthFailures { retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// Every AI candidate failed; the status says how (502, or 400/429/503 when all
    /// attempts failed the same way).
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        message: String,
        attempts: Vec<crate::ai::router::AttemptReport>,
    },
    /// A budget has no room for the call; nothing was sent to a vendor.
    #[error("budget exceeded: {0}")]
    BudgetExceeded(Box<crate::ai::budget::BudgetExceeded>),
    /// Anything unexpected. The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. }
            | Self::TooManyStreams { .. }
            | Self::TooManyAuthFailures { .. }
            | Self::BudgetExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Validation { .. } => "validation_error",
            Self::RateLimited { .. }
            | Self::TooManyStreams { .. }
            | Self::TooManyAuthFailures { .. } => "rate_limited",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::Unavailable(_) => "unavailable",
            Self::Upstream { .. } => "upstream_error",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = current_request_id();
        let (message, field) = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                (
                    "internal error; quote the request id when reporting it".to_string(),
                    None,
                )
            }
            Self::Unavailable(reason) => {
                tracing::warn!(error = %reason, "service unavailable");
                (self.to_string(), None)
            }
            Self::Validation { field, message } => (message.clone(), Some(field.clone())),
            other => {
                tracing::debug!(status = status.as_u16(), error = %other, "client error");
                (other.to_string(), None)
            }
        };
        let attempts = match &self {
            Self::Upstream { attempts, .. } => Some(attempts.clone()),
            _ => None,
        };
        let budget = match &self {
            Self::BudgetExceeded(b) => Some((**b).clone()),
            _ => None,
        };
        // Messages may quote the caller's input (serde names the offending value); pass
        // them through the redactor so no credential or configured secret is echoed.
        let (message, _) = crate::auth::redact::redact(&message);
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message,
                request_id,
                field,
                attempts,
                budget: budget.clone(),
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after }
        | Self::TooManyStreams { retry_after, .. }
        | Self::TooManyAuthFailures { retry_after } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let Some(b) = &budget {
            // Retrying before the reset cannot succeed: the SDKs that honour
            // `x-should-retry` stop at once; the others wait for `Retry-After`.
            if let Some(secs) = b.retry_after(chrono::Utc::now()) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp.headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, ApiKey realm=\"digital-employee\""),
            );
        }
        resp
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid { field, message } => ApiError::validation(field, message),
            SubmitError::BadIdempotencyKey(m) => ApiError::BadRequest(m),
            e @ SubmitError::IdempotencyConflict => ApiError::Conflict(e.to_string()),
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Duplicate(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::VersionConflict => ApiError::Conflict(
                "the resource was changed since it was read; fetch it again and retry".into(),
            ),
            e if e.is_unavailable() => ApiError::Unavailable("database unavailable".into()),
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
