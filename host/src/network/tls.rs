//! The roots outbound TLS trusts: the Mozilla roots (webpki-roots), and the
//! PEM files an operator adds (a company's own certificate authority, a
//! test one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How outbound requests are made, host-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkOptions {
    /// PEM files of root certificates trusted beside the Mozilla roots
    /// (none by default).
    pub extra_roots: Vec<PathBuf>,
}

/// Why the roots could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsRootsError {
    #[error("cannot read the TLS roots file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the TLS roots file {path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error("the TLS roots file {path} holds a certificate rustls refuses: {reason}")]
    Refused { path: PathBuf, reason: String },
}

/// The TLS configuration of every outbound request of a host.
pub fn client_config(options: &NetworkOptions) -> Result<Arc<rustls::ClientConfig>, TlsRootsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    for path in &options.extra_roots {
        for cert in read_pem(path)? {
            roots.add(cert).map_err(|e| TlsRootsError::Refused {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsRootsError> {
    let read = |reason: String| TlsRootsError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsRootsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mozilla_roots_are_trusted_with_no_extra_file() {
        assert!(client_config(&NetworkOptions::default()).is_ok());
    }

    #[test]
    fn a_roots_file_that_is_missing_or_holds_no_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (path, want) in [(missing, "cannot read"), (empty, "holds no PEM")] {
            let options = NetworkOptions {
                extra_roots: vec![path.clone()],
            };
            let e = client_config(&options).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains(&path.display().to_string()),
                "{e}"
            );
        }
    }
}
