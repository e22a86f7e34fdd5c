//! `wasi:http/outgoing-handler`: the network room's `Host` side. Each
//! request goes to [`network::send`], which decides it against the
//! module's grant, resolves, connects and caps it, and its outcome goes to
//! the audit trail; this file only carries
//! `wasi:http`'s types in and its error codes out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http_body_util::BodyExt;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::audit::{AuditEntry, AuditTrail, MAX_RECORDED_REFUSALS};
use crate::identity::Identity;
use crate::network::{self, Asked, NetworkCtx, NetworkError, Outcome, Refusal, Waited};

/// The largest chunk of a request body the host buffers.
const MAX_BODY_CHUNK: usize = 64 * 1024;

/// One call's hooks: its module's network and who is calling, or none
/// (every request refused) where the call may not reach out, as `describe`.
#[derive(Debug)]
pub struct HttpRoom {
    ctx: Option<NetworkCtx>,
    identity: Arc<Identity>,
    task_id: Option<Arc<str>>,
    /// Refusals this call has put on the trail.
    refused: Arc<AtomicU32>,
}

impl HttpRoom {
    pub fn new(ctx: Option<NetworkCtx>, identity: Arc<Identity>, task_id: Option<&str>) -> Self {
        HttpRoom {
            ctx,
            identity,
            task_id: task_id.map(Arc::from),
            refused: Arc::default(),
        }
    }
}

/// The record of a request on its way: a call that stops waiting for the
/// response (the guest drops the future, the deadline passes) still leaves
/// one, since the request may have gone out.
struct OnTheWay {
    audit: AuditTrail,
    entry: Option<AuditEntry>,
}

impl Drop for OnTheWay {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.audit.record_later(entry);
        }
    }
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

impl WasiHttpHooks for HttpRoom {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, HttpError>> + Send> {
        let ctx = self.ctx.clone();
        let (identity, task_id) = (self.identity.clone(), self.task_id.clone());
        let refused = self.refused.clone();
        let subject = network::subject_of(request.uri());
        let method = request.method().clone();
        let asked = options.map_or_else(Asked::default, |o| Asked {
            connect: o.connect_timeout,
            first_byte: o.first_byte_timeout,
            between_bytes: o.between_bytes_timeout,
        });
        Box::new(async move {
            let Some(ctx) = ctx else {
                tracing::warn!("outbound request refused: this call may not use the network");
                return Err(HttpError::HttpRequestDenied);
            };
            let entry_of = |outcome| {
                network::entry(
                    &identity,
                    task_id.as_deref(),
                    subject.clone(),
                    &method,
                    outcome,
                )
            };
            let mut on_the_way = OnTheWay {
                audit: ctx.audit.clone(),
                entry: Some(entry_of(Outcome::Abandoned)),
            };
            let sent = network::send(&ctx.module, request, asked, ctx.learning).await;
            on_the_way.entry = None;
            let mut entry = entry_of(match &sent {
                Ok((response, ..)) => Outcome::Answered(response.status()),
                Err(e) => Outcome::Failed(e),
            });
            if let Ok((.., true)) = &sent {
                entry.reason = Some(crate::audit::LEARNED.to_owned());
            }
            // A refusal is on the trail before the guest hears of it; a
            // request that went out is recorded beside the response, as a
            // commit before it would double a small request's time.
            if entry.decision == crate::audit::Decision::Allowed {
                ctx.audit.record_later(entry);
            } else if refused.fetch_add(1, Ordering::Relaxed) < MAX_RECORDED_REFUSALS {
                ctx.audit.record_or_log(entry).await;
            }
            let (response, connection, _) = sent.map_err(error_of)?;
            let response = response.map(|body| body.map_err(body_error_of).boxed_unsync());
            let connection: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async move { connection.await.map_err(error_of) });
            Ok((response, connection))
        })
    }

    /// The host sets `host` itself, from the destination it decided.
    fn set_host_header(&mut self) -> bool {
        false
    }

    /// What one write to a request body may carry and so what an unsent
    /// request holds on the host's heap.
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        MAX_BODY_CHUNK
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        let certificate = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                )
            });
        tracing::warn!(error = %err, "outbound TLS failed");
        if certificate {
            ErrorCode::TlsCertificateError
        } else {
            ErrorCode::TlsProtocolError
        }
    }
}

/// What a failed body says to the guest. `wasi:http` in this wasmtime
/// version hands the guest a body's error only as text (its
/// `http-error-code` finds no code in an embedder's error), so a cap
/// reached mid-body is spelled `modhost-network-body: WHAT` with WHAT
/// `too-large LIMIT`, `timeout total` or `timeout stall`: the SDK reads it
/// back into its typed error.
fn body_error_of(e: NetworkError) -> HttpError {
    let what = match &e {
        NetworkError::TooLarge { limit } => format!("too-large {limit}"),
        NetworkError::Timeout(Waited::Total) => "timeout total".to_owned(),
        NetworkError::Timeout(Waited::Stall) => "timeout stall".to_owned(),
        _ => return error_of(e),
    };
    HttpError::InternalError(Some(format!("modhost-network-body: {what}")))
}

/// The `wasi:http` error of a failed request: the codes the SDK turns into
/// its typed errors.
fn error_of(e: NetworkError) -> HttpError {
    match e {
        NetworkError::Refused(why) => match why {
            Refusal::NoHost | Refusal::Authority(_) => HttpError::HttpRequestUriInvalid,
            Refusal::Scheme(_) => HttpError::HttpProtocolError,
            Refusal::NotGranted { .. } => HttpError::HttpRequestDenied,
            Refusal::Internal { .. } => HttpError::DestinationIpProhibited,
            Refusal::Unresolved { .. } => HttpError::DestinationNotFound,
            Refusal::Busy { .. } => HttpError::ConnectionLimitReached,
        },
        NetworkError::Timeout(Waited::Connect) => HttpError::ConnectionTimeout,
        NetworkError::Timeout(Waited::Headers | Waited::Total) => HttpError::HttpResponseTimeout,
        NetworkError::Timeout(Waited::Stall) => HttpError::ConnectionReadTimeout,
        NetworkError::TooLarge { limit } => HttpError::HttpResponseBodySize(Some(limit)),
        NetworkError::BadRequest => HttpError::HttpRequestUriInvalid,
        NetworkError::Connect(e) => HttpError::Connect(e),
        NetworkError::Tls(e) => HttpError::Tls(e),
        NetworkError::Http(e) => HttpError::Hyper(e),
    }
}
