//! The sandbox vendor: deterministic answers, tool calls with schema-valid arguments,
//! scripted scenarios and injected faults. It runs in-process as the `sandbox` provider
//! (the development default) and behind both wire formats in `sandbox_server`.
//!
//! Default behaviour, decided from the request alone (same request → same answer):
//! - tools offered, `tool_choice` not `none`, and no tool result since the last user
//!   message → call one tool (the forced one, else the first whose name the user
//!   mentions, else the first) with arguments generated from its JSON schema; a forced
//!   tool (`tool_choice` naming it, or `required`: one not called yet) is called even
//!   after tool results;
//! - otherwise answer in text, quoting the tool results when there are some; with a
//!   `json_schema` response format, a value valid for the schema instead.
//!
//! Usage is about four characters a token, counted on what was sent and returned. A
//! model named `sandbox-reasoning…` also "reasons": it reports as many reasoning tokens
//! as it answered, counted in its output tokens as vendors count them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::AiError;
use super::provider::{EventStream, Provider};
use super::types::*;

/// The deterministic answer to a request.
pub fn respond(req: &ChatRequest) -> ChatResponse {
    let mut resp = answer(req);
    think(&req.model, &mut resp.usage);
    resp
}

/// Reasoning tokens of a reasoning model: as many as its visible output, added to it.
fn think(model: &str, usage: &mut Usage) {
    if model.starts_with("sandbox-reasoning") {
        usage.reasoning_tokens = usage.output_tokens.max(1);
        usage.output_tokens += usage.reasoning_tokens;
    }
}

fn answer(req: &ChatRequest) -> ChatResponse {
    let digest = hex::encode(Sha256::digest(serde_json::to_vec(req).unwrap_or_default()));
    let id = format!("sb-{}", &digest[..24]);
    let last_user = req.messages.iter().rposition(|m| m.role == Role::User);
    let user_text = last_user
        .and_then(|i| req.messages[i].content.clone())
        .unwrap_or_default();
    let results: Vec<&Message> = req.messages[last_user.map_or(0, |i| i + 1)..]
        .iter()
        .filter(|m| m.role == Role::Tool)
        .collect();
    let input_tokens = req.estimated_input_tokens();

    // A forced tool (or `required`) is called whatever came before, as a vendor does.
    let forced = match &req.tool_choice {
        Some(ToolChoice::Tool(n)) => req.tools.iter().any(|t| &t.name == n),
        Some(ToolChoice::Required) => true,
        _ => false,
    };
    let wants_tool = !req.tools.is_empty()
        && req.tool_choice != Some(ToolChoice::None)
        && (results.is_empty() || forced);
    if wants_tool {
        // Tools already called since the user spoke come last.
        let called: Vec<&str> = req.messages[last_user.map_or(0, |i| i + 1)..]
            .iter()
            .flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str()))
            .collect();
        let tool = pick_tool(req, &user_text, &called);
        let args = example_for(&tool.parameters, &tool.name, &user_text).to_string();
        let output_tokens = tokens(args.len() + tool.name.len());
        return ChatResponse {
            id,
            model: req.model.clone(),
            content: None,
            tool_calls: vec![ToolCall {
                id: format!("call_{}", &digest[24..40]),
                name: tool.name.clone(),
                arguments: args,
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens,
                output_tokens,
                ..Usage::default()
            },
            stop_sequence: None,
        };
    }

    let mut text = if results.is_empty() {
        format!("Sandbox reply to: {}", clip(&user_text, 200))
    } else {
        let parts: Vec<String> = results
            .iter()
            .map(|m| clip(m.content.as_deref().unwrap_or(""), 200))
            .collect();
        format!("Based on the tool results: {}", parts.join("; "))
    };
    // Structured output: a value valid for the schema when there is one, else an object.
    match json_schema_of(req.response_format.as_ref()) {
        Some(schema) => text = example_for(schema, "answer", &user_text).to_string(),
        None if is_json_format(req.response_format.as_ref()) => {
            text = json!({ "answer": text }).to_string();
        }
        None => {}
    }
    let mut finish = FinishReason::Stop;
    let mut stop_sequence = None;
    // The earliest stop sequence in the text ends it there, as a vendor would.
    if let Some((at, seq)) = req
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at)
    {
        text.truncate(at);
        stop_sequence = Some(seq.clone());
    }
    if let Some(max) = req.max_tokens {
        let max_chars = (max as usize).saturating_mul(4);
        if text.chars().count() > max_chars {
            text = text.chars().take(max_chars).collect();
            finish = FinishReason::Length;
            stop_sequence = None;
        }
    }
    ChatResponse {
        id,
        model: req.model.clone(),
        content: Some(text.clone()),
        tool_calls: Vec::new(),
        finish_reason: finish,
        usage: Usage {
            input_tokens,
            output_tokens: tokens(text.len()),
            ..Usage::default()
        },
        stop_sequence,
    }
}

