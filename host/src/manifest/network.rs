//! `[network]`: the outbound hosts a module may reach, as `host:port` or
//! `scheme://host[:port]`, and the caps on each request.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::text::shown;

/// The most `[network] allow` entries: a grant that needs more hosts than
/// this is better expressed with a wildcard the operator can read.
pub const MAX_NETWORK_ALLOW: usize = 64;

/// The longest DNS name (RFC 1035).
const MAX_HOST_BYTES: usize = 253;

/// The longest DNS label (RFC 1035).
const MAX_LABEL_BYTES: usize = 63;

/// The scheme of a request, or the one a destination is limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One allowed destination: an exact host, or `*.` plus a domain (its
/// subdomains, not the domain itself), one port, and optionally one scheme
/// (`https://api.example.com` is port 443 over TLS only; `api.example.com:443`
/// any scheme on that port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    scheme: Option<Scheme>,
    host: HostMatch,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostMatch {
    /// A DNS name in lower case, without a trailing dot.
    Exact(String),
    /// The domain after `*.`, in lower case.
    Subdomains(String),
    Ip(IpAddr),
}

/// Why a string is not a [`HostPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHostPattern {
    #[error(
        "a destination is `host:port` or `scheme://host[:port]`, as in `api.example.com:443` or `https://api.example.com`"
    )]
    MissingPort,
    #[error("the scheme `{0}` is not `http` or `https`")]
    BadScheme(String),
    #[error(
        "a destination names a host, not a path: drop everything from the first `/` after the host"
    )]
    PathGiven,
    #[error("a bare `*` would allow every host")]
    BareWildcard,
    #[error("`*` is allowed only as the whole first label, as in `*.example.com:443`")]
    MisplacedWildcard,
    #[error("a wildcard applies to DNS names, not IP addresses")]
    IpWildcard,
    #[error("a wildcard needs a domain of at least two labels after `*.`")]
    WildcardTooBroad,
    #[error("port `{0}` is not a decimal number in 1..=65535")]
    BadPort(String),
    #[error("an IPv6 address goes in brackets, as in `[::1]:443`")]
    UnbracketedIpv6,
    #[error("`{0}` is not an IPv6 address")]
    BadIpv6(String),
    #[error("a host name must be at most 253 characters long")]
    HostTooLong,
    #[error(
        "a host name must be dot-separated labels of ASCII letters, digits and `-` (1 to 63 characters, no `-` at either end)"
    )]
    BadHost,
    #[error("a host name's last label must not be all digits (an IPv4 address has four numbers)")]
    NumericTld,
}

impl HostPattern {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address this pattern names, if it names one.
    pub fn address(&self) -> Option<IpAddr> {
        match self.host {
            HostMatch::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    /// Whether this pattern names an address rather than a DNS name: only
    /// such a grant reaches an internal address (see `crate::network`).
    pub fn is_address(&self) -> bool {
        matches!(self.host, HostMatch::Ip(_))
    }

    /// Whether a request to `host:port` over `scheme` is allowed by this
    /// pattern. `host` is compared case-insensitively, a trailing dot
    /// ignored, and an IPv6 address may come with or without brackets.
    pub fn matches(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if port != self.port || self.scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.host == HostMatch::Ip(ip);
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostMatch::Exact(name) => *name == host,
            HostMatch::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .and_then(|sub| sub.strip_suffix('.'))
                .is_some_and(|sub| !sub.is_empty()),
            HostMatch::Ip(_) => false,
        }
    }
}

impl FromStr for HostPattern {
    type Err = InvalidHostPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            return Err(InvalidHostPattern::BareWildcard);
        }
        let (scheme, s) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(parse_scheme(scheme)?), rest),
            None => (None, s),
        };
        if s.contains('/') {
            return Err(InvalidHostPattern::PathGiven);
        }
        if let Some(scheme) = scheme
            && !has_port(s)
        {
            return Ok(Self {
                scheme: Some(scheme),
                host: parse_bare_host(s)?,
                port: scheme.default_port(),
            });
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (addr, port) = rest
                .split_once("]:")
                .ok_or(InvalidHostPattern::MissingPort)?;
            let ip = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| InvalidHostPattern::BadIpv6(shown(addr)))?;
            (HostMatch::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or(InvalidHostPattern::MissingPort)?;
            if host.contains(':') {
                return Err(InvalidHostPattern::UnbracketedIpv6);
            }
            (parse_host(host)?, port)
        };
        Ok(Self {
            scheme,
            host,
            port: parse_port(port)?,
        })
    }
}

