//! The admin API (`/admin/api/v1`): a resource server of Portcullis's own authorization server
//! that only administrators (by consent) and operators' clients (by client credentials) reach,
//! with exact refusals, cursor paging, writes through the control layer audited with the
//! administrator as the actor, and an OpenAPI document generated from the code.

use serde_json::Value;

use crate::harness::*;

const READ: &str = "portcullis.admin.read";
const WRITE: &str = "portcullis.admin.write";

struct Answer {
    status: u16,
    challenge: String,
    body: Value,
}

async fn api(server: &TestServer, method: http::Method, path: &str, token: Option<&str>) -> AnyResult<Answer> {
    let mut request = server.http.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let challenge =
        response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok(Answer { status, challenge, body })
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|a| a["client_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn administrators_read_and_change_agents_and_nobody_else_gets_in() -> TestResult {
    let server = TestServer::start().await?;
    let admin = server.url("/admin/api");
    let get = http::Method::GET;
    let post = http::Method::POST;

    // No token: 401 with the way in.
    let none = api(&server, get.clone(), "/admin/api/v1/agents", None).await?;
    assert_eq!((none.status, none.body["error"].as_str()), (401, Some("invalid_token")), "{}", none.body);
    let metadata = server.url("/.well-known/oauth-protected-resource/admin/api");
    assert!(none.challenge.contains(&format!("resource_metadata=\"{metadata}\"")), "{}", none.challenge);
    assert!(none.challenge.contains("scope=\"portcullis.admin.read\""), "{}", none.challenge);
    let prm: Value = server.http.get(&metadata).send().await?.json().await?;
    assert_eq!(prm["resource"], admin.as_str());
    assert_eq!(prm["scopes_supported"], serde_json::json!([READ, WRITE]));

    // A token for another resource is not one for the admin API.
    let crm = alice_token_for(&server, &server.resource, &["crm.contacts.read"]).await?;
    let wrong = api(&server, get.clone(), "/admin/api/v1/agents", Some(&crm)).await?;
    assert_eq!((wrong.status, wrong.body["error"].as_str()), (401, Some("invalid_token")));

    // Alice, an administrator, reads: every agent, a page at a time.
    let read = alice_token_for(&server, &admin, &[READ]).await?;
    let all = api(&server, get.clone(), "/admin/api/v1/agents?limit=200", Some(&read)).await?;
    assert_eq!(all.status, 200, "{}", all.body);
    let everyone = ids(&all);
    assert!(
        everyone.contains(&PUBLIC_CLIENT.to_owned()) && everyone.contains(&MACHINE_CLIENT.to_owned()),
        "{everyone:?}"
    );
    assert!(all.body["next_cursor"].is_null());
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/admin/api/v1/agents?limit=2&cursor={c}"),
            None => "/admin/api/v1/agents?limit=2".to_owned(),
        };
        let page = api(&server, get.clone(), &path, Some(&read)).await?;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(ids(&page).len() <= 2);
        paged.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, everyone, "the pages add up to the whole, in order, once each");
    let machine =
        api(&server, get.clone(), "/admin/api/v1/agents?registration=configuration&verified=true", Some(&read)).await?;
    assert!(
        machine.body["items"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["registration"] == "configuration" && x["verified"] == true))
    );
    let one = api(&server, get.clone(), &format!("/admin/api/v1/agents/{MACHINE_CLIENT}"), Some(&read)).await?;
    assert_eq!(
        (one.status, one.body["status"].as_str(), one.body["client_type"].as_str()),
        (200, Some("active"), Some("confidential"))
    );
    for (path, status, error) in [
        ("/admin/api/v1/agents?limit=0", 400, "invalid_request"),
        ("/admin/api/v1/agents?limit=201", 400, "invalid_request"),
        ("/admin/api/v1/agents?cursor=%25%25", 400, "invalid_request"),
        ("/admin/api/v1/agents?status=sleeping", 400, "invalid_request"),
        ("/admin/api/v1/agents?colour=red", 400, "invalid_request"),
        ("/admin/api/v1/agents/no-such-agent", 404, "not_found"),
    ] {
        let answer = api(&server, get.clone(), path, Some(&read)).await?;
        assert_eq!((answer.status, answer.body["error"].as_str()), (status, Some(error)), "{path}: {}", answer.body);
    }

    // Reading is not changing.
    let refused =
        api(&server, post.clone(), &format!("/admin/api/v1/agents/{MACHINE_CLIENT}/suspend"), Some(&read)).await?;
    assert_eq!((refused.status, refused.body["error"].as_str()), (403, Some("insufficient_scope")));
    assert!(refused.challenge.contains("scope=\"portcullis.admin.write\""), "{}", refused.challenge);
    assert_eq!(
        server.store()?.find_client(MACHINE_CLIENT).await?.map(|c| c.status),
        Some(portcullis_store::ClientStatus::Active)
    );

    // With the write scope: the kill switch, audited with Alice as the actor.
    let (_, machine_token) = server
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
        ])
        .await?;
    let write = alice_token_for(&server, &admin, &[READ, WRITE]).await?;
    let suspended =
        api(&server, post.clone(), &format!("/admin/api/v1/agents/{MACHINE_CLIENT}/suspend"), Some(&write)).await?;
    assert_eq!((suspended.status, suspended.body["status"].as_str()), (200, Some("suspended")), "{}", suspended.body);
    let machine_token = machine_token["access_token"].as_str().ok_or("no machine token")?;
    assert_eq!(server.introspect(machine_token).await?["active"], false, "refused at once");
    let filter = portcullis_store::AuditFilter {
        kinds: vec![portcullis_store::AuditKind::ClientSuspended],
        ..Default::default()
    };
    let events = server.store()?.audit_events(None, 10, &filter).await?;
    assert!(
        events.iter().any(|e| e.event.actor.as_deref() == Some(format!("admin:{}", server.alice_id).as_str())),
        "{events:?}"
    );
    let resumed =
        api(&server, post.clone(), &format!("/admin/api/v1/agents/{MACHINE_CLIENT}/resume"), Some(&write)).await?;
    assert_eq!(resumed.body["status"], "active");
    let missing = api(&server, post.clone(), "/admin/api/v1/agents/no-such-agent/suspend", Some(&write)).await?;
    assert_eq!((missing.status, missing.body["error"].as_str()), (404, Some("not_found")));

    // An active agent is not waiting for approval.
    let approve =
        api(&server, post.clone(), &format!("/admin/api/v1/agents/{MACHINE_CLIENT}/approve"), Some(&write)).await?;
    assert_eq!((approve.status, approve.body["error"].as_str()), (409, Some("not_pending")), "{}", approve.body);
    let reject =
        api(&server, post.clone(), &format!("/admin/api/v1/agents/{MACHINE_CLIENT}/reject"), Some(&write)).await?;
    assert_eq!(reject.status, 409);
    // An agent's grants, newest first: Alice's to the desktop agent, for the CRM and the admin API.
    let grants =
        api(&server, get.clone(), &format!("/admin/api/v1/agents/{PUBLIC_CLIENT}/grants"), Some(&read)).await?;
    let resources: Vec<&str> =
        grants.body.as_array().map(|a| a.iter().filter_map(|g| g["resource"].as_str()).collect()).unwrap_or_default();
    assert!(resources.contains(&server.resource.as_str()) && resources.contains(&admin.as_str()), "{}", grants.body);
    assert!(grants.body.as_array().is_some_and(|a| a.iter().all(|g| g["user_id"] == server.alice_id.as_str())));
    // Deleting an agent removes it and all it holds.
    let delete = http::Method::DELETE;
    assert_eq!(
        api(&server, delete.clone(), &format!("/admin/api/v1/agents/{CONFIDENTIAL_CLIENT}"), Some(&write))
            .await?
            .status,
        204
    );
    assert_eq!(
        api(&server, get.clone(), &format!("/admin/api/v1/agents/{CONFIDENTIAL_CLIENT}"), Some(&read)).await?.status,
        404
    );
    assert_eq!(
        api(&server, delete.clone(), &format!("/admin/api/v1/agents/{CONFIDENTIAL_CLIENT}"), Some(&write))
            .await?
            .status,
        404
    );
    assert_eq!(api(&server, delete, &format!("/admin/api/v1/agents/{MACHINE_CLIENT}"), Some(&read)).await?.status, 403);
    Ok(())
}

