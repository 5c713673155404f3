//! Token exchange (RFC 8693) for agents that delegate to other agents: a user's token, given
//! by one agent to another, exchanged for the other's own token for another route, with at
//! most the user's scopes and the `act` chain; the gateway's audit names who acted for whom;
//! every refusal is exact; and the delegated token dies with its grant or any client of its
//! chain.

use base64::Engine as _;
use serde_json::{Value, json};

use portcullis::config::UpstreamConfig;

use crate::harness::*;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Two routes to the demo CRM: the user's agent holds a token for `crm`; its delegate works
/// on `crm-reports`.
async fn start() -> AnyResult<TestServer> {
    let crm = portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned());
    let reports = UpstreamConfig { name: "crm-reports".into(), ..crm.clone() };
    TestServer::start_with(Options { upstreams: vec![crm, reports], ..Options::default() }).await
}

async fn exchange(server: &TestServer, client: &str, form: &[(&str, &str)]) -> AnyResult<(u16, Value)> {
    let mut all = vec![("grant_type", TOKEN_EXCHANGE), ("client_id", client), ("client_secret", DELEGATE_SECRET)];
    all.extend_from_slice(form);
    server.token(&all).await
}

fn claims(jwt: &str) -> AnyResult<Value> {
    let payload = jwt.split('.').nth(1).ok_or("not a JWT")?;
    Ok(serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?)
}

/// Initializes a session on `route` and calls `tool`; returns the HTTP status and the message.
async fn call_tool(server: &TestServer, route: &str, token: &str, tool: &str) -> AnyResult<(u16, Value)> {
    mcp(server, route, token, "tools/call", json!({"name": tool, "arguments": {}})).await
}

