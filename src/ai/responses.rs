//! The OpenAI Responses wire format, which the gateway serves (`/v1/responses`) over any
//! vendor: the request → the neutral chat request, the neutral answer → a response
//! object, and neutral stream events → the documented event sequence.
//!
//! Items map onto neutral messages: `message` items by role (`developer` is `system`),
//! `function_call` items onto an assistant turn's tool calls (consecutive ones, and the
//! assistant text just before them, share one turn), `function_call_output` onto tool
//! messages. `instructions` becomes the first system message and is not carried to a
//! follow-up request, as the API specifies. Only function tools exist here.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::RequestError;
use super::types::*;

/// A Responses request as received. Fields we do not interpret are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct RsRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default, deserialize_with = "super::num::optional")]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
}

/// The converted request: the new input as neutral messages (without instructions or
/// earlier turns, which the caller prepends), and the rest of the chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The request with `messages` holding only the system instructions (if any).
    pub request: ChatRequest,
    /// The new input items as messages, to follow any earlier conversation.
    pub input: Vec<Message>,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::new(field, message)
}

/// Text of a message's `content`: a string, or a list of `input_text` / `output_text`
/// parts (other part types, images and files, are refused).
fn content_text(v: &Value, field: &str) -> Result<String, RequestError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        out.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("refusal") => {
                        out.push_str(p.get("refusal").and_then(Value::as_str).unwrap_or(""));
                    }
                    other => {
                        return Err(err(
                            format!("{field}[{j}].type"),
                            format!(
                                "unsupported content part {:?}: only text parts are supported",
                                other.unwrap_or("")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(err(field, "must be a string or a list of text parts")),
    }
}

/// Input items → neutral messages.
pub fn input_messages(input: &Value) -> Result<Vec<Message>, RequestError> {
    let items = match input {
        Value::String(s) => return Ok(vec![Message::user(s.clone())]),
        Value::Array(items) => items,
        _ => return Err(err("input", "must be a string or a list of items")),
    };
    let mut out: Vec<Message> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str);
        let text_of = |k: &str| item.get(k).and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = match text_of("role") {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    other => {
                        return Err(err(
                            format!("{field}.role"),
                            format!("unknown role {:?}", other.unwrap_or("")),
                        ));
                    }
                };
                let content = item
                    .get("content")
                    .ok_or_else(|| err(format!("{field}.content"), "required"))?;
                out.push(Message::text(
                    role,
                    content_text(content, &format!("{field}.content"))?,
                ));
            }
            Some("function_call") => {
                let call = ToolCall {
                    id: text_of("call_id")
                        .ok_or_else(|| err(format!("{field}.call_id"), "required"))?
                        .to_string(),
                    name: text_of("name")
                        .ok_or_else(|| err(format!("{field}.name"), "required"))?
                        .to_string(),
                    arguments: text_of("arguments").unwrap_or("{}").to_string(),
                };
                // Joins the assistant turn just before it, if that turn has no results yet.
                match out.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => out.push(Message {
                        role: Role::Assistant,
                        content: None,
                        tool_calls: vec![call],
                        tool_call_id: None,
                    }),
                }
            }
            Some("function_call_output") => {
                let call_id = text_of("call_id")
                    .ok_or_else(|| err(format!("{field}.call_id"), "required"))?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v @ Value::Array(_)) => content_text(v, &format!("{field}.output"))?,
                    Some(v) => v.to_string(),
                    None => return Err(err(format!("{field}.output"), "required")),
                };
                out.push(Message::tool_result(call_id, output));
            }
            // Reasoning summaries from earlier turns carry nothing a vendor needs here.
            Some("reasoning") => {}
            Some(other) => {
                return Err(err(
                    format!("{field}.type"),
                    format!("unsupported item type {other:?}"),
                ));
            }
        }
    }
    Ok(out)
}

fn tool_defs(tools: &[Value]) -> Result<Vec<ToolDef>, RequestError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(err(
                    format!("tools[{i}].type"),
                    "only function tools are supported",
                ));
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("tools[{i}].name"), "required"))?;
            Ok(ToolDef {
                name: name.to_string(),
                description: t
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: t
                    .get("parameters")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            })
        })
        .collect()
}

fn tool_choice(v: &Value) -> Result<ToolChoice, RequestError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(err("tool_choice", format!("unknown value {other:?}"))),
        },
        _ => match (
            v.get("type").and_then(Value::as_str),
            v.get("name").and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => Ok(ToolChoice::Tool(name.to_string())),
            _ => Err(err(
                "tool_choice",
                "expected auto, none, required or {\"type\":\"function\",\"name\":…}",
            )),
        },
    }
}

