//! The Anthropic Messages wire format: types, conversions both ways (we call it as a
//! client; the sandbox serves it), and the client.
//!
//! Differences from the neutral shape handled here: the system prompt is a top-level
//! field; tool calls are `tool_use` content blocks with parsed JSON `input`; tool results
//! are `tool_result` blocks inside a *user* turn; `max_tokens` is required; streams are
//! typed events (`message_start`, `content_block_*`, `message_delta`, `message_stop`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{self, Endpoint, VendorClient, VendorResponse};
use super::error::{AiError, ErrorKind, RequestError};
use super::provider::{EventStream, Provider};
use super::sse::{self, Step};
use super::text_or_list::text_or_list;
use super::types::*;
use crate::config::Secret;

pub const API_VERSION: &str = "2023-06-01";

/// A whole number as JSON Schema sees it (`5`, `5.0`); absent or `null` is 0.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    super::num::optional::<D, u32>(d).map(Option::unwrap_or_default)
}
/// Used when the caller sets no limit: the API requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

// ---------------------------------------------------------------- wire types

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<AnSystem>,
    pub messages: Vec<AnMessage>,
    /// Required by the API (at least 1); absent reads as 0, which a request refuses and
    /// token counting ignores. A whole number written as a float counts.
    #[serde(default, deserialize_with = "whole")]
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<AnTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Structured output as the API takes it: `{"format": {"type": "json_schema",
    /// "schema": …}}` (also read from the older top-level `output_format`). Received
    /// only; as a client we ask for structure with [`OUTPUT_TOOL`], which every model
    /// supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AnSystem {
    Text(String),
    Blocks(Vec<AnBlock>),
}
text_or_list!(AnSystem, Text, Blocks, AnBlock);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnMessage {
    pub role: String,
    pub content: AnContent,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AnContent {
    Text(String),
    Blocks(Vec<AnBlock>),
}
text_or_list!(AnContent, Text, Blocks, AnBlock);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Images and documents are refused on the way in: dropping them would change the
    /// question.
    Image {},
    Document {},
    /// Anything else (thinking, redacted thinking, …) is carried but ignored.
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnResponse {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant_role")]
    pub role: String,
    pub model: String,
    pub content: Vec<AnBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    pub usage: AnUsage,
}

fn message_type() -> String {
    "message".into()
}
fn assistant_role() -> String {
    "assistant".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

// ---------------------------------------------------------------- conversions

fn result_text(content: &Option<Value>) -> String {
    match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(other) => other.to_string(),
    }
}

/// What one turn's content blocks say, in neutral terms.
struct Turn {
    /// The text blocks joined; `None` when the turn has no text block.
    text: Option<String>,
    /// `tool_use` blocks, their `input` as JSON text.
    calls: Vec<ToolCall>,
    /// `tool_result` blocks as tool messages, in order.
    results: Vec<Message>,
}

fn read_blocks(blocks: Vec<AnBlock>) -> Turn {
    read_blocks_checked(blocks).unwrap_or_else(|turn| turn)
}

/// Like [`read_blocks`], but a turn holding an image or document block is an `Err` (with
/// what was read, for callers that ignore it).
fn read_blocks_checked(blocks: Vec<AnBlock>) -> Result<Turn, Turn> {
    let mut unsupported = false;
    let mut turn = Turn {
        text: None,
        calls: Vec::new(),
        results: Vec::new(),
    };
    for b in blocks {
        match b {
            AnBlock::Text { text } => turn.text.get_or_insert_with(String::new).push_str(&text),
            AnBlock::ToolUse { id, name, input } => turn.calls.push(ToolCall {
                id,
                name,
                arguments: input.to_string(),
            }),
            AnBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } => turn
                .results
                .push(Message::tool_result(tool_use_id, result_text(&content))),
            AnBlock::Image {} | AnBlock::Document {} => unsupported = true,
            AnBlock::Other => {}
        }
    }
    if unsupported { Err(turn) } else { Ok(turn) }
}

/// A wire request as the sandbox receives it, converted.
#[derive(Clone, Debug, PartialEq)]
pub struct InternalRequest {
    pub request: ChatRequest,
    /// `stream: true`: answer as a stream of typed events.
    pub stream: bool,
}

