//! The OpenAI Chat Completions wire format: types, conversions both ways (we are a
//! client of it and we also serve it, from the gateway and the sandbox), and the client.
//!
//! A base URL makes the client serve any compatible server (vLLM, Ollama, llama.cpp);
//! `api_version` switches to Azure-style auth (`api-key` header, `api-version` query).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::client::{self, Endpoint, VendorClient, VendorResponse};
use super::error::{AiError, ErrorKind, RequestError};
use super::provider::{EventStream, Provider};
use super::sse::{self, Step};
use super::text_or_list::text_or_list;
use super::types::*;
use crate::config::Secret;

// ---------------------------------------------------------------- wire types

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaRequest {
    pub model: String,
    pub messages: Vec<OaMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<OaTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::num::optional"
    )]
    pub max_tokens: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::num::optional"
    )]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<OaStreamOptions>,
    /// A stop sequence or a list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<OaStop>,
    /// Parameters we do not interpret (top_p, user, seed, …), kept for pass-through.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OaStop {
    One(String),
    Many(Vec<String>),
}
text_or_list!(OaStop, One, Many, String);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaStreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<OaContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<OaToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum OaContent {
    Text(String),
    Parts(Vec<OaPart>),
}
text_or_list!(OaContent, Text, Parts, OaPart);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl OaContent {
    fn text(&self) -> String {
        match self {
            OaContent::Text(t) => t.clone(),
            OaContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: OaFunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaFunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaTool {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: OaFunction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaFunction {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaResponse {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    pub model: String,
    pub choices: Vec<OaChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OaUsage>,
}

fn completion_object() -> String {
    "chat.completion".into()
}

impl OaResponse {
    /// The answer as JSON, byte for byte what its `Serialize` writes (the tests compare
    /// the two), but with its keys and punctuation written as literals: the gateway
    /// writes one per call. Values go through serde_json, so strings are escaped alike.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512 + self.choices.len() * 256);
        out.extend_from_slice(b"{\"id\":");
        value(&mut out, &self.id)?;
        out.extend_from_slice(b",\"object\":");
        value(&mut out, &self.object)?;
        out.extend_from_slice(b",\"created\":");
        value(&mut out, &self.created)?;
        out.extend_from_slice(b",\"model\":");
        value(&mut out, &self.model)?;
        out.extend_from_slice(b",\"choices\":[");
        for (i, c) in self.choices.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"index\":");
            value(&mut out, &c.index)?;
            out.extend_from_slice(b",\"message\":");
            c.message.write_json(&mut out)?;
            out.extend_from_slice(b",\"finish_reason\":");
            value(&mut out, &c.finish_reason)?;
            out.extend_from_slice(b",\"logprobs\":");
            value(&mut out, &c.logprobs)?;
            out.push(b'}');
        }
        out.push(b']');
        if let Some(u) = &self.usage {
            out.extend_from_slice(b",\"usage\":{\"prompt_tokens\":");
            value(&mut out, &u.prompt_tokens)?;
            out.extend_from_slice(b",\"completion_tokens\":");
            value(&mut out, &u.completion_tokens)?;
            out.extend_from_slice(b",\"total_tokens\":");
            value(&mut out, &u.total_tokens)?;
            if let Some(d) = &u.prompt_tokens_details {
                out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
                value(&mut out, &d.cached_tokens)?;
                out.push(b'}');
            }
            if let Some(d) = &u.completion_tokens_details {
                out.extend_from_slice(b",\"completion_tokens_details\":{\"reasoning_tokens\":");
                value(&mut out, &d.reasoning_tokens)?;
                out.push(b'}');
            }
            out.push(b'}');
        }
        out.push(b'}');
        Ok(out)
    }
}

impl OaMessage {
    /// [`OaResponse::to_json`]'s part for a message.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"role\":");
        value(out, &self.role)?;
        out.extend_from_slice(b",\"content\":");
        value(out, &self.content)?;
        if let Some(calls) = &self.tool_calls {
            out.extend_from_slice(b",\"tool_calls\":");
            value(out, calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            out.extend_from_slice(b",\"tool_call_id\":");
            value(out, id)?;
        }
        if let Some(name) = &self.name {
            out.extend_from_slice(b",\"name\":");
            value(out, name)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// Appends `v` as JSON.
fn value(out: &mut Vec<u8>, v: &impl Serialize) -> serde_json::Result<()> {
    serde_json::to_writer(out, v)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaChoice {
    pub index: u32,
    pub message: OaMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<OaPromptDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaPromptDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// The output side's details: reasoning tokens are part of `completion_tokens`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaCompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaChunk {
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<OaChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<OaUsage>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaChunkChoice {
    pub index: u32,
    pub delta: OaDelta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<OaToolCallDelta>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaToolCallDelta {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<OaFunctionDelta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaFunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

// ---------------------------------------------------------------- conversions

/// A wire request as we receive it, converted: the neutral request and how the caller
/// wants the answer delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct InternalRequest {
    pub request: ChatRequest,
    /// `stream: true`: answer as a stream of chunks.
    pub stream: bool,
    /// `stream_options.include_usage: true`: end the stream with a usage chunk (the
    /// caller gets none otherwise).
    pub include_usage: bool,
}

/// A wire request as we receive it (gateway, sandbox) → the neutral request, or the
/// field that makes it invalid.
pub fn request_to_internal(req: OaRequest) -> Result<InternalRequest, RequestError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => {
                return Err(RequestError::new(
                    format!("messages[{i}].role"),
                    format!("unknown role {other:?}"),
                ));
            }
        };
        if role == Role::Tool && m.tool_call_id.is_none() {
            return Err(RequestError::new(
                format!("messages[{i}].tool_call_id"),
                "required for a tool message",
            ));
        }
        messages.push(Message {
            role,
            content: m.content.map(|c| c.text()),
            tool_calls: calls_from_wire(m.tool_calls),
            tool_call_id: m.tool_call_id,
        });
    }
    if messages.is_empty() {
        return Err(RequestError::new(
            "messages",
            "at least one message is required",
        ));
    }
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(RequestError::new(
                    "tool_choice",
                    format!("unknown value {other:?}"),
                ));
            }
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Tool(name.to_string())),
            None => {
                return Err(RequestError::new(
                    "tool_choice",
                    "expected a string or a function",
                ));
            }
        },
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let cache = req.extra.get("cache").and_then(Value::as_bool);
    let stop = match req.stop {
        None => Vec::new(),
        Some(OaStop::One(s)) => vec![s],
        Some(OaStop::Many(v)) => v,
    };
    Ok(InternalRequest {
        request: ChatRequest {
            model: req.model,
            messages,
            tools: req
                .tools
                .unwrap_or_default()
                .into_iter()
                .map(|t| ToolDef {
                    name: t.function.name,
                    description: t.function.description,
                    parameters: t.function.parameters,
                })
                .collect(),
            tool_choice,
            temperature: req.temperature,
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            response_format: req.response_format,
            cache,
            stop,
        },
        stream,
        include_usage,
    })
}

/// The neutral request → the wire request we send as a client.
pub fn request_from_internal(req: &ChatRequest, stream: bool, modern_limits: bool) -> OaRequest {
    let messages = req
        .messages
        .iter()
        .map(|m| OaMessage {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            }
            .to_string(),
            content: m.content.clone().map(OaContent::Text),
            tool_calls: calls_to_wire(&m.tool_calls),
            tool_call_id: m.tool_call_id.clone(),
            name: None,
        })
        .collect();
    let tools = (!req.tools.is_empty()).then(|| {
        req.tools
            .iter()
            .map(|t| OaTool {
                kind: function_type(),
                function: OaFunction {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.parameters.clone(),
                },
            })
            .collect()
    });
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => Value::from("auto"),
        ToolChoice::None => Value::from("none"),
        ToolChoice::Required => Value::from("required"),
        ToolChoice::Tool(name) => {
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
    });
    let (max_tokens, max_completion_tokens) = if modern_limits {
        (None, req.max_tokens)
    } else {
        (req.max_tokens, None)
    };
    OaRequest {
        model: req.model.clone(),
        messages,
        tools,
        tool_choice,
        temperature: req.temperature,
        max_tokens,
        max_completion_tokens,
        response_format: req.response_format.clone(),
        stream: stream.then_some(true),
        stream_options: stream.then_some(OaStreamOptions {
            include_usage: Some(true),
        }),
        stop: (!req.stop.is_empty()).then(|| OaStop::Many(req.stop.clone())),
        extra: Map::new(),
    }
}

