//! The OpenAPI document, generated from the handlers' annotations, and the docs page.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{
    budgets, chat, embeddings, employee_chat, employees, health, keys, messages, models, responses,
    schedules, tasks, tenants, tools, usage, webhooks,
};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "digital-employee",
        description = "Run AI digital employees: durable tasks, the LLM/tool loop, vendor fallback and accounting. \
                       Every error answers {\"error\":{\"type\",\"message\",\"request_id\"}}.",
    ),
    paths(
        health::health,
        health::ready,
        employees::create,
        employees::list,
        employees::get,
        employees::update,
        employees::delete,
        employee_chat::chat,
        chat::completions,
        messages::create,
        messages::count_tokens,
        embeddings::create,
        models::list,
        models::get,
        responses::create,
        responses::get,
        responses::delete,
        budgets::create,
        budgets::list,
        budgets::get,
        budgets::update,
        budgets::delete,
        keys::create,
        keys::list,
        keys::get,
        keys::revoke,
        tenants::create,
        tenants::list,
        tenants::get,
        tasks::create,
        tasks::list,
        tasks::get,
        tasks::cancel,
        tasks::approve,
        tasks::reject,
        tasks::input,
        tasks::events,
        usage::report,
        schedules::create,
        schedules::list,
        schedules::get,
        schedules::update,
        schedules::delete,
        webhooks::rotate_secret,
        tools::create,
        tools::list,
        tools::get,
        tools::update,
        tools::delete,
    ),
    modifiers(&Security, &McpServers, &Contract),
    tags(
        (name = "health", description = "Liveness and readiness probes (no auth)"),
        (name = "employees", description = "Digital employees: role, instructions, model policy, tools, limits"),
        (name = "tasks", description = "Durable tasks: submit, follow, cancel, approve"),
        (name = "webhooks", description = "Signing secret of the completion webhooks (admin)"),
        (name = "schedules", description = "Cron schedules that submit a task on every tick"),
        (name = "tools", description = "Webhook tools of the tenant: a JSON-schema and a URL the signed calls are POSTed to"),
        (name = "gateway", description = "OpenAI-compatible chat completions through the AI router"),
        (name = "budgets", description = "Spend limits of the tenant, a key or an employee, per day, month or for ever (admin); enforced before every vendor call"),
        (name = "keys", description = "API keys of a tenant (admin): the secret is shown once, at creation"),
        (name = "tenants", description = "Tenants (admin of the default tenant)"),
        (name = "usage", description = "AI usage and cost of the caller's tenant, from the recorded AI calls"),
    )
)]
pub struct ApiDoc;

struct Security;

/// The `/v1/mcp-servers` routes, declared beside their handlers.
struct McpServers;

impl Modify for McpServers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        super::mcp_servers::Doc.modify(openapi);
    }
}

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Makes the document state what the server does beyond the handlers' annotations: one
/// unique `operationId` per operation (`<tag>_<handler>`), every error status each
/// operation can answer (all in the one error shape), and links from each create
/// operation to the operations on the created resource, so a client (or a stateful
/// fuzzer) can follow an id from one call to the next.
struct Contract;

