//! Sending one request the grant allows: the host resolves the name,
//! connects only to an address it checked, speaks TLS for `https`, and caps
//! the response as the grant says.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep, timeout, timeout_at};

use super::policy::{Destination, ModuleNetwork, Refusal, Target, decide, usable};
use crate::manifest::Scheme;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("timed out: {0}")]
    Timeout(Waited),
    #[error("the response is larger than {limit} bytes, the module's [network] max-response-mib")]
    TooLarge { limit: u64 },
    #[error("the request's URL cannot be sent")]
    BadRequest,
    #[error("connecting failed: {0}")]
    Connect(std::io::Error),
    #[error("TLS failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP failed: {0}")]
    Http(#[from] hyper::Error),
}

/// What a request waited for too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Waited {
    #[error("connecting")]
    Connect,
    #[error("the response's headers ([network] first-byte-timeout-ms)")]
    Headers,
    #[error("the whole request ([network] timeout-ms)")]
    Total,
    #[error("the next chunk of the body")]
    Stall,
}

/// The time limits a guest may ask of one request, each capped by the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub between_bytes: Option<Duration>,
}

/// The connection of a response, driven on its own task: it ends when the
/// body is read or dropped, or at the request's deadline.
pub type Connection = Pin<Box<dyn Future<Output = Result<(), NetworkError>> + Send>>;

/// The longest a connection may take to open, whatever the guest asks.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a name may take to resolve.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a response body may stall between two chunks when the guest
/// does not say.
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Logs a refusal beside the module it refused.
fn refused(module: &ModuleNetwork, why: Refusal) -> NetworkError {
    tracing::warn!(module = %module.module, reason = %why, "outbound request refused");
    NetworkError::Refused(why)
}

/// Sends `request` for `module` if its grant allows it (the learned grant
/// when `learning`), with the time limits `asked` capped by the grant.
/// Returns the response, whose body holds the module's place among its
/// open requests, the connection to drive beside it, and whether only
/// learning allowed it.
pub async fn send<B>(
    module: &Arc<ModuleNetwork>,
    mut request: http::Request<B>,
    asked: Asked,
    learning: bool,
) -> Result<(http::Response<Capped>, Connection, bool), NetworkError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let current = module.grant_for(learning);
    let (grant, dest) = match decide(&current, request.uri()) {
        Ok(dest) => (current, dest),
        Err(why) => match learning.then(|| module.learn(&why)).flatten() {
            Some(grant) => {
                let dest = decide(&grant, request.uri()).map_err(|r| refused(module, r))?;
                tracing::info!(module = %module.module, destination = %dest, "request allowed while learning: not granted by the manifest");
                (grant, dest)
            }
            None => return Err(refused(module, why)),
        },
    };
    // Allowed by what was learned, now or before: the manifest's own grant
    // would refuse it.
    let learned = learning && decide(module.grant(), request.uri()).is_err();
    let permit = module.open.clone().try_acquire_owned().map_err(|_| {
        refused(
            module,
            Refusal::Busy {
                max: grant.max_concurrent,
            },
        )
    })?;
    let deadline = Instant::now() + grant.timeout;
    let first_byte = asked.first_byte.map_or(grant.first_byte_timeout, |t| {
        t.min(grant.first_byte_timeout)
    });
    let between = asked
        .between_bytes
        .unwrap_or(BETWEEN_BYTES_TIMEOUT)
        .max(Duration::from_millis(1));
    let connect_timeout = asked
        .connect
        .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT));

    let head = request.method() == http::Method::HEAD;
    let (permit, addresses) = resolve(&dest, permit, deadline)
        .await
        .map_err(|r| refused(module, r))?;
    let stream = timeout_at(deadline, connect(&addresses, dest.port, connect_timeout))
        .await
        .map_err(|_| NetworkError::Timeout(Waited::Total))??;
    let stream: Box<dyn Stream> = match dest.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => {
            let by = deadline.min(Instant::now() + connect_timeout);
            Box::new(
                timeout_at(by, tls(module.tls.clone(), &dest, stream))
                    .await
                    .map_err(|_| NetworkError::Timeout(Waited::Connect))??,
            )
        }
    };
    let (mut sender, conn) = timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| NetworkError::Timeout(Waited::Connect))??;
    let conn = tokio::spawn(timeout_at(deadline, conn));
    let stop_conn = conn.abort_handle();
    tracing::debug!(module = %module.module, destination = %dest, "outbound request");

    // The request line names only the path: the authority went into the
    // `host` header, and a full URI is for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| NetworkError::BadRequest)?;
    let host =
        http::HeaderValue::from_str(&dest.host_header()).map_err(|_| NetworkError::BadRequest)?;
    request.headers_mut().insert(http::header::HOST, host);

    let headers_by = deadline.min(Instant::now() + first_byte);
    let response = timeout_at(headers_by, sender.send_request(request))
        .await
        .map_err(|_| NetworkError::Timeout(Waited::Headers))??;
    let limit = grant.max_response_bytes;
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bodiless = head
        || response.status() == http::StatusCode::NO_CONTENT
        || response.status() == http::StatusCode::NOT_MODIFIED;
    if !bodiless && declared.is_some_and(|n| n > limit) {
        tracing::warn!(module = %module.module, destination = %dest, limit, "outbound response refused: larger than [network] max-response-mib");
        return Err(NetworkError::TooLarge { limit });
    }
    let response = response.map(|incoming| Capped {
        incoming,
        limit,
        seen: 0,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        idle: None,
        between,
        ended: false,
        conn: stop_conn,
        _place: permit,
    });
    let connection: Connection = Box::pin(async move {
        match conn.await {
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(_elapsed)) => Err(NetworkError::Timeout(Waited::Total)),
        }
    });
    Ok((response, connection, learned))
}

