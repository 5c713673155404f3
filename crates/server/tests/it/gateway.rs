//! The MCP gateway over HTTP: challenges, tool-level policy, list filtering, evasion attempts,
//! sessions, Origin checks, upstream failures, and that the upstream never sees the client's
//! token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis::config::{UpstreamConfig, UpstreamHeaderConfig};
use serde_json::{Value, json};

use crate::harness::*;

const VERSION: &str = "2025-11-25";

/// An HTTP MCP upstream for tests: the demo CRM at `/json` (JSON answers) and `/sse` (SSE
/// answers with a priming event), `/slow` never answering in time, and at `/doubled-json` and
/// `/doubled-sse` a list answer that holds `result` twice. It records the headers of every
/// request it gets.
struct TestUpstream {
    base: String,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl TestUpstream {
    async fn start() -> AnyResult<Self> {
        use axum::response::IntoResponse;
        let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
        let crm = Arc::new(Mutex::new(portcullis::demo_crm::Crm::default()));
        let answer = |crm: Arc<Mutex<portcullis::demo_crm::Crm>>, seen: Arc<Mutex<Vec<http::HeaderMap>>>, sse: bool| {
            move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let crm = crm.clone();
                let seen = seen.clone();
                async move {
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(headers.clone());
                    }
                    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let Ok(mut crm) = crm.lock() else {
                        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
                    };
                    let replies: Vec<Value> = match &message {
                        Value::Array(items) => items.iter().filter_map(|m| crm.handle(m)).collect(),
                        one => crm.handle(one).into_iter().collect(),
                    };
                    drop(crm);
                    if replies.is_empty() {
                        return http::StatusCode::ACCEPTED.into_response();
                    }
                    let body = if message.is_array() { Value::Array(replies.clone()) } else { replies[0].clone() };
                    let mut response = if sse {
                        let text = format!("id: prime-1\ndata: \n\nevent: message\nid: 2\ndata: {body}\n\n");
                        ([(http::header::CONTENT_TYPE, "text/event-stream")], text).into_response()
                    } else {
                        ([(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
                    };
                    if message.get("method").and_then(Value::as_str) == Some("initialize") {
                        response
                            .headers_mut()
                            .insert("mcp-session-id", http::HeaderValue::from_static("upstream-session-1"));
                    }
                    response
                }
            }
        };
        // `result` twice: a lenient reader takes the last (only update_deal), a client may take
        // the first (export_contacts too).
        let doubled = |sse: bool| {
            move |body: axum::body::Bytes| async move {
                let id = serde_json::from_slice::<Value>(&body).ok().and_then(|m| m.get("id").cloned());
                let Some(id) = id else { return http::StatusCode::ACCEPTED.into_response() };
                let text = format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"export_contacts"}},{{"name":"update_deal"}}]}},"result":{{"tools":[{{"name":"update_deal"}}]}}}}"#
                );
                if sse {
                    let events = format!("event: message\ndata: {text}\n\n");
                    ([(http::header::CONTENT_TYPE, "text/event-stream")], events).into_response()
                } else {
                    ([(http::header::CONTENT_TYPE, "application/json")], text).into_response()
                }
            }
        };
        let router = axum::Router::new()
            .route("/doubled-json", axum::routing::post(doubled(false)))
            .route("/doubled-sse", axum::routing::post(doubled(true)))
            .route("/json", axum::routing::post(answer(crm.clone(), seen.clone(), false)))
            .route("/sse", axum::routing::post(answer(crm.clone(), seen.clone(), true)))
            .route(
                "/drip",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if message.get("method").and_then(Value::as_str) == Some("initialize") {
                        let reply = portcullis::demo_crm::Crm::default().handle(&message).unwrap_or(Value::Null);
                        return ([(http::header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response();
                    }
                    if message.get("id").is_none() {
                        return http::StatusCode::ACCEPTED.into_response();
                    }
                    let id = message["id"].clone();
                    let first = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}});
                    let last = json!({"jsonrpc":"2.0","id":id,"result":{"tools":[{"name":"list_contacts"},{"name":"update_deal"}]}});
                    let events = futures_util::stream::unfold(0, move |step| {
                        let (first, last) = (first.clone(), last.clone());
                        async move {
                            match step {
                                0 => Some((Ok::<_, std::convert::Infallible>(format!("event: message\ndata: {first}\n\n")), 1)),
                                1 => {
                                    tokio::time::sleep(Duration::from_millis(1500)).await;
                                    Some((Ok(format!("event: message\ndata: {last}\n\n")), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    ([(http::header::CONTENT_TYPE, "text/event-stream")], axum::body::Body::from_stream(events)).into_response()
                }),
            )
            .route(
                "/slow",
                axum::routing::post(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { base, seen, _task: task })
    }
}

fn demo_upstream() -> UpstreamConfig {
    portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned())
}

fn http_upstream(name: &str, url: &str) -> UpstreamConfig {
    UpstreamConfig { name: name.into(), command: vec![], url: Some(url.into()), ..demo_upstream() }
}

fn stdio_upstream(name: &str, script: &str) -> UpstreamConfig {
    UpstreamConfig { name: name.into(), command: vec!["sh".into(), "-c".into(), script.into()], ..demo_upstream() }
}

struct Gw {
    server: TestServer,
    upstream: TestUpstream,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> AnyResult<Gw> {
    let upstream = TestUpstream::start().await?;
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("upstream-key");
    std::fs::write(&key_file, "gateway-own-credential\n")?;
    let mut with_key = http_upstream("crm-http", &format!("{}/json", upstream.base));
    with_key.headers =
        vec![UpstreamHeaderConfig { name: "X-Upstream-Key".into(), value_env: None, value_file: Some(key_file) }];
    let mut slow = http_upstream("slow", &format!("{}/slow", upstream.base));
    slow.request_timeout_secs = 1;
    let single = UpstreamConfig { name: "single".into(), max_sessions: 1, ..demo_upstream() };
    let mut hang = stdio_upstream("hang", "cat > /dev/null");
    hang.request_timeout_secs = 1;
    let init = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"x","version":"1"}}}"#;
    let options = Options {
        upstreams: vec![
            demo_upstream(),
            with_key,
            http_upstream("crm-sse", &format!("{}/sse", upstream.base)),
            http_upstream("doubled-json", &format!("{}/doubled-json", upstream.base)),
            http_upstream("doubled-sse", &format!("{}/doubled-sse", upstream.base)),
            http_upstream("drip", &format!("{}/drip", upstream.base)),
            slow,
            http_upstream("down", "http://127.0.0.1:9/mcp"),
            hang,
            stdio_upstream("crasher", "read line; exit 3"),
            single,
            stdio_upstream("dies-later", &format!("read line; echo '{init}'; read line; exit 1")),
        ],
        ..Options::default()
    };
    let server = TestServer::start_with(options).await?;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    Ok(Gw { server, upstream, http, _dir: dir })
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    fn challenge(&self) -> String {
        self.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }
    fn session(&self) -> Option<String> {
        self.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
    /// The JSON-RPC message of a JSON body, or of the last SSE event carrying one.
    fn message(&self) -> Value {
        if !self.body.is_null() {
            return self.body.clone();
        }
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
            .unwrap_or(Value::Null)
    }
}

impl Gw {
    async fn post_raw(
        &self,
        route: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: String,
    ) -> AnyResult<Answer> {
        let mut request = self
            .http
            .post(self.server.route(route))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response =
            tokio::time::timeout(Duration::from_secs(20), request.send()).await.map_err(|_| "gateway hung")??;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, headers, body, text })
    }

    async fn rpc(&self, route: &str, token: Option<&str>, session: Option<&str>, message: Value) -> AnyResult<Answer> {
        let mut headers = vec![("mcp-protocol-version", VERSION)];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
        }
        self.post_raw(route, token, &headers, message.to_string()).await
    }

    /// Initializes a session and returns its id.
    async fn session(&self, route: &str, token: Option<&str>) -> AnyResult<String> {
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name":"it","version":"1"}}});
        let answer = self.post_raw(route, token, &[], init.to_string()).await?;
        assert_eq!(answer.status, 200, "initialize on {route}: {}", answer.text);
        let session = answer.session().ok_or("no Mcp-Session-Id")?;
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let ack = self.rpc(route, token, Some(&session), note).await?;
        assert_eq!(ack.status, 202, "{}", ack.text);
        Ok(session)
    }
}