/// The error answers every operation may give, by status: name in `components/responses`
/// and description.
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "Malformed request: JSON syntax, an undecodable path, a bad header",
    ),
    (
        "401",
        "Unauthorized",
        "Missing, unknown, revoked or expired credentials",
    ),
    (
        "403",
        "Forbidden",
        "The credentials lack the scope or tenant this needs",
    ),
    ("404", "NotFound", "No such resource in the caller's tenant"),
    ("413", "PayloadTooLarge", "Body larger than MAX_BODY_BYTES"),
    (
        "415",
        "UnsupportedMediaType",
        "Body is not application/json",
    ),
    (
        "422",
        "ValidationError",
        "A field or parameter breaks a rule; `field` names it",
    ),
    (
        "429",
        "TooManyRequests",
        "Rate limit, or too many failed authentications from this address; see Retry-After",
    ),
    (
        "500",
        "InternalError",
        "Unexpected failure; the message is generic, the request id finds the log line",
    ),
    (
        "503",
        "Unavailable",
        "Shutting down, or the database is unreachable; retry later",
    ),
];

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (_, name, description) in ERRORS {
            components.responses.insert(
                (*name).to_string(),
                utoipa::openapi::ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into(),
            );
        }
        let mut creates = Vec::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .cloned()
                    .unwrap_or_default();
                let handler = op
                    .operation_id
                    .clone()
                    .unwrap_or_else(|| method.to_string());
                let id = format!("{tag}_{handler}");
                op.operation_id = Some(id.clone());
                for status in statuses(path, op) {
                    if let Some((code, name, _)) = ERRORS.iter().find(|(c, _, _)| *c == status) {
                        op.responses
                            .responses
                            .entry((*code).to_string())
                            .or_insert_with(|| {
                                utoipa::openapi::Ref::from_response_name(*name).into()
                            });
                    }
                }
                if method == "post" && !path.ends_with('}') && path.starts_with("/v1/") {
                    creates.push((path.clone(), id));
                }
            }
        }
        // Links: from a create's success answer to every operation under `<path>/{id}`.
        let mut links = Vec::new();
        for (create_path, create_id) in &creates {
            let prefix = format!("{create_path}/{{id}}");
            for (path, item) in doc.paths.paths.iter_mut() {
                if !path.starts_with(&prefix) {
                    continue;
                }
                for (_, op) in operations(item) {
                    if let Some(target) = &op.operation_id {
                        links.push((create_id.clone(), target.clone()));
                    }
                }
            }
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let _ = path;
            for (_, op) in operations(item) {
                let Some(id) = op.operation_id.clone() else {
                    continue;
                };
                for (status, response) in op.responses.responses.iter_mut() {
                    let utoipa::openapi::RefOr::T(response) = response else {
                        continue;
                    };
                    if !status.starts_with('2') {
                        continue;
                    }
                    for (_, target) in links.iter().filter(|(from, _)| *from == id) {
                        response.links.insert(
                            target.clone(),
                            utoipa::openapi::link::LinkBuilder::new()
                                .operation_id(target.clone())
                                .parameter("id", "$response.body#/id")
                                .build()
                                .into(),
                        );
                    }
                }
            }
        }
    }
}

/// The operations of a path item, with their lower-case methods.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> Vec<(&'static str, &mut utoipa::openapi::path::Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

/// The error statuses an operation can answer, from what it takes: every `/v1` route
/// sits behind authentication, the rate limit and the database; a path parameter can be
/// undecodable or name nothing; a body can be malformed, too large, of another type or
/// invalid; a query parameter can be invalid.
fn statuses(path: &str, op: &utoipa::openapi::path::Operation) -> Vec<&'static str> {
    let mut out = vec!["500"];
    if path.starts_with("/v1/") {
        out.extend(["401", "403", "429", "503"]);
    }
    if path.contains('{') {
        out.extend(["400", "404", "422"]);
    }
    if op.request_body.is_some() {
        out.extend(["400", "413", "415", "422"]);
    }
    if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
        out.extend(["400", "422"]);
    }
    out
}

