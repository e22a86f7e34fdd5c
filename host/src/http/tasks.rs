//! Task routes: a principal reads, cancels and answers its tasks (an admin:
//! its organization's). Another organization's task is 404, like a missing one.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::ApiError;
use super::events::ViewScope;
use super::extract::{Body, Path, Query};
use super::state::{AppState, Authenticated};
use crate::audit::{AuditFilter, Capability, Decision, MAX_AUDIT_LIMIT};
use crate::tasks::api::ConfirmationAnswer;
use crate::tasks::store::{ConfirmationRow, Status, TaskFilter, TaskRow};

/// A task as the API shows it. In lists the heavy fields (checkpoint,
/// result, confirmation) are left out; `GET /v1/tasks/{id}` has them all.
#[derive(Debug, Serialize)]
pub struct TaskJson {
    id: String,
    module: String,
    task_name: String,
    task_key: Option<String>,
    title: Option<String>,
    status: &'static str,
    progress: f64,
    label: Option<String>,
    user_id: String,
    organization_id: String,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    attempts: u32,
    resumable: bool,
    /// The host running the task (its lease's), while it is claimed.
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirmation: Option<serde_json::Value>,
    /// Only in `GET /v1/tasks/{id}`: the transitions the row records.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Vec<Moment>>,
}

/// One transition of a task, as its row records it.
#[derive(Debug, Serialize)]
pub struct Moment {
    at: i64,
    event: &'static str,
    detail: Option<String>,
}

/// What the row says happened, oldest first: created, started (of the
/// latest attempt), the current confirmation asked and answered, finished.
fn timeline(r: &TaskRow) -> Vec<Moment> {
    let mut out = vec![Moment {
        at: r.created_at,
        event: "created",
        detail: r.title.clone(),
    }];
    if let Some(at) = r.started_at {
        out.push(Moment {
            at,
            event: "started",
            detail: (r.attempts > 1).then(|| format!("attempt {}", r.attempts)),
        });
    }
    if let Some(c) = &r.confirmation {
        out.push(Moment {
            at: c.asked_at,
            event: "confirmation-asked",
            detail: serde_json::from_str::<crate::ui::Surface>(&c.surface_json)
                .ok()
                .map(|s| s.title),
        });
        if let Some(a) = &c.answer {
            let button = serde_json::from_str::<ConfirmationAnswer>(&a.answer_json)
                .map(|a| a.button)
                .unwrap_or_default();
            out.push(Moment {
                at: a.answered_at,
                event: "confirmation-answered",
                detail: Some(format!("{button} by {}", a.answered_by)),
            });
        }
    }
    if let Some(at) = r.finished_at {
        let why = r
            .failure_message
            .as_deref()
            .map_or_else(String::new, |m| format!(": {m}"));
        out.push(Moment {
            at,
            event: "finished",
            detail: Some(format!("{}{why}", r.status.as_str())),
        });
    }
    out.sort_by_key(|m| m.at);
    out
}

fn parse(text: &Option<String>) -> Option<serde_json::Value> {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok())
}

fn confirmation(c: &ConfirmationRow) -> serde_json::Value {
    json!({
        "surface": serde_json::from_str::<serde_json::Value>(&c.surface_json).ok(),
        "asked_at": c.asked_at,
        "expires_at": c.expires_at,
        "answer": c.answer.as_ref().map(|a| json!({
            "answer": serde_json::from_str::<serde_json::Value>(&a.answer_json).ok(),
            "answered_by": a.answered_by,
            "answered_at": a.answered_at,
        })),
    })
}

