//! What the audit trail keeps of one outbound request: its URL without the
//! query or credentials, and the decision its outcome stands for.

use std::sync::Arc;

use super::policy::{ModuleNetwork, Refusal};
use super::send::NetworkError;
use crate::audit::{AuditEntry, AuditTrail, Decision, Detail, HttpDetail};
use crate::identity::Identity;

/// One call's network room: its module's grant and where its requests are
/// recorded.
#[derive(Debug, Clone)]
pub struct NetworkCtx {
    pub module: Arc<ModuleNetwork>,
    pub audit: AuditTrail,
    /// The call is of the organization the host learns the module for.
    pub learning: bool,
}

/// The URL a record names: scheme, host, port and path. The query may carry
/// a secret (a signed URL's signature, an API key), and the user part of an
/// authority does; neither is kept.
pub fn subject_of(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    crate::text::recorded(&format!("{scheme}://{host}{port}{}", uri.path()))
}

/// How a request ended, as its record tells it.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A response arrived.
    Answered(http::StatusCode),
    /// The host refused it, or the way failed.
    Failed(&'a NetworkError),
    /// The call stopped waiting (the guest dropped it, its deadline passed)
    /// while the request may have gone out.
    Abandoned,
}

/// The record of a request `identity` asked for: allowed when it was sent
/// (whatever the response said, or if the way failed), refused when the
/// host refused it.
pub fn entry(
    identity: &Identity,
    task_id: Option<&str>,
    subject: String,
    method: &http::Method,
    outcome: Outcome<'_>,
) -> AuditEntry {
    let mut detail = HttpDetail {
        method: crate::text::recorded(method.as_str()),
        status: None,
        failure: None,
    };
    let mut refusal = None;
    match outcome {
        Outcome::Answered(status) => detail.status = Some(status.as_u16()),
        Outcome::Failed(NetworkError::Refused(why)) => {
            refusal = Some((decision_of(why), why.to_string()));
        }
        Outcome::Failed(e @ NetworkError::BadRequest) => {
            refusal = Some((Decision::Invalid, e.to_string()));
        }
        Outcome::Failed(e) => detail.failure = Some(e.to_string()),
        Outcome::Abandoned => {
            detail.failure = Some("the call stopped waiting for the response".into());
        }
    }
    let mut entry = AuditEntry::new(identity, task_id, subject, Detail::Http(detail));
    if let Some((decision, reason)) = refusal {
        entry.decision = decision;
        entry.reason = Some(reason);
    }
    entry
}

/// The decision a refusal stands for. A name that does not resolve was
/// allowed: the grant let it through, the world did not answer.
fn decision_of(why: &Refusal) -> Decision {
    match why {
        Refusal::NoHost | Refusal::Authority(_) => Decision::Invalid,
        Refusal::Scheme(_) | Refusal::NotGranted { .. } | Refusal::Internal { .. } => {
            Decision::Denied
        }
        Refusal::Unresolved { .. } => Decision::Allowed,
        Refusal::Busy { .. } => Decision::Limited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{OrgId, Principal, RequestMeta, Role, UserId};

    fn alice() -> Identity {
        Identity::new(
            "fetch",
            Principal {
                user_id: "alice".parse::<UserId>().unwrap(),
                organization_id: "acme".parse::<OrgId>().unwrap(),
                role: Role::Member,
            },
            RequestMeta::fresh(),
        )
    }

    #[test]
    fn a_recorded_url_keeps_neither_its_query_nor_credentials() {
        let uri: http::Uri = "https://user:secret@api.example.com:8443/v1/files?sig=abc"
            .parse()
            .unwrap();
        assert_eq!(subject_of(&uri), "https://api.example.com:8443/v1/files");
    }

    #[test]
    fn a_request_outside_the_grant_is_recorded_denied_with_the_missing_grant() {
        let why = NetworkError::Refused(Refusal::NotGranted {
            destination: "https://evil.example".into(),
        });
        let e = entry(
            &alice(),
            None,
            "https://evil.example/".into(),
            &http::Method::GET,
            Outcome::Failed(&why),
        );
        assert_eq!(e.decision, Decision::Denied);
        assert!(e.reason.unwrap().contains("[network] allow"));
        assert_eq!(e.user_id, "alice");
    }

    #[test]
    fn a_sent_request_is_recorded_allowed_with_its_status() {
        let e = entry(
            &alice(),
            Some("t1"),
            "http://10.0.0.5:9000/".into(),
            &http::Method::POST,
            Outcome::Answered(http::StatusCode::CREATED),
        );
        assert_eq!(e.decision, Decision::Allowed);
        assert_eq!(e.task_id.as_deref(), Some("t1"));
        let Detail::Http(d) = e.detail else {
            unreachable!()
        };
        assert_eq!((d.method.as_str(), d.status), ("POST", Some(201)));
    }

    #[test]
    fn a_busy_module_is_recorded_limited() {
        let why = NetworkError::Refused(Refusal::Busy { max: 8 });
        let e = entry(
            &alice(),
            None,
            "x".into(),
            &http::Method::GET,
            Outcome::Failed(&why),
        );
        assert_eq!(e.decision, Decision::Limited);
    }
}