/// A wire request as the sandbox receives it → the neutral request, or the field that
/// makes it invalid.
pub fn request_to_internal(req: AnRequest) -> Result<InternalRequest, RequestError> {
    if req.messages.is_empty() {
        return Err(RequestError::new(
            "messages",
            "at least one message is required",
        ));
    }
    let mut messages = Vec::new();
    match req.system {
        Some(AnSystem::Text(t)) => messages.push(Message::system(t)),
        Some(AnSystem::Blocks(blocks)) => {
            let text: String = blocks
                .iter()
                .filter_map(|b| match b {
                    AnBlock::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            messages.push(Message::system(text));
        }
        None => {}
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(RequestError::new(
                    format!("messages[{i}].role"),
                    format!("unknown role {other:?}"),
                ));
            }
        };
        let blocks = match m.content {
            AnContent::Text(t) => vec![AnBlock::Text { text: t }],
            AnContent::Blocks(b) if b.is_empty() => {
                return Err(RequestError::new(
                    format!("messages[{i}].content"),
                    "must not be an empty list",
                ));
            }
            AnContent::Blocks(b) => b,
        };
        let turn = read_blocks_checked(blocks).map_err(|_| {
            RequestError::new(
                format!("messages[{i}].content"),
                "image and document blocks are not supported",
            )
        })?;
        // Tool results travel in a user turn but are tool messages of their own, ahead of
        // whatever else the turn says.
        messages.extend(turn.results);
        if turn.text.is_some() || !turn.calls.is_empty() {
            messages.push(Message {
                role,
                content: turn.text,
                tool_calls: turn.calls,
                tool_call_id: None,
            });
        }
    }
    let tool_choice = match req
        .tool_choice
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str)
    {
        None => None,
        Some("auto") => Some(ToolChoice::Auto),
        Some("any") => Some(ToolChoice::Required),
        Some("none") => Some(ToolChoice::None),
        Some("tool") => req
            .tool_choice
            .as_ref()
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Tool(n.to_string())),
        Some(other) => {
            return Err(RequestError::new(
                "tool_choice.type",
                format!("unknown value {other:?}"),
            ));
        }
    };
    if req.max_tokens == 0 {
        return Err(RequestError::new("max_tokens", "required, at least 1"));
    }
    if req.temperature.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(RequestError::new("temperature", "must be between 0 and 1"));
    }
    let format = req
        .output_config
        .as_ref()
        .and_then(|c| c.get("format"))
        .or(req.output_format.as_ref())
        .filter(|f| !f.is_null());
    let response_format = match format {
        None => None,
        Some(f) if f.get("type").and_then(Value::as_str) == Some("json_schema") => {
            let schema = f.get("schema").cloned().ok_or_else(|| {
                RequestError::new("output_config.format.schema", "required for json_schema")
            })?;
            Some(serde_json::json!({"type": "json_schema",
                "json_schema": {"name": "output", "schema": schema}}))
        }
        Some(_) => {
            return Err(RequestError::new(
                "output_config.format.type",
                "only json_schema is supported",
            ));
        }
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
                    name: t.name,
                    description: t.description,
                    parameters: t.input_schema,
                })
                .collect(),
            tool_choice,
            temperature: req.temperature,
            max_tokens: Some(req.max_tokens),
            response_format,
            cache: None,
            stop: req.stop_sequences.unwrap_or_default(),
        },
        stream: req.stream.unwrap_or(false),
    })
}

