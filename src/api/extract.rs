//! Our own extractors, so malformed input gets our error shape rather than axum's text.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::state::AppState;

/// A JSON body: 415 without a JSON content type, 413 over the body limit, 400 when the
/// bytes are not JSON, 422 (naming the field) when the JSON has the wrong shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.config.max_body_bytes)
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// How much room a gateway answer's JSON gets before it is written: enough for a typical
/// completion, so the buffer grows rarely.
const ANSWER_CAPACITY: usize = 1024;
/// Headers a gateway answer carries on its way out.
const ANSWER_HEADERS: usize = 12;

/// `value` as a `200 application/json` response. The gateway's answers are written with
/// this rather than axum's `Json`: serde_json then writes straight into one buffer sized
/// for an answer, not piece by piece through a growing writer.
pub fn json_response<T: Serialize>(value: &T) -> Response {
    let mut buf = Vec::with_capacity(ANSWER_CAPACITY);
    json_bytes_response(serde_json::to_writer(&mut buf, value).map(|()| buf))
}

/// JSON already written (or the error of writing it) as a `200 application/json`
/// response; an error is a 500 that does not say why.
pub fn json_bytes_response(json: serde_json::Result<Vec<u8>>) -> Response {
    let buf = match json {
        Ok(buf) => buf,
        Err(e) => {
            return ApiError::Internal(anyhow::Error::new(e).context("cannot encode the answer"))
                .into_response();
        }
    };
    let mut resp = Response::new(Body::from(buf));
    // Room for the headers the gateway and its middleware add (the model, the cost, the
    // request id, the rate limit's), so the map is not regrown on the way out.
    let headers = resp.headers_mut();
    headers.reserve(ANSWER_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a 422 says of a text holding U+0000: both stores would have to treat it apart
/// (PostgreSQL refuses it in `text` and `jsonb`), so the API refuses it everywhere.
pub const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Parses JSON, classifying syntax errors (400) apart from shape errors (422). Text
/// holding the NUL character, anywhere in the document, is a 422 naming its field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The path of a failure is tracked only when there is one: a body that parses is read
    // once, without the tracking; one that does not is read again to name the field.
    match serde_json::from_slice::<T>(bytes) {
        Ok(_) if has_escaped_nul(bytes) => return Err(nul_error(bytes)),
        Ok(v) => return Ok(v),
        Err(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(_) if has_escaped_nul(bytes) => Err(nul_error(bytes)),
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let field = if path == "." {
                        missing_field(&inner.to_string()).unwrap_or_else(|| "body".into())
                    } else {
                        path
                    };
                    Err(ApiError::validation(field, strip_position(&inner)))
                }
                _ => Err(ApiError::BadRequest(format!(
                    "request body is not valid JSON: {inner}"
                ))),
            }
        }
    }
}

/// Whether the JSON text escapes a NUL (`\u0000`). A raw NUL byte is already a syntax
/// error, so the escape is the only way one gets in; this scan costs nothing on the
/// common path, and only a hit pays for finding the field.
fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1..i + 6) == Some(b"u0000".as_slice()) {
                return true;
            }
            // Skip the escaped character, so `\\u0000` (a backslash, then text) is not one.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// The 422 for a document holding a NUL, naming the first field (dotted path) with one.
fn nul_error(bytes: &[u8]) -> ApiError {
    let field = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| nul_path(&v, String::new()))
        .unwrap_or_else(|| "body".into());
    ApiError::validation(field, NUL_MESSAGE)
}

fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => {
            Some(if path.is_empty() { "body".into() } else { path })
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(if path.is_empty() {
                    "body".into()
                } else {
                    path.clone()
                })
            } else {
                nul_path(v, join(k))
            }
        }),
        _ => None,
    }
}

/// serde reports a missing field at the parent path; name the field itself.
fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// serde_json appends " at line L column C", which helps nobody reading a 422.
fn strip_position(err: &serde_json::Error) -> String {
    let s = err.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn is_json(value: Option<&header::HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A query string parsed into `T`, with 422 naming the parameter on bad values.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(query)?;
        Ok(ApiQuery(de))
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if let Some((name, _)) = form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
    {
        let field = if name.contains('\0') {
            "query".to_string()
        } else {
            name.into_owned()
        };
        return Err(ApiError::validation(field, NUL_MESSAGE));
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." {
            missing_field(&inner.to_string()).unwrap_or_else(|| "query".into())
        } else {
            path
        };
        ApiError::validation(field, inner.to_string())
    })
}

/// A single path parameter (an id or a key), with our error shape for a parameter that
/// does not decode as UTF-8 and a 422 for one holding the NUL character.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rej| {
                ApiError::BadRequest(format!("bad path parameter: {}", rej.body_text()))
            })?;
        if value.contains('\0') {
            return Err(ApiError::validation("id", NUL_MESSAGE));
        }
        Ok(ApiPath(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: String,
        n: Option<u32>,
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_name_the_field() {
        let e = parse_json::<T>(b"{not json").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = parse_json::<T>(b"{}").unwrap_err();
        assert!(matches!(e, ApiError::Validation { ref field, .. } if field == "name"));
        let e = parse_json::<T>(br#"{"name":"a","n":"x"}"#).unwrap_err();
        assert!(matches!(e, ApiError::Validation { ref field, .. } if field == "n"));
        let e = parse_json::<T>(br#"{"name":"a","zzz":1}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn nul_characters_are_422_naming_the_field() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct B {
            name: String,
            meta: Option<serde_json::Value>,
        }
        let e = parse_json::<B>(br#"{"name":"a\u0000b"}"#).err().unwrap();
        assert!(
            matches!(e, ApiError::Validation { ref field, .. } if field == "name"),
            "{e:?}"
        );
        let e = parse_json::<B>(br#"{"name":"a","meta":{"x":[1,"\u0000"]}}"#)
            .err()
            .unwrap();
        assert!(
            matches!(e, ApiError::Validation { ref field, .. } if field == "meta.x[1]"),
            "{e:?}"
        );
        let e = parse_json::<B>(br#"{"name":"a","meta":{"k\u0000":1}}"#)
            .err()
            .unwrap();
        assert!(
            matches!(e, ApiError::Validation { ref field, .. } if field == "meta"),
            "{e:?}"
        );
        // An escaped backslash followed by the text u0000 is no NUL.
        let b = parse_json::<B>(br#"{"name":"a\\u0000"}"#).unwrap();
        assert_eq!(b.name, "a\\u0000");
        assert!(!has_escaped_nul(br#"{"a":"\\\\u0000"}"#));
        assert!(has_escaped_nul(br#"{"a":"\\\u0000"}"#));
    }

    #[test]
    fn content_types() {
        let v = |s: &'static str| header::HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("application/json; charset=utf-8"))));
        assert!(is_json(Some(&v("application/merge-patch+json"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(None));
    }

    #[test]
    fn queries_decode_and_name_bad_parameters() {
        #[derive(serde::Deserialize)]
        struct Q {
            limit: Option<u32>,
            cursor: Option<String>,
        }
        let q: Q = serde_urlencoded_de("limit=5&cursor=a%2Bb").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.cursor.as_deref(), Some("a+b"));
        let e = serde_urlencoded_de::<Q>("limit=-1").err().unwrap();
        assert!(matches!(e, ApiError::Validation { ref field, .. } if field == "limit"));
        let e = serde_urlencoded_de::<Q>("cursor=a%00b").err().unwrap();
        assert!(matches!(e, ApiError::Validation { ref field, .. } if field == "cursor"));
    }
}