fn parse_scheme(scheme: &str) -> Result<Scheme, InvalidHostPattern> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(Scheme::Http),
        "https" => Ok(Scheme::Https),
        _ => Err(InvalidHostPattern::BadScheme(shown(scheme))),
    }
}

/// Whether `host[:port]` (after a scheme) ends in a port.
fn has_port(s: &str) -> bool {
    match s.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => s.contains(':'),
    }
}

/// A host with no port: a name, a wildcard, an IPv4 or a bracketed IPv6.
fn parse_bare_host(s: &str) -> Result<HostMatch, InvalidHostPattern> {
    if let Some(rest) = s.strip_prefix('[') {
        let addr = rest
            .strip_suffix(']')
            .ok_or_else(|| InvalidHostPattern::BadIpv6(shown(rest)))?;
        let ip = addr
            .parse::<Ipv6Addr>()
            .map_err(|_| InvalidHostPattern::BadIpv6(shown(addr)))?;
        return Ok(HostMatch::Ip(IpAddr::V6(ip)));
    }
    parse_host(s)
}

fn parse_port(port: &str) -> Result<u16, InvalidHostPattern> {
    let bad = || InvalidHostPattern::BadPort(shown(port));
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(p) => Ok(p),
    }
}

fn parse_host(host: &str) -> Result<HostMatch, InvalidHostPattern> {
    if host == "*" {
        return Err(InvalidHostPattern::BareWildcard);
    }
    if let Some(domain) = host.strip_prefix("*.") {
        if domain.contains('*') {
            return Err(InvalidHostPattern::MisplacedWildcard);
        }
        if domain.parse::<Ipv4Addr>().is_ok() || looks_numeric(domain) {
            return Err(InvalidHostPattern::IpWildcard);
        }
        let domain = dns_name(domain)?;
        if !domain.contains('.') {
            return Err(InvalidHostPattern::WildcardTooBroad);
        }
        return Ok(HostMatch::Subdomains(domain));
    }
    if host.contains('*') {
        return Err(InvalidHostPattern::MisplacedWildcard);
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(HostMatch::Ip(IpAddr::V4(ip)));
    }
    Ok(HostMatch::Exact(dns_name(host)?))
}

/// Dotted digits that are not a full IPv4 address (`*.0.0.1`, `10.0`).
fn looks_numeric(host: &str) -> bool {
    host.split('.')
        .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()))
}

/// A checked DNS name in lower case.
fn dns_name(host: &str) -> Result<String, InvalidHostPattern> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() > MAX_HOST_BYTES {
        return Err(InvalidHostPattern::HostTooLong);
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_BYTES
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(InvalidHostPattern::BadHost);
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(InvalidHostPattern::NumericTld);
    }
    Ok(host.to_ascii_lowercase())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = self.scheme {
            write!(f, "{}://", scheme.as_str())?;
            if self.port == scheme.default_port() {
                return match &self.host {
                    HostMatch::Exact(name) => f.write_str(name),
                    HostMatch::Subdomains(domain) => write!(f, "*.{domain}"),
                    HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
                    HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
                };
            }
        }
        match &self.host {
            HostMatch::Exact(name) => write!(f, "{name}:{}", self.port),
            HostMatch::Subdomains(domain) => write!(f, "*.{domain}:{}", self.port),
            HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// `[network]`: outbound destinations and the caps on each request. Empty
/// `allow` (the default) allows nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    pub allow: Vec<HostPattern>,
    /// The most bytes one response body may carry.
    pub max_response_bytes: u64,
    /// How long a request may wait for the response's headers.
    pub first_byte_timeout: Duration,
    /// How long one request may take, body included.
    pub timeout: Duration,
    /// Requests of the module open at once, host-wide.
    pub max_concurrent: u32,
}

impl NetworkGrant {
    /// The first pattern that allows a request to `host:port` over
    /// `scheme`.
    pub fn allowing(&self, scheme: Scheme, host: &str, port: u16) -> Option<&HostPattern> {
        self.allow.iter().find(|p| p.matches(scheme, host, port))
    }

