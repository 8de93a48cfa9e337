//! The API origin that a token may be sent to.

use std::fmt;
use std::net::IpAddr;

use http::Uri;

use crate::error::Error;

/// A scheme, host and port, compared the way browsers compare origins.
///
/// Hosts compare without regard to ASCII case or a trailing dot, and a missing port equals
/// the scheme's default (80 for `http`, 443 for `https`).
///
/// ```
/// use resq_auth::Origin;
///
/// let origin = Origin::from_uri(&"https://API.resq.software/v1".parse()?)?;
/// assert!(origin.matches(&"https://api.resq.software:443/evidence".parse()?));
/// assert!(!origin.matches(&"http://api.resq.software/evidence".parse()?));
/// assert!(!origin.matches(&"https://api.resq.software:8443/evidence".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
    /// `host:port`, compared with a request's authority before parsing it.
    authority: String,
}

impl Origin {
    /// Takes the origin of an absolute URI.
    ///
    /// # Errors
    ///
    /// Returns a [`Config`](crate::ErrorKind::Config) error when `uri` has no scheme or host,
    /// or has a scheme other than `http` and `https` with no port.
    pub fn from_uri(uri: &Uri) -> Result<Self, Error> {
        // The message must not repeat such a URI, because the user information may hold
        // a password.
        if uri
            .authority()
            .is_some_and(|authority| authority.as_str().contains('@'))
        {
            return Err(Error::config(
                "API URI contains user information (`user:password@`); remove it and pass \
                 the credentials through Credentials",
            ));
        }
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(Error::config(format!(
                "API URI `{uri}` is not absolute; write it with a scheme and host, \
                 for example https://api.resq.software"
            )));
        };
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = uri.port_u16().or_else(|| default_port(&scheme)) else {
            return Err(Error::config(format!(
                "API URI `{uri}` has the scheme `{scheme}` and no port; use http or https, \
                 or write the port"
            )));
        };
        let host = normalize_host(host).to_ascii_lowercase();
        Ok(Origin {
            authority: format!("{host}:{port}"),
            host,
            scheme,
            port,
        })
    }

    /// Returns `true` when a request for `uri` goes to this origin.
    ///
    /// A URI without a host, such as the path-only URIs that tonic passes down a client
    /// stack, matches: its destination is whatever the inner service connects to.
    pub fn matches(&self, uri: &Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return true;
        };
        let scheme = uri.scheme_str().unwrap_or("http");
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        // The usual case, an authority written exactly as `host:port` or `host`, needs no
        // parsing of the host and port.
        if authority.as_str().eq_ignore_ascii_case(&self.authority) {
            return true;
        }
        if authority.as_str().eq_ignore_ascii_case(&self.host)
            && default_port(&self.scheme) == Some(self.port)
        {
            return true;
        }
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().or_else(|| default_port(&self.scheme));
        port == Some(self.port) && same_host(host, &self.host)
    }

    /// Returns `true` for `https`.
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// Returns `true` when the host is `localhost`, in 127.0.0.0/8 or `::1`.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// Returns an error unless credentials may be sent to this origin: over `https`, or
    /// over plain `http` to a loopback host or when `allow_http` is set.
    pub(crate) fn check_transport(&self, allow_http: bool) -> Result<(), Error> {
        if self.is_https() || self.is_loopback() || allow_http {
            return Ok(());
        }
        Err(Error::config(format!(
            "refusing to send ResQ credentials over plain http to {self}; use https, or call \
             allow_insecure_http(true) if this network is trusted"
        )))
    }
}

