//! The HTTP client of vendor calls: hyper's pooled HTTP/1.1 client over rustls (the
//! platform's certificate verifier), shared by every provider.
//!
//! The client keeps one connection pool per *lane*: lane 0 for the shared runtime (task
//! workers, and the API when `API_THREADS=0`), one more for each API thread. An API
//! thread's calls use its own lane ([`use_lane`]), so a vendor connection is opened,
//! driven and reused on the thread that serves the request: no hand-off to another
//! thread's event loop and back per call.
//!
//! Vendor calls are the gateway's hot path, so they skip the general-purpose client the
//! tools and webhooks use: a request is built straight from the endpoint's parsed URI and
//! pre-validated credential, the body is serialised once into the request, and the
//! connection's buffers are hyper's own, sized here. Retries, attempt timeouts and
//! circuit breakers belong to the router; this client only connects (with a connect
//! timeout), sends and hands back the response.
//!
//! When the environment names an HTTP proxy ([`VendorProxy`]), vendor calls go
//! through the general-purpose client, which speaks to proxies, instead.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

use super::error::{AiError, ErrorKind, parse_retry_after};
use crate::config::{Secret, VendorProxy};

/// How long a TCP (and TLS) connection to a vendor may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle pooled connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per vendor host: enough for a busy gateway's concurrency, so
/// steady load never reconnects.
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

type DirectClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Clone)]
enum Transport {
    /// Straight to the vendor: one client (and so one pool) per lane.
    Direct(Arc<[DirectClient]>),
    /// Through the proxy the environment names.
    Proxied(reqwest::Client),
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
        let clients: Vec<DirectClient> = (0..lanes.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(IDLE_TIMEOUT)
                    .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                    .http1_max_buf_size(MAX_BUFFER)
                    .build(https.clone())
            })
            .collect();
        Ok(Self {
            transport: Transport::Direct(clients.into()),
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
        let Some(uri) = &endpoint.uri else {
            return Err(AiError::new(
                ErrorKind::Connection,
                "the vendor URL is not a valid http(s) URL",
            ));
        };
        let mut headers = http::HeaderMap::with_capacity(5 + extra.len());
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
            Transport::Direct(clients) => {
                let client = &clients[LANE.with(Cell::get) % clients.len()];
                let mut req = Request::new(Full::new(Bytes::from(body)));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = uri.clone();
                *req.headers_mut() = headers;
                client
                    .request(req)
                    .await
                    .map_err(|e| send_error(&e))?
                    .map(|b| b.map_err(|_| broken()).boxed_unsync())
            }
            Transport::Proxied(client) => {
                let resp = client
                    .post(uri.to_string())
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

/// What a failed send is, by its cause: a connect that timed out, a refused or failed
/// connect, or a connection that broke during the exchange.
fn send_error(e: &hyper_util::client::legacy::Error) -> AiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return AiError::new(ErrorKind::Timeout, "the vendor did not answer in time");
        }
        cause = c.source();
    }
    if e.is_connect() {
        AiError::new(ErrorKind::Connection, "cannot connect to the vendor")
    } else {
        broken()
    }
}

/// [`send_error`] for the proxied transport.
fn proxied_error(e: &reqwest::Error) -> AiError {
    if e.is_timeout() {
        AiError::new(ErrorKind::Timeout, "the vendor did not answer in time")
    } else if e.is_connect() {
        AiError::new(ErrorKind::Connection, "cannot connect to the vendor")
    } else {
        broken()
    }
}

/// Where a provider POSTs and the credential it sends, both built once at start.
pub struct Endpoint {
    /// `None` when the configured URL is not an absolute http(s) URL; a call then fails
    /// as a connection error naming it.
    uri: Option<Uri>,
    /// Marked sensitive (kept out of `Debug`); `None` when there is no key or it is not a
    /// valid header value (logged by header name; the vendor's 401 then names the
    /// problem).
    credential: Option<(HeaderName, HeaderValue)>,
}

impl Endpoint {
    /// `credential`: the header name and its value, if a key is to be sent.
    pub fn new(url: &str, credential: Option<(&'static str, &str)>) -> Endpoint {
        let uri = url
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if uri.is_none() {
            tracing::warn!(
                url = %crate::auth::redact::redact(url).0,
                "a vendor URL is not an absolute http(s) URL; calls to it fail"
            );
        }
        Endpoint {
            uri,
            credential: credential.and_then(|(name, value)| secret_header(name, value)),
        }
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
    serde_json::to_vec(body).map_err(|e| {
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
