//! Redirect URI rules: what may be registered, and whether a presented URI matches.
//!
//! Matching is exact string comparison (RFC 9700 §2.1, OAuth 2.1 §7.5.3). The one exception
//! is RFC 8252 §7.3: for an `http` loopback redirect URI the port is chosen by the native app at
//! run time, so any port matches, and everything else must still be identical.

use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI {0:?} is not an absolute URI")]
    NotAbsolute(String),
    #[error("redirect URI {0:?} has a fragment, which OAuth forbids")]
    Fragment(String),
    #[error("redirect URI {0:?} uses http on a host that is not loopback; use https")]
    InsecureHttp(String),
    #[error("redirect URI {0:?} carries user information")]
    UserInfo(String),
    #[error("redirect URI {0:?} uses scheme {1:?}, which is not allowed")]
    Scheme(String, String),
    #[error("redirect URI {0:?} is not in canonical form (expected {1:?})")]
    NotCanonical(String, String),
}

/// The hosts that count as loopback for redirect URIs.
pub fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

/// Checks a URI someone wants to register. https anywhere; http only on loopback; a
/// private-use scheme (`com.example.app:/cb`, RFC 8252 §7.1) only when `allow_private_use`.
pub fn validate_redirect_uri(uri: &str, allow_private_use: bool) -> Result<(), RedirectUriError> {
    let parsed = Url::parse(uri).map_err(|_| RedirectUriError::NotAbsolute(uri.to_owned()))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err(RedirectUriError::Fragment(uri.to_owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(RedirectUriError::UserInfo(uri.to_owned()));
    }
    match parsed.scheme() {
        "https" => {}
        "http" => {
            if !parsed.host().as_ref().is_some_and(is_loopback_host) {
                return Err(RedirectUriError::InsecureHttp(uri.to_owned()));
            }
        }
        scheme @ ("javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss") => {
            return Err(RedirectUriError::Scheme(uri.to_owned(), scheme.to_owned()));
        }
        scheme if allow_private_use && scheme.contains('.') => {}
        scheme => return Err(RedirectUriError::Scheme(uri.to_owned(), scheme.to_owned())),
    }
    // Registered URIs are compared as strings, so they must already be what the URL parser
    // would make of them; otherwise `/cb/../x` could be registered and confuse people.
    if parsed.as_str() != uri {
        return Err(RedirectUriError::NotCanonical(uri.to_owned(), parsed.as_str().to_owned()));
    }
    Ok(())
}

/// Whether `presented` matches one of `registered` (see the module docs).
pub fn redirect_uri_matches<'a>(registered: &'a [String], presented: &str) -> Option<&'a str> {
    if let Some(exact) = registered.iter().find(|r| r.as_str() == presented) {
        return Some(exact);
    }
    let presented_url = Url::parse(presented).ok()?;
    // Only a presented URI already in canonical form can match by the loopback rule, so that
    // normalisation (dot segments, case, percent-encoding) can never make two strings equal.
    if presented_url.as_str() != presented || presented_url.scheme() != "http" {
        return None;
    }
    if !presented_url.host().as_ref().is_some_and(is_loopback_host) {
        return None;
    }
    let without_port = |mut u: Url| {
        let _ = u.set_port(None);
        u.to_string()
    };
    let presented_portless = without_port(presented_url);
    registered
        .iter()
        .find(|r| {
            Url::parse(r).ok().is_some_and(|u| {
                u.scheme() == "http"
                    && u.host().as_ref().is_some_and(is_loopback_host)
                    && without_port(u) == presented_portless
            })
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_match(registered: &[&str], presented: &str, expect: bool) {
        let registered: Vec<String> = registered.iter().map(|s| s.to_string()).collect();
        assert_eq!(redirect_uri_matches(&registered, presented).is_some(), expect, "{presented}");
    }

    #[test]
    fn exact_match_only_for_https() {
        let reg = ["https://c.test/cb"];
        check_match(&reg, "https://c.test/cb", true);
        for bad in [
            "https://c.test/cb/../x",
            "https://c.test/cb?x=1",
            "https://c.test/CB",
            "https://C.test/cb",
            "https://c.test/cb/",
            "https://c.test/cb%2f",
            "https://c.test%2fcb",
            "https://c.test@evil.test/cb",
            "https://evil.test@c.test/cb",
            "https://c.test:8443/cb",
            "https://c.test/cb#frag",
            "http://c.test/cb",
            "https://c.test.evil.test/cb",
        ] {
            check_match(&reg, bad, false);
        }
    }

    #[test]
    fn loopback_any_port_but_nothing_else() {
        let reg = ["http://127.0.0.1/callback", "http://localhost:3000/cb", "http://[::1]/cb"];
        check_match(&reg, "http://127.0.0.1:51234/callback", true);
        check_match(&reg, "http://127.0.0.1/callback", true);
        check_match(&reg, "http://localhost:9999/cb", true);
        check_match(&reg, "http://[::1]:4000/cb", true);
        check_match(&reg, "http://127.0.0.1:51234/callback/", false);
        check_match(&reg, "http://127.0.0.1:51234/callback?x", false);
        check_match(&reg, "http://127.0.0.1:51234/other", false);
        check_match(&reg, "http://127.0.0.1:51234/x/../callback", false);
        check_match(&reg, "https://127.0.0.1:51234/callback", false);
        check_match(&reg, "http://127.0.0.2:51234/callback", false);
        check_match(&reg, "http://localhost.evil.test:80/cb", false);
    }

    #[test]
    fn registration_rules() {
        assert_eq!(validate_redirect_uri("https://c.test/cb", false), Ok(()));
        assert_eq!(validate_redirect_uri("http://127.0.0.1:8000/cb", false), Ok(()));
        assert_eq!(validate_redirect_uri("http://localhost/cb", false), Ok(()));
        assert!(matches!(validate_redirect_uri("http://evil.test/cb", false), Err(RedirectUriError::InsecureHttp(_))));
        assert!(matches!(validate_redirect_uri("https://c.test/cb#x", false), Err(RedirectUriError::Fragment(_))));
        assert!(matches!(validate_redirect_uri("javascript:alert(1)", true), Err(RedirectUriError::Scheme(..))));
        assert!(matches!(validate_redirect_uri("com.example.app:/cb", false), Err(RedirectUriError::Scheme(..))));
        assert_eq!(validate_redirect_uri("com.example.app:/cb", true), Ok(()));
        assert!(matches!(
            validate_redirect_uri("https://c.test/a/../cb", false),
            Err(RedirectUriError::NotCanonical(..))
        ));
        assert!(matches!(validate_redirect_uri("https://u:p@c.test/cb", false), Err(RedirectUriError::UserInfo(_))));
        assert!(matches!(validate_redirect_uri("/cb", false), Err(RedirectUriError::NotAbsolute(_))));
    }
}