/// Dimensions of the sandbox's vectors when the request names none: those of the
/// OpenAI model of the same name, else 1536.
pub fn default_dimensions(model: &str) -> u32 {
    if model.contains("3-large") {
        3072
    } else {
        1536
    }
}

/// The deterministic embedding of each input: a unit vector of `dimensions` numbers drawn
/// from a generator seeded by the model and the input, so equal inputs embed equally.
pub fn embed(req: &EmbeddingRequest) -> EmbeddingResponse {
    let dims = req
        .dimensions
        .unwrap_or_else(|| default_dimensions(&req.model))
        .max(1) as usize;
    let seeds: Vec<Vec<u8>> = match &req.input {
        EmbeddingInput::Texts(t) => t.iter().map(|s| s.as_bytes().to_vec()).collect(),
        EmbeddingInput::Tokens(t) => t
            .iter()
            .map(|ids| ids.iter().flat_map(|i| i.to_le_bytes()).collect())
            .collect(),
    };
    let input_tokens = match &req.input {
        EmbeddingInput::Texts(t) => t.iter().map(|s| tokens(s.len())).sum(),
        EmbeddingInput::Tokens(t) => t.iter().map(|ids| ids.len() as u64).sum(),
    };
    let data = seeds
        .iter()
        .map(|bytes| {
            let mut h = Sha256::new();
            h.update(req.model.as_bytes());
            h.update([0]);
            h.update(bytes);
            let digest = h.finalize();
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&digest);
            let mut rng = StdRng::from_seed(seed);
            let mut v: Vec<f32> = (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect();
    EmbeddingResponse {
        model: req.model.clone(),
        data,
        usage: Usage {
            input_tokens,
            ..Usage::default()
        },
    }
}

/// The schema of a `json_schema` response format (OpenAI's `{"json_schema": {"schema"}}`).
fn json_schema_of(f: Option<&Value>) -> Option<&Value> {
    let f = f?;
    if f.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    f.pointer("/json_schema/schema").or_else(|| f.get("schema"))
}

fn is_json_format(f: Option<&Value>) -> bool {
    matches!(
        f.and_then(|v| v.get("type")).and_then(Value::as_str),
        Some("json_object") | Some("json_schema")
    )
}

fn tokens(chars: usize) -> u64 {
    estimate_tokens(chars)
}

fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

/// The forced tool; else the first not yet `called` that the user mentions, else the
/// first not yet called, else the first.
fn pick_tool<'a>(req: &'a ChatRequest, user_text: &str, called: &[&str]) -> &'a ToolDef {
    if let Some(ToolChoice::Tool(name)) = &req.tool_choice
        && let Some(t) = req.tools.iter().find(|t| &t.name == name)
    {
        return t;
    }
    let lower = user_text.to_lowercase();
    let fresh = || {
        req.tools
            .iter()
            .filter(|t| !called.contains(&t.name.as_str()))
    };
    fresh()
        .find(|t| lower.contains(&t.name.to_lowercase()))
        .or_else(|| fresh().next())
        .unwrap_or(&req.tools[0])
}