/// Neutral tool calls → a message's wire `tool_calls` (absent when there are none).
fn calls_to_wire(calls: &[ToolCall]) -> Option<Vec<OaToolCall>> {
    (!calls.is_empty()).then(|| {
        calls
            .iter()
            .map(|c| OaToolCall {
                id: c.id.clone(),
                kind: function_type(),
                function: OaFunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            })
            .collect()
    })
}

/// A message's wire `tool_calls` → neutral tool calls.
fn calls_from_wire(calls: Option<Vec<OaToolCall>>) -> Vec<ToolCall> {
    calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        })
        .collect()
}

pub fn finish_to_wire(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn finish_from_wire(s: Option<&str>) -> FinishReason {
    match s {
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub fn usage_to_wire(u: &Usage) -> OaUsage {
    OaUsage {
        prompt_tokens: u.input_tokens,
        completion_tokens: u.output_tokens,
        total_tokens: u.total(),
        prompt_tokens_details: Some(OaPromptDetails {
            cached_tokens: u.cached_input_tokens,
        }),
        completion_tokens_details: Some(OaCompletionDetails {
            reasoning_tokens: u.reasoning_tokens,
        }),
    }
}

fn usage_from_wire(u: &OaUsage) -> Usage {
    Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cached_input_tokens: u
            .prompt_tokens_details
            .as_ref()
            .map(|d| d.cached_tokens)
            .unwrap_or(0),
        cache_write_tokens: 0,
        reasoning_tokens: u
            .completion_tokens_details
            .as_ref()
            .map_or(0, |d| d.reasoning_tokens),
    }
}

/// The neutral response → the wire response we serve.
pub fn response_to_wire(resp: &ChatResponse, created: i64) -> OaResponse {
    OaResponse {
        id: resp.id.clone(),
        object: completion_object(),
        created,
        model: resp.model.clone(),
        choices: vec![OaChoice {
            index: 0,
            message: OaMessage {
                role: "assistant".into(),
                content: resp.content.clone().map(OaContent::Text),
                tool_calls: calls_to_wire(&resp.tool_calls),
                tool_call_id: None,
                name: None,
            },
            finish_reason: Some(finish_to_wire(resp.finish_reason).into()),
            logprobs: None,
        }],
        usage: Some(usage_to_wire(&resp.usage)),
    }
}

/// A wire response we received → the neutral response.
pub fn response_from_wire(resp: OaResponse) -> Result<ChatResponse, AiError> {
    let usage = resp.usage.as_ref().map(usage_from_wire).unwrap_or_default();
    let choice = resp
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| AiError::new(ErrorKind::Malformed, "response has no choices"))?;
    Ok(ChatResponse {
        id: resp.id,
        model: resp.model,
        content: choice.message.content.map(|c| c.text()),
        tool_calls: calls_from_wire(choice.message.tool_calls),
        finish_reason: finish_from_wire(choice.finish_reason.as_deref()),
        usage,
        stop_sequence: None,
    })
}

/// Renders one stream event as a wire chunk (`None` for events with no wire form).
pub fn event_to_chunk(ev: &StreamEvent, id: &str, model: &str, created: i64) -> Option<OaChunk> {
    let chunk = |delta: OaDelta, finish: Option<String>| OaChunk {
        id: id.to_string(),
        object: chunk_object(),
        created,
        model: model.to_string(),
        choices: vec![OaChunkChoice {
            index: 0,
            delta,
            finish_reason: finish,
        }],
        usage: None,
    };
    Some(match ev {
        StreamEvent::Start { .. } => chunk(
            OaDelta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                tool_calls: None,
            },
            None,
        ),
        StreamEvent::Text(t) => chunk(
            OaDelta {
                content: Some(t.clone()),
                ..Default::default()
            },
            None,
        ),
        StreamEvent::ToolCallStart { index, id, name } => chunk(
            OaDelta {
                tool_calls: Some(vec![OaToolCallDelta {
                    index: *index,
                    id: Some(id.clone()),
                    kind: Some(function_type()),
                    function: Some(OaFunctionDelta {
                        name: Some(name.clone()),
                        arguments: Some(String::new()),
                    }),
                }]),
                ..Default::default()
            },
            None,
        ),
        StreamEvent::ToolCallArgs { index, delta } => chunk(
            OaDelta {
                tool_calls: Some(vec![OaToolCallDelta {
                    index: *index,
                    id: None,
                    kind: None,
                    function: Some(OaFunctionDelta {
                        name: None,
                        arguments: Some(delta.clone()),
                    }),
                }]),
                ..Default::default()
            },
            None,
        ),
        // The wire has no place for which sequence stopped the answer.
        StreamEvent::StopSequence(_) => return None,
        StreamEvent::Finish(r) => chunk(OaDelta::default(), Some(finish_to_wire(*r).into())),
        StreamEvent::Usage(u) => OaChunk {
            id: id.to_string(),
            object: chunk_object(),
            created,
            model: model.to_string(),
            choices: Vec::new(),
            usage: Some(usage_to_wire(u)),
        },
    })
}

