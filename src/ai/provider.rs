//! The one trait every vendor adapter implements.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

use super::error::{AiError, ErrorKind};
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
