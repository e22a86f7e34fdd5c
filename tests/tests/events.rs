//! `GET /v1/events` driven through the `Router`: what each principal's
//! stream carries, resuming, caps, and a client that fell behind.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use modhost::auth::Tokens;
use modhost::db::Db;
use modhost::events::{EventKind, RING_CAPACITY, Subject};
use modhost::http::{AppState, StreamLimits, router};
use modhost::{Principal, Role};
use modhost_tests::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const LONG_TASKS: &str = "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-concurrent = 8";

struct Api {
    app: axum::Router,
    t: TestHost,
    tokens: Tokens,
}

impl Api {
    async fn new(limits: StreamLimits) -> Self {
        let mut t = TestHost::new();
        t.load("tb", TASKS_BASIC, LONG_TASKS).await;
        t.load("confirm", CONFIRM, LONG_TASKS).await;
        t.load("sub", SUBPROCESS, "").await;
        t.host.start_tasks().await.unwrap();
        let tokens = Tokens::new(Db::in_memory().unwrap());
        let app = router(AppState::with_stream_limits(
            t.host.clone(),
            tokens.clone(),
            limits,
        ));
        Api { app, t, tokens }
    }

    async fn token(&self, p: &Principal) -> String {
        self.tokens.create(p, "test").await.unwrap().secret
    }