fn call(id: i64, tool: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
}

fn list(id: i64, method: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":{}})
}

fn names(answer: &Answer, member: &str, key: &str) -> Vec<String> {
    answer.message()["result"][member]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t[key].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn metadata_and_every_challenge() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let prm: Value = gw.http.get(s.url("/.well-known/oauth-protected-resource/mcp/crm")).send().await?.json().await?;
    assert_eq!(prm["resource"], s.route("crm"));
    assert_eq!(prm["authorization_servers"], json!([s.issuer]));
    assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
    assert_eq!(prm["scopes_supported"], json!(["crm.contacts.export", "crm.contacts.read", "crm.deals.write"]));
    let root = gw.http.get(s.url("/.well-known/oauth-protected-resource")).send().await?;
    assert_eq!(root.status(), 404, "no route is published at the root");
    let unknown = gw.http.get(s.url("/.well-known/oauth-protected-resource/mcp/nope")).send().await?;
    assert_eq!(unknown.status(), 404);

    let metadata = format!("resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp/crm\"", s.origin());
    let scope = "scope=\"crm.contacts.export crm.contacts.read crm.deals.write\"";
    let none = gw.rpc("crm", None, None, list(1, "tools/list")).await?;
    assert_eq!(none.status, 401);
    assert_eq!(none.challenge(), format!("Bearer {metadata}, {scope}"));
    assert_eq!(none.body["error"]["code"], -32001);
    // Refused before its body was read: the client must not reuse the connection (its next
    // request, with a token, would meet a closed socket).
    assert_eq!(none.headers.get("connection").and_then(|v| v.to_str().ok()), Some("close"));

    for (token, description) in [
        ("not-a-jwt", "the access token is invalid, expired or revoked"),
        ("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.", "the access token's issuer x is not trusted here"),
    ] {
        let bad = gw.rpc("crm", Some(token), None, list(1, "tools/list")).await?;
        assert_eq!(bad.status, 401, "{token}");
        let challenge = bad.challenge();
        assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains(&metadata) && challenge.contains(scope), "{challenge}");
        assert!(challenge.contains(description), "{challenge}");
    }
    // Only the Authorization header carries tokens (RFC 6750 §2.1); other schemes are refused.
    let token = alice_token_for(s, &s.route("crm"), &["crm.contacts.read"]).await?;
    let in_query = gw
        .http
        .post(format!("{}?access_token={token}", s.route("crm")))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(list(1, "tools/list").to_string())
        .send()
        .await?;
    assert_eq!(in_query.status(), 401);
    let basic =
        gw.post_raw("crm", None, &[("authorization", &format!("Basic {token}"))], list(1, "ping").to_string()).await?;
    assert_eq!(basic.status, 401);
    assert!(basic.challenge().contains("error=\"invalid_token\""));
    Ok(())
}