/// Turns received wire chunks into stream events, tracking which tool calls started.
#[derive(Default)]
pub struct ChunkParser {
    started: bool,
    calls_started: Vec<bool>,
}

impl ChunkParser {
    pub fn parse(&mut self, chunk: OaChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.clone(),
                model: chunk.model.clone(),
            });
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(t) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(t));
            }
            for tc in choice.delta.tool_calls.unwrap_or_default() {
                let i = tc.index;
                if self.calls_started.len() <= i {
                    self.calls_started.resize(i + 1, false);
                }
                let f = tc.function.unwrap_or_default();
                if !self.calls_started[i] {
                    self.calls_started[i] = true;
                    out.push(StreamEvent::ToolCallStart {
                        index: i,
                        id: tc.id.unwrap_or_default(),
                        name: f.name.unwrap_or_default(),
                    });
                }
                if let Some(a) = f.arguments.filter(|a| !a.is_empty()) {
                    out.push(StreamEvent::ToolCallArgs { index: i, delta: a });
                }
            }
            if let Some(r) = choice.finish_reason {
                out.push(StreamEvent::Finish(finish_from_wire(Some(&r))));
            }
        }
        if let Some(u) = chunk.usage {
            out.push(StreamEvent::Usage(usage_from_wire(&u)));
        }
        out
    }
}

