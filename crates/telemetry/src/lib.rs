//! What Portcullis measures, in one place: metrics, and the spans of traces (`traces.rs`).
//!
//! Every metric is named, described and given its labels here; the rest of the workspace calls
//! these functions with typed arguments, so no label can take an unbounded value (a method
//! name a client made up, a status nobody planned for, an error text) and a metric cannot be
//! spelled two ways. Route and identity provider names come from the configuration, so they
//! are bounded by it. Without an installed recorder (no `[metrics] listen`) every call is a
//! cheap no-op of the `metrics` facade.
//!
//! Names follow Prometheus conventions: `portcullis_` prefix, base units (seconds), `_total`
//! on counters.

mod traces;

pub use traces::{continue_trace, enable_tracing, into_meta, message_span, propagation, trace_id, tracing_enabled};

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const GATEWAY_REQUESTS: &str = "portcullis_gateway_requests_total";
pub const GATEWAY_REQUEST_DURATION: &str = "portcullis_gateway_request_duration_seconds";
pub const GATEWAY_UPSTREAM_DURATION: &str = "portcullis_gateway_upstream_duration_seconds";
pub const GATEWAY_REFUSALS: &str = "portcullis_gateway_refusals_total";
pub const GATEWAY_SESSIONS: &str = "portcullis_gateway_sessions";
pub const GATEWAY_STDIO_CHILDREN: &str = "portcullis_gateway_stdio_children";
pub const UPSTREAM_ERRORS: &str = "portcullis_upstream_errors_total";
pub const HTTP_REQUESTS: &str = "portcullis_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "portcullis_http_request_duration_seconds";
pub const TOKENS_ISSUED: &str = "portcullis_tokens_issued_total";
pub const SIGN_INS: &str = "portcullis_signins_total";
pub const AUDIT_QUEUE_DEPTH: &str = "portcullis_audit_queue_depth";
pub const AUDIT_WRITTEN: &str = "portcullis_audit_records_written_total";
pub const AUDIT_DROPPED: &str = "portcullis_audit_records_dropped_total";
pub const AUDIT_CHECKPOINT: &str = "portcullis_audit_checkpoint_seq";
pub const CACHE_LOOKUPS: &str = "portcullis_cache_lookups_total";
pub const CHANGE_FEED_LAG: &str = "portcullis_change_feed_lag_seconds";
pub const CHANGE_FEED_CURRENT: &str = "portcullis_change_feed_current";

/// The histograms, for the exporter's bucket settings: latencies from 100 µs to 10 s.
pub const LATENCY_HISTOGRAMS: &[&str] = &[GATEWAY_REQUEST_DURATION, GATEWAY_UPSTREAM_DURATION, HTTP_REQUEST_DURATION];
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static METRICS: AtomicBool = AtomicBool::new(false);

/// Whether a recorder is installed: without one, nothing below builds its labels.
fn on() -> bool {
    METRICS.load(Ordering::Relaxed)
}

/// Describes every metric to the installed recorder (help text and unit in the exposition),
/// and turns recording on.
pub fn describe() {
    METRICS.store(true, Ordering::Relaxed);
    describe_counter!(GATEWAY_REQUESTS, "MCP messages the gateway decided, by route, method, decision and HTTP status");
    describe_histogram!(GATEWAY_REQUEST_DURATION, Unit::Seconds, "Time to answer a gateway request, upstream included");
    describe_histogram!(GATEWAY_UPSTREAM_DURATION, Unit::Seconds, "The upstream's share of a gateway request");
    describe_counter!(GATEWAY_REFUSALS, "Gateway requests or messages refused, by reason");
    describe_gauge!(GATEWAY_SESSIONS, "Live MCP sessions the gateway holds, by route");
    describe_gauge!(GATEWAY_STDIO_CHILDREN, "Running stdio upstream processes, by route");
    describe_counter!(UPSTREAM_ERRORS, "Upstreams that could not be reached or did not answer, by route and kind");
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by endpoint (route template), method and status");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "Time to answer an HTTP request, by endpoint");
    describe_counter!(TOKENS_ISSUED, "Access tokens issued, by grant type");
    describe_counter!(SIGN_INS, "Sign-ins, by identity provider (local for passwords) and outcome");
    describe_gauge!(AUDIT_QUEUE_DEPTH, "Gateway audit records waiting to be written");
    describe_counter!(AUDIT_WRITTEN, "Gateway audit records written to the chain");
    describe_counter!(AUDIT_DROPPED, "Gateway audit records that could not be written (must stay 0)");
    describe_gauge!(AUDIT_CHECKPOINT, "Place in the audit chain of the last checkpoint this node signed");
    describe_counter!(CACHE_LOOKUPS, "Cache lookups, by cache and result (hit or miss)");
    describe_gauge!(CHANGE_FEED_LAG, Unit::Seconds, "Seconds since this node last read the change log to its end");
    describe_gauge!(CHANGE_FEED_CURRENT, "1 while the change feed is current, 0 while the node fails closed");
    // Series that must be seen at 0, not be missing until the first event (an alert on
    // dropped records needs the series to exist).
    counter!(AUDIT_DROPPED).increment(0);
    counter!(AUDIT_WRITTEN).increment(0);
    gauge!(AUDIT_QUEUE_DEPTH).set(0.0);
}

