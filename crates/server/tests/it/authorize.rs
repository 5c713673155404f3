//! The authorization endpoint, sign-in and consent (RFC 6749 §4.1, RFC 9700, RFC 9207, OIDC).

use crate::harness::*;

/// Asserts the response is an error page (no redirect anywhere) with `code`.
#[track_caller]
fn assert_error_page(page: &Page, code: &str) {
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.location.is_none(), "must not redirect: {:?}", page.location);
    assert!(page.body.contains(code), "page should name {code}: {}", page.body);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
}

/// Asserts a redirect to the client with `error`, `state` and `iss`.
#[track_caller]
fn assert_error_redirect(server: &TestServer, page: &Page, redirect: &str, error: &str) {
    assert_eq!(page.status, 303, "{}", page.body);
    let location = page.location.as_deref().unwrap_or_default();
    assert!(location.starts_with(redirect), "{location}");
    let q = query(location).unwrap_or_default();
    assert_eq!(q.get("error").map(String::as_str), Some(error), "{location}");
    assert_eq!(q.get("state").map(String::as_str), Some("state-123"));
    assert_eq!(q.get("iss"), Some(&server.issuer), "RFC 9207 iss on error responses");
    assert!(q.get("error_description").is_some_and(|d| !d.is_empty()));
}

#[tokio::test]
async fn code_flow_with_a_narrowed_consent() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);

    let first = browser.get(&server, &url).await?;
    assert_eq!(first.status, 303);
    let login_url = first.location.clone().ok_or("no login redirect")?;
    assert!(login_url.contains("/login?request="), "{login_url}");
    let posted = browser.login(&server, &login_url, "alice", PASSWORD).await?;
    assert_eq!(posted.status, 303);
    let cont = browser.get(&server, posted.location.as_deref().ok_or("no continue")?).await?;
    let consent_url = cont.location.clone().ok_or("no consent redirect")?;
    let consent = browser.get(&server, &consent_url).await?;
    assert_eq!(consent.status, 200);
    // The consent page names the client (escaped), its status, the redirect host and resource.
    assert!(
        consent.body.contains("Desktop &#60;Agent&#62;") && !consent.body.contains("<Agent>"),
        "client name escaped"
    );
    assert!(consent.body.contains("unverified"));
    assert!(consent.body.contains("127.0.0.1"));
    assert!(consent.body.contains(&server.resource));
    assert!(
        consent.body.contains("Read your CRM contacts") && consent.body.contains("Create and change deals in your CRM")
    );

    // Alice unticks crm.deals.write.
    let approved = browser.consent(&server, &consent, &["crm.contacts.read"], "approve").await?;
    assert_eq!(approved.status, 303);
    let location = approved.location.ok_or("no redirect")?;
    let q = query(&location)?;
    assert!(location.starts_with(PUBLIC_REDIRECT));
    assert_eq!(q.get("state").map(String::as_str), Some("state-123"));
    assert_eq!(q.get("iss"), Some(&server.issuer));

    let (status, tokens) = redeem(&server, &location, &verifier).await?;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "crm.contacts.read");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["refresh_token"].is_string());
    let info = server.introspect(tokens["access_token"].as_str().ok_or("at")?).await?;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["aud"], server.resource.as_str());
    assert_eq!(info["scope"], "crm.contacts.read");
    assert_eq!(info["sub"], server.alice_id.as_str());
    assert_eq!(info["username"], "alice");
    Ok(())
}