/// The neutral request → the wire request we send. Consecutive tool results are merged
/// into one user turn, as the API requires alternating roles.
pub fn request_from_internal(req: &ChatRequest, stream: bool) -> AnRequest {
    let mut system = Vec::new();
    let mut messages: Vec<AnMessage> = Vec::new();
    let push = |messages: &mut Vec<AnMessage>, role: &str, block: AnBlock| {
        if let Some(last) = messages.last_mut()
            && last.role == role
            && let AnContent::Blocks(blocks) = &mut last.content
        {
            blocks.push(block);
            return;
        }
        messages.push(AnMessage {
            role: role.to_string(),
            content: AnContent::Blocks(vec![block]),
        });
    };
    for m in &req.messages {
        match m.role {
            Role::System => system.extend(m.content.clone()),
            Role::User => push(
                &mut messages,
                "user",
                AnBlock::Text {
                    text: m.content.clone().unwrap_or_default(),
                },
            ),
            Role::Tool => push(
                &mut messages,
                "user",
                AnBlock::ToolResult {
                    tool_use_id: m.tool_call_id.clone().unwrap_or_default(),
                    content: Some(Value::from(m.content.clone().unwrap_or_default())),
                    is_error: None,
                },
            ),
            Role::Assistant => {
                if let Some(t) = m.content.clone().filter(|t| !t.is_empty()) {
                    push(&mut messages, "assistant", AnBlock::Text { text: t });
                }
                for c in &m.tool_calls {
                    push(
                        &mut messages,
                        "assistant",
                        AnBlock::ToolUse {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            input: tool_input(&c.arguments),
                        },
                    );
                }
            }
        }
    }
    let tools = (!req.tools.is_empty()).then(|| {
        req.tools
            .iter()
            .map(|t| AnTool {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: t.parameters.clone(),
            })
            .collect()
    });
    let mut tools: Option<Vec<AnTool>> = tools;
    let mut tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => serde_json::json!({"type": "auto"}),
        ToolChoice::None => serde_json::json!({"type": "none"}),
        ToolChoice::Required => serde_json::json!({"type": "any"}),
        ToolChoice::Tool(n) => serde_json::json!({"type": "tool", "name": n}),
    });
    // Structured output: the schema becomes a tool the model must call (alone, or as one
    // of the tools it must choose from when it has others to call first).
    if let Some(out) = Structured::of(req) {
        let own_tools = req.tools.is_empty() || req.tool_choice == Some(ToolChoice::None);
        let list = tools.get_or_insert_with(Vec::new);
        if req.tool_choice == Some(ToolChoice::None) {
            list.clear();
        }
        list.push(AnTool {
            name: OUTPUT_TOOL.to_string(),
            description: Some(out.description),
            input_schema: out.input_schema,
        });
        tool_choice = Some(if own_tools {
            serde_json::json!({"type": "tool", "name": OUTPUT_TOOL})
        } else {
            serde_json::json!({"type": "any"})
        });
    }
    AnRequest {
        model: req.model.clone(),
        system: (!system.is_empty()).then(|| AnSystem::Text(system.join("\n\n"))),
        messages,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        tools,
        tool_choice,
        temperature: req.temperature,
        stream: stream.then_some(true),
        stop_sequences: (!req.stop.is_empty()).then(|| req.stop.clone()),
        output_config: None,
        output_format: None,
    }
}

/// The tool through which an Anthropic-format vendor returns structured output: the API
/// has no response format, so the schema is offered as this tool's input and the model
/// is made to call it; its input is the answer.
pub const OUTPUT_TOOL: &str = "structured_output";

/// A request's structured-output demand, as the Anthropic format carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct Structured {
    description: String,
    input_schema: Value,
    /// The schema is not an object: it is wrapped as `{"value": …}` (tool input must be an
    /// object) and unwrapped from the answer.
    wrapped: bool,
}

impl Structured {
    /// `response_format` `json_schema` (its `schema`) or `json_object` (any object).
    pub fn of(req: &ChatRequest) -> Option<Structured> {
        let f = req.response_format.as_ref()?;
        let (name, schema) = match f.get("type").and_then(Value::as_str)? {
            "json_schema" => {
                let spec = f.get("json_schema").unwrap_or(f);
                (
                    spec.get("name").and_then(Value::as_str).unwrap_or("output"),
                    spec.get("schema")
                        .cloned()
                        .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                )
            }
            "json_object" => ("object", serde_json::json!({"type": "object"})),
            _ => return None,
        };
        let is_object = schema.get("type").and_then(Value::as_str) == Some("object");
        let input_schema = if is_object {
            schema
        } else {
            serde_json::json!({"type": "object", "properties": {"value": schema},
                "required": ["value"]})
        };
        Some(Structured {
            description: format!(
                "Give the final answer ({name}) by calling this tool with it as the input."
            ),
            input_schema,
            wrapped: !is_object,
        })
    }

    /// The answer's JSON text from the output tool's arguments.
    fn answer(&self, arguments: &str) -> String {
        if !self.wrapped {
            return arguments.to_string();
        }
        serde_json::from_str::<Value>(arguments)
            .ok()
            .and_then(|v| v.get("value").cloned())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arguments.to_string())
    }

    /// Moves a call of the output tool into the answer's text.
    pub fn unwrap_response(&self, resp: &mut ChatResponse) {
        let Some(at) = resp.tool_calls.iter().position(|c| c.name == OUTPUT_TOOL) else {
            return;
        };
        let call = resp.tool_calls.remove(at);
        resp.content = Some(self.answer(&call.arguments));
        if resp.tool_calls.is_empty() && resp.finish_reason == FinishReason::ToolCalls {
            resp.finish_reason = FinishReason::Stop;
        }
    }

    /// A stream mapper doing [`Self::unwrap_response`] on the fly.
    pub fn stream_mapper(self) -> StructuredStream {
        StructuredStream {
            out: self,
            output_call: None,
            index: Vec::new(),
            calls: 0,
            buffer: String::new(),
        }
    }
}