/// A name: letters, digits, `-`, `_`, `.`, starting with a letter or digit, 1–64 long.
const NAME: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// A text holding something other than white space (and, like every text, no NUL).
/// White space is spelled out as the server counts it (`orchestrator::is_blank`: Unicode
/// White_Space plus the information separators U+001C–U+001F), not as `\s`, which differs
/// between regex engines (ECMAScript's leaves out U+0085 and adds U+FEFF).
const NOT_BLANK: &str = r"^[^\x00]*[^\x00\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$";
/// Any text without the NUL character, which the API refuses everywhere.
const NO_NUL: &str = r"^[^\x00]*$";
/// An instant both stores keep (years 1971–9998, so no offset moves it out of range),
/// RFC 3339 with a time, or (where the operation says so) a bare date.
const INSTANT: &str = r"^(19[7-9][1-9]|19[89]0|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$";
const INSTANT_OR_DATE: &str = r"^(19[7-9][1-9]|19[89]0|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]))?$";
/// A tool name.
const TOOL_NAME: &str = r"^[A-Za-z0-9_-]{1,64}$";
/// An entry of `allowed_tools`: a tool name, or an MCP tool `mcp:<server>/<tool>` (`*` for
/// every tool of the server).
const TOOL_ENTRY: &str =
    r"^([A-Za-z0-9_-]{1,64}|mcp:[A-Za-z0-9_-]{1,64}/([A-Za-z0-9_./-]{1,128}|\*))$";
/// An HTTP header name (a token) and a value `HeaderValue` takes.
const HEADER_NAME: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_VALUE: &str = r"^[^\x00-\x08\x0a-\x1f\x7f]*$";

/// A pattern matching any of `words`, letters in either case (JSON Schema has no flag).
fn any_case(words: &[&str]) -> String {
    let alternatives: Vec<String> = words
        .iter()
        .map(|w| {
            w.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                    } else {
                        regex::escape(&c.to_string())
                    }
                })
                .collect()
        })
        .collect();
    format!("^({})$", alternatives.join("|"))
}
/// An http(s) URL with a host name (the server also takes IP literals and any port;
/// the egress policy decides which hosts it reaches).
fn url_pattern() -> String {
    format!(
        r"^https?://[A-Za-z][A-Za-z0-9-]*(\.[A-Za-z][A-Za-z0-9-]*)*(:{})?(/[!-~]*)?$",
        crate::orchestrator::PORT_PATTERN
    )
}