/// An MCP method as a label: the methods of the specification, and `other` for anything else
/// a client sends (it chooses the string; the label set must stay bounded).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "tasks/get",
        "tasks/list",
        "tasks/cancel",
        "tasks/result",
        "GET",
        "POST",
        "DELETE",
    ];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// An HTTP status as a label: statuses are few, but not all are worth a series of their own.
pub fn status_label(status: u16) -> &'static str {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (302, "302"),
        (303, "303"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (406, "406"),
        (413, "413"),
        (415, "415"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if let Some((_, label)) = KNOWN.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What the gateway decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
}

impl Decision {
    fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// One decided message on a route.
pub fn gateway_message(route: &str, method: &str, decision: Decision, status: u16) {
    if !on() {
        return;
    }
    counter!(
        GATEWAY_REQUESTS,
        "route" => route.to_owned(),
        "method" => method_label(method),
        "decision" => decision.label(),
        "status" => status_label(status)
    )
    .increment(1);
}

/// How long one gateway request took, upstream included.
pub fn gateway_request_duration(route: &str, seconds: f64) {
    if !on() {
        return;
    }
    histogram!(GATEWAY_REQUEST_DURATION, "route" => route.to_owned()).record(seconds);
}

/// How long the upstream took to answer (to its first byte, for streamed answers).
pub fn gateway_upstream_duration(route: &str, seconds: f64) {
    if !on() {
        return;
    }
    histogram!(GATEWAY_UPSTREAM_DURATION, "route" => route.to_owned()).record(seconds);
}

/// Why the gateway refused a request or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token.
    TokenMissing,
    /// A token that is not valid, not for this route, or no longer active.
    InvalidToken,
    /// The token's issuer could not be asked (fails closed).
    IssuerUnavailable,
    /// The token lacks a scope the policy maps the tool to.
    InsufficientScope,
    /// The policy does not map the tool, prompt, resource or method.
    NotMapped,
    /// A name that imitates a mapped one (confusable characters).
    Confusable,
    /// Origin or Host not allowed (DNS rebinding, cross-site).
    OriginOrHost,
    /// Not a valid MCP message or header set.
    InvalidMessage,
    /// Too many sessions on the route.
    TooManySessions,
    /// The user must connect an upstream account or be a user first.
    ConnectionRequired,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::InvalidToken => "invalid_token",
            Self::IssuerUnavailable => "issuer_unavailable",
            Self::InsufficientScope => "insufficient_scope",
            Self::NotMapped => "not_mapped",
            Self::Confusable => "confusable",
            Self::OriginOrHost => "origin_or_host",
            Self::InvalidMessage => "invalid_message",
            Self::TooManySessions => "too_many_sessions",
            Self::ConnectionRequired => "connection_required",
        }
    }
}

pub fn gateway_refusal(reason: Refusal) {
    if !on() {
        return;
    }
    counter!(GATEWAY_REFUSALS, "reason" => reason.label()).increment(1);
}

/// How an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect, or the connection broke.
    Unavailable,
    /// Did not answer in time.
    Timeout,
    /// Answered with an error status the gateway does not pass on.
    Refused,
}

