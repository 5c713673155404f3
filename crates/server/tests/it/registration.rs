//! Dynamic Client Registration (RFC 7591), its management (RFC 7592) and its hardening.

use portcullis::config::RegistrationConfig;
use serde_json::{Value, json};

use crate::harness::*;

fn open_policy() -> AnyResult<RegistrationConfig> {
    Ok(RegistrationConfig {
        enabled: true,
        allowed_networks: vec!["127.0.0.0/8".parse()?, "::1/128".parse()?],
        initial_access_token: portcullis::config::InitialAccessTokenMode::Optional,
        redirect_hosts: vec!["app.example.test".into(), ".partner.example.test".into()],
        confidential_without_token: portcullis::config::ConfidentialWithoutTokenMode::Approval,
        per_address_per_minute: 1000,
        ..RegistrationConfig::default()
    })
}

async fn start(policy: RegistrationConfig) -> AnyResult<TestServer> {
    TestServer::start_with(Options { registration: policy, ..Options::default() }).await
}

async fn register(
    server: &TestServer,
    body: &Value,
    token: Option<&str>,
) -> AnyResult<(u16, Value, reqwest::header::HeaderMap)> {
    let mut request = server.http.post(server.url("/register")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null), headers))
}

fn native_app() -> Value {
    json!({
        "client_name": "Claude <Desktop>",
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "application_type": "native",
        "scope": "crm.contacts.read crm.deals.write",
        "client_id": "i-want-to-choose-my-id"
    })
}

#[track_caller]
fn assert_error(result: &(u16, Value, reqwest::header::HeaderMap), status: u16, error: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["error"], error, "{}", result.1);
    assert!(result.1["error_description"].as_str().is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn registration_is_off_unless_enabled() -> TestResult {
    let server = TestServer::start().await?;
    let metadata: Value =
        server.http.get(server.url("/.well-known/oauth-authorization-server")).send().await?.json().await?;
    assert!(metadata.get("registration_endpoint").is_none());
    assert_error(&register(&server, &native_app(), None).await?, 403, "access_denied");
    Ok(())
}

#[tokio::test]
async fn a_public_native_client_registers_and_signs_a_user_in() -> TestResult {
    let server = start(open_policy()?).await?;
    let metadata: Value =
        server.http.get(server.url("/.well-known/oauth-authorization-server")).send().await?.json().await?;
    assert_eq!(metadata["registration_endpoint"], server.url("/register"));

    let (status, info, _) = register(&server, &native_app(), None).await?;
    assert_eq!(status, 201, "{info}");
    let client_id = info["client_id"].as_str().ok_or("client_id")?.to_owned();
    assert_ne!(client_id, "i-want-to-choose-my-id", "Portcullis chooses the client_id");
    assert!(info.get("client_secret").is_none(), "public clients get no secret");
    assert_eq!(info["token_endpoint_auth_method"], "none");
    assert_eq!(info["application_type"], "native");
    assert_eq!(info["portcullis_status"], "active");
    assert_eq!(info["registration_client_uri"], server.url(&format!("/register/{client_id}")));
    assert!(info["registration_access_token"].as_str().is_some_and(|t| t.len() >= 40));
    let stored = server.store()?.find_client(&client_id).await?.ok_or("stored")?;
    assert_eq!(stored.origin, portcullis_store::RegistrationOrigin::Dcr);
    assert!(!stored.verified);
    assert_eq!(stored.registered_from.as_deref(), Some("127.0.0.1"));

    // The new client completes an authorization; the consent page says how it came to be.
    let (verifier, challenge) = pkce()?;
    let redirect = "http://127.0.0.1:5999/callback";
    let url = authorize_url(&server, &client_id, redirect, &challenge, &[]);
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&server, &mut browser, &url).await?;
    assert!(
        consent.body.contains("dynamic client registration") && consent.body.contains("unverified"),
        "{}",
        consent.body
    );
    assert!(consent.body.contains("Claude &#60;Desktop&#62;"));
    let approved = browser.consent(&server, &consent, &["crm.contacts.read"], "approve").await?;
    let location = approved.location.ok_or("callback")?;
    let code = query(&location)?.get("code").cloned().ok_or("code")?;
    let (status, tokens) = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", redirect),
        ])
        .await?;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "crm.contacts.read");
    Ok(())
}

