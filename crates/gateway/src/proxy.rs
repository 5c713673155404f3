//! The data path's deciding half: a request is checked (revision, media, strict JSON,
//! mirrored headers), every message is decided before anything is forwarded, the caller's
//! session is found, and the decided messages are handed to the route's upstream
//! (`upstream/`), whose answer is relayed.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use portcullis_authz::{Decision, DenyReason, Operation};
use portcullis_telemetry::{Refusal, UpstreamError};
use portcullis_types::ScopeSet;
use serde_json::Value;
use tracing::Instrument as _;

use crate::auth::Principal;
use crate::filter::ListKind;
use crate::jsonrpc::{self, Kind};
use crate::protocol::{
    self, Declared, EVENT_STREAM, METHOD_HEADER, NAME_HEADER, SESSION_HEADER, accepts, header, is_json,
};
use crate::sessions::Session;
use crate::upstream::Call;
use crate::{Decided, Gateway, GatewayError, Handled, Reply, ReplyStatus, Route};

/// RFC 2047-style sentinel MCP uses for header values that are not plain ASCII.
fn decode_mirrored(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(encoded) => {
            base64::engine::general_purpose::STANDARD.decode(encoded).ok().and_then(|b| String::from_utf8(b).ok())
        }
        None => Some(value.to_owned()),
    }
}

/// The operation a request asks for, and the name it names.
fn operation<'a>(method: &'a str, params: Option<&'a Value>) -> Result<(Operation<'a>, Option<&'a str>), String> {
    let field = |name: &str| params.and_then(|p| p.get(name)).and_then(Value::as_str);
    let need = |name: &'static str| {
        field(name).ok_or_else(|| format!("{} needs params.{name} as a string", jsonrpc::excerpt(method, 64)))
    };
    Ok(match method {
        "tools/call" => need("name").map(|n| (Operation::CallTool(n), Some(n)))?,
        "prompts/get" => need("name").map(|n| (Operation::GetPrompt(n), Some(n)))?,
        "resources/read" => need("uri").map(|u| (Operation::ReadResource(u), Some(u)))?,
        "resources/subscribe" => need("uri").map(|u| (Operation::SubscribeResource(u), Some(u)))?,
        "completion/complete" => {
            let reference = params.and_then(|p| p.get("ref"));
            let get = |name: &str| reference.and_then(|r| r.get(name)).and_then(Value::as_str);
            match get("type") {
                Some("ref/prompt") => get("name").map(|n| (Operation::GetPrompt(n), Some(n))),
                Some("ref/resource") => get("uri").map(|u| (Operation::ReadResource(u), Some(u))),
                _ => None,
            }
            .ok_or_else(|| "completion/complete needs params.ref naming a prompt or a resource".to_owned())?
        }
        other => (Operation::Method(other), None),
    })
}

/// Whether client capabilities declare URL-mode elicitation (`elicitation.url`, 2025-11-25).
fn declares_url_elicitation(capabilities: Option<&Value>) -> bool {
    capabilities.and_then(|c| c.get("elicitation")).and_then(|e| e.get("url")).is_some_and(Value::is_object)
}

/// The capabilities a message's client declares: at `initialize`, or (2026-07-28, no
/// sessions) in each request's `_meta`.
fn declared_capabilities(message: &Value) -> Option<&Value> {
    let params = message.get("params")?;
    params
        .get("capabilities")
        .or_else(|| params.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities")))
}

/// The name mirrored in `Mcp-Name` for a method, if it has one.
fn mirrored_name<'a>(method: &str, params: Option<&'a Value>) -> Option<&'a str> {
    let member = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" => "uri",
        _ => return None,
    };
    params.and_then(|p| p.get(member)).and_then(Value::as_str)
}

