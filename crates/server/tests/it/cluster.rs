//! Several nodes on one database: the kill switch reaches every node, the change feed loses
//! nothing when its connection is cut, and a node whose database stops answering fails
//! closed, then recovers by itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::harness::*;

const VERSION: &str = "2025-11-25";

/// `portcullis` with the shared master key, as an operator on one of the nodes would run it.
pub(crate) fn portcullis(config: &Path, master_key: &str, args: &[&str]) -> AnyResult<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PORTCULLIS_MASTER_KEY", master_key)
        .env("PORTCULLIS_LOG", "warn")
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(format!("portcullis {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One `portcullis serve` process.
pub(crate) struct Node {
    child: tokio::process::Child,
    pub(crate) base: String,
}

impl Node {
    async fn start(config: &Path, master_key: &str, port: u16) -> AnyResult<Self> {
        Self::start_with_env(config, master_key, port, &[], None).await
    }

    /// With more environment variables (a node of its own's settings; `PORTCULLIS_LOG` among
    /// them overrides `warn`), and its log in `log` when given.
    pub(crate) async fn start_with_env(
        config: &Path,
        master_key: &str,
        port: u16,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> AnyResult<Self> {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::inherit(),
        };
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("PORTCULLIS_LOG", "warn")
            .envs(env.iter().copied())
            .env("PORTCULLIS_LISTEN", format!("127.0.0.1:{port}"))
            .env("PORTCULLIS_MASTER_KEY", master_key)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "serve did not start in 30 s")??
            .ok_or("serve exited early")?;
        Ok(Self { child, base: format!("http://127.0.0.1:{port}") })
    }

    /// Ends the process with SIGKILL: no shutdown, no flush, nothing drained.
    pub(crate) async fn kill_hard(self) -> TestResult {
        self.end("-KILL").await
    }

    pub(crate) async fn stop(self) -> TestResult {
        self.end("-TERM").await
    }

    /// Sends `signal` to the process (by its id) and waits for it to exit.
    async fn end(mut self, signal: &str) -> TestResult {
        let pid = self.child.id().ok_or("no pid")?.to_string();
        std::process::Command::new("kill").args([signal, &pid]).status()?;
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .map_err(|_| format!("no exit after {signal}"))??;
        Ok(())
    }
}

pub(crate) fn free_port() -> AnyResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An MCP conversation on one node's `/mcp/crm`.
pub(crate) struct Conversation {
    http: reqwest::Client,
    url: String,
    token: String,
    session: String,
}

impl Conversation {
    pub(crate) async fn open(http: &reqwest::Client, node: &str, token: &str) -> AnyResult<Self> {
        let url = format!("{node}/mcp/crm");
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name":"cluster","version":"1"}}});
        let response = http
            .post(&url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await?;
        assert_eq!(response.status(), 200, "initialize on {url}");
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Mcp-Session-Id")?
            .to_owned();
        let conversation = Self { http: http.clone(), url, token: token.to_owned(), session };
        let (status, _) = conversation.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await?;
        assert_eq!(status, 202);
        Ok(conversation)
    }

    pub(crate) async fn send(&self, message: Value) -> AnyResult<(u16, String)> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", VERSION)
            .json(&message)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// Opens the session's GET stream and returns when it ends.
    async fn stream(&self) -> AnyResult<tokio::task::JoinHandle<Instant>> {
        let response = self
            .http
            .get(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", VERSION)
            .send()
            .await?;
        assert_eq!(response.status(), 200, "GET stream");
        Ok(tokio::spawn(async move {
            let mut body = response.bytes_stream();
            while let Some(Ok(_)) = body.next().await {}
            Instant::now()
        }))
    }
}

/// Two nodes and the CLI on one database (SQLite file or PostgreSQL schema, as the suite
/// runs), sharing a master key.
struct Cluster {
    config: PathBuf,
    master_key: String,
    a: Node,
    b: Node,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> AnyResult<Self> {
        Self::start_with((free_port()?, free_port()?), "").await
    }

    /// Nodes A and B on `ports`, with `extra` appended to their configuration file.
    async fn start_with((port_a, port_b): (u16, u16), extra: &str) -> AnyResult<Self> {
        let dir = tempfile::tempdir()?;
        let database = database_url(dir.path()).await?;
        // 32 random bytes, base64url: what PORTCULLIS_MASTER_KEY takes.
        let master_key = portcullis_crypto::random_token(32)?;
        let bin = env!("CARGO_BIN_EXE_portcullis");
        let config = dir.path().join("portcullis.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
issuer = "http://127.0.0.1:{port_a}"
data_dir = {data:?}

[database]
url = {database:?}

[gateway]
allowed_hosts = ["127.0.0.1:{port_b}"]

[audit]
checkpoint_interval_secs = 1

[[upstreams]]
name = "crm"
command = [{bin:?}, "demo-crm"]
tools = {{ list_contacts = ["crm.contacts.read"], update_deal = ["crm.deals.write"] }}
{extra}"#,
                data = dir.path().join("data"),
            ),
        )?;
        portcullis(&config, &master_key, &["migrate"])?;
        let a = Node::start(&config, &master_key, port_a).await?;
        let b = Node::start(&config, &master_key, port_b).await?;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { config, master_key, a, b, http, _dir: dir })
    }

    fn cli(&self, args: &[&str]) -> AnyResult<String> {
        portcullis(&self.config, &self.master_key, args)
    }

    /// A client-credentials grant from `node`: the status and the answer.
    async fn token_from(&self, node: &str, client_id: &str, secret: &str) -> AnyResult<(u16, Value)> {
        let response = self
            .http
            .post(format!("{node}/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("resource", &format!("{}/mcp/crm", self.a.base))])
            .send()
            .await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// A machine client allowed to read contacts, its secret, and a token of its from node A.
    async fn agent(&self, name: &str) -> AnyResult<(String, String, String)> {
        let out = self.cli(&["client", "add", "--name", name, "--confidential", "--scope", "crm.contacts.read"])?;
        let field = |key: &str| {
            out.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned())).ok_or(format!("no {key}"))
        };
        let (client_id, secret) = (field("client_id:")?, field("client_secret:")?);
        let (_, body) = self.token_from(&self.a.base, &client_id, &secret).await?;
        let token = body["access_token"].as_str().ok_or(format!("no token: {body}"))?.to_owned();
        Ok((client_id, secret, token))
    }

    async fn stop(self) -> TestResult {
        self.a.stop().await?;
        self.b.stop().await
    }
}

pub(crate) fn list_contacts(id: i64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"list_contacts","arguments":{}}})
}