/// Returns `true` when two hosts name the same machine: equal names without regard to
/// ASCII case or a trailing dot, or equal IP addresses however they are written, such as
/// `[::1]` and `[0:0:0:0:0:0:0:1]`.
fn same_host(host: &str, other: &str) -> bool {
    let host = normalize_host(host);
    if host.eq_ignore_ascii_case(other) {
        return true;
    }
    match (parse_ip(host), parse_ip(other)) {
        (Some(ip), Some(other_ip)) => ip == other_ip,
        _ => false,
    }
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Returns `true` for `localhost` in any case, an address in 127.0.0.0/8 and `[::1]`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = normalize_host(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    parse_ip(host).is_some_and(|ip| ip.is_loopback())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn normalize_host(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(uri: &str) -> Origin {
        Origin::from_uri(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn matches_same_origin_with_default_port() {
        let api = origin("https://api.resq.software");
        assert!(api.matches(&"https://api.resq.software/evidence".parse().unwrap()));
        assert!(api.matches(&"https://API.ResQ.software:443/x".parse().unwrap()));
        assert!(api.matches(&"https://api.resq.software./x".parse().unwrap()));
    }

    #[test]
    fn rejects_other_scheme_host_or_port() {
        let api = origin("https://api.resq.software");
        assert!(!api.matches(&"http://api.resq.software/x".parse().unwrap()));
        assert!(!api.matches(&"https://evil.example/x".parse().unwrap()));
        assert!(!api.matches(&"https://api.resq.software:8443/x".parse().unwrap()));
        assert!(!api.matches(&"https://api.resq.software.evil.example/x".parse().unwrap()));
    }

    #[test]
    fn non_default_port_needs_port_in_uri() {
        let api = origin("https://api.resq.software:8443");
        assert!(api.matches(&"https://api.resq.software:8443/x".parse().unwrap()));
        assert!(!api.matches(&"https://api.resq.software/x".parse().unwrap()));
        assert!(!api.matches(&"https://api.resq.software:443/x".parse().unwrap()));
    }

    #[test]
    fn user_information_in_request_uri_still_matches_host() {
        let api = origin("https://api.resq.software");
        assert!(api.matches(&"https://someone@api.resq.software/x".parse().unwrap()));
        assert!(!api.matches(&"https://api.resq.software@evil.example/x".parse().unwrap()));
    }

    #[test]
    fn ipv6_forms_of_one_address_match() {
        let api = origin("http://[::1]:8080");
        assert!(api.matches(&"http://[0:0:0:0:0:0:0:1]:8080/x".parse().unwrap()));
        assert!(api.matches(&"http://[::1]:8080/x".parse().unwrap()));
        assert!(!api.matches(&"http://[::2]:8080/x".parse().unwrap()));
        assert!(!api.matches(&"http://127.0.0.1:8080/x".parse().unwrap()));
    }

    #[test]
    fn path_only_uri_matches() {
        let api = origin("http://127.0.0.1:8080");
        assert!(api.matches(&"/grpc.health.v1.Health/Check".parse().unwrap()));
    }

    #[test]
    fn loopback_hosts() {
        assert!(origin("http://127.0.0.1:1").is_loopback());
        assert!(origin("http://127.8.9.10:1").is_loopback());
        assert!(origin("http://[::1]:1").is_loopback());
        assert!(origin("http://LOCALHOST:1").is_loopback());
        assert!(!origin("http://10.0.0.1:1").is_loopback());
        assert!(!origin("http://api.resq.software").is_loopback());
    }

    #[test]
    fn plain_http_rejected_for_remote_host() {
        let error = origin("http://api.resq.software")
            .check_transport(false)
            .unwrap_err();
        assert!(error.is_config());
        assert!(error.to_string().contains("http://api.resq.software:80"));
        assert!(
            origin("http://api.resq.software")
                .check_transport(true)
                .is_ok()
        );
        assert!(origin("http://127.0.0.1:9").check_transport(false).is_ok());
    }

    #[test]
    fn user_information_is_rejected_without_echo() {
        let uri = "https://operator:hunter2@api.resq.software"
            .parse()
            .unwrap();
        let error = Origin::from_uri(&uri).unwrap_err();
        assert!(error.is_config());
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
    }

    #[test]
    fn relative_uri_is_config_error() {
        let error = Origin::from_uri(&"/login".parse().unwrap()).unwrap_err();
        assert!(error.is_config());
    }
}