/// Rewrites a stream's output-tool call into text: its argument pieces become text
/// pieces (buffered and unwrapped at the end when the schema was wrapped), the other
/// calls keep their order with indices closed up.
#[derive(Debug)]
pub struct StructuredStream {
    out: Structured,
    output_call: Option<usize>,
    /// vendor call index → our call index (`None` for the output tool's).
    index: Vec<Option<usize>>,
    calls: usize,
    buffer: String,
}

impl StructuredStream {
    pub fn map(&mut self, ev: StreamEvent) -> Vec<StreamEvent> {
        match ev {
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.index.len() <= index {
                    self.index.resize(index + 1, None);
                }
                if name == OUTPUT_TOOL && self.output_call.is_none() {
                    self.output_call = Some(index);
                    return Vec::new();
                }
                let ours = self.calls;
                self.calls += 1;
                self.index[index] = Some(ours);
                vec![StreamEvent::ToolCallStart {
                    index: ours,
                    id,
                    name,
                }]
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                if self.output_call == Some(index) {
                    if self.out.wrapped {
                        self.buffer.push_str(&delta);
                        return Vec::new();
                    }
                    return vec![StreamEvent::Text(delta)];
                }
                match self.index.get(index).copied().flatten() {
                    Some(ours) => vec![StreamEvent::ToolCallArgs { index: ours, delta }],
                    None => Vec::new(),
                }
            }
            StreamEvent::Finish(r) => {
                let mut out = Vec::new();
                if self.output_call.is_some() && self.out.wrapped {
                    out.push(StreamEvent::Text(self.out.answer(&self.buffer)));
                }
                let r = if self.output_call.is_some()
                    && self.calls == 0
                    && r == FinishReason::ToolCalls
                {
                    FinishReason::Stop
                } else {
                    r
                };
                out.push(StreamEvent::Finish(r));
                out
            }
            other => vec![other],
        }
    }
}

/// The wire `stop_reason` of an answer that finished for `r`, stopped by `sequence` if
/// the vendor said so.
pub fn stop_reason(r: FinishReason, sequence: Option<&str>) -> &'static str {
    if r == FinishReason::Stop && sequence.is_some() {
        "stop_sequence"
    } else {
        stop_to_wire(r)
    }
}

pub fn stop_to_wire(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::ContentFilter => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
    }
}

fn stop_from_wire(s: Option<&str>) -> FinishReason {
    match s {
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Anthropic counts cached reads and writes apart from `input_tokens`; the neutral
/// `input_tokens` is the whole prompt. Extended thinking is billed inside
/// `output_tokens` and not counted apart, so it prices as output (no reasoning count).
fn usage_from_wire(u: &AnUsage) -> Usage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    Usage {
        input_tokens: u.input_tokens + read + write,
        output_tokens: u.output_tokens,
        cached_input_tokens: read,
        cache_write_tokens: write,
        reasoning_tokens: 0,
    }
}

pub fn usage_to_wire(u: &Usage) -> AnUsage {
    AnUsage {
        input_tokens: u
            .input_tokens
            .saturating_sub(u.cached_input_tokens + u.cache_write_tokens),
        output_tokens: u.output_tokens,
        cache_creation_input_tokens: Some(u.cache_write_tokens),
        cache_read_input_tokens: Some(u.cached_input_tokens),
    }
}

fn tool_input(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| serde_json::json!({}))
}

pub fn response_to_wire(r: &ChatResponse) -> AnResponse {
    let mut content = Vec::new();
    if let Some(t) = &r.content {
        content.push(AnBlock::Text { text: t.clone() });
    }
    for c in &r.tool_calls {
        content.push(AnBlock::ToolUse {
            id: c.id.clone(),
            name: c.name.clone(),
            input: tool_input(&c.arguments),
        });
    }
    AnResponse {
        id: r.id.clone(),
        kind: message_type(),
        role: assistant_role(),
        model: r.model.clone(),
        content,
        stop_reason: Some(stop_reason(r.finish_reason, r.stop_sequence.as_deref()).into()),
        stop_sequence: r.stop_sequence.clone(),
        usage: usage_to_wire(&r.usage),
    }
}

