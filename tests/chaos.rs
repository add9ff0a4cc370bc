//! Chaos on PostgreSQL (ADR 0015): two replicas — the real binary, as separate processes —
//! share a fresh database; one of them is killed with SIGKILL every few seconds and started
//! again while a few hundred tasks run. Each task takes three model turns from a slow
//! sandbox vendor and makes three calls of a webhook tool (one in its first turn, two in
//! its second) to a local receiver that records every call id it gets.
//!
//! What must hold at the end:
//! - every task succeeded, and its end is recorded once (one final status event, three
//!   `llm_call` steps numbered 1, 2, 3);
//! - no recorded model step was asked again. The vendor's log keys each request by the
//!   model step it asks for: the task (its input, unique per task) and the turn (the
//!   assistant messages after the user turn). A request for a step that reaches the
//!   vendor after that step's `llm_call` event was written asks a recorded step again.
//!   (Event times come from the replica's clock before the write commits, request times
//!   from the vendor's on arrival, on one machine: a re-ask, which can only read the step
//!   after its commit, always arrives later.) A step asked more than once with every ask
//!   before its record is the documented exception: the answer never reached the
//!   database because its replica died (or lost its lease) in between; they are counted;
//! - every webhook-tool call id reached the receiver exactly once. A call an attempt
//!   started without recording its result pauses the task (`waiting_approval`, reason
//!   "outcome unknown"); the test decides like an operator who can look at the receiver:
//!   approve when the id never arrived, reject when it did; a call is never made again
//!   without such an approval.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use common::{ADMIN_KEY, Backend, TestDb};
use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use digital_employee::ai::sandbox::{ScriptStep, ScriptedCall};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::Row;

const BIN: &str = env!("CARGO_BIN_EXE_digital-employee");
/// Tasks submitted, in waves of `TASKS / WAVES`.
const TASKS: usize = 300;
const WAVES: usize = 6;
const MODEL: &str = "chaos";
const TOOL: &str = "record_effect";
/// Model turns per task: a call, two calls, the answer.
const TURNS: usize = 3;
const ANSWER: &str = "all effects recorded";
/// The vendor answers after 300 ms plus up to 400 ms; the receiver after 150 ms. A task
/// takes about two seconds, so a wave is still running when the next kill comes.
const VENDOR_MS: u64 = 300;
const VENDOR_JITTER_MS: u64 = 400;
const RECEIVER_MS: u64 = 150;
/// The killed replica lives 1 to 3 s between kills.
const LIFE_MS: (u64, u64) = (1000, 3000);
/// Every task must have ended by then (a normal run needs well under half).
const DEADLINE: Duration = Duration::from_secs(150);

/// One chat request as the vendor received it.
struct Asked {
    input: String,
    turn: usize,
    at: DateTime<Utc>,
}

type Log = Arc<Mutex<Vec<Asked>>>;

