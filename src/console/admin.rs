//! Keys and tenants, for admins. A key is created under `auth::keys::create` (the rules
//! of `POST /v1/keys`) and its secret is shown on the page that answers the form, once;
//! it is never stored or shown again. Tenants are listed and created by the operator
//! (an admin of the default tenant) under the same name rule as the API and the CLI.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::view::{Ctx, FieldErrors, Layout, PageError, page, parse_id, see_other, when};
use crate::auth::keys::{self, KeyRefusal, KeyRequest};
use crate::auth::{Scope, TENANT_NAME_RULE, check_tenant_name};
use crate::state::AppState;
use crate::store::StoreError;

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scope: String,
    pub created: String,
    pub last_used: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    l: Layout,
    rows: Vec<KeyRow>,
    /// The secret of the key just created: shown this once.
    created: Option<(String, String)>,
    name: String,
    scope: String,
    errors: FieldErrors,
    notice: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

async fn keys_page(
    state: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    created: Option<(String, String)>,
    f: NewKey,
    errors: FieldErrors,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let l = ctx.layout(state, "keys", "Keys").await?;
    let rows = state
        .store
        .list_api_keys(ctx.tenant(), None, 100)
        .await?
        .items
        .into_iter()
        .map(|k| KeyRow {
            id: k.id.to_string(),
            name: k.name,
            scope: k
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .max()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            prefix: k.prefix,
            created: when(&k.created_at),
            last_used: k.last_used_at.as_ref().map(when).unwrap_or_default(),
            revoked: k.revoked_at.as_ref().map(when).unwrap_or_default(),
        })
        .collect();
    Ok(page(
        status,
        &KeysPage {
            l,
            rows,
            created,
            name: f.name,
            scope: if f.scope.is_empty() {
                "read".into()
            } else {
                f.scope
            },
            errors,
            notice,
        },
    ))
}

/// `GET /keys`.
pub async fn keys(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Admin)?;
    keys_page(
        &state,
        &ctx,
        StatusCode::OK,
        None,
        NewKey::default(),
        FieldErrors::default(),
        None,
    )
    .await
}

/// `POST /keys`: create; the answer shows the secret once.
pub async fn create_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(f): Form<NewKey>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Admin)?;
    let mut errors = FieldErrors::default();
    let Some(scope) = Scope::parse(&f.scope) else {
        errors.add("scope", "must be read, write or admin");
        return keys_page(
            &state,
            &ctx,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            f,
            errors,
            None,
        )
        .await;
    };
    let req = KeyRequest {
        tenant_id: ctx.tenant(),
        name: &f.name,
        scope,
        rate_limit: None,
        by_operator: ctx.session.principal.is_operator(),
    };
    let cfg = &state.config;
    match keys::create(
        &state.store,
        req,
        cfg.rate_limit_requests,
        cfg.tenant_max_keys,
    )
    .await
    {
        Ok(issued) => {
            let created = Some((issued.record.prefix.clone(), issued.secret));
            keys_page(
                &state,
                &ctx,
                StatusCode::CREATED,
                created,
                NewKey::default(),
                errors,
                None,
            )
            .await
        }
        Err(KeyRefusal::Invalid { field, message }) => {
            errors.add(field, message);
            keys_page(
                &state,
                &ctx,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                f,
                errors,
                None,
            )
            .await
        }
        Err(KeyRefusal::Forbidden(m)) => Err(PageError::Forbidden(m)),
        Err(KeyRefusal::Full(m)) => {
            keys_page(&state, &ctx, StatusCode::CONFLICT, None, f, errors, Some(m)).await
        }
        Err(KeyRefusal::Store(e)) => Err(e.into()),
    }
}

/// `POST /keys/{id}/revoke` (the page asks for confirmation first).
pub async fn revoke_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Admin)?;
    let id = parse_id(&id, "key")?;
    match state.store.revoke_api_key(ctx.tenant(), id).await {
        Ok(k) => {
            tracing::info!(key_id = %k.id, prefix = %k.prefix, "api key revoked from the console");
            Ok(see_other("/keys"))
        }
        Err(StoreError::NotFound) => Err(PageError::NotFound("no such key".into())),
        Err(e) => Err(e.into()),
    }
}

pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsPage {
    l: Layout,
    rows: Vec<TenantRow>,
    operator: bool,
    name: String,
    errors: FieldErrors,
}

async fn tenants_page(
    state: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    name: String,
    errors: FieldErrors,
) -> Result<Response, PageError> {
    let l = ctx.layout(state, "tenants", "Tenants").await?;
    let operator = ctx.session.principal.is_operator();
    let tenants = if operator {
        state.store.list_tenants(None, 100).await?.items
    } else {
        vec![state.store.get_tenant(ctx.tenant()).await?]
    };
    let rows = tenants
        .into_iter()
        .map(|t| TenantRow {
            id: t.id.to_string(),
            name: t.name,
            created: when(&t.created_at),
        })
        .collect();
    Ok(page(
        status,
        &TenantsPage {
            l,
            rows,
            operator,
            name,
            errors,
        },
    ))
}

/// `GET /tenants`: all of them for the operator, its own for another admin.
pub async fn tenants(State(state): State<AppState>, ctx: Ctx) -> Result<Response, PageError> {
    ctx.require(Scope::Admin)?;
    tenants_page(
        &state,
        &ctx,
        StatusCode::OK,
        String::new(),
        FieldErrors::default(),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct NewTenant {
    #[serde(default)]
    name: String,
}

/// `POST /tenants` (the operator only).
pub async fn create_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(f): Form<NewTenant>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Admin)?;
    if !ctx.session.principal.is_operator() {
        return Err(PageError::Forbidden(
            "only an admin of the default tenant manages tenants".into(),
        ));
    }
    let mut errors = FieldErrors::default();
    let name = f.name.trim().to_string();
    if !check_tenant_name(&name) {
        errors.add("name", TENANT_NAME_RULE);
        return tenants_page(&state, &ctx, StatusCode::UNPROCESSABLE_ENTITY, name, errors).await;
    }
    match state.store.create_tenant(&name).await {
        Ok(t) => {
            tracing::info!(tenant_id = %t.id, "tenant created from the console");
            Ok(see_other("/tenants"))
        }
        Err(StoreError::Duplicate(_)) => {
            errors.add("name", "a tenant of this name already exists");
            tenants_page(&state, &ctx, StatusCode::UNPROCESSABLE_ENTITY, name, errors).await
        }
        Err(e) => Err(e.into()),
    }
}