/// A value valid for `schema` (the subset of JSON Schema tools use), shaped by the
/// property name and the user's words where that helps a real tool do something useful.
pub fn example_for(schema: &Value, name: &str, context: &str) -> Value {
    if let Some(v) = schema.get("const") {
        return v.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return first.clone();
    }
    if let Some(v) = schema.get("default") {
        return v.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return example_for(first, name, context);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut obj = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    obj.insert(k.clone(), example_for(s, k, context));
                }
            }
            Value::Object(obj)
        }
        "array" => {
            let item = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            let n = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            Value::Array((0..n).map(|_| example_for(&item, name, context)).collect())
        }
        "integer" => {
            let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(1);
            Value::from(
                min.max(
                    schema
                        .get("exclusiveMinimum")
                        .and_then(Value::as_i64)
                        .map_or(min, |m| m + 1),
                ),
            )
        }
        "number" => Value::from(schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.0)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::from(example_string(schema, name, context)),
    }
}

fn example_string(schema: &Value, name: &str, context: &str) -> String {
    let lname = name.to_lowercase();
    let s = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => "2025-01-01T00:00:00Z".to_string(),
        Some("date") => "2025-01-01".to_string(),
        Some("email") => "user@example.com".to_string(),
        Some("uri") | Some("url") => "https://example.com/".to_string(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".to_string(),
        _ if lname.contains("expression") || lname == "expr" => arithmetic_in(context),
        _ if lname.contains("url") => "https://example.com/".to_string(),
        _ if lname.contains("method") => "GET".to_string(),
        _ if lname.contains("timezone") || lname == "tz" => "UTC".to_string(),
        _ if lname == "key" || lname.ends_with("_key") => "note".to_string(),
        _ if !context.trim().is_empty() => clip(context.trim(), 60),
        _ => "sample".to_string(),
    };
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = schema
        .get("maxLength")
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    let mut s = s;
    while s.chars().count() < min {
        s.push('x');
    }
    if let Some(max) = max {
        s = s.chars().take(max).collect();
    }
    s
}

/// The longest arithmetic-looking run in the text (digits and operators), or `2 + 2`.
fn arithmetic_in(text: &str) -> String {
    let allowed = |c: char| c.is_ascii_digit() || " +-*/().^%".contains(c);
    let best = text
        .split(|c: char| !allowed(c))
        .map(str::trim)
        .filter(|s| {
            s.chars().any(|c| c.is_ascii_digit()) && s.chars().any(|c| "+-*/^%".contains(c))
        })
        .max_by_key(|s| s.len());
    best.map(str::to_string).unwrap_or_else(|| "2 + 2".into())
}

/// The events of a streamed `resp`, text and arguments in small pieces.
pub fn response_to_events(resp: &ChatResponse) -> Vec<StreamEvent> {
    let mut out = vec![StreamEvent::Start {
        id: resp.id.clone(),
        model: resp.model.clone(),
    }];
    if let Some(t) = &resp.content {
        for piece in super::anthropic::chunks(t, 12) {
            out.push(StreamEvent::Text(piece));
        }
    }
    for (i, c) in resp.tool_calls.iter().enumerate() {
        out.push(StreamEvent::ToolCallStart {
            index: i,
            id: c.id.clone(),
            name: c.name.clone(),
        });
        for piece in super::anthropic::chunks(&c.arguments, 12) {
            out.push(StreamEvent::ToolCallArgs {
                index: i,
                delta: piece,
            });
        }
    }
    if let Some(s) = &resp.stop_sequence {
        out.push(StreamEvent::StopSequence(s.clone()));
    }
    out.push(StreamEvent::Finish(resp.finish_reason));
    out.push(StreamEvent::Usage(resp.usage));
    out
}

// ---------------------------------------------------------------- scripts and faults

