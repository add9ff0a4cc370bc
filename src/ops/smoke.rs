//! The end-to-end smoke test behind `digital-employee smoke` (and the blue-green deploy).
//!
//! Steps run in order over plain HTTP with the operator's key; a failed step stops the
//! run, but what was created is still deleted. Every step is reported with its time.
//!
//! The last step sends one gateway completion to the built-in sandbox model, so the AI
//! layer and its accounting are exercised on every deploy.
//!
//! A task runs too: submitted to the throw-away employee (whose model is the built-in
//! sandbox), polled to its end, its events read. Finished tasks are history and stay; the
//! employee is deleted.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    pub api_key: String,
    pub timeout: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub passed: bool,
    pub steps: Vec<Step>,
}

/// What the run created, for the clean-up.
#[derive(Default)]
struct Created {
    employee: Option<String>,
}

struct Runner<'a> {
    client: reqwest::Client,
    opts: &'a Options,
    steps: Vec<Step>,
    on_step: &'a mut dyn FnMut(&Step),
}

impl Runner<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.opts.url.trim_end_matches('/'))
    }

    /// Runs one step, records and reports it; `Err` stops the run.
    async fn step<T>(
        &mut self,
        name: &str,
        f: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let result = f.await;
        let step = Step {
            name: name.to_string(),
            ok: result.is_ok(),
            seconds: started.elapsed().as_secs_f64(),
            detail: result.as_ref().err().map(|e| format!("{e:#}")),
        };
        (self.on_step)(&step);
        self.steps.push(step);
        result
    }
}