#[tokio::test]
async fn a_delegate_gets_at_most_the_users_scopes_for_another_route_with_the_act_chain() -> TestResult {
    let server = start().await?;
    let (crm, reports) = (server.route("crm"), server.route("crm-reports"));
    let user_token = alice_token_for(&server, &crm, &["crm.contacts.read", "crm.deals.write"]).await?;

    let (status, body) = exchange(
        &server,
        DELEGATE_CLIENT,
        &[
            ("subject_token", &user_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("resource", &reports),
            ("scope", "crm.contacts.read"),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "crm.contacts.read");
    assert!(body.get("refresh_token").is_none(), "no refresh token for a delegation: {body}");
    let delegated = body["access_token"].as_str().ok_or("no token")?.to_owned();
    let c = claims(&delegated)?;
    assert_eq!((c["sub"].as_str(), c["aud"].as_str()), (Some(server.alice_id.as_str()), Some(reports.as_str())));
    assert_eq!(c["client_id"], DELEGATE_CLIENT);
    assert_eq!(c["act"], json!({"sub": DELEGATE_CLIENT, "act": {"sub": PUBLIC_CLIENT}}));
    let subject_exp = claims(&user_token)?["exp"].as_i64().ok_or("exp")?;
    assert!(c["exp"].as_i64().is_some_and(|e| e <= subject_exp), "never outlives the subject token");

    // Through the gateway: allowed on its own route with its own scope, refused on the other.
    let (status, answer) = call_tool(&server, "crm-reports", &delegated, "list_contacts").await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("result").is_some(), "{answer}");
    let (status, _) = call_tool(&server, "crm-reports", &delegated, "update_deal").await?;
    assert_eq!(status, 403, "the delegate holds only what it asked for");
    let (status, _) = call_tool(&server, "crm", &delegated, "list_contacts").await?;
    assert_eq!(status, 401, "a token for crm-reports is not one for crm");

    // The audit trail names the user, the acting client and who delegated to it.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let filter = portcullis_store::AuditFilter { client_id: Some(DELEGATE_CLIENT.into()), ..Default::default() };
    let events = server.store()?.audit_events(None, 50, &filter).await?;
    let call = events
        .iter()
        .find(|e| e.event.target.as_deref() == Some("list_contacts"))
        .ok_or_else(|| format!("no audit row of the delegated call: {events:?}"))?;
    assert_eq!(call.event.user_id.as_deref(), Some(server.alice_id.as_str()));
    assert_eq!(call.event.actor.as_deref(), Some("client:delegate, delegated by client:public-app"));

    // A second hop nests the chain.
    let (status, body) = exchange(
        &server,
        DELEGATE_2_CLIENT,
        &[("subject_token", &delegated), ("subject_token_type", ACCESS_TOKEN), ("audience", &crm)],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let second = body["access_token"].as_str().ok_or("no token")?.to_owned();
    assert_eq!(
        claims(&second)?["act"],
        json!({"sub": DELEGATE_2_CLIENT, "act": {"sub": DELEGATE_CLIENT, "act": {"sub": PUBLIC_CLIENT}}})
    );
    assert_eq!(body["scope"], "crm.contacts.read", "no more than the token it came from");
    let (status, _) = call_tool(&server, "crm", &second, "list_contacts").await?;
    assert_eq!(status, 200);

    // Suspending a client in the middle of the chain ends what it passed on, at once.
    server.control()?.suspend_client(&Actor::Operator, DELEGATE_CLIENT).await?;
    assert_eq!(server.introspect(&second).await?["active"], false);
    assert_eq!(call_tool(&server, "crm", &second, "list_contacts").await?.0, 401);
    server.control()?.resume_client(&Actor::Operator, DELEGATE_CLIENT).await?;
    assert_eq!(server.introspect(&second).await?["active"], true);

    // Revoking the user's grant ends every delegation drawn from it.
    let subject_grant = claims(&user_token)?["jti"].as_str().map(str::to_owned).ok_or("jti")?;
    let grant = server.store()?.access_token_status(&subject_grant).await?.ok_or("status")?.grant_id;
    server
        .control()?
        .revoke_grants(
            &Actor::Operator,
            portcullis_store::GrantSelector::Grant(grant),
            portcullis_control::RevocationReason::AdministratorRequest,
        )
        .await?;
    assert_eq!(server.introspect(&delegated).await?["active"], false);
    assert_eq!(server.introspect(&second).await?["active"], false);
    Ok(())
}

#[tokio::test]
async fn every_refused_exchange_says_why_and_issues_nothing() -> TestResult {
    let server = start().await?;
    let (crm, reports) = (server.route("crm"), server.route("crm-reports"));
    let user_token = alice_token_for(&server, &crm, &["crm.contacts.read"]).await?;
    let subject = [("subject_token", user_token.as_str()), ("subject_token_type", ACCESS_TOKEN)];
    let with = |extra: &[(&'static str, &str)]| {
        let mut form: Vec<(&str, String)> = subject.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        form.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        form
    };
    let check = |name: &'static str, client: &'static str, form: Vec<(&'static str, String)>, error: &'static str| {
        let server = &server;
        async move {
            let borrowed: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, body) = exchange(server, client, &borrowed).await?;
            assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{name}: {body}");
            assert!(body.get("access_token").is_none(), "{name}");
            AnyResult::Ok(())
        }
    };
    check(
        "more scope than the subject holds",
        DELEGATE_CLIENT,
        with(&[("resource", &reports), ("scope", "crm.deals.write")]),
        "invalid_scope",
    )
    .await?;
    check(
        "an unknown resource",
        DELEGATE_CLIENT,
        with(&[("resource", "http://127.0.0.1:9/mcp/elsewhere")]),
        "invalid_target",
    )
    .await?;
    check("no resource", DELEGATE_CLIENT, with(&[]), "invalid_target").await?;
    check(
        "resource and audience disagree",
        DELEGATE_CLIENT,
        with(&[("resource", &reports), ("audience", &crm)]),
        "invalid_target",
    )
    .await?;
    let not_ours = vec![
        ("subject_token", "not-a-token".to_owned()),
        ("subject_token_type", ACCESS_TOKEN.to_owned()),
        ("resource", reports.clone()),
    ];
    check("a subject token that is not ours", DELEGATE_CLIENT, not_ours, "invalid_request").await?;
    let id_token_type = vec![
        ("subject_token", user_token.clone()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token".to_owned()),
        ("resource", reports.clone()),
    ];
    check("another subject token type", DELEGATE_CLIENT, id_token_type, "invalid_request").await?;
    check(
        "a refresh token asked for",
        DELEGATE_CLIENT,
        with(&[("resource", &reports), ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")]),
        "invalid_request",
    )
    .await?;
    // The actor token must be the asking client's own.
    check(
        "someone else's actor token",
        DELEGATE_CLIENT,
        with(&[("resource", &reports), ("actor_token", &user_token), ("actor_token_type", ACCESS_TOKEN)]),
        "invalid_request",
    )
    .await?;
    check(
        "an actor token without its type",
        DELEGATE_CLIENT,
        with(&[("resource", &reports), ("actor_token", &user_token)]),
        "invalid_request",
    )
    .await?;
    // A client not allowed the grant.
    let (status, body) = server
        .token(&[
            ("grant_type", TOKEN_EXCHANGE),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
            ("subject_token", &user_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("resource", &reports),
        ])
        .await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")), "{body}");
    // The metadata says the grant exists.
    let metadata: Value =
        server.http.get(server.url("/.well-known/oauth-authorization-server")).send().await?.json().await?;
    assert!(
        metadata["grant_types_supported"].as_array().is_some_and(|g| g.iter().any(|v| v == TOKEN_EXCHANGE)),
        "{metadata}"
    );
    Ok(())
}
