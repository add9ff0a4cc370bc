//! Vendor calls honour the forward proxy the environment names (`HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`, read into `config::VendorProxy`): through it, the answer comes
//! back whole; hosts `NO_PROXY` lists, and a client without a proxy, go straight to the
//! vendor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use digital_employee::ai::client::VendorClient;
use digital_employee::ai::openai::OpenAiProvider;
use digital_employee::ai::provider::Provider;
use digital_employee::ai::sandbox::SandboxEngine;
use digital_employee::ai::types::{ChatRequest, Message};
use digital_employee::config::{Secret, VendorProxy};

const KEY: &str = "sk-sandbox-proxy";

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn vendor_calls_go_through_the_proxy_the_environment_names() {
    let vendor = serve(digital_employee::ai::sandbox_server::router(
        Arc::new(SandboxEngine::default()),
        Some(KEY.into()),
    ))
    .await;

    // A forward proxy: takes absolute-form requests, counts them and passes them on.
    let forwarded = Arc::new(AtomicUsize::new(0));
    let seen = forwarded.clone();
    let direct = reqwest::Client::builder().no_proxy().build().unwrap();
    let proxy = serve(axum::Router::new().fallback(move |req: Request| {
        let (seen, direct) = (seen.clone(), direct.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let answer = direct
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let content_type = answer.headers().get("content-type").cloned();
            let bytes = answer.bytes().await.unwrap();
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            if let Some(v) = content_type {
                resp.headers_mut().insert("content-type", v);
            }
            resp
        }
    }))
    .await;

    let call = |settings: VendorProxy| {
        let vendor = vendor.clone();
        async move {
            let provider = OpenAiProvider::new(
                "openai",
                &format!("{vendor}/v1"),
                Secret::new(KEY),
                None,
                VendorClient::new(&settings, 1).unwrap(),
            );
            provider
                .chat(&ChatRequest::new(
                    "gpt-4o-mini",
                    vec![Message::user("say hello")],
                ))
                .await
                .unwrap()
        }
    };

    // HTTP_PROXY: the call goes through the proxy and its answer comes back whole.
    let answer = call(VendorProxy {
        http: Some(Secret::new(proxy.clone())),
        ..Default::default()
    })
    .await;
    assert!(
        answer.content.as_deref().is_some_and(|t| !t.is_empty()),
        "the vendor's answer came back through the proxy: {answer:?}"
    );
    assert_eq!(
        forwarded.load(Ordering::SeqCst),
        1,
        "one request went through the proxy"
    );

    // NO_PROXY naming the vendor's host: straight to the vendor.
    call(VendorProxy {
        all: Some(Secret::new(proxy.clone())),
        no_proxy: Some("127.0.0.1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        forwarded.load(Ordering::SeqCst),
        1,
        "NO_PROXY hosts bypass the proxy"
    );

    // No proxy: the direct client.
    call(VendorProxy::default()).await;
    assert_eq!(forwarded.load(Ordering::SeqCst), 1);

    // A proxy URL that does not parse is refused by name, its value not repeated.
    let err = VendorClient::new(
        &VendorProxy {
            https: Some(Secret::new("http://user:s3cret@[::1")),
            ..Default::default()
        },
        1,
    )
    .err()
    .expect("a malformed proxy URL is refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("HTTPS_PROXY") && !text.contains("s3cret"),
        "{text}"
    );
}
