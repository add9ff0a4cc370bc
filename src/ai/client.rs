//! The HTTP client of vendor calls: HTTP/1.1 connections of hyper's over rustls (the
//! platform's certificate verifier), kept in a connection pool of this module's, shared
//! by every provider.
//!
//! Each [`Endpoint`] keeps its idle connections per *lane*: lane 0 for the shared runtime
//! (task workers, and the API when `API_THREADS=0`), one more for each API thread. An API
//! thread's calls use its own lane ([`use_lane`]), so a vendor connection is opened,
//! driven and reused on the thread that serves the request: no hand-off to another
//! thread's event loop and back per call.
//!
//! Vendor calls are the gateway's hot path, so they skip the general-purpose client the
//! tools and webhooks use: a request is built straight from the endpoint's parsed URI,
//! `Host` and pre-validated credential, the body is serialised once into the request, and
//! the pool is a stack of idle connections per endpoint and lane, found without a lookup:
//! a call takes the most recently used one, and the connection goes back when its answer
//! has been read to the end (one whose answer was abandoned is closed, as HTTP/1.1 asks).
//! A request that a reused connection could not send (the vendor closed it while it sat
//! idle) is sent once more on a new connection. Retries, attempt timeouts and circuit
//! breakers belong to the router; this client only connects (with a connect timeout),
//! sends and hands back the response.
//!
//! When the environment names an HTTP proxy ([`VendorProxy`]), vendor calls go
//! through the general-purpose client, which speaks to proxies, instead.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_platform_verifier::BuilderVerifierExt;
use tower::ServiceExt;

use super::error::{AiError, ErrorKind, parse_retry_after};
use crate::config::{Secret, VendorProxy};

/// How long a TCP (and TLS) connection to a vendor may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle pooled connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint and lane: enough for a busy gateway's concurrency,
/// so steady load never reconnects.
const MAX_IDLE_PER_HOST: usize = 256;
/// The most of a vendor's answer buffered while its head is parsed (hyper's default is
/// about 400 KiB); a body streams through whatever its size.
const MAX_BUFFER: usize = 64 * 1024;

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("digital-employee/", env!("CARGO_PKG_VERSION")));

/// The client that sends through `proxy`'s proxies; a proxy URL that does not parse is
/// an error naming the variable (its value is not repeated: it may hold a password).
fn proxied_client(proxy: &VendorProxy) -> anyhow::Result<reqwest::Client> {
    let no_proxy = proxy
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .tcp_nodelay(true);
    type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let proxies: [(&str, &Option<Secret>, MakeProxy); 3] = [
        ("HTTPS_PROXY", &proxy.https, |u| reqwest::Proxy::https(u)),
        ("HTTP_PROXY", &proxy.http, |u| reqwest::Proxy::http(u)),
        ("ALL_PROXY", &proxy.all, |u| reqwest::Proxy::all(u)),
    ];
    for (name, url, make) in proxies {
        if let Some(url) = url {
            let p = make(url.expose())
                .map_err(|_| anyhow::anyhow!("{name} is not a valid proxy URL"))?
                .no_proxy(no_proxy.clone());
            builder = builder.proxy(p);
        }
    }
    Ok(builder.build()?)
}

/// A vendor answer's body, read as it arrives; a broken connection is an error.
pub type VendorBody = UnsyncBoxBody<Bytes, AiError>;

/// A vendor answer: status, headers and a body still to be read.
pub type VendorResponse = Response<VendorBody>;

thread_local! {
    /// The connection pool this thread's vendor calls use (see the module docs).
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread's vendor calls use the pools of `lane` (an API thread calls it once
/// at its start; other threads stay on lane 0). A lane past the client's count wraps.
pub fn use_lane(lane: usize) {
    LANE.with(|l| l.set(lane));
}

/// The process's vendor HTTP client; cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct VendorClient {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    /// Straight to the vendor, on the endpoints' pooled connections.
    Direct(Arc<Direct>),
    /// Through the proxy the environment names.
    Proxied(reqwest::Client),
}