/// What the annotations cannot say: patterns, unique items, the shape of `input`. Each
/// entry names a component schema, a property, and the keywords merged into it.
fn refinements() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    use serde_json::json;
    let object = json!({"$ref": "#/components/schemas/JsonObject"});
    let input = json!({
        "description": "What to do: a text (not blank), or a JSON object (sent to the model as JSON text).",
        "anyOf": [{"type": "string", "pattern": NOT_BLANK}, object.clone()],
    });
    let mut out = Vec::new();
    for schema in ["CreateEmployee", "UpdateEmployee"] {
        out.extend([
            (schema, "max_steps", json!({"minimum": 1, "maximum": 100})),
            (
                schema,
                "token_budget",
                json!({"minimum": 1, "maximum": 10_000_000}),
            ),
            (schema, "temperature", json!({"minimum": 0, "maximum": 2})),
            (schema, "instructions", json!({"maxLength": 32768})),
            (schema, "name", json!({"pattern": NAME})),
            (schema, "role", json!({"pattern": NOT_BLANK})),
            (
                schema,
                "allowed_tools",
                json!({"uniqueItems": true, "items": {"type": "string", "pattern": TOOL_ENTRY}}),
            ),
            (
                schema,
                "approval_tools",
                json!({"uniqueItems": true, "items": {"type": "string", "pattern": TOOL_ENTRY}}),
            ),
        ]);
    }
    for schema in ["CreateTool", "UpdateTool"] {
        out.extend([
            (
                schema,
                "name",
                json!({"pattern": TOOL_NAME, "not": {"enum": crate::runtime::tools::BUILTIN}}),
            ),
            (
                schema,
                "description",
                json!({"pattern": NOT_BLANK, "maxLength": 1000}),
            ),
            (
                schema,
                "url",
                json!({"pattern": url_pattern(), "maxLength": 2000}),
            ),
            (
                schema,
                "timeout_seconds",
                json!({"minimum": 1, "maximum": 60}),
            ),
            (schema, "parameters", nullable_if_update(schema, &object)),
        ]);
    }
    for schema in ["CreateMcpServer", "UpdateMcpServer"] {
        use super::mcp_servers::{
            MAX_ALLOWLIST, MAX_HEADER_VALUE, MAX_HEADERS, MAX_URL, RESERVED_HEADERS,
        };
        out.extend([
            (schema, "name", json!({"pattern": TOOL_NAME})),
            (schema, "url", json!({"pattern": url_pattern(), "maxLength": MAX_URL})),
            (schema, "timeout_seconds", json!({"minimum": 1, "maximum": 300})),
            (schema, "headers", json!({
                "maxProperties": MAX_HEADERS,
                "propertyNames": {"pattern": HEADER_NAME, "not": {"pattern": any_case(RESERVED_HEADERS)}},
                "additionalProperties": {"type": "string", "pattern": HEADER_VALUE, "maxLength": MAX_HEADER_VALUE},
            })),
            // In an update an empty token removes the token.
            (schema, "bearer_token", json!({
                "pattern": if schema.starts_with("Update") { r"^[^\x00-\x08\x0a-\x1f\x7f]*$" } else { r"^[^\x00-\x08\x0a-\x1f\x7f]+$" },
                "maxLength": MAX_HEADER_VALUE,
            })),
            (schema, "tool_allowlist", json!({"maxItems": MAX_ALLOWLIST,
                "items": {"type": "string", "pattern": "^[A-Za-z0-9_./-]{1,128}$"}})),
        ]);
    }
    for schema in ["CreateSchedule", "UpdateSchedule"] {
        out.extend([
            (schema, "employee", json!({"minLength": 1})),
            (schema, "cron", json!({"maxLength": 200})),
            (schema, "input", nullable_if_update(schema, &input)),
            (schema, "priority", json!({"minimum": -100, "maximum": 100})),
        ]);
    }
    out.extend([
        ("CreateTask", "employee", json!({"minLength": 1})),
        ("CreateTask", "input", input),
        ("CreateTask", "priority", json!({"minimum": -100, "maximum": 100})),
        ("CreateTask", "max_attempts", json!({"minimum": 1, "maximum": 20})),
        ("CreateTask", "callback_url", json!({"pattern": url_pattern(), "maxLength": 2000})),
        ("CreateTask", "metadata", json!({"anyOf": [object, {"type": "null"}]})),
        ("CreateTask", "run_at", json!({"pattern": INSTANT})),
        ("CreateTenant", "name", json!({"pattern": NAME})),
        ("CreateKey", "name", json!({"pattern": r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$", "maxLength": 100})),
        ("CreateKey", "scope", json!({"enum": ["read", "write", "admin"]})),
        ("CreateKey", "rate_limit", json!({"minimum": 1, "maximum": 1_000_000})),
        ("ChatTurn", "message", json!({"pattern": NOT_BLANK})),
        ("Decision", "reason", json!({"maxLength": 1000})),
        ("TaskInput", "answer", json!({"pattern": NOT_BLANK})),
        ("TaskView", "input", json!({"anyOf": [{"type": "string"}, {"type": "object"}]})),
        ("ScheduleView", "input", json!({"anyOf": [{"type": "string"}, {"type": "object"}]})),
    ]);
    out
}

/// In an update, a field given as `null` is left as it is: its schema admits null.
fn nullable_if_update(schema: &str, property: &serde_json::Value) -> serde_json::Value {
    if schema.starts_with("Update") {
        serde_json::json!({"anyOf": [property, {"type": "null"}]})
    } else {
        property.clone()
    }
}

/// Parameters by name, wherever they appear: the keywords merged into their schema.
fn parameter_refinements() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        ("limit", json!({"minimum": 1, "maximum": 100})),
        // A cursor is 16 bytes in unpadded URL-safe base64.
        ("cursor", json!({"pattern": "^[A-Za-z0-9_-]{21}[AQgw]$"})),
        (
            "Idempotency-Key",
            json!({"type": "string", "pattern": "^[!-~]{1,200}$"}),
        ),
        (
            "If-Match",
            json!({"type": "string", "pattern": "^(W/)?(\"[0-9]{1,18}\"|[0-9]{1,18})$"}),
        ),
        (
            "Last-Event-ID",
            json!({"type": "string", "pattern": "^[0-9]{1,18}$"}),
        ),
        (
            "status",
            json!({"type": "string", "enum": crate::store::TaskStatus::ALL.map(crate::store::TaskStatus::as_str)}),
        ),
        (
            "employee",
            json!({"type": "string", "minLength": 1, "pattern": NO_NUL}),
        ),
        (
            "created_after",
            json!({"type": "string", "format": "date-time", "pattern": INSTANT}),
        ),
        (
            "created_before",
            json!({"type": "string", "format": "date-time", "pattern": INSTANT}),
        ),
        (
            "from",
            json!({"type": "string", "pattern": INSTANT_OR_DATE}),
        ),
        ("to", json!({"type": "string", "pattern": INSTANT_OR_DATE})),
    ]
}

fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            t.insert(k.clone(), v.clone());
        }
    }
}

/// The free-form objects (`input`, `metadata`, tool `parameters`): any JSON object whose
/// texts hold no NUL. The rule holds at every depth (the server checks it); the schema
/// states it for the keys and in words, since a recursive schema breaks common client
/// generators.
fn json_schemas() -> serde_json::Value {
    use serde_json::json;
    json!({
        "JsonObject": {
            "description": "A JSON object; no text in it (key or string, at any depth) may hold U+0000.",
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
        },
    })
}

/// The request body of the gateway: the fields it checks, typed (a few more, such as
/// `tools` and `tool_choice`, follow OpenAI's definitions); any other field passes
/// through to the vendor.
fn gateway_request(model_pattern: &str) -> serde_json::Value {
    use serde_json::json;
    json!({
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "pattern": model_pattern, "example": "sandbox/sandbox-1",
                      "description": "`provider/model` of a configured provider, or a configured alias."},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {
                        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                        "content": {"type": ["string", "null"], "pattern": NO_NUL},
                    },
                },
            },
            "temperature": {"type": ["number", "null"]},
            "max_tokens": {"type": ["integer", "null"], "minimum": 0, "maximum": 4_294_967_295_u32},
            "stream": {"type": ["boolean", "null"]},
        },
    })
}

/// The request schemas of the other protocols' endpoints (Anthropic Messages, OpenAI
/// Responses and embeddings): the fields the gateway reads, typed as it reads them. The
/// vendors' formats take more shapes than stated here (content blocks, input items),
/// read as the vendors read them (ADR 0010).
fn protocol_requests(model_pattern: &str) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let open = |required: serde_json::Value, properties: serde_json::Value| {
        json!({"type": "object", "propertyNames": {"pattern": NO_NUL},
            "required": required, "properties": properties})
    };
    let model = json!({"type": "string", "pattern": model_pattern, "example": "sandbox/sandbox-1",
        "description": "`provider/model` of a configured provider, or a configured alias."});
    let text = json!({"type": "string", "pattern": NO_NUL});
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let opt_text = json!({"type": ["string", "null"], "pattern": NO_NUL});
    let tokens = json!({"type": "array", "minItems": 1,
        "items": {"type": "integer", "minimum": 0, "maximum": 4_294_967_295_u32}});
    // As many inputs as the gateway takes in one request (OpenAI's limit).
    let inputs = crate::ai::openai::MAX_EMBEDDING_INPUTS;
    let messages = json!({"type": "array", "minItems": 1, "items": open(
        json!(["role", "content"]),
        json!({"role": {"type": "string", "enum": ["user", "assistant"]}, "content": text}),
    )});
    let message_props = |with_limit: bool| {
        let mut p = json!({"model": model, "messages": messages, "system": opt_text,
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "stream": nullable("boolean"),
            "stop_sequences": {"type": ["array", "null"], "items": text}});
        if with_limit {
            p["max_tokens"] =
                json!({"type": "integer", "minimum": 1, "maximum": 4_294_967_295_u32});
        }
        p
    };
    vec![
        (
            "MessagesRequest",
            open(
                json!(["model", "messages", "max_tokens"]),
                message_props(true),
            ),
        ),
        (
            "CountTokensRequest",
            open(json!(["model", "messages"]), message_props(false)),
        ),
        (
            "ResponsesRequest",
            open(
                json!(["model", "input"]),
                json!({"model": model, "input": text,
                    "instructions": opt_text,
                    "max_output_tokens": {"type": ["integer", "null"], "minimum": 1, "maximum": 4_294_967_295_u32},
                    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                    "stream": nullable("boolean"), "store": nullable("boolean")}),
            ),
        ),
        (
            "EmbeddingsRequest",
            open(
                json!(["model", "input"]),
                json!({"model": model,
                    "input": {"anyOf": [text, {"type": "array", "minItems": 1, "maxItems": inputs, "items": text},
                        tokens, {"type": "array", "minItems": 1, "maxItems": inputs, "items": tokens}]},
                    "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": 4096},
                    "encoding_format": {"type": ["string", "null"], "enum": ["float", "base64", null]}}),
            ),
        ),
    ]
}