#[tokio::test]
async fn only_administrators_and_operators_clients_hold_admin_tokens() -> TestResult {
    let server = TestServer::start().await?;
    let admin = server.url("/admin/api");
    add_user(&server, "bob", false).await?;
    // Bob is no administrator: the consent page never offers him the admin API's scopes.
    let (_, challenge) = pkce()?;
    let url =
        authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("resource", &admin), ("scope", READ)]);
    let mut browser = Browser::default();
    let location = authorize_as(&server, &mut browser, &url, &[READ], "bob").await?;
    let answer = query(&location)?;
    assert_eq!(answer.get("error").map(String::as_str), Some("access_denied"), "{location}");
    assert!(answer.get("error_description").is_some_and(|d| d.contains("administrators")), "{location}");
    assert!(!answer.contains_key("code"));

    // An operator's client, by client credentials: yes.
    let token = operator_token(&server, READ).await?;
    let listed = api(&server, http::Method::GET, "/admin/api/v1/agents", Some(&token)).await?;
    assert_eq!(listed.status, 200, "{}", listed.body);

    // Token exchange never leads into the admin API.
    let alice_admin = alice_token_for(&server, &admin, &[READ]).await?;
    let (status, body) = server
        .token(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("client_id", DELEGATE_CLIENT),
            ("client_secret", DELEGATE_SECRET),
            ("subject_token", &alice_admin),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("resource", &admin),
        ])
        .await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_is_generated_from_the_code() -> TestResult {
    let server = TestServer::start().await?;
    let document: Value = server.http.get(server.url("/admin/api/openapi.json")).send().await?.json().await?;
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{document}");
    for path in ["/admin/api/v1/agents", "/admin/api/v1/agents/{client_id}", "/admin/api/v1/agents/{client_id}/suspend"]
    {
        assert!(document["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(document["servers"][0]["url"], server.issuer.as_str());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(document["components"]["schemas"]["Agent"].is_object());
    Ok(())
}

#[tokio::test]
async fn users_and_who_holds_what_on_a_route() -> TestResult {
    let crm = portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned());
    let server = TestServer::start_with(Options { upstreams: vec![crm], ..Options::default() }).await?;
    let route = server.route("crm");
    let bob = add_user(&server, "bob", false).await?;
    let admin = alice_token_for(&server, &server.url("/admin/api"), &[READ, WRITE]).await?;
    let get = http::Method::GET;

    // Users, filtered and paged.
    let users = api(&server, get.clone(), "/admin/api/v1/users", Some(&admin)).await?;
    assert_eq!(users.status, 200, "{}", users.body);
    let names: Vec<&str> = users.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["username"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"alice") && names.contains(&"bob"), "{names:?}");
    let others = api(&server, get.clone(), "/admin/api/v1/users?administrator=false", Some(&admin)).await?;
    assert_eq!(others.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(others.body["items"][0]["username"], "bob");
    let first = api(&server, get.clone(), "/admin/api/v1/users?limit=1", Some(&admin)).await?;
    let next = first.body["next_cursor"].as_str().ok_or("no next page")?;
    let second = api(&server, get.clone(), &format!("/admin/api/v1/users?limit=1&cursor={next}"), Some(&admin)).await?;
    assert_ne!(first.body["items"][0]["user_id"], second.body["items"][0]["user_id"]);

    // Who holds what: Alice reads contacts, Bob also changes deals, a machine reads contacts.
    let mut browser = Browser::default();
    user_token_for(&server, &mut Browser::default(), "alice", &route, &["crm.contacts.read"]).await?;
    user_token_for(&server, &mut browser, "bob", &route, &["crm.contacts.read", "crm.deals.write"]).await?;
    let (status, body) = server
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
            ("resource", &route),
        ])
        .await?;
    assert_eq!(status, 200, "{body}");
    let holders = |tool: Option<&str>, admin: &str| {
        let path = match tool {
            Some(t) => format!("/admin/api/v1/routes/crm/holders?tool={t}"),
            None => "/admin/api/v1/routes/crm/holders".to_owned(),
        };
        let (server, admin, get) = (&server, admin.to_owned(), get.clone());
        async move {
            let answer = api(server, get, &path, Some(&admin)).await?;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let mut who: Vec<String> = answer.body["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| h["username"].as_str().or(h["client_id"].as_str()).unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            who.sort();
            AnyResult::Ok(who)
        }
    };
    assert_eq!(holders(None, &admin).await?, ["alice", "bob", MACHINE_CLIENT]);

    // What Bob holds, and what the agent holds: consents, grants, live token families, sessions.
    let of = |path: String| {
        let (server, admin, get) = (&server, admin.clone(), get.clone());
        async move {
            let answer = api(server, get, &path, Some(&admin)).await?;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            AnyResult::Ok(answer.body.as_array().cloned().unwrap_or_default())
        }
    };
    let consents = of(format!("/admin/api/v1/users/{}/consents", bob.id)).await?;
    assert_eq!(consents.len(), 1);
    assert_eq!(
        (consents[0]["client_id"].as_str(), consents[0]["resource"].as_str()),
        (Some(PUBLIC_CLIENT), Some(route.as_str()))
    );
    assert_eq!(consents[0]["scope"], "crm.contacts.read crm.deals.write");
    let grants = of(format!("/admin/api/v1/users/{}/grants", bob.id)).await?;
    assert_eq!(grants.len(), 1);
    let families = of(format!("/admin/api/v1/users/{}/tokens", bob.id)).await?;
    assert_eq!(families.len(), 1);
    assert_eq!(families[0]["grant_id"], grants[0]["grant_id"]);
    assert_eq!(families[0]["live_access_tokens"], 1);
    assert!(families[0]["refresh_token_expires_at"].is_i64(), "{}", families[0]);
    let sessions = of(format!("/admin/api/v1/users/{}/sessions", bob.id)).await?;
    assert_eq!(sessions.len(), 1, "Bob signed in once");
    assert!(sessions[0]["identity_provider"].is_null() && sessions[0].get("id").is_none(), "{}", sessions[0]);
    let agent_consents = of(format!("/admin/api/v1/agents/{PUBLIC_CLIENT}/consents")).await?;
    assert!(agent_consents.len() >= 2, "alice and bob: {agent_consents:?}");
    let agent_families = of(format!("/admin/api/v1/agents/{PUBLIC_CLIENT}/tokens")).await?;
    assert!(agent_families.iter().any(|f| f["user_id"] == bob.id.as_str()));
    for path in ["/admin/api/v1/users/nobody/tokens", "/admin/api/v1/agents/nobody/consents"] {
        let answer = api(&server, get.clone(), path, Some(&admin)).await?;
        assert_eq!((answer.status, answer.body["error"].as_str()), (404, Some("not_found")), "{path}");
    }
    assert_eq!(holders(Some("update_deal"), &admin).await?, ["bob"]);
    assert_eq!(holders(Some("export_contacts"), &admin).await?, Vec::<String>::new(), "nobody can export contacts");
    assert_eq!(holders(Some("no_such_tool"), &admin).await?, Vec::<String>::new());

    // Bob's grants revoked through the API: nobody can change deals any more.
    let revoked =
        api(&server, http::Method::POST, &format!("/admin/api/v1/users/{}/revoke-grants", bob.id), Some(&admin))
            .await?;
    assert!(revoked.body["revoked"].as_u64().is_some_and(|n| n >= 1), "{}", revoked.body);
    assert_eq!(holders(Some("update_deal"), &admin).await?, Vec::<String>::new());
    // The machine's grant lives as long as its token: expired, it holds nothing.
    server.clock.advance(400);
    let admin = alice_token_for(&server, &server.url("/admin/api"), &[READ, WRITE]).await?;
    assert_eq!(holders(None, &admin).await?, ["alice"]);

    // Disabling through the API: audited with the administrator as the actor.
    let disabled =
        api(&server, http::Method::POST, &format!("/admin/api/v1/users/{}/disable", bob.id), Some(&admin)).await?;
    assert_eq!((disabled.status, disabled.body["disabled"].as_bool()), (200, Some(true)), "{}", disabled.body);
    let enabled =
        api(&server, http::Method::POST, &format!("/admin/api/v1/users/{}/enable", bob.id), Some(&admin)).await?;
    assert_eq!(enabled.body["disabled"], false);
    for (path, status) in [
        ("/admin/api/v1/routes/nope/holders", 404),
        ("/admin/api/v1/routes/nope/connections", 404),
        ("/admin/api/v1/users/nobody", 404),
        ("/admin/api/v1/routes/crm/connections", 200),
    ] {
        assert_eq!(api(&server, get.clone(), path, Some(&admin)).await?.status, status, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn the_audit_trail_is_searched_paged_and_exported() -> TestResult {
    let crm = portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned());
    let server = TestServer::start_with(Options { upstreams: vec![crm], ..Options::default() }).await?;
    let admin = alice_token_for(&server, &server.url("/admin/api"), &[READ, WRITE]).await?;
    let get = http::Method::GET;
    // Three calls the gateway refuses (no token), and an identity action.
    for _ in 0..3 {
        let refused = server
            .http
            .post(server.route("crm"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .await?;
        assert_eq!(refused.status(), 401);
    }
    api(&server, http::Method::POST, &format!("/admin/api/v1/agents/{MACHINE_CLIENT}/suspend"), Some(&admin)).await?;
    // Gateway decisions are written in batches, off the request path.
    let started = std::time::Instant::now();
    let denied = loop {
        let page = api(&server, get.clone(), "/admin/api/v1/audit?route=crm&decision=denied", Some(&admin)).await?;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body["items"].as_array().is_some_and(|a| a.len() >= 3) || started.elapsed().as_secs() > 5 {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let items = denied.body["items"].as_array().ok_or("items")?;
    assert_eq!(items.len(), 3, "{}", denied.body);
    assert!(items.iter().all(|e| e["kind"] == "mcp.message" && e["outcome"] == "denied" && e["status"] == 401));
    assert!(items.windows(2).all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()), "newest first");
    let suspended = api(&server, get.clone(), "/admin/api/v1/audit?kind=client.suspended", Some(&admin)).await?;
    assert_eq!(suspended.body["items"][0]["actor"], format!("admin:{}", server.alice_id));
    // Paging newest first adds up.
    let first = api(&server, get.clone(), "/admin/api/v1/audit?route=crm&limit=2", Some(&admin)).await?;
    let next = first.body["next_cursor"].as_str().ok_or("no next page")?;
    let rest = api(&server, get.clone(), &format!("/admin/api/v1/audit?route=crm&limit=2&cursor={next}"), Some(&admin))
        .await?;
    assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(1));
    assert!(rest.body["next_cursor"].is_null());
    // Exports: JSON lines and CSV, oldest first, whole.
    let export = |format: &str| {
        let url = server.url(&format!("/admin/api/v1/audit/export?route=crm&format={format}"));
        let request = server.http.get(url).bearer_auth(&admin);
        async move {
            let response = request.send().await?;
            let content_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            AnyResult::Ok((response.status().as_u16(), content_type, response.text().await?))
        }
    };
    let (status, content_type, jsonl) = export("jsonl").await?;
    assert_eq!((status, content_type.as_str()), (200, "application/jsonl"));
    let lines: Vec<Value> = jsonl.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 3);
    assert!(lines.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()), "oldest first");
    let (status, content_type, csv) = export("csv").await?;
    assert_eq!((status, content_type.as_str()), (200, "text/csv; charset=utf-8"));
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("id,occurred_at,kind,actor"), "{csv}");
    for (path, error) in [
        ("/admin/api/v1/audit?kind=no.such.kind", "invalid_request"),
        ("/admin/api/v1/audit?decision=maybe", "invalid_request"),
        ("/admin/api/v1/audit?from=yesterday", "invalid_request"),
        ("/admin/api/v1/audit/export?format=xml", "invalid_request"),
        ("/admin/api/v1/audit/export?limit=5", "invalid_request"),
    ] {
        let answer = api(&server, get.clone(), path, Some(&admin)).await?;
        assert_eq!((answer.status, answer.body["error"].as_str()), (400, Some(error)), "{path}: {}", answer.body);
    }
    Ok(())
}

/// An operator's client's token for the admin API with `scope`.
async fn operator_token(server: &TestServer, scope: &str) -> AnyResult<String> {
    let admin = server.url("/admin/api");
    let (status, body) = server
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", RESOURCE_SERVER),
            ("client_secret", RESOURCE_SERVER_SECRET),
            ("resource", &admin),
            ("scope", scope),
        ])
        .await?;
    assert_eq!(status, 200, "{body}");
    Ok(body["access_token"].as_str().ok_or("no token")?.to_owned())
}