/// A fault to inject into one response.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Delay the answer by `ms` plus a uniform `0..=jitter_ms`.
    Latency {
        ms: u64,
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Answer with this HTTP status (429 carries `Retry-After` when given).
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
        /// Error message in the body (e.g. one naming `context_length_exceeded`).
        #[serde(default)]
        message: Option<String>,
    },
    /// Never answer; the client's timeout must fire.
    Hang,
    /// Stream `after_chunks` chunks, then cut the connection.
    BreakStream { after_chunks: usize },
    /// Stream `after_chunks` chunks, fall silent for `ms`, then send the rest.
    StallStream { after_chunks: usize, ms: u64 },
    /// Answer with a body that is not valid JSON.
    Malformed,
}

/// When a fault applies: for matching models, the first `times` requests, or each with
/// probability `rate` (seeded, so a run is reproducible).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct FaultRule {
    #[serde(default)]
    pub model: Option<String>,
    pub fault: Fault,
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default)]
    pub rate: Option<f64>,
}

/// One scripted answer: text and/or tool calls, optionally with a fault.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct ScriptStep {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ScriptedCall>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub fault: Option<Fault>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct ScriptedCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

/// A file or admin-endpoint body: fault rules and scripts per model.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub struct SandboxSetup {
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub faults: Vec<FaultRule>,
    #[serde(default)]
    pub scripts: HashMap<String, Vec<ScriptStep>>,
}

/// Distinct model names the engine counts requests of; see [`SandboxEngine::stats`].
pub const MAX_COUNTED_MODELS: usize = 1024;
/// The counter shared by model names past [`MAX_COUNTED_MODELS`].
pub const OTHER_MODELS: &str = "(other)";

struct EngineState {
    rng: StdRng,
    rules: Vec<FaultRule>,
    scripts: HashMap<String, VecDeque<ScriptStep>>,
    /// Answers by turn, per model: see [`SandboxEngine::answer_by_turn`].
    turns: HashMap<String, Vec<ScriptStep>>,
    requests: HashMap<String, u64>,
}

/// What to do for one request: the response (or a scripted one) and the faults to apply.
pub struct Plan {
    pub response: ChatResponse,
    pub faults: Vec<Fault>,
}

/// Shared scripts, fault rules and request counts.
pub struct SandboxEngine {
    state: Mutex<EngineState>,
}

impl Default for SandboxEngine {
    fn default() -> Self {
        Self::new(SandboxSetup::default())
    }
}