#[tokio::test]
async fn stdio_route_enforces_tool_scopes_and_filters_lists() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm"), &["crm.contacts.read"]).await?;
    let session = gw.session("crm", Some(&token)).await?;
    let t = Some(token.as_str());
    let sid = Some(session.as_str());

    let tools = gw.rpc("crm", t, sid, list(1, "tools/list")).await?;
    assert_eq!(tools.status, 200, "{}", tools.text);
    assert_eq!(names(&tools, "tools", "name"), ["list_contacts"], "{}", tools.text);
    let resources = gw.rpc("crm", t, sid, list(2, "resources/list")).await?;
    assert_eq!(names(&resources, "resources", "uri").len(), 3);

    let allowed = gw.rpc("crm", t, sid, call(3, "list_contacts")).await?;
    assert_eq!(allowed.status, 200);
    assert!(allowed.message()["result"]["content"][0]["text"].as_str().unwrap_or_default().contains("Ada Lovelace"));

    let denied = gw.rpc("crm", t, sid, call(4, "update_deal")).await?;
    assert_eq!(denied.status, 403, "{}", denied.text);
    let challenge = denied.challenge();
    // The scope asked for keeps what the token holds, so a client that replaces its scopes on
    // step-up does not lose them.
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_scope\", scope=\"crm.contacts.read crm.deals.write\""),
        "{challenge}"
    );
    assert!(challenge.contains("error_description=\"this request needs the scope crm.deals.write\""), "{challenge}");
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    assert_eq!(denied.body["id"], 4);
    assert_eq!(denied.body["error"]["code"], -32003);

    // Unmapped and look-alike names are answered as unknown, whatever the scopes.
    for (id, tool) in
        [(5, "delete_everything"), (6, "List_Contacts"), (7, "list\u{200B}_contacts"), (8, "ｌｉｓｔ_contacts")]
    {
        let refused = gw.rpc("crm", t, sid, call(id, tool)).await?;
        assert_eq!(refused.status, 200, "{tool}");
        assert_eq!(refused.body["id"], id);
        assert_eq!(refused.body["error"]["code"], -32602, "{tool}: {}", refused.text);
    }
    let odd_method = gw
        .rpc("crm", t, sid, json!({"jsonrpc":"2.0","id":9,"method":"Tools/Call","params":{"name":"list_contacts"}}))
        .await?;
    assert_eq!(odd_method.body["error"]["code"], -32601, "{}", odd_method.text);

    let prompt = gw
        .rpc("crm", t, sid, json!({"jsonrpc":"2.0","id":10,"method":"prompts/get","params":{"name":"summarize_account","arguments":{"company":"X"}}}))
        .await?;
    assert!(prompt.message()["result"]["messages"].is_array(), "{}", prompt.text);
    let read = gw
        .rpc(
            "crm",
            t,
            sid,
            json!({"jsonrpc":"2.0","id":11,"method":"resources/read","params":{"uri":"crm://contacts/1"}}),
        )
        .await?;
    assert!(read.message()["result"]["contents"].is_array(), "{}", read.text);
    let read_other = gw
        .rpc("crm", t, sid, json!({"jsonrpc":"2.0","id":12,"method":"resources/read","params":{"uri":"crm://deals/1"}}))
        .await?;
    assert_eq!(read_other.body["error"]["code"], -32002);
    let no_name = gw.rpc("crm", t, sid, json!({"jsonrpc":"2.0","id":13,"method":"tools/call","params":{}})).await?;
    assert_eq!((no_name.status, no_name.body["error"]["code"].as_i64()), (400, Some(-32602)));

    // Ending the session stops its child; the id is then unknown.
    let end = gw.http.delete(s.route("crm")).bearer_auth(&token).header("mcp-session-id", &session).send().await?;
    assert_eq!(end.status(), 204);
    let after = gw.rpc("crm", t, sid, list(14, "tools/list")).await?;
    assert_eq!(after.status, 404);
    assert_eq!(after.body["error"]["code"], -32005);
    let without = gw.rpc("crm", t, None, list(15, "tools/list")).await?;
    assert_eq!(without.status, 400, "a stdio route needs a session");

    // Every decision is in the audit trail, with who and what.
    s.gateway()?.shutdown().await;
    let events = s.store()?.audit_events(None, 200, &Default::default()).await?;
    let update = events.iter().find(|e| e.event.target.as_deref() == Some("update_deal")).ok_or("no audit row")?;
    assert_eq!(update.event.outcome, portcullis_store::AuditOutcome::Denied);
    assert_eq!(update.event.status, Some(403));
    assert_eq!(update.event.username.as_deref(), Some("alice"));
    assert_eq!(update.event.client_id.as_deref(), Some(PUBLIC_CLIENT));
    assert_eq!(update.event.route.as_deref(), Some("crm"));
    assert!(update.event.reason.as_deref().unwrap_or_default().contains("crm.deals.write"));
    let ok = events.iter().find(|e| e.event.target.as_deref() == Some("list_contacts")).ok_or("no audit row")?;
    assert_eq!((ok.event.outcome.as_str(), ok.event.status), ("allowed", Some(200)));
    Ok(())
}

#[tokio::test]
async fn tokens_for_another_route_or_identity_are_refused() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let crm_token = alice_token_for(s, &s.route("crm"), &["crm.contacts.read"]).await?;
    // Audience confusion: a valid token for /mcp/crm is not a token for /mcp/crm-http.
    let wrong = gw.rpc("crm-http", Some(&crm_token), None, list(1, "tools/list")).await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.challenge().contains("not issued for this resource"), "{}", wrong.challenge());

    // A session id presented with another identity's token is unknown to that identity.
    let session = gw.session("crm", Some(&crm_token)).await?;
    let (status, body) = s
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
            ("scope", "crm.contacts.read"),
            ("resource", &s.route("crm")),
        ])
        .await?;
    assert_eq!(status, 200, "{body}");
    let machine = body["access_token"].as_str().ok_or("token")?;
    let hijack = gw.rpc("crm", Some(machine), Some(&session), call(2, "list_contacts")).await?;
    assert_eq!(hijack.status, 404, "{}", hijack.text);
    let owner = gw.rpc("crm", Some(&crm_token), Some(&session), call(3, "list_contacts")).await?;
    assert_eq!(owner.status, 200, "the owner's session still works");

    // Suspending the client stops its tokens at once, not at expiry.
    s.control()?.suspend_client(&Actor::Operator, PUBLIC_CLIENT).await?;
    let suspended = gw.rpc("crm", Some(&crm_token), Some(&session), call(4, "list_contacts")).await?;
    assert_eq!(suspended.status, 401);
    assert!(suspended.challenge().contains("invalid_token"));
    Ok(())
}