/// Headers that describe the body must describe this body: `message` is the one message
/// with its kind, `None` for a batch (which no header can describe).
fn check_mirrored_headers(
    headers: &HeaderMap,
    message: Option<(&Value, &Kind)>,
    version: Declared,
) -> Result<(), GatewayError> {
    let method_header = header(headers, METHOD_HEADER);
    let name_header = header(headers, NAME_HEADER).map(decode_mirrored);
    let Some((message, kind)) = message else {
        if method_header.is_some() || name_header.is_some() {
            return Err(GatewayError::HeaderMismatch("Mcp-Method and Mcp-Name cannot describe a batch".into()));
        }
        return Ok(());
    };
    let stateless = version.is_stateless();
    let method = match kind {
        Kind::Request { method, .. } | Kind::Notification { method } => Some(method.as_str()),
        Kind::Response { .. } => None,
    };
    let params = message.get("params");
    let name = method.and_then(|m| mirrored_name(m, params));
    if stateless && method.is_some() && method_header.is_none() {
        return Err(GatewayError::HeaderMismatch("the Mcp-Method header is required".into()));
    }
    if stateless && name.is_some() && name_header.is_none() {
        return Err(GatewayError::HeaderMismatch("the Mcp-Name header is required".into()));
    }
    if let Some(h) = method_header
        && Some(h) != method
    {
        return Err(GatewayError::HeaderMismatch(format!(
            "the Mcp-Method header {:?} does not match the body's method {:?}",
            jsonrpc::excerpt(h, 64),
            jsonrpc::excerpt(method.unwrap_or("(none)"), 64)
        )));
    }
    if let Some(h) = name_header
        && h.as_deref() != name
    {
        return Err(GatewayError::HeaderMismatch(format!(
            "the Mcp-Name header does not match the body's {:?}",
            jsonrpc::excerpt(name.unwrap_or("(none)"), 64)
        )));
    }
    if let (true, Some(version)) = (stateless, version.version()) {
        let meta = params
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
            .and_then(Value::as_str);
        if meta.is_some_and(|m| m != version.as_str()) {
            return Err(GatewayError::HeaderMismatch(
                "the MCP-Protocol-Version header does not match params._meta".into(),
            ));
        }
    }
    Ok(())
}

impl Gateway {
    fn route_of(&self, name: &str) -> Result<Arc<Route>, GatewayError> {
        self.0.routing().routes.get(name).cloned().ok_or(GatewayError::SessionNotFound)
    }

    /// Handles a POST: one JSON-RPC message, or a 2025-03-26 batch.
    pub async fn post(&self, route: &str, principal: &Principal, headers: &HeaderMap, body: Bytes) -> Handled {
        let mut decisions = Vec::new();
        let reply = self.post_inner(route, principal, headers, body, &mut decisions).await;
        if let Err(e) = &reply {
            self.note_failure(route, e);
        }
        Handled { reply: reply.map(|r| self.guarded(principal, r)), decisions }
    }

    /// Notes on the route's health an error that says its upstream failed.
    fn note_failure(&self, route: &str, e: &GatewayError) {
        let (why, kind) = match e {
            GatewayError::UpstreamUnavailable { message, .. } => (message.clone(), UpstreamError::Unavailable),
            GatewayError::UpstreamTimeout { seconds, .. } => {
                (format!("did not answer within {seconds} s"), UpstreamError::Timeout)
            }
            GatewayError::UpstreamRefused { .. } => {
                portcullis_telemetry::upstream_error(route, UpstreamError::Refused);
                return;
            }
            _ => return,
        };
        portcullis_telemetry::upstream_error(route, kind);
        if let Some(route) = self.0.routing().routes.get(route) {
            route.observed.failed(&why);
        }
    }

