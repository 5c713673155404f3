//! What an operator watches: a real Prometheus scrapes `/metrics` after a scripted scenario,
//! and its query API returns the expected series; the OTLP export of one `tools/call`, decoded
//! with the OpenTelemetry protocol's own message definitions, has the expected parent/child
//! structure, and the HTTP upstream saw the same trace.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Conversation, Node, free_port, list_contacts, portcullis};
use crate::harness::*;

/// One `portcullis serve` on its own database, with a stdio route `crm` (the demo CRM).
struct Single {
    config: PathBuf,
    master_key: String,
    node: Node,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Single {
    async fn start(env: &[(&str, &str)], extra: &str) -> AnyResult<Self> {
        let dir = tempfile::tempdir()?;
        let database = database_url(dir.path()).await?;
        let master_key = portcullis_crypto::random_token(32)?;
        let port = free_port()?;
        let config = dir.path().join("portcullis.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
issuer = "http://127.0.0.1:{port}"
data_dir = {data:?}

[database]
url = {database:?}

[[upstreams]]
name = "crm"
command = [{bin:?}, "demo-crm"]
tools = {{ list_contacts = ["crm.contacts.read"], update_deal = ["crm.deals.write"] }}
{extra}"#,
                data = dir.path().join("data"),
                bin = env!("CARGO_BIN_EXE_portcullis"),
            ),
        )?;
        portcullis(&config, &master_key, &["migrate"])?;
        let log = dir.path().join("serve.log");
        let node = Node::start_with_env(&config, &master_key, port, env, Some(&log)).await?;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { config, master_key, node, http, _dir: dir })
    }

    /// A machine client allowed to read contacts, and its secret.
    fn agent(&self, name: &str) -> AnyResult<(String, String)> {
        let out = portcullis(
            &self.config,
            &self.master_key,
            &["client", "add", "--name", name, "--confidential", "--scope", "crm.contacts.read"],
        )?;
        let field = |key: &str| {
            out.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned())).ok_or(format!("no {key}"))
        };
        Ok((field("client_id:")?, field("client_secret:")?))
    }

    async fn token(&self, client_id: &str, secret: &str) -> AnyResult<String> {
        let body: Value = self
            .http
            .post(format!("{}/token", self.node.base))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("resource", &format!("{}/mcp/crm", self.node.base))])
            .send()
            .await?
            .json()
            .await?;
        Ok(body["access_token"].as_str().ok_or(format!("no token: {body}"))?.to_owned())
    }
}