#[tokio::test]
async fn http_upstreams_get_the_gateways_credentials_never_the_clients() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm-http"), &["crm.contacts.read"]).await?;
    let session = gw.session("crm-http", Some(&token)).await?;
    assert_ne!(session, "upstream-session-1", "the gateway mints its own session ids");
    let answer = gw
        .post_raw(
            "crm-http",
            Some(&token),
            &[("mcp-session-id", &session), ("cookie", "portcullis_session=x"), ("mcp-param-region", "eu")],
            list(1, "tools/list").to_string(),
        )
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(names(&answer, "tools", "name"), ["list_contacts"], "JSON lists are filtered");
    let seen = gw.upstream.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for headers in &seen {
        assert!(headers.get("authorization").is_none(), "the client's token reached the upstream");
        assert!(headers.get("cookie").is_none());
        assert_eq!(headers.get("x-upstream-key").and_then(|v| v.to_str().ok()), Some("gateway-own-credential"));
    }
    let last = seen.last().ok_or("no request")?;
    assert_eq!(last.get("mcp-session-id").and_then(|v| v.to_str().ok()), Some("upstream-session-1"));
    assert_eq!(last.get("mcp-param-region").and_then(|v| v.to_str().ok()), Some("eu"), "unknown Mcp-Param-* go on");
    Ok(())
}

#[tokio::test]
async fn sse_answers_are_filtered_event_by_event() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm-sse"), &["crm.deals.write"]).await?;
    let session = gw.session("crm-sse", Some(&token)).await?;
    let answer = gw.rpc("crm-sse", Some(&token), Some(&session), list(1, "tools/list")).await?;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    assert_eq!(answer.headers.get("x-accel-buffering").and_then(|v| v.to_str().ok()), Some("no"));
    assert_eq!(names(&answer, "tools", "name"), ["update_deal"], "{}", answer.text);
    assert!(answer.text.contains("id: prime-1"), "the priming event passes through: {}", answer.text);
    Ok(())
}

/// A list answer that holds a member twice is filtered as the gateway read it and written from
/// that reading: the copy it did not read (here the first `result`, holding a tool the caller
/// may not use) never reaches the client, in JSON or in an SSE event.
#[tokio::test]
async fn a_list_answer_with_a_member_twice_reaches_the_client_as_filtered() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    for route in ["doubled-json", "doubled-sse"] {
        let token = alice_token_for(s, &s.route(route), &["crm.deals.write"]).await?;
        let answer = gw.post_raw(route, Some(&token), &[], list(1, "tools/list").to_string()).await?;
        assert_eq!(answer.status, 200, "{route}: {}", answer.text);
        assert_eq!(names(&answer, "tools", "name"), ["update_deal"], "{route}: {}", answer.text);
        assert!(!answer.text.contains("export_contacts"), "{route}: {}", answer.text);
        assert_eq!(answer.text.matches("\"result\"").count(), 1, "{route}: {}", answer.text);
    }
    Ok(())
}