/// What direct calls connect with.
struct Direct {
    connector: HttpsConnector<HttpConnector>,
    /// Idle-connection stacks per endpoint: one per lane.
    lanes: usize,
}

fn broken() -> AiError {
    AiError::new(ErrorKind::Connection, "the connection to the vendor failed")
}

impl VendorClient {
    /// A client that speaks HTTP and HTTPS (TLS 1.2 and 1.3, certificates checked by
    /// the platform's verifier against the system's roots), through `proxy` when it names
    /// one, with `lanes` connection pools (at least one; the proxied client keeps one).
    pub fn new(proxy: &VendorProxy, lanes: usize) -> anyhow::Result<Self> {
        if proxy.any() {
            tracing::info!("vendor calls go through the HTTP proxy the environment names");
            return Ok(Self {
                transport: Transport::Proxied(proxied_client(proxy)?),
            });
        }
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self {
            transport: Transport::Direct(Arc::new(Direct {
                connector: https,
                lanes: lanes.max(1),
            })),
        })
    }

    /// POSTs `body` as JSON to `endpoint` with its credential, the current span's
    /// `traceparent` and `extra` headers. A non-2xx answer becomes the error its status
    /// classifies (with `Retry-After` and the vendor's message, truncated).
    pub async fn post_json(
        &self,
        endpoint: &Endpoint,
        body: &impl serde::Serialize,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<VendorResponse, AiError> {
        let body = to_json(body)?;
        let Some(target) = &endpoint.target else {
            return Err(AiError::new(
                ErrorKind::Connection,
                "the vendor URL is not a valid http(s) URL",
            ));
        };
        let mut headers = http::HeaderMap::with_capacity(6 + extra.len());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::USER_AGENT, USER_AGENT.clone());
        if let Some((name, value)) = &endpoint.credential {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(tp) = crate::telemetry::traces::current_traceparent()
            .and_then(|tp| HeaderValue::from_str(&tp).ok())
        {
            headers.insert(crate::telemetry::traces::TRACEPARENT, tp);
        }
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        let resp = match &self.transport {
            Transport::Direct(direct) => {
                headers.insert(header::HOST, target.host.clone());
                let mut req = Request::new(Full::new(Bytes::from(body)));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = target.origin.clone();
                *req.headers_mut() = headers;
                let home = Home {
                    stacks: endpoint.stacks(direct.lanes).clone(),
                    lane: LANE.with(Cell::get),
                };
                direct.send(home, &target.uri, req).await?
            }
            Transport::Proxied(client) => {
                let resp = client
                    .post(target.uri.to_string())
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| proxied_error(&e))?;
                Response::from(resp).map(|b| b.map_err(|_| broken()).boxed_unsync())
            }
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = parse_retry_after(resp.headers().get(header::RETRY_AFTER));
            let text = body_bytes(resp).await.unwrap_or_default();
            return Err(AiError::from_status(
                status,
                &String::from_utf8_lossy(&text),
                retry_after,
            ));
        }
        Ok(resp)
    }
}

/// Whether `e` or one of its causes is an I/O time-out.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn too_slow() -> AiError {
    AiError::new(ErrorKind::Timeout, "the vendor did not answer in time")
}

fn cannot_connect() -> AiError {
    AiError::new(ErrorKind::Connection, "cannot connect to the vendor")
}