impl From<&TaskRow> for TaskJson {
    fn from(r: &TaskRow) -> Self {
        TaskJson {
            id: r.id.clone(),
            module: r.module.clone(),
            task_name: r.task_name.clone(),
            task_key: r.task_key.clone(),
            title: r.title.clone(),
            status: r.status.as_str(),
            progress: r.progress,
            label: r.label.clone(),
            user_id: r.user_id.clone(),
            organization_id: r.organization_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            attempts: r.attempts,
            resumable: r.resumable,
            host: r.host.clone(),
            checkpoint: parse(&r.checkpoint_json),
            result: parse(&r.result_json),
            failure: r
                .failure_kind
                .as_ref()
                .map(|k| json!({ "kind": k, "message": r.failure_message })),
            confirmation: r.confirmation.as_ref().map(confirmation),
            timeline: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only for `GET /v1/tasks`: one module's tasks.
    module: Option<String>,
    /// Only for `GET /v1/tasks`: `organization` (admins) for every user's.
    #[serde(default)]
    scope: ViewScope,
    /// Comma-separated statuses.
    status: Option<String>,
    task: Option<String>,
    key_prefix: Option<String>,
    created_after: Option<i64>,
    created_before: Option<i64>,
    cursor: Option<String>,
    #[serde(default)]
    limit: u32,
}

impl ListQuery {
    fn filter(&self) -> Result<TaskFilter, ApiError> {
        let statuses = match &self.status {
            Some(s) => s
                .split(',')
                .map(|v| {
                    v.trim()
                        .parse::<Status>()
                        .map_err(|e| ApiError::invalid_input(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        Ok(TaskFilter {
            statuses,
            task_name: self.task.clone(),
            key_prefix: self.key_prefix.clone(),
            created_after: self.created_after,
            created_before: self.created_before,
        })
    }
}

fn page_json(page: &crate::tasks::store::TaskPage) -> Json<serde_json::Value> {
    let tasks: Vec<TaskJson> = page.tasks.iter().map(TaskJson::from).collect();
    Json(
        json!({ "tasks": tasks, "next_cursor": page.next_cursor.as_ref().map(ToString::to_string) }),
    )
}

/// `GET /v1/modules/{module}/tasks`: the module's tasks the principal may
/// see (an admin: the organization's).
pub async fn list(
    auth: Authenticated,
    State(state): State<AppState>,
    Path(module): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if state.host.module(&module).is_none() {
        return Err(ApiError::not_found(format!("module `{module}` not found")));
    }
    if q.module.is_some() || q.scope != ViewScope::Own {
        return Err(ApiError::invalid_input(
            "`module` and `scope` belong to GET /v1/tasks; this route names its module",
        ));
    }
    let page = state
        .host
        .tasks()
        .list(
            &auth.principal,
            &module,
            &q.filter()?,
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(page_json(&page))
}

/// `GET /v1/tasks`: the principal's own tasks across modules, or (admins,
/// `scope=organization`) the organization's.
pub async fn list_all(
    auth: Authenticated,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(m) = &q.module
        && state.host.module(m).is_none()
    {
        return Err(ApiError::not_found(format!("module `{m}` not found")));
    }
    let page = state
        .host
        .tasks()
        .list_across(
            &auth.principal,
            q.module.as_deref(),
            q.scope == ViewScope::Organization,
            &q.filter()?,
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(page_json(&page))
}

pub async fn view(
    auth: Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskJson>, ApiError> {
    let row = state.host.tasks().get(&id, &auth.principal).await?;
    let mut task = TaskJson::from(&row);
    task.timeline = Some(timeline(&row));
    Ok(Json(task))
}

pub async fn cancel(
    auth: Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.host.tasks().cancel(&id, &auth.principal).await?;
    Ok(Json(json!({ "id": id, "status": "cancelled" })))
}

pub async fn answer(
    auth: Authenticated,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let answer: ConfirmationAnswer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid_input(format!(
            "answer must be {{\"button\": ..., \"values\": {{...}}, \"asked_at\": ...}}: {e}"
        ))
    })?;
    state
        .host
        .tasks()
        .answer_confirmation(&id, &answer, &auth.principal)
        .await?;
    Ok(Json(json!({ "id": id, "answered": true })))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    module: Option<String>,
    /// Only for admins; others always read their own records.
    user: Option<String>,
    capability: Option<Capability>,
    decision: Option<Decision>,
    /// The id of the last record of the previous page.
    before: Option<String>,
    #[serde(default = "default_audit_limit")]
    limit: u32,
}

fn default_audit_limit() -> u32 {
    100
}

/// The audit trail of the caller's organization (an admin's view) or of
/// the caller's own calls, newest first.
pub async fn audit(
    auth: Authenticated,
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    audit_page(auth, state, q).await
}

/// `GET /v1/audit/subprocesses`: the subprocess records alone, as before
/// the trail held every capability.
pub async fn subprocess_audit(
    auth: Authenticated,
    State(state): State<AppState>,
    Query(mut q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    q.capability = Some(Capability::Subprocess);
    audit_page(auth, state, q).await
}

async fn audit_page(
    auth: Authenticated,
    state: AppState,
    q: AuditQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = AuditFilter {
        organization_id: None,
        module: q.module,
        user_id: q.user,
        capability: q.capability,
        decision: q.decision,
        before: q.before,
    };
    let records = state
        .host
        .audit_for(&auth.principal, filter, q.limit)
        .await?;
    let next = (records.len() == usize::try_from(q.limit.clamp(1, MAX_AUDIT_LIMIT)).unwrap_or(0))
        .then(|| records.last().map(|r| r.entry.id.clone()))
        .flatten();
    Ok(Json(json!({ "records": records, "next_before": next })))
}
