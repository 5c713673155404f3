//! The dashboard (`/admin`): only signed-in administrators see it, every change is a
//! CSRF-checked form through the control layer, the kill switch stops an agent everywhere at
//! once, and the routes view shows what upstreams offered, flagging tools no policy maps.

use serde_json::{Value, json};

use crate::harness::*;

/// Every page of the dashboard (GET), with `{client}`, `{user}` filled in by the test.
const PAGES: &[&str] = &[
    "/admin",
    "/admin/agents",
    "/admin/agents?status=active&registration=configuration&verified=yes",
    "/admin/agents/{client}",
    "/admin/agents/{client}/suspend",
    "/admin/agents/{client}/delete",
    "/admin/users",
    "/admin/users/{user}",
    "/admin/tools",
    "/admin/routes",
    "/admin/routes/crm/holders?tool=list_contacts",
    "/admin/audit",
    "/admin/audit?decision=denied&from=2026-01-01T00:00",
    "/admin/audit/tail?after=0",
    "/admin/audit/export?format=csv",
];

/// Every form of the dashboard (POST).
const FORMS: &[&str] = &[
    "/admin/agents/{client}/suspend",
    "/admin/agents/{client}/resume",
    "/admin/agents/{client}/revoke-grants",
    "/admin/agents/{client}/delete",
    "/admin/users/{user}/disable",
    "/admin/users/{user}/revoke-grants",
    "/admin/grants/{grant}/revoke",
];

fn fill(path: &str, client: &str, user: &str, grant: &str) -> String {
    path.replace("{client}", client).replace("{user}", user).replace("{grant}", grant)
}

/// The demo CRM, but with `export_contacts` left out of the policy: the upstream still
/// offers it, so the dashboard must flag it.
async fn start() -> AnyResult<TestServer> {
    let mut crm = portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned());
    crm.tools.remove("export_contacts");
    TestServer::start_with(Options { upstreams: vec![crm], ..Options::default() }).await
}

/// A browser signed in (no authorization request) as `username`.
async fn signed_in(server: &TestServer, username: &str) -> AnyResult<Browser> {
    let mut browser = Browser::default();
    let page = browser.login(server, "/login", username, PASSWORD).await?;
    assert_eq!(page.status, 303, "{}", page.body);
    Ok(browser)
}

/// The CSRF token the dashboard's forms carry for this browser.
async fn csrf(server: &TestServer, browser: &mut Browser) -> AnyResult<String> {
    let page = browser.get(server, "/admin").await?;
    assert_eq!(page.status, 200, "{}", page.body);
    page.input("csrf").ok_or_else(|| "no csrf field on the dashboard".into())
}

