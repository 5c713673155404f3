//! MCP on the wire, downstream: the protocol revisions the gateway speaks and what each one
//! allows (every rule that depends on the revision asks [`ProtocolVersion`]; nothing else
//! compares dates), the headers, and content negotiation.

use std::fmt;

use http::{HeaderMap, HeaderName};

use crate::GatewayError;

// The MCP headers, named once for the gateway and the web layer. Names, not strings: a lookup
// by name skips parsing the name on every request.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
pub const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// A header's value, when it is text.
pub(crate) fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the request's `MCP-Protocol-Version` header declares; a revision the gateway does
/// not speak is refused (`-32022` from 2026-07-28 on, a 400 before).
pub(crate) fn declared_version(headers: &HeaderMap) -> Result<Declared, GatewayError> {
    match headers.get(VERSION_HEADER) {
        None => Ok(Declared::Absent),
        Some(v) => {
            let v = v.to_str().map_err(|_| GatewayError::UnsupportedProtocolVersion("(not text)".into()))?;
            ProtocolVersion::parse(v).map(Declared::Version).map_err(|e| GatewayError::UnsupportedProtocolVersion(e.0))
        }
    }
}

/// Whether the client accepts `media` (or anything).
pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers.get_all(http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|part| {
            let m = part.split(';').next().unwrap_or_default().trim();
            m.eq_ignore_ascii_case(media) || m == "*/*"
        })
    })
}

/// Whether the body is declared as JSON.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    header(headers, http::header::CONTENT_TYPE)
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// A revision of the MCP specification, in order: a later revision compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// HTTP+SSE (the "legacy SSE" transport); no `MCP-Protocol-Version` header yet.
    V2024_11_05,
    /// Streamable HTTP and sessions; the only revision with JSON-RPC batches.
    V2025_03_26,
    V2025_06_18,
    /// URL-mode elicitation.
    V2025_11_25,
    /// No sessions: every request stands alone, `Mcp-Method`/`Mcp-Name` mirror the body.
    V2026_07_28,
}

/// The header value did not name a revision the gateway speaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported MCP protocol version {0:?}")]
pub struct UnknownVersion(pub String);

impl ProtocolVersion {
    pub const ALL: [Self; 5] =
        [Self::V2024_11_05, Self::V2025_03_26, Self::V2025_06_18, Self::V2025_11_25, Self::V2026_07_28];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2024_11_05 => "2024-11-05",
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// Exactly one of the revision strings; anything else (another date, other case, spaces)
    /// is not a revision the gateway speaks.
    pub fn parse(value: &str) -> Result<Self, UnknownVersion> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == value)
            .ok_or_else(|| UnknownVersion(crate::jsonrpc::excerpt(value, 32)))
    }

    /// Sessions (`Mcp-Session-Id`, a GET stream, DELETE) exist before 2026-07-28 only.
    pub fn has_sessions(self) -> bool {
        self < Self::V2026_07_28
    }

    /// From 2026-07-28, `Mcp-Method` (and `Mcp-Name` where the method names something) must
    /// accompany every request, and clients send no JSON-RPC responses.
    pub fn is_stateless(self) -> bool {
        !self.has_sessions()
    }

    /// JSON-RPC batches were allowed in 2025-03-26 alone.
    pub fn allows_batches(self) -> bool {
        self == Self::V2025_03_26
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request's `MCP-Protocol-Version` header says. Without the header a request is taken
/// as the session's (or, with no session, as 2025-03-26 asks servers to assume): in either case
/// one that has sessions and may batch, so `Absent` answers the rules that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Absent,
    Version(ProtocolVersion),
}

impl Declared {
    pub fn has_sessions(self) -> bool {
        match self {
            Self::Absent => true,
            Self::Version(v) => v.has_sessions(),
        }
    }

    pub fn is_stateless(self) -> bool {
        !self.has_sessions()
    }

    pub fn allows_batches(self) -> bool {
        match self {
            Self::Absent => true,
            Self::Version(v) => v.allows_batches(),
        }
    }

    pub fn version(self) -> Option<ProtocolVersion> {
        match self {
            Self::Absent => None,
            Self::Version(v) => Some(v),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    /// A header map from static pairs (the data path's tests use it too).
    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_negotiation() {
        assert!(accepts(&headers(&[("accept", "application/json, text/event-stream")]), "text/event-stream"));
        assert!(accepts(&headers(&[("accept", "text/event-stream;q=0.9")]), "text/event-stream"));
        assert!(accepts(&headers(&[("accept", "*/*")]), "application/json"));
        assert!(!accepts(&headers(&[("accept", "text/html")]), "application/json"));
        assert!(is_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert_eq!(
            declared_version(&headers(&[("mcp-protocol-version", "2025-06-18")])).ok(),
            Some(Declared::Version(ProtocolVersion::V2025_06_18))
        );
        assert_eq!(declared_version(&headers(&[])).ok(), Some(Declared::Absent));
        assert!(declared_version(&headers(&[("mcp-protocol-version", "2025-13-01")])).is_err());
    }

    #[test]
    fn each_revision_parses_and_its_rules_follow_the_specification() {
        // (header, sessions, batches)
        let cases = [
            ("2024-11-05", true, false),
            ("2025-03-26", true, true),
            ("2025-06-18", true, false),
            ("2025-11-25", true, false),
            ("2026-07-28", false, false),
        ];
        for (header, sessions, batches) in cases {
            let Ok(v) = ProtocolVersion::parse(header) else { unreachable!("{header} is a revision") };
            assert_eq!(v.as_str(), header);
            assert_eq!(v.has_sessions(), sessions, "{header}");
            assert_eq!(v.is_stateless(), !sessions, "{header}");
            assert_eq!(v.allows_batches(), batches, "{header}");
        }
        assert!(Declared::Absent.has_sessions() && Declared::Absent.allows_batches());
    }

    #[test]
    fn anything_but_an_exact_revision_is_refused() {
        for header in ["2025-13-01", "2025-06-18 ", "2026-07-29", "", "latest", "2099-01-01"] {
            assert!(ProtocolVersion::parse(header).is_err(), "{header:?}");
        }
        let long = "9".repeat(100);
        assert!(ProtocolVersion::parse(&long).unwrap_err().0.len() < 40, "echoed as an excerpt");
    }

    #[test]
    fn revisions_are_ordered_by_date() {
        assert!(ProtocolVersion::ALL.windows(2).all(|w| w[0] < w[1] && w[0].as_str() < w[1].as_str()));
    }
}
