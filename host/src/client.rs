//! A client of a running server's `/v1` API, as the CLI uses it: call
//! actions, read, cancel and answer tasks, read the audit trail, and follow
//! the event stream. Errors keep the server's typed `ApiError` code.
//!
//! It speaks plain HTTP: for a server on another machine, reach it through
//! a tunnel or a TLS-terminating proxy on this one.

use std::time::Duration;

use futures::StreamExt;

pub use crate::text::terminal_safe;
use serde_json::Value;

/// How long a request (not an event stream) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest event the stream reader buffers before refusing the stream.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why a request did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a URL this client can use: give http://HOST:PORT")]
    Url(String),
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server's typed refusal.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server's answer is not what this client expects: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerEvent {
    pub id: Option<u64>,
    /// The SSE event name, equal to `data.type`.
    pub event: String,
    pub data: Value,
}

/// A client for one server and one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// `s` as one path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(url: &str, token: &str) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/');
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Url(url.to_owned()))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(ClientError::Url(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Client {
            http,
            base: base.to_owned(),
            token: token.to_owned(),
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    async fn answer(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let res = req
            .bearer_auth(&self.token)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| self.unreachable(&e))?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ClientError::Protocol(format!(
                "HTTP {status} with a body that is not JSON: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status.as_u16(), &body))
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.answer(self.http.get(url).query(query)).await
    }

    async fn post(&self, path: &str, body: String) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.answer(
            self.http
                .post(url)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self) -> Result<Value, ClientError> {
        self.get("/v1/whoami", &[]).await
    }

    /// Runs an action with `args` (JSON text); the `{data, effects}` answer.
    pub async fn call_action(
        &self,
        module: &str,
        action: &str,
        args: &str,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/v1/modules/{}/actions/{}",
            segment(module),
            segment(action)
        );
        self.post(&path, args.to_owned()).await
    }

    /// `GET /v1/tasks/{id}`: the task with its detail and timeline.
    pub async fn task(&self, id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/v1/tasks/{}", segment(id)), &[]).await
    }

    /// `GET /v1/tasks` with the given query (`module`, `status`, `cursor`,
    /// `limit`, `scope`, ...).
    pub async fn tasks(&self, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.get("/v1/tasks", query).await
    }

    pub async fn cancel(&self, id: &str) -> Result<Value, ClientError> {
        self.post(&format!("/v1/tasks/{}/cancel", segment(id)), String::new())
            .await
    }

    /// Answers the question asked at `asked_at` by pressing `button`.
    pub async fn confirm(
        &self,
        id: &str,
        button: &str,
        values: Value,
        asked_at: Option<i64>,
    ) -> Result<Value, ClientError> {
        let mut body = serde_json::json!({ "button": button, "values": values });
        if let Some(at) = asked_at {
            body["asked_at"] = at.into();
        }
        self.post(
            &format!("/v1/tasks/{}/confirmation", segment(id)),
            body.to_string(),
        )
        .await
    }

    /// `GET /v1/audit` with the given query.
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.get("/v1/audit", query).await
    }

    /// Opens `GET /v1/events` with the given query, after `last_event_id`.
    pub async fn events(
        &self,
        query: &[(&str, String)],
        last_event_id: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let mut req = self
            .http
            .get(format!("{}/v1/events", self.base))
            .query(query)
            .bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = res.status();
        if !status.is_success() {
            let bytes = res.bytes().await.map_err(|e| self.unreachable(&e))?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(status.as_u16(), &body));
        }
        Ok(EventStream {
            body: Box::pin(res.bytes_stream()),
            buffer: Vec::new(),
        })
    }
}

fn api_error(status: u16, body: &Value) -> ClientError {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    ClientError::Api {
        status,
        code: text(&body["error"]["code"]).unwrap_or_else(|| "unknown".into()),
        message: text(&body["error"]["message"]).unwrap_or_else(|| body.to_string()),
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// The event stream of a server, read event by event.
pub struct EventStream {
    body: ByteStream,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(Some(event));
            }
            match self.body.next().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Unreachable {
                        url: "the event stream".into(),
                        reason: e.to_string(),
                    });
                }
                Some(Ok(chunk)) => {
                    self.buffer.extend_from_slice(&chunk);
                    if self.buffer.len() > MAX_EVENT_BYTES {
                        return Err(ClientError::Protocol(format!(
                            "an event over {MAX_EVENT_BYTES} bytes"
                        )));
                    }
                }
            }
        }
    }

    /// One complete event from the buffer, skipping comments.
    fn take_event(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        loop {
            let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") else {
                return Ok(None);
            };
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8(block)
                .map_err(|_| ClientError::Protocol("an event that is not UTF-8".into()))?;
            let (mut id, mut event, mut data) = (None, String::new(), None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(
                        serde_json::from_str(v)
                            .map_err(|e| ClientError::Protocol(format!("event data: {e}")))?,
                    );
                }
            }
            if let Some(data) = data {
                return Ok(Some(ServerEvent { id, event, data }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_of_a_server_are_taken() {
        assert!(Client::new("http://127.0.0.1:8080/", "t").is_ok());
        for bad in [
            "https://x",
            "127.0.0.1:8080",
            "http://",
            "http://h/v1",
            "ftp://h",
        ] {
            assert!(
                matches!(Client::new(bad, "t"), Err(ClientError::Url(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("git-stats"), "git-stats");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }
}
