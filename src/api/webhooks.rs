//! `/v1/webhooks/secret`: the tenant's signing secret of completion webhooks.
//!
//! The secret is stored so the service can sign; the API shows it only once, when this
//! endpoint rotates it. Deliveries still pending are signed with the new secret.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Caller;
use super::error::{ApiResult, ErrorBody};
use crate::auth::Scope;
use crate::auth::signing::new_secret;
use crate::state::AppState;
use crate::store::now;

/// The new signing secret, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecret {
    /// HMAC-SHA256 key of `X-Digital-Employee-Signature`.
    #[schema(example = "whsec_3f1c…")]
    pub secret: String,
    pub rotated_at: DateTime<Utc>,
}

/// Rotate the tenant's webhook signing secret and return it (admin).
///
/// Every completion webhook of the tenant is signed with this secret from now on; the
/// previous one stops being used at once. The secret is not shown again.
#[utoipa::path(post, path = "/v1/webhooks/secret", tag = "webhooks",
    responses(
        (status = 200, description = "The new secret", body = WebhookSecret),
        (status = 401, description = "Missing or invalid key", body = ErrorBody),
        (status = 403, description = "Key lacks the admin scope", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<WebhookSecret>> {
    caller.require(Scope::Admin)?;
    let tenant = caller.0.tenant_id;
    let secret = new_secret();
    state.store.set_webhook_secret(tenant, &secret).await?;
    tracing::info!(tenant_id = %tenant, "webhook secret rotated");
    Ok(Json(WebhookSecret {
        secret,
        rotated_at: now(),
    }))
}
