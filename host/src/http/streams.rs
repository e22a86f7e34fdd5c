//! The caps on open event streams: per user, per organization and per
//! host. A stream holds a
//! [`Permit`] for as long as it is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use super::error::ApiError;
use crate::identity::Principal;

/// How many streams may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Per user of an organization: a few tabs and a CLI.
    pub per_user: usize,
    /// Per organization: so one tenant's users cannot take every stream
    /// of the host.
    pub per_organization: usize,
    /// For the whole host: each stream holds a socket and a task.
    pub per_host: usize,
    /// Silence after which a stream writes a comment line (so proxies and
    /// clients do not time out, and a gone client is noticed) and checks
    /// that its token still holds.
    pub keep_alive: std::time::Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_user: 16,
            per_organization: 1024,
            per_host: 4096,
            keep_alive: std::time::Duration::from_secs(15),
        }
    }
}

/// An organization and a user.
type UserKey = (String, String);

/// Open streams in all, per organization and per user.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_organization: HashMap<String, usize>,
    per_user: HashMap<UserKey, usize>,
}

/// Takes one from a count, dropping it at zero.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// The streams open now.
#[derive(Debug, Default)]
pub struct Streams {
    limits: StreamLimits,
    open: Mutex<Open>,
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Self {
        Streams {
            limits,
            open: Mutex::default(),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// How many streams are open.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub(super) fn admit(self: &Arc<Self>, who: &Principal) -> Result<Permit, ApiError> {
        let key = (who.organization_id.to_string(), who.user_id.to_string());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.per_host {
            return Err(too_many(format!(
                "the host serves at most {} event streams at once; try again later",
                self.limits.per_host
            )));
        }
        let org = open.per_organization.get(&key.0).copied().unwrap_or(0);
        if org >= self.limits.per_organization {
            return Err(too_many(format!(
                "at most {} event streams per organization are open at once; try again later",
                self.limits.per_organization
            )));
        }
        let mine = open.per_user.entry(key.clone()).or_default();
        if *mine >= self.limits.per_user {
            return Err(too_many(format!(
                "at most {} event streams per user are open at once; close one first",
                self.limits.per_user
            )));
        }
        *mine += 1;
        *open.per_organization.entry(key.0.clone()).or_default() += 1;
        open.total += 1;
        Ok(Permit {
            streams: self.clone(),
            key,
        })
    }
}

fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit-exceeded", message)
}

/// An open stream's place under the caps; given back when the stream ends.
pub(super) struct Permit {
    streams: Arc<Streams>,
    key: UserKey,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        release(&mut open.per_user, &self.key);
        release(&mut open.per_organization, &self.key.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    fn principal(user: &str) -> Principal {
        member_of(user, "acme")
    }

    fn member_of(user: &str, org: &str) -> Principal {
        Principal {
            user_id: user.parse().unwrap(),
            organization_id: org.parse().unwrap(),
            role: Role::Member,
        }
    }

    #[test]
    fn one_organization_cannot_take_every_stream_of_the_host() {
        let streams = Arc::new(Streams::new(StreamLimits {
            per_user: 1,
            per_organization: 2,
            per_host: 10,
            ..StreamLimits::default()
        }));
        let a = streams.admit(&member_of("a", "acme")).unwrap();
        let _b = streams.admit(&member_of("b", "acme")).unwrap();
        let refused = streams.admit(&member_of("c", "acme")).err().unwrap();
        assert!(refused.message.contains("per organization"), "{refused:?}");
        streams.admit(&member_of("c", "globex")).unwrap();
        drop(a);
        streams.admit(&member_of("c", "acme")).unwrap();
    }

    #[test]
    fn streams_past_the_per_user_or_per_host_cap_are_refused_and_given_back_on_close() {
        let streams = Arc::new(Streams::new(StreamLimits {
            per_user: 2,
            per_host: 3,
            ..StreamLimits::default()
        }));
        let alice = principal("alice");
        let a1 = streams.admit(&alice).unwrap();
        let _a2 = streams.admit(&alice).unwrap();
        let refused = streams.admit(&alice).err().unwrap();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        let _b1 = streams.admit(&principal("bob")).unwrap();
        let full = streams.admit(&principal("carol")).err().unwrap();
        assert!(
            full.message.contains("the host serves at most 3"),
            "{full:?}"
        );
        drop(a1);
        assert_eq!(streams.open(), 2);
        streams.admit(&alice).unwrap();
    }
}