/// The addresses to connect to: the grant's address itself, or what the
/// name resolves to less what it may not reach. The lookup runs on a task
/// of its own that holds the request's place until the resolver answers:
/// a request given up while its lookup hangs still counts against the
/// module's `max-concurrent`, so a module cannot pile up stuck lookups.
async fn resolve(
    dest: &Destination,
    place: OwnedSemaphorePermit,
    deadline: Instant,
) -> Result<(OwnedSemaphorePermit, Vec<IpAddr>), Refusal> {
    let name = match &dest.target {
        Target::Ip(ip) => return Ok((place, usable(dest, &[*ip])?)),
        Target::Name(name) => name.clone(),
    };
    let unresolved = |reason: String| Refusal::Unresolved {
        destination: dest.to_string(),
        reason,
    };
    let port = dest.port;
    let lookup = tokio::spawn(async move {
        let found = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>());
        (place, found)
    });
    // On a timeout the place stays with the lookup until it ends.
    let by = deadline.min(Instant::now() + DNS_TIMEOUT);
    let (place, found) = timeout_at(by, lookup)
        .await
        .map_err(|_| unresolved("the lookup timed out".into()))?
        .map_err(|_| unresolved("the lookup failed".into()))?;
    let found = found.map_err(|e| unresolved(e.to_string()))?;
    let mut resolved: Vec<IpAddr> = Vec::new();
    for ip in found {
        if !resolved.contains(&ip) {
            resolved.push(ip);
        }
    }
    Ok((place, usable(dest, &resolved)?))
}

/// Connects to the first of `addresses` that answers.
async fn connect(
    addresses: &[IpAddr],
    port: u16,
    each: Duration,
) -> Result<TcpStream, NetworkError> {
    let mut last = NetworkError::Timeout(Waited::Connect);
    for ip in addresses {
        match timeout(each, TcpStream::connect(SocketAddr::new(*ip, port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = NetworkError::Connect(e),
            Err(_) => last = NetworkError::Timeout(Waited::Connect),
        }
    }
    Err(last)
}

async fn tls(
    tls: Arc<rustls::ClientConfig>,
    dest: &Destination,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NetworkError> {
    use rustls::pki_types::ServerName;
    let name = match &dest.target {
        Target::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Target::Name(name) => {
            ServerName::try_from(name.clone()).map_err(|_| NetworkError::BadRequest)?
        }
    };
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .map_err(NetworkError::Tls)
}

/// A response body held to the grant: at most `limit` bytes, done by the
/// request's deadline, never stalled longer than `between`; it keeps the
/// module's place among its open requests until it is read or dropped.
pub struct Capped {
    incoming: hyper::body::Incoming,
    limit: u64,
    seen: u64,
    deadline: Pin<Box<Sleep>>,
    /// Started at the first read, so a guest that reads late is not seen
    /// to stall.
    idle: Option<Pin<Box<Sleep>>>,
    between: Duration,
    ended: bool,
    /// The response's connection, stopped when the body is dropped.
    conn: tokio::task::AbortHandle,
    _place: OwnedSemaphorePermit,
}

impl Capped {
    fn fail(&mut self, error: NetworkError) -> Poll<Option<Result<Frame<Bytes>, NetworkError>>> {
        self.ended = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = NetworkError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, NetworkError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(NetworkError::Timeout(Waited::Total));
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this
                        .seen
                        .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                    if this.seen > this.limit {
                        tracing::warn!(
                            limit = this.limit,
                            "outbound response cut: larger than [network] max-response-mib"
                        );
                        return this.fail(NetworkError::TooLarge { limit: this.limit });
                    }
                }
                if let Some(idle) = &mut this.idle {
                    idle.as_mut().reset(Instant::now() + this.between);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(NetworkError::Http(e)),
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let between = this.between;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                if idle.as_mut().poll(cx).is_ready() {
                    return this.fail(NetworkError::Timeout(Waited::Stall));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
