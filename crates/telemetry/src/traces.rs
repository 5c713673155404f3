//! Traces: whether they are on, the spans the data path opens, and W3C Trace Context in and
//! out (HTTP headers, and `params._meta` as SEP-414 and the 2026-07-28 specification carry it).
//!
//! The exporter and the subscriber are set up by the server (`server/src/telemetry.rs`);
//! everything here is cheap when traces are off: [`span!`](crate::span) gives a disabled span
//! without touching the subscriber, and the propagation helpers do nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the data path's spans on (the server does, once an OTLP exporter is installed).
pub fn enable_tracing() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn tracing_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An info-level span when traces are on, otherwise a disabled one that costs nothing.
#[macro_export]
macro_rules! span {
    ($($arg:tt)+) => {
        if $crate::tracing_enabled() { ::tracing::info_span!($($arg)+) } else { ::tracing::Span::none() }
    };
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Meta<'a>(&'a serde_json::Map<String, serde_json::Value>);

impl Extractor for Meta<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(serde_json::Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

fn has_remote_parent(cx: &opentelemetry::Context) -> bool {
    cx.span().span_context().is_valid()
}

/// Makes `span` (not yet entered) continue the trace a client started with its `traceparent`
/// header. Records the trace id on the span's `trace_id` field, so log lines inside it carry
/// it. A malformed value is ignored.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !tracing_enabled() || span.is_disabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if has_remote_parent(&parent) {
        let _ = span.set_parent(parent);
    }
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// For a message whose client put its trace only in `params._meta` (SEP-414; a client without
/// the header): a span for the message in that trace, linked to the HTTP request's span
/// (`request`, which started before the body was read and so could not join it). A disabled
/// span when traces are off, when the request carried a `traceparent` header (the request's
/// span already continues it), or when `_meta` has none.
pub fn message_span(request: &tracing::Span, headers: &http::HeaderMap, body: &[u8]) -> tracing::Span {
    if !tracing_enabled() || headers.contains_key("traceparent") {
        return tracing::Span::none();
    }
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else { return tracing::Span::none() };
    let Some(meta) = message.get("params").and_then(|p| p.get("_meta")).and_then(serde_json::Value::as_object) else {
        return tracing::Span::none();
    };
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Meta(meta)));
    if !has_remote_parent(&parent) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("mcp.message", trace_id = tracing::field::Empty);
    let _ = span.set_parent(parent);
    let request_context = request.context().span().span_context().clone();
    if request_context.is_valid() {
        span.add_link(request_context);
    }
    if let Some(id) = trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    span
}

/// The trace id of `span` (32 hex digits), when traces are on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !tracing_enabled() || span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// `traceparent` (and `tracestate`) naming `span` as the parent, for an upstream: as HTTP
/// headers, and in `_meta`. Empty when traces are off.
pub fn propagation(span: &tracing::Span) -> Vec<(String, String)> {
    if !tracing_enabled() || span.is_disabled() {
        return Vec::new();
    }
    let context = span.context();
    let mut carrier = Carrier(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    let mut pairs: Vec<(String, String)> = carrier.0.into_iter().collect();
    pairs.sort();
    pairs
}

/// Puts `propagation` into each request's `params._meta` (replacing what the client put
/// there: the upstream's parent is now the gateway's span, in the same trace). Notifications
/// and responses are left as they are.
pub fn into_meta(messages: &mut [serde_json::Value], propagation: &[(String, String)]) {
    if propagation.is_empty() {
        return;
    }
    for message in messages {
        let is_request = message.get("id").is_some() && message.get("method").is_some();
        let Some(params) = message.get_mut("params").and_then(serde_json::Value::as_object_mut) else { continue };
        if !is_request {
            continue;
        }
        let meta = params.entry("_meta").or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            for (key, value) in propagation {
                meta.insert(key.clone(), serde_json::Value::String(value.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_goes_into_the_meta_of_requests_only() {
        let mut messages = vec![
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}),
            serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}),
            serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":{"traceparent":"old","progressToken":7}}}),
        ];
        let carrier =
            vec![("traceparent".to_owned(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())];
        into_meta(&mut messages, &carrier);
        assert_eq!(messages[0]["params"]["_meta"]["traceparent"], carrier[0].1);
        assert!(messages[1]["params"].get("_meta").is_none());
        assert_eq!(messages[2]["params"]["_meta"]["traceparent"], carrier[0].1);
        assert_eq!(messages[2]["params"]["_meta"]["progressToken"], 7, "the rest of _meta is kept");
    }
}