/// The kill switch: a client suspended from the CLI is refused on every node within a second,
/// on fresh requests and on sessions and streams that are already open.
#[tokio::test]
async fn a_suspension_reaches_every_node_within_a_second() -> TestResult {
    let cluster = Cluster::start().await?;
    let (client_id, secret, token) = cluster.agent("Nightly report").await?;
    // Node B's token endpoint has read (and cached) the client too.
    assert_eq!(cluster.token_from(&cluster.b.base, &client_id, &secret).await?.0, 200);

    // The token node A issued works on node B; both hold a session and a stream.
    let on_b = Conversation::open(&cluster.http, &cluster.b.base, &token).await?;
    let (status, body) = on_b.send(list_contacts(1)).await?;
    assert!(status == 200 && body.contains("Ada Lovelace"), "{status}: {body}");
    let on_a = Conversation::open(&cluster.http, &cluster.a.base, &token).await?;
    let stream_b = on_b.stream().await?;
    let stream_a = on_a.stream().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stream_b.is_finished() && !stream_a.is_finished(), "the streams are open before the suspension");

    cluster.cli(&["client", "suspend", &client_id])?;
    let suspended = Instant::now();

    for (node, stream) in [("B", stream_b), ("A", stream_a)] {
        let ended = tokio::time::timeout(Duration::from_secs(3), stream).await.map_err(|_| "stream still open")??;
        let late = ended.saturating_duration_since(suspended);
        assert!(late <= Duration::from_secs(1), "node {node} ended the stream {late:?} after the suspension");
    }
    let (status, body) = on_b.send(list_contacts(2)).await?;
    assert_eq!(status, 401, "an open session on node B: {body}");
    let fresh = cluster
        .http
        .post(format!("{}/mcp/crm", cluster.b.base))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name":"again","version":"1"}}}))
        .send()
        .await?;
    assert_eq!(fresh.status(), 401, "a fresh request on node B");
    // Node B's token endpoint refuses the client too: its cached record went with the change.
    let (status, body) = cluster.token_from(&cluster.b.base, &client_id, &secret).await?;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    assert!(suspended.elapsed() < Duration::from_secs(3));

    // The suspension is in the audit trail, by the operator, once.
    let audit = cluster.cli(&["audit", "tail", "--json", "--kind", "client.suspended", "--client", &client_id])?;
    let rows: Vec<Value> = audit.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(rows.len(), 1, "{audit}");
    assert_eq!((rows[0]["actor"].as_str(), rows[0]["decision"].as_str()), (Some("operator"), Some("succeeded")));
    cluster.stop().await
}