#[tokio::test]
async fn events_are_passed_on_as_they_arrive() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("drip"), &["crm.contacts.read"]).await?;
    let started = std::time::Instant::now();
    let mut response = gw
        .http
        .post(s.route("drip"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(list(1, "tools/list").to_string())
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await?.ok_or("no first event")?;
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"), "{first:?}");
    assert!(first_at < Duration::from_millis(1200), "the first event waited for the last: {first_at:?}");
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8_lossy(&rest);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(rest.contains("list_contacts") && !rest.contains("update_deal"), "the late list is filtered: {rest}");
    Ok(())
}

#[tokio::test]
async fn no_encoding_escapes_the_policy() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm-http"), &["crm.contacts.read"]).await?;
    let t = Some(token.as_str());
    let session = gw.session("crm-http", t).await?;
    let sid = session.as_str();
    let v = ("mcp-protocol-version", VERSION);

    // Duplicate keys: decided as one tool, run as another by a first-key-wins upstream.
    let dup =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"update_deal","name":"list_contacts"}}"#;
    let answer = gw.post_raw("crm-http", t, &[v, ("mcp-session-id", sid)], dup.into()).await?;
    assert_eq!((answer.status, answer.body["error"]["code"].as_i64()), (400, Some(-32700)), "{}", answer.text);

    // Mirrored headers must agree with the body.
    let mismatch = gw
        .post_raw(
            "crm-http",
            t,
            &[v, ("mcp-session-id", sid), ("mcp-name", "list_contacts")],
            call(2, "update_deal").to_string(),
        )
        .await?;
    assert_eq!((mismatch.status, mismatch.body["error"]["code"].as_i64()), (400, Some(-32020)));
    let method = gw
        .post_raw(
            "crm-http",
            t,
            &[v, ("mcp-session-id", sid), ("mcp-method", "tools/list")],
            call(3, "list_contacts").to_string(),
        )
        .await?;
    assert_eq!((method.status, method.body["error"]["code"].as_i64()), (400, Some(-32020)));
    let encoded = gw
        .post_raw(
            "crm-http",
            t,
            &[
                v,
                ("mcp-session-id", sid),
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?bGlzdF9jb250YWN0cw==?="),
            ],
            call(4, "list_contacts").to_string(),
        )
        .await?;
    assert_eq!(encoded.status, 200, "a base64-mirrored name that matches is fine: {}", encoded.text);

    // 2026-07-28 requires the mirrored headers; it has no sessions, GET or DELETE.
    let modern = [("mcp-protocol-version", "2026-07-28")];
    let missing = gw.post_raw("crm-http", t, &modern, call(5, "list_contacts").to_string()).await?;
    assert_eq!((missing.status, missing.body["error"]["code"].as_i64()), (400, Some(-32020)));
    let get = gw
        .http
        .get(s.route("crm-http"))
        .bearer_auth(&token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("accept", "text/event-stream")
        .send()
        .await?;
    assert_eq!(get.status(), 405);
    let unsupported = gw
        .post_raw("crm-http", t, &[("mcp-protocol-version", "1999-01-01")], call(6, "list_contacts").to_string())
        .await?;
    assert_eq!((unsupported.status, unsupported.body["error"]["code"].as_i64()), (400, Some(-32022)));

    // Batches (2025-03-26 only): every element is decided; one refusal refuses the batch.
    let old = ("mcp-protocol-version", "2025-03-26");
    let batch = json!([call(7, "list_contacts"), call(8, "update_deal")]).to_string();
    let refused = gw.post_raw("crm-http", t, &[old, ("mcp-session-id", sid)], batch).await?;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.challenge().contains("scope=\"crm.contacts.read crm.deals.write\""), "{}", refused.challenge());
    let unknown_in_batch = json!([call(9, "list_contacts"), call(10, "drop_tables")]).to_string();
    let refused = gw.post_raw("crm-http", t, &[old, ("mcp-session-id", sid)], unknown_in_batch).await?;
    assert_eq!(refused.status, 200);
    assert_eq!(refused.body[0]["error"]["code"], -32600, "{}", refused.text);
    assert_eq!(refused.body[1]["error"]["code"], -32602);
    let fine = json!([call(11, "list_contacts"), list(12, "tools/list")]).to_string();
    let passed = gw.post_raw("crm-http", t, &[old, ("mcp-session-id", sid)], fine).await?;
    assert_eq!(passed.status, 200, "{}", passed.text);
    assert_eq!(passed.body[1]["result"]["tools"].as_array().map(Vec::len), Some(1), "lists in batches are filtered");
    let late_batch = json!([call(13, "list_contacts")]).to_string();
    let later = gw.post_raw("crm-http", t, &[v, ("mcp-session-id", sid)], late_batch).await?;
    assert_eq!((later.status, later.body["error"]["code"].as_i64()), (400, Some(-32600)));

    // Wrong media types and oversized bodies.
    let text = gw
        .http
        .post(s.route("crm-http"))
        .bearer_auth(&token)
        .header("accept", "application/json")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await?;
    assert_eq!(text.status(), 415);
    let accept = gw
        .http
        .post(s.route("crm-http"))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(accept.status(), 406);
    let huge =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#, "x".repeat(5 * 1024 * 1024));
    let too_big = gw.post_raw("crm-http", t, &[v, ("mcp-session-id", sid)], huge).await?;
    assert_eq!(too_big.status, 413);
    Ok(())
}

#[tokio::test]
async fn foreign_origins_and_hosts_are_refused() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm"), &["crm.contacts.read"]).await?;
    let evil =
        gw.post_raw("crm", Some(&token), &[("origin", "http://evil.example")], list(1, "ping").to_string()).await?;
    assert_eq!(evil.status, 403);
    assert_eq!(evil.body["error"]["code"], -32003);
    let null = gw.post_raw("crm", Some(&token), &[("origin", "null")], list(1, "ping").to_string()).await?;
    assert_eq!(null.status, 403);
    let rebinding = gw.post_raw("crm", None, &[("host", "evil.example")], list(1, "ping").to_string()).await?;
    assert_eq!(rebinding.status, 403, "checked before the token");
    let own = s.origin();
    let same = gw.post_raw("crm", Some(&token), &[("origin", &own)], list(1, "tools/list").to_string()).await?;
    assert_eq!(same.status, 400, "the issuer's own origin passes (then the missing session is the problem)");
    Ok(())
}

#[tokio::test]
async fn upstream_failures_are_clear_and_bounded() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":VERSION,"capabilities":{},"clientInfo":{"name":"it","version":"1"}}});
    let token_for =
        |route: &'static str| async move { alice_token_for(s, &s.route(route), &["crm.contacts.read"]).await };

    let down = gw.rpc("down", Some(&token_for("down").await?), None, init.clone()).await?;
    assert_eq!(down.status, 502, "{}", down.text);
    assert_eq!(down.body["error"]["code"], -32000);
    assert!(down.body["error"]["message"].as_str().unwrap_or_default().contains("upstream MCP server is unavailable"));

    let started = std::time::Instant::now();
    let slow = gw.rpc("slow", Some(&token_for("slow").await?), None, init.clone()).await?;
    assert_eq!(slow.status, 504, "{}", slow.text);
    assert_eq!(slow.body["error"]["code"], -32004);
    assert!(started.elapsed() < Duration::from_secs(5));

    let hang = gw.rpc("hang", Some(&token_for("hang").await?), None, init.clone()).await?;
    assert_eq!(hang.status, 504, "{}", hang.text);
    let crash = gw.rpc("crasher", Some(&token_for("crasher").await?), None, init.clone()).await?;
    assert_eq!(crash.status, 502, "{}", crash.text);
    assert_eq!(crash.body["id"], 1);

    // A child that dies mid-session: the next call gets an error, then the session is gone.
    let token = token_for("dies-later").await?;
    let answer = gw.rpc("dies-later", Some(&token), None, init).await?;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let session = answer.session().ok_or("no session")?;
    let broken = gw.rpc("dies-later", Some(&token), Some(&session), call(2, "list_contacts")).await?;
    assert_eq!(broken.status, 200, "the answer was already streaming: {}", broken.text);
    assert_eq!(broken.message()["id"], 2);
    assert_eq!(broken.message()["error"]["code"], -32000, "{}", broken.text);
    assert!(broken.text.contains("exit status: 1"), "{}", broken.text);
    let gone = gw.rpc("dies-later", Some(&token), Some(&session), call(3, "list_contacts")).await?;
    assert_eq!(gone.status, 404, "{}", gone.text);

    // Children are limited per route; a slot frees when its session ends.
    let single = token_for("single").await?;
    let first = gw.session("single", Some(&single)).await?;
    let second = gw.rpc("single", Some(&single), None, json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":VERSION,"capabilities":{},"clientInfo":{"name":"it","version":"1"}}})).await?;
    assert_eq!(second.status, 503, "{}", second.text);
    let end = gw.http.delete(s.route("single")).bearer_auth(&single).header("mcp-session-id", &first).send().await?;
    assert_eq!(end.status(), 204);
    gw.session("single", Some(&single)).await?;

    // The gateway is still up.
    let crm = alice_token_for(s, &s.route("crm"), &["crm.contacts.read"]).await?;
    gw.session("crm", Some(&crm)).await?;
    Ok(())
}