#[tokio::test]
async fn redirect_uris_and_metadata_are_validated() -> TestResult {
    let server = start(open_policy()?).await?;
    let with = |changes: Value| {
        let mut body = native_app();
        if let (Some(b), Some(c)) = (body.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                b.insert(k.clone(), v.clone());
            }
        }
        body
    };
    let bad_redirects = [
        json!({"redirect_uris": ["http://evil.example.test/cb"]}),
        json!({"redirect_uris": ["https://evil.example.test/cb"], "application_type": "web"}),
        json!({"redirect_uris": ["https://app.example.test.evil.test/cb"], "application_type": "web"}),
        json!({"redirect_uris": ["https://app.example.test/cb#frag"], "application_type": "web"}),
        json!({"redirect_uris": ["javascript:alert(1)"]}),
        json!({"redirect_uris": ["com.example.app:/cb"]}),
        json!({"redirect_uris": ["http://127.0.0.1:3000/cb"], "application_type": "web"}),
        json!({"redirect_uris": []}),
        json!({"redirect_uris": ["https://app.example.test/a/../cb"], "application_type": "web"}),
    ];
    for changes in bad_redirects {
        assert_error(&register(&server, &with(changes.clone()), None).await?, 400, "invalid_redirect_uri");
    }
    let bad_metadata = [
        json!({"token_endpoint_auth_method": "private_key_jwt"}),
        json!({"grant_types": ["client_credentials"]}),
        json!({"grant_types": ["password"]}),
        json!({"response_types": ["token"]}),
        json!({"scope": "crm.contacts.read root.everything"}),
        json!({"application_type": "desktop"}),
        json!({"client_name": "x".repeat(101)}),
        json!({"client_name": "line\nbreak"}),
        json!({"client_uri": "http://app.example.test"}),
        json!({"jwks_uri": "https://app.example.test/jwks"}),
        json!({"redirect_uris": "not-a-list"}),
    ];
    for changes in bad_metadata {
        assert_error(&register(&server, &with(changes.clone()), None).await?, 400, "invalid_client_metadata");
    }
    assert_error(
        &register(&server, &with(json!({"software_statement": "eyJ0eXAiOiJKV1QifQ.e30.x"})), None).await?,
        400,
        "invalid_software_statement",
    );
    let form = server.http.post(server.url("/register")).form(&[("client_name", "x")]).send().await?;
    assert_eq!(form.status(), 400);

    // Accepted: https on an allowed host or subdomain (inferred web), localhost any port.
    let web = with(
        json!({"redirect_uris": ["https://app.example.test/cb", "https://eu.partner.example.test/cb"], "application_type": null}),
    );
    let (status, info, _) = register(&server, &web, None).await?;
    assert_eq!((status, info["application_type"].as_str()), (201, Some("web")), "{info}");
    let localhost = with(json!({"redirect_uris": ["http://localhost:6274/oauth/callback"], "application_type": null}));
    let (status, info, _) = register(&server, &localhost, None).await?;
    assert_eq!((status, info["application_type"].as_str()), (201, Some("native")), "{info}");
    // Nothing was half-written by the refusals.
    assert_eq!(server.store()?.count_clients(portcullis_store::RegistrationOrigin::Dcr).await?, 2);
    Ok(())
}

#[tokio::test]
async fn initial_access_tokens_gate_registration_and_vouch_for_clients() -> TestResult {
    let mut policy = open_policy()?;
    policy.initial_access_token = portcullis::config::InitialAccessTokenMode::Required;
    let server = start(policy).await?;
    let denied = register(&server, &native_app(), None).await?;
    assert_error(&denied, 401, "invalid_token");
    assert_eq!(denied.2.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer error=\"invalid_token\""));
    assert_error(&register(&server, &native_app(), Some("made-up")).await?, 401, "invalid_token");

    let token = server.control()?.create_initial_access_token(&Actor::Operator, "ci", 1, 60).await?;
    let token = token.as_str();
    let (status, info, _) = register(&server, &native_app(), Some(token)).await?;
    assert_eq!(status, 201, "{info}");
    let client = server.store()?.find_client(info["client_id"].as_str().ok_or("id")?).await?.ok_or("client")?;
    assert!(client.verified, "an administrator's token vouches for the client");
    assert_error(&register(&server, &native_app(), Some(token)).await?, 401, "invalid_token");
    Ok(())
}

