//! What the handlers of the per-tenant resources (employees, schedules, tools, keys,
//! tenants) share: reading the `{id}` of a path, the 404 of an id that names nothing the
//! caller may see, and the get / list / delete flows around one store call.
//!
//! The `#[utoipa::path]` annotations stay on each handler: they are the API contract.

use std::future::Future;

use axum::Json;
use axum::http::StatusCode;
use uuid::Uuid;

use super::Caller;
use super::error::{ApiError, ApiResult};
use super::page::{ListParams, Page, Window};
use crate::auth::Scope;
use crate::store::{self, StoreError, StoreResult};

/// One kind of resource, known to callers by the message of its 404.
///
/// An id that is not a UUID, an id of nothing, and an id of another tenant's resource
/// all answer the same 404, so a caller learns nothing about what it may not see.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    missing: &'static str,
}

/// The resource a request on `/v1/<kind>/{id}` addresses: the tenant it acts in and the
/// id from its path.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub tenant: Uuid,
    pub id: Uuid,
}

impl Resource {
    /// A kind whose 404 says `missing` (e.g. "no such tool").
    pub const fn new(missing: &'static str) -> Self {
        Self { missing }
    }

    /// The 404 of this kind.
    pub fn missing(self) -> ApiError {
        ApiError::NotFound(self.missing.into())
    }

    /// A store error, `NotFound` answered as this kind's 404.
    pub fn error(self, e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => self.missing(),
            other => other.into(),
        }
    }

    /// [`Resource::error`] for `map_err`.
    pub fn not_found(self) -> impl Fn(StoreError) -> ApiError + Copy {
        move |e| self.error(e)
    }

    /// The `{id}` of a path; one that is not a UUID cannot name anything: 404.
    pub fn parse_id(self, id: &str) -> ApiResult<Uuid> {
        Uuid::parse_str(id).map_err(|_| self.missing())
    }

    /// The resource `id` names in the caller's tenant, once the caller is known to hold
    /// `scope` (403 first, then 404).
    pub fn target(self, caller: &Caller, scope: Scope, id: &str) -> ApiResult<Target> {
        caller.require(scope)?;
        Ok(Target {
            tenant: caller.0.tenant_id,
            id: self.parse_id(id)?,
        })
    }

    /// `GET /v1/<kind>/{id}`: read scope, the id, `fetch`, the row as its view.
    pub async fn get<T, V, Fut>(
        self,
        caller: &Caller,
        id: &str,
        fetch: impl FnOnce(Target) -> Fut,
    ) -> ApiResult<Json<V>>
    where
        Fut: Future<Output = StoreResult<T>>,
        V: From<T>,
    {
        let target = self.target(caller, Scope::Read, id)?;
        let row = fetch(target).await.map_err(self.not_found())?;
        Ok(Json(row.into()))
    }

    /// `DELETE /v1/<kind>/{id}`: write scope, the id, `remove`, 204.
    pub async fn delete<Fut>(
        self,
        caller: &Caller,
        id: &str,
        remove: impl FnOnce(Target) -> Fut,
    ) -> ApiResult<StatusCode>
    where
        Fut: Future<Output = StoreResult<()>>,
    {
        let target = self.target(caller, Scope::Write, id)?;
        remove(target).await.map_err(self.not_found())?;
        Ok(StatusCode::NO_CONTENT)
    }
}

/// `GET /v1/<kind>`: read scope, the checked page, `fetch(tenant, window)`, each row as
/// its view and the cursor made opaque.
pub async fn list<T, V, Fut>(
    caller: &Caller,
    params: &ListParams,
    fetch: impl FnOnce(Uuid, Window) -> Fut,
) -> ApiResult<Json<Page<V>>>
where
    Fut: Future<Output = StoreResult<store::Page<T>>>,
    V: From<T>,
{
    caller.require(Scope::Read)?;
    let window = params.window()?;
    Ok(Json(fetch(caller.0.tenant_id, window).await?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    const THING: Resource = Resource::new("no such thing");

    fn caller(scope: Scope) -> Caller {
        Caller(Principal {
            tenant_id: Uuid::now_v7(),
            key_id: None,
            scope,
            subject: "test".into(),
            rate_limit: None,
        })
    }

    fn not_found_message(e: ApiError) -> String {
        match e {
            ApiError::NotFound(m) => m,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_id_and_a_missing_row_answer_the_same_404() {
        assert_eq!(
            not_found_message(THING.parse_id("nope").unwrap_err()),
            "no such thing"
        );
        assert_eq!(
            not_found_message(THING.error(StoreError::NotFound)),
            "no such thing"
        );
        assert!(matches!(
            THING.error(StoreError::Duplicate("thing")),
            ApiError::Conflict(_)
        ));
    }

    #[test]
    fn the_scope_is_checked_before_the_id() {
        let reader = caller(Scope::Read);
        assert!(matches!(
            THING.target(&reader, Scope::Write, "nope"),
            Err(ApiError::Forbidden(_))
        ));
        let id = Uuid::now_v7();
        let t = THING.target(&reader, Scope::Read, &id.to_string()).unwrap();
        assert_eq!((t.tenant, t.id), (reader.0.tenant_id, id));
    }
}