#[tokio::test]
async fn remembered_consent_prompt_values_and_max_age() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    authorize_as_alice(&server, &mut browser, &url, &["crm.contacts.read", "crm.deals.write"]).await?;

    // Same request again: signed in and consented, so straight back with a code.
    let again = browser.get(&server, &url).await?;
    let location = browser.get(&server, again.location.as_deref().ok_or("redirect")?).await;
    let direct = match location {
        Ok(p) if p.location.as_deref().is_some_and(|l| l.starts_with(PUBLIC_REDIRECT)) => p.location,
        _ => again.location.clone(),
    };
    assert!(direct.as_deref().is_some_and(|l| l.starts_with(PUBLIC_REDIRECT) && l.contains("code=")), "{direct:?}");

    // A subset of the remembered scopes needs no consent either; a superset does.
    let subset = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("scope", "crm.contacts.read")]);
    assert!(browser.get(&server, &subset).await?.location.is_some_and(|l| l.contains("code=")));
    let wider = authorize_url(
        &server,
        PUBLIC_CLIENT,
        PUBLIC_REDIRECT,
        &challenge,
        &[("scope", "crm.contacts.read crm.contacts.export")],
    );
    assert!(browser.get(&server, &wider).await?.location.is_some_and(|l| l.contains("/consent?")));

    // prompt=consent always asks; prompt=login and max_age=0 always sign in again.
    let consent = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("prompt", "consent")]);
    assert!(browser.get(&server, &consent).await?.location.is_some_and(|l| l.contains("/consent?")));
    let login = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("prompt", "login")]);
    assert!(browser.get(&server, &login).await?.location.is_some_and(|l| l.contains("/login?")));
    server.clock.advance(5);
    let max_age = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("max_age", "2")]);
    assert!(browser.get(&server, &max_age).await?.location.is_some_and(|l| l.contains("/login?")));
    let fresh_enough = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("max_age", "3600")]);
    assert!(browser.get(&server, &fresh_enough).await?.location.is_some_and(|l| l.contains("code=")));

    // prompt=login is satisfied by signing in after the request began.
    let relogin = authorize_as_alice(&server, &mut browser, &login, &[]).await?;
    assert!(relogin.contains("code="));

    // prompt=none: fine while signed in and consented, an error otherwise.
    let none = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("prompt", "none")]);
    assert!(browser.get(&server, &none).await?.location.is_some_and(|l| l.contains("code=")));
    let none_wider = authorize_url(
        &server,
        PUBLIC_CLIENT,
        PUBLIC_REDIRECT,
        &challenge,
        &[("prompt", "none"), ("scope", "crm.contacts.export")],
    );
    assert_error_redirect(&server, &browser.get(&server, &none_wider).await?, PUBLIC_REDIRECT, "consent_required");
    let mut stranger = Browser::default();
    assert_error_redirect(&server, &stranger.get(&server, &none).await?, PUBLIC_REDIRECT, "login_required");
    let bad_combo = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("prompt", "none login")]);
    assert_error_redirect(&server, &stranger.get(&server, &bad_combo).await?, PUBLIC_REDIRECT, "invalid_request");

    // Revoked consent asks again.
    server.control()?.revoke_consent(&Actor::Operator, &server.alice_id, PUBLIC_CLIENT, &server.resource).await?;
    assert!(browser.get(&server, &url).await?.location.is_some_and(|l| l.contains("/consent?")));
    Ok(())
}

#[tokio::test]
async fn untrusted_client_or_redirect_uri_gets_an_error_page_never_a_redirect() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let unknown = authorize_url(&server, "no-such-client", PUBLIC_REDIRECT, &challenge, &[]);
    assert_error_page(&browser.get(&server, &unknown).await?, "invalid_client");
    let missing_client = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("client_id", "")]);
    assert_error_page(&browser.get(&server, &missing_client).await?, "invalid_request");
    // RFC 9700 §4.1: every manipulation of a registered https redirect URI is refused.
    for bad in [
        "https://app.example.test/cb/../x",
        "https://app.example.test/cb?x=1",
        "https://app.example.test/CB",
        "https://app.example.test/cb/",
        "https://app.example.test/cb%2f",
        "https://app.example.test@evil.test/cb",
        "https://evil.test/cb",
        "https://app.example.test:8443/cb",
        "https://app.example.test/cb#x",
        "http://app.example.test/cb",
    ] {
        let url = authorize_url(&server, CONFIDENTIAL_CLIENT, bad, &challenge, &[]);
        assert_error_page(&browser.get(&server, &url).await?, "invalid_request");
    }
    // Loopback redirect URIs accept any port (RFC 8252 §7.3), but nothing else may change.
    let any_port = authorize_url(&server, PUBLIC_CLIENT, "http://127.0.0.1:51234/callback", &challenge, &[]);
    assert!(browser.get(&server, &any_port).await?.location.is_some_and(|l| l.contains("/login?")));
    for bad in
        ["http://127.0.0.1:51234/callback/x", "http://127.0.0.2:51234/callback", "http://127.0.0.1:51234/callback?a=b"]
    {
        let url = authorize_url(&server, PUBLIC_CLIENT, bad, &challenge, &[]);
        assert_error_page(&browser.get(&server, &url).await?, "invalid_request");
    }
    // A suspended client is refused with a page too.
    server.control()?.suspend_client(&Actor::Operator, PUBLIC_CLIENT).await?;
    let suspended = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    assert_error_page(&browser.get(&server, &suspended).await?, "unauthorized_client");
    Ok(())
}

