//! Whatever a vendor answers — any status, any `Retry-After`, any body, any stream — the
//! OpenAI and Anthropic clients return a value or an error, never panic. A local server
//! answers each request with what the property test generated; both clients call it over
//! real HTTP, plain and streaming.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use digital_employee::ai::anthropic::AnthropicProvider;
use digital_employee::ai::openai::OpenAiProvider;
use digital_employee::ai::provider::Provider;
use digital_employee::ai::types::{ChatRequest, Message};
use digital_employee::config::Secret;
use futures_util::StreamExt;
use proptest::prelude::*;

/// What the fake vendor answers next.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    content_type: &'static str,
    body: Vec<u8>,
}

struct Fake {
    base: String,
    next: Arc<Mutex<Answer>>,
    runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start() -> Fake {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let next = Arc::new(Mutex::new(Answer {
            status: 200,
            retry_after: None,
            content_type: "application/json",
            body: b"{}".to_vec(),
        }));
        let served = next.clone();
        let base = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let app = axum::Router::new().fallback(move || {
                let a = served.lock().unwrap().clone();
                async move {
                    let mut headers = HeaderMap::new();
                    headers.insert("content-type", HeaderValue::from_static(a.content_type));
                    if let Some(v) = a.retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                        headers.insert("retry-after", v);
                    }
                    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
                    (status, headers, a.body)
                }
            });
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            base
        });
        Fake {
            base,
            next,
            runtime,
        }
    }

    fn providers(&self) -> Vec<Arc<dyn Provider>> {
        let client =
            digital_employee::ai::client::VendorClient::new(&Default::default(), 1).unwrap();
        vec![
            Arc::new(OpenAiProvider::new(
                "openai",
                &format!("{}/v1", self.base),
                Secret::new("sk-fuzz"),
                None,
                client.clone(),
            )),
            Arc::new(AnthropicProvider::new(
                "anthropic",
                &self.base,
                Secret::new("sk-fuzz"),
                client,
            )),
        ]
    }

    /// Both clients, plain and streaming, against `answer`; panics only if a client does.
    fn exercise(&self, answer: Answer) {
        *self.next.lock().unwrap() = answer;
        let providers = self.providers();
        self.runtime.block_on(async {
            let req = ChatRequest::new("m", vec![Message::user("hi")]);
            // Whatever the body, each call ends: with an answer, an error, or (were the
            // client to hang on it) this bound, which fails the case.
            let bound = std::time::Duration::from_secs(5);
            for p in &providers {
                let call = tokio::time::timeout(bound, p.chat(&req)).await;
                assert!(call.is_ok(), "a chat call on a fuzzed body did not end");
                let stream = tokio::time::timeout(bound, async {
                    if let Ok(mut s) = p.chat_stream(&req).await {
                        let mut n = 0;
                        while let Some(_item) = s.next().await {
                            n += 1;
                            if n > 10_000 {
                                break;
                            }
                        }
                    }
                })
                .await;
                assert!(
                    stream.is_ok(),
                    "a streamed call on a fuzzed body did not end"
                );
            }
        });
    }
}

/// Bodies that are nearly right: JSON of the vendors' shapes with fields of any type, SSE
/// lines with random data, and plain noise.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let json_value = prop_oneof![
        Just(serde_json::json!(null)),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([{"type": "text"}])),
    ];
    let field = prop_oneof![
        Just("choices"),
        Just("message"),
        Just("content"),
        Just("usage"),
        Just("tool_calls"),
        Just("delta"),
        Just("type"),
        Just("stop_reason"),
        Just("finish_reason"),
        Just("error"),
        Just("index"),
        Just("input_tokens"),
    ];
    let object = proptest::collection::vec((field, json_value), 0..6).prop_map(|fields| {
        let map: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        serde_json::Value::Object(map)
    });
    let json = object
        .clone()
        .prop_map(|o| serde_json::json!({"choices": [o], "content": [o], "usage": o}));
    let sse_event = prop_oneof![
        object.prop_map(|o| format!("data: {o}\n\n")),
        ".{0,40}".prop_map(|s| format!("data: {s}\n\n")),
        Just("data: [DONE]\n\n".to_string()),
        "[a-z_]{1,12}".prop_map(|e| format!("event: {e}\ndata: {{}}\n\n")),
        Just("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string()),
        Just(":\n\n".to_string()),
    ];
    prop_oneof![
        json.prop_map(|v| v.to_string().into_bytes()),
        proptest::collection::vec(sse_event, 0..8).prop_map(|e| e.concat().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

fn answers() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![
            Just(200u16),
            Just(400),
            Just(401),
            Just(429),
            Just(500),
            Just(503),
            100u16..600
        ],
        prop_oneof![
            Just(None),
            Just(Some("1e30".to_string())),
            Just(Some("-5".to_string())),
            Just(Some("NaN".to_string())),
            Just(Some("Fri, 31 Dec 9999 23:59:59 GMT".to_string())),
            "[0-9a-z. ,:-]{0,30}".prop_map(Some),
        ],
        prop_oneof![
            Just("application/json"),
            Just("text/event-stream"),
            Just("text/plain")
        ],
        bodies(),
    )
        .prop_map(|(status, retry_after, content_type, body)| Answer {
            status,
            retry_after,
            content_type,
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn vendor_answers_never_panic_the_clients(answer in answers()) {
        thread_local! {
            static FAKE: Fake = Fake::start();
        }
        FAKE.with(|f| f.exercise(answer));
    }
}