#[tokio::test]
async fn source_networks_caps_and_rate_limits() -> TestResult {
    // Only a documentation network may register: this loopback peer may not.
    let mut policy = open_policy()?;
    policy.allowed_networks = vec!["192.0.2.0/24".parse()?];
    let server = start(policy).await?;
    assert_error(&register(&server, &native_app(), None).await?, 403, "access_denied");
    // An administrator's initial access token admits the registration from anywhere.
    let iat = server.control()?.create_initial_access_token(&Actor::Operator, "partner", 1, 60).await?;
    assert_eq!(register(&server, &native_app(), Some(&iat)).await?.0, 201);

    let mut policy = open_policy()?;
    policy.max_clients = 2;
    policy.per_address_per_minute = 3;
    let server = start(policy).await?;
    assert_eq!(register(&server, &native_app(), None).await?.0, 201);
    assert_eq!(register(&server, &native_app(), None).await?.0, 201);
    assert_error(&register(&server, &native_app(), None).await?, 403, "access_denied");
    let limited = register(&server, &native_app(), None).await?;
    assert_eq!(limited.0, 429, "{}", limited.1);
    // The server keeps serving everyone else meanwhile.
    assert_eq!(server.http.get(server.url("/jwks.json")).send().await?.status(), 200);
    assert_eq!(
        server
            .token(&[
                ("grant_type", "client_credentials"),
                ("client_id", MACHINE_CLIENT),
                ("client_secret", MACHINE_SECRET)
            ])
            .await?
            .0,
        200
    );
    Ok(())
}

#[tokio::test]
async fn confidential_clients_without_a_token_wait_for_approval() -> TestResult {
    let server = start(open_policy()?).await?;
    let body = json!({
        "client_name": "Backend agent",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_post",
        "scope": "crm.contacts.read"
    });
    let (status, info, _) = register(&server, &body, None).await?;
    assert_eq!(status, 201, "{info}");
    assert_eq!(info["portcullis_status"], "pending");
    let client_id = info["client_id"].as_str().ok_or("id")?.to_owned();
    let secret = info["client_secret"].as_str().ok_or("secret")?.to_owned();
    assert_eq!(info["client_secret_expires_at"], 0);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("resource", server.resource.as_str()),
    ];
    let pending = server.token(&form).await?;
    assert_eq!((pending.0, pending.1["error"].as_str()), (401, Some("invalid_client")), "{}", pending.1);
    server.control()?.approve_client(&Actor::Operator, &client_id).await?;
    let approved = server.token(&form).await?;
    assert_eq!(approved.0, 200, "{}", approved.1);

    // With "refuse", the same registration is turned away.
    let mut policy = open_policy()?;
    policy.confidential_without_token = portcullis::config::ConfidentialWithoutTokenMode::Refuse;
    let strict = start(policy).await?;
    assert_error(&register(&strict, &body, None).await?, 400, "invalid_client_metadata");
    Ok(())
}

#[tokio::test]
async fn public_clients_get_the_scope_ceiling() -> TestResult {
    let mut policy = open_policy()?;
    policy.public_client_scopes = vec!["crm.contacts.read".into()];
    let server = start(policy).await?;
    let (status, info, _) = register(&server, &native_app(), None).await?;
    assert_eq!((status, info["scope"].as_str()), (201, Some("crm.contacts.read")), "{info}");
    let client_id = info["client_id"].as_str().ok_or("id")?;
    let (_, challenge) = pkce()?;
    let url = authorize_url(&server, client_id, "http://127.0.0.1:5999/callback", &challenge, &[]);
    let page = Browser::default().get(&server, &url).await?;
    let location = page.location.ok_or("redirect")?;
    assert_eq!(query(&location)?.get("error").map(String::as_str), Some("invalid_scope"), "{location}");
    Ok(())
}

