//! Outbound HTTP: a small blocking client over `wasi:http`.
//!
//! The host sends a request only to a destination the module's
//! `[network] allow` grants (`https://api.example.com`,
//! `downloads.example.org:443`), resolves names itself and never lets a
//! granted *name* lead to an internal address (loopback, private,
//! link-local): such a host is reached only through a grant of its address
//! (`127.0.0.1:8080`). Each refusal is a typed [`HttpError`] naming what is
//! missing. Redirects are followed (up to [`MAX_REDIRECTS`] by default), each
//! one a new request the host decides anew.
//!
//! ```no_run
//! use module_sdk::http;
//!
//! # fn f() -> module_sdk::Result<()> {
//! let page = http::get("https://api.example.com/v1/items").send()?.text()?;
//! let saved = http::get("https://downloads.example.org/model.bin")
//!     .send()?
//!     .save("/data/model.bin", |p: http::Progress| {
//!         let _ = (p.done, p.total); // report progress, hash p.chunk, …
//!     })?;
//! # let _ = (page, saved); Ok(()) }
//! ```

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

/// Redirects a request follows unless told otherwise.
pub const MAX_REDIRECTS: u32 = 10;

/// The request headers a redirect to another origin keeps; every other one
/// (credentials, API keys, cookies) stays with the origin it was set for.
const KEPT_ACROSS_ORIGINS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "content-type",
    "content-length",
];

/// The most bytes one write to a request body may carry (`wasi:io`).
const WRITE_CHUNK: usize = 4096;

/// The most bytes one read of a response body asks for.
const READ_CHUNK: u64 = 64 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The destination (`https://host:port`) is not in `[network] allow`.
    Denied { destination: String },
    /// The destination's name resolves only to internal addresses, which a
    /// name never reaches: the grant must name the address itself.
    InternalAddress { destination: String },
    /// The response body is larger than `[network] max-response-mib`.
    TooLarge { limit_bytes: Option<u64> },
    /// A time limit passed; the text says which.
    Timeout(String),
    /// The module has `[network] max-concurrent` requests open already.
    TooManyOpen,
    /// More redirects than the request follows.
    TooManyRedirects { max: u32 },
    /// The URL, a header or the method is malformed; the text says which.
    Invalid(String),
    /// The request failed on the way (refused, TLS, protocol, …).
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Denied { destination } => {
                write!(f, "`{destination}` is not in the module's [network] allow")
            }
            HttpError::InternalAddress { destination } => write!(
                f,
                "`{destination}` resolves to an internal address, which a granted name never reaches: grant the address itself in [network] allow"
            ),
            HttpError::TooLarge {
                limit_bytes: Some(n),
            } => write!(
                f,
                "the response is larger than {n} bytes, the module's [network] max-response-mib"
            ),
            HttpError::TooLarge { limit_bytes: None } => {
                f.write_str("the response is larger than the module's [network] max-response-mib")
            }
            HttpError::Timeout(what) => write!(f, "timed out: {what}"),
            HttpError::TooManyOpen => {
                f.write_str("the module has [network] max-concurrent requests open already")
            }
            HttpError::TooManyRedirects { max } => write!(f, "more than {max} redirects"),
            HttpError::Invalid(what) => write!(f, "invalid request: {what}"),
            HttpError::Failed(what) => write!(f, "the request failed: {what}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A refused request is a missing grant; a cap reached is a limit; a bad
/// URL is bad input.
impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        let text = format!("network: {e}");
        match e {
            HttpError::Denied { .. } | HttpError::InternalAddress { .. } => {
                crate::Error::PermissionDenied(text)
            }
            HttpError::TooLarge { .. }
            | HttpError::Timeout(_)
            | HttpError::TooManyOpen
            | HttpError::TooManyRedirects { .. } => crate::Error::LimitExceeded(text),
            HttpError::Invalid(_) => crate::Error::InvalidInput(text),
            HttpError::Failed(_) => crate::Error::Internal(text),
        }
    }
}