/// A real `oidc-provider` (tests/peers/oidc-provider) as an external issuer; returns the
/// process and its issuer.
async fn start_idp(resource_jwt: &str, resource_opaque: &str) -> AnyResult<(tokio::process::Child, String)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/oidc-provider");
    if !dir.join("node_modules/oidc-provider").exists() {
        return Err(format!("run `npm ci --prefix {}` (scripts/test does)", dir.display()).into());
    }
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("idp.mjs"))
        .env("PORT", "0")
        .env("RESOURCE_JWT", resource_jwt)
        .env("RESOURCE_OPAQUE", resource_opaque)
        .env("JWT_ALG", "RS256")
        .stderr(std::process::Stdio::null());
    spawn_until_ready(command).await
}

async fn idp_token(http: &reqwest::Client, issuer: &str, resource: &str, scope: &str) -> AnyResult<String> {
    let response = http
        .post(format!("{issuer}/token"))
        .basic_auth("agent", Some("agent-secret"))
        .form(&[("grant_type", "client_credentials"), ("scope", scope), ("resource", resource)])
        .send()
        .await?;
    let body: Value = response.json().await?;
    Ok(body["access_token"].as_str().ok_or_else(|| format!("no token: {body}"))?.to_owned())
}

#[tokio::test]
async fn tokens_of_a_trusted_external_issuer_work_and_others_do_not() -> TestResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let (ext, opaque, crm) = (format!("{base}/mcp/ext"), format!("{base}/mcp/ext-opaque"), format!("{base}/mcp/crm"));
    let (_trusted, issuer) = start_idp(&format!("{ext} {crm}"), &opaque).await?;
    let (_stranger, stranger) = start_idp(&ext, &opaque).await?;
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("introspection-secret");
    std::fs::write(&secret, "gateway-secret\n")?;
    let trusted = portcullis::config::TrustedIssuerConfig {
        issuer: issuer.clone(),
        audience: None,
        algorithms: vec!["RS256".into()],
        token_types: vec!["at+jwt".into()],
        leeway_secs: 30,
        jwks_refresh_min_secs: 1,
        introspection_client_id: Some("gateway".into()),
        introspection_client_secret_env: None,
        introspection_client_secret_file: Some(secret),
        introspection_cache_max_secs: 60,
        routes: vec!["ext".into(), "ext-opaque".into()],
        // The test IdP runs on loopback over http, which only an explicit allowance reaches.
        allowed_ranges: vec![
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)),
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ],
        allow_http_loopback: true,
        extra_ca_file: None,
        timeout_secs: 5,
    };
    let options = Options {
        listener: Some(listener),
        upstreams: vec![
            UpstreamConfig { name: "ext".into(), ..demo_upstream() },
            UpstreamConfig { name: "ext-opaque".into(), ..demo_upstream() },
            demo_upstream(),
        ],
        gateway: portcullis::config::GatewayConfig { trusted_issuers: vec![trusted], ..Default::default() },
        ..Options::default()
    };
    let server = TestServer::start_with(options).await?;
    // The IdP runs on the real clock; so must the gateway here.
    let real_now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
    server.clock.advance(real_now - server.clock.now());
    let gw = Gw { server, upstream: TestUpstream::start().await?, http: reqwest::Client::new(), _dir: dir };

    let prm: Value =
        gw.http.get(gw.server.url("/.well-known/oauth-protected-resource/mcp/ext")).send().await?.json().await?;
    assert_eq!(prm["authorization_servers"], json!([gw.server.issuer, issuer]));

    // A JWT access token for this route, verified with the issuer's JWKS.
    let jwt = idp_token(&gw.http, &issuer, &ext, "crm.contacts.read").await?;
    let session = gw.session("ext", Some(&jwt)).await?;
    let allowed = gw.rpc("ext", Some(&jwt), Some(&session), call(1, "list_contacts")).await?;
    assert!(allowed.message()["result"]["content"].is_array(), "{}", allowed.text);
    let denied = gw.rpc("ext", Some(&jwt), Some(&session), call(2, "update_deal")).await?;
    assert_eq!(denied.status, 403, "its scopes are enforced too");

    // The same issuer's token for another route, and a route that does not trust it.
    let for_crm = idp_token(&gw.http, &issuer, &crm, "crm.contacts.read").await?;
    let wrong = gw.rpc("ext", Some(&for_crm), None, list(3, "ping")).await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.challenge().contains("not issued for this resource"), "{}", wrong.challenge());
    let untrusted_route = gw.rpc("crm", Some(&for_crm), None, list(4, "ping")).await?;
    assert_eq!(untrusted_route.status, 401);
    assert!(untrusted_route.challenge().contains("is not trusted here"), "{}", untrusted_route.challenge());

    // An issuer nobody listed.
    let foreign = idp_token(&gw.http, &stranger, &ext, "crm.contacts.read").await?;
    let refused = gw.rpc("ext", Some(&foreign), None, list(5, "ping")).await?;
    assert_eq!(refused.status, 401);
    assert!(refused.challenge().contains("is not trusted here"), "{}", refused.challenge());

    // An opaque token, introspected (RFC 7662) and bound to its own route.
    let opaque_token = idp_token(&gw.http, &issuer, &opaque, "crm.contacts.read").await?;
    assert_eq!(opaque_token.split('.').count(), 1, "opaque: {opaque_token}");
    let session = gw.session("ext-opaque", Some(&opaque_token)).await?;
    let via_introspection = gw.rpc("ext-opaque", Some(&opaque_token), Some(&session), call(6, "list_contacts")).await?;
    assert!(via_introspection.message()["result"]["content"].is_array(), "{}", via_introspection.text);
    let elsewhere = gw.rpc("ext", Some(&opaque_token), None, list(7, "ping")).await?;
    assert_eq!(elsewhere.status, 401);
    let made_up = gw.rpc("ext-opaque", Some("made-up-opaque-token"), None, list(8, "ping")).await?;
    assert_eq!(made_up.status, 401);
    Ok(())
}

