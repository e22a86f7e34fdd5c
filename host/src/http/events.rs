//! `GET /v1/events`: the host's events as Server-Sent Events, scoped to the
//! token's identity exactly as the task API is: a principal sees the events
//! of its own tasks and calls, an admin may ask for its organization's
//! (`?scope=organization`); nobody sees another organization's.
//!
//! A stream is a cursor into the hub's ring ([`crate::events`]): a slow
//! client only falls behind, and one that fell out of the ring gets a
//! `reload` event. `Last-Event-ID` resumes after an event the client saw.
//! Streams are capped per user and per host ([`super::StreamLimits`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::Query;
use super::state::{AppState, Authenticated};
use super::streams::Permit;
use crate::cancel::CancelToken;
use crate::error::SdkError;
use crate::events::{Missed, ResumeError, Subject, Subscription};
use crate::identity::{Principal, Role, canonical_uuid};

/// Most events written in one chunk: bounds a chunk, not the rate.
pub const MAX_BATCH: usize = 512;
/// Least time between two writes to one stream: events that arrive in
/// between go out together. A task storing progress thousands of times a
/// second then costs each watcher at most this many wake-ups and writes,
/// instead of one per event, at a latency no person notices.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViewScope {
    /// The caller's own tasks and calls.
    #[default]
    Own,
    /// The whole organization's: admins only.
    Organization,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this task's events.
    pub task: Option<String>,
    /// Only this module's events.
    pub module: Option<String>,
    #[serde(default)]
    pub scope: ViewScope,
}

/// Which events one stream may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    organization_id: String,
    /// `None`: every user of the organization (an admin's choice).
    user_id: Option<String>,
    task_id: Option<String>,
    module: Option<String>,
}

impl Watch {
    /// What `by` may watch with `query`: its own events, or its
    /// organization's when it is an admin and asks for them.
    pub fn new(by: &Principal, query: EventsQuery) -> Result<Self, SdkError> {
        let user_id = match query.scope {
            ViewScope::Own => Some(by.user_id.to_string()),
            ViewScope::Organization if by.role == Role::Admin => None,
            ViewScope::Organization => {
                return Err(SdkError::denied(
                    "only an admin of the organization may watch the organization's events",
                ));
            }
        };
        let task_id = query
            .task
            .map(|t| canonical_uuid("task id", &t))
            .transpose()?;
        Ok(Watch {
            organization_id: by.organization_id.to_string(),
            user_id,
            task_id,
            module: query.module,
        })
    }

    /// Whether an event about `subject` belongs on this stream.
    pub fn sees(&self, subject: &Subject) -> bool {
        subject.organization_id == self.organization_id
            && self.user_id.as_ref().is_none_or(|u| *u == subject.user_id)
            && self
                .task_id
                .as_ref()
                .is_none_or(|t| subject.task_id.as_ref() == Some(t))
            && self.module.as_ref().is_none_or(|m| *m == subject.module)
    }
}

pub async fn stream(
    auth: Authenticated,
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(m) = &query.module
        && state.host.module(m).is_none()
    {
        return Err(ApiError::not_found(format!("module `{m}` not found")));
    }
    let watch = Watch::new(&auth.principal, query)?;
    let hub = state.host.events();
    let subscription = match headers.get("last-event-id") {
        None => hub.subscribe(),
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::invalid_input("Last-Event-ID is not text"))?;
            hub.subscribe_after(text).map_err(|e| match e {
                ResumeError::NotAnId(_) | ResumeError::Future(_) => {
                    ApiError::invalid_input(format!("Last-Event-ID: {e}"))
                }
            })?
        }
    };
    let permit = state.streams.admit(&auth.principal)?;
    let still_allowed = {
        let (tokens, principal) = (state.tokens.clone(), auth.principal.clone());
        let secret = super::state::bearer(&headers)
            .unwrap_or_default()
            .to_owned();
        Box::new(move || {
            let (tokens, secret, principal) = (tokens.clone(), secret.clone(), principal.clone());
            Box::pin(async move {
                matches!(tokens.verify_with_id(&secret).await, Ok(Some((_, p))) if p == principal)
            }) as futures::future::BoxFuture<'static, bool>
        })
    };
    let feed = Feed {
        subscription,
        watch,
        closing: state.closing.clone(),
        _permit: permit,
        started: false,
        flushed: None,
        last_write: tokio::time::Instant::now(),
        keep_alive: state.streams.limits().keep_alive,
        still_allowed,
    };
    let body = Body::from_stream(futures::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    }));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One stream's state.
struct Feed {
    subscription: Subscription,
    watch: Watch,
    closing: CancelToken,
    _permit: Permit,
    started: bool,
    /// When the stream last wrote events, and whether that batch was full
    /// (a backlog goes out without waiting).
    flushed: Option<(tokio::time::Instant, bool)>,
    /// When the stream last wrote anything: a keep-alive follows
    /// `keep_alive` of silence, however many events it could not see.
    last_write: tokio::time::Instant,
    keep_alive: Duration,
    /// Whether the token still proves the same principal (not revoked, role
    /// unchanged): asked at every keep-alive, and the stream ends if not.
    still_allowed: Box<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send>,
}