pub fn response_from_wire(r: AnResponse) -> ChatResponse {
    let turn = read_blocks(r.content);
    ChatResponse {
        id: r.id,
        model: r.model,
        content: turn.text,
        tool_calls: turn.calls,
        finish_reason: stop_from_wire(r.stop_reason.as_deref()),
        usage: usage_from_wire(&r.usage),
        stop_sequence: r
            .stop_sequence
            .filter(|_| r.stop_reason.as_deref() == Some("stop_sequence")),
    }
}

/// Renders a whole response as the typed event stream the API sends, chunking text and
/// tool input into pieces of at most `piece` characters. Returns `(event, data)` pairs.
pub fn response_to_events(r: &ChatResponse, piece: usize) -> Vec<(&'static str, Value)> {
    let piece = piece.max(1);
    let mut enc = StreamEncoder::new(r.usage.input_tokens);
    let mut events = vec![StreamEvent::Start {
        id: r.id.clone(),
        model: r.model.clone(),
    }];
    events.extend(
        r.content
            .iter()
            .flat_map(|t| chunks(t, piece).into_iter().map(StreamEvent::Text)),
    );
    for (index, c) in r.tool_calls.iter().enumerate() {
        events.push(StreamEvent::ToolCallStart {
            index,
            id: c.id.clone(),
            name: c.name.clone(),
        });
        let body = tool_input(&c.arguments).to_string();
        events.extend(
            chunks(&body, piece)
                .into_iter()
                .map(|delta| StreamEvent::ToolCallArgs { index, delta }),
        );
    }
    events.extend(r.stop_sequence.clone().map(StreamEvent::StopSequence));
    events.push(StreamEvent::Finish(r.finish_reason));
    events.push(StreamEvent::Usage(r.usage));
    let mut out: Vec<_> = events.iter().flat_map(|ev| enc.push(ev)).collect();
    out.extend(enc.finish());
    out
}

/// Which content block is open in a stream being encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum OpenBlock {
    Text(usize),
    /// (tool-call index, block index)
    Tool(usize, usize),
}

/// Turns neutral stream events, as they arrive, into the Messages API's typed events in
/// the order the API sends them: `message_start`, `ping`, then per content block
/// `content_block_start`, its `content_block_delta`s (`text_delta` or
/// `input_json_delta`) and `content_block_stop`, and at the end `message_delta` (stop
/// reason and usage) and `message_stop`.
///
/// Text and tool calls become blocks in arrival order; a block is closed when another
/// begins. Usage arrives last in a neutral stream, so `message_start` carries the
/// prompt's estimate and `message_delta` the vendor's real counts.
#[derive(Debug)]
pub struct StreamEncoder {
    input_estimate: u64,
    next_block: usize,
    open: Option<OpenBlock>,
    /// tool-call index → its block index.
    tool_blocks: Vec<Option<usize>>,
    finish: Option<FinishReason>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// `input_estimate`: the prompt's tokens as known before the vendor reports them.
    pub fn new(input_estimate: u64) -> Self {
        Self {
            input_estimate,
            next_block: 0,
            open: None,
            tool_blocks: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: None,
        }
    }

    fn close(&mut self, out: &mut Vec<(&'static str, Value)>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                OpenBlock::Text(i) | OpenBlock::Tool(_, i) => i,
            };
            out.push((
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn start_block(&mut self, block: Value, out: &mut Vec<(&'static str, Value)>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push((
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": index,
                "content_block": block}),
        ));
        index
    }

