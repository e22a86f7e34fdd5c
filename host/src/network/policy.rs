//! Deciding a request: which destinations the grant allows, and which of
//! the addresses a name resolves to it may reach.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::address;
use crate::manifest::{HostPattern, NetworkGrant, Scheme};

/// What a module's calls carry into the network room: its grant, and the
/// places of its requests open at once.
pub struct ModuleNetwork {
    pub(super) module: String,
    pub(super) grant: Arc<NetworkGrant>,
    pub(super) open: Arc<Semaphore>,
    /// The host's TLS configuration (its trusted roots).
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// While the host learns this module: the grant widened by each
    /// destination its learning calls were refused for want of a grant.
    learned: Option<Mutex<Arc<NetworkGrant>>>,
}

/// Destinations one learned module may add to its grant: a manifest lists
/// what an operator reads before granting it, and a module crawling the
/// web would otherwise grow its grant without end.
pub const MAX_LEARNED_DESTINATIONS: usize = 256;

impl std::fmt::Debug for ModuleNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleNetwork")
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl ModuleNetwork {
    /// Deny by default: an empty grant refuses every request. `tls` is the
    /// host's ([`super::client_config`]).
    pub fn new(module: &str, grant: NetworkGrant, tls: Arc<rustls::ClientConfig>) -> Self {
        let places = usize::try_from(grant.max_concurrent).unwrap_or(usize::MAX);
        ModuleNetwork {
            module: module.to_owned(),
            grant: Arc::new(grant),
            open: Arc::new(Semaphore::new(places)),
            tls,
            learned: None,
        }
    }

    /// The same, learning: a learning call's request refused for want of a
    /// grant widens the grant by its destination, exactly as a manifest
    /// would name it (`scheme://host:port`). What a grant of the name
    /// would still refuse (an internal address it resolves to, a busy
    /// module) is refused as ever.
    pub fn learning(mut self) -> Self {
        self.learned = Some(Mutex::new(self.grant.clone()));
        self
    }

    /// The manifest's grant.
    pub fn grant(&self) -> &NetworkGrant {
        &self.grant
    }

    /// The grant a call's requests run under: the learned one for a call
    /// the host learns from.
    pub(super) fn grant_for(&self, learning: bool) -> Arc<NetworkGrant> {
        match (&self.learned, learning) {
            (Some(learned), true) => learned.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            _ => self.grant.clone(),
        }
    }

    /// The learned grant widened by the destination `refusal` names, when
    /// the module is learned and the refusal is one for want of a grant.
    /// An internal address is never learned (it reaches a module only when
    /// an operator names it), nor a host with a wildcard in it.
    pub(super) fn learn(&self, refusal: &Refusal) -> Option<Arc<NetworkGrant>> {
        let (Some(learned), Refusal::NotGranted { destination }) = (&self.learned, refusal) else {
            return None;
        };
        if destination.contains('*') {
            return None;
        }
        let pattern: HostPattern = destination.parse().ok()?;
        if pattern.address().is_some_and(address::is_internal) {
            tracing::info!(module = %self.module, %destination, "learning does not grant an internal address: name it in [network] allow");
            return None;
        }
        let mut learned = learned.lock().unwrap_or_else(|p| p.into_inner());
        if !learned.allow.contains(&pattern) {
            if learned.allow.len() - self.grant.allow.len() >= MAX_LEARNED_DESTINATIONS {
                tracing::warn!(module = %self.module, "learning stopped adding destinations: {MAX_LEARNED_DESTINATIONS} were learned");
                return None;
            }
            let mut grant = (**learned).clone();
            grant.allow.push(pattern);
            *learned = Arc::new(grant);
        }
        Some(learned.clone())
    }
}

/// The host a request names: a DNS name in lower case, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Ip(IpAddr),
}

/// A request's destination, allowed by the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    pub target: Target,
    pub port: u16,
    /// Whether the grant named this address itself, so that it may be
    /// internal.
    pub by_address: bool,
}

