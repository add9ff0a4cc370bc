//! The console's static files, embedded in the binary and served under names carrying
//! a hash of their content (`console.3f9a0c1b2d4e.css`), so they can be cached for a
//! year: a changed file gets a new name, and pages always name the current one.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    /// The name pages ask for.
    logical: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        logical: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/console.css"),
    },
    Asset {
        logical: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/console.js"),
    },
    Asset {
        logical: "htmx.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/htmx-2.0.11.min.js"),
    },
];

/// `(served name, asset)`: the logical name with the first 12 hex digits of the
/// content's SHA-256 before the extension.
static SERVED: LazyLock<Vec<(String, &'static Asset)>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|a| {
            let hash = hex::encode(&Sha256::digest(a.bytes)[..6]);
            let name = match a.logical.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                None => format!("{}.{hash}", a.logical),
            };
            (name, a)
        })
        .collect()
});

/// The URL of an asset by its logical name (`console.css`).
pub fn url(logical: &str) -> String {
    SERVED
        .iter()
        .find(|(_, a)| a.logical == logical)
        .map(|(name, _)| format!("/assets/{name}"))
        .unwrap_or_default()
}

/// Total bytes of JavaScript shipped (the console's budget is 100 KB).
pub fn script_bytes() -> usize {
    FILES
        .iter()
        .filter(|a| a.content_type.starts_with("text/javascript"))
        .map(|a| a.bytes.len())
        .sum()
}

/// `GET /assets/{file}`: the file under its hashed name, cacheable for a year.
pub async fn serve(Path(file): Path<String>) -> Response {
    match SERVED.iter().find(|(name, _)| *name == file) {
        Some((_, a)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            a.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash_and_scripts_fit_the_budget() {
        let css = url("console.css");
        assert!(
            css.starts_with("/assets/console.") && css.ends_with(".css"),
            "{css}"
        );
        assert_eq!(css.len(), "/assets/console..css".len() + 12);
        assert!(url("nope.js").is_empty());
        assert!(
            script_bytes() <= 100 * 1024,
            "{} bytes of JS",
            script_bytes()
        );
    }
}
