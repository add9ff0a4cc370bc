//! The console's own layer, inside the session gate: a strict Content-Security-Policy
//! and `no-store` on every page, and the CSRF check of every state-changing request.
//!
//! A request other than GET/HEAD must carry the session's CSRF token, in the
//! `X-CSRF-Token` header (htmx sends it) or the `_csrf` form field; otherwise 403 and
//! nothing runs. The sign-in form has no session yet: it carries a one-time token that
//! must equal the `de_signin` cookie set with the form (double submit), so another site
//! cannot sign a browser in to its own key either.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::view::PageError;
use crate::auth::session::{Session, cookie_value, csrf_matches};

/// No script but our own files, no inline script or style, no framing, forms only to us.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Cookie holding the sign-in form's one-time token.
pub const SIGNIN_COOKIE: &str = "de_signin";
/// Form field and header carrying the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
const CSRF_HEADER: &str = "x-csrf-token";

pub async fn layer(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let mut resp = if safe {
        next.run(req).await
    } else {
        match check_csrf(req).await {
            Ok(req) => next.run(req).await,
            Err(resp) => resp,
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The request back (its body re-attached) when its CSRF token is right; else the
/// refusal.
async fn check_csrf(req: Request) -> Result<Request, Response> {
    let signin = req.uri().path() == "/signin";
    let expected = if signin {
        let cookies = req.headers().get_all(header::COOKIE);
        cookie_value(
            cookies.iter().filter_map(|v| v.to_str().ok()),
            SIGNIN_COOKIE,
        )
        .map(str::to_owned)
    } else {
        match req.extensions().get::<Session>() {
            Some(s) => Some(s.csrf.clone()),
            None => return Err(PageError::SignedOut.into_response()),
        }
    };
    let header_token = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    // The body limit layer outside caps what this reads.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => return Err(StatusCode::PAYLOAD_TOO_LARGE.into_response()),
    };
    let form_token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned());
    let presented = header_token.or(form_token).unwrap_or_default();
    match expected {
        Some(expected) if csrf_matches(&expected, &presented) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => {
            tracing::info!(path = %parts.uri.path(), "console request refused: missing or wrong CSRF token");
            Err(PageError::Forbidden(
                "this form has expired or was sent from another site (CSRF token missing or \
                 wrong); reload the page and try again"
                    .into(),
            )
            .into_response())
        }
    }
}