/// Requests a proxy in front could read differently from us, and malformed JSON-RPC: each gets
/// its exact error, and nothing reaches the upstream.
/// Every call builds these futures and moves them (into boxes, into their callers' states): a
/// path that goes to the network or the database only sometimes (external tokens, a token
/// state not yet cached, a refused upstream credential) is boxed, so that its large future does
/// not enlarge every call's. The bounds are for the test profile (release futures are smaller);
/// unboxing any of those paths breaks them.
#[tokio::test]
async fn the_futures_of_every_call_stay_small() -> TestResult {
    let s = TestServer::start_with(Options { upstreams: vec![demo_upstream()], ..Options::default() }).await?;
    let gateway = s.gateway()?;
    let principal = portcullis_gateway::Principal::anonymous();
    let headers = http::HeaderMap::new();
    let authenticate = gateway.authenticate("crm", None);
    let post = gateway.post("crm", &principal, &headers, axum::body::Bytes::new());
    let sizes = (std::mem::size_of_val(&authenticate), std::mem::size_of_val(&post));
    assert!(sizes.0 <= 512, "authenticate's future is {} bytes", sizes.0);
    assert!(sizes.1 <= 1024, "post's future is {} bytes", sizes.1);
    Ok(())
}

#[tokio::test]
async fn ambiguous_and_malformed_requests_get_exact_errors() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm-http"), &["crm.contacts.read"]).await?;
    let t = Some(token.as_str());
    let session = gw.session("crm-http", t).await?;
    let sid = session.as_str();
    let v = ("mcp-protocol-version", VERSION);
    let before = gw.upstream.seen.lock().map_err(|_| "poisoned")?.len();

    // A repeated singleton header is refused whatever the order of the copies.
    let bearer = format!("Bearer {token}");
    for pair in [[bearer.as_str(), "Bearer not.a.token"], ["Bearer not.a.token", bearer.as_str()]] {
        let headers = [("authorization", pair[0]), ("authorization", pair[1]), v, ("mcp-session-id", sid)];
        let answer = gw.post_raw("crm-http", None, &headers, call(1, "list_contacts").to_string()).await?;
        assert_eq!((answer.status, answer.body["error"]["code"].as_i64()), (400, Some(-32600)), "{}", answer.text);
        assert_eq!(answer.body["id"], Value::Null);
        assert!(answer.text.contains("the authorization header was sent more than once"), "{}", answer.text);
    }
    for (name, value) in [("mcp-session-id", sid), ("mcp-protocol-version", VERSION)] {
        let headers = [v, ("mcp-session-id", sid), (name, value)];
        let answer = gw.post_raw("crm-http", t, &headers, list(2, "tools/list").to_string()).await?;
        assert_eq!(answer.status, 400, "{name}: {}", answer.text);
        assert!(answer.text.contains(&format!("the {name} header was sent more than once")), "{}", answer.text);
    }
    assert_eq!(gw.upstream.seen.lock().map_err(|_| "poisoned")?.len(), before, "nothing reached the upstream");

    // JSON-RPC 2.0 §5: an id that cannot be determined is answered as null; params must be
    // structured.
    let h = [v, ("mcp-session-id", sid)];
    for (body, code) in [
        (r#"{"jsonrpc":"2.0","id":{"evil":true},"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":100000000000000000000,"method":"ping"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":"all"}"#, -32600),
        (r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":42}"#, -32600),
    ] {
        let answer = gw.post_raw("crm-http", t, &h, body.into()).await?;
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_i64()),
            (400, Some(code)),
            "{body}: {}",
            answer.text
        );
        let expected_id = if body.contains("\"id\":7") { json!(7) } else { Value::Null };
        assert_eq!(answer.body["id"], expected_id, "{body}");
    }
    // An integer id beyond 2^53 comes back exactly as it was sent, not as a float.
    let big = r#"{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}"#;
    let answer = gw.post_raw("crm-http", t, &h, big.into()).await?;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.text.contains("\"id\":9007199254740993"), "{}", answer.text);

    // What the client chose is echoed in bounded form only.
    let huge = "2025-".repeat(2000);
    let answer =
        gw.post_raw("crm-http", t, &[("mcp-protocol-version", &huge)], list(3, "tools/list").to_string()).await?;
    assert_eq!((answer.status, answer.body["error"]["code"].as_i64()), (400, Some(-32022)), "{}", answer.text);
    assert!(answer.text.len() < 300, "{} bytes echoed", answer.text.len());
    let long_method = format!(r#"{{"jsonrpc":"2.0","id":4,"method":"{}","params":{{}}}}"#, "x".repeat(100_000));
    let answer = gw.post_raw("crm-http", t, &h, long_method).await?;
    assert_eq!(answer.body["error"]["code"].as_i64(), Some(-32601), "{}", &answer.text[..answer.text.len().min(300)]);
    assert!(answer.text.len() < 400, "{} bytes echoed", answer.text.len());
    Ok(())
}