/// `text.format` → the chat request's `response_format` (`None` for plain text).
fn response_format(text: Option<&Value>) -> Result<Option<Value>, RequestError> {
    let Some(format) = text.and_then(|t| t.get("format")) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") | None => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k) {
                    schema.insert(k.to_string(), v.clone());
                }
            }
            if !schema.contains_key("schema") {
                return Err(err("text.format.schema", "required for json_schema"));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(err("text.format.type", format!("unknown value {other:?}"))),
    }
}

/// A received request → the neutral request and its new input.
pub fn request_to_internal(req: &RsRequest) -> Result<Converted, RequestError> {
    let input = match &req.input {
        Some(v) => input_messages(v)?,
        None => Vec::new(),
    };
    if input.is_empty() && req.previous_response_id.is_none() {
        return Err(err("input", "required"));
    }
    let mut chat = ChatRequest::new(req.model.clone(), Vec::new());
    if let Some(i) = req.instructions.as_ref().filter(|i| !i.is_empty()) {
        chat.messages.push(Message::system(i.clone()));
    }
    chat.tools = tool_defs(req.tools.as_deref().unwrap_or_default())?;
    chat.tool_choice = req.tool_choice.as_ref().map(tool_choice).transpose()?;
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(err("temperature", "must be between 0 and 2"));
    }
    chat.temperature = req.temperature;
    chat.max_tokens = req.max_output_tokens;
    if chat.max_tokens == Some(0) {
        return Err(err("max_output_tokens", "must be at least 1"));
    }
    chat.response_format = response_format(req.text.as_ref())?;
    Ok(Converted {
        request: chat,
        input,
    })
}

/// The assistant turn an answer adds to the conversation.
pub fn answer_message(resp: &ChatResponse) -> Message {
    Message {
        role: Role::Assistant,
        content: resp.content.clone(),
        tool_calls: resp.tool_calls.clone(),
        tool_call_id: None,
    }
}

/// The id of the output item at `index` of response `response_id`: stable, so a stream
/// and the stored object name the same items.
pub fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let tail = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{tail}{index:02}")
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
    "content": if status == "completed" || !text.is_empty() {
        vec![text_part(text)]
    } else {
        Vec::new()
    }})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call.id,
        "name": call.name, "arguments": call.arguments})
}

/// The output items of an answer: its text as one message, then each tool call.
pub fn output_items(response_id: &str, resp: &ChatResponse) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(t) = &resp.content {
        out.push(message_item(
            &item_id("msg", response_id, out.len()),
            t,
            "completed",
        ));
    }
    for c in &resp.tool_calls {
        out.push(call_item(
            &item_id("fc", response_id, out.len()),
            c,
            "completed",
        ));
    }
    out
}