impl HttpError {
    fn of_code(code: ErrorCode, destination: &str) -> HttpError {
        let destination = destination.to_owned();
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied { destination },
            ErrorCode::DestinationIpProhibited => HttpError::InternalAddress { destination },
            ErrorCode::HttpResponseBodySize(limit) => HttpError::TooLarge { limit_bytes: limit },
            ErrorCode::HttpResponseTimeout => {
                HttpError::Timeout(format!("`{destination}` did not answer in time"))
            }
            ErrorCode::ConnectionReadTimeout => {
                HttpError::Timeout(format!("the response of `{destination}` stalled"))
            }
            ErrorCode::ConnectionTimeout => {
                HttpError::Timeout(format!("connecting to `{destination}`"))
            }
            ErrorCode::ConnectionLimitReached => HttpError::TooManyOpen,
            ErrorCode::DestinationNotFound => {
                HttpError::Failed(format!("`{destination}` did not resolve"))
            }
            ErrorCode::ConnectionRefused => {
                HttpError::Failed(format!("`{destination}` refused the connection"))
            }
            ErrorCode::TlsCertificateError => HttpError::Failed(format!(
                "the TLS certificate of `{destination}` is not one the host trusts (the Mozilla roots, and those of `modhost serve --tls-roots`)"
            )),
            ErrorCode::HttpRequestUriInvalid => {
                HttpError::Invalid(format!("the URL of `{destination}`"))
            }
            other => HttpError::Failed(format!("`{destination}`: {other:?}")),
        }
    }

    /// A body's failure as the host spells it (`wit/http.rs` in the host:
    /// `modhost-network-body: too-large LIMIT`, `timeout total`,
    /// `timeout stall`), since `wasi:http` carries no code for it.
    fn of_body_failure(text: &str, destination: &str) -> HttpError {
        let what = text
            .split_once("modhost-network-body: ")
            .map(|(_, what)| what.trim());
        match what {
            Some(w) if w.starts_with("too-large") => HttpError::TooLarge {
                limit_bytes: w["too-large".len()..].trim().parse().ok(),
            },
            Some("timeout total") => HttpError::Timeout(format!(
                "the whole request to `{destination}` ([network] timeout-ms)"
            )),
            Some("timeout stall") => {
                HttpError::Timeout(format!("the response of `{destination}` stalled"))
            }
            _ => HttpError::Failed(format!("reading the body of `{destination}`: {text}")),
        }
    }

    fn of_io(e: std::io::Error) -> HttpError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<HttpError>())
        {
            Some(h) => h.clone(),
            None => HttpError::Failed(e.to_string()),
        }
    }
}

/// A URL split as `wasi:http` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    authority: String,
    path: String,
}

impl Url {
    fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| HttpError::Invalid(format!("URL `{text}`: {why}"));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("it must start with http:// or https://"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() {
            return Err(bad("it has no host"));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not supported; send a header",
            ));
        }
        if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("it contains spaces or control characters"));
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        Ok(Url {
            https,
            authority: authority.to_owned(),
            path,
        })
    }

    /// `scheme://host:port`, as the grant is matched.
    fn destination(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let has_port = match self.authority.rfind(':') {
            Some(i) => !self.authority[i..].contains(']'),
            None => false,
        };
        if has_port {
            format!("{scheme}://{}", self.authority)
        } else {
            let port = if self.https { 443 } else { 80 };
            format!("{scheme}://{}:{port}", self.authority)
        }
    }

    /// The URL a `location` header leads to from this one.
    fn join(&self, location: &str) -> Result<Url, HttpError> {
        let scheme = if self.https { "https" } else { "http" };
        let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..=base.rfind('/').unwrap_or(0)];
            format!("{dir}{location}")
        };
        Url::parse(&format!("{scheme}://{}{path}", self.authority))
    }
}