/// Debian's Prometheus, scraping `target` every second, on a port of its own; stopped (by its
/// id) when dropped.
struct Prometheus {
    child: tokio::process::Child,
    api: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> AnyResult<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: portcullis\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )?;
        let port = free_port()?;
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!("Debian's prometheus package is required for this test (scripts/install-test-deps): {e}")
            })?;
        Ok(Self { child, api: format!("http://127.0.0.1:{port}/api/v1"), _dir: dir })
    }

    /// The value of an instant query returning one series (none: no series yet).
    async fn value(&self, http: &reqwest::Client, query: &str) -> AnyResult<Option<f64>> {
        let Ok(response) = http.get(format!("{}/query", self.api)).query(&[("query", query)]).send().await else {
            return Ok(None);
        };
        let body: Value = response.json().await?;
        let result = &body["data"]["result"];
        let Some(first) = result.as_array().and_then(|r| r.first()) else { return Ok(None) };
        assert_eq!(result.as_array().map(Vec::len), Some(1), "{query} returned several series: {body}");
        Ok(first["value"][1].as_str().and_then(|v| v.parse().ok()))
    }

    /// Waits (at most 30 s) until `query` returns `expected`.
    async fn expect(&self, http: &reqwest::Client, query: &str, expected: f64) -> TestResult {
        let started = Instant::now();
        loop {
            let value = self.value(http, query).await?;
            if value == Some(expected) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{query}: {value:?}, expected {expected}").into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A sign-in with a wrong password on the login page, as a browser sends it.
async fn failed_sign_in(single: &Single) -> TestResult {
    let page = single.http.get(format!("{}/login", single.node.base)).send().await?;
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let body = page.text().await?;
    let input = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        body.find(&marker)
            .map(|at| at + marker.len())
            .and_then(|start| body.get(start..).and_then(|rest| rest.find('"')).map(|end| &body[start..start + end]))
            .map(str::to_owned)
    };
    let mut form = vec![("username", "ghost".to_owned()), ("password", "not the password".to_owned())];
    form.push(("csrf", input("csrf").ok_or(format!("no csrf field: {body}"))?));
    if let Some(request) = input("request") {
        form.push(("request", request));
    }
    let answer = single
        .http
        .post(format!("{}/login", single.node.base))
        .header("cookie", cookies.join("; "))
        .header("origin", &single.node.base)
        .form(&form)
        .send()
        .await?;
    // Back to the login page, saying why.
    assert_eq!(answer.status(), 303, "{}", answer.text().await?);
    let location = answer.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(location.contains("invalid"), "{location}");
    Ok(())
}

/// A scripted scenario (tokens issued, calls allowed and denied, a caller without a token),
/// then a real Prometheus scrapes the node and its query API has each series.
#[tokio::test]
async fn prometheus_scrapes_the_gateway_and_token_series() -> TestResult {
    let metrics_port = free_port()?;
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    // A second route whose upstream is not there, and checkpoints every second.
    let down = format!(
        "[[upstreams]]\nname = \"down\"\nurl = \"http://127.0.0.1:{}/mcp\"\nauthentication = \"off\"\nunmapped = \"allow\"\n\n\
         [audit]\ncheckpoint_interval_secs = 1\n",
        free_port()?
    );
    let single = Single::start(&[("PORTCULLIS_METRICS_LISTEN", &metrics_listen)], &down).await?;
    let (client_id, secret) = single.agent("Metered agent")?;
    let token = single.token(&client_id, &secret).await?;
    let _second = single.token(&client_id, &secret).await?;
    let conversation = Conversation::open(&single.http, &single.node.base, &token).await?;
    for id in 1..=3 {
        let (status, body) = conversation.send(list_contacts(id)).await?;
        assert!(status == 200 && body.contains("Ada Lovelace"), "{status}: {body}");
    }
    for id in 4..=5 {
        let call =
            json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"update_deal","arguments":{}}});
        let (status, _) = conversation.send(call).await?;
        assert_eq!(status, 403, "update_deal needs crm.deals.write");
    }
    let anonymous = single
        .http
        .post(format!("{}/mcp/crm", single.node.base))
        .header("accept", "application/json, text/event-stream")
        .json(&list_contacts(6))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    let initialize = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name":"metrics","version":"1"}}});
    let unreachable = single
        .http
        .post(format!("{}/mcp/down", single.node.base))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await?;
    assert_eq!(unreachable.status(), 502);
    failed_sign_in(&single).await?;

    let prometheus = Prometheus::start(&metrics_listen).await?;
    let http = &single.http;
    let expect = |query: &'static str, expected: f64| prometheus.expect(http, query, expected);
    expect(
        r#"portcullis_gateway_requests_total{route="crm",method="tools/call",decision="allowed",status="200"}"#,
        3.0,
    )
    .await?;
    expect(r#"portcullis_gateway_requests_total{route="crm",method="tools/call",decision="denied",status="403"}"#, 2.0)
        .await?;
    expect(r#"portcullis_gateway_refusals_total{reason="insufficient_scope"}"#, 2.0).await?;
    expect(r#"portcullis_gateway_refusals_total{reason="token_missing"}"#, 1.0).await?;
    expect(r#"portcullis_tokens_issued_total{grant_type="client_credentials"}"#, 2.0).await?;
    expect(r#"portcullis_http_requests_total{endpoint="/token",method="POST",status="200"}"#, 2.0).await?;
    // initialize, initialized and the three allowed calls reached the upstream.
    expect(r#"portcullis_gateway_upstream_duration_seconds_count{route="crm"}"#, 4.0).await?;
    expect(r#"portcullis_gateway_sessions{route="crm"}"#, 1.0).await?;
    expect(r#"portcullis_gateway_stdio_children{route="crm"}"#, 1.0).await?;
    expect(r#"portcullis_upstream_errors_total{route="down",kind="unavailable"}"#, 1.0).await?;
    expect(r#"portcullis_signins_total{idp="local",outcome="failed"}"#, 1.0).await?;
    expect("portcullis_audit_records_dropped_total", 0.0).await?;
    expect("portcullis_change_feed_current", 1.0).await?;
    // Every decided message was queued and written: 2 + 3 + 2 + 1, and the initialize on the
    // route that is down.
    expect("portcullis_audit_records_written_total", 9.0).await?;
    // The node signed the chain's head (the sign-in failure is its last record).
    let head = prometheus.value(http, "portcullis_audit_checkpoint_seq").await?.ok_or("no checkpoint")?;
    assert!(head >= 10.0, "{head}");
    expect("portcullis_audit_queue_depth", 0.0).await?;
    // The calls after the first read their token's live state from memory, not the database.
    let hits = prometheus
        .value(http, r#"portcullis_cache_lookups_total{cache="token_states",result="hit"}"#)
        .await?
        .ok_or("no token state cache hits")?;
    assert!(hits >= 1.0, "{hits}");
    // A latency quantile is computable from the histogram.
    let p99 = prometheus
        .value(http, r#"histogram_quantile(0.99, sum by (le) (portcullis_gateway_request_duration_seconds_bucket{route="crm"}))"#)
        .await?
        .ok_or("no latency quantile")?;
    assert!(p99 > 0.0 && p99 <= 10.0, "{p99}");

    // The Grafana dashboard in the repository: every query parses, names only series
    // Portcullis exports, and returns data once the scenario has run.
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/portcullis.json"
    ))?)?;
    let panels = dashboard["panels"].as_array().ok_or("no panels")?;
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().ok_or("no targets")? {
            let expr = target["expr"].as_str().ok_or("no expr")?;
            let query = expr.replace("$__rate_interval", "1m").replace("$route", ".*");
            let names: Vec<&str> = query
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("portcullis_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            let answer: Value =
                http.get(format!("{}/query", prometheus.api)).query(&[("query", &query)]).send().await?.json().await?;
            assert_eq!(answer["status"], "success", "{}: {expr}: {answer}", panel["title"]);
            let series: Value = http
                .get(format!("{}/series", prometheus.api))
                .query(&[("match[]", format!("{{__name__=~\"{}\"}}", names.join("|")))])
                .send()
                .await?
                .json()
                .await?;
            assert!(
                series["data"].as_array().is_some_and(|s| !s.is_empty()),
                "{}: no series for {names:?}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} queries");
    drop(prometheus);
    single.node.stop().await
}

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP receiver (protobuf, `POST /v1/traces`): decodes each export with the
/// `opentelemetry-proto` messages and keeps the spans.
async fn otlp_receiver() -> AnyResult<(String, std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return http::StatusCode::BAD_REQUEST;
                };
                let mut spans = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            spans.push(ReceivedSpan {
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                            });
                        }
                    }
                }
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), spans))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the HTTP upstream saw of each request: its `traceparent` header and `_meta`.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// A Streamable HTTP MCP server with one tool, `echo`, that notes the trace context of every
/// message it receives.
async fn traced_upstream() -> AnyResult<(String, Seen)> {
    let seen: Seen = Default::default();
    let noted = seen.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: http::HeaderMap, axum::Json(message): axum::Json<Value>| {
            let noted = noted.clone();
            async move {
                let method = message["method"].as_str().unwrap_or_default().to_owned();
                let header = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let meta = message["params"]["_meta"]["traceparent"].as_str().map(str::to_owned);
                noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((method.clone(), header, meta));
                use axum::response::IntoResponse as _;
                let answer = match method.as_str() {
                    "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                           "serverInfo": {"name": "traced", "version": "1"}}),
                    "tools/call" => json!({"content": [{"type": "text", "text": "echo"}]}),
                    _ => return http::StatusCode::ACCEPTED.into_response(),
                };
                (
                    [("mcp-session-id", "upstream-session")],
                    axum::Json(json!({"jsonrpc": "2.0", "id": message["id"], "result": answer})),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/mcp"), seen))
}

/// A `tools/call` that carries a client's `traceparent` is one trace: the gateway's request
/// span is the client's child, with children for token validation, the policy decision, the
/// upstream call and the audit enqueue; the upstream was called as a child of the upstream span,
/// in the header and in `_meta`.
#[tokio::test]
async fn a_tool_call_is_one_trace_from_the_client_through_the_upstream() -> TestResult {
    let (receiver, spans) = otlp_receiver().await?;
    let (upstream, seen) = traced_upstream().await?;
    let route = format!(
        "[[upstreams]]\nname = \"traced\"\nurl = \"{upstream}\"\ntools = {{ echo = [\"crm.contacts.read\"] }}\n"
    );
    let env = [
        ("PORTCULLIS_OTLP_ENDPOINT", receiver.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("PORTCULLIS_LOG", "warn,portcullis::access=debug"),
        ("PORTCULLIS_LOG_FORMAT", "json"),
    ];
    let single = Single::start(&env, &route).await?;
    let (client_id, secret) = single.agent("Traced agent")?;
    let url = format!("{}/mcp/traced", single.node.base);
    let body: Value = single
        .http
        .post(format!("{}/token", single.node.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials"), ("resource", &url)])
        .send()
        .await?
        .json()
        .await?;
    let token = body["access_token"].as_str().ok_or(format!("no token: {body}"))?;
    let post = |message: Value, session: Option<String>, traceparent: Option<&str>| {
        let mut request = single
            .http
            .post(&url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&message);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        request.send()
    };
    let initialize = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name":"traced","version":"1"}}});
    let answer = post(initialize, None, None).await?;
    assert_eq!(answer.status(), 200);
    let session = answer.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);

    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let call =
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"secret":"s3cr3t"}}});
    let answer = post(call, session.clone(), Some(&format!("00-{client_trace}-{client_span}-01"))).await?;
    assert_eq!(answer.status(), 200, "{}", answer.text().await?);
    // A client that carries its trace only in _meta (SEP-414), as over stdio.
    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    let meta_span = "b7ad6b7169203331";
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{},
        "_meta": {"traceparent": format!("00-{meta_trace}-{meta_span}-01")}}});
    let answer = post(call, session, None).await?;
    assert_eq!(answer.status(), 200, "{}", answer.text().await?);

    // Stopping flushes the spans still queued.
    let Single { node, _dir: dir, config, master_key, .. } = single;
    node.stop().await?;
    // Payload privacy: the audit trail names the tool and the decision, never the arguments.
    let trail = portcullis(&config, &master_key, &["audit", "tail", "--json", "-n", "50"])?;
    assert!(trail.contains("\"target\":\"echo\""), "{trail}");
    assert!(!trail.contains("s3cr3t"), "{trail}");
    // The node's log line for the call carries the client's trace id.
    let log = std::fs::read_to_string(dir.path().join("serve.log"))?;
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["trace_id"] == client_trace)
        .ok_or(format!("no log line with the trace id: {log}"))?;
    assert_eq!(line["fields"]["message"], "answered");
    assert!(!log.contains("s3cr3t"), "{log}");
    let started = Instant::now();
    let trace: Vec<ReceivedSpan> = loop {
        let trace: Vec<ReceivedSpan> = spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|s| s.trace_id == client_trace)
            .cloned()
            .collect();
        if trace.len() >= 5
            && spans.lock().map(|s| s.iter().any(|s| s.trace_id == "0af7651916cd43dd8448eb211c80319c")).unwrap_or(false)
            || started.elapsed() > Duration::from_secs(10)
        {
            break trace;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    let request = trace.iter().find(|s| s.name == "POST /mcp/{route}").ok_or_else(|| {
        let all = spans.lock().map(|s| format!("{s:?}")).unwrap_or_default();
        format!("no request span in the client's trace: {names:?}; all received: {all}")
    })?;
    assert_eq!(request.parent_span_id, client_span, "the gateway continues the client's trace");
    let child = |name: &str| -> AnyResult<&ReceivedSpan> {
        let span = trace.iter().find(|s| s.name == name).ok_or(format!("no {name} span in {names:?}"))?;
        assert_eq!(span.parent_span_id, request.span_id, "{name} is a child of the request");
        Ok(span)
    };
    child("authenticate")?;
    child("decide")?;
    let upstream_span = child("upstream")?;
    child("audit.enqueue")?;

    // The upstream saw the same trace, with the gateway's upstream span as the parent, as a
    // header and in _meta; and nothing for the initialize the client did not trace... except
    // the gateway's own new trace.
    let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let (_, header, meta) = seen.iter().find(|(m, _, _)| m == "tools/call").ok_or("the call did not arrive")?;
    let expected = format!("00-{client_trace}-{}-01", upstream_span.span_id);
    assert_eq!(header.as_deref(), Some(expected.as_str()));
    assert_eq!(meta.as_deref(), Some(expected.as_str()));
    let (_, header, _) = seen.iter().find(|(m, _, _)| m == "initialize").ok_or("no initialize")?;
    assert!(header.as_deref().is_some_and(|h| !h.contains(client_trace)), "{header:?}");

    // The call whose trace came in _meta: the message is a span of that trace, with the
    // decision, the upstream call and the audit enqueue under it, and passed on.
    let received = spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let message = received
        .iter()
        .find(|s| s.trace_id == meta_trace && s.name == "mcp.message")
        .ok_or(format!("no message span in the _meta trace: {received:?}"))?;
    assert_eq!(message.parent_span_id, meta_span);
    for name in ["decide", "upstream", "audit.enqueue"] {
        assert!(
            received.iter().any(|s| s.name == name && s.parent_span_id == message.span_id),
            "no {name} under the message span: {received:?}"
        );
    }
    let calls: Vec<_> = seen.iter().filter(|(m, _, _)| m == "tools/call").collect();
    let (_, header, meta) = calls.get(1).ok_or("the second call did not arrive")?;
    assert!(header.as_deref().is_some_and(|h| h.contains(meta_trace)), "{header:?}");
    assert!(meta.as_deref().is_some_and(|h| h.contains(meta_trace) && !h.contains(meta_span)), "{meta:?}");
    Ok(())
}
