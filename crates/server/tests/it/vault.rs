//! The token vault end to end: an upstream MCP server built with the TypeScript SDK that acts
//! as each user (its bearer-auth middleware verifies the tokens of its own authorization
//! server, oidc-provider) sits behind the gateway. Users connect their own accounts there
//! through Portcullis's connect page and the upstream's consent; calls reach the upstream with
//! each user's own token; tokens are refreshed once however many calls need it; disconnecting
//! revokes at the upstream and touches nobody else; and the attacks on the flow are refused.

use serde_json::{Value, json};

use portcullis::config::{UpstreamAuthMode, UpstreamConfig, UpstreamOAuthConfig};

use crate::harness::*;

/// The upstream's scopes, which its authorization server grants.
const UPSTREAM_SCOPES: &str = "notes:read notes:write";

/// The protected upstream and its authorization server, ended when dropped.
struct Upstream {
    _server: tokio::process::Child,
    _authorization: tokio::process::Child,
    /// The MCP endpoint (and its RFC 9728 resource).
    resource: String,
    issuer: String,
    http: reqwest::Client,
}

fn free_port() -> AnyResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the upstream MCP server, then its authorization server (`as_env` adds to its
/// environment; `server_env` to the MCP server's).
async fn start_upstream(as_env: &[(&str, &str)], server_env: &[(&str, &str)]) -> AnyResult<Upstream> {
    let as_port = free_port()?;
    let issuer = format!("http://localhost:{as_port}");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(peer_dir("mcp-sdk")?.join("protected-server.mjs"))
        .env("PORT", "0")
        .env("AS_ISSUER", &issuer)
        .envs(server_env.iter().copied())
        .stderr(std::process::Stdio::null());
    let (server, resource) = spawn_until_ready(command).await?;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(peer_dir("oidc-provider")?.join("upstream-as.mjs"))
        .env("PORT", as_port.to_string())
        .env("RESOURCE", &resource)
        .env("SCOPES", UPSTREAM_SCOPES)
        .env("ACCESS_TTL", "300")
        .envs(as_env.iter().copied())
        .stderr(std::process::Stdio::null());
    let (authorization, announced) = spawn_until_ready(command).await?;
    assert_eq!(announced, issuer);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    Ok(Upstream { _server: server, _authorization: authorization, resource, issuer, http })
}

impl Upstream {
    async fn stats(&self) -> AnyResult<Value> {
        Ok(self.http.get(format!("{}/test/stats", self.issuer)).send().await?.json().await?)
    }

    /// Every Authorization header the upstream received, with the account it verified as.
    async fn seen(&self) -> AnyResult<Vec<Value>> {
        let origin = url::Url::parse(&self.resource)?.origin().ascii_serialization();
        Ok(self.http.get(format!("{origin}/test/seen")).send().await?.json().await?)
    }
}

/// A route to `upstream` that acts as each user, reaching it on loopback only.
fn notes_route(upstream: &Upstream) -> AnyResult<UpstreamConfig> {
    let demo = portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned());
    Ok(UpstreamConfig {
        name: "notes".into(),
        command: vec![],
        url: Some(upstream.resource.clone()),
        tools: [
            ("whoami".to_owned(), vec!["notes.read".to_owned()]),
            ("write_note".to_owned(), vec!["notes.write".to_owned()]),
        ]
        .into_iter()
        .collect(),
        prompts: Default::default(),
        resources: Default::default(),
        scope_descriptions: Default::default(),
        default_scopes: None,
        upstream_auth: UpstreamAuthMode::User,
        oauth: Some(UpstreamOAuthConfig {
            allow_http_loopback: true,
            allowed_ranges: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
            timeout_secs: 10,
            ..Default::default()
        }),
        ..demo
    })
}

struct Setup {
    server: TestServer,
    upstream: Upstream,
    alice: Browser,
    alice_token: String,
    bob: Browser,
    bob_token: String,
    bob_id: String,
}

async fn setup(as_env: &[(&str, &str)], server_env: &[(&str, &str)]) -> AnyResult<Setup> {
    setup_with(as_env, server_env, |_| {}).await
}