    async fn post_inner(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
        body: Bytes,
        decisions: &mut Vec<Decided>,
    ) -> Result<Reply, GatewayError> {
        let route = &*self.route_of(route_name)?;
        let version = protocol::declared_version(headers)?;
        let stateless = version.is_stateless();
        if !accepts(headers, "application/json") && !accepts(headers, EVENT_STREAM) {
            return Err(GatewayError::NotAcceptable);
        }
        if !is_json(headers) {
            return Err(GatewayError::UnsupportedMediaType);
        }
        let parsed = jsonrpc::parse_strict(&body).map_err(|e| GatewayError::InvalidMessage {
            code: jsonrpc::PARSE_ERROR,
            message: format!("the body is not valid JSON: {e}"),
            id: None,
        })?;
        let (messages, batch) = match parsed {
            Value::Array(items) => (items, true),
            other => (vec![other], false),
        };
        let invalid = |message: String, id: Option<&Value>| GatewayError::InvalidMessage {
            code: jsonrpc::INVALID_REQUEST,
            message,
            id: id.cloned(),
        };
        if batch {
            if messages.is_empty() {
                return Err(invalid("an empty batch is not a request".into(), None));
            }
            if !version.allows_batches() {
                return Err(invalid("JSON-RPC batches exist only in protocol revision 2025-03-26".into(), None));
            }
        }
        let mut kinds = Vec::with_capacity(messages.len());
        for m in &messages {
            kinds.push(jsonrpc::classify(m).map_err(|e| invalid(e.to_owned(), jsonrpc::echoable_id(m.get("id"))))?);
        }
        if batch && kinds.iter().any(|k| matches!(k, Kind::Request { method, .. } if method == "initialize")) {
            return Err(invalid("initialize must not be part of a batch".into(), None));
        }
        if stateless && kinds.iter().any(|k| matches!(k, Kind::Response { .. })) {
            return Err(invalid("clients of protocol 2026-07-28 send no JSON-RPC responses".into(), None));
        }
        let single = if batch { None } else { messages.first().zip(kinds.first()) };
        check_mirrored_headers(headers, single, version)?;

        // Decide every message before anything is forwarded.
        let deciding = portcullis_telemetry::span!("decide", messages = messages.len()).entered();
        let mut needed = ScopeSet::new();
        let mut refusals: Vec<(Option<Value>, i64, String)> = Vec::new();
        let mut lists = HashMap::new();
        let mut request_ids = Vec::new();
        for (message, kind) in messages.iter().zip(&kinds) {
            let (method, id) = match kind {
                Kind::Request { id, method } => (method.as_str(), Some(id)),
                Kind::Notification { method } => (method.as_str(), None),
                Kind::Response { .. } => continue,
            };
            if let Some(id) = id {
                request_ids.push(id.clone());
            }
            let (op, target) = operation(method, message.get("params")).map_err(|message| {
                GatewayError::InvalidMessage { code: jsonrpc::INVALID_PARAMS, message, id: id.cloned() }
            })?;
            let decision = route.settings.policy.decide(&principal.scopes, op);
            let (allowed, reason) = match &decision {
                Decision::Allow => (true, None),
                Decision::Deny { reason: DenyReason::InsufficientScope, required } => {
                    needed = needed.union(required);
                    (false, Some(format!("insufficient_scope: needs {required}")))
                }
                Decision::Deny { reason: DenyReason::Unmapped, .. } => {
                    let what =
                        if target.is_some() { "not mapped by the policy" } else { "method not allowed by the policy" };
                    let code = match op {
                        Operation::Method(_) => jsonrpc::METHOD_NOT_FOUND,
                        Operation::ReadResource(_) | Operation::SubscribeResource(_) => jsonrpc::RESOURCE_NOT_FOUND,
                        _ => jsonrpc::INVALID_PARAMS,
                    };
                    refusals.push((
                        id.cloned(),
                        code,
                        format!(
                            "{} {:?} is not available through this gateway",
                            describe_op(op),
                            jsonrpc::excerpt(target.unwrap_or(method), 128)
                        ),
                    ));
                    (false, Some(what.to_owned()))
                }
                Decision::Deny { reason: DenyReason::Confusable { mapped }, .. } => {
                    let code = if matches!(op, Operation::Method(_)) {
                        jsonrpc::METHOD_NOT_FOUND
                    } else {
                        jsonrpc::INVALID_PARAMS
                    };
                    refusals.push((
                        id.cloned(),
                        code,
                        format!(
                            "{} {:?} is not available through this gateway",
                            describe_op(op),
                            jsonrpc::excerpt(target.unwrap_or(method), 128)
                        ),
                    ));
                    (false, Some(format!("looks like {mapped:?} but is not")))
                }
            };
            let denial = match &decision {
                Decision::Allow => None,
                Decision::Deny { reason: DenyReason::InsufficientScope, .. } => Some(Refusal::InsufficientScope),
                Decision::Deny { reason: DenyReason::Unmapped, .. } => Some(Refusal::NotMapped),
                Decision::Deny { reason: DenyReason::Confusable { .. }, .. } => Some(Refusal::Confusable),
            };
            decisions.push(Decided {
                method: method.to_owned(),
                target: target.map(str::to_owned),
                allowed,
                reason,
                denial,
            });
            if let (true, Some(kind), Some(id)) = (allowed, ListKind::for_method(method), id) {
                lists.insert(jsonrpc::id_key(id), kind);
            }
        }
        drop(deciding);
        if !needed.is_empty() {
            let id = if batch { None } else { request_ids.first().cloned() };
            let route_scopes = route.settings.policy.all_scopes();
            let mut challenge = needed.clone();
            for held in principal.scopes.iter().filter(|s| route_scopes.contains(s.as_str())) {
                challenge.insert(held.clone());
            }
            return Err(GatewayError::InsufficientScope { required: needed, challenge, id });
        }
        if !refusals.is_empty() {
            return Ok(refusal_reply(batch, &kinds, refusals));
        }
        let initialize =
            !batch && matches!(kinds.first(), Some(Kind::Request { method, .. }) if method == "initialize");
        let session = if stateless { None } else { self.presented_session(headers, route_name, principal)? };
        if initialize && session.is_some() {
            return Err(invalid(
                "initialize starts a new session; send it without Mcp-Session-Id".into(),
                request_ids.first(),
            ));
        }
        let url_elicitation = match (&session, batch) {
            (Some(s), _) => s.url_elicitation,
            (None, false) => declares_url_elicitation(messages.first().and_then(declared_capabilities)),
            (None, true) => false,
        };
        let upstream = portcullis_telemetry::span!("upstream", route = %route_name);
        let trace = portcullis_telemetry::propagation(&upstream);
        let mut messages = messages;
        portcullis_telemetry::into_meta(&mut messages, &trace);
        let call = Call {
            route,
            principal,
            headers,
            version,
            messages,
            batch,
            session,
            request_ids,
            lists,
            initialize,
            url_elicitation,
            trace,
        };
        // Boxed: the transport's future is large; the deciding half's states then stay small.
        Box::pin(self.forward(call)).instrument(upstream).await
    }