fn usage_object(u: &Usage) -> Value {
    json!({"input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total()})
}

/// What a response object echoes of its request, fixed when the request arrives.
#[derive(Debug, Clone)]
pub struct Echo {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub parallel_tool_calls: bool,
    pub text: Value,
    pub metadata: Map<String, Value>,
    pub store: bool,
    pub user: Option<String>,
}

impl Echo {
    pub fn new(id: String, created_at: i64, req: &RsRequest, store: bool) -> Self {
        Echo {
            id,
            created_at,
            model: req.model.clone(),
            instructions: req.instructions.clone(),
            previous_response_id: req.previous_response_id.clone(),
            tools: req.tools.clone().unwrap_or_default(),
            tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            temperature: req.temperature,
            top_p: req.top_p,
            max_output_tokens: req.max_output_tokens,
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            text: req
                .text
                .clone()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
            metadata: req.metadata.clone().unwrap_or_default(),
            store,
            user: req.user.clone(),
        }
    }

    /// The response object with this status, output, usage and error.
    pub fn object(
        &self,
        status: &str,
        model: &str,
        output: Vec<Value>,
        usage: Option<&Usage>,
        finish: Option<FinishReason>,
        error: Option<Value>,
    ) -> Value {
        let incomplete = match finish {
            Some(FinishReason::Length) => json!({"reason": "max_output_tokens"}),
            Some(FinishReason::ContentFilter) => json!({"reason": "content_filter"}),
            _ => Value::Null,
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": model,
            "output": output,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": null, "summary": null},
            "store": self.store,
            "temperature": self.temperature.unwrap_or(1.0),
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": self.top_p.unwrap_or(1.0),
            "truncation": "disabled",
            "usage": usage.map(usage_object),
            "user": self.user,
            "metadata": self.metadata,
        })
    }

    /// The finished response object of an answer.
    pub fn completed(&self, resp: &ChatResponse) -> Value {
        let status = match resp.finish_reason {
            FinishReason::Length | FinishReason::ContentFilter => "incomplete",
            _ => "completed",
        };
        self.object(
            status,
            &self.model,
            output_items(&self.id, resp),
            Some(&resp.usage),
            Some(resp.finish_reason),
            None,
        )
    }
}

/// One streaming event: its name and its data.
pub type WireEvent = (String, Value);

/// Which output item is open in a stream being encoded.
#[derive(Clone, Debug)]
enum Open {
    /// (output index, text so far)
    Message(usize, String),
    /// (tool-call index, output index)
    Call(usize, usize),
}

/// Turns neutral stream events, as they arrive, into the Responses streaming events:
/// `response.created`, `response.in_progress`, then per output item
/// `response.output_item.added`, for a message `response.content_part.added`,
/// `response.output_text.delta`…, `response.output_text.done`,
/// `response.content_part.done`, for a function call
/// `response.function_call_arguments.delta`…, `response.function_call_arguments.done`,
/// then `response.output_item.done`; at the end `response.completed` (or
/// `response.incomplete`). Every event carries its `sequence_number`.
#[derive(Debug)]
pub struct StreamEncoder {
    echo: Echo,
    seq: u64,
    open: Option<Open>,
    next_output: usize,
    /// tool-call index → (output index, the call so far)
    calls: Vec<Option<(usize, ToolCall)>>,
    acc: StreamAccumulator,
}

impl StreamEncoder {
    pub fn new(echo: Echo) -> Self {
        Self {
            echo,
            seq: 0,
            open: None,
            next_output: 0,
            calls: Vec::new(),
            acc: StreamAccumulator::default(),
        }
    }

    fn emit(&mut self, out: &mut Vec<WireEvent>, kind: &str, mut data: Value) {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("type".into(), Value::from(kind));
            obj.insert("sequence_number".into(), Value::from(self.seq));
        }
        self.seq += 1;
        out.push((kind.to_string(), data));
    }

    fn close(&mut self, out: &mut Vec<WireEvent>) {
        match self.open.take() {
            Some(Open::Message(index, text)) => {
                let id = item_id("msg", &self.echo.id, index);
                let base = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = base.clone();
                done["text"] = Value::from(text.clone());
                done["logprobs"] = json!([]);
                self.emit(out, "response.output_text.done", done);
                let mut part = base;
                part["part"] = text_part(&text);
                self.emit(out, "response.content_part.done", part);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index,
                        "item": message_item(&id, &text, "completed")}),
                );
            }
            Some(Open::Call(call, index)) => {
                let id = item_id("fc", &self.echo.id, index);
                let Some(Some((_, c))) = self.calls.get(call).cloned() else {
                    return;
                };
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": c.arguments}),
                );
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": call_item(&id, &c, "completed")}),
                );
            }
            None => {}
        }
    }

    /// The wire events for one neutral event.
    pub fn push(&mut self, ev: &StreamEvent) -> Vec<WireEvent> {
        self.acc.push(ev);
        let mut out = Vec::new();
        match ev {
            StreamEvent::Start { .. } => {
                let skeleton = self.echo.object(
                    "in_progress",
                    &self.echo.model,
                    Vec::new(),
                    None,
                    None,
                    None,
                );
                self.emit(
                    &mut out,
                    "response.created",
                    json!({"response": skeleton.clone()}),
                );
                self.emit(
                    &mut out,
                    "response.in_progress",
                    json!({"response": skeleton}),
                );
            }
            StreamEvent::Text(t) => {
                if !matches!(self.open, Some(Open::Message(..))) {
                    self.close(&mut out);
                    let index = self.next_output;
                    self.next_output += 1;
                    let id = item_id("msg", &self.echo.id, index);
                    self.emit(
                        &mut out,
                        "response.output_item.added",
                        json!({"output_index": index,
                            "item": message_item(&id, "", "in_progress")}),
                    );
                    self.emit(
                        &mut out,
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "part": text_part("")}),
                    );
                    self.open = Some(Open::Message(index, String::new()));
                }
                if let Some(Open::Message(index, text)) = &mut self.open {
                    text.push_str(t);
                    let index = *index;
                    let id = item_id("msg", &self.echo.id, index);
                    self.emit(
                        &mut out,
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "delta": t, "logprobs": []}),
                    );
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.close(&mut out);
                let output = self.next_output;
                self.next_output += 1;
                let call = ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                };
                if self.calls.len() <= *index {
                    self.calls.resize(index + 1, None);
                }
                self.calls[*index] = Some((output, call.clone()));
                let item = call_item(&item_id("fc", &self.echo.id, output), &call, "in_progress");
                self.emit(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": output, "item": item}),
                );
                self.open = Some(Open::Call(*index, output));
            }
            StreamEvent::ToolCallArgs { index, delta } => {
                if let Some(Some((output, call))) = self.calls.get_mut(*index) {
                    call.arguments.push_str(delta);
                    let output = *output;
                    self.emit(
                        &mut out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id("fc", &self.echo.id, output),
                            "output_index": output, "delta": delta}),
                    );
                }
            }
            StreamEvent::Finish(_) => self.close(&mut out),
            StreamEvent::StopSequence(_) | StreamEvent::Usage(_) => {}
        }
        out
    }

    /// The closing events of a stream that ended cleanly, and the final response object
    /// (also what is stored).
    pub fn finish(&mut self) -> (Vec<WireEvent>, Option<(ChatResponse, Value)>) {
        let mut out = Vec::new();
        self.close(&mut out);
        let Some(resp) = std::mem::take(&mut self.acc).finish() else {
            return (out, None);
        };
        let object = self.echo.completed(&resp);
        let kind = if object["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.emit(&mut out, kind, json!({"response": object.clone()}));
        (out, Some((resp, object)))
    }

    /// The closing event of a stream that failed after it started.
    pub fn fail(&mut self, message: &str) -> Vec<WireEvent> {
        let mut out = Vec::new();
        let object = self.echo.object(
            "failed",
            &self.echo.model,
            Vec::new(),
            None,
            None,
            Some(json!({"code": "server_error", "message": message})),
        );
        self.emit(&mut out, "response.failed", json!({"response": object}));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> RsRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn items_become_messages_and_calls_join_their_turn() {
        let r = req(json!({
            "model": "m", "instructions": "be brief",
            "input": [
                {"role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "add"}]},
                {"type": "function_call", "call_id": "c1", "name": "calc", "arguments": "{\"a\":1}"},
                {"type": "function_call", "call_id": "c2", "name": "calc", "arguments": "{\"a\":2}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call_output", "call_id": "c2", "output": "2"}
            ],
            "tools": [{"type": "function", "name": "calc", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "calc"},
            "max_output_tokens": 50,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}
        }));
        let c = request_to_internal(&r).unwrap();
        assert_eq!(c.request.messages, vec![Message::system("be brief")]);
        assert_eq!(c.input.len(), 5);
        assert_eq!(c.input[0].role, Role::System);
        assert_eq!(c.input[2].tool_calls.len(), 2, "calls share one turn");
        assert_eq!(c.input[4], Message::tool_result("c2", "2"));
        assert_eq!(c.request.tool_choice, Some(ToolChoice::Tool("calc".into())));
        assert_eq!(c.request.max_tokens, Some(50));
        assert_eq!(
            c.request.response_format.unwrap()["json_schema"]["name"],
            "x"
        );
    }

    #[test]
    fn unsupported_things_are_named() {
        let bad = |v: Value| request_to_internal(&req(v)).unwrap_err().field;
        assert_eq!(
            bad(
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]})
            ),
            "input[0].content[0].type"
        );
        assert_eq!(
            bad(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})),
            "tools[0].type"
        );
        assert_eq!(bad(json!({"model": "m"})), "input");
    }

    #[test]
    fn stream_events_come_in_the_documented_order_and_match_the_object() {
        let r = req(json!({"model": "m", "input": "x"}));
        let echo = Echo::new("resp_1".into(), 0, &r, true);
        let resp = ChatResponse {
            id: "v".into(),
            model: "m".into(),
            content: Some("Hello".into()),
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "calc".into(),
                arguments: "{\"a\":1}".into(),
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            },
            stop_sequence: None,
        };
        let mut enc = StreamEncoder::new(echo.clone());
        let mut events = Vec::new();
        for ev in super::super::sandbox::response_to_events(&resp) {
            events.extend(enc.push(&ev));
        }
        let (tail, done) = enc.finish();
        events.extend(tail);
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        let mut expected = vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ];
        expected.extend(std::iter::repeat_n("response.output_text.delta", 1));
        expected.extend([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]);
        assert_eq!(kinds, expected);
        for (i, (_, data)) in events.iter().enumerate() {
            assert_eq!(data["sequence_number"], i as u64);
        }
        let (_, object) = done.unwrap();
        assert_eq!(object, echo.completed(&resp));
        assert_eq!(events.last().unwrap().1["response"], object);
        assert_eq!(object["output"][1]["arguments"], "{\"a\":1}");
    }
}
