//! Cursor pagination shared by every list endpoint: newest first, by time-ordered id.

use base64::Engine;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The page size a list request asked for: 20 by default, 1–100, else 422 naming `limit`.
pub fn limit(requested: Option<u32>) -> ApiResult<u32> {
    let limit = requested.unwrap_or(20);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation("limit", "must be between 1 and 100"))
    }
}

/// The opaque `next_cursor` of a page whose last row has `id`.
pub fn encode(id: Uuid) -> String {
    B64.encode(id.as_bytes())
}

/// The id a `cursor` parameter stands for; 422 naming `cursor` if this API did not make it.
pub fn decode(cursor: Option<&str>) -> ApiResult<Option<Uuid>> {
    cursor
        .map(|c| {
            B64.decode(c)
                .ok()
                .and_then(|b| Uuid::from_slice(&b).ok())
                .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode(Some(&encode(id))).unwrap(), Some(id));
        assert_eq!(decode(None).unwrap(), None);
        assert!(decode(Some("not-a-cursor!")).is_err());
        assert!(decode(Some(&B64.encode([1u8, 2, 3]))).is_err());
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(limit(None).unwrap(), 20);
        assert_eq!(limit(Some(100)).unwrap(), 100);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
    }
}