/// As [`setup`], with the route changed by `edit` first.
async fn setup_with(
    as_env: &[(&str, &str)],
    server_env: &[(&str, &str)],
    edit: impl FnOnce(&mut UpstreamConfig),
) -> AnyResult<Setup> {
    let upstream = start_upstream(as_env, server_env).await?;
    let mut route = notes_route(&upstream)?;
    edit(&mut route);
    let options = Options { upstreams: vec![route], access_token_ttl: 3600, ..Options::default() };
    let server = TestServer::start_with(options).await?;
    let bob = add_user(&server, "bob", false).await?;
    let route = server.route("notes");
    let mut alice = Browser::default();
    let alice_token = user_token_for(&server, &mut alice, "alice", &route, &["notes.read", "notes.write"]).await?;
    let mut bob_browser = Browser::default();
    let bob_token = user_token_for(&server, &mut bob_browser, "bob", &route, &["notes.read", "notes.write"]).await?;
    Ok(Setup { server, upstream, alice, alice_token, bob: bob_browser, bob_token, bob_id: bob.id })
}

/// A JSON-RPC call through the gateway; returns the HTTP status and the raw body.
async fn call(server: &TestServer, token: &str, tool: &str, meta: Option<Value>) -> AnyResult<(u16, String)> {
    let mut params = json!({"name": tool, "arguments": {}});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params});
    let response = server
        .http
        .post(server.route("notes"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let mut text = String::new();
    for (name, value) in response.headers() {
        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or_default()));
    }
    text.push('\n');
    text.push_str(&response.text().await?);
    Ok((status, text))
}

/// The JSON-RPC message of a reply (JSON, or the first `data:` line of an event stream).
fn message(raw: &str) -> AnyResult<Value> {
    let body = raw.split_once("\n\n").map(|(_, b)| b).unwrap_or(raw);
    let json = match body.lines().find_map(|l| l.strip_prefix("data: ")) {
        Some(data) => data,
        None => body,
    };
    Ok(serde_json::from_str(json)?)
}

/// The value of `action="..."` of the first form on an HTML page.
fn form_action(body: &str) -> Option<String> {
    let start = body.find("action=\"")? + "action=\"".len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].replace("&amp;", "&"))
}

/// What to submit on one of the upstream's development interaction pages: sign in as
/// `account` (any password), or allow.
fn interaction_form<'a>(body: &str, account: &'a str) -> Vec<(&'static str, &'a str)> {
    if body.contains("name=\"login\"") {
        vec![("prompt", "login"), ("login", account), ("password", "any")]
    } else {
        vec![("prompt", "consent")]
    }
}

/// Connects `browser`'s user's account: the connect page, then the upstream's sign-in (as
/// `account`) and consent, then back. Returns the final page.
async fn connect(setup_server: &TestServer, browser: &mut Browser, url: &str, account: &str) -> AnyResult<Page> {
    let page = browser.get(setup_server, url).await?;
    assert_eq!(page.status, 200, "connect page: {}", page.body);
    let csrf = page.input("csrf").ok_or("no csrf on the connect page")?;
    let scope = page.input("scope").unwrap_or_default();
    let path = url::Url::parse(url)?.path().to_owned();
    let mut page = browser.post(setup_server, &path, &[("csrf", &csrf), ("scope", &scope)]).await?;
    follow_upstream(setup_server, browser, &mut page, account).await?;
    Ok(page)
}

/// Follows redirects through the upstream's development interactions (sign in as `account`,
/// allow) until a page that is not a redirect.
async fn follow_upstream(server: &TestServer, browser: &mut Browser, page: &mut Page, account: &str) -> AnyResult<()> {
    let mut base = server.origin();
    for _ in 0..20 {
        if let Some(location) = page.location.clone() {
            let target = if location.starts_with("http") { location } else { format!("{base}{location}") };
            base = url::Url::parse(&target)?.origin().ascii_serialization();
            *page = browser.get(server, &target).await?;
            continue;
        }
        if page.status != 200 || !page.body.contains("/interaction/") {
            return Ok(());
        }
        let action = form_action(&page.body).ok_or("an interaction page without a form")?;
        let target = if action.starts_with("http") { action.clone() } else { format!("{base}{action}") };
        *page = browser.post_to(server, &target, &interaction_form(&page.body, account)).await?;
    }
    Err("too many redirects".into())
}

