//! A completion-webhook receiver for scenarios, and the signature checks a receiver makes
//! as the README tells it to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
    pub answered: u16,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }

    /// `X-Digital-Employee-Delivery`.
    pub fn delivery(&self) -> &str {
        self.header("x-digital-employee-delivery")
    }

    /// `X-Digital-Employee-Attempt`, as a number.
    pub fn attempt(&self) -> u32 {
        self.header("x-digital-employee-attempt").parse().unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A local webhook receiver: answers 500 to the first `fail_first` requests (`u32::MAX`
/// for always) and while [`Receiver::set_failing`] is on, 200 otherwise, and keeps every
/// request.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    failing: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// On a port of its own.
    pub async fn start(fail_first: u32) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, fail_first)
    }

    /// On `listener`, e.g. a port that refused connections until now.
    pub fn serve(listener: tokio::net::TcpListener, fail_first: u32) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let (seen, fail_now) = (got.clone(), failing.clone());
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (seen, fail_now) = (seen.clone(), fail_now.clone());
                    async move {
                        let mut seen = seen.lock().unwrap();
                        let fail =
                            (seen.len() as u32) < fail_first || fail_now.load(Ordering::SeqCst);
                        let status = if fail { 500 } else { 200 };
                        seen.push(Received {
                            headers,
                            body: body.to_vec(),
                            answered: status,
                            at: Instant::now(),
                        });
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            ),
        );
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver {
            url,
            got,
            failing,
            _task: task,
        }
    }

    /// While on, every request is answered 500.
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Polls until at least `n` requests arrived, failing after a deadline.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} webhook requests"), |got| got.len() >= n)
            .await
    }

    /// Polls until `pred` holds of the requests so far, failing after a deadline.
    pub async fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30s for {what}; got {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks both signatures of a received webhook the way the README tells receivers to,
/// and returns its body.
pub fn verify(secret: &str, r: &Received) -> Value {
    use hmac::{Hmac, Mac};
    let header = r.header("x-digital-employee-signature");
    let hex_sig = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("valid signature");
    assert_eq!(r.headers["x-digital-employee-event"], "task.finished");
    assert_eq!(r.headers["content-type"], "application/json");
    verify_standard(secret, r);
    r.json()
}

/// Whether `r` carries a valid `X-Digital-Employee-Signature` made with `secret`.
pub fn signed_with(secret: &str, r: &Received) -> bool {
    use hmac::{Hmac, Mac};
    let Some(hex_sig) = r
        .header("x-digital-employee-signature")
        .strip_prefix("sha256=")
    else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    hex::decode(hex_sig).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
}

/// The Standard Webhooks signature, checked as its receivers do: HMAC-SHA256 keyed with
/// the base64 after `whsec_`, over `{webhook-id}.{webhook-timestamp}.{body}`, with the
/// timestamp within five minutes of now and the id the delivery's.
pub fn verify_standard(secret: &str, r: &Received) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let id = r.header("webhook-id");
    assert_eq!(id, r.delivery());
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - ts).abs() <= 300,
        "stale timestamp {ts}"
    );
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    let header = r.header("webhook-signature");
    assert!(
        header.split(' ').any(|s| s == expected),
        "webhook-signature {header} is not {expected}"
    );
}