async fn expect(resp: reqwest::Response, status: u16) -> anyhow::Result<Value> {
    let got = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if got != status {
        bail!(
            "expected HTTP {status}, got {got}: {}",
            truncate(&body, 300)
        );
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&body)
        .with_context(|| format!("response is not JSON: {}", truncate(&body, 300)))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Runs the smoke test; `on_step` sees each step as it finishes (the CLI prints it).
pub async fn run(opts: &Options, on_step: &mut dyn FnMut(&Step)) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .timeout(opts.timeout)
        .user_agent(concat!(
            "digital-employee-smoke/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .context("building the HTTP client")?;
    let mut r = Runner {
        client,
        opts,
        steps: Vec::new(),
        on_step,
    };
    let mut created = Created::default();
    let outcome = scenario(&mut r, &mut created).await;
    // Clean-up runs whatever happened above.
    if let Some(id) = created.employee.take() {
        let url = r.url(&format!("/v1/employees/{id}"));
        let key = opts.api_key.clone();
        let client = r.client.clone();
        let deleted = r
            .step("delete employee", async move {
                expect(
                    client.delete(url).header("X-API-Key", key).send().await?,
                    204,
                )
                .await
            })
            .await
            .is_ok();
        if deleted && outcome.is_ok() {
            let url = r.url(&format!("/v1/employees/{id}"));
            let key = opts.api_key.clone();
            let client = r.client.clone();
            let _ = r
                .step("employee is gone (404)", async move {
                    expect(client.get(url).header("X-API-Key", key).send().await?, 404).await
                })
                .await;
        }
    }
    let passed = r.steps.iter().all(|s| s.ok);
    Ok(Report {
        passed,
        steps: r.steps,
    })
}

async fn scenario(r: &mut Runner<'_>, created: &mut Created) -> anyhow::Result<()> {
    let key = r.opts.api_key.clone();
    let c = r.client.clone();

    let url = r.url("/health");
    let cc = c.clone();
    r.step("health", async move {
        let v = expect(cc.get(url).send().await?, 200).await?;
        if v.get("status").and_then(Value::as_str) != Some("ok") {
            bail!("unexpected body {v}");
        }
        Ok(())
    })
    .await?;

    let url = r.url("/ready");
    let cc = c.clone();
    r.step("ready", async move {
        expect(cc.get(url).send().await?, 200).await
    })
    .await?;

    let name = format!("smoke-{}", uuid::Uuid::now_v7().simple());
    let url = r.url("/v1/employees");
    let (cc, k, n) = (c.clone(), key.clone(), name.clone());
    let employee = r
        .step("create employee", async move {
            let body = json!({
                "name": n,
                "role": "Smoke-test employee; deleted at the end of the run",
                "instructions": "Answer briefly."
            });
            expect(
                cc.post(url)
                    .header("X-API-Key", k)
                    .json(&body)
                    .send()
                    .await?,
                201,
            )
            .await
        })
        .await?;
    let id = employee
        .get("id")
        .and_then(Value::as_str)
        .context("created employee has no id")?
        .to_string();
    created.employee = Some(id.clone());

    let url = r.url(&format!("/v1/employees/{id}"));
    let (cc, k, n) = (c.clone(), key.clone(), name.clone());
    r.step("get employee", async move {
        let v = expect(cc.get(url).header("X-API-Key", k).send().await?, 200).await?;
        if v.get("name").and_then(Value::as_str) != Some(n.as_str()) {
            bail!("fetched employee differs: {v}");
        }
        Ok(())
    })
    .await?;

    // A task through the queue, a worker and the agent runtime, to its end.
    let url = r.url("/v1/tasks");
    let (cc, k, emp) = (c.clone(), key.clone(), id.clone());
    let task = r
        .step("submit task", async move {
            let body = json!({"employee": emp, "input": "Smoke test: reply with anything."});
            expect(
                cc.post(url)
                    .header("X-API-Key", k)
                    .json(&body)
                    .send()
                    .await?,
                202,
            )
            .await
        })
        .await?;
    let task_id = task
        .get("id")
        .and_then(Value::as_str)
        .context("submitted task has no id")?
        .to_string();
    let url = r.url(&format!("/v1/tasks/{task_id}"));
    let (cc, k) = (c.clone(), key.clone());
    r.step("task succeeds", async move {
        let started = Instant::now();
        loop {
            let v = expect(cc.get(&url).header("X-API-Key", &k).send().await?, 200).await?;
            match v.get("status").and_then(Value::as_str) {
                Some("succeeded") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    bail!("task ended {s}: {}", v.get("error").unwrap_or(&Value::Null))
                }
                _ if started.elapsed() > TASK_DEADLINE => {
                    bail!("task not finished after {}s: {v}", TASK_DEADLINE.as_secs())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await?;
    let url = r.url(&format!("/v1/tasks/{task_id}/events"));
    let (cc, k) = (c.clone(), key.clone());
    r.step("task events", async move {
        let v = expect(cc.get(url).header("X-API-Key", k).send().await?, 200).await?;
        check_events(&v)
    })
    .await?;

    let url = r.url("/v1/employees?limit=100");
    let (cc, k, wanted) = (c.clone(), key.clone(), id.clone());
    r.step("list employees", async move {
        let v = expect(cc.get(url).header("X-API-Key", k).send().await?, 200).await?;
        let found = v
            .get("items")
            .or_else(|| v.get("data"))
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items
                    .iter()
                    .any(|e| e.get("id").and_then(Value::as_str) == Some(wanted.as_str()))
            });
        if !found {
            bail!("the new employee is not in the first page of the list");
        }
        Ok(())
    })
    .await?;

    // The AI gateway end to end, through the built-in in-process sandbox vendor (always
    // available, no key, no cost): a completion with content and token usage.
    let url = r.url("/v1/chat/completions");
    let (cc, k) = (c.clone(), key.clone());
    r.step("gateway completion", async move {
        let body = json!({
            "model": SMOKE_MODEL,
            "messages": [{"role": "user", "content": "Smoke test: reply with anything."}]
        });
        let v = expect(
            cc.post(url)
                .header("X-API-Key", k)
                .json(&body)
                .send()
                .await?,
            200,
        )
        .await?;
        check_completion(&v)
    })
    .await?;
    Ok(())
}

/// How long the task step waits for the task to end.
const TASK_DEADLINE: Duration = Duration::from_secs(60);

/// A task's step log with a model call and, last, the `succeeded` status.
fn check_events(v: &Value) -> anyhow::Result<()> {
    let events = v
        .get("data")
        .and_then(Value::as_array)
        .context("events response has no data")?;
    let kind = |e: &Value| e.get("kind").and_then(Value::as_str).map(str::to_owned);
    if !events
        .iter()
        .any(|e| kind(e).as_deref() == Some("llm_call"))
    {
        bail!("no llm_call event among {} events", events.len());
    }
    let last = events.last().context("no events")?;
    if last.pointer("/payload/status").and_then(Value::as_str) != Some("succeeded") {
        bail!("the last event is not the succeeded status: {last}");
    }
    Ok(())
}

/// The model the gateway step asks for: the built-in sandbox provider.
pub const SMOKE_MODEL: &str = "sandbox-1";

/// A chat completion with non-empty content and positive token usage.
fn check_completion(v: &Value) -> anyhow::Result<()> {
    let content = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    if content.trim().is_empty() {
        bail!(
            "completion has no content: {}",
            truncate(&v.to_string(), 300)
        );
    }
    let tokens = |k: &str| v.pointer(&format!("/usage/{k}")).and_then(Value::as_u64);
    match (tokens("prompt_tokens"), tokens("completion_tokens")) {
        (Some(p), Some(c)) if p > 0 && c > 0 => Ok(()),
        _ => bail!(
            "completion has no token usage: {}",
            truncate(&v.to_string(), 300)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_need_a_model_call_and_a_final_success() {
        let ok = json!({"data": [
            {"kind": "status", "payload": {"status": "queued"}},
            {"kind": "llm_call", "payload": {}},
            {"kind": "status", "payload": {"status": "succeeded"}}]});
        assert!(check_events(&ok).is_ok());
        let no_call = json!({"data": [{"kind": "status", "payload": {"status": "succeeded"}}]});
        assert!(check_events(&no_call).is_err());
        let failed = json!({"data": [
            {"kind": "llm_call", "payload": {}},
            {"kind": "status", "payload": {"status": "failed"}}]});
        assert!(check_events(&failed).is_err());
    }

    #[test]
    fn completions_need_content_and_usage() {
        let ok = json!({"choices": [{"message": {"content": "hi"}}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        assert!(check_completion(&ok).is_ok());
        let empty = json!({"choices": [{"message": {"content": " "}}],
                           "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        assert!(check_completion(&empty).is_err());
        let no_usage = json!({"choices": [{"message": {"content": "hi"}}]});
        assert!(check_completion(&no_usage).is_err());
    }
}
