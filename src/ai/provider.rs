//! The one trait every vendor adapter implements.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

use super::error::AiError;
use super::types::{ChatRequest, ChatResponse, StreamEvent};

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
}
