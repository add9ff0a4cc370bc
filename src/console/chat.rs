//! Chat with an employee in a session: each message is one synchronous turn through
//! `orchestrator::chat::turn`, the path of `POST /v1/employees/{id}/chat`.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::tasks::{Choice, employee_names};
use super::view::{Ctx, FieldErrors, Layout, PageError, dollars, page, see_other, when};
use crate::auth::Scope;
use crate::orchestrator::chat::{self, ChatError};
use crate::state::AppState;
use crate::store::StoreError;

/// Messages of a session shown (the newest).
const SHOWN: u32 = 100;

pub struct Msg {
    pub role: String,
    pub content: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "console/chat.html")]
struct ChatPage {
    l: Layout,
    employees: Vec<Choice>,
    employee: String,
    session: String,
    messages: Vec<Msg>,
    draft: String,
    errors: FieldErrors,
    notice: Option<String>,
    last_usage: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChatQuery {
    #[serde(default)]
    employee: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    usage: String,
}

struct View {
    employee: String,
    session: String,
    draft: String,
    errors: FieldErrors,
    notice: Option<String>,
    last_usage: String,
}

async fn render(
    state: &AppState,
    ctx: &Ctx,
    v: View,
    status: StatusCode,
) -> Result<Response, PageError> {
    let l = ctx.layout(state, "chat", "Chat").await?;
    let employees = employee_names(state, ctx.tenant())
        .await?
        .into_iter()
        .map(|e| Choice {
            selected: v.employee == e.id.to_string(),
            value: e.id.to_string(),
            label: e.fields.name,
        })
        .collect();
    let messages = match Uuid::parse_str(&v.session) {
        Ok(sid) => match state.store.list_messages(ctx.tenant(), sid, SHOWN).await {
            Ok(m) => m
                .into_iter()
                .map(|m| Msg {
                    role: m.role,
                    content: m.content,
                    when: when(&m.created_at),
                })
                .collect(),
            Err(StoreError::NotFound) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        Err(_) => Vec::new(),
    };
    Ok(page(
        status,
        &ChatPage {
            l,
            employees,
            employee: v.employee,
            session: v.session,
            messages,
            draft: v.draft,
            errors: v.errors,
            notice: v.notice,
            last_usage: v.last_usage,
        },
    ))
}

/// `GET /chat?employee=&session=`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ChatQuery>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Read)?;
    let v = View {
        employee: q.employee,
        session: q.session,
        draft: String::new(),
        errors: FieldErrors::default(),
        notice: None,
        last_usage: q.usage,
    };
    render(&state, &ctx, v, StatusCode::OK).await
}

#[derive(Debug, Default, Deserialize)]
pub struct Say {
    #[serde(default)]
    employee: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    message: String,
}

/// `POST /chat`: one turn; the page then shows the session with the answer.
pub async fn say(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(f): Form<Say>,
) -> Result<Response, PageError> {
    ctx.require(Scope::Write)?;
    let mut v = View {
        employee: f.employee.clone(),
        session: f.session.clone(),
        draft: f.message.clone(),
        errors: FieldErrors::default(),
        notice: None,
        last_usage: String::new(),
    };
    let Ok(employee) = Uuid::parse_str(&f.employee) else {
        v.errors.add("employee", "choose an employee");
        return render(&state, &ctx, v, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let employee_id = employee;
    let employee = match state.store.get_employee(ctx.tenant(), employee_id).await {
        Ok(e) => e,
        Err(StoreError::NotFound) => return Err(PageError::NotFound("no such employee".into())),
        Err(e) => return Err(e.into()),
    };
    let session = Uuid::parse_str(&f.session).ok();
    let key = ctx.session.principal.key_id;
    match chat::turn(&state, employee, session, f.message, key).await {
        Ok(t) => {
            let usage = format!(
                "{} steps, {} in / {} out tokens, {}",
                t.totals.steps,
                t.totals.tokens_in,
                t.totals.tokens_out,
                dollars(t.totals.cost_nanos)
            );
            let mut qs = form_urlencoded::Serializer::new(String::new());
            qs.append_pair("employee", &employee_id.to_string());
            qs.append_pair("session", &t.session_id.to_string());
            qs.append_pair("usage", &usage);
            Ok(see_other(&format!("/chat?{}", qs.finish())))
        }
        Err(ChatError::Invalid(e)) => {
            v.errors.add(&e.field, e.message);
            render(&state, &ctx, v, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e @ ChatError::NotFound(_)) => Err(PageError::NotFound(e.to_string())),
        Err(ChatError::Unreachable(m)) => {
            v.notice = Some(m);
            render(&state, &ctx, v, StatusCode::CONFLICT).await
        }
        Err(ChatError::Upstream(m)) => {
            v.notice = Some(format!("every AI vendor failed: {m}"));
            render(&state, &ctx, v, StatusCode::BAD_GATEWAY).await
        }
        Err(e @ ChatError::Budget(_)) => {
            v.notice = Some(e.to_string());
            render(&state, &ctx, v, StatusCode::TOO_MANY_REQUESTS).await
        }
        Err(ChatError::Store(e)) => Err(e.into()),
        Err(e @ ChatError::Unexpected(_)) => Err(PageError::Internal(anyhow::Error::new(e))),
    }
}