impl Target {
    /// As a URL names it: an IPv6 address in brackets.
    fn shown(&self) -> String {
        match self {
            Target::Name(name) => name.clone(),
            Target::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Target::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

impl Destination {
    /// The `host` header of a request to it: the host, and the port unless
    /// it is the scheme's.
    pub fn host_header(&self) -> String {
        let host = self.target.shown();
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, host) = (self.scheme.as_str(), self.target.shown());
        write!(f, "{scheme}://{host}:{}", self.port)
    }
}

/// Why a request was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request's URL has no host")]
    NoHost,
    #[error("the request's authority `{0}` is not `host[:port]` with a port in 1..=65535")]
    Authority(String),
    #[error("the scheme `{0}` is not http or https")]
    Scheme(String),
    #[error("`{destination}` is not in the module's [network] allow")]
    NotGranted { destination: String },
    #[error(
        "`{destination}` resolves only to internal addresses ({address}); a name never reaches one: grant the address itself"
    )]
    Internal {
        destination: String,
        address: IpAddr,
    },
    #[error("`{destination}` did not resolve: {reason}")]
    Unresolved { destination: String, reason: String },
    #[error("the module has {max} requests open, its [network] max-concurrent")]
    Busy { max: u32 },
}

/// Decides whether `grant` allows a request to `uri`, before any lookup.
pub fn decide(grant: &NetworkGrant, uri: &http::Uri) -> Result<Destination, Refusal> {
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
        Some(other) => return Err(Refusal::Scheme(crate::text::shown(other))),
        None => Scheme::Https,
    };
    let authority = uri.authority().ok_or(Refusal::NoHost)?;
    // Credentials in the authority would travel in the `host` header to a
    // server that may route by it.
    if let Some((_, host)) = authority.as_str().rsplit_once('@') {
        // The user part may be a secret; the refusal names only the host.
        return Err(Refusal::Authority(crate::text::shown(&format!("…@{host}"))));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(Refusal::NoHost)?;
    // `http` reads a port it cannot parse (`:99999`, `:`) as none at all.
    let text = authority.as_str();
    let given = text
        .rfind(':')
        .filter(|i| !text[*i..].contains(']'))
        .map(|i| &text[i + 1..]);
    let port = match (given, uri.port_u16()) {
        (None, _) => scheme.default_port(),
        (Some(_), Some(p)) if p != 0 => p,
        (Some(_), _) => return Err(Refusal::Authority(crate::text::shown(text))),
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let target = match bare.parse::<IpAddr>() {
        Ok(ip) => Target::Ip(ip),
        Err(_) => Target::Name(host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()),
    };
    let shown = target.shown();
    let pattern: &HostPattern =
        grant
            .allowing(scheme, &shown, port)
            .ok_or_else(|| Refusal::NotGranted {
                destination: format!("{}://{shown}:{port}", scheme.as_str()),
            })?;
    Ok(Destination {
        scheme,
        by_address: pattern.is_address(),
        target,
        port,
    })
}

/// The addresses a request to `dest` may connect to, of those its name
/// resolved to: internal ones only when the grant named the address.
pub fn usable(dest: &Destination, resolved: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
    if dest.by_address {
        return Ok(resolved.to_vec());
    }
    let public: Vec<IpAddr> = resolved
        .iter()
        .copied()
        .filter(|ip| !address::is_internal(*ip))
        .collect();
    match (public.is_empty(), resolved.first()) {
        (false, _) => Ok(public),
        (true, Some(first)) => Err(Refusal::Internal {
            destination: dest.to_string(),
            address: *first,
        }),
        (true, None) => Err(Refusal::Unresolved {
            destination: dest.to_string(),
            reason: "no address".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learning() -> ModuleNetwork {
        let tls =
            crate::network::client_config(&crate::network::NetworkOptions::default()).unwrap();
        ModuleNetwork::new("m", NetworkGrant::default(), tls).learning()
    }

    fn refused(grant: &NetworkGrant, url: &str) -> Refusal {
        decide(grant, &url.parse().unwrap()).unwrap_err()
    }

    #[test]
    fn learning_adds_a_public_destination_by_origin_and_never_an_internal_address_or_a_wildcard() {
        let m = learning();
        let why = refused(&m.grant_for(true), "https://93.184.216.34/x");
        let grant = m.learn(&why).expect("a public address is learned");
        assert!(decide(&grant, &"https://93.184.216.34/y".parse().unwrap()).is_ok());
        assert!(decide(&grant, &"http://93.184.216.34/y".parse().unwrap()).is_err());
        assert_eq!(m.grant_for(true).allow.len(), 1);
        assert!(
            m.grant_for(false).allow.is_empty(),
            "other calls keep the manifest's"
        );
        for internal in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/",
            "http://10.0.0.1/",
        ] {
            let why = refused(&m.grant_for(true), internal);
            assert!(m.learn(&why).is_none(), "{internal}");
        }
        let why = refused(&m.grant_for(true), "https://*.example.com/");
        assert!(m.learn(&why).is_none(), "a wildcard is not learned");
        assert_eq!(m.grant_for(true).allow.len(), 1);
    }

    fn grant(patterns: &[&str]) -> NetworkGrant {
        NetworkGrant::of(patterns)
    }

    fn uri(text: &str) -> http::Uri {
        text.parse().unwrap()
    }

    #[test]
    fn a_refused_authority_with_credentials_names_only_its_host() {
        let why = decide(
            &grant(&["https://api.example.com"]),
            &uri("https://user:s3cret@api.example.com/"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            why.contains("…@api.example.com") && !why.contains("s3cret"),
            "{why}"
        );
    }

    #[test]
    fn a_request_to_a_granted_host_is_decided_with_its_port() {
        let d = decide(
            &grant(&["https://api.example.com"]),
            &uri("https://API.example.com/v1?q=1"),
        )
        .unwrap();
        assert_eq!(d.target, Target::Name("api.example.com".into()));
        assert_eq!(
            (d.scheme, d.port, d.by_address),
            (Scheme::Https, 443, false)
        );
    }

    #[test]
    fn a_request_to_an_ungranted_host_port_or_scheme_is_refused_naming_it() {
        let g = grant(&["https://api.example.com", "10.0.0.1:8080"]);
        for (url, destination) in [
            ("https://evil.example.com/", "https://evil.example.com:443"),
            ("http://api.example.com/", "http://api.example.com:80"),
            (
                "https://api.example.com:8443/",
                "https://api.example.com:8443",
            ),
            ("http://10.0.0.2:8080/", "http://10.0.0.2:8080"),
        ] {
            assert_eq!(
                decide(&g, &uri(url)),
                Err(Refusal::NotGranted {
                    destination: destination.into()
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn an_address_grant_is_by_address_and_reaches_an_internal_address() {
        let g = grant(&["127.0.0.1:8080", "[::1]:8080"]);
        let d = decide(&g, &uri("http://127.0.0.1:8080/x")).unwrap();
        assert!(d.by_address);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(usable(&d, &[loopback]), Ok(vec![loopback]));
        assert!(decide(&g, &uri("http://[::1]:8080/")).unwrap().by_address);
    }

    #[test]
    fn a_granted_name_resolving_to_an_internal_address_is_refused() {
        let d = decide(&grant(&["localhost:8080"]), &uri("http://localhost:8080/")).unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            usable(&d, &[loopback]),
            Err(Refusal::Internal {
                destination: "http://localhost:8080".into(),
                address: loopback
            })
        );
        assert!(matches!(usable(&d, &[]), Err(Refusal::Unresolved { .. })));
    }

    #[test]
    fn a_name_resolving_to_public_and_internal_addresses_uses_only_the_public_ones() {
        let d = decide(
            &grant(&["*.example.com:443"]),
            &uri("https://a.example.com/"),
        )
        .unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "93.184.215.14".parse().unwrap();
        assert_eq!(usable(&d, &[metadata, public]), Ok(vec![public]));
    }

    #[test]
    fn credentials_and_bad_ports_in_the_authority_are_refused() {
        let g = grant(&["https://api.example.com", "api.example.com:8443"]);
        for url in [
            "https://admin.internal@api.example.com/",
            "https://api.example.com:0/",
            "https://api.example.com:99999/",
            "https://api.example.com:/",
        ] {
            assert!(
                matches!(decide(&g, &uri(url)), Err(Refusal::Authority(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn an_empty_grant_refuses_everything() {
        let r = decide(&NetworkGrant::default(), &uri("https://example.com/"));
        assert!(matches!(r, Err(Refusal::NotGranted { .. })));
        assert_eq!(
            decide(&grant(&["example.com:21"]), &uri("ftp://example.com:21/")).unwrap_err(),
            Refusal::Scheme("ftp".into())
        );
    }
}