/// Disabling a user ends what they have open on the gateway, at once: their MCP sessions (and
/// stdio children) and the event streams they are reading.
#[tokio::test]
async fn disabling_a_user_ends_their_open_sessions_and_streams() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let token = alice_token_for(s, &s.route("crm"), &["crm.contacts.read"]).await?;
    let session = gw.session("crm", Some(&token)).await?;
    let stream = gw
        .http
        .get(s.route("crm"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", VERSION)
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let reading = tokio::spawn(async move {
        use futures_util::StreamExt as _;
        let mut body = stream.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
        std::time::Instant::now()
    });
    let gateway = s.gateway()?;
    assert_eq!((gateway.session_count(), gateway.stream_count()), (1, 1));

    s.control()?.disable_user(&Actor::Operator, "alice").await?;
    let disabled = std::time::Instant::now();
    let ended =
        tokio::time::timeout(Duration::from_secs(3), reading).await.map_err(|_| "the stream is still open")??;
    assert!(ended.saturating_duration_since(disabled) < Duration::from_secs(1));
    assert_eq!((gateway.session_count(), gateway.stream_count()), (0, 0), "the session and its child are gone");
    let after = gw.rpc("crm", Some(&token), Some(&session), call(1, "list_contacts")).await?;
    assert_eq!(after.status, 401, "{}", after.text);
    Ok(())
}

/// Alice's code flow for the crm route: the code, the verifier and the token answer.
async fn alice_code_tokens(s: &TestServer) -> AnyResult<(String, String, Value)> {
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let resource = s.route("crm");
    let url = authorize_url(
        s,
        PUBLIC_CLIENT,
        PUBLIC_REDIRECT,
        &challenge,
        &[("resource", &resource), ("scope", "crm.contacts.read")],
    );
    let location = authorize_as(s, &mut browser, &url, &["crm.contacts.read"], "alice").await?;
    let code = query(&location)?.get("code").ok_or("no code")?.clone();
    let redeem = [
        ("grant_type", "authorization_code"),
        ("client_id", PUBLIC_CLIENT),
        ("code", code.as_str()),
        ("redirect_uri", PUBLIC_REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("resource", resource.as_str()),
    ];
    let (status, body) = s.token(&redeem).await?;
    assert_eq!(status, 200, "{body}");
    Ok((code, verifier, body))
}

/// The gateway remembers our tokens' live state (no database read per call), and never past a
/// revocation: the protocol's own revocations (a replayed code, a reused refresh token) are
/// refused on the very next call, and a change made behind the server's back (straight in the
/// database, announced to no one) within a second.
#[tokio::test]
async fn remembered_token_states_never_outlive_a_revocation() -> TestResult {
    let gw = start().await?;
    let s = &gw.server;
    let resource = s.route("crm");

    // A replayed code revokes the grant its first redemption made.
    let (code, verifier, body) = alice_code_tokens(s).await?;
    let token = body["access_token"].as_str().ok_or("no access token")?.to_owned();
    let session = gw.session("crm", Some(&token)).await?;
    for id in 1..=3 {
        let answer = gw.rpc("crm", Some(&token), Some(&session), call(id, "list_contacts")).await?;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let (status, replay) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &verifier),
            ("resource", &resource),
        ])
        .await?;
    assert_eq!((status, replay["error"].as_str()), (400, Some("invalid_grant")), "{replay}");
    let refused = gw.rpc("crm", Some(&token), Some(&session), call(4, "list_contacts")).await?;
    assert_eq!(refused.status, 401, "a replayed code's grant: {}", refused.text);

    // A reused refresh token revokes its family, the access token just issued with it too.
    let (_, _, body) = alice_code_tokens(s).await?;
    let first_refresh = body["refresh_token"].as_str().ok_or("no refresh token")?.to_owned();
    let refresh = |refresh_token: String| async move {
        s.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT),
            ("refresh_token", &refresh_token),
            ("resource", &s.route("crm")),
        ])
        .await
    };
    let (status, rotated) = refresh(first_refresh.clone()).await?;
    assert_eq!(status, 200, "{rotated}");
    let token = rotated["access_token"].as_str().ok_or("no access token")?.to_owned();
    let session = gw.session("crm", Some(&token)).await?;
    for id in 1..=3 {
        assert_eq!(gw.rpc("crm", Some(&token), Some(&session), call(id, "list_contacts")).await?.status, 200);
    }
    let (status, reused) = refresh(first_refresh).await?;
    assert_eq!((status, reused["error"].as_str()), (400, Some("invalid_grant")), "{reused}");
    let refused = gw.rpc("crm", Some(&token), Some(&session), call(4, "list_contacts")).await?;
    assert_eq!(refused.status, 401, "a reused refresh token's family: {}", refused.text);

    // Revoked straight in the database: no command, no change record, no one told.
    let (_, _, body) = alice_code_tokens(s).await?;
    let token = body["access_token"].as_str().ok_or("no access token")?.to_owned();
    let session = gw.session("crm", Some(&token)).await?;
    assert_eq!(gw.rpc("crm", Some(&token), Some(&session), call(1, "list_contacts")).await?.status, 200);
    s.store()?.execute_admin_sql("UPDATE grants SET revoked_at = 1, revoked_reason = 'by hand'").await?;
    let revoked = std::time::Instant::now();
    loop {
        let answer = gw.rpc("crm", Some(&token), Some(&session), call(2, "list_contacts")).await?;
        if answer.status == 401 {
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert!(revoked.elapsed() < Duration::from_millis(1500), "still allowed {:?} after", revoked.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