pub fn upstream_error(route: &str, kind: UpstreamError) {
    if !on() {
        return;
    }
    let kind = match kind {
        UpstreamError::Unavailable => "unavailable",
        UpstreamError::Timeout => "timeout",
        UpstreamError::Refused => "refused",
    };
    counter!(UPSTREAM_ERRORS, "route" => route.to_owned(), "kind" => kind).increment(1);
}

/// Live sessions and running stdio children of a route.
pub fn set_route_load(route: &str, sessions: usize, stdio_children: usize) {
    if !on() {
        return;
    }
    gauge!(GATEWAY_SESSIONS, "route" => route.to_owned()).set(sessions as f64);
    gauge!(GATEWAY_STDIO_CHILDREN, "route" => route.to_owned()).set(stdio_children as f64);
}

/// One HTTP request answered; `endpoint` is the route template (`/token`, `/mcp/{route}`), or
/// `unmatched`.
pub fn http_request(endpoint: &str, method: &str, status: u16, seconds: f64) {
    if !on() {
        return;
    }
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        _ => "other",
    };
    counter!(
        HTTP_REQUESTS,
        "endpoint" => endpoint.to_owned(),
        "method" => method,
        "status" => status_label(status)
    )
    .increment(1);
    histogram!(HTTP_REQUEST_DURATION, "endpoint" => endpoint.to_owned()).record(seconds);
}

/// An access token issued; `grant_type` is the grant's registered name.
pub fn token_issued(grant_type: &'static str) {
    if !on() {
        return;
    }
    counter!(TOKENS_ISSUED, "grant_type" => grant_type).increment(1);
}

/// How a sign-in ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    Succeeded,
    Failed,
}

/// A sign-in with a password (`idp` = `local`) or through a configured identity provider.
pub fn sign_in(idp: &str, outcome: SignIn) {
    if !on() {
        return;
    }
    let outcome = match outcome {
        SignIn::Succeeded => "succeeded",
        SignIn::Failed => "failed",
    };
    counter!(SIGN_INS, "idp" => idp.to_owned(), "outcome" => outcome).increment(1);
}

pub fn set_audit_queue_depth(depth: usize) {
    if !on() {
        return;
    }
    gauge!(AUDIT_QUEUE_DEPTH).set(depth as f64);
}

pub fn audit_written(records: usize) {
    if !on() {
        return;
    }
    counter!(AUDIT_WRITTEN).increment(records as u64);
}

pub fn audit_dropped(records: usize) {
    if !on() {
        return;
    }
    counter!(AUDIT_DROPPED).increment(records as u64);
}

pub fn audit_checkpoint(seq: i64) {
    if !on() {
        return;
    }
    gauge!(AUDIT_CHECKPOINT).set(seq as f64);
}

/// The caches whose hit ratio is worth watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Registered clients, read on every token request.
    Clients,
    /// Client ID Metadata Documents fetched from clients' URLs.
    ClientMetadataDocuments,
    /// Bearer tokens whose signature (ours or another issuer's) or introspection was checked.
    VerifiedTokens,
    /// The live state of our own tokens on the gateway (token, grant, client, user).
    TokenStates,
}

pub fn cache_lookup(cache: Cache, hit: bool) {
    if !on() {
        return;
    }
    let cache = match cache {
        Cache::Clients => "clients",
        Cache::ClientMetadataDocuments => "client_metadata_documents",
        Cache::VerifiedTokens => "verified_tokens",
        Cache::TokenStates => "token_states",
    };
    counter!(CACHE_LOOKUPS, "cache" => cache, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

/// How far behind the change log this node may be, and whether it still serves.
pub fn set_change_feed(lag_seconds: f64, current: bool) {
    if !on() {
        return;
    }
    gauge!(CHANGE_FEED_LAG).set(lag_seconds);
    gauge!(CHANGE_FEED_CURRENT).set(if current { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_within_known_values() {
        let check = |method: &str, expected: &str| assert_eq!(method_label(method), expected, "{method}");
        check("tools/call", "tools/call");
        check("tools/call2", "other");
        check("", "other");
        check(&"x".repeat(10_000), "other");
        for (status, expected) in [(200, "200"), (418, "4xx"), (599, "5xx"), (101, "1xx"), (0, "5xx")] {
            assert_eq!(status_label(status), expected, "{status}");
        }
    }
}
