//! Who is calling. Identity is the host's, never the guest's.
//!
//! A [`Principal`] is what an authenticated request proves (user, organization,
//! role). An [`Identity`] is a principal acting inside one module for one
//! request; it is built by the host and stored in the call's sandbox, and a
//! guest can read it (`context.current`) but never set it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest user or organization id accepted: ids are opaque labels from the
/// embedder's directory, never free text.
pub const MAX_ID_BYTES: usize = 128;

/// User and organization id of [`Identity::loader`]: not a valid id.
const LOADER_ID: &str = "<loader>";

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} must be 1..={MAX_ID_BYTES} bytes of letters, digits, `.`, `_`, `-`, `@` or `:` (got {got:?})"
)]
pub struct InvalidId {
    pub what: &'static str,
    pub got: String,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                if valid_id(&s) {
                    Ok($name(s))
                } else {
                    Err(InvalidId { what: $what, got: s })
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// A user id, as the embedder's directory names users.
    UserId,
    "a user id"
);
id_newtype!(
    /// An organization id.
    OrgId,
    "an organization id"
);

impl OrgId {
    /// The organization's directory inside a module's data directory:
    /// tenants never share files. Prefixed, so no id (not even `..`) can
    /// name a directory outside.
    pub fn data_dir_in(&self, module_data: &std::path::Path) -> std::path::PathBuf {
        module_data.join(format!("org-{}", self.0))
    }

    /// [`OrgId::data_dir_in`], created if missing. Whatever already has its
    /// name must be a real directory: a symlink or file left there (by an
    /// older layout that let modules write beside the organizations'
    /// directories) is refused, never followed.
    pub fn ensure_data_dir_in(
        &self,
        module_data: &std::path::Path,
    ) -> std::io::Result<std::path::PathBuf> {
        let dir = self.data_dir_in(module_data);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(module_data)?;
                match std::fs::create_dir(&dir) {
                    Ok(()) => return Ok(dir),
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    Err(_) => {}
                }
            }
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => {}
        }
        if std::fs::symlink_metadata(&dir)?.file_type().is_dir() {
            Ok(dir)
        } else {
            Err(std::io::Error::other(format!(
                "{} is not a directory (a symlink or a file is refused)",
                dir.display()
            )))
        }
    }
}

/// What a caller may do inside its organization. See `wit/types.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    #[default]
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected viewer, member or admin)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an authenticated request proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user_id: UserId,
    pub organization_id: OrgId,
    pub role: Role,
}

/// A principal acting inside one module for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub module: String,
    pub principal: Principal,
    /// The request that started this work; kept by background and blocking runs.
    pub request_id: String,
    pub session_id: Option<String>,
}

impl Identity {
    pub fn new(module: impl Into<String>, principal: Principal, request: RequestMeta) -> Self {
        Identity {
            module: module.into(),
            principal,
            request_id: request.request_id,
            session_id: request.session_id,
        }
    }

    /// The identity `describe` runs under when the host loads a module: no
    /// user's. Its ids contain `<`, which no real id may, so it can never
    /// match a real organization's tasks.
    pub fn loader(module: impl Into<String>) -> Self {
        Identity {
            module: module.into(),
            principal: Principal {
                user_id: UserId(LOADER_ID.into()),
                organization_id: OrgId(LOADER_ID.into()),
                role: Role::Viewer,
            },
            request_id: new_request_id(),
            session_id: None,
        }
    }

    /// Whether this is the identity of a module being loaded.
    pub fn is_loader(&self) -> bool {
        self.principal.organization_id.0 == LOADER_ID
    }

    pub fn user_id(&self) -> &UserId {
        &self.principal.user_id
    }

    pub fn organization_id(&self) -> &OrgId {
        &self.principal.organization_id
    }
}

/// Facts about the request that are not the principal's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub session_id: Option<String>,
}

impl RequestMeta {
    /// A request with a fresh id and no session.
    pub fn fresh() -> Self {
        RequestMeta {
            request_id: new_request_id(),
            session_id: None,
        }
    }
}

/// An id a caller passed that must be a UUID (a task's, an audit
/// record's), in canonical form; `what` names it in the refusal.
pub fn canonical_uuid(what: &str, id: &str) -> Result<String, crate::error::SdkError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            crate::error::SdkError::invalid(format!(
                "{what} {:?} is not a UUID",
                crate::text::truncate(id, crate::text::MAX_QUOTED_ID_BYTES)
            ))
        })
}

/// A new request id: a UUIDv7, so ids sort by time in logs.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_control_characters_and_overlong_values() {
        assert!("alice".parse::<UserId>().is_ok());
        assert!("user:42@example.org".parse::<UserId>().is_ok());
        assert!("".parse::<UserId>().is_err());
        assert!("a\nb".parse::<UserId>().is_err());
        assert!("a b".parse::<OrgId>().is_err());
        assert!("x".repeat(MAX_ID_BYTES + 1).parse::<OrgId>().is_err());
    }

    #[test]
    fn an_organizations_data_directory_is_never_a_planted_symlink() {
        let data = tempfile::tempdir().unwrap();
        let acme: OrgId = "acme".parse().unwrap();
        let dir = acme.ensure_data_dir_in(data.path()).unwrap();
        assert_eq!(dir, data.path().join("org-acme"));
        assert_eq!(acme.ensure_data_dir_in(data.path()).unwrap(), dir);
        let dots: OrgId = "..".parse().unwrap();
        assert_eq!(dots.data_dir_in(data.path()), data.path().join("org-.."));
        let victim: OrgId = "victim".parse().unwrap();
        std::os::unix::fs::symlink("/etc", data.path().join("org-victim")).unwrap();
        assert!(victim.ensure_data_dir_in(data.path()).is_err());
    }

    #[test]
    fn the_loader_identity_cannot_be_a_real_organization() {
        let loader = Identity::loader("m");
        assert!(loader.is_loader());
        assert!(LOADER_ID.parse::<OrgId>().is_err());
    }

    #[test]
    fn role_parses_only_known_names() {
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
