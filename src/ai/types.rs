//! The provider-neutral chat types every vendor adapter converts to and from.
//!
//! They follow the shape of a chat completion (messages with roles, tool calls whose
//! arguments are JSON text) because both vendor formats map onto it without loss for
//! the features we use.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool invocation proposed by the model. `arguments` is JSON text as the model wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// Text content; `None` for an assistant turn that only calls tools.
    pub content: Option<String>,
    /// Assistant turns: the tools it called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tool turns: which call this result answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(text.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
}

/// A tool offered to the model: name, description and JSON-schema parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub parameters: Value,
}

/// How the model may use the offered tools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "name")]
pub enum ToolChoice {
    Auto,
    None,
    /// Must call some tool.
    Required,
    /// Must call this tool.
    Tool(String),
}

/// One chat completion request, before routing: `model` is the vendor's model name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `{"type":"json_object"}` or a JSON-schema format, passed through to vendors that
    /// support it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Ask for the result cache even when the temperature is not 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// Sequences that end the answer where they would appear (not included in it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

impl ChatRequest {
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            tools: Vec::new(),
            tool_choice: None,
            temperature: None,
            max_tokens: None,
            response_format: None,
            cache: None,
            stop: Vec::new(),
        }
    }

    /// About how many tokens the prompt is: four characters a token over the text of the
    /// messages, tool calls and tool definitions (plus a little per message). Used where
    /// no vendor tokenizer is at hand: the sandbox's usage and token counting for
    /// vendors that offer no counting endpoint.
    pub fn estimated_input_tokens(&self) -> u64 {
        let mut n = 0usize;
        for m in &self.messages {
            n += m.content.as_deref().map_or(0, str::len) + 4;
            for c in &m.tool_calls {
                n += c.name.len() + c.arguments.len();
            }
        }
        for t in &self.tools {
            n += t.name.len() + t.parameters.to_string().len();
        }
        estimate_tokens(n)
    }
}

/// Tokens of `chars` bytes of text at about four a token (at least one).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// Tokens of one vendor call. `cached_input_tokens` are part of `input_tokens` billed at
/// the cached price; `cache_write_tokens` are input tokens written to a prompt cache;
/// `reasoning_tokens` are part of `output_tokens` (hidden reasoning the vendor bills as
/// output), billed at the reasoning price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub cache_write_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The stop sequence that ended the answer, when the vendor says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}

/// Incremental pieces of a streamed response, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A new tool call at `index`.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More argument text for the tool call at `index`.
    ToolCallArgs {
        index: usize,
        delta: String,
    },
    /// The answer ended at this stop sequence (comes before `Finish`).
    StopSequence(String),
    Finish(FinishReason),
    Usage(Usage),
}

/// Folds stream events into the response they describe.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: String,
    model: String,
    text: String,
    has_text: bool,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    stop_sequence: Option<String>,
    usage: Usage,
}

impl StreamAccumulator {
    pub fn push(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
            }
            StreamEvent::Text(t) => {
                self.has_text = true;
                self.text.push_str(t);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                while self.calls.len() <= *index {
                    self.calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.calls[*index].id.clone_from(id);
                self.calls[*index].name.clone_from(name);
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                if let Some(c) = self.calls.get_mut(*index) {
                    c.arguments.push_str(delta);
                }
            }
            StreamEvent::StopSequence(s) => self.stop_sequence = Some(s.clone()),
            StreamEvent::Finish(r) => self.finish = Some(*r),
            StreamEvent::Usage(u) => self.usage = *u,
        }
    }

    /// What a stream cut short has used so far: the vendor's counts where it sent them
    /// (input at the start, in Anthropic's format), otherwise `estimated_input` and an
    /// estimate of the output received.
    pub fn used_so_far(&self, estimated_input: u64) -> Usage {
        let mut u = self.usage;
        if u.input_tokens == 0 {
            u.input_tokens = estimated_input;
        }
        let received = self.text.len()
            + self
                .calls
                .iter()
                .map(|c| c.name.len() + c.arguments.len())
                .sum::<usize>();
        if received > 0 {
            u.output_tokens = u.output_tokens.max(estimate_tokens(received));
        }
        u
    }

    /// The response, or `None` if the stream never said how it finished.
    pub fn finish(self) -> Option<ChatResponse> {
        let finish_reason = self.finish?;
        Some(ChatResponse {
            id: self.id,
            model: self.model,
            content: self.has_text.then_some(self.text),
            tool_calls: self.calls,
            finish_reason,
            usage: self.usage,
            stop_sequence: self.stop_sequence,
        })
    }
}

/// What to embed: texts, or texts already tokenized by the caller (token ids).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One embeddings request, before routing: `model` is the vendor's model name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    /// Length of each vector, for models that can shorten theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// One vector per input, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingResponse {
    pub model: String,
    pub data: Vec<Vec<f32>>,
    /// Only `input_tokens` is used.
    pub usage: Usage,
}

/// A request the router can send to any candidate: it names the candidate's model.
pub trait ModelRequest: Clone + Send + Sync {
    fn set_model(&mut self, model: &str);
}

impl ModelRequest for ChatRequest {
    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }
}

impl ModelRequest for EmbeddingRequest {
    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }
}