    /// The wire events for one neutral event.
    pub fn push(&mut self, ev: &StreamEvent) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        match ev {
            StreamEvent::Start { id, model } => {
                out.push((
                    "message_start",
                    serde_json::json!({"type": "message_start", "message": {
                        "id": id, "type": "message", "role": "assistant", "model": model,
                        "content": [], "stop_reason": null, "stop_sequence": null,
                        "usage": {"input_tokens": self.input_estimate, "output_tokens": 1,
                            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
                ));
                out.push(("ping", serde_json::json!({"type": "ping"})));
            }
            StreamEvent::Text(t) => {
                let index = match self.open {
                    Some(OpenBlock::Text(i)) => i,
                    _ => {
                        let i = self
                            .start_block(serde_json::json!({"type": "text", "text": ""}), &mut out);
                        self.open = Some(OpenBlock::Text(i));
                        i
                    }
                };
                out.push((
                    "content_block_delta",
                    serde_json::json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": t}}),
                ));
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let block = self.start_block(
                    serde_json::json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    &mut out,
                );
                if self.tool_blocks.len() <= *index {
                    self.tool_blocks.resize(index + 1, None);
                }
                self.tool_blocks[*index] = Some(block);
                self.open = Some(OpenBlock::Tool(*index, block));
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                // Vendors send one call's arguments before the next call starts; a late
                // piece still goes to its own block.
                if let Some(Some(block)) = self.tool_blocks.get(*index) {
                    out.push((
                        "content_block_delta",
                        serde_json::json!({"type": "content_block_delta", "index": block,
                            "delta": {"type": "input_json_delta", "partial_json": delta}}),
                    ));
                }
            }
            StreamEvent::StopSequence(s) => self.stop_sequence = Some(s.clone()),
            StreamEvent::Finish(r) => {
                self.close(&mut out);
                self.finish = Some(*r);
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
        out
    }

    /// The closing events, once the neutral stream has ended cleanly.
    pub fn finish(&mut self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        self.close(&mut out);
        let finish = self.finish.unwrap_or(FinishReason::Stop);
        let u = self.usage.unwrap_or_default();
        let wire = usage_to_wire(&u);
        out.push((
            "message_delta",
            serde_json::json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason(finish, self.stop_sequence.as_deref()),
                    "stop_sequence": self.stop_sequence},
                "usage": {"input_tokens": wire.input_tokens, "output_tokens": wire.output_tokens,
                    "cache_creation_input_tokens": wire.cache_creation_input_tokens,
                    "cache_read_input_tokens": wire.cache_read_input_tokens}}),
        ));
        out.push(("message_stop", serde_json::json!({"type": "message_stop"})));
        out
    }
}

/// The `error` event that ends a stream which failed after it started.
pub fn error_event(kind: &str, message: &str) -> Value {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Splits on character boundaries into pieces of at most `n` characters.
pub fn chunks(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

/// Turns received typed events into neutral stream events.
#[derive(Default)]
pub struct EventParser {
    /// Content block index → tool-call index, for tool_use blocks.
    tool_index: Vec<Option<usize>>,
    tools: usize,
    usage: Usage,
    finished: bool,
}

impl EventParser {
    /// Returns events, or an error event's message.
    pub fn parse(&mut self, data: &Value) -> Result<Vec<StreamEvent>, String> {
        let kind = data.get("type").and_then(Value::as_str).unwrap_or("");
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = &data["message"];
                if let Ok(u) = serde_json::from_value::<AnUsage>(m["usage"].clone()) {
                    self.usage = usage_from_wire(&u);
                }
                out.push(StreamEvent::Start {
                    id: m["id"].as_str().unwrap_or("").to_string(),
                    model: m["model"].as_str().unwrap_or("").to_string(),
                });
            }
            "content_block_start" => {
                let idx = data["index"].as_u64().unwrap_or(0) as usize;
                let block = &data["content_block"];
                if self.tool_index.len() <= idx {
                    self.tool_index.resize(idx + 1, None);
                }
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let ti = self.tools;
                        self.tools += 1;
                        self.tool_index[idx] = Some(ti);
                        out.push(StreamEvent::ToolCallStart {
                            index: ti,
                            id: block["id"].as_str().unwrap_or("").to_string(),
                            name: block["name"].as_str().unwrap_or("").to_string(),
                        });
                    }
                    Some("text") => {
                        if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text(t.to_string()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let idx = data["index"].as_u64().unwrap_or(0) as usize;
                let d = &data["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(StreamEvent::Text(
                        d["text"].as_str().unwrap_or("").to_string(),
                    )),
                    Some("input_json_delta") => {
                        if let Some(Some(ti)) = self.tool_index.get(idx) {
                            out.push(StreamEvent::ToolCallArgs {
                                index: *ti,
                                delta: d["partial_json"].as_str().unwrap_or("").to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                // Counts here are cumulative and final; input counts appear only in
                // newer versions of the API.
                if let Ok(u) = serde_json::from_value::<AnUsage>(data["usage"].clone()) {
                    self.usage.output_tokens = u.output_tokens;
                    if data
                        .pointer("/usage/input_tokens")
                        .is_some_and(|v| v.is_u64())
                    {
                        self.usage = Usage {
                            output_tokens: u.output_tokens,
                            ..usage_from_wire(&u)
                        };
                    }
                }
                let reason = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                if reason == Some("stop_sequence")
                    && let Some(seq) = data.pointer("/delta/stop_sequence").and_then(Value::as_str)
                {
                    out.push(StreamEvent::StopSequence(seq.to_string()));
                }
                out.push(StreamEvent::Finish(stop_from_wire(reason)));
            }
            "message_stop" => {
                self.finished = true;
                out.push(StreamEvent::Usage(self.usage));
            }
            "error" => {
                return Err(data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("vendor stream error")
                    .to_string());
            }
            _ => {} // ping, content_block_stop
        }
        Ok(out)
    }

    pub fn finished(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------- client

/// The `anthropic-version` header every call carries.
fn version_header() -> [(http::HeaderName, http::HeaderValue); 1] {
    [(
        http::HeaderName::from_static("anthropic-version"),
        http::HeaderValue::from_static(API_VERSION),
    )]
}

pub struct AnthropicProvider {
    name: String,
    /// `…/v1/messages` with `x-api-key`.
    endpoint: Endpoint,
    /// `…/v1/messages/count_tokens`, same key.
    counting: Endpoint,
    http: VendorClient,
}

impl AnthropicProvider {
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Secret,
        http: VendorClient,
    ) -> Self {
        let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
        let key = Some(("x-api-key", api_key.expose()));
        Self {
            name: name.into(),
            counting: Endpoint::new(&format!("{url}/count_tokens"), key),
            endpoint: Endpoint::new(&url, key),
            http,
        }
    }

    async fn send(&self, body: &AnRequest) -> Result<VendorResponse, AiError> {
        // Anthropic's 529 ("overloaded") classifies as a server fault, like 503.
        self.http
            .post_json(&self.endpoint, body, &version_header())
            .await
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, AiError> {
        let resp = self.send(&request_from_internal(req, false)).await?;
        let mut out = response_from_wire(client::json_body(resp).await?);
        if let Some(s) = Structured::of(req) {
            s.unwrap_response(&mut out);
        }
        Ok(out)
    }

    async fn count_tokens(&self, req: &ChatRequest) -> Result<Option<u64>, AiError> {
        // The counting endpoint takes the prompt only: no limits, sampling or streaming.
        let mut body = serde_json::to_value(request_from_internal(req, false))
            .map_err(|e| AiError::new(ErrorKind::BadRequest, e.to_string()))?;
        if let Some(obj) = body.as_object_mut() {
            for k in ["max_tokens", "temperature", "stream", "stop_sequences"] {
                obj.remove(k);
            }
        }
        let resp = self
            .http
            .post_json(&self.counting, &body, &version_header())
            .await?;
        let v: Value = client::json_body(resp).await?;
        v.get("input_tokens")
            .and_then(Value::as_u64)
            .map(Some)
            .ok_or_else(|| AiError::new(ErrorKind::Malformed, "no input_tokens in the count"))
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<EventStream, AiError> {
        let resp = self.send(&request_from_internal(req, true)).await?;
        let mut parser = EventParser::default();
        let mut structured = Structured::of(req).map(Structured::stream_mapper);
        Ok(sse::events(resp, move |ev| {
            let parsed = serde_json::from_str::<Value>(&ev.data)
                .map_err(|_| "malformed stream event".to_string())
                .and_then(|v| parser.parse(&v))
                .map(|evs| match &mut structured {
                    Some(m) => evs.into_iter().flat_map(|e| m.map(e)).collect(),
                    None => evs,
                });
            match parsed {
                Ok(evs) if parser.finished() => Step::Done(evs),
                Ok(evs) => Step::Emit(evs),
                Err(m) => Step::Fail(m),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChatRequest {
        let mut r = ChatRequest::new(
            "claude-sonnet-4",
            vec![
                Message::system("be kind"),
                Message::user("add 1 and 2"),
                Message {
                    role: Role::Assistant,
                    content: None,
                    tool_calls: vec![
                        ToolCall {
                            id: "t1".into(),
                            name: "calc".into(),
                            arguments: "{\"a\":1}".into(),
                        },
                        ToolCall {
                            id: "t2".into(),
                            name: "calc".into(),
                            arguments: "{\"a\":2}".into(),
                        },
                    ],
                    tool_call_id: None,
                },
                Message::tool_result("t1", "1"),
                Message::tool_result("t2", "2"),
            ],
        );
        r.tools.push(ToolDef {
            name: "calc".into(),
            description: None,
            parameters: serde_json::json!({"type":"object"}),
        });
        r.tool_choice = Some(ToolChoice::Required);
        r.max_tokens = Some(100);
        r
    }

    #[test]
    fn requests_round_trip_and_tool_results_merge() {
        let req = sample();
        let wire = request_from_internal(&req, false);
        assert!(matches!(wire.system, Some(AnSystem::Text(ref s)) if s == "be kind"));
        assert_eq!(
            wire.messages.len(),
            3,
            "user, assistant, merged tool results"
        );
        let AnContent::Blocks(b) = &wire.messages[2].content else {
            panic!()
        };
        assert_eq!(b.len(), 2);
        assert_eq!(wire.tool_choice, Some(serde_json::json!({"type": "any"})));
        let text = serde_json::to_string(&wire).unwrap();
        let InternalRequest {
            request: back,
            stream,
        } = request_to_internal(serde_json::from_str(&text).unwrap()).unwrap();
        assert!(!stream);
        assert_eq!(back.messages, req.messages);
        assert_eq!(back.tool_choice, req.tool_choice);
    }

    #[test]
    fn events_round_trip_with_cache_usage() {
        let resp = ChatResponse {
            id: "msg_1".into(),
            model: "claude".into(),
            content: Some("Hello there".into()),
            tool_calls: vec![ToolCall {
                id: "tu".into(),
                name: "calc".into(),
                arguments: "{\"x\":[1,2]}".into(),
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens: 100,
                output_tokens: 7,
                cached_input_tokens: 60,
                cache_write_tokens: 10,
                reasoning_tokens: 0,
            },
            stop_sequence: None,
        };
        let mut p = EventParser::default();
        let mut acc = StreamAccumulator::default();
        for (_, data) in response_to_events(&resp, 3) {
            for e in p.parse(&data).unwrap() {
                acc.push(&e);
            }
        }
        assert!(p.finished());
        assert_eq!(acc.finish().unwrap(), resp);
        assert_eq!(response_from_wire(response_to_wire(&resp)), resp);
    }

    #[test]
    fn structured_output_rides_a_forced_tool_and_comes_back_as_text() {
        let mut req = ChatRequest::new("claude", vec![Message::user("list")]);
        req.response_format = Some(serde_json::json!({"type": "json_schema",
            "json_schema": {"name": "nums", "schema": {"type": "array", "items": {"type": "integer"}}}}));
        let wire = request_from_internal(&req, true);
        let tools = wire.tools.unwrap();
        assert_eq!(tools[0].name, OUTPUT_TOOL);
        assert_eq!(
            tools[0].input_schema["properties"]["value"]["type"],
            "array"
        );
        assert_eq!(
            wire.tool_choice,
            Some(serde_json::json!({"type": "tool", "name": OUTPUT_TOOL}))
        );
        // A user tool called first keeps index 0; the output tool's input becomes text.
        let mut m = Structured::of(&req).unwrap().stream_mapper();
        let events = [
            StreamEvent::ToolCallStart {
                index: 0,
                id: "o".into(),
                name: OUTPUT_TOOL.into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                delta: "{\"value\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                delta: "[1,2]}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
        ];
        let out: Vec<StreamEvent> = events.into_iter().flat_map(|e| m.map(e)).collect();
        assert_eq!(
            out,
            vec![
                StreamEvent::Text("[1,2]".into()),
                StreamEvent::Finish(FinishReason::Stop)
            ]
        );
        let mut resp = ChatResponse {
            id: "x".into(),
            model: "claude".into(),
            content: None,
            tool_calls: vec![ToolCall {
                id: "o".into(),
                name: OUTPUT_TOOL.into(),
                arguments: "{\"value\":[3]}".into(),
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage::default(),
            stop_sequence: None,
        };
        Structured::of(&req).unwrap().unwrap_response(&mut resp);
        assert_eq!(resp.content.as_deref(), Some("[3]"));
        assert!(resp.tool_calls.is_empty());
        assert_eq!(resp.finish_reason, FinishReason::Stop);
    }
}