// ---------------------------------------------------------------- embeddings

/// An embeddings request as the API takes it: `input` is a string, a list of strings, a
/// list of token ids or a list of such lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaEmbeddingRequest {
    pub model: String,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::num::optional"
    )]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaEmbeddingResponse {
    #[serde(default = "list_object")]
    pub object: String,
    pub data: Vec<OaEmbedding>,
    pub model: String,
    #[serde(default)]
    pub usage: OaEmbeddingUsage,
}

fn list_object() -> String {
    "list".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OaEmbedding {
    #[serde(default = "embedding_object")]
    pub object: String,
    pub index: usize,
    /// Numbers, or (with `encoding_format: "base64"`) little-endian f32s in base64.
    pub embedding: Value,
}

fn embedding_object() -> String {
    "embedding".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OaEmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// The most inputs one embeddings request may carry (the API's own limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// The longest vector one may ask for (the largest models have 3072).
pub const MAX_EMBEDDING_DIMENSIONS: u32 = 4096;

/// A wire embeddings request → the neutral one and whether the caller wants base64.
pub fn embedding_request_to_internal(
    req: OaEmbeddingRequest,
) -> Result<(EmbeddingRequest, bool), RequestError> {
    let bad = |m: &str| RequestError::new("input", m.to_string());
    let shape = "must be a string, a list of strings, a list of token ids or a list of such lists";
    let input = match req.input {
        Value::String(s) => EmbeddingInput::Texts(vec![s]),
        Value::Array(items) if items.is_empty() => return Err(bad("must not be empty")),
        Value::Array(items) if items.iter().all(Value::is_string) => EmbeddingInput::Texts(
            items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            EmbeddingInput::Tokens(vec![token_ids(&items).ok_or_else(|| bad(shape))?])
        }
        Value::Array(items) => EmbeddingInput::Tokens(
            items
                .iter()
                .map(|i| i.as_array().and_then(|ids| token_ids(ids)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(shape))?,
        ),
        _ => return Err(bad(shape)),
    };
    if input.len() > MAX_EMBEDDING_INPUTS {
        return Err(bad("at most 2048 inputs per request"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(RequestError::new(
                "encoding_format",
                format!("unknown value {other:?}: use float or base64"),
            ));
        }
    };
    if req
        .dimensions
        .is_some_and(|d| d == 0 || d > MAX_EMBEDDING_DIMENSIONS)
    {
        return Err(RequestError::new("dimensions", "must be 1-4096"));
    }
    Ok((
        EmbeddingRequest {
            model: req.model,
            input,
            dimensions: req.dimensions,
        },
        base64,
    ))
}

fn token_ids(items: &[Value]) -> Option<Vec<u32>> {
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|v| {
            // A whole number, also when written as a float (`600.0`).
            let f = v.as_f64()?;
            (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(f as u32)
        })
        .collect()
}

/// The neutral response → the wire response we serve, vectors as numbers or base64.
pub fn embedding_response_to_wire(resp: &EmbeddingResponse, base64: bool) -> OaEmbeddingResponse {
    use base64::Engine as _;
    OaEmbeddingResponse {
        object: list_object(),
        data: resp
            .data
            .iter()
            .enumerate()
            .map(|(index, v)| OaEmbedding {
                object: embedding_object(),
                index,
                embedding: if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Value::from(v.clone())
                },
            })
            .collect(),
        model: resp.model.clone(),
        usage: OaEmbeddingUsage {
            prompt_tokens: resp.usage.input_tokens,
            total_tokens: resp.usage.input_tokens,
        },
    }
}

/// A wire response we received (numbers) → the neutral response, vectors in index order.
pub fn embedding_response_from_wire(
    resp: OaEmbeddingResponse,
    inputs: usize,
) -> Result<EmbeddingResponse, AiError> {
    let mut data = vec![None; inputs];
    for e in resp.data {
        let v: Vec<f32> = serde_json::from_value(e.embedding).map_err(|_| {
            AiError::new(
                ErrorKind::Malformed,
                "an embedding is not a list of numbers",
            )
        })?;
        if let Some(slot) = data.get_mut(e.index) {
            *slot = Some(v);
        }
    }
    let data = data
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| AiError::new(ErrorKind::Malformed, "an input got no embedding"))?;
    Ok(EmbeddingResponse {
        model: resp.model,
        data,
        usage: Usage {
            input_tokens: resp.usage.prompt_tokens,
            ..Usage::default()
        },
    })
}

/// The neutral request → the wire request we send (numbers back, not base64).
pub fn embedding_request_from_internal(req: &EmbeddingRequest) -> OaEmbeddingRequest {
    OaEmbeddingRequest {
        model: req.model.clone(),
        input: serde_json::to_value(&req.input).unwrap_or(Value::Null),
        encoding_format: Some("float".into()),
        dimensions: req.dimensions,
        user: None,
    }
}

// ---------------------------------------------------------------- client

/// An OpenAI-format vendor reached over HTTP.
pub struct OpenAiProvider {
    name: String,
    /// `…/chat/completions` with `Authorization: Bearer …` (or Azure-style `api-key`).
    endpoint: Endpoint,
    /// `…/embeddings`, same credential.
    embeddings: Endpoint,
    modern_limits: bool,
    http: VendorClient,
}

impl OpenAiProvider {
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Secret,
        api_version: Option<String>,
        http: VendorClient,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/').to_string();
        // The official API prefers max_completion_tokens; compatible servers know max_tokens.
        let modern_limits = base_url.contains("api.openai.com");
        let url_of = |path: &str| match &api_version {
            Some(v) => format!("{base_url}/{path}?api-version={v}"),
            None => format!("{base_url}/{path}"),
        };
        let bearer = format!("Bearer {}", api_key.expose());
        let credential = if api_version.is_some() {
            Some(("api-key", api_key.expose()))
        } else if !api_key.is_empty() {
            Some(("authorization", bearer.as_str()))
        } else {
            None
        };
        Self {
            name: name.into(),
            endpoint: Endpoint::new(&url_of("chat/completions"), credential),
            embeddings: Endpoint::new(&url_of("embeddings"), credential),
            modern_limits,
            http,
        }
    }

    async fn send(&self, body: &OaRequest) -> Result<VendorResponse, AiError> {
        self.http.post_json(&self.endpoint, body, &[]).await
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, AiError> {
        let resp = self
            .send(&request_from_internal(req, false, self.modern_limits))
            .await?;
        response_from_wire(client::json_body(resp).await?)
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<EventStream, AiError> {
        let resp = self
            .send(&request_from_internal(req, true, self.modern_limits))
            .await?;
        let mut parser = ChunkParser::default();
        Ok(sse::events(resp, move |ev| {
            if ev.data.trim() == "[DONE]" {
                return Step::Done(Vec::new());
            }
            match serde_json::from_str::<OaChunk>(&ev.data) {
                Ok(c) => Step::Emit(parser.parse(c)),
                Err(_) => Step::Fail(
                    serde_json::from_str::<Value>(&ev.data)
                        .ok()
                        .and_then(|v| {
                            v.pointer("/error/message")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_else(|| "malformed stream chunk".into()),
                ),
            }
        }))
    }

    async fn embed(&self, req: &EmbeddingRequest) -> Result<EmbeddingResponse, AiError> {
        let body = embedding_request_from_internal(req);
        let resp = self.http.post_json(&self.embeddings, &body, &[]).await?;
        embedding_response_from_wire(client::json_body(resp).await?, req.input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers of every shape the wire allows, for comparing the hand-written JSON with
    /// serde's.
    fn answers() -> Vec<OaResponse> {
        let message = |content: Option<OaContent>| OaMessage {
            role: "assistant".into(),
            content,
            tool_calls: None,
            tool_call_id: None,
            name: None,
        };
        let choice = |index, message, finish: Option<&str>| OaChoice {
            index,
            message,
            finish_reason: finish.map(str::to_owned),
            logprobs: None,
        };
        let plain = OaResponse {
            id: "chatcmpl-1".into(),
            object: "chat.completion".into(),
            created: 1_700_000_000,
            model: "gpt-4o-mini".into(),
            choices: vec![choice(
                0,
                message(Some(OaContent::Text("Hi.".into()))),
                Some("stop"),
            )],
            usage: None,
        };
        let mut all = vec![plain.clone()];
        let mut r = plain.clone();
        r.usage = Some(OaUsage {
            prompt_tokens: 12,
            completion_tokens: 16,
            total_tokens: 28,
            prompt_tokens_details: Some(OaPromptDetails { cached_tokens: 3 }),
            completion_tokens_details: Some(OaCompletionDetails {
                reasoning_tokens: 7,
            }),
        });
        all.push(r.clone());
        r.usage = Some(OaUsage {
            prompt_tokens: u64::MAX,
            ..OaUsage::default()
        });
        r.created = -5;
        all.push(r);
        let mut r = plain.clone();
        r.id = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓ 😀".into();
        r.model = String::new();
        r.choices = vec![
            choice(0, message(None), None),
            choice(
                1,
                OaMessage {
                    role: "assistant".into(),
                    content: Some(OaContent::Parts(vec![
                        OaPart {
                            kind: "text".into(),
                            text: Some("a \"part\"".into()),
                        },
                        OaPart {
                            kind: "refusal".into(),
                            text: None,
                        },
                    ])),
                    tool_calls: Some(vec![OaToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: OaFunctionCall {
                            name: "lookup".into(),
                            arguments: "{\"q\": \"x\"}".into(),
                        },
                    }]),
                    tool_call_id: Some("call_0".into()),
                    name: Some("helper".into()),
                },
                Some("tool_calls"),
            ),
        ];
        r.choices[1].logprobs =
            Some(serde_json::json!({"content": [{"token": "a", "logprob": -0.5}]}));
        all.push(r);
        let mut r = plain;
        r.choices.clear();
        all.push(r);
        all
    }

    #[test]
    fn the_answer_json_is_serdes_byte_for_byte() {
        for answer in answers() {
            let expected = serde_json::to_vec(&answer).unwrap();
            let written = answer.to_json().unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn wire_request_round_trips_through_internal() {
        let wire: OaRequest = serde_json::from_value(serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "2"}
            ],
            "tools": [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "calc"}},
            "max_completion_tokens": 50,
            "stream": true,
            "stream_options": {"include_usage": true},
            "top_p": 0.5
        }))
        .unwrap();
        let InternalRequest {
            request: req,
            stream,
            include_usage,
        } = request_to_internal(wire).unwrap();
        assert!(stream && include_usage);
        assert_eq!(req.messages[0].role, Role::System);
        assert_eq!(req.messages[1].content.as_deref(), Some("hi there"));
        assert_eq!(req.messages[2].tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool("calc".into())));
        assert_eq!(req.max_tokens, Some(50));
        let back = request_from_internal(&req, false, true);
        assert_eq!(back.max_completion_tokens, Some(50));
        assert_eq!(back.max_tokens, None);
        let again = request_to_internal(back).unwrap();
        assert_eq!(again.request, req);
    }

    #[test]
    fn bad_roles_are_named() {
        let wire: OaRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "wizard", "content": "x"}]
        }))
        .unwrap();
        let err = request_to_internal(wire).unwrap_err();
        assert!(err.to_string().contains("messages[0].role"));
        assert_eq!(err.field, "messages[0].role");
        assert_eq!(err.message, "unknown role \"wizard\"");
        assert_eq!(err.to_string(), "messages[0].role: unknown role \"wizard\"");
    }

    #[test]
    fn chunks_round_trip_through_events() {
        let events = vec![
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "calc".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                delta: "{\"a\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                delta: "1}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cached_input_tokens: 1,
                cache_write_tokens: 0,
                reasoning_tokens: 2,
            }),
        ];
        let mut parser = ChunkParser::default();
        let mut acc = StreamAccumulator::default();
        for ev in &events {
            let chunk = event_to_chunk(ev, "x", "m", 0).unwrap();
            let text = serde_json::to_string(&chunk).unwrap();
            for e in parser.parse(serde_json::from_str(&text).unwrap()) {
                acc.push(&e);
            }
        }
        let r = acc.finish().unwrap();
        assert_eq!(r.content.as_deref(), Some("Hello"));
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage.cached_input_tokens, 1);
    }
}