impl SandboxEngine {
    pub fn new(setup: SandboxSetup) -> Self {
        let e = Self {
            state: Mutex::new(EngineState {
                rng: StdRng::seed_from_u64(0),
                rules: Vec::new(),
                scripts: HashMap::new(),
                turns: HashMap::new(),
                requests: HashMap::new(),
            }),
        };
        e.apply(setup);
        e
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EngineState> {
        // A panic while holding the lock cannot leave the state inconsistent in a way
        // that matters for a test vendor; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the fault rules (and seed) and appends the scripts.
    pub fn apply(&self, setup: SandboxSetup) {
        let mut s = self.lock();
        if let Some(seed) = setup.seed {
            s.rng = StdRng::seed_from_u64(seed);
        }
        s.rules = setup.faults;
        for (model, steps) in setup.scripts {
            s.scripts.entry(model).or_default().extend(steps);
        }
    }

    /// Forgets rules, scripts and counts.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.rules.clear();
        s.scripts.clear();
        s.turns.clear();
        s.requests.clear();
        s.rng = StdRng::seed_from_u64(0);
    }

    /// Answers requests for `model` by their turn instead of in order: a request whose
    /// conversation holds `k` assistant messages after its last user message gets
    /// `steps[k]` (past the end, the default answer). Unlike a script, the answer depends
    /// on the request alone, so conversations running side by side each get the whole
    /// sequence, and a request sent again gets the same answer. Scripts, when a model has
    /// both, come first. Replaces the model's earlier turns.
    pub fn answer_by_turn(&self, model: &str, steps: Vec<ScriptStep>) {
        self.lock().turns.insert(model.to_string(), steps);
    }

    /// Requests received per model.
    pub fn stats(&self) -> HashMap<String, u64> {
        self.lock().requests.clone()
    }

    /// Decides the answer and faults for a request (and counts it).
    pub fn plan(&self, req: &ChatRequest, extra_faults: Vec<Fault>) -> Plan {
        let mut s = self.lock();
        let mut faults = extra_faults;
        let mut response = None;
        let step = match s.scripts.get_mut(&req.model).and_then(VecDeque::pop_front) {
            Some(step) => Some(step),
            None => s
                .turns
                .get(&req.model)
                .and_then(|steps| steps.get(turn_of(req)))
                .cloned(),
        };
        if let Some(step) = step {
            faults.extend(step.fault.clone());
            response = Some(scripted(req, step));
        }
        s.count_and_match(&req.model, &mut faults);
        drop(s);
        Plan {
            response: response.unwrap_or_else(|| respond(req)),
            faults,
        }
    }

    /// The faults for a request that needs no chat answer (embeddings, token counts),
    /// counted like a chat request; scripts do not apply.
    pub fn plan_without_answer(&self, model: &str, extra_faults: Vec<Fault>) -> Vec<Fault> {
        let mut faults = extra_faults;
        self.lock().count_and_match(model, &mut faults);
        faults
    }
}

impl EngineState {
    /// Counts a request for `model` and adds the faults its rules apply now.
    fn count_and_match(&mut self, model: &str, faults: &mut Vec<Fault>) {
        // Callers choose model names: past MAX_COUNTED_MODELS distinct ones, the rest share
        // one counter, so the map cannot grow without bound.
        let counted =
            if self.requests.len() < MAX_COUNTED_MODELS || self.requests.contains_key(model) {
                model.to_string()
            } else {
                OTHER_MODELS.to_string()
            };
        *self.requests.entry(counted).or_default() += 1;
        let EngineState { rng, rules, .. } = self;
        for rule in rules.iter_mut() {
            if rule.model.as_ref().is_some_and(|m| m != model) {
                continue;
            }
            let hit = match (rule.times.as_mut(), rule.rate) {
                (Some(n), _) if *n > 0 => {
                    *n -= 1;
                    true
                }
                (Some(_), _) => false,
                (None, Some(rate)) => rng.random::<f64>() < rate,
                (None, None) => true,
            };
            if hit {
                faults.push(match &rule.fault {
                    Fault::Latency { ms, jitter_ms } if *jitter_ms > 0 => Fault::Latency {
                        ms: ms + rng.random_range(0..=*jitter_ms),
                        jitter_ms: 0,
                    },
                    f => f.clone(),
                });
            }
        }
    }
}

/// The model turn a request asks for, counted from 0: its assistant messages after the
/// last user message.
fn turn_of(req: &ChatRequest) -> usize {
    let after = req
        .messages
        .iter()
        .rposition(|m| m.role == Role::User)
        .map_or(0, |i| i + 1);
    req.messages[after..]
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count()
}

fn scripted(req: &ChatRequest, step: ScriptStep) -> ChatResponse {
    let mut base = respond(req);
    let calls: Vec<ToolCall> = step
        .tool_calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            id: format!("call_s{i}_{}", &base.id[3..15]),
            name: c.name,
            arguments: if c.arguments.is_string() {
                c.arguments.as_str().unwrap_or("").to_string()
            } else {
                c.arguments.to_string()
            },
        })
        .collect();
    base.finish_reason = if calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    };
    if step.content.is_some() || !calls.is_empty() {
        base.content = step.content;
        base.stop_sequence = None;
    }
    base.tool_calls = calls;
    if let Some(u) = step.usage {
        base.usage = u;
    } else {
        let out_len = base.content.as_deref().map_or(0, str::len)
            + base
                .tool_calls
                .iter()
                .map(|c| c.arguments.len())
                .sum::<usize>();
        base.usage.output_tokens = tokens(out_len);
        base.usage.reasoning_tokens = 0;
        think(&req.model, &mut base.usage);
    }
    base
}