    /// The session the request names, if it names one (sessions exist before 2026-07-28 only).
    fn presented_session(
        &self,
        headers: &HeaderMap,
        route_name: &str,
        principal: &Principal,
    ) -> Result<Option<Arc<Session>>, GatewayError> {
        match header(headers, SESSION_HEADER) {
            Some(id) => self.0.sessions.find(id, route_name, principal).map(Some).ok_or(GatewayError::SessionNotFound),
            None => Ok(None),
        }
    }

    /// Handles a GET: the session's stream of server messages.
    pub async fn get(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<Reply, GatewayError> {
        let reply =
            self.get_inner(route_name, principal, headers).await.inspect_err(|e| self.note_failure(route_name, e))?;
        Ok(self.guarded(principal, reply))
    }

    async fn get_inner(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<Reply, GatewayError> {
        let route = &*self.route_of(route_name)?;
        if !protocol::declared_version(headers)?.has_sessions() {
            return Err(GatewayError::MethodNotAllowed("protocol 2026-07-28 has no GET stream"));
        }
        if !accepts(headers, EVENT_STREAM) {
            return Err(GatewayError::NotAcceptable);
        }
        let session = self.presented_session(headers, route_name, principal)?;
        self.listen(route, principal, headers, session).await
    }

    /// Handles a DELETE: ends the caller's session (and its stdio child).
    pub async fn delete(
        &self,
        route_name: &str,
        principal: &Principal,
        headers: &HeaderMap,
    ) -> Result<Reply, GatewayError> {
        let route = &*self.route_of(route_name)?;
        if !protocol::declared_version(headers)?.has_sessions() {
            return Err(GatewayError::MethodNotAllowed("protocol 2026-07-28 has no sessions to end"));
        }
        let id = header(headers, SESSION_HEADER).ok_or(GatewayError::SessionRequired)?;
        let session = self.0.sessions.find(id, route_name, principal).ok_or(GatewayError::SessionNotFound)?;
        self.0.sessions.remove(&session.id);
        self.end_upstream_session(route, principal, headers, &session).await;
        Ok(Reply { status: ReplyStatus::Ended, content_type: None, session_id: None, body: axum::body::Body::empty() })
    }
}

fn describe_op(op: Operation<'_>) -> &'static str {
    match op {
        Operation::CallTool(_) => "tool",
        Operation::GetPrompt(_) => "prompt",
        Operation::ReadResource(_) | Operation::SubscribeResource(_) => "resource",
        Operation::Method(_) => "method",
    }
}

/// The gateway's own answer to messages the policy refused: a JSON-RPC error for each
/// request (in a batch, the others are refused with it: a batch is forwarded whole or not at
/// all).
fn refusal_reply(batch: bool, kinds: &[Kind], refusals: Vec<(Option<Value>, i64, String)>) -> Reply {
    let requests: Vec<&Value> = kinds
        .iter()
        .filter_map(|k| match k {
            Kind::Request { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    if requests.is_empty() {
        return Reply::accepted();
    }
    let errors: Vec<Value> = requests
        .iter()
        .map(|id| match refusals.iter().find(|(rid, _, _)| rid.as_ref() == Some(*id)) {
            Some((_, code, message)) => jsonrpc::error_response(Some(id), *code, message),
            None => jsonrpc::error_response(
                Some(id),
                jsonrpc::INVALID_REQUEST,
                "not forwarded: another message of this batch was refused",
            ),
        })
        .collect();
    let body = if batch { Value::Array(errors) } else { errors.into_iter().next().unwrap_or(Value::Null) };
    Reply::json(ReplyStatus::Ok, &body, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProtocolVersion;
    use crate::protocol::tests::headers;
    use serde_json::json;

    fn check(pairs: &[(&'static str, &'static str)], message: Value, stateless: bool) -> Result<(), String> {
        let kind = jsonrpc::classify(&message).map_err(str::to_owned)?;
        let version = if stateless { Declared::Version(ProtocolVersion::V2026_07_28) } else { Declared::Absent };
        check_mirrored_headers(&headers(pairs), Some((&message, &kind)), version).map_err(|e| e.to_string())
    }

    #[test]
    fn mirrored_headers_must_describe_the_body() {
        let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}});
        assert!(check(&[], call.clone(), false).is_ok(), "optional before 2026-07-28");
        assert!(check(&[("mcp-method", "tools/call"), ("mcp-name", "a")], call.clone(), true).is_ok());
        assert!(
            check(&[("mcp-method", "tools/call")], call.clone(), true)
                .unwrap_err()
                .contains("Mcp-Name header is required")
        );
        assert!(check(&[("mcp-name", "a")], call.clone(), true).unwrap_err().contains("Mcp-Method header is required"));
        assert!(check(&[("mcp-method", "tools/call"), ("mcp-name", "b")], call.clone(), false).is_err());
        assert!(check(&[("mcp-method", "Tools/Call")], call.clone(), false).is_err(), "compared exactly");
        assert!(check(&[("mcp-name", "=?base64?YQ==?=")], call.clone(), false).is_ok(), "base64 sentinel");
        assert!(check(&[("mcp-name", "=?base64?Yg==?=")], call, false).is_err());
        let read = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x://1"}});
        assert!(check(&[("mcp-method", "resources/read"), ("mcp-name", "x://1")], read, true).is_ok());
        let meta = json!({"jsonrpc":"2.0","id":1,"method":"tools/list",
            "params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}});
        assert!(check(&[("mcp-method", "tools/list")], meta, true).unwrap_err().contains("_meta"));
        let batch = check_mirrored_headers(&headers(&[("mcp-method", "tools/list")]), None, Declared::Absent);
        assert!(batch.is_err(), "headers cannot describe a batch");
    }

    #[test]
    fn each_method_maps_to_the_operation_the_policy_decides() {
        let p = json!({"name":"t","uri":"x://1","ref":{"type":"ref/prompt","name":"p"}});
        assert_eq!(operation("tools/call", Some(&p)), Ok((Operation::CallTool("t"), Some("t"))));
        assert_eq!(operation("prompts/get", Some(&p)), Ok((Operation::GetPrompt("t"), Some("t"))));
        assert_eq!(operation("resources/read", Some(&p)), Ok((Operation::ReadResource("x://1"), Some("x://1"))));
        assert_eq!(
            operation("resources/subscribe", Some(&p)),
            Ok((Operation::SubscribeResource("x://1"), Some("x://1")))
        );
        assert_eq!(operation("completion/complete", Some(&p)), Ok((Operation::GetPrompt("p"), Some("p"))));
        let r = json!({"ref":{"type":"ref/resource","uri":"x://{id}"}});
        assert_eq!(
            operation("completion/complete", Some(&r)),
            Ok((Operation::ReadResource("x://{id}"), Some("x://{id}")))
        );
        assert_eq!(operation("ping", None), Ok((Operation::Method("ping"), None)));
        assert!(operation("tools/call", None).is_err());
        assert!(operation("tools/call", Some(&json!({"name": 7}))).is_err());
        assert!(operation("completion/complete", Some(&json!({"ref":{"type":"ref/other"}}))).is_err());
    }
}