/// Runs tests/peers/browser/connect.mjs: real Chromium connects each user's account.
async fn chromium_connects(upstream: &Upstream, connections: &Value) -> AnyResult<()> {
    let dir = peer_dir("browser")?;
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)".into());
    }
    let shots = std::env::temp_dir().join("portcullis-screenshots");
    std::fs::create_dir_all(&shots)?;
    let run = tokio::process::Command::new("node")
        .arg(dir.join("connect.mjs"))
        .env("CONNECTIONS", connections.to_string())
        .env("UPSTREAM_ORIGIN", &upstream.issuer)
        .env("SCREENSHOT_DIR", &shots)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(std::time::Duration::from_secs(120), run).await.map_err(|_| "Chromium hung")??;
    let out = String::from_utf8_lossy(&output.stdout);
    let expected = format!("{} passed, 0 failed", connections.as_array().map_or(0, Vec::len) * 3);
    assert!(output.status.success() && out.contains(&expected), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

#[tokio::test]
async fn each_user_reaches_the_upstream_with_their_own_account() -> AnyResult<()> {
    let Setup { server, upstream, mut alice, alice_token, mut bob, bob_token, bob_id } = setup(&[], &[]).await?;

    // Not connected yet: the call says where to connect, for this user.
    let (status, raw) = call(&server, &alice_token, "whoami", None).await?;
    let answer = message(&raw)?;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(answer["error"]["code"], -32010, "{raw}");
    let url = answer["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    assert!(url.starts_with(&server.url("/connect/notes?for=")), "{url}");
    assert!(url.contains(&server.alice_id), "{url}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains(&url)), "{raw}");
    // A client that declared URL-mode elicitation gets MCP's URLElicitationRequiredError.
    let meta = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}}});
    let (_, raw) = call(&server, &alice_token, "whoami", Some(meta)).await?;
    let elicited = message(&raw)?;
    assert_eq!(elicited["error"]["code"], -32042, "{raw}");
    let elicitation = &elicited["error"]["data"]["elicitations"][0];
    assert_eq!((elicitation["mode"].as_str(), elicitation["url"].as_str()), (Some("url"), Some(url.as_str())));
    assert!(elicitation["elicitationId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(upstream.stats().await?["registrations"], 0, "nothing registered before a user connects");

    // Bob cannot follow Alice's link.
    let refused = bob.get(&server, &url).await?;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // Each connects their own account, in Chromium.
    let (_, raw) = call(&server, &bob_token, "whoami", None).await?;
    let bob_url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url for bob")?.to_owned();
    let connections = json!([
        {"url": url, "username": "alice", "password": PASSWORD, "account": "alice-at-notes"},
        {"url": bob_url, "username": "bob", "password": PASSWORD, "account": "bob-at-notes"},
    ]);
    chromium_connects(&upstream, &connections).await?;
    let stats = upstream.stats().await?;
    assert_eq!(
        (stats["registrations"].as_i64(), stats["code"].as_i64()),
        (Some(1), Some(2)),
        "one registration: {stats}"
    );

    let whoami = |raw: &str| -> AnyResult<Value> {
        let text = message(raw)?["result"]["content"][0]["text"].as_str().ok_or("no result")?.to_owned();
        Ok(serde_json::from_str(&text)?)
    };
    let (_, raw_alice) = call(&server, &alice_token, "whoami", None).await?;
    assert_eq!(whoami(&raw_alice)?["sub"], "alice-at-notes", "{raw_alice}");
    let (_, raw_bob) = call(&server, &bob_token, "whoami", None).await?;
    assert_eq!(whoami(&raw_bob)?["sub"], "bob-at-notes", "{raw_bob}");

    // The account page lists the connection, never the token.
    let account = alice.get(&server, "/account").await?;
    assert!(account.body.contains("alice-at-notes") && account.body.contains("notes"), "{}", account.body);

    // Tokens expire: twenty concurrent calls of Alice's refresh once, and all succeed.
    server.clock.advance(400);
    let calls = (0..20).map(|_| call(&server, &alice_token, "whoami", None));
    let mut raws = Vec::new();
    for result in futures_util::future::join_all(calls).await {
        let (status, raw) = result?;
        assert_eq!(status, 200, "{raw}");
        assert_eq!(whoami(&raw)?["sub"], "alice-at-notes", "{raw}");
        raws.push(raw);
    }
    assert_eq!(upstream.stats().await?["refresh"], 1, "one refresh for twenty calls");
    let (_, raw) = call(&server, &bob_token, "whoami", None).await?;
    assert_eq!(whoami(&raw)?["sub"], "bob-at-notes");
    assert_eq!(upstream.stats().await?["refresh"], 2, "Bob's own refresh");

    // On the wire: every request upstream carried a token of the upstream's own issuer
    // (never an agent's), and no upstream token ever reached an agent.
    let seen = upstream.seen().await?;
    let mut upstream_tokens = Vec::new();
    for s in &seen {
        // Discovery asks once without credentials, to read the upstream's challenge.
        let Some(header) = s["authorization"].as_str() else {
            assert_eq!(s["method"], "initialize", "only the discovery probe goes without a token: {s}");
            continue;
        };
        assert!(!header.contains(&alice_token) && !header.contains(&bob_token), "an agent's token went upstream");
        assert!(s["sub"].as_str().is_some(), "a request with a token the upstream does not accept: {s}");
        upstream_tokens.push(header.trim_start_matches("Bearer ").to_owned());
    }
    for raw in raws.iter().chain([&raw_alice, &raw_bob]) {
        for token in &upstream_tokens {
            assert!(!raw.contains(token.as_str()), "an upstream token reached the agent");
        }
    }

    // Alice disconnects: revoked at the upstream, gone here; Bob is untouched.
    let account = alice.get(&server, "/account").await?;
    let csrf = account.input("csrf").ok_or("no csrf")?;
    let gone = alice.post(&server, "/account/upstreams/disconnect", &[("csrf", &csrf), ("route", "notes")]).await?;
    assert_eq!(gone.status, 303);
    assert_eq!(upstream.stats().await?["revocations"], 1);
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    assert_eq!(message(&raw)?["error"]["code"], -32010, "{raw}");
    let (_, raw) = call(&server, &bob_token, "whoami", None).await?;
    assert_eq!(whoami(&raw)?["sub"], "bob-at-notes", "{raw}");
    assert!(server.store()?.find_upstream_credential(&bob_id, "notes").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn a_vault_row_copied_to_another_user_does_not_open() -> AnyResult<()> {
    let Setup { server, upstream, mut alice, alice_token, bob_token, bob_id, .. } = setup(&[], &[]).await?;
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    connect(&server, &mut alice, &url, "alice-at-notes").await?;
    let row = server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.ok_or("alice's row")?;
    // An insider copies Alice's sealed tokens into a row of Bob's.
    let copied = portcullis_control::UpstreamConnection {
        user_id: bob_id.clone(),
        route: "notes".into(),
        issuer: row.issuer.clone(),
        subject: row.subject.clone(),
        scope: row.scope.clone(),
        tokens_sealed: row.tokens_sealed.clone(),
        access_expires_at: row.access_expires_at,
    };
    server.control()?.connect_upstream(&Actor::Operator, copied).await?;
    let before = upstream.seen().await?.len();
    let (_, raw) = call(&server, &bob_token, "whoami", None).await?;
    assert_eq!(message(&raw)?["error"]["code"], -32010, "Bob must connect his own account: {raw}");
    assert_eq!(upstream.seen().await?.len(), before, "nothing reached the upstream as Alice for Bob");
    Ok(())
}

#[tokio::test]
async fn a_token_for_another_resource_is_refused_and_nothing_is_kept() -> AnyResult<()> {
    let Setup { server, upstream: _upstream, mut alice, alice_token, .. } =
        setup(&[("WRONG_AUDIENCE", "1")], &[]).await?;
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    let page = connect(&server, &mut alice, &url, "alice-at-notes").await?;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("not for"), "{}", page.body);
    assert!(server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn metadata_that_points_at_a_private_address_is_not_followed() -> AnyResult<()> {
    for prm_as in ["http://169.254.169.254/latest", "http://10.0.0.1/"] {
        let Setup { server, upstream: _upstream, mut alice, alice_token, .. } =
            setup(&[], &[("PRM_AS", prm_as)]).await?;
        let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
        let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
        let page = connect(&server, &mut alice, &url, "alice-at-notes").await?;
        assert_eq!(page.status, 502, "{prm_as}: {}", page.body);
        assert!(page.body.contains("not allowed"), "{prm_as}: {}", page.body);
    }
    Ok(())
}

#[tokio::test]
async fn two_users_connection_flows_cannot_be_crossed() -> AnyResult<()> {
    let Setup { server, upstream, mut alice, alice_token, mut bob, bob_token, bob_id } = setup(&[], &[]).await?;
    let start = |browser: &mut Browser, token: String| {
        let server = &server;
        let mut browser = std::mem::take(browser);
        async move {
            let (_, raw) = call(server, &token, "whoami", None).await?;
            let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
            let page = browser.get(server, &url).await?;
            let csrf = page.input("csrf").ok_or("no csrf")?;
            let path = url::Url::parse(&url)?.path().to_owned();
            let page = browser.post(server, &path, &[("csrf", &csrf), ("scope", "")]).await?;
            AnyResult::Ok((browser, page))
        }
    };
    let (alice_browser, alice_start) = start(&mut alice, alice_token).await?;
    let (bob_browser, bob_start) = start(&mut bob, bob_token).await?;
    let (mut alice, mut bob) = (alice_browser, bob_browser);
    // Alice goes through the upstream's consent; her callback (code and state) is then
    // played in Bob's browser.
    let mut page = alice_start;
    let mut base = server.origin();
    let callback = loop {
        let location = page.location.clone().ok_or("the flow stopped")?;
        let target = if location.starts_with("http") { location } else { format!("{base}{location}") };
        if target.contains("/connect-callback") {
            break target;
        }
        base = url::Url::parse(&target)?.origin().ascii_serialization();
        page = alice.get(&server, &target).await?;
        if page.location.is_none() && page.body.contains("/interaction/") {
            let action = form_action(&page.body).ok_or("no form")?;
            let form = interaction_form(&page.body, "alice-at-notes");
            let target = if action.starts_with("http") { action } else { format!("{base}{action}") };
            page = alice.post_to(&server, &target, &form).await?;
        }
    };
    let crossed = bob.get(&server, &callback).await?;
    assert_eq!(crossed.status, 400, "{}", crossed.body);
    assert!(server.store()?.find_upstream_credential(&bob_id, "notes").await?.is_none());
    drop(bob_start);
    // In Alice's browser, signed in as Bob by then, the same callback is refused too.
    let account = alice.get(&server, "/account").await?;
    let csrf = account.input("csrf").ok_or("no csrf")?;
    alice.post(&server, "/logout", &[("csrf", &csrf)]).await?;
    let login = alice.get(&server, "/login").await?;
    let csrf = login.input("csrf").ok_or("no csrf")?;
    alice.post(&server, "/login", &[("csrf", &csrf), ("username", "bob"), ("password", PASSWORD)]).await?;
    let switched = alice.get(&server, &callback).await?;
    assert_eq!(switched.status, 403, "{}", switched.body);
    assert!(server.store()?.find_upstream_credential(&bob_id, "notes").await?.is_none());
    assert!(server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.is_none());
    assert_eq!(upstream.stats().await?["code"], 0, "no code was redeemed");
    Ok(())
}

/// The text result of a tool call, or the error.
fn result_text(raw: &str) -> AnyResult<String> {
    let m = message(raw)?;
    Ok(m["result"]["content"][0]["text"].as_str().ok_or_else(|| format!("no result: {raw}"))?.to_owned())
}

#[tokio::test]
async fn an_upstream_asking_for_more_scope_sends_the_user_to_grant_it() -> AnyResult<()> {
    // The gateway asks the upstream for notes:read only; write_note needs notes:write there.
    let Setup { server, upstream, mut alice, alice_token, .. } = setup_with(&[], &[], |route| {
        if let Some(oauth) = route.oauth.as_mut() {
            oauth.scopes = vec!["notes:read".into()];
        }
    })
    .await?;
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    connect(&server, &mut alice, &url, "alice-at-notes").await?;
    let row = server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.ok_or("no row")?;
    assert_eq!(row.scope.to_string(), "notes:read");
    assert!(result_text(&call(&server, &alice_token, "whoami", None).await?.1).is_ok());

    // The upstream answers 403 insufficient_scope: the user is asked to grant more.
    let (status, raw) = call(&server, &alice_token, "write_note", None).await?;
    let answer = message(&raw)?;
    assert_eq!((status, answer["error"]["code"].as_i64()), (200, Some(-32010)), "{raw}");
    let step_up = answer["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    assert!(step_up.contains("scope=notes%3Aread+notes%3Awrite"), "{step_up}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("more access")), "{raw}");
    let page = alice.get(&server, &step_up).await?;
    assert!(page.body.contains("notes:read notes:write"), "the page says what more is asked: {}", page.body);
    connect(&server, &mut alice, &step_up, "alice-at-notes").await?;
    let row = server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.ok_or("no row")?;
    assert_eq!(row.scope.to_string(), "notes:read notes:write");
    assert_eq!(result_text(&call(&server, &alice_token, "write_note", None).await?.1)?, "written as alice-at-notes");
    assert_eq!(upstream.stats().await?["code"], 2);
    Ok(())
}

#[tokio::test]
async fn a_refused_refresh_asks_the_user_to_connect_again() -> AnyResult<()> {
    // The upstream's refresh tokens live two seconds (of its own clock).
    let Setup { server, upstream, mut alice, alice_token, .. } = setup(&[("REFRESH_TTL", "2")], &[]).await?;
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    connect(&server, &mut alice, &url, "alice-at-notes").await?;
    assert!(result_text(&call(&server, &alice_token, "whoami", None).await?.1).is_ok());
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    server.clock.advance(400);
    let (status, raw) = call(&server, &alice_token, "whoami", None).await?;
    assert_eq!((status, message(&raw)?["error"]["code"].as_i64()), (200, Some(-32010)), "{raw}");
    assert!(server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.is_none(), "forgotten");
    // Asked again, it does not try the upstream again: it asks the user.
    let refreshes = upstream.stats().await?["refresh"].clone();
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    assert_eq!(message(&raw)?["error"]["code"], -32010);
    assert_eq!(upstream.stats().await?["refresh"], refreshes, "no second refresh attempt");
    let filter = portcullis_store::AuditFilter {
        kinds: vec![portcullis_store::AuditKind::UpstreamDisconnected],
        ..Default::default()
    };
    let events = server.store()?.audit_events(None, 100, &filter).await?;
    assert!(
        events.iter().any(|e| e.event.reason.as_deref().is_some_and(|r| r.contains("refresh refused"))),
        "the forgetting is audited with its reason: {events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_step_up_for_what_was_already_granted_is_not_asked_again() -> AnyResult<()> {
    // The upstream's 403 names notes:read, which the account holds: asking again would loop.
    let Setup { server, upstream, mut alice, alice_token, .. } =
        setup_with(&[], &[("CHALLENGE_SCOPE", "notes:read")], |route| {
            if let Some(oauth) = route.oauth.as_mut() {
                oauth.scopes = vec!["notes:read".into()];
            }
        })
        .await?;
    let (_, raw) = call(&server, &alice_token, "whoami", None).await?;
    let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
    connect(&server, &mut alice, &url, "alice-at-notes").await?;
    let (status, raw) = call(&server, &alice_token, "write_note", None).await?;
    let answer = message(&raw)?;
    assert_eq!((status, answer["error"]["code"].as_i64()), (502, Some(-32000)), "{raw}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("already granted")), "{raw}");
    assert_eq!(upstream.stats().await?["code"], 1, "no second authorization");
    Ok(())
}

#[tokio::test]
async fn revoking_the_last_grant_for_a_route_forgets_the_upstream_account() -> AnyResult<()> {
    let Setup { server, upstream: _upstream, mut alice, alice_token, mut bob, bob_token, bob_id } =
        setup(&[], &[]).await?;
    for (browser, token, account) in
        [(&mut alice, &alice_token, "alice-at-notes"), (&mut bob, &bob_token, "bob-at-notes")]
    {
        let (_, raw) = call(&server, token, "whoami", None).await?;
        let url = message(&raw)?["error"]["data"]["url"].as_str().ok_or("no url")?.to_owned();
        let done = connect(&server, browser, &url, account).await?;
        assert!(done.body.contains("is connected"), "{account}: {}", done.body);
    }
    assert_eq!(server.store()?.upstream_connections(Some("notes")).await?.len(), 2);
    // Alice revokes her agent's access to the route: no agent of hers can call it any more.
    server.control()?.revoke_consent(&Actor::Operator, &server.alice_id, PUBLIC_CLIENT, &server.route("notes")).await?;
    assert!(server.store()?.find_upstream_credential(&server.alice_id, "notes").await?.is_none(), "forgotten");
    assert!(server.store()?.find_upstream_credential(&bob_id, "notes").await?.is_some(), "Bob's is his own");
    let filter = portcullis_store::AuditFilter {
        kinds: vec![portcullis_store::AuditKind::UpstreamDisconnected],
        ..Default::default()
    };
    let events = server.store()?.audit_events(None, 10, &filter).await?;
    assert!(
        events.iter().any(|e| e.event.user_id.as_deref() == Some(server.alice_id.as_str())
            && e.event.reason.as_deref().is_some_and(|r| r.contains("no agent"))),
        "{events:?}"
    );
    // Suspending the agent Bob used is the last of his grants for the route, too.
    server.control()?.suspend_client(&Actor::Operator, PUBLIC_CLIENT).await?;
    assert!(server.store()?.find_upstream_credential(&bob_id, "notes").await?.is_none());
    assert_eq!(server.store()?.upstream_connections(Some("notes")).await?.len(), 0);
    Ok(())
}