/// Durability: every grant the token endpoint acknowledged survives the process being killed
/// with SIGKILL in the middle of issuing them (node B, on the same database, accepts each
/// token afterwards), while 16 clients keep asking.
#[tokio::test]
async fn every_acknowledged_grant_survives_a_kill_9() -> TestResult {
    let cluster = Cluster::start().await?;
    let (client_id, secret, _) = cluster.agent("Load").await?;
    let Cluster { a, b, http, _dir, .. } = cluster;
    let url = format!("{}/token", a.base);
    let resource = format!("{}/mcp/crm", a.base);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, url, resource, client_id, secret, stop) =
            (http.clone(), url.clone(), resource.clone(), client_id.clone(), secret.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            // Bounded: at most 2,000 requests each, and the loop ends when the node is gone.
            for _ in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let sent = http
                    .post(&url)
                    .basic_auth(&client_id, Some(&secret))
                    .form(&[("grant_type", "client_credentials"), ("resource", resource.as_str())])
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 200 {
                    break;
                }
                // Acknowledged only once the whole answer arrived.
                let Ok(body) = response.json::<Value>().await else { break };
                if let Some(token) = body["access_token"].as_str() {
                    acknowledged.push(token.to_owned());
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill_hard().await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await?);
    }
    assert!(acknowledged.len() >= 50, "only {} grants were issued before the kill", acknowledged.len());

    // Every one of them is active on node B (introspection reads the token's record, its grant
    // and its client), and node B's gateway takes one.
    for (i, token) in acknowledged.iter().enumerate() {
        let response = http
            .post(format!("{}/introspect", b.base))
            .basic_auth(&client_id, Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await?;
        assert_eq!(body["active"], true, "acknowledged token {i} of {} is lost: {body}", acknowledged.len());
    }
    let last = acknowledged.last().ok_or("no token")?;
    let (status, body) = Conversation::open(&http, &b.base, last).await?.send(list_contacts(1)).await?;
    assert!(status == 200 && body.contains("Ada Lovelace"), "{status}: {body}");
    b.stop().await
}