#[tokio::test]
async fn only_signed_in_administrators_reach_the_dashboard() -> TestResult {
    let server = start().await?;
    let bob = add_user(&server, "bob", false).await?;
    let alice = server.store()?.find_user_by_username("alice").await?.ok_or("alice")?;
    let grant = {
        user_token_for(&server, &mut Browser::default(), "bob", &server.route("crm"), &["crm.contacts.read"]).await?;
        server.store()?.list_grants(None, Some(&bob.id)).await?.first().ok_or("bob's grant")?.id.clone()
    };

    // Nobody signed in: off to sign in, and back afterwards.
    let mut anonymous = Browser::default();
    for path in PAGES {
        let page = anonymous.get(&server, &fill(path, PUBLIC_CLIENT, &alice.id, &grant)).await?;
        assert_eq!((page.status, page.location.as_deref()), (303, Some("/login")), "{path}");
    }
    let mut returning = Browser::default();
    returning.get(&server, "/admin/tools").await?;
    let signed = returning.login(&server, "/login", "alice", PASSWORD).await?;
    assert_eq!(signed.location.as_deref(), Some("/admin/tools"), "back to the page asked for");

    // Bob is signed in but no administrator: 403 on every page and every form, nothing changes.
    let mut bobs = signed_in(&server, "bob").await?;
    let home = bobs.get(&server, "/").await?;
    let bobs_csrf = home.input("csrf").ok_or("csrf")?;
    for path in PAGES {
        let page = bobs.get(&server, &fill(path, PUBLIC_CLIENT, &alice.id, &grant)).await?;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("administrators only"), "{path}");
    }
    for path in FORMS {
        let page = bobs.post(&server, &fill(path, PUBLIC_CLIENT, &alice.id, &grant), &[("csrf", &bobs_csrf)]).await?;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
    }
    let store = server.store()?;
    assert_eq!(store.find_client(PUBLIC_CLIENT).await?.map(|c| c.status), Some(portcullis_store::ClientStatus::Active));
    assert!(store.find_user(&alice.id).await?.is_some_and(|u| !u.is_disabled()));
    assert!(store.find_grant(&grant).await?.is_some_and(|g| g.revoked_at.is_none()));

    // Alice sees every page, with the dashboard's headers; a form without the CSRF token, or
    // from another site, changes nothing.
    let mut alices = signed_in(&server, "alice").await?;
    for path in PAGES {
        let page = alices.get(&server, &fill(path, PUBLIC_CLIENT, &alice.id, &grant)).await?;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path}");
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let csv = alices.get(&server, "/admin/audit/export?format=csv").await?;
    assert!(csv.body.starts_with("id,occurred_at,kind,"), "{}", csv.body);
    for path in FORMS {
        let page = alices.post(&server, &fill(path, PUBLIC_CLIENT, &bob.id, &grant), &[("csrf", "forged")]).await?;
        assert_eq!(page.status, 403, "{path}");
    }
    let token = csrf(&server, &mut alices).await?;
    let cross_site = server
        .http
        .post(server.url(&format!("/admin/agents/{PUBLIC_CLIENT}/suspend")))
        .header("cookie", alices.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
        .header("origin", "http://evil.example")
        .form(&[("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(cross_site.status(), 403);
    assert_eq!(store.find_client(PUBLIC_CLIENT).await?.map(|c| c.status), Some(portcullis_store::ClientStatus::Active));
    assert!(store.find_user(&bob.id).await?.is_some_and(|u| !u.is_disabled()));

    // Bad input gets an exact answer, not a server error.
    for (path, status) in [
        ("/admin/agents/no-such-agent", 404),
        ("/admin/agents/no-such-agent/suspend", 404),
        (&*format!("/admin/agents/{PUBLIC_CLIENT}/explode"), 404),
        ("/admin/users/no-such-user", 404),
        ("/admin/routes/no-such-route/holders", 404),
        ("/admin/audit?decision=maybe", 400),
        ("/admin/audit?from=yesterday", 400),
        ("/admin/audit?kind=no.such.kind", 400),
        ("/admin/audit/export?format=xml", 400),
    ] {
        let page = alices.get(&server, path).await?;
        assert_eq!(page.status, status, "{path}: {}", page.body);
    }
    Ok(())
}

#[tokio::test]
async fn the_kill_switch_stops_an_agent_everywhere_and_is_audited() -> TestResult {
    let server = start().await?;
    let alice = server.store()?.find_user_by_username("alice").await?.ok_or("alice")?;
    let bob = add_user(&server, "bob", false).await?;
    let token = user_token_for(
        &server,
        &mut Browser::default(),
        "bob",
        &server.route("crm"),
        &["crm.contacts.read", "crm.deals.write"],
    )
    .await?;
    let (status, listed) = mcp(&server, "crm", &token, "tools/list", json!({})).await?;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(!names.contains(&"export_contacts"), "an unmapped tool is never shown: {names:?}");
    let (status, called) =
        mcp(&server, "crm", &token, "tools/call", json!({"name": "list_contacts", "arguments": {}})).await?;
    assert_eq!(status, 200, "{called}");
    // The audit writer batches; wait (bounded) until the call is written.
    let filter = portcullis_store::AuditFilter { target: Some("list_contacts".into()), ..Default::default() };
    for _ in 0..100 {
        if !server.store()?.audit_events(None, 1, &filter).await?.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Bob's own account page says what he allowed, in words, the tools it unlocks and when
    // the agent last acted.
    let mut bobs = signed_in(&server, "bob").await?;
    let account = bobs.get(&server, "/account").await?;
    assert!(account.body.contains("Read your CRM contacts"), "{}", account.body);
    assert!(
        account.body.contains("Tools this unlocks: <code>list_contacts</code>, <code>update_deal</code>"),
        "{}",
        account.body
    );
    assert!(account.body.contains("last acted 20"), "{}", account.body);

    let mut browser = signed_in(&server, "alice").await?;
    // The audit viewer shows the call, linked to the agent that made it.
    let audit = browser.get(&server, "/admin/audit?kind=mcp.message&tool=list_contacts").await?;
    assert!(audit.body.contains("list_contacts") && audit.body.contains(&format!("/admin/agents/{PUBLIC_CLIENT}")));
    // The tool matrix counts who can call what now; the routes view flags the unmapped tool.
    let tools = browser.get(&server, "/admin/tools").await?;
    assert!(tools.body.contains("1 grant, 1 user"), "{}", tools.body);
    let routes = browser.get(&server, "/admin/routes").await?;
    assert!(routes.body.contains("Tools no policy maps (refused): <code>export_contacts</code>"), "{}", routes.body);
    let overview = browser.get(&server, "/admin").await?;
    assert!(overview.body.contains("<code>crm</code> · <code>export_contacts</code>"), "{}", overview.body);
    assert!(!overview.body.contains("</span>0 allowed"), "the calls are counted: {}", overview.body);

    // The kill switch asks first, then acts.
    let confirm = browser.get(&server, &format!("/admin/agents/{PUBLIC_CLIENT}/suspend")).await?;
    assert!(
        confirm.body.contains("Suspend Desktop &#60;Agent&#62;?")
            || confirm.body.contains("Suspend Desktop &lt;Agent&gt;?"),
        "{}",
        confirm.body
    );
    let csrf = confirm.input("csrf").ok_or("csrf")?;
    let done = browser.post(&server, &format!("/admin/agents/{PUBLIC_CLIENT}/suspend"), &[("csrf", &csrf)]).await?;
    assert_eq!(done.status, 303);
    assert_eq!(done.location.as_deref(), Some(&*format!("/admin/agents/{PUBLIC_CLIENT}?done=suspended")));
    let page = browser.get(&server, done.location.as_deref().ok_or("location")?).await?;
    assert!(page.body.contains("Suspended: every grant it held is revoked"), "{}", page.body);

    // Refused everywhere at once: the gateway and the token endpoint.
    let (status, _) =
        mcp(&server, "crm", &token, "tools/call", json!({"name": "list_contacts", "arguments": {}})).await?;
    assert_eq!(status, 401);
    assert!(
        server.store()?.list_grants(Some(PUBLIC_CLIENT), Some(&bob.id)).await?.iter().all(|g| g.revoked_at.is_some())
    );

    // Audited with the administrator as the actor.
    let trail = server
        .store()?
        .audit_events(
            None,
            50,
            &portcullis_store::AuditFilter {
                kinds: vec![portcullis_store::AuditKind::parse("client.suspended").ok_or("kind")?],
                ..Default::default()
            },
        )
        .await?;
    let row = trail.first().ok_or("no client.suspended record")?;
    assert_eq!(row.event.actor.as_deref(), Some(&*format!("admin:{}", alice.id)));
    assert_eq!(row.event.client_id.as_deref(), Some(PUBLIC_CLIENT));

    // Resume is one click; the agent's old grants stay revoked.
    let csrf = page.input("csrf").ok_or("csrf")?;
    let resumed = browser.post(&server, &format!("/admin/agents/{PUBLIC_CLIENT}/resume"), &[("csrf", &csrf)]).await?;
    assert_eq!(resumed.status, 303);
    let (status, _) =
        mcp(&server, "crm", &token, "tools/call", json!({"name": "list_contacts", "arguments": {}})).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn the_routes_api_shows_what_upstreams_offered() -> TestResult {
    let server = start().await?;
    let admin = alice_token_for(&server, &server.url("/admin/api"), &["portcullis.admin.read"]).await?;
    let get = |path: &'static str| {
        let (server, admin) = (&server, admin.clone());
        async move {
            let response = server.http.get(server.url(path)).bearer_auth(&admin).send().await?;
            let status = response.status().as_u16();
            AnyResult::Ok((status, response.json::<Value>().await?))
        }
    };
    // Before any list answer: the policy's names, none of them listed yet, health unknown.
    let (status, before) = get("/admin/api/v1/routes/crm").await?;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["transport"], "stdio");
    assert_eq!(before["health"]["state"], "unknown");
    assert!(before["tools"].as_array().is_some_and(|t| t.iter().all(|t| t["last_listed_at"].is_null())));
    assert_eq!(before["unmapped_tools"], json!([]));

    let token = alice_token_for(&server, &server.route("crm"), &["crm.contacts.read"]).await?;
    let (status, _) = mcp(&server, "crm", &token, "tools/list", json!({})).await?;
    assert_eq!(status, 200);
    let (status, routes) = get("/admin/api/v1/routes").await?;
    assert_eq!(status, 200, "{routes}");
    let crm = routes.as_array().and_then(|r| r.iter().find(|r| r["name"] == "crm")).ok_or("no crm route")?;
    assert_eq!(crm["health"]["state"], "up");
    assert_eq!(crm["unmapped_tools"], json!(["export_contacts"]));
    let tool = |name: &str| crm["tools"].as_array().and_then(|t| t.iter().find(|t| t["name"] == name)).cloned();
    let listed = tool("list_contacts").ok_or("list_contacts")?;
    assert_eq!((listed["mapping"].as_str(), listed["scopes"].as_str()), (Some("mapped"), Some("crm.contacts.read")));
    assert!(listed["last_listed_at"].is_i64());
    let unmapped = tool("export_contacts").ok_or("export_contacts")?;
    assert_eq!((unmapped["mapping"].as_str(), unmapped["scopes"].as_str()), (Some("unmapped"), None));
    assert_eq!(crm["resources"][0]["name"], "crm://contacts/*");

    let (status, missing) = get("/admin/api/v1/routes/nowhere").await?;
    assert_eq!((status, missing["error"].as_str()), (404, Some("not_found")));
    Ok(())
}

/// Waits (bounded) until the audit trail holds a decision about `tool`.
async fn audited(server: &TestServer, tool: &str) -> AnyResult<()> {
    let filter = portcullis_store::AuditFilter { target: Some(tool.into()), ..Default::default() };
    for _ in 0..100 {
        if !server.store()?.audit_events(None, 1, &filter).await?.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(format!("no audit record of {tool} within 5 s").into())
}

/// Real Chromium (tests/peers/browser/admin.mjs): an administrator finds the agent that just
/// called a tool in the audit viewer, opens it and suspends it, and the agent's next MCP call
/// is refused; a user who is not an administrator gets 403 on every page. Every path of the
/// admin API refuses anyone but an administrator's (or an operator's client's) token.
#[tokio::test]
async fn chromium_administrator_switches_an_agent_off() -> TestResult {
    let dir = peer_dir("browser")?;
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)".into());
    }
    let server = start().await?;
    let bob = add_user(&server, "bob", false).await?;
    let alice = server.store()?.find_user_by_username("alice").await?.ok_or("alice")?;
    let token =
        user_token_for(&server, &mut Browser::default(), "bob", &server.route("crm"), &["crm.contacts.read"]).await?;
    let (status, called) =
        mcp(&server, "crm", &token, "tools/call", json!({"name": "list_contacts", "arguments": {}})).await?;
    assert_eq!(status, 200, "{called}");
    assert!(called["error"].is_null(), "{called}");
    audited(&server, "list_contacts").await?;

    let grant = server.store()?.list_grants(None, Some(&bob.id)).await?.first().ok_or("grant")?.id.clone();
    let pages: Vec<String> = PAGES.iter().map(|p| fill(p, PUBLIC_CLIENT, &alice.id, &grant)).collect();
    let shots = std::env::temp_dir().join("portcullis-screenshots");
    std::fs::create_dir_all(&shots)?;
    let run = tokio::process::Command::new("node")
        .arg(dir.join("admin.mjs"))
        .env("ISSUER", &server.issuer)
        .env("ADMIN", "alice")
        .env("USER", "bob")
        .env("PASSWORD", PASSWORD)
        .env("CLIENT_ID", PUBLIC_CLIENT)
        .env("CLIENT_NAME", "Desktop <Agent>")
        .env("TOOL", "list_contacts")
        .env("PAGES", serde_json::to_string(&pages)?)
        .env("SCREENSHOT_DIR", &shots)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(std::time::Duration::from_secs(150), run).await.map_err(|_| "Chromium hung")??;
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("12 passed, 0 failed"),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["1-overview", "2-audit", "3-agent", "5-suspended", "6-live-tail", "9-tools", "10-routes"] {
        assert!(shots.join(format!("admin-{name}.png")).exists(), "no screenshot {name}");
    }

    // The agent's next MCP call is refused.
    let (status, _) =
        mcp(&server, "crm", &token, "tools/call", json!({"name": "list_contacts", "arguments": {}})).await?;
    assert_eq!(status, 401);

    // Every path of the admin API (from its own OpenAPI document) refuses: no token and a token
    // for another resource with 401, and an administrator's token with 403 from the moment
    // they are no longer an administrator. (The agent is resumed to get those tokens.)
    server.control()?.resume_client(&portcullis_control::Actor::Operator, PUBLIC_CLIENT).await?;
    let admin_token =
        alice_token_for(&server, &server.url("/admin/api"), &["portcullis.admin.read", "portcullis.admin.write"])
            .await?;
    let bobs_crm =
        user_token_for(&server, &mut Browser::default(), "bob", &server.route("crm"), &["crm.contacts.read"]).await?;
    server.store()?.execute_admin_sql(&format!("UPDATE users SET is_admin = false WHERE id = '{}'", alice.id)).await?;
    let document: Value = server.http.get(server.url("/admin/api/openapi.json")).send().await?.json().await?;
    let paths = document["paths"].as_object().ok_or("no paths")?;
    let mut checked = 0;
    for (path, operations) in paths {
        let concrete = path
            .replace("{client_id}", PUBLIC_CLIENT)
            .replace("{user_id}", &bob.id)
            .replace("{route}", "crm")
            .replace("{grant_id}", &grant);
        for method in operations.as_object().ok_or("operations")?.keys() {
            let method = http::Method::from_bytes(method.to_uppercase().as_bytes())?;
            for (token, status, error) in [
                (None, 401, "invalid_token"),
                (Some(&bobs_crm), 401, "invalid_token"),
                (Some(&admin_token), 403, "access_denied"),
            ] {
                let mut request = server.http.request(method.clone(), server.url(&concrete));
                if let Some(t) = token {
                    request = request.bearer_auth(t);
                }
                let answer = request.send().await?;
                assert_eq!(answer.status().as_u16(), status, "{method} {concrete}");
                let body: Value = answer.json().await?;
                assert_eq!(body["error"], error, "{method} {concrete}: {body}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 3 * 20, "only {checked} checks: the document lost paths");
    let store = server.store()?;
    assert!(store.find_user(&bob.id).await?.is_some_and(|u| !u.is_disabled()), "nothing was changed");
    Ok(())
}