/// What a failed connect is: a time-out, or a refused or failed connect.
fn connect_error(e: &(dyn std::error::Error + 'static)) -> AiError {
    if timed_out(e) {
        too_slow()
    } else {
        cannot_connect()
    }
}

/// What a failed exchange on an open connection is: a time-out, or a broken connection.
fn send_error(e: &hyper::Error) -> AiError {
    if timed_out(e) { too_slow() } else { broken() }
}

/// [`send_error`] for the proxied transport.
fn proxied_error(e: &reqwest::Error) -> AiError {
    if e.is_timeout() {
        too_slow()
    } else if e.is_connect() {
        cannot_connect()
    } else {
        broken()
    }
}

/// Where a provider POSTs and the credential it sends, both built once at start, and the
/// idle connections to it.
pub struct Endpoint {
    /// `None` when the configured URL is not an absolute http(s) URL; a call then fails
    /// as a connection error naming it.
    target: Option<Target>,
    /// Marked sensitive (kept out of `Debug`); `None` when there is no key or it is not a
    /// valid header value (logged by header name; the vendor's 401 then names the
    /// problem).
    credential: Option<(HeaderName, HeaderValue)>,
    /// Idle connections, a stack per lane; made at the first call, when the client's
    /// lanes are known.
    idle: OnceLock<Arc<[IdleStack]>>,
}

/// An endpoint's URL as a request needs it.
struct Target {
    /// Absolute: what is connected to (and what a proxy is asked for).
    uri: Uri,
    /// The path and query: what the request line names.
    origin: Uri,
    /// `host[:port]`, the port only when not the scheme's default.
    host: HeaderValue,
}

impl Target {
    fn new(uri: Uri) -> Option<Target> {
        let host = uri.host()?;
        let host = match (uri.port_u16(), uri.scheme_str()) {
            (None, _) | (Some(80), Some("http")) | (Some(443), Some("https")) => {
                HeaderValue::from_str(host)
            }
            (Some(port), _) => HeaderValue::from_str(&format!("{host}:{port}")),
        }
        .ok()?;
        let origin = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .parse()
            .ok()?;
        Some(Target { uri, origin, host })
    }
}

impl Endpoint {
    /// `credential`: the header name and its value, if a key is to be sent.
    pub fn new(url: &str, credential: Option<(&'static str, &str)>) -> Endpoint {
        let target = url
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .and_then(Target::new);
        if target.is_none() {
            tracing::warn!(
                url = %crate::auth::redact::redact(url).0,
                "a vendor URL is not an absolute http(s) URL; calls to it fail"
            );
        }
        Endpoint {
            target,
            credential: credential.and_then(|(name, value)| secret_header(name, value)),
            idle: OnceLock::new(),
        }
    }

    fn stacks(&self, lanes: usize) -> &Arc<[IdleStack]> {
        self.idle
            .get_or_init(|| (0..lanes).map(|_| IdleStack::default()).collect())
    }
}

/// A vendor connection: hyper's sender; the connection itself is driven by a task on the
/// event loop that opened it, and closes when the sender is dropped.
type Sender = http1::SendRequest<Full<Bytes>>;

/// Idle connections of one endpoint on one lane, the most recently used last.
type IdleStack = Mutex<Vec<Idle>>;

struct Idle {
    sender: Sender,
    since: Instant,
}

fn lock(stack: &IdleStack) -> MutexGuard<'_, Vec<Idle>> {
    // A panic while the stack was held leaves it consistent: a push or a pop.
    stack.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The idle-connection stack a call's connection comes from and goes back to.
struct Home {
    stacks: Arc<[IdleStack]>,
    lane: usize,
}

impl Home {
    fn stack(&self) -> &IdleStack {
        &self.stacks[self.lane % self.stacks.len()]
    }

    /// The most recently used idle connection still open, once it is ready for a
    /// request (it may still be finishing the previous answer).
    async fn checkout(&self) -> Option<Sender> {
        loop {
            let mut sender = self.pop()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn pop(&self) -> Option<Sender> {
        let mut idle = lock(self.stack());
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            if now.duration_since(c.since) >= IDLE_TIMEOUT {
                // The ones below went idle earlier still.
                idle.clear();
                return None;
            }
            if !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    /// Puts a connection whose answer was read to the end back for the next call.
    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = lock(self.stack());
        let stale = |c: &Idle| now.duration_since(c.since) >= IDLE_TIMEOUT;
        if idle.first().is_some_and(stale) {
            idle.retain(|c| !stale(c));
        }
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(Idle { sender, since: now });
        }
    }
}

impl Direct {
    /// Sends `req` on an idle connection of `home`'s, or on a new one.
    async fn send(
        &self,
        home: Home,
        uri: &Uri,
        mut req: Request<Full<Bytes>>,
    ) -> Result<VendorResponse, AiError> {
        let mut idle = home.checkout().await;
        loop {
            let reused = idle.is_some();
            let mut sender = match idle.take() {
                Some(s) => s,
                None => self.connect(uri).await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|body| {
                        Returning {
                            body,
                            home: Some((home, sender)),
                        }
                        .boxed_unsync()
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the vendor closed the idle connection as it was taken.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(send_error(e.error())),
                },
            }
        }
    }

    /// Opens a connection (TCP, and TLS for https) and starts driving it on this event
    /// loop.
    async fn connect(&self, uri: &Uri) -> Result<Sender, AiError> {
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(|e| connect_error(&*e))?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(MAX_BUFFER)
            .handshake(io)
            .await
            .map_err(|e| connect_error(&e))?;
        tokio::spawn(async move {
            // A failure here is also the failure of the request in flight, told there.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "vendor connection closed with an error");
            }
        });
        Ok(sender)
    }
}

/// A vendor answer's body that puts its connection back in the pool once read to the
/// end. Dropped before that, it drops the connection (hyper closes it: the rest of the
/// answer would otherwise be read as the next one's).
struct Returning {
    body: Incoming,
    home: Option<(Home, Sender)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((home, sender)) = self.home.take() {
            home.put(sender);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = AiError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AiError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.give_back(),
            Some(Ok(_)) if this.body.is_end_stream() => this.give_back(),
            Some(Err(_)) => this.home = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(|_| broken())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn secret_header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let Ok(mut v) = HeaderValue::from_str(value) else {
        tracing::warn!(
            header = name,
            "the configured vendor key is not a valid HTTP header value; it is not sent"
        );
        return None;
    };
    v.set_sensitive(true);
    Some((HeaderName::from_static(name), v))
}

/// Serialises a request body; a value that does not serialise is the caller's bug, told
/// as a bad request rather than sent.
fn to_json(body: &impl serde::Serialize) -> Result<Vec<u8>, AiError> {
    // Room for a typical request, so the buffer grows rarely.
    let mut buf = Vec::with_capacity(1024);
    serde_json::to_writer(&mut buf, body)
        .map(|()| buf)
        .map_err(|e| {
            AiError::new(
                ErrorKind::BadRequest,
                format!("the request could not be encoded: {e}"),
            )
        })
}

/// The whole body of a response.
async fn body_bytes(resp: VendorResponse) -> Result<Bytes, AiError> {
    resp.into_body().collect().await.map(|b| b.to_bytes())
}

/// Reads a whole JSON response body; unreadable JSON is `Malformed` (retryable).
pub async fn json_body<T: serde::de::DeserializeOwned>(resp: VendorResponse) -> Result<T, AiError> {
    let bytes = body_bytes(resp).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AiError::new(ErrorKind::Malformed, format!("invalid response JSON: {e}")))
}

/// The body as a stream of chunks, as they arrive; a broken connection is an error item.
pub fn body_stream(
    resp: VendorResponse,
) -> impl Stream<Item = Result<Bytes, AiError>> + Send + 'static {
    BodyDataStream::new(resp.into_body())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::{Value, json};

    use super::*;

    /// A vendor on a free port that echoes every POST's body, counting the connections it
    /// accepted. It answers 400 unless the request line is in origin form and `Host`
    /// names it; with `close`, every answer says `Connection: close`.
    async fn echo_vendor(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let host = addr.to_string();
                let echo = service_fn(move |req: Request<Incoming>| {
                    let host = host.clone();
                    async move {
                        let well_formed = req.uri().authority().is_none()
                            && req.uri().path() == "/v1/chat"
                            && req
                                .headers()
                                .get(header::HOST)
                                .and_then(|h| h.to_str().ok())
                                == Some(host.as_str());
                        let body = req.into_body().collect().await?.to_bytes();
                        let mut resp = Response::new(Full::new(body));
                        if !well_formed {
                            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
                        }
                        if close {
                            resp.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), echo),
                );
            }
        });
        (format!("http://{addr}/v1/chat"), accepted)
    }

    fn client() -> VendorClient {
        VendorClient::new(&VendorProxy::default(), 2).unwrap()
    }

    async fn echo(client: &VendorClient, endpoint: &Endpoint, n: u64) -> Value {
        let resp = client
            .post_json(endpoint, &json!({ "n": n }), &[])
            .await
            .unwrap();
        json_body::<Value>(resp).await.unwrap()
    }

    #[tokio::test]
    async fn calls_in_turn_share_one_connection() {
        let (url, accepted) = echo_vendor(false).await;
        let (client, endpoint) = (client(), Endpoint::new(&url, None));
        for n in 0..5 {
            assert_eq!(echo(&client, &endpoint, n).await, json!({ "n": n }));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_calls_open_connections_and_then_reuse_them() {
        let (url, accepted) = echo_vendor(false).await;
        let (client, endpoint) = (client(), Endpoint::new(&url, None));
        let calls = (0..4).map(|n| echo(&client, &endpoint, n));
        let answers = futures_util::future::join_all(calls).await;
        assert_eq!(
            answers,
            (0..4).map(|n| json!({ "n": n })).collect::<Vec<_>>()
        );
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=4).contains(&opened), "{opened} connections");
        for n in 0..4 {
            assert_eq!(echo(&client, &endpoint, n).await, json!({ "n": n }));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), opened, "no new connection");
    }

    #[tokio::test]
    async fn a_connection_the_vendor_closes_is_not_reused() {
        let (url, accepted) = echo_vendor(true).await;
        let (client, endpoint) = (client(), Endpoint::new(&url, None));
        for n in 0..3 {
            assert_eq!(echo(&client, &endpoint, n).await, json!({ "n": n }));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_answer_left_unread_closes_its_connection() {
        let (url, accepted) = echo_vendor(false).await;
        let (client, endpoint) = (client(), Endpoint::new(&url, None));
        let unread = client
            .post_json(&endpoint, &json!({ "n": 0 }), &[])
            .await
            .unwrap();
        drop(unread);
        assert_eq!(echo(&client, &endpoint, 1).await, json!({ "n": 1 }));
        assert_eq!(echo(&client, &endpoint, 2).await, json!({ "n": 2 }));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn lanes_keep_connections_apart() {
        let (url, accepted) = echo_vendor(false).await;
        let (client, endpoint) = (client(), Endpoint::new(&url, None));
        assert_eq!(echo(&client, &endpoint, 0).await, json!({ "n": 0 }));
        use_lane(1);
        assert_eq!(echo(&client, &endpoint, 1).await, json!({ "n": 1 }));
        assert_eq!(echo(&client, &endpoint, 2).await, json!({ "n": 2 }));
        use_lane(0);
        assert_eq!(echo(&client, &endpoint, 3).await, json!({ "n": 3 }));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_vendor_that_is_not_listening_is_a_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = Endpoint::new(&format!("http://{addr}/v1/chat"), None);
        let err = client()
            .post_json(&endpoint, &json!({}), &[])
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Connection, "{err:?}");
    }

    #[test]
    fn the_request_line_and_host_come_from_the_url() {
        let t = Target::new("https://api.example.com/v1/chat?x=1".parse().unwrap()).unwrap();
        assert_eq!(
            (t.origin.to_string(), t.host.to_str().unwrap()),
            ("/v1/chat?x=1".into(), "api.example.com")
        );
        let t = Target::new("http://127.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(
            (t.origin.to_string(), t.host.to_str().unwrap()),
            ("/".into(), "127.0.0.1:8080")
        );
        let t = Target::new("http://[::1]:80/v1".parse().unwrap()).unwrap();
        assert_eq!(t.host.to_str().unwrap(), "[::1]");
        let t = Target::new("https://h:443/v1".parse().unwrap()).unwrap();
        assert_eq!(t.host.to_str().unwrap(), "h");
    }
}
