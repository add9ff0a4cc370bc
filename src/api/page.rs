//! Cursor pagination shared by every list endpoint: newest first, by time-ordered id.
//!
//! Owns the query parameters of a plain list ([`ListParams`]), their checks
//! ([`window`]), the opaque cursor, and the body of every page ([`Page`]).

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use crate::store;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One page of a list. Each route names its item type (`Page<EmployeeView>`, …), so the
/// document has one `Page_<Item>` schema per item type, its `data` referring to the item's
/// own schema.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(description = "A page of a list, newest first.")]
pub struct Page<T> {
    #[schema(schema_with = items::<T>)]
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The schema of `data`: an array of references to the item's own schema. utoipa's
/// generic schemas would copy the item schema into every page; a reference keeps one
/// definition of each view in the document. The item schema itself is registered by the
/// routes that answer a single item (`GET /v1/<kind>/{id}`); a test checks it is there.
fn items<T: ToSchema>() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name(T::name()))
        .build()
}

/// A store page as the API shows it: each row as its view, the cursor made opaque.
impl<T, V: From<T>> From<store::Page<T>> for Page<V> {
    fn from(page: store::Page<T>) -> Self {
        Self {
            data: page.items.into_iter().map(V::from).collect(),
            next_cursor: page.next_cursor.map(encode),
        }
    }
}

/// The query of a list that takes nothing but the page it wants.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1–100; default 20.
    #[serde(default, deserialize_with = "crate::ai::num::optional")]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    /// The checked page this request asks for.
    pub fn window(&self) -> ApiResult<Window> {
        window(self.limit, self.cursor.as_deref())
    }
}

/// The page a list request asks for, checked: at most `limit` rows older than `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The id of the last row of the previous page; `None` for the first page.
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// Checks `limit` first, then `cursor`, so a request wrong in both names `limit`.
pub fn window(limit: Option<u32>, cursor: Option<&str>) -> ApiResult<Window> {
    let limit = self::limit(limit)?;
    let before = decode(cursor)?;
    Ok(Window { before, limit })
}

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

    #[test]
    fn a_window_names_limit_before_cursor() {
        let id = Uuid::now_v7();
        let w = window(Some(5), Some(&encode(id))).unwrap();
        assert_eq!(
            w,
            Window {
                before: Some(id),
                limit: 5
            }
        );
        match window(Some(0), Some("garbage!")) {
            Err(ApiError::Validation { field, .. }) => assert_eq!(field, "limit"),
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn a_page_shows_views_and_an_opaque_cursor() {
        let last = Uuid::now_v7();
        let page: Page<i64> = store::Page {
            items: vec![1_i32, 2],
            next_cursor: Some(last),
        }
        .into();
        assert_eq!(page.data, [1, 2]);
        assert_eq!(decode(page.next_cursor.as_deref()).unwrap(), Some(last));
        let json = serde_json::to_value(Page::<i64> {
            data: Vec::new(),
            next_cursor: None,
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"data": []}));
    }

    #[test]
    fn each_list_route_documents_a_page_of_its_own_view() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::api::openapi::ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (path, view) in [
            ("/v1/employees", "EmployeeView"),
            ("/v1/schedules", "ScheduleView"),
            ("/v1/tools", "ToolView"),
            ("/v1/keys", "KeyView"),
            ("/v1/tenants", "TenantView"),
            ("/v1/tasks", "TaskView"),
        ] {
            let page = format!("Page_{view}");
            let body =
                &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"];
            assert_eq!(
                body["schema"]["$ref"],
                format!("#/components/schemas/{page}"),
                "{path}"
            );
            let data = &schemas[page.as_str()]["properties"]["data"];
            assert_eq!(data["type"], "array", "{page}");
            assert_eq!(
                data["items"]["$ref"],
                format!("#/components/schemas/{view}")
            );
            assert!(schemas[view].is_object(), "{view} is registered");
            assert_eq!(
                schemas[page.as_str()]["required"],
                serde_json::json!(["data"])
            );
        }
    }
}