/// Gives every text of the request schemas that has no pattern the NUL-free one.
fn forbid_nul(schema: &mut serde_json::Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let is_string = match obj.get("type") {
        Some(serde_json::Value::String(t)) => t == "string",
        Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    };
    let dated = obj
        .get("format")
        .is_some_and(|f| f == "date-time" || f == "uuid");
    if is_string && !dated && !obj.contains_key("pattern") && !obj.contains_key("enum") {
        obj.insert("pattern".into(), NO_NUL.into());
    }
    for key in ["properties"] {
        if let Some(props) = obj.get_mut(key).and_then(|p| p.as_object_mut()) {
            props.values_mut().for_each(forbid_nul);
        }
    }
    if let Some(items) = obj.get_mut("items") {
        forbid_nul(items);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get_mut(key).and_then(|l| l.as_array_mut()) {
            list.iter_mut().for_each(forbid_nul);
        }
    }
}

/// The schemas clients send.
const REQUEST_SCHEMAS: &[&str] = &[
    "CreateEmployee",
    "UpdateEmployee",
    "CreateTask",
    "Decision",
    "TaskInput",
    "ChatTurn",
    "CreateKey",
    "CreateTenant",
    "CreateSchedule",
    "UpdateSchedule",
    "CreateTool",
    "UpdateTool",
    "CreateMcpServer",
    "UpdateMcpServer",
];