/// A request being built: [`get`], [`post`] or [`request`], then
/// [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    first_byte_timeout: Option<Duration>,
    between_bytes_timeout: Option<Duration>,
    max_redirects: u32,
}

/// A `GET` of `url`.
pub fn get(url: impl Into<String>) -> Request {
    request("GET", url)
}

/// A `POST` to `url`; give it a [`Request::body`] or [`Request::json`].
pub fn post(url: impl Into<String>) -> Request {
    request("POST", url)
}

/// A request with any method.
pub fn request(method: &str, url: impl Into<String>) -> Request {
    Request {
        method: method.to_ascii_uppercase(),
        url: url.into(),
        headers: Vec::new(),
        body: Vec::new(),
        first_byte_timeout: None,
        between_bytes_timeout: None,
        max_redirects: MAX_REDIRECTS,
    }
}

impl Request {
    /// Adds a header (repeatable).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body, with its content type.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, HttpError> {
        let body =
            serde_json::to_vec(value).map_err(|e| HttpError::Invalid(format!("JSON body: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// How long to wait for the response's headers; the host caps it at
    /// `[network] first-byte-timeout-ms`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.first_byte_timeout = Some(d);
        self
    }

    /// How long the response body may stall between two chunks.
    pub fn stall_timeout(mut self, d: Duration) -> Self {
        self.between_bytes_timeout = Some(d);
        self
    }

    /// Redirects to follow; 0 returns a redirect as it came.
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.max_redirects = n;
        self
    }

    /// Sends the request, following redirects.
    pub fn send(self) -> Result<Response, HttpError> {
        let mut url = Url::parse(&self.url)?;
        let mut method = self.method;
        let mut body = self.body;
        let mut headers = self.headers;
        let mut hops = 0;
        loop {
            let sent = send_once(
                &method,
                &url,
                &headers,
                &body,
                self.first_byte_timeout,
                self.between_bytes_timeout,
            )?;
            let location = matches!(sent.status, 301 | 302 | 303 | 307 | 308)
                .then(|| header_of(&sent.headers, "location"))
                .flatten();
            let Some(location) = location.filter(|_| self.max_redirects > 0) else {
                return Ok(sent);
            };
            if hops == self.max_redirects {
                return Err(HttpError::TooManyRedirects {
                    max: self.max_redirects,
                });
            }
            hops += 1;
            let next = url.join(&location)?;
            if sent.status == 303
                || (matches!(sent.status, 301 | 302) && method != "GET" && method != "HEAD")
            {
                method = "GET".to_owned();
                body.clear();
                headers.retain(|(n, _)| n != "content-type" && n != "content-length");
            }
            if next.authority != url.authority || next.https != url.https {
                // Another origin gets none of what was meant for this one:
                // only headers that carry no secret go on.
                headers.retain(|(n, _)| KEPT_ACROSS_ORIGINS.contains(&n.as_str()));
            }
            url = next;
        }
    }
}

fn header_of(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn send_once(
    method: &str,
    url: &Url,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    first_byte: Option<Duration>,
    between_bytes: Option<Duration>,
) -> Result<Response, HttpError> {
    let destination = url.destination();
    let fields =
        Fields::from_list(headers).map_err(|e| HttpError::Invalid(format!("headers: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| HttpError::Invalid(format!("{what} of `{destination}`"));
    req.set_method(&method)
        .map_err(|()| invalid("the method"))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    req.set_scheme(Some(&scheme))
        .map_err(|()| invalid("the scheme"))?;
    req.set_authority(Some(&url.authority))
        .map_err(|()| invalid("the host"))?;
    req.set_path_with_query(Some(&url.path))
        .map_err(|()| invalid("the path"))?;
    let out = if body.is_empty() {
        None
    } else {
        Some(req.body().map_err(|()| invalid("the body"))?)
    };
    let options = RequestOptions::new();
    if let Some(d) = first_byte {
        let _ = options.set_first_byte_timeout(Some(nanos(d)));
    }
    if let Some(d) = between_bytes {
        let _ = options.set_between_bytes_timeout(Some(nanos(d)));
    }
    let future = outgoing_handler::handle(req, Some(options))
        .map_err(|code| HttpError::of_code(code, &destination))?;
    if let Some(out) = out {
        let failed = |e: StreamError| HttpError::Failed(format!("sending the body: {e:?}"));
        {
            let stream = out.write().map_err(|()| invalid("the body"))?;
            for chunk in body.chunks(WRITE_CHUNK) {
                stream.blocking_write_and_flush(chunk).map_err(failed)?;
            }
        }
        OutgoingBody::finish(out, None).map_err(|code| HttpError::of_code(code, &destination))?;
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(HttpError::of_code(code, &destination)),
        Some(Err(())) | None => {
            return Err(HttpError::Failed(format!("`{destination}`: no response")));
        }
    };
    let status = response.status();
    let headers: Vec<(String, Vec<u8>)> = response.headers().entries();
    let body = response
        .consume()
        .map_err(|()| HttpError::Failed("the response body was taken".into()))?;
    let stream = body
        .stream()
        .map_err(|()| HttpError::Failed("the response body was taken".into()))?;
    Ok(Response {
        status,
        url: url.clone(),
        headers,
        stream: Some(stream),
        body: Some(body),
        _response: response,
        destination,
    })
}

/// How far [`Response::save`] is.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The chunk just written.
    pub chunk: &'a [u8],
    /// Bytes written so far.
    pub done: u64,
    /// The declared length of the body, if the server said it.
    pub total: Option<u64>,
}

/// A response: its status and headers, and its body to read once.
///
/// It reads as [`std::io::Read`]; a failure of the body (a cap reached, a
/// stall) is an `io::Error` carrying the [`HttpError`].
pub struct Response {
    status: u16,
    url: Url,
    headers: Vec<(String, Vec<u8>)>,
    // Dropped in this order: a stream before its body before its response.
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _response: IncomingResponse,
    destination: String,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The URL this response came from, after redirects.
    pub fn url(&self) -> String {
        let scheme = if self.url.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.url.authority, self.url.path)
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(&self.headers, name)
    }

    /// Every header, names in lower case.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body's length, when the server said it.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// The whole body.
    pub fn bytes(mut self) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        self.read_to_end(&mut out).map_err(HttpError::of_io)?;
        Ok(out)
    }

    /// The whole body as text (invalid UTF-8 replaced).
    pub fn text(self) -> Result<String, HttpError> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The whole body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, crate::Error> {
        let bytes = self.bytes()?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Streams the body into the file `path` (in the data directory, for a
    /// module granted `[filesystem] data`), calling `progress` after each
    /// chunk is written. The file appears only whole: the body goes to
    /// `path.partial` first, renamed once complete and removed on failure.
    /// Returns the bytes written.
    pub fn save(
        mut self,
        path: impl AsRef<Path>,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<u64, crate::Error> {
        let path = path.as_ref();
        let total = self.content_length();
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = std::path::PathBuf::from(partial);
        let written = (|| -> Result<u64, crate::Error> {
            let mut file = std::fs::File::create(&partial)?;
            let mut done = 0u64;
            while let Some(chunk) = self.next_chunk(READ_CHUNK)? {
                file.write_all(&chunk)?;
                done += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                progress(Progress {
                    chunk: &chunk,
                    done,
                    total,
                });
            }
            file.sync_all()?;
            Ok(done)
        })();
        match written {
            Ok(n) => {
                std::fs::rename(&partial, path)?;
                Ok(n)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    /// The next chunk of the body, at most `max` bytes, or `None` at its
    /// end.
    fn next_chunk(&mut self, max: u64) -> Result<Option<Vec<u8>>, HttpError> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        match stream.blocking_read(max) {
            Ok(chunk) => Ok(Some(chunk)),
            Err(StreamError::Closed) => {
                self.stream = None;
                if let Some(body) = self.body.take() {
                    drop(IncomingBody::finish(body));
                }
                Ok(None)
            }
            Err(StreamError::LastOperationFailed(e)) => {
                self.stream = None;
                Err(match wasi::http::types::http_error_code(&e) {
                    Some(code) => HttpError::of_code(code, &self.destination),
                    None => HttpError::of_body_failure(&e.to_debug_string(), &self.destination),
                })
            }
        }
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = u64::try_from(buf.len()).unwrap_or(u64::MAX).min(READ_CHUNK);
        loop {
            match self.next_chunk(want).map_err(std::io::Error::other)? {
                None => return Ok(0),
                Some(chunk) if chunk.is_empty() => continue,
                Some(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    return Ok(chunk.len());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let u = Url::parse("https://api.example.com/v1/items?q=1#top").unwrap();
        assert_eq!(
            u,
            Url {
                https: true,
                authority: "api.example.com".into(),
                path: "/v1/items?q=1".into()
            }
        );
        assert_eq!(u.destination(), "https://api.example.com:443");
        let u = Url::parse("http://127.0.0.1:8080?x").unwrap();
        assert_eq!(u.path, "/?x");
        assert_eq!(u.destination(), "http://127.0.0.1:8080");
        assert_eq!(
            Url::parse("http://[::1]/").unwrap().destination(),
            "http://[::1]:80"
        );
    }

    #[test]
    fn malformed_urls_are_refused_with_their_reason() {
        for bad in [
            "example.com/x",
            "ftp://example.com/",
            "https:///x",
            "https://user:pw@example.com/",
            "https://example.com/a b",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(HttpError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn redirect_locations_resolve_against_the_current_url() {
        let base = Url::parse("http://a.example.com:8080/dir/file?q=1").unwrap();
        let to = |loc: &str| {
            let u = base.join(loc).unwrap();
            format!("{}{}", u.destination(), u.path)
        };
        assert_eq!(to("https://b.example.com/x"), "https://b.example.com:443/x");
        assert_eq!(to("//c.example.com/y"), "http://c.example.com:80/y");
        assert_eq!(to("/root"), "http://a.example.com:8080/root");
        assert_eq!(to("other?z"), "http://a.example.com:8080/dir/other?z");
        assert_eq!(
            to("/next?u=http://x.example.com/"),
            "http://a.example.com:8080/next?u=http://x.example.com/"
        );
        assert_eq!(to("HTTPS://B.example.com/x"), "https://B.example.com:443/x");
    }

    #[test]
    fn a_body_failure_spelled_by_the_host_reads_back_as_its_typed_error() {
        let d = "http://x:80";
        assert_eq!(
            HttpError::of_body_failure(
                "internal error: modhost-network-body: too-large 1048576",
                d
            ),
            HttpError::TooLarge {
                limit_bytes: Some(1 << 20)
            }
        );
        assert!(matches!(
            HttpError::of_body_failure("internal error: modhost-network-body: timeout stall", d),
            HttpError::Timeout(t) if t.contains("stalled")
        ));
        assert!(matches!(
            HttpError::of_body_failure("connection reset", d),
            HttpError::Failed(t) if t.contains("connection reset")
        ));
    }

    #[test]
    fn refusals_become_the_sdk_errors_a_handler_returns() {
        let denied: crate::Error = HttpError::Denied {
            destination: "https://x.example.com:443".into(),
        }
        .into();
        assert!(
            matches!(&denied, crate::Error::PermissionDenied(t) if t.contains("https://x.example.com:443") && t.contains("[network] allow")),
            "{denied:?}"
        );
        let big: crate::Error = HttpError::TooLarge {
            limit_bytes: Some(10),
        }
        .into();
        assert!(matches!(big, crate::Error::LimitExceeded(_)));
    }
}