/// The sandbox vendor over HTTP, every chat request logged by the model step it asks for.
struct Vendor {
    engine: Arc<SandboxEngine>,
    log: Log,
    base: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Vendor {
    async fn start() -> Vendor {
        let engine = Arc::new(SandboxEngine::default());
        engine.apply(SandboxSetup {
            seed: Some(17),
            faults: vec![FaultRule {
                model: Some(MODEL.into()),
                fault: Fault::Latency {
                    ms: VENDOR_MS,
                    jitter_ms: VENDOR_JITTER_MS,
                },
                times: None,
                rate: None,
            }],
            scripts: HashMap::new(),
        });
        let call = |n: u64| ScriptedCall {
            name: TOOL.into(),
            arguments: json!({ "effect": n }),
        };
        engine.answer_by_turn(
            MODEL,
            vec![
                ScriptStep {
                    tool_calls: vec![call(1)],
                    ..Default::default()
                },
                ScriptStep {
                    tool_calls: vec![call(2), call(3)],
                    ..Default::default()
                },
                ScriptStep {
                    content: Some(ANSWER.into()),
                    ..Default::default()
                },
            ],
        );
        let log: Log = Arc::default();
        let router = digital_employee::ai::sandbox_server::router(engine.clone(), None).layer(
            axum::middleware::from_fn_with_state(log.clone(), log_request),
        );
        let (addr, task) = common::serve_local(router).await;
        Vendor {
            engine,
            log,
            base: format!("http://{addr}/v1"),
            _task: task,
        }
    }
}

/// Notes which model step a chat request asks for, then hands it to the sandbox.
async fn log_request(State(log): State<Log>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if parts.uri.path().ends_with("/chat/completions")
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        let messages = v["messages"].as_array().cloned().unwrap_or_default();
        let user = messages.iter().rposition(|m| m["role"] == "user");
        let input = user
            .and_then(|i| messages[i]["content"].as_str())
            .unwrap_or_default()
            .to_string();
        let turn = messages[user.map_or(0, |i| i + 1)..]
            .iter()
            .filter(|m| m["role"] == "assistant")
            .count();
        log.lock().unwrap().push(Asked {
            input,
            turn,
            at: Utc::now(),
        });
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The webhook tool's target: counts the arrivals of each call id (`Idempotency-Key`),
/// noted on arrival, before it answers.
struct Receiver {
    url: String,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let s = seen.clone();
        let handler = move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
                    .to_string();
                *s.lock().unwrap().entry(key).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(RECEIVER_MS)).await;
                axum::Json(json!({"recorded": true}))
            }
        };
        let router = axum::Router::new().route("/effect", axum::routing::post(handler));
        let (addr, task) = common::serve_local(router).await;
        Receiver {
            url: format!("http://{addr}/effect"),
            seen,
            _task: task,
        }
    }

    fn count(&self, key: &str) -> usize {
        self.seen.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// A `serve` process of the binary; its output is kept (the last lines) for a failure.
struct Replica {
    child: Child,
    api: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Replica {
    /// Starts the process and waits for its `listening` line (blocking: call it off the
    /// runtime's threads).
    // The child is killed and waited for in `Drop`, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn start(env: &[(String, String)]) -> Replica {
        let mut child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (stream, tx) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(err), None),
        ] {
            let tail = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(tx) = &tx
                        && line.contains("\"listening\"")
                    {
                        let _ = tx.send(line.clone());
                    }
                    let mut t = tail.lock().unwrap();
                    if t.len() == 30 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        // Owned before waiting, so that a failure below still kills the process.
        let mut replica = Replica {
            child,
            api: String::new(),
            tail,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let lines = replica.tail.lock().unwrap().clone();
                panic!("no 'listening' line within 30s: {lines:?}")
            });
        let v: Value = serde_json::from_str(&line).unwrap();
        replica.api = v["api"].as_str().unwrap().to_string();
        replica
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_replica(env: &[(String, String)]) -> Replica {
    let env = env.to_vec();
    tokio::task::spawn_blocking(move || Replica::start(&env))
        .await
        .unwrap()
}

/// The API of the replica that is never killed.
struct Api {
    client: reqwest::Client,
    base: String,
    /// 503 answers (sent again).
    unavailable: AtomicUsize,
}

impl Api {
    /// POSTs `body`, as a client would: sent again while the answer is 503 (the replica's
    /// database pool busy), for at most 30 s; the 503s are counted.
    async fn post(&self, path: &str, body: Value, idempotency_key: Option<&str>) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut req = self
                .client
                .post(format!("http://{}{path}", self.base))
                .header("X-API-Key", ADMIN_KEY)
                .json(&body);
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let answer = r.json().await.unwrap_or(Value::Null);
            if status != 503 || Instant::now() >= deadline {
                return (status, answer);
            }
            self.unavailable.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits a task (its input is unique: the key for a repeat too).
    async fn submit(&self, input: &str) -> String {
        let body = json!({"employee": "effector", "input": input, "max_attempts": 20});
        let key = input.replace(' ', "-");
        let (status, answer) = self.post("/v1/tasks", body, Some(&key)).await;
        assert_eq!(status, 202, "submit {input}: {answer}");
        answer["id"].as_str().unwrap().to_string()
    }
}

/// Submits wave `n` of the tasks; returns (task id, input) pairs.
async fn submit_wave(api: &Api, n: usize) -> Vec<(String, String)> {
    let per = TASKS / WAVES;
    futures_util::stream::iter(n * per..(n + 1) * per)
        .map(|i| async move {
            let input = format!("chaos task {i}");
            (api.submit(&input).await, input)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// A small deterministic generator for the kill intervals (the seed is printed).
fn next_life(state: &mut u64) -> Duration {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let span = LIFE_MS.1 - LIFE_MS.0;
    Duration::from_millis(LIFE_MS.0 + (*state >> 33) % span)
}

/// Decides the tasks paused on a call of unknown outcome: reject when the receiver has
/// the call id (it happened), approve when it has not. Returns (approved, rejected).
async fn decide_unknown(pool: &sqlx::PgPool, api: &Api, receiver: &Receiver) -> (usize, usize) {
    let rows = sqlx::query(
        "SELECT t.id::text AS id, (SELECT e.payload FROM task_events e WHERE e.task_id = t.id \
         AND e.kind = 'status' AND e.payload->>'status' = 'waiting_approval' \
         ORDER BY e.seq DESC LIMIT 1) AS paused \
         FROM tasks t WHERE t.status = 'waiting_approval'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let (mut approved, mut rejected) = (0, 0);
    for r in rows {
        let id: String = r.get("id");
        let paused: Value = r.get("paused");
        assert_eq!(
            paused["reason"], "outcome unknown",
            "task {id} paused for another reason: {paused}"
        );
        let key = paused["idempotency_key"].as_str().unwrap();
        let arrived = receiver.count(key) > 0;
        let verb = if arrived { "reject" } else { "approve" };
        let (status, body) = api
            .post(
                &format!("/v1/tasks/{id}/{verb}"),
                json!({"reason": "checked the receiver"}),
                None,
            )
            .await;
        assert_eq!(status, 202, "{verb} {id}: {body}");
        if arrived {
            rejected += 1;
        } else {
            approved += 1;
        }
    }
    (approved, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_killed_every_few_seconds_repeats_no_step_and_no_call() {
    let begun = Instant::now();
    let Some(db) = TestDb::new_database(Backend::Postgres).await else {
        return;
    };
    db.migrated_store().await.close().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let vendor = Vendor::start().await;
    let receiver = Receiver::start().await;
    let data = std::env::temp_dir().join(format!("de-chaos-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&data).unwrap();
    let providers = json!([{"name": "vendor", "format": "openai", "base_url": vendor.base,
                            "api_key": "sk-chaos"}])
    .to_string();
    let env: Vec<(String, String)> = [
        ("PATH", std::env::var("PATH").unwrap_or_default().as_str()),
        ("DATA_DIR", data.to_str().unwrap()),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("PROMETHEUS_METRICS_PORT", "0"),
        // Warnings, and the `listening` line with the address.
        ("LOG_LEVEL", "warn,digital_employee::cli::serve=info"),
        ("DATABASE_URL", &db.url),
        ("DB_MAX_CONNECTIONS", "8"),
        ("API_KEY_WHITELIST", ADMIN_KEY),
        ("RATE_LIMIT_REQUESTS", "1000000"),
        ("EGRESS_ALLOW_CIDRS", "127.0.0.1/32"),
        ("AI_PROVIDERS", &providers),
        // Every model turn must reach the vendor to be counted.
        ("AI_CACHE", "off"),
        // One request per model turn and attempt: a failed one fails the attempt.
        ("AI_SERVICE_RETRY_COUNT", "0"),
        ("WORKER_CONCURRENCY", "16"),
        ("TASK_LEASE_SECONDS", "3"),
        ("TASK_POLL_INTERVAL", "0.2"),
        ("TASK_RETRY_BASE_DELAY", "0.05"),
        ("SHUTDOWN_GRACE_PERIOD", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let stable = start_replica(&env).await;
    let mut victim = start_replica(&env).await;
    let api = Api {
        client: reqwest::Client::new(),
        base: stable.api.clone(),
        unavailable: AtomicUsize::new(0),
    };
    let (s, b) = api
        .post(
            "/v1/tools",
            json!({"name": TOOL, "description": "Record an effect somewhere else.",
                   "parameters": {"type": "object", "properties": {"effect": {"type": "integer"}}},
                   "url": receiver.url}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .post(
            "/v1/employees",
            json!({"name": "effector", "role": "records effects",
                   "model_policy": [format!("vendor/{MODEL}")], "allowed_tools": [TOOL]}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // Tasks go in in waves: one at the start and one after each of the first kills, so
    // every run sees at least WAVES - 1 kills however fast the machine is. The victim is
    // killed and restarted every few seconds until every task has ended.
    let setup = begun.elapsed();
    let started = Instant::now();
    let mut input_of: HashMap<String, String> = HashMap::new();
    input_of.extend(submit_wave(&api, 0).await);
    let seed = std::process::id() as u64;
    let mut rng = seed;
    let mut kills = 0;
    let mut next_kill = Instant::now() + next_life(&mut rng);
    let (mut approved, mut rejected) = (0, 0);
    loop {
        let (a, r) = decide_unknown(&pool, &api, &receiver).await;
        approved += a;
        rejected += r;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tasks WHERE status NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 && kills >= WAVES - 1 {
            break;
        }
        if started.elapsed() >= DEADLINE {
            let lines = victim.tail.lock().unwrap().clone();
            panic!("{open} tasks still open after {DEADLINE:?} ({kills} kills); victim: {lines:?}");
        }
        if Instant::now() >= next_kill {
            victim.kill();
            kills += 1;
            victim = start_replica(&env).await;
            if kills < WAVES {
                input_of.extend(submit_wave(&api, kills).await);
            }
            next_kill = Instant::now() + next_life(&mut rng);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    drop(victim);
    drop(stable);

    let mut events: HashMap<String, Vec<(String, Value, DateTime<Utc>)>> = HashMap::new();
    for r in sqlx::query(
        "SELECT task_id::text AS id, kind, payload, created_at FROM task_events ORDER BY task_id, seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        events.entry(r.get("id")).or_default().push((
            r.get("kind"),
            r.get("payload"),
            r.get("created_at"),
        ));
    }
    assert_eq!(events.len(), TASKS);
    // When each step was first recorded, by (task input, turn); when each attempt began
    // (its `running` events), by task input.
    let mut recorded: HashMap<(String, usize), DateTime<Utc>> = HashMap::new();
    let mut attempts: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for (id, ev) in &events {
        let input = &input_of[id];
        for (kind, p, at) in ev {
            if kind == "llm_call" {
                let turn = p["step"].as_u64().unwrap() as usize - 1;
                recorded.entry((input.clone(), turn)).or_insert(*at);
            } else if kind == "status" && p["status"] == "running" {
                attempts.entry(input.clone()).or_default().push(*at);
            }
        }
    }

    // The vendor's log against the recorded steps: no step asked after it was recorded,
    // and no step asked more often than attempts began before its record.
    let log = std::mem::take(&mut *vendor.log.lock().unwrap());
    assert_eq!(
        log.len() as u64,
        vendor.engine.stats()[MODEL],
        "every request was logged"
    );
    let mut asks: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for a in log.iter() {
        let step = (a.input.clone(), a.turn);
        let Some(at) = recorded.get(&step) else {
            panic!("a step no task recorded was asked: {step:?}");
        };
        assert!(
            a.at <= *at,
            "step {step:?} asked at {} after it was recorded at {at}",
            a.at
        );
        *asks.entry(step).or_default() += 1;
    }
    assert_eq!(asks.len(), TASKS * TURNS, "every step was asked");
    // An attempt asks for a step at most once (no retries in the router here).
    for ((input, turn), n) in &asks {
        let at = recorded[&(input.clone(), *turn)];
        let began = attempts[input].iter().filter(|a| **a < at).count();
        assert!(
            *n <= began,
            "step {turn} of {input:?} asked {n} times by {began} attempts"
        );
    }

    // Every task succeeded once, with its three steps.
    let tasks = sqlx::query("SELECT id::text AS id, status, attempt, steps, result FROM tasks")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(tasks.len(), TASKS);
    let mut retried = 0;
    for t in &tasks {
        let id: String = t.get("id");
        let status: String = t.get("status");
        assert_eq!(status, "succeeded", "task {id}");
        assert_eq!(t.get::<i32, _>("steps"), TURNS as i32, "task {id}");
        let result: Value = t.get("result");
        assert_eq!(result["output"], ANSWER, "task {id}");
        if t.get::<i32, _>("attempt") > 1 {
            retried += 1;
        }
    }
    let mut resumed = 0;
    let mut remade = 0;
    for (id, ev) in &events {
        let ends: Vec<&Value> = ev
            .iter()
            .filter(|(k, p, _)| {
                k == "status"
                    && ["succeeded", "failed", "cancelled"]
                        .contains(&p["status"].as_str().unwrap_or(""))
            })
            .map(|(_, p, _)| p)
            .collect();
        assert_eq!(
            ends.len(),
            1,
            "task {id} ended {} times: {ends:?}",
            ends.len()
        );
        assert_eq!(ends[0]["status"], "succeeded");
        let steps: Vec<i64> = ev
            .iter()
            .filter(|(k, _, _)| k == "llm_call")
            .map(|(_, p, _)| p["step"].as_i64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3], "task {id}: recorded steps");
        resumed += ev.iter().filter(|(k, _, _)| k == "resumed").count();
        // The model's call id → the stable id; then per stable id: its result, the times
        // it was started and the approvals that allowed starting it again.
        let key_of: HashMap<&str, &str> = ev
            .iter()
            .filter(|(k, _, _)| k == "tool_call")
            .map(|(_, p, _)| {
                (
                    p["call_id"].as_str().unwrap(),
                    p["idempotency_key"].as_str().unwrap(),
                )
            })
            .collect();
        let keys: HashSet<&str> = key_of.values().copied().collect();
        let want: HashSet<String> = [1, 2]
            .iter()
            .flat_map(|s| (0..*s).map(move |i| format!("{id}:{s}:{i}")))
            .collect();
        assert_eq!(
            keys,
            want.iter().map(String::as_str).collect(),
            "task {id}: call ids"
        );
        for key in &keys {
            let of = |kind: &str| {
                ev.iter()
                    .filter(|(k, p, _)| k == kind && p["idempotency_key"] == *key)
                    .count()
            };
            let approvals = ev
                .iter()
                .filter(|(k, p, _)| {
                    k == "approval"
                        && p["decision"] == "approve"
                        && key_of.get(p["call_id"].as_str().unwrap_or("")) == Some(key)
                })
                .count();
            assert_eq!(of("tool_result"), 1, "call {key}: results");
            assert!(
                of("tool_started") <= 1 + approvals,
                "call {key} made again without an approval: {ev:?}"
            );
            remade += of("tool_started") - 1;
            assert_eq!(
                receiver.count(key),
                1,
                "call {key} reached the receiver {} times: {ev:?}",
                receiver.count(key)
            );
        }
    }
    let arrived: usize = receiver.seen.lock().unwrap().values().sum();
    assert_eq!(
        arrived,
        TASKS * 3,
        "the receiver got only the calls of the tasks"
    );
    let reasked = log.len() - asks.len();

    // The chaos happened: tasks were cut off and went on elsewhere.
    assert!(resumed > 0 && retried > 0, "no task was interrupted");
    eprintln!(
        "chaos (seed {seed}): set-up {:.1}s; {TASKS} tasks in {:.1}s, {kills} kills, \
         {retried} tasks retried, {resumed} resumed; vendor: {} requests for {} steps ({reasked} asked again, answer \
         never recorded); calls: {arrived} arrived once each, {remade} made again after \
         approval; outcome unknown: {approved} approved, {rejected} rejected; 503 answers: {}; \
         checks {:.1}s",
        setup.as_secs_f64(),
        elapsed.as_secs_f64(),
        log.len(),
        asks.len(),
        api.unavailable.load(Ordering::Relaxed),
        started.elapsed().saturating_sub(elapsed).as_secs_f64(),
    );
    pool.close().await;
    let _ = std::fs::remove_dir_all(&data);
}