impl Feed {
    /// The next chunk of the stream; `None` ends it (the host is stopping).
    async fn next(&mut self) -> Option<Bytes> {
        if !self.started {
            self.started = true;
            // Tells the client how soon to reconnect, and that it is connected.
            return Some(Bytes::from_static(b"retry: 1000\n: connected\n\n"));
        }
        loop {
            if self.closing.is_cancelled() {
                return None;
            }
            if let Some((at, false)) = self.flushed {
                tokio::select! {
                    () = self.closing.cancelled() => return None,
                    () = tokio::time::sleep_until(at + FLUSH_INTERVAL) => {}
                }
            }
            let idle = self.last_write.elapsed();
            if idle >= self.keep_alive {
                if !(self.still_allowed)().await {
                    return None;
                }
                self.last_write = tokio::time::Instant::now();
                return Some(Bytes::from_static(b": keep-alive\n\n"));
            }
            let ready = tokio::select! {
                () = self.closing.cancelled() => return None,
                r = tokio::time::timeout(self.keep_alive - idle, self.subscription.ready()) => r,
            };
            match ready {
                Err(_) => continue,
                Ok(false) => return None,
                Ok(true) => {}
            }
            // Copied under the ring's read lock: no per-event allocation or
            // reference count, whatever the number of watchers.
            let mut chunk = Vec::new();
            let watch = &self.watch;
            match self.subscription.try_visit(MAX_BATCH, |p| {
                if watch.sees(&p.event.subject) {
                    chunk.extend_from_slice(p.sse().as_bytes());
                }
            }) {
                Err(missed) => return Some(reload(missed)),
                Ok(seen) => {
                    self.flushed = Some((tokio::time::Instant::now(), seen == MAX_BATCH));
                    if !chunk.is_empty() {
                        self.last_write = tokio::time::Instant::now();
                        return Some(Bytes::from(chunk));
                    }
                }
            }
        }
    }
}

/// Tells a client that fell out of the ring to reload what it shows; its id
/// lets a reconnect go on from the oldest event kept.
fn reload(missed: Missed) -> Bytes {
    let data = serde_json::json!({
        "type": "reload",
        "reason": format!("this stream fell behind: {missed}; reload the tasks you show"),
    });
    Bytes::from(format!(
        "id: {}\nevent: reload\ndata: {data}\n\n",
        missed.oldest - 1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, role: Role) -> Principal {
        Principal {
            user_id: user.parse().unwrap(),
            organization_id: "acme".parse().unwrap(),
            role,
        }
    }

    fn subject(org: &str, user: &str, module: &str, task: Option<&str>) -> Subject {
        Subject {
            task_id: task.map(str::to_owned),
            module: module.into(),
            organization_id: org.into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn a_member_watches_only_its_own_events_and_never_another_organizations() {
        let w = Watch::new(&principal("alice", Role::Member), EventsQuery::default()).unwrap();
        assert!(w.sees(&subject("acme", "alice", "m", None)));
        assert!(!w.sees(&subject("acme", "bob", "m", None)));
        assert!(!w.sees(&subject("globex", "alice", "m", None)));
    }

    #[test]
    fn only_an_admin_may_watch_the_organization_and_still_not_another() {
        let org = || EventsQuery {
            scope: ViewScope::Organization,
            ..EventsQuery::default()
        };
        assert!(matches!(
            Watch::new(&principal("alice", Role::Member), org()),
            Err(SdkError::PermissionDenied(_))
        ));
        let w = Watch::new(&principal("root", Role::Admin), org()).unwrap();
        assert!(w.sees(&subject("acme", "bob", "m", None)));
        assert!(!w.sees(&subject("globex", "bob", "m", None)));
    }

    #[test]
    fn task_and_module_filters_narrow_the_stream_and_a_bad_task_id_is_refused() {
        let id = uuid::Uuid::now_v7().to_string();
        let q = EventsQuery {
            task: Some(id.clone()),
            module: Some("m".into()),
            ..EventsQuery::default()
        };
        let w = Watch::new(&principal("alice", Role::Member), q).unwrap();
        assert!(w.sees(&subject("acme", "alice", "m", Some(&id))));
        assert!(!w.sees(&subject("acme", "alice", "m", None)));
        assert!(!w.sees(&subject("acme", "alice", "other", Some(&id))));
        let bad = EventsQuery {
            task: Some("../x".into()),
            ..EventsQuery::default()
        };
        assert!(matches!(
            Watch::new(&principal("alice", Role::Member), bad),
            Err(SdkError::InvalidInput(_))
        ));
    }
}