/// The document with [`refinements`] and [`parameter_refinements`] applied; `providers`
/// are the configured AI providers (the model names the server takes).
pub fn document(providers: &[String]) -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut v = serde_json::to_value(&doc).unwrap_or_default();
    let names = providers
        .iter()
        .map(|p| regex::escape(p))
        .collect::<Vec<_>>()
        .join("|");
    // The gateway takes configured providers only; an employee may name any provider
    // (configured later), and a chat with one that names none configured is a 409.
    let gateway_model = format!("^({names})/[A-Za-z0-9._:/@+-]{{1,128}}$");
    let candidate = "^[a-z0-9_-]+/[A-Za-z0-9._:/@+-]{1,128}$";
    if let Some(schemas) = v
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        if let Some(extra) = json_schemas().as_object() {
            schemas.extend(extra.clone());
        }
        schemas.insert(
            "ChatCompletionRequest".into(),
            gateway_request(&gateway_model),
        );
    }
    if let Some(body) = v.pointer_mut(
        "/paths/~1v1~1chat~1completions/post/requestBody/content/application~1json/schema",
    ) {
        *body = serde_json::json!({"$ref": "#/components/schemas/ChatCompletionRequest"});
    }
    for ((path, name), (_, schema)) in [
        ("/v1/messages", "MessagesRequest"),
        ("/v1/messages/count_tokens", "CountTokensRequest"),
        ("/v1/responses", "ResponsesRequest"),
        ("/v1/embeddings", "EmbeddingsRequest"),
    ]
    .into_iter()
    .zip(protocol_requests(&gateway_model))
    {
        if let Some(schemas) = v
            .pointer_mut("/components/schemas")
            .and_then(|s| s.as_object_mut())
        {
            schemas.insert(name.into(), schema);
        }
        let pointer = format!(
            "/paths/{}/post/requestBody/content/application~1json/schema",
            path.replace('/', "~1")
        );
        if let Some(body) = v.pointer_mut(&pointer) {
            *body = serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
        }
    }
    // Streams: Anthropic's typed events and the Responses events.
    for (path, what) in [
        (
            "/v1/messages",
            "Typed events (message_start … message_stop), data a JSON object",
        ),
        ("/v1/responses", "response.* events, data a JSON object"),
    ] {
        let pointer = format!(
            "/paths/{}/post/responses/200/content",
            path.replace('/', "~1")
        );
        if let Some(content) = v.pointer_mut(&pointer).and_then(|c| c.as_object_mut()) {
            content.insert(
                "text/event-stream".into(),
                serde_json::json!({"schema": {"type": "object", "description": what,
                    "properties": {"data": {"type": "string"}}}}),
            );
        }
    }
    // With `"stream": true` the answer is a server-sent event stream.
    if let Some(content) = v
        .pointer_mut("/paths/~1v1~1chat~1completions/post/responses/200/content")
        .and_then(|c| c.as_object_mut())
    {
        content.insert(
            "text/event-stream".into(),
            serde_json::json!({"schema": {"type": "object",
                "description": "Events whose `data` is a chat.completion.chunk object, then `[DONE]`",
                "properties": {"data": {"type": "string"}}}}),
        );
    }
    for schema in ["CreateEmployee", "UpdateEmployee"] {
        if let Some(items) = v.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/model_policy"
        )) {
            merge(
                items,
                &serde_json::json!({"items": {"type": "string", "pattern": candidate}}),
            );
        }
    }
    for (schema, property, patch) in refinements() {
        if let Some(target) = v.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/{property}"
        )) {
            // A property given only by a `$ref` or a type union keeps both: the patch
            // adds keywords beside them.
            if patch.get("anyOf").is_some() || patch.get("$ref").is_some() {
                *target = patch;
            } else {
                merge(target, &patch);
            }
        }
    }
    for name in REQUEST_SCHEMAS {
        if let Some(schema) = v.pointer_mut(&format!("/components/schemas/{name}")) {
            forbid_nul(schema);
        }
    }
    let refine = parameter_refinements();
    if let Some(paths) = v.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
                    continue;
                };
                for param in params {
                    let name = param
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .to_string();
                    if let Some((_, patch)) = refine.iter().find(|(n, _)| *n == name)
                        && let Some(schema) = param.get_mut("schema")
                    {
                        merge(schema, patch);
                    }
                }
            }
        }
    }
    v
}

/// `/openapi.json` (built once) and the browsable page at `/docs`.
pub fn docs_router(providers: &[String]) -> Router<AppState> {
    let doc = std::sync::Arc::new(document(providers));
    let ui: Router<AppState> = SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into();
    ui.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::NOT_BLANK;

    #[test]
    fn the_not_blank_pattern_agrees_with_the_server() {
        let re = regex::Regex::new(NOT_BLANK).unwrap();
        let texts = [
            "a",
            " a ",
            "\u{85}",
            "\u{feff}",
            "\u{1c}",
            "\u{3000}",
            "\u{a0}x",
            "\t\n",
            " ",
            "\u{2000}\u{200a}",
            "\u{200b}",
            "é",
        ];
        for text in texts {
            assert_eq!(
                re.is_match(text),
                !crate::orchestrator::is_blank(text),
                "{text:?}"
            );
        }
    }
}
