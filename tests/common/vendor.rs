//! A sandbox vendor over real HTTP for scenarios, named `vendor` in `AI_PROVIDERS`, with
//! an optional gate that holds its requests until the test lets them through.

use std::collections::HashMap;
use std::sync::Arc;

use digital_employee::ai::sandbox::{Fault, FaultRule, SandboxEngine, SandboxSetup};
use serde_json::json;

/// A sandbox vendor over HTTP, named `vendor` in `AI_PROVIDERS`.
pub struct Vendor {
    pub engine: Arc<SandboxEngine>,
    pub providers: String,
    _task: tokio::task::JoinHandle<()>,
}

/// Holds every vendor request until the test lets it through, counting arrivals.
#[derive(Clone)]
pub struct Gate {
    open: Arc<tokio::sync::Semaphore>,
    arrived: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            open: Arc::new(tokio::sync::Semaphore::new(0)),
            arrived: Arc::default(),
        }
    }
}

impl Gate {
    pub fn arrived(&self) -> usize {
        self.arrived.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every held and future request through.
    pub fn release(&self) {
        self.open
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

impl Vendor {
    pub async fn start() -> Vendor {
        Self::start_with(None).await
    }

    /// A vendor whose requests wait at `gate`.
    pub async fn gated(gate: &Gate) -> Vendor {
        Self::start_with(Some(gate.clone())).await
    }

    pub async fn start_with(gate: Option<Gate>) -> Vendor {
        let engine = Arc::new(SandboxEngine::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let mut router =
            digital_employee::ai::sandbox_server::router(engine.clone(), Some("sk-v".into()));
        if let Some(gate) = gate {
            router = router.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let gate = gate.clone();
                    async move {
                        gate.arrived
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _pass = gate.open.acquire().await.unwrap();
                        next.run(req).await
                    }
                },
            ));
        }
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Vendor {
            engine,
            providers: json!([{"name": "vendor", "format": "openai", "base_url": base,
                               "api_key": "sk-v"}])
            .to_string(),
            _task: task,
        }
    }

    pub fn fault(&self, model: &str, fault: Fault) {
        self.engine.apply(SandboxSetup {
            seed: Some(1),
            faults: vec![FaultRule {
                model: Some(model.into()),
                fault,
                times: None,
                rate: None,
            }],
            scripts: HashMap::new(),
        });
    }

    pub fn count(&self, model: &str) -> u64 {
        self.engine.stats().get(model).copied().unwrap_or(0)
    }
}