#[tokio::test]
async fn rfc7592_read_update_delete_with_the_registration_access_token() -> TestResult {
    let server = start(open_policy()?).await?;
    let (_, info, _) = register(&server, &native_app(), None).await?;
    let uri = info["registration_client_uri"].as_str().ok_or("uri")?.to_owned();
    let token = info["registration_access_token"].as_str().ok_or("token")?.to_owned();
    let client_id = info["client_id"].as_str().ok_or("id")?.to_owned();

    let read = server.http.get(&uri).bearer_auth(&token).send().await?;
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await?;
    assert_eq!(read["client_id"], client_id.as_str());
    assert!(read.get("registration_access_token").is_none() && read.get("client_secret").is_none());
    for bad in [None, Some("wrong-token")] {
        let mut request = server.http.get(&uri);
        if let Some(b) = bad {
            request = request.bearer_auth(b);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 401);
    }
    // Another client's token does not work on this client.
    let (_, other, _) = register(&server, &native_app(), None).await?;
    let cross =
        server.http.get(&uri).bearer_auth(other["registration_access_token"].as_str().ok_or("t")?).send().await?;
    assert_eq!(cross.status(), 401);

    let mut update = native_app();
    update["client_name"] = json!("Renamed app");
    update["client_id"] = json!(client_id);
    update["redirect_uris"] = json!(["http://127.0.0.1/new-callback"]);
    let updated = server.http.put(&uri).bearer_auth(&token).json(&update).send().await?;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await?;
    assert_eq!(
        (updated["client_name"].as_str(), updated["redirect_uris"][0].as_str()),
        (Some("Renamed app"), Some("http://127.0.0.1/new-callback"))
    );
    update["token_endpoint_auth_method"] = json!("client_secret_basic");
    let switch = server.http.put(&uri).bearer_auth(&token).json(&update).send().await?;
    assert_eq!(switch.status(), 400);
    update["token_endpoint_auth_method"] = json!("none");
    update["client_id"] = json!("someone-else");
    assert_eq!(server.http.put(&uri).bearer_auth(&token).json(&update).send().await?.status(), 400);

    let deleted = server.http.delete(&uri).bearer_auth(&token).send().await?;
    assert_eq!(deleted.status(), 204);
    assert!(server.store()?.find_client(&client_id).await?.is_none());
    assert_eq!(server.http.get(&uri).bearer_auth(&token).send().await?.status(), 401);
    Ok(())
}

#[tokio::test]
async fn self_registered_clients_get_short_sessions_short_refresh_and_expire_unused() -> TestResult {
    let server = start(open_policy()?).await?;
    let (_, info, _) = register(&server, &native_app(), None).await?;
    let client_id = info["client_id"].as_str().ok_or("id")?.to_owned();
    let redirect = "http://127.0.0.1:5999/callback";
    let mut browser = Browser::default();

    let (verifier, challenge) = pkce()?;
    let url = authorize_url(&server, &client_id, redirect, &challenge, &[]);
    let location = authorize_as_alice(&server, &mut browser, &url, &["crm.contacts.read", "crm.deals.write"]).await?;
    let code = query(&location)?.get("code").cloned().ok_or("code")?;
    let (status, tokens) = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
        ])
        .await?;
    assert_eq!(status, 200, "{tokens}");

    // Two hours later the browser session (12 h) is alive: an admin client goes straight
    // through, the self-registered one must sign in again (at most one hour).
    server.clock.advance(2 * 3600);
    let (_, challenge) = pkce()?;
    let admin = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    assert!(
        browser.get(&server, &admin).await?.location.is_some_and(|l| l.contains("/consent?")),
        "no re-login for admin clients"
    );
    let dynamic = authorize_url(&server, &client_id, redirect, &challenge, &[]);
    assert!(
        browser.get(&server, &dynamic).await?.location.is_some_and(|l| l.contains("/login?")),
        "re-login for DCR clients"
    );

    // Its refresh tokens live a week, not thirty days.
    server.clock.advance(7 * 24 * 3600);
    let refresh = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", tokens["refresh_token"].as_str().ok_or("rt")?),
        ])
        .await?;
    assert_eq!((refresh.0, refresh.1["error"].as_str()), (400, Some("invalid_grant")), "{}", refresh.1);

    // Unused for 30 days, it is swept away with everything it holds; admin clients stay.
    let (_, fresh, _) = register(&server, &native_app(), None).await?;
    let fresh_id = fresh["client_id"].as_str().ok_or("id")?.to_owned();
    server.clock.advance(24 * 24 * 3600);
    let running = server.running.as_ref().ok_or("stopped")?;
    assert_eq!(running.server.sweep().await?.unused_clients, std::slice::from_ref(&client_id));
    assert!(server.store()?.find_client(&client_id).await?.is_none());
    assert!(server.store()?.list_grants(Some(&client_id), None).await?.is_empty(), "its grants went with it");
    assert!(server.store()?.find_client(&fresh_id).await?.is_some(), "a client registered 24 days ago stays");
    assert!(server.store()?.find_client(PUBLIC_CLIENT).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() -> TestResult {
    // Registration is allowed only from a documentation network; the test talks from loopback
    // and claims, in X-Forwarded-For, to be 192.0.2.7 (no traffic goes there).
    let mut policy = open_policy()?;
    policy.allowed_networks = vec!["192.0.2.0/24".parse()?];
    let forged = |server: &TestServer, chain: &'static str| {
        server.http.post(server.url("/register")).header("x-forwarded-for", chain).json(&native_app()).send()
    };
    let untrusted = start(policy.clone()).await?;
    assert_eq!(
        forged(&untrusted, "192.0.2.7").await?.status(),
        403,
        "a forwarded header from an untrusted peer is ignored"
    );

    let behind_proxy = TestServer::start_with(Options {
        registration: policy,
        trusted_proxies: vec!["127.0.0.0/8".parse()?],
        ..Options::default()
    })
    .await?;
    assert_eq!(forged(&behind_proxy, "192.0.2.7").await?.status(), 201);
    assert_eq!(forged(&behind_proxy, "192.0.2.7, 127.0.0.5").await?.status(), 201, "trusted hops are skipped");
    assert_eq!(
        forged(&behind_proxy, "192.0.2.7, 198.51.100.9").await?.status(),
        403,
        "the rightmost untrusted hop counts"
    );
    assert_eq!(
        forged(&behind_proxy, "not-an-address").await?.status(),
        403,
        "a malformed chain falls back to the peer"
    );
    let stored = behind_proxy.store()?.list_clients().await?;
    assert!(stored.iter().any(|c| c.registered_from.as_deref() == Some("192.0.2.7")));
    Ok(())
}

