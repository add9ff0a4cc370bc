//! The one trait every vendor adapter implements.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

use super::error::{AiError, ErrorKind, parse_retry_after};
use super::types::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamEvent};

/// Events of a streamed completion; an `Err` item ends the stream as failed.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, AiError>> + Send>>;

/// A chat-completion vendor. Implementations do one attempt: no retries, no timeouts
/// (the router owns both), no accounting.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name used in model policies (`<name>/<model>`).
    fn name(&self) -> &str;
    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, AiError>;
    async fn chat_stream(&self, req: &ChatRequest) -> Result<EventStream, AiError>;
    /// Embeds the inputs. Vendors without an embeddings endpoint refuse it as a bad
    /// request, so the router moves on to the next candidate.
    /// The prompt's input tokens as the vendor counts them, for vendors with a counting
    /// endpoint; `None` for the others (callers estimate).
    async fn count_tokens(&self, _req: &ChatRequest) -> Result<Option<u64>, AiError> {
        Ok(None)
    }
    async fn embed(&self, _req: &EmbeddingRequest) -> Result<EmbeddingResponse, AiError> {
        Err(AiError::new(
            ErrorKind::BadRequest,
            format!("provider {} serves no embeddings", self.name()),
        ))
    }
}

/// Where a provider POSTs and the credential it sends, both built once at start.
pub struct Endpoint {
    /// The full URL as configured (a call to a URL that does not parse fails with the
    /// client's own error).
    url: String,
    parsed: Option<reqwest::Url>,
    /// Marked sensitive (kept out of `Debug` and HTTP/2 header compression); `None` when
    /// there is no key or it is not a valid header value (logged by header name; the
    /// vendor's 401 then names the problem).
    credential: Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
}

impl Endpoint {
    /// `credential`: the header name and its value, if a key is to be sent.
    pub fn new(url: String, credential: Option<(&'static str, &str)>) -> Endpoint {
        Endpoint {
            parsed: reqwest::Url::parse(&url).ok(),
            url,
            credential: credential.and_then(|(name, value)| secret_header(name, value)),
        }
    }

    /// A POST to this endpoint carrying the credential (and, with tracing on, the
    /// current span's `traceparent`).
    pub fn post(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let req = match &self.parsed {
            Some(url) => http.post(url.clone()),
            None => http.post(&self.url),
        };
        let req = crate::telemetry::traces::propagate(req);
        match &self.credential {
            Some((name, value)) => req.header(name.clone(), value.clone()),
            None => req,
        }
    }
}

fn secret_header(
    name: &'static str,
    value: &str,
) -> Option<(reqwest::header::HeaderName, reqwest::header::HeaderValue)> {
    let Ok(mut v) = reqwest::header::HeaderValue::from_str(value) else {
        tracing::warn!(
            header = name,
            "the configured vendor key is not a valid HTTP header value; it is not sent"
        );
        return None;
    };
    v.set_sensitive(true);
    Some((reqwest::header::HeaderName::from_static(name), v))
}

/// Sends one vendor request; a non-2xx answer becomes the error its status classifies
/// (with `Retry-After` and the vendor's message, truncated).
pub async fn send(req: reqwest::RequestBuilder) -> Result<reqwest::Response, AiError> {
    let resp = req.send().await.map_err(|e| AiError::from_reqwest(&e))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let retry_after = parse_retry_after(resp.headers().get("retry-after"));
        let text = resp.text().await.unwrap_or_default();
        return Err(AiError::from_status(status, &text, retry_after));
    }
    Ok(resp)
}

/// Reads a whole JSON response body; unreadable JSON is `Malformed` (retryable).
pub async fn json_body<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, AiError> {
    let bytes = resp.bytes().await.map_err(|e| AiError::from_reqwest(&e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AiError::new(ErrorKind::Malformed, format!("invalid response JSON: {e}")))
}