/// The MCP specification lets a client that found no `scopes_supported` leave `scope` out
/// (the conformance suite's authorization mode does): the user is offered the resource's
/// default scopes and can untick any of them.
#[tokio::test]
async fn a_request_without_scope_is_offered_the_default_scopes() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("scope", "")]);
    let consent = sign_in_to_consent(&server, &mut browser, &url).await?;
    assert_eq!(consent.status, 200, "{}", consent.body);
    let offered: Vec<&str> = consent
        .body
        .match_indices("name=\"scope\" value=\"")
        .filter_map(|(i, m)| {
            let rest = consent.body.get(i + m.len()..)?;
            rest.get(..rest.find('"')?)
        })
        .collect();
    assert_eq!(offered, ["crm.contacts.read", "crm.deals.write"], "the configured defaults, never the export");
    let location =
        browser.consent(&server, &consent, &["crm.contacts.read"], "approve").await?.location.ok_or("redirect")?;
    let (status, tokens) = redeem(&server, &location, &verifier).await?;
    assert_eq!((status, tokens["scope"].as_str()), (200, Some("crm.contacts.read")), "{tokens}");

    Ok(())
}

#[tokio::test]
async fn request_errors_go_back_to_the_client_with_state_and_iss() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "too-short")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("response_type", "code id_token")], "unsupported_response_type"),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("resource", "https://unknown.example.test/mcp")], "invalid_target"),
        (vec![("scope", "crm.contacts.read admin.everything")], "invalid_scope"),
        (vec![("prompt", "bogus")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "invalid_request"),
        (vec![("response_mode", "fragment")], "invalid_request"),
    ];
    for (extra, error) in cases {
        let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &extra);
        let page = browser.get(&server, &url).await?;
        assert_error_redirect(&server, &page, PUBLIC_REDIRECT, error);
    }
    // A resource the client is not allowed (the public client is limited to the CRM).
    let other = authorize_url(
        &server,
        PUBLIC_CLIENT,
        PUBLIC_REDIRECT,
        &challenge,
        &[("resource", &server.other_resource), ("scope", "billing.read")],
    );
    assert_error_redirect(&server, &browser.get(&server, &other).await?, PUBLIC_REDIRECT, "invalid_target");
    // Two resources at once.
    let two = format!(
        "{}&resource={}",
        authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]),
        server.other_resource
    );
    assert_error_redirect(&server, &browser.get(&server, &two).await?, PUBLIC_REDIRECT, "invalid_target");
    // A duplicated parameter is malformed: with the client unverified, only a page can say so.
    let dup = format!(
        "{}&client_id={PUBLIC_CLIENT}",
        authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[])
    );
    assert_error_page(&browser.get(&server, &dup).await?, "invalid_request");
    // The user denying consent is access_denied.
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let consent = sign_in_to_consent(&server, &mut browser, &url).await?;
    let denied = browser.consent(&server, &consent, &["crm.contacts.read"], "deny").await?;
    assert_error_redirect(&server, &denied, PUBLIC_REDIRECT, "access_denied");
    // Ticking nothing is a denial too, and the parked request is gone afterwards.
    let replay = browser.consent(&server, &consent, &["crm.contacts.read"], "approve").await?;
    assert_eq!(replay.status, 400, "a completed request cannot be answered twice");
    assert!(replay.location.is_none());
    Ok(())
}

