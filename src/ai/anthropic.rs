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

use super::error::{AiError, RequestError};
use super::provider::{self, EventStream, Provider};
use super::sse::{self, Step};
use super::types::*;
use crate::config::Secret;

pub const API_VERSION: &str = "2023-06-01";
/// Used when the caller sets no limit: the API requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

// ---------------------------------------------------------------- wire types

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<AnSystem>,
    pub messages: Vec<AnMessage>,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<AnTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnSystem {
    Text(String),
    Blocks(Vec<AnBlock>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnMessage {
    pub role: String,
    pub content: AnContent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnContent {
    Text(String),
    Blocks(Vec<AnBlock>),
}

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
    /// Anything else (images, thinking, …) is carried but ignored.
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
            AnBlock::Other => {}
        }
    }
    turn
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
            AnContent::Blocks(b) => b,
        };
        let turn = read_blocks(blocks);
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
            response_format: None,
            cache: None,
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
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => serde_json::json!({"type": "auto"}),
        ToolChoice::None => serde_json::json!({"type": "none"}),
        ToolChoice::Required => serde_json::json!({"type": "any"}),
        ToolChoice::Tool(n) => serde_json::json!({"type": "tool", "name": n}),
    });
    AnRequest {
        model: req.model.clone(),
        system: (!system.is_empty()).then(|| AnSystem::Text(system.join("\n\n"))),
        messages,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        tools,
        tool_choice,
        temperature: req.temperature,
        stream: stream.then_some(true),
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
/// `input_tokens` is the whole prompt.
fn usage_from_wire(u: &AnUsage) -> Usage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    Usage {
        input_tokens: u.input_tokens + read + write,
        output_tokens: u.output_tokens,
        cached_input_tokens: read,
        cache_write_tokens: write,
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
        stop_reason: Some(stop_to_wire(r.finish_reason).into()),
        stop_sequence: None,
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
    }
}

/// Renders a whole response as the typed event stream the API sends, chunking text and
/// tool input into pieces of at most `piece` characters. Returns `(event, data)` pairs.
pub fn response_to_events(r: &ChatResponse, piece: usize) -> Vec<(&'static str, Value)> {
    let piece = piece.max(1);
    let mut out = Vec::new();
    let mut start_usage = usage_to_wire(&r.usage);
    start_usage.output_tokens = 1;
    out.push((
        "message_start",
        serde_json::json!({"type": "message_start", "message": {
            "id": r.id, "type": "message", "role": "assistant", "model": r.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    ));
    // Each content block: its start, its body in pieces of deltas, its stop.
    type Delta = fn(String) -> Value;
    let text_delta: Delta = |part| serde_json::json!({"type": "text_delta", "text": part});
    let json_delta: Delta =
        |part| serde_json::json!({"type": "input_json_delta", "partial_json": part});
    let blocks = r
        .content
        .iter()
        .map(|t| {
            (
                serde_json::json!({"type": "text", "text": ""}),
                t.clone(),
                text_delta,
            )
        })
        .chain(r.tool_calls.iter().map(|c| {
            (
                serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name, "input": {}}),
                tool_input(&c.arguments).to_string(),
                json_delta,
            )
        }));
    for (index, (block, body, delta)) in blocks.enumerate() {
        out.push((
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": index,
                "content_block": block}),
        ));
        for part in chunks(&body, piece) {
            out.push((
                "content_block_delta",
                serde_json::json!({"type": "content_block_delta", "index": index,
                    "delta": delta(part)}),
            ));
        }
        out.push((
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push((
        "message_delta",
        serde_json::json!({"type": "message_delta",
            "delta": {"stop_reason": stop_to_wire(r.finish_reason), "stop_sequence": null},
            "usage": {"output_tokens": r.usage.output_tokens}}),
    ));
    out.push(("message_stop", serde_json::json!({"type": "message_stop"})));
    out
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
                if let Some(n) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output_tokens = n;
                }
                let reason = data.pointer("/delta/stop_reason").and_then(Value::as_str);
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

pub struct AnthropicProvider {
    name: String,
    /// `…/v1/messages` with `x-api-key`.
    endpoint: provider::Endpoint,
    http: reqwest::Client,
}

impl AnthropicProvider {
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        api_key: Secret,
        http: reqwest::Client,
    ) -> Self {
        let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
        Self {
            name: name.into(),
            endpoint: provider::Endpoint::new(url, Some(("x-api-key", api_key.expose()))),
            http,
        }
    }

    async fn send(&self, body: &AnRequest) -> Result<reqwest::Response, AiError> {
        let req = self
            .endpoint
            .post(&self.http)
            .header("anthropic-version", API_VERSION)
            .json(body);
        // Anthropic's 529 ("overloaded") classifies as a server fault, like 503.
        provider::send(req).await
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, AiError> {
        let resp = self.send(&request_from_internal(req, false)).await?;
        Ok(response_from_wire(provider::json_body(resp).await?))
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<EventStream, AiError> {
        let resp = self.send(&request_from_internal(req, true)).await?;
        let mut parser = EventParser::default();
        Ok(sse::events(resp, move |ev| {
            let parsed = serde_json::from_str::<Value>(&ev.data)
                .map_err(|_| "malformed stream event".to_string())
                .and_then(|v| parser.parse(&v));
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
            },
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
}