/// The total delay the latency faults ask for.
pub fn latency_of(faults: &[Fault]) -> Duration {
    let ms: u64 = faults
        .iter()
        .map(|f| match f {
            Fault::Latency { ms, .. } => *ms,
            _ => 0,
        })
        .sum();
    Duration::from_millis(ms)
}

// ---------------------------------------------------------------- in-process provider

/// The sandbox as an in-process provider: no network, scripts honoured, faults other
/// than latency and status ignored (they need a wire).
pub struct SandboxProvider {
    name: String,
    engine: std::sync::Arc<SandboxEngine>,
}

impl SandboxProvider {
    pub fn new(name: impl Into<String>, engine: std::sync::Arc<SandboxEngine>) -> Self {
        Self {
            name: name.into(),
            engine,
        }
    }

    async fn planned(&self, req: &ChatRequest) -> Result<ChatResponse, AiError> {
        let plan = self.engine.plan(req, Vec::new());
        apply_faults(&plan.faults).await?;
        Ok(plan.response)
    }
}

/// Waits the latency faults ask for, then fails with the first status fault, if any.
async fn apply_faults(faults: &[Fault]) -> Result<(), AiError> {
    let delay = latency_of(faults);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    for f in faults {
        if let Fault::Status {
            status,
            retry_after,
            message,
        } = f
        {
            return Err(AiError::from_status(
                *status,
                message.as_deref().unwrap_or("injected fault"),
                retry_after.map(Duration::from_secs),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl Provider for SandboxProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, AiError> {
        self.planned(req).await
    }

    async fn chat_stream(&self, req: &ChatRequest) -> Result<EventStream, AiError> {
        let resp = self.planned(req).await?;
        let events = response_to_events(&resp);
        Ok(Box::pin(futures_util::stream::iter(
            events.into_iter().map(Ok),
        )))
    }

    async fn count_tokens(&self, req: &ChatRequest) -> Result<Option<u64>, AiError> {
        Ok(Some(req.estimated_input_tokens()))
    }

    async fn embed(&self, req: &EmbeddingRequest) -> Result<EmbeddingResponse, AiError> {
        apply_faults(&self.engine.plan_without_answer(&req.model, Vec::new())).await?;
        Ok(embed(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool_req() -> ChatRequest {
        let mut r = ChatRequest::new("sandbox-1", vec![Message::user("what is 12 * (3 + 4)?")]);
        r.tools.push(ToolDef {
            name: "calculator".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {
                "expression": {"type": "string"},
                "precision": {"type": "integer", "minimum": 0},
                "mode": {"enum": ["exact", "approx"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}
            }, "required": ["expression"]}),
        });
        r
    }

    #[test]
    fn request_counters_are_bounded() {
        let engine = SandboxEngine::default();
        let mut req = tool_req();
        for i in 0..MAX_COUNTED_MODELS + 500 {
            req.model = format!("m-{i}");
            engine.plan(&req, Vec::new());
        }
        let stats = engine.stats();
        assert_eq!(stats.len(), MAX_COUNTED_MODELS + 1);
        assert_eq!(stats[OTHER_MODELS], 500);
        req.model = "m-0".into();
        engine.plan(&req, Vec::new());
        assert_eq!(
            engine.stats()["m-0"],
            2,
            "a counted model keeps its own counter"
        );
    }

    #[test]
    fn same_request_same_answer() {
        let r = tool_req();
        assert_eq!(respond(&r), respond(&r));
    }

    #[test]
    fn calls_a_tool_with_schema_valid_arguments_then_answers() {
        let mut r = tool_req();
        let first = respond(&r);
        assert_eq!(first.finish_reason, FinishReason::ToolCalls);
        let call = &first.tool_calls[0];
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args["expression"], "12 * (3 + 4)");
        assert_eq!(args["precision"], 0);
        assert_eq!(args["mode"], "exact");
        assert_eq!(args["tags"].as_array().unwrap().len(), 2);
        r.messages.push(Message {
            role: Role::Assistant,
            content: None,
            tool_calls: first.tool_calls.clone(),
            tool_call_id: None,
        });
        r.messages.push(Message::tool_result(&call.id, "84"));
        let second = respond(&r);
        assert_eq!(second.finish_reason, FinishReason::Stop);
        assert!(second.content.unwrap().contains("84"));
    }

    #[test]
    fn scripts_and_counted_faults_apply_in_order() {
        let engine = SandboxEngine::new(SandboxSetup {
            seed: Some(7),
            faults: vec![FaultRule {
                model: Some("m".into()),
                fault: Fault::Status {
                    status: 503,
                    retry_after: None,
                    message: None,
                },
                times: Some(2),
                rate: None,
            }],
            scripts: HashMap::from([(
                "m".to_string(),
                vec![ScriptStep {
                    content: Some("scripted".into()),
                    ..Default::default()
                }],
            )]),
        });
        let req = ChatRequest::new("m", vec![Message::user("x")]);
        let p1 = engine.plan(&req, vec![]);
        assert_eq!(p1.response.content.as_deref(), Some("scripted"));
        assert_eq!(p1.faults.len(), 1);
        assert_eq!(engine.plan(&req, vec![]).faults.len(), 1);
        let p3 = engine.plan(&req, vec![]);
        assert!(p3.faults.is_empty());
        assert!(p3.response.content.unwrap().starts_with("Sandbox reply"));
        assert_eq!(engine.stats()["m"], 3);
    }

    #[test]
    fn answers_by_turn_whatever_the_order_of_conversations() {
        let engine = SandboxEngine::default();
        let call = ScriptStep {
            tool_calls: vec![ScriptedCall {
                name: "calculator".into(),
                arguments: json!({"expression": "1 + 1"}),
            }],
            ..Default::default()
        };
        let done = ScriptStep {
            content: Some("done".into()),
            ..Default::default()
        };
        engine.answer_by_turn("t", vec![call, done]);
        let first = |who: &str| ChatRequest::new("t", vec![Message::user(who)]);
        let second = |who: &str| {
            let mut r = first(who);
            let asked = engine.plan(&r, vec![]).response.tool_calls;
            assert_eq!(asked.len(), 1, "turn 0 of {who} is the call");
            r.messages.push(Message {
                role: Role::Assistant,
                content: None,
                tool_calls: asked.clone(),
                tool_call_id: None,
            });
            r.messages.push(Message::tool_result(&asked[0].id, "2"));
            r
        };
        let (a, b) = (second("a"), second("b"));
        let a1 = engine.plan(&a, vec![]).response;
        assert_eq!(a1.content.as_deref(), Some("done"));
        assert_eq!(
            engine.plan(&b, vec![]).response.content.as_deref(),
            Some("done")
        );
        assert_eq!(
            engine.plan(&a, vec![]).response,
            a1,
            "asked again, same answer"
        );
        // Past the last turn: the default answer; a new user message starts over.
        let mut c = a.clone();
        c.messages.push(Message::assistant("done"));
        c.messages.push(Message::tool_result("x", "y"));
        assert!(
            engine
                .plan(&c, vec![])
                .response
                .content
                .unwrap()
                .starts_with("Based on")
        );
        c.messages.push(Message::user("again"));
        assert_eq!(engine.plan(&c, vec![]).response.tool_calls.len(), 1);
        assert_eq!(engine.stats()["t"], 7);
    }

    #[test]
    fn json_format_and_length_limit() {
        let mut r = ChatRequest::new("m", vec![Message::user("hello")]);
        r.response_format = Some(json!({"type": "json_object"}));
        let v: Value = serde_json::from_str(&respond(&r).content.unwrap()).unwrap();
        assert!(v["answer"].is_string());
        r.response_format = None;
        r.max_tokens = Some(2);
        let short = respond(&r);
        assert_eq!(short.finish_reason, FinishReason::Length);
        assert_eq!(short.content.unwrap().chars().count(), 8);
    }
}