#[tokio::test]
async fn sign_in_failures_look_the_same_and_are_rate_limited() -> TestResult {
    let server = TestServer::start_with(Options { per_account_per_minute: 3, ..Options::default() }).await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let login_url = browser.get(&server, &url).await?.location.ok_or("login")?;

    let wrong_password = browser.login(&server, &login_url, "alice", "wrong password").await?;
    let no_such_user = browser.login(&server, &login_url, "mallory", "wrong password").await?;
    assert_eq!((wrong_password.status, no_such_user.status), (303, 303));
    let error_of = |p: &Page| {
        query(&server.url(p.location.as_deref().unwrap_or_default())).ok().and_then(|q| q.get("error").cloned())
    };
    assert_eq!(error_of(&wrong_password).as_deref(), Some("invalid"));
    assert_eq!(error_of(&no_such_user).as_deref(), Some("invalid"));
    let shown = browser.get(&server, wrong_password.location.as_deref().ok_or("back")?).await?;
    assert_eq!(shown.status, 401);
    assert!(shown.body.contains("The username or password is incorrect."));
    assert!(!browser.cookies.keys().any(|k| k.contains("session")), "no session after failures");

    // The fourth attempt on the account within a minute is refused, even with the right password.
    browser.login(&server, &login_url, "alice", "wrong again").await?;
    browser.login(&server, &login_url, "alice", "and again").await?;
    let limited = browser.login(&server, &login_url, "alice", PASSWORD).await?;
    assert_eq!(error_of(&limited).as_deref(), Some("limited"));
    // Other accounts are unaffected.
    let other = browser.login(&server, &login_url, "bob", "whatever").await?;
    assert_eq!(error_of(&other).as_deref(), Some("invalid"));

    // A disabled user cannot sign in, and it looks like a wrong password.
    server.control()?.disable_user(&Actor::Operator, "alice").await?;
    let fresh = TestServer::start().await?;
    fresh.control()?.disable_user(&Actor::Operator, "alice").await?;
    let mut b = Browser::default();
    let login_url = b
        .get(&fresh, &authorize_url(&fresh, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]))
        .await?
        .location
        .ok_or("login")?;
    let disabled = b.login(&fresh, &login_url, "alice", PASSWORD).await?;
    assert_eq!(error_of(&disabled).as_deref(), Some("invalid"));

    // The user sees one message; the audit trail says what it was, and from where.
    let failures = |server: &TestServer| {
        let filter = portcullis_store::AuditFilter {
            kinds: vec![portcullis_store::AuditKind::SignInFailed],
            ..Default::default()
        };
        let store = server.store().cloned();
        async move { Ok::<_, Box<dyn std::error::Error>>(store?.audit_events(None, 100, &filter).await?) }
    };
    let reasons: Vec<(Option<String>, Option<String>, Option<String>)> = failures(&server)
        .await?
        .into_iter()
        .map(|r| (r.event.username, r.event.reason, r.event.source_address))
        .collect();
    let local = Some("127.0.0.1".to_owned());
    assert_eq!(
        reasons[..2],
        [
            (Some("alice".into()), Some("wrong password".into()), local.clone()),
            (Some("mallory".into()), Some("no such user".into()), local.clone())
        ]
    );
    assert_eq!(reasons.len(), 5, "rate-limited attempts are not checked, so not recorded: {reasons:?}");
    let disabled = failures(&fresh).await?;
    assert_eq!(disabled.first().and_then(|r| r.event.reason.clone()).as_deref(), Some("the account is disabled"));
    assert_eq!(disabled.first().and_then(|r| r.event.actor.clone()).map(|a| a.starts_with("user:")), Some(true));
    Ok(())
}

#[tokio::test]
async fn sign_ins_are_rate_limited_per_source_address_across_accounts() -> TestResult {
    let server = TestServer::start_with(Options { per_address_per_minute: 4, ..Options::default() }).await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let login_url = browser.get(&server, &url).await?.location.ok_or("login")?;
    let error_of = |p: &Page| {
        query(&server.url(p.location.as_deref().unwrap_or_default())).ok().and_then(|q| q.get("error").cloned())
    };
    // Spraying one password over many accounts from one address: four tries, then refused.
    for name in ["u1", "u2", "u3", "u4"] {
        let page = browser.login(&server, &login_url, name, "Winter2026!").await?;
        assert_eq!(error_of(&page).as_deref(), Some("invalid"), "{name}");
    }
    let limited = browser.login(&server, &login_url, "alice", PASSWORD).await?;
    assert_eq!(error_of(&limited).as_deref(), Some("limited"));
    assert!(!limited.location.as_deref().unwrap_or_default().contains("alice"), "no username in the URL");
    let shown = browser.get(&server, limited.location.as_deref().ok_or("back")?).await?;
    assert!(shown.body.contains("Too many sign-in attempts"));
    Ok(())
}