    async fn call(
        &self,
        token: &str,
        req: axum::http::request::Builder,
        body: &str,
    ) -> (StatusCode, Value) {
        let req = req
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body.to_owned()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, json(std::str::from_utf8(&bytes).unwrap()))
    }

    async fn action(&self, token: &str, module: &str, action: &str, args: Value) -> Value {
        let (status, body) = self
            .call(
                token,
                Request::post(format!("/v1/modules/{module}/actions/{action}")),
                &args.to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    /// Starts tb's `progress` task as the token's user; its id.
    async fn submit(&self, token: &str) -> String {
        let data = self
            .action(
                token,
                "tb",
                "submit",
                json!({"task": "progress", "args": {}}),
            )
            .await;
        data["id"].as_str().unwrap().to_owned()
    }

    /// Opens a stream; `Err` holds the refusal's status and body.
    async fn stream(
        &self,
        token: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<Stream, (StatusCode, Value)> {
        let mut req = Request::get(format!("/v1/events{query}"))
            .header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        if status != StatusCode::OK {
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            return Err((status, json(std::str::from_utf8(&bytes).unwrap())));
        }
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Ok(Stream {
            body: res.into_body(),
            buffer: String::new(),
        })
    }
}

/// One parsed server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

struct Stream {
    body: Body,
    buffer: String,
}

impl Stream {
    /// The next event (comments skipped), or `None` after `wait` without one.
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut sse = Sse {
                    id: None,
                    event: String::new(),
                    data: Value::Null,
                };
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        sse.id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        sse.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(json(v));
                    }
                }
                match data {
                    Some(d) => {
                        sse.data = d;
                        return Some(sse);
                    }
                    None => continue,
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            if let Ok(bytes) = frame.unwrap().into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// Events until one matches `done` (included), failing after 30 s.
    async fn until(&mut self, done: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut got = Vec::new();
        loop {
            let Some(e) = self.next(Duration::from_secs(30)).await else {
                panic!("no matching event in 30 s; got {got:#?}");
            };
            let stop = done(&e);
            got.push(e);
            if stop {
                return got;
            }
        }
    }
}

fn admin(user: &str, org: &str) -> Principal {
    Principal {
        role: Role::Admin,
        ..principal(user, org)
    }
}

fn is_final(e: &Sse, task: &str) -> bool {
    e.data["task_id"] == task
        && e.event == "status"
        && ["completed", "failed", "cancelled"].contains(&e.data["status"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_streams_its_own_task_from_created_to_completed_and_nothing_of_another_user() {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    let bob = api.token(&principal("bob", "acme")).await;
    let mut stream = api.stream(&alice, "", None).await.unwrap();
    let bobs = api.submit(&bob).await;
    let mine = api.submit(&alice).await;
    let mine = mine.as_str();
    let events = stream.until(|e| is_final(e, mine)).await;
    assert!(
        events.iter().all(|e| e.data["user_id"] == "alice"),
        "bob's task {bobs} leaked: {events:#?}"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"task-created"), "{kinds:?}");
    let progress: Vec<f64> = events
        .iter()
        .filter(|e| e.event == "progress" && e.data["persisted"] == true)
        .map(|e| e.data["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, [0.25, 0.5, 1.0]);
    let ids: Vec<u64> = events.iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
    assert!(events.iter().all(|e| e.data["type"] == e.event.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_is_asked_and_answered_on_the_stream_and_stale_or_repeated_answers_are_refused()
 {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    let id = api.action(&alice, "confirm", "start", json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = api
        .stream(&alice, &format!("?task={id}"), None)
        .await
        .unwrap();
    // The question may have been asked before the stream opened: the task
    // detail says so either way.
    let asked_at = loop {
        let (_, task) = api
            .call(&alice, Request::get(format!("/v1/tasks/{id}")), "")
            .await;
        if task["status"] == "waiting-confirmation" {
            break task["confirmation"]["asked_at"].as_i64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let answer = |body: Value| {
        let api = &api;
        let (alice, id) = (alice.clone(), id.clone());
        async move {
            api.call(
                &alice,
                Request::post(format!("/v1/tasks/{id}/confirmation")),
                &body.to_string(),
            )
            .await
        }
    };
    let (status, body) = answer(json!({"button": "yes", "asked_at": asked_at - 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("the one waiting was asked at {asked_at}")),
        "{body}"
    );
    let (status, body) = answer(json!({"button": "yes", "asked_at": asked_at})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = stream.until(|e| is_final(e, &id)).await;
    let answered = events
        .iter()
        .find(|e| e.event == "confirmation-answered")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(answered.data["button"], "yes");
    assert_eq!(answered.data["answered_by"], "alice");
    assert!(events.iter().all(|e| e.data["task_id"] == id.as_str()));
    let (status, body) = answer(json!({"button": "yes", "asked_at": asked_at})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "answered twice: {body}");
    assert_eq!(body["error"]["code"], "invalid-input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_after_that_event_and_a_tampered_one_is_refused() {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    let mut first = api.stream(&alice, "", None).await.unwrap();
    let id = api.submit(&alice).await;
    let all = first.until(|e| is_final(e, &id)).await;
    drop(first);
    let resume_after = all[1].id.unwrap().to_string();
    let mut resumed = api.stream(&alice, "", Some(&resume_after)).await.unwrap();
    let again = resumed.until(|e| is_final(e, &id)).await;
    let ids = |v: &[Sse]| v.iter().map(|e| e.id.unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&all[2..]));

    for bad in [
        "12abc",
        "-1",
        &(all.last().unwrap().id.unwrap() + 1_000).to_string(),
    ] {
        let (status, body) = api.stream(&alice, "", Some(bad)).await.err().unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid-input");
    }
    // An id from before the oldest kept (another boot's): told to reload.
    let mut old = api.stream(&alice, "", Some("1")).await.unwrap();
    let e = old.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(e.event, "reload", "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_fell_out_of_the_ring_is_told_to_reload_and_goes_on_live() {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    // Opened, then never read while the host publishes more than it keeps.
    let mut stuck = api.stream(&alice, "", None).await.unwrap();
    let _ = stuck.next(Duration::from_millis(50)).await;
    let hub = api.t.host.events();
    let subject = Subject {
        task_id: None,
        module: "tb".into(),
        organization_id: "acme".into(),
        user_id: "alice".into(),
    };
    for _ in 0..RING_CAPACITY + 100 {
        hub.send(
            subject.clone(),
            EventKind::Status {
                status: "running".into(),
                host: None,
            },
        );
    }
    let mut reload = None;
    for _ in 0..RING_CAPACITY {
        let e = stuck.next(Duration::from_secs(5)).await.unwrap();
        if e.event == "reload" {
            reload = Some(e);
            break;
        }
    }
    let reload = reload.expect("a reload event");
    assert!(
        reload.data["reason"]
            .as_str()
            .unwrap()
            .contains("fell behind"),
        "{reload:?}"
    );
    let next = stuck.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.id, Some(reload.id.unwrap() + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_per_user_cap_are_refused_clearly_and_a_closed_one_frees_its_place() {
    let api = Api::new(StreamLimits {
        per_user: 2,
        per_host: 3,
        ..StreamLimits::default()
    })
    .await;
    let alice = api.token(&principal("alice", "acme")).await;
    let bob = api.token(&principal("bob", "acme")).await;
    let carol = api.token(&principal("carol", "acme")).await;
    let a1 = api.stream(&alice, "", None).await.unwrap();
    let _a2 = api.stream(&alice, "", None).await.unwrap();
    let (status, body) = api.stream(&alice, "", None).await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "limit-exceeded");
    let _b1 = api.stream(&bob, "", None).await.unwrap();
    let (status, body) = api.stream(&carol, "", None).await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("host"),
        "{body}"
    );
    drop(a1);
    api.stream(&carol, "", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_streams_the_organizations_events_and_never_another_organizations() {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    let root = api.token(&admin("root", "acme")).await;
    let intruder = api.token(&admin("root", "globex")).await;
    let (status, body) = api
        .stream(&alice, "?scope=organization", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let mut org = api
        .stream(&root, "?scope=organization", None)
        .await
        .unwrap();
    let mut other = api
        .stream(&intruder, "?scope=organization", None)
        .await
        .unwrap();
    let id = api.submit(&alice).await;
    let id = id.as_str();
    let seen = org.until(|e| is_final(e, id)).await;
    assert!(seen.iter().all(|e| e.data["organization_id"] == "acme"));
    assert!(
        other.next(Duration::from_millis(300)).await.is_none(),
        "another organization's admin saw acme's events"
    );
    for bad in ["?task=not-a-uuid", "?module=nope", "?bogus=1"] {
        let (status, body) = api.stream(&alice, bad, None).await.err().unwrap();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{bad}: {status} {body}"
        );
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_subprocess_decisions_are_on_its_stream() {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    let mut stream = api.stream(&alice, "?module=sub", None).await.unwrap();
    let (status, _) = api
        .call(
            &alice,
            Request::post("/v1/modules/sub/actions/run"),
            &json!({"program": "id"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let e = stream
        .until(|e| e.event == "subprocess")
        .await
        .pop()
        .unwrap();
    assert_eq!(e.data["program"], "id");
    assert_eq!(e.data["decision"], "denied");
    assert_eq!(e.data["user_id"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_nobody_answers_in_time_is_announced_as_timed_out() {
    let api = Api::new(StreamLimits::default()).await;
    let alice = api.token(&principal("alice", "acme")).await;
    let mut stream = api.stream(&alice, "?module=confirm", None).await.unwrap();
    let id = api
        .action(&alice, "confirm", "start", json!({"timeout_ms": 200}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = stream.until(|e| is_final(e, &id)).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let asked = kinds.iter().position(|k| *k == "confirmation-asked");
    let timed_out = kinds.iter().position(|k| *k == "confirmation-timed-out");
    assert!(
        matches!((asked, timed_out), (Some(a), Some(t)) if a < t),
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"confirmation-answered"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_next_keep_alive_once_its_token_is_revoked() {
    let api = Api::new(StreamLimits {
        keep_alive: Duration::from_millis(200),
        ..StreamLimits::default()
    })
    .await;
    let alice = api
        .tokens
        .create(&principal("alice", "acme"), "t")
        .await
        .unwrap();
    let mut stream = api.stream(&alice.secret, "", None).await.unwrap();
    // Keep-alives flow while the token holds.
    let mut raw = String::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(Some(frame)) = tokio::time::timeout_at(until, stream.body.frame()).await {
        raw.push_str(std::str::from_utf8(&frame.unwrap().into_data().unwrap()).unwrap());
    }
    assert!(raw.contains(": keep-alive"), "{raw:?}");
    assert!(api.tokens.revoke(&alice.id).await.unwrap());
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = stream.body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a revoked token went on");
}