#[tokio::test]
async fn software_statements_from_trusted_publishers_vouch_for_clients() -> TestResult {
    let publisher = portcullis_crypto::SigningKey::generate()?;
    let stranger = portcullis_crypto::SigningKey::generate()?;
    let dir = tempfile::tempdir()?;
    let jwks = dir.path().join("vendor-jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&portcullis_types::wire::JwkSet { keys: vec![publisher.public_jwk()] })?,
    )?;
    let mut policy = open_policy()?;
    policy.confidential_without_token = portcullis::config::ConfidentialWithoutTokenMode::Refuse;
    policy.software_statement_issuers = vec![portcullis::config::StatementIssuerConfig {
        issuer: "https://vendor.example.test".into(),
        jwks_file: jwks,
    }];
    let server = start(policy).await?;
    let now = server.clock.now();
    let statement =
        |key: &portcullis_crypto::SigningKey, claims: Value| portcullis_crypto::sign_jwt(key, "JWT", &claims);
    let good_claims = json!({
        "iss": "https://vendor.example.test",
        "iat": now,
        "exp": now + 600,
        "software_id": "vendor-agent",
        "client_name": "Vendor Agent (signed)",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["client_credentials"],
        "scope": "crm.contacts.read"
    });
    // The signed claims win over the plain ones; a confidential client needs no token.
    let body = json!({"client_name": "Impostor", "software_statement": statement(&publisher, good_claims.clone())?});
    let (status, info, _) = register(&server, &body, None).await?;
    assert_eq!(status, 201, "{info}");
    assert_eq!(
        (info["client_name"].as_str(), info["portcullis_status"].as_str()),
        (Some("Vendor Agent (signed)"), Some("active"))
    );
    let client = server.store()?.find_client(info["client_id"].as_str().ok_or("id")?).await?.ok_or("client")?;
    assert!(client.verified);
    assert_eq!(client.origin, portcullis_store::RegistrationOrigin::SoftwareStatement);

    let with_statement = |s: String| json!({"software_statement": s});
    assert_error(
        &register(&server, &with_statement(statement(&stranger, good_claims.clone())?), None).await?,
        400,
        "unapproved_software_statement",
    );
    let mut wrong_iss = good_claims.clone();
    wrong_iss["iss"] = json!("https://other.example.test");
    assert_error(
        &register(&server, &with_statement(statement(&publisher, wrong_iss)?), None).await?,
        400,
        "unapproved_software_statement",
    );
    let mut expired = good_claims.clone();
    expired["exp"] = json!(now - 1);
    assert_error(
        &register(&server, &with_statement(statement(&publisher, expired)?), None).await?,
        400,
        "invalid_software_statement",
    );
    let signed = statement(&publisher, good_claims)?;
    let tampered = format!("{}x", signed);
    assert_error(&register(&server, &with_statement(tampered), None).await?, 400, "invalid_software_statement");
    assert_error(
        &register(&server, &with_statement("not-a-jwt".into()), None).await?,
        400,
        "invalid_software_statement",
    );
    Ok(())
}