    /// Whether any allowed pattern matches.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.allowing(scheme, host, port).is_some()
    }

    /// A grant of `patterns` with the default caps, for tests.
    #[cfg(test)]
    pub(crate) fn of(patterns: &[&str]) -> Self {
        NetworkGrant {
            allow: patterns.iter().map(|p| p.parse().unwrap()).collect(),
            ..NetworkGrant::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Scheme::{Http, Https};

    fn grant(patterns: &[&str]) -> NetworkGrant {
        NetworkGrant::of(patterns)
    }

    #[test]
    fn exact_host_matches_only_itself_on_its_port() {
        let g = grant(&["api.example.com:443"]);
        assert!(g.allows(Https, "api.example.com", 443));
        assert!(g.allows(Https, "API.Example.COM.", 443));
        assert!(!g.allows(Https, "api.example.com", 80));
        assert!(!g.allows(Https, "evil-api.example.com", 443));
        assert!(!g.allows(Https, "api.example.com.evil.org", 443));
    }

    #[test]
    fn wildcard_matches_subdomains_but_not_the_domain_or_lookalikes() {
        let g = grant(&["*.example.org:443"]);
        assert!(g.allows(Https, "a.example.org", 443));
        assert!(g.allows(Https, "a.b.example.org", 443));
        assert!(!g.allows(Https, "example.org", 443));
        assert!(!g.allows(Https, "badexample.org", 443));
        assert!(!g.allows(Https, ".example.org", 443));
    }

    #[test]
    fn ip_patterns_match_addresses_not_names() {
        let g = grant(&["10.0.0.1:5432", "[::1]:8080"]);
        assert!(g.allows(Https, "10.0.0.1", 5432));
        assert!(g.allows(Https, "::1", 8080));
        assert!(g.allows(Https, "[::1]", 8080));
        assert!(!g.allows(Https, "10.0.0.2", 5432));
    }

    #[test]
    fn a_scheme_limits_a_destination_to_it_and_defaults_its_port() {
        let g = grant(&["https://api.example.com", "http://10.0.0.1:8080"]);
        assert!(g.allows(Https, "api.example.com", 443));
        assert!(!g.allows(Http, "api.example.com", 443));
        assert!(!g.allows(Https, "api.example.com", 80));
        assert!(g.allows(Http, "10.0.0.1", 8080));
        assert!(!g.allows(Https, "10.0.0.1", 8080));
        let any = grant(&["api.example.com:8443"]);
        assert!(any.allows(Http, "api.example.com", 8443));
        assert!(any.allows(Https, "api.example.com", 8443));
    }

    #[test]
    fn only_address_patterns_count_as_naming_an_address() {
        let g = grant(&["127.0.0.1:8080", "localhost:8080"]);
        assert!(g.allowing(Http, "127.0.0.1", 8080).unwrap().is_address());
        assert!(!g.allowing(Http, "localhost", 8080).unwrap().is_address());
    }

    #[test]
    fn empty_grant_allows_nothing() {
        assert!(!NetworkGrant::default().allows(Http, "localhost", 80));
    }

    #[test]
    fn malformed_patterns_are_refused_with_their_reason() {
        let cases = [
            ("*", InvalidHostPattern::BareWildcard),
            ("*:443", InvalidHostPattern::BareWildcard),
            ("example.com", InvalidHostPattern::MissingPort),
            ("a.*.example.com:443", InvalidHostPattern::MisplacedWildcard),
            ("*example.com:443", InvalidHostPattern::MisplacedWildcard),
            ("*.10.0.0:443", InvalidHostPattern::IpWildcard),
            ("*.com:443", InvalidHostPattern::WildcardTooBroad),
            ("example.com:0", InvalidHostPattern::BadPort("0".into())),
            (
                "example.com:65536",
                InvalidHostPattern::BadPort("65536".into()),
            ),
            ("example.com:+1", InvalidHostPattern::BadPort("+1".into())),
            ("::1:443", InvalidHostPattern::UnbracketedIpv6),
            ("bad_host.com:443", InvalidHostPattern::BadHost),
            ("-a.com:443", InvalidHostPattern::BadHost),
            ("10.0.0:443", InvalidHostPattern::NumericTld),
            (
                "ftp://example.com",
                InvalidHostPattern::BadScheme("ftp".into()),
            ),
            ("https://example.com/x", InvalidHostPattern::PathGiven),
            ("example.com:443/", InvalidHostPattern::PathGiven),
            ("https://*", InvalidHostPattern::BareWildcard),
            ("https://[::1", InvalidHostPattern::BadIpv6("::1".into())),
        ];
        for (text, reason) in cases {
            assert_eq!(text.parse::<HostPattern>(), Err(reason), "{text}");
        }
    }

    #[test]
    fn patterns_display_in_normal_form() {
        let p: HostPattern = "*.Example.ORG:443".parse().unwrap();
        assert_eq!(p.to_string(), "*.example.org:443");
        let p: HostPattern = "HTTPS://Api.Example.com:443".parse().unwrap();
        assert_eq!(p.to_string(), "https://api.example.com");
        let p: HostPattern = "http://[::1]:8080".parse().unwrap();
        assert_eq!(p.to_string(), "http://[::1]:8080");
    }
}