/// Runs schemathesis against the admin API's OpenAPI document with `token` (if any) and our
/// own checks (tests/peers/schemathesis/hooks.py); fails with its report unless it finds nothing.
async fn schemathesis(
    server: &TestServer,
    token: Option<&str>,
    checks: &str,
    expect: u16,
    only_writes: bool,
) -> TestResult {
    let venv = std::env::var("PORTCULLIS_SCHEMATHESIS").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/portcullis/schemathesis")
    });
    let program = venv.join("bin/schemathesis");
    if !program.exists() {
        return Err(format!("{} is missing: run scripts/install-test-deps", program.display()).into());
    }
    let hooks = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/schemathesis");
    let reports = tempfile::tempdir()?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg("run")
        .arg(server.url("/admin/api/openapi.json"))
        .args(["--checks", checks, "--max-examples", "25", "--seed", "20261205", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing", "--generation-allow-x00", "true", "--no-color"])
        .args(["--request-timeout", "10", "--max-failures", "20", "--warnings", "off"])
        .arg("--report-dir")
        .arg(reports.path())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("EXPECT_STATUS", expect.to_string())
        .env("NO_COLOR", "1")
        .current_dir(reports.path())
        .kill_on_drop(true);
    if only_writes {
        command.args(["--exclude-method", "GET"]);
    }
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .map_err(|_| "schemathesis ran for more than 300 s")??;
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(out.contains("No issues found"), "{out}");
    let generated = out.lines().find(|l| l.contains(" generated")).unwrap_or_default();
    println!("schemathesis ({checks}): {}", generated.trim());
    Ok(())
}

/// schemathesis (PyPI) generates requests from the OpenAPI document: with an administrator's
/// token nothing answers with a server error or off its schema, and authentication is
/// enforced; without a token every write is refused with 401, with a read-only token with 403.
#[tokio::test]
async fn schemathesis_finds_no_fault_in_the_admin_api() -> TestResult {
    let crm = portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned());
    let server = TestServer::start_with(Options { upstreams: vec![crm], ..Options::default() }).await?;
    user_token_for(&server, &mut Browser::default(), "alice", &server.route("crm"), &["crm.contacts.read"]).await?;
    let write = operator_token(&server, &format!("{READ} {WRITE}")).await?;
    let read = operator_token(&server, READ).await?;
    let conformance = "not_a_server_error,status_code_conformance,content_type_conformance,\
                       response_schema_conformance,ignored_auth";
    // The refusals first: the administrator's run changes (and deletes) what it finds.
    schemathesis(&server, None, "not_a_server_error,writes_are_refused", 401, true).await?;
    schemathesis(&server, Some(&read), "not_a_server_error,writes_are_refused", 403, true).await?;
    schemathesis(&server, Some(&write), conformance, 0, false).await?;
    Ok(())
}