/// A node that loses its LISTEN connection while changes happen applies every one of them
/// once it is back, in order.
#[tokio::test]
async fn the_change_feed_loses_nothing_when_its_connection_is_cut() -> TestResult {
    let (direct_url, postgres) = fresh_postgres_schema().await?;
    let relay = Relay::start(postgres).await?;
    let server =
        TestServer::start_with(Options { database_url: Some(via(&direct_url, relay.addr)?), ..Options::default() })
            .await?;
    let feed = server.running.as_ref().ok_or("stopped")?.feed.clone();
    let mut changes = feed.subscribe();
    // Another node's control layer, on a connection of its own.
    let other = Control::new(portcullis_store::Store::connect(&direct_url, 2).await?, server.clock.clone());

    for round in 0..3 {
        relay.cut();
        for n in 0..5 {
            let grant = portcullis_store::GrantSelector::Grant(format!("round-{round}-grant-{n}"));
            other
                .revoke_grants(&Actor::Operator, grant, portcullis_control::RevocationReason::AdministratorRequest)
                .await?;
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 15 {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .map_err(|_| format!("only {} of 15 changes arrived", seen.len()))??;
        seen.push(change.revision);
    }
    let first = seen.first().copied().ok_or("none")?;
    assert_eq!(seen, (first..first + 15).collect::<Vec<_>>(), "every change, in order, once");
    assert!(feed.is_current());
    // And the node took part throughout: its own commits still reach the log.
    server.control()?.suspend_client(&Actor::Operator, PUBLIC_CLIENT).await?;
    let own = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await.map_err(|_| "own change lost")??;
    assert_eq!(
        (own.kind, own.client_id.as_deref()),
        (portcullis_store::AuditKind::ClientSuspended, Some(PUBLIC_CLIENT))
    );
    Ok(())
}

/// A database that stops answering without closing anything (a black hole): calls get a
/// prompt 503 instead of hanging once the token states they remember are a second old, our
/// tokens are refused within the bound, and the node recovers by itself when the database is
/// back.
#[tokio::test]
async fn a_node_fails_closed_when_its_database_stops_answering_and_recovers() -> TestResult {
    let (direct_url, postgres) = fresh_postgres_schema().await?;
    let relay = Relay::start(postgres).await?;
    let database =
        portcullis::config::DatabaseConfig { query_timeout_ms: 800, fail_closed_after_ms: 1500, ..Default::default() };
    let server = TestServer::start_with(Options {
        database_url: Some(via(&direct_url, relay.addr)?),
        database: Some(database),
        upstreams: vec![portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned())],
        ..Options::default()
    })
    .await?;
    let token = alice_token_for(&server, &server.route("crm"), &["crm.contacts.read"]).await?;
    let http = reqwest::Client::new();
    let initialize = || {
        http.post(server.route("crm"))
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name":"it","version":"1"}}}))
            .send()
    };
    assert_eq!(initialize().await?.status(), 200);

    relay.set_mode(RelayMode::BlackHole);
    // The token's live state was read a moment ago: for at most a second the gateway answers
    // from memory (within the fail-closed bound), and never hangs.
    let early = tokio::time::timeout(Duration::from_secs(5), initialize()).await.map_err(|_| "the gateway hung")??;
    assert!(matches!(early.status().as_u16(), 200 | 503), "{}", early.status());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let asked = Instant::now();
    let response =
        tokio::time::timeout(Duration::from_secs(5), initialize()).await.map_err(|_| "the gateway hung")??;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await?;
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("cannot reach its database")), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(3), "answered after {:?}", asked.elapsed());
    let feed = server.running.as_ref().ok_or("stopped")?.feed.clone();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(!feed.is_current(), "past the bound the node knows it is cut off");
    let asked = Instant::now();
    assert_eq!(initialize().await?.status(), 503);
    assert!(asked.elapsed() < Duration::from_millis(500), "failing closed is immediate: {:?}", asked.elapsed());
    // The token endpoint says so too, with the OAuth error a client can retry on.
    let (status, body) = server
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
        ])
        .await?;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");

    relay.set_mode(RelayMode::Forward);
    let back = Instant::now();
    loop {
        if initialize().await?.status() == 200 {
            break;
        }
        if back.elapsed() > Duration::from_secs(15) {
            return Err("the node did not recover within 15 s of the database coming back".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(feed.is_current());
    Ok(())
}

/// A running node takes a changed configuration file on SIGHUP or `portcullis reload`:
/// policies and routes change for the next request while open sessions go on; a file that
/// does not validate, or that changes what only a restart can, is refused and the running
/// configuration stays. Every attempt is in the audit trail.
#[tokio::test]
async fn a_changed_configuration_is_taken_without_a_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let database = database_url(dir.path()).await?;
    let master_key = portcullis_crypto::random_token(32)?;
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let config = dir.path().join("portcullis.toml");
    let write = |tools: &str, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nissuer = \"{base}\"\ndata_dir = {data:?}\n[database]\nurl = {database:?}\n\
                 [[upstreams]]\nname = \"crm\"\ncommand = [{bin:?}, \"demo-crm\"]\ntools = {{ {tools} }}\n{extra}",
                data = dir.path().join("data"),
            ),
        )
    };
    write(r#"list_contacts = ["crm.contacts.read"]"#, "")?;
    portcullis(&config, &master_key, &["migrate"])?;
    let node = Node::start(&config, &master_key, port).await?;
    let out = portcullis(
        &config,
        &master_key,
        &["client", "add", "--name", "agent", "--confidential", "--scope", "crm.contacts.read"],
    )?;
    let field =
        |key: &str| out.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned())).ok_or(key.to_owned());
    let (client_id, secret) = (field("client_id:")?, field("client_secret:")?);
    let http = reqwest::Client::new();
    let token_for = |resource: String| {
        let (http, client_id, secret, base) = (http.clone(), client_id.clone(), secret.clone(), base.clone());
        async move {
            let response = http
                .post(format!("{base}/token"))
                .basic_auth(&client_id, Some(&secret))
                .form(&[("grant_type", "client_credentials"), ("resource", &resource)])
                .send()
                .await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await?;
            Ok::<_, Box<dyn std::error::Error>>((status, body))
        }
    };
    let (_, body) = token_for(format!("{base}/mcp/crm")).await?;
    let token = body["access_token"].as_str().ok_or(format!("no token: {body}"))?.to_owned();
    let conversation = Conversation::open(&http, &base, &token).await?;
    let tools = || async {
        let (status, text) = conversation.send(json!({"jsonrpc":"2.0","id":5,"method":"tools/list"})).await?;
        // A JSON body, or the last event of an event stream.
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .next_back()
                .unwrap_or(Value::Null)
        });
        let mut names: Vec<String> = body["result"]["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        names.sort();
        Ok::<_, Box<dyn std::error::Error>>((status, names))
    };
    assert_eq!(tools().await?, (200, vec!["list_contacts".to_owned()]));
    let until = |want: &'static [&'static str]| async move {
        let started = Instant::now();
        loop {
            let (status, names) = tools().await?;
            assert_eq!(status, 200, "the open session goes on");
            if names == want {
                return Ok::<_, Box<dyn std::error::Error>>(());
            }
            if started.elapsed() > Duration::from_secs(5) {
                return Err(format!("tools/list still shows {names:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let hangup = || -> TestResult {
        let pid = node.child.id().ok_or("no pid")?.to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status()?.success());
        Ok(())
    };

    // A new mapping and a new route, on SIGHUP.
    write(
        r#"list_contacts = ["crm.contacts.read"], export_contacts = ["crm.contacts.read"]"#,
        &format!(
            "[[upstreams]]\nname = \"crm2\"\ncommand = [{bin:?}, \"demo-crm\"]\ntools = {{ list_contacts = [\"crm.contacts.read\"] }}\n"
        ),
    )?;
    hangup()?;
    until(&["export_contacts", "list_contacts"]).await?;
    let metadata = http.get(format!("{base}/.well-known/oauth-protected-resource/mcp/crm2")).send().await?;
    assert_eq!(metadata.status(), 200, "the new route is published");
    let (status, body) = token_for(format!("{base}/mcp/crm2")).await?;
    assert_eq!(status, 200, "the authorization server issues tokens for the new route: {body}");

    let audit = || -> AnyResult<Vec<Value>> {
        let out = portcullis(&config, &master_key, &["audit", "tail", "--json", "--kind", "config"])?;
        Ok(out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    };
    // Waits (at most 5 s) until the node has recorded `count` reloads: read from the database,
    // since the CLI cannot read a configuration file that does not validate.
    let store = portcullis_store::Store::connect(&database, 1).await?;
    let reloads_recorded = |count: usize| {
        let store = &store;
        async move {
            let filter = portcullis_store::AuditFilter {
                kinds: vec![portcullis_store::AuditKind::ConfigReloaded],
                ..Default::default()
            };
            let started = Instant::now();
            while store.audit_events(None, 100, &filter).await?.len() < count
                && started.elapsed() < Duration::from_secs(5)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    // A file that does not validate is refused; what runs stays.
    write(r#"list_contacts = ["crm.contacts.read"]"#, "unmapped = \"maybe\"\n")?;
    hangup()?;
    // The node read that file before the next one replaces it.
    reloads_recorded(2).await?;
    // A file that changes what only a restart can is refused too.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)?.replace("unmapped = \"maybe\"\n", "").replace(&base, "http://127.0.0.1:1"),
    )?;
    portcullis(&config, &master_key, &["reload"])?;
    reloads_recorded(3).await?;
    let reloads = audit()?;
    let outcomes: Vec<(String, String)> = reloads
        .iter()
        .filter(|r| r["kind"] == "config.reloaded")
        .map(|r| (r["decision"].as_str().unwrap_or("").to_owned(), r["reason"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(outcomes.len(), 3, "{reloads:?}");
    assert_eq!(outcomes[0], ("succeeded".to_owned(), String::new()));
    assert!(outcomes[1].0 == "failed" && outcomes[1].1.contains("unmapped"), "{outcomes:?}");
    assert!(
        outcomes[2].0 == "failed" && outcomes[2].1.contains("server.issuer changed; that takes a restart"),
        "{outcomes:?}"
    );
    assert!(reloads.iter().any(|r| r["kind"] == "config.reload_requested" && r["actor"] == "operator"));
    assert_eq!(tools().await?, (200, vec!["export_contacts".to_owned(), "list_contacts".to_owned()]), "unchanged");

    // `portcullis reload` with a valid file takes effect.
    write(r#"list_contacts = ["crm.contacts.read"]"#, "")?;
    portcullis(&config, &master_key, &["reload"])?;
    until(&["list_contacts"]).await?;
    node.stop().await
}

/// Offboarding at the organisation's identity provider reaches every node: a back-channel
/// logout delivered to node A (a logout token signed with corp's published key) ends the open
/// stream of the user's agent on node B within a second, and node B refuses the agent's token.
/// The agent got that token from node A with an identity assertion (SEP-990).
#[tokio::test]
async fn a_logout_at_the_identity_provider_reaches_every_node() -> TestResult {
    let (port_a, port_b) = (free_port()?, free_port()?);
    let node_a = format!("http://127.0.0.1:{port_a}");
    let corp = crate::sso::start_idp(&format!("{node_a}/sso/corp/callback"), crate::sso::CORP_USERS).await?;
    let secrets = tempfile::tempdir()?;
    let secret_file = secrets.path().join("idp-secret");
    std::fs::write(&secret_file, crate::sso::IDP_SECRET)?;
    let extra = format!(
        r#"
[[identity_providers]]
name = "corp"
issuer = "{issuer}"
client_id = "portcullis"
client_secret_file = {secret_file:?}
scopes = ["openid", "email", "profile", "groups"]
email_domains = ["corp.example"]
groups_claim = "groups"
jit = true
accept_id_jag = true
allowed_ranges = ["127.0.0.1/32", "::1/128"]
allow_http_loopback = true
[identity_providers.group_scopes]
engineering = ["crm.contacts.read", "crm.deals.write"]
"#,
        issuer = corp.issuer,
    );
    let cluster = Cluster::start_with((port_a, port_b), &extra).await?;
    let out = cluster.cli(&[
        "client",
        "add",
        "--name",
        "Enterprise agent",
        "--confidential",
        "--grant-type",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ])?;
    let field = |key: &str| {
        out.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned())).ok_or(format!("no {key}"))
    };
    let (client_id, secret) = (field("client_id:")?, field("client_secret:")?);

    // The agent's token, from node A, for erin.
    let route = format!("{node_a}/mcp/crm");
    let jag: Value = cluster
        .http
        .post(format!("{}/test/id-jag", corp.issuer))
        .json(&json!({"sub": "erin", "client_id": client_id, "aud": node_a, "resource": route,
            "scope": "crm.contacts.read", "groups": ["engineering"]}))
        .send()
        .await?
        .json()
        .await?;
    let response = cluster
        .http
        .post(format!("{node_a}/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jag["assertion"].as_str().ok_or("no assertion")?),
        ])
        .send()
        .await?;
    let tokens: Value = response.json().await?;
    let token = tokens["access_token"].as_str().ok_or(format!("no token: {tokens}"))?.to_owned();

    // Open on node B: a session and its stream.
    let on_b = Conversation::open(&cluster.http, &cluster.b.base, &token).await?;
    let stream_b = on_b.stream().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stream_b.is_finished(), "the stream is open before the logout");

    // corp says erin is logged out, to node A.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let logout: Value = cluster
        .http
        .post(format!("{}/test/sign", corp.issuer))
        .json(&json!({"typ": "logout+jwt", "claims": {"iss": corp.issuer, "aud": "portcullis", "sub": "erin",
            "iat": now, "exp": now + 120, "jti": format!("logout-{now}"),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}}))
        .send()
        .await?
        .json()
        .await?;
    let delivered = cluster
        .http
        .post(format!("{node_a}/sso/corp/backchannel-logout"))
        .form(&[("logout_token", logout["jwt"].as_str().ok_or("no logout token")?)])
        .send()
        .await?;
    assert_eq!(delivered.status(), 200, "{}", delivered.text().await?);
    let logged_out = Instant::now();

    let ended =
        tokio::time::timeout(Duration::from_secs(3), stream_b).await.map_err(|_| "the stream on B is still open")??;
    let late = ended.saturating_duration_since(logged_out);
    assert!(late <= Duration::from_secs(1), "node B ended the stream {late:?} after the logout");
    let (status, body) = on_b.send(list_contacts(1)).await?;
    assert_eq!(status, 401, "the agent's next call on node B: {body}");
    let audit = cluster.cli(&["audit", "tail", "--json", "--kind", "signin.logged_out"])?;
    assert!(audit.contains("idp:corp"), "{audit}");
    cluster.stop().await
}

/// A route taken out of the configuration takes its users' upstream accounts (the token vault)
/// with it when the node re-reads the file; the other routes' stay.
#[tokio::test]
async fn a_removed_route_forgets_its_users_upstream_accounts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let database = database_url(dir.path()).await?;
    let master_key = portcullis_crypto::random_token(32)?;
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let config = dir.path().join("portcullis.toml");
    let write = |routes: &[&str]| {
        let mut text = format!(
            "[server]\nissuer = \"http://127.0.0.1:{port}\"\ndata_dir = {data:?}\n[database]\nurl = {database:?}\n",
            data = dir.path().join("data"),
        );
        for route in routes {
            text.push_str(&format!(
                "[[upstreams]]\nname = \"{route}\"\ncommand = [{bin:?}, \"demo-crm\"]\ntools = {{ list_contacts = [\"crm.contacts.read\"] }}\n"
            ));
        }
        std::fs::write(&config, text)
    };
    write(&["crm", "github"])?;
    portcullis(&config, &master_key, &["migrate"])?;
    let node = Node::start(&config, &master_key, port).await?;
    portcullis(&config, &master_key, &["user", "add", "dana"])?;
    let store = portcullis_store::Store::connect(&database, 1).await?;
    let control = Control::new(store.clone(), std::sync::Arc::new(portcullis_types::SystemClock));
    let dana = store.find_user_by_username("dana").await?.ok_or("dana")?;
    for route in ["crm", "github"] {
        let connection = portcullis_control::UpstreamConnection {
            user_id: dana.id.clone(),
            route: route.into(),
            issuer: "https://upstream.example".into(),
            subject: None,
            scope: portcullis_types::ScopeSet::new(),
            tokens_sealed: b"sealed".to_vec(),
            access_expires_at: None,
        };
        control.connect_upstream(&Actor::Operator, connection).await?;
    }

    write(&["crm"])?;
    portcullis(&config, &master_key, &["reload"])?;
    let started = Instant::now();
    while store.find_upstream_credential(&dana.id, "github").await?.is_some() {
        assert!(started.elapsed() < Duration::from_secs(5), "the removed route's account is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.find_upstream_credential(&dana.id, "crm").await?.is_some(), "the remaining route's stays");
    node.stop().await
}

/// Two nodes writing audit records at the same time (gateway decisions in batches, and
/// identity actions from the CLI meanwhile) make one hash chain that verifies.
#[tokio::test]
async fn two_nodes_writing_at_once_make_one_audit_chain() -> TestResult {
    let cluster = Cluster::start().await?;
    let (_, _, token) = cluster.agent("Chain writer").await?;
    let on_a = Conversation::open(&cluster.http, &cluster.a.base, &token).await?;
    let on_b = Conversation::open(&cluster.http, &cluster.b.base, &token).await?;
    let calls = |conversation: Conversation| async move {
        let sent: Vec<_> = (1..=40).map(|id| conversation.send(list_contacts(id))).collect();
        for answer in futures_util::future::join_all(sent).await {
            let (status, body) = answer.map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("{status}: {body}"));
            }
        }
        Ok::<(), String>(())
    };
    let (config, master_key) = (cluster.config.clone(), cluster.master_key.clone());
    let actions = tokio::task::spawn_blocking(move || {
        for n in 0..5 {
            portcullis(&config, &master_key, &["iat", "create", "--label", &format!("while-writing-{n}")])
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    });
    let (a, b, actions) = tokio::join!(calls(on_a), calls(on_b), actions);
    a?;
    b?;
    actions??;
    // Both nodes sign the head every second; one checkpoint per place is kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Stopping drains each node's audit queue; the database stays (it lives in `_dir`).
    let Cluster { config, master_key, a, b, _dir, .. } = cluster;
    a.stop().await?;
    b.stop().await?;
    let verified = portcullis(&config, &master_key, &["audit", "verify"])?;
    let count: u64 = verified
        .strip_prefix("audit trail intact: ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("not intact: {verified}"))?;
    // 80 calls, two sessions' initialize and initialized, five actions, the client's registration.
    assert!(count > 80 + 4 + 5, "{verified}");
    let checkpoints: u64 = verified
        .split(", ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or(format!("no checkpoint count: {verified}"))?;
    assert!(checkpoints >= 1, "the nodes signed no checkpoint: {verified}");
    Ok(())
}
