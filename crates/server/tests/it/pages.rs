//! Page hygiene: security headers, CSRF, 303 after POST, CORS.

use crate::harness::*;

#[tokio::test]
async fn every_page_carries_the_security_headers() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let redirect = browser.get(&server, &url).await?;
    let login = browser.get(&server, redirect.location.as_deref().ok_or("login")?).await?;
    let error = browser.get(&server, &authorize_url(&server, "nobody", PUBLIC_REDIRECT, &challenge, &[])).await?;
    let home = browser.get(&server, &server.url("/")).await?;
    for page in [&redirect, &login, &error, &home] {
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    }
    for page in [&login, &error, &home] {
        assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
        assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    }
    // Cookies: HttpOnly, SameSite=Lax (no Secure on a loopback http issuer).
    let set_cookie = login.header("set-cookie").ok_or("login page sets the browser cookie")?;
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax") && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    Ok(())
}

#[tokio::test]
async fn forms_are_csrf_protected_and_answer_303() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let login_url = browser.get(&server, &url).await?.location.ok_or("login")?;
    let page = browser.get(&server, &login_url).await?;
    let request = page.input("request").ok_or("request")?;
    let csrf = page.input("csrf").ok_or("csrf")?;

    // No token, a wrong token, a token from another browser, a foreign Origin: all 403.
    let no_token = browser
        .post(&server, "/login", &[("request", &request), ("username", "alice"), ("password", PASSWORD)])
        .await?;
    assert_eq!(no_token.status, 403);
    let wrong = browser
        .post(
            &server,
            "/login",
            &[("request", &request), ("csrf", "AAAA"), ("username", "alice"), ("password", PASSWORD)],
        )
        .await?;
    assert_eq!(wrong.status, 403);
    let mut other = Browser::default();
    let other_page = other.get(&server, &login_url).await?;
    let other_csrf = other_page.input("csrf").ok_or("csrf")?;
    let swapped = browser
        .post(
            &server,
            "/login",
            &[("request", &request), ("csrf", &other_csrf), ("username", "alice"), ("password", PASSWORD)],
        )
        .await?;
    assert_eq!(swapped.status, 403);
    let foreign = server
        .http
        .post(server.url("/login"))
        .header("cookie", browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
        .header("origin", "https://evil.example.test")
        .form(&[("request", request.as_str()), ("csrf", csrf.as_str()), ("username", "alice"), ("password", PASSWORD)])
        .send()
        .await?;
    assert_eq!(foreign.status(), 403);
    let cross_site = server
        .http
        .post(server.url("/login"))
        .header("cookie", browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
        .header("sec-fetch-site", "cross-site")
        .form(&[("request", request.as_str()), ("csrf", csrf.as_str()), ("username", "alice"), ("password", PASSWORD)])
        .send()
        .await?;
    assert_eq!(cross_site.status(), 403);
    let same_site = server
        .http
        .post(server.url("/login"))
        .header("cookie", browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
        .header("sec-fetch-site", "same-site")
        .header("origin", "null")
        .form(&[("request", request.as_str()), ("csrf", csrf.as_str()), ("username", "alice"), ("password", PASSWORD)])
        .send()
        .await?;
    assert_eq!(same_site.status(), 403, "another port of this host is another origin");
    assert!(!browser.cookies.keys().any(|k| k.contains("session")), "none of those signed anyone in");

    // The real thing: 303 (never 307), with the session cookie.
    let ok = browser
        .post(
            &server,
            "/login",
            &[("request", &request), ("csrf", &csrf), ("username", "alice"), ("password", PASSWORD)],
        )
        .await?;
    assert_eq!(ok.status, 303);
    assert!(browser.cookies.contains_key("portcullis_session"));
    let set_cookie = ok.header("set-cookie").ok_or("session cookie")?;
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));

    // Sign-out is a CSRF-checked POST with 303, and ends the session server-side.
    let home = browser.get(&server, &server.url("/")).await?;
    assert!(home.body.contains("Signed in as"));
    let logout_csrf = home.input("csrf").ok_or("csrf")?;
    let session = browser.cookies.get("portcullis_session").cloned().ok_or("session")?;
    let out = browser.post(&server, "/logout", &[("csrf", &logout_csrf)]).await?;
    assert_eq!(out.status, 303);
    let mut replay = Browser::default();
    replay.cookies.insert("portcullis_session".into(), session);
    assert!(!replay.get(&server, &server.url("/")).await?.body.contains("Signed in as"), "the old cookie is dead");
    Ok(())
}

#[tokio::test]
async fn cors_is_open_for_token_metadata_and_jwks_but_not_authorize() -> TestResult {
    let server = TestServer::start().await?;
    let preflight = |path: &str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", "https://inspector.example.test")
            .header("access-control-request-method", "POST")
            .send()
    };
    for path in ["/token", "/revoke", "/introspect", "/jwks.json", "/.well-known/oauth-authorization-server"] {
        let r = preflight(path).await?;
        assert_eq!(r.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("*"), "{path}");
    }
    for path in ["/authorize", "/login", "/consent"] {
        let r = preflight(path).await?;
        assert!(r.headers().get("access-control-allow-origin").is_none(), "{path} must not allow CORS");
    }
    Ok(())
}

#[tokio::test]
async fn an_https_issuer_gets_host_prefixed_secure_cookies_and_hsts() -> TestResult {
    let server = TestServer::start_with(Options { https: true, ..Options::default() }).await?;
    let (_, challenge) = pkce()?;
    let url =
        authorize_url(&server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]).replacen("https://", "http://", 1);
    let mut browser = Browser::default();
    let redirect = browser.get(&server, &url).await?;
    let login = browser.get(&server, &server.url(&redirect.location.ok_or("login")?)).await?;
    assert_eq!(login.status, 200, "{}", login.body);
    let cookie = login.header("set-cookie").ok_or("cookie")?;
    assert!(cookie.starts_with("__Host-portcullis_browser="), "{cookie}");
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Domain"), "__Host- cookies carry no Domain");
    assert_eq!(login.header("strict-transport-security"), Some("max-age=31536000"));
    Ok(())
}

/// The upstream accounts a user connected are on their account page, without their tokens,
/// and a click forgets one; another user's, or another route's, stay.
#[tokio::test]
async fn users_see_and_disconnect_their_upstream_accounts() -> TestResult {
    let server = TestServer::start().await?;
    let control = server.control()?;
    let bob = control
        .add_user(
            &Actor::Operator,
            NewUser { username: "bob".into(), display_name: None, email: None, password_hash: None, is_admin: false },
        )
        .await?;
    for (user_id, route) in [(&server.alice_id, "github"), (&server.alice_id, "linear"), (&bob.id, "github")] {
        let connection = portcullis_control::UpstreamConnection {
            user_id: user_id.clone(),
            route: route.into(),
            issuer: format!("https://{route}.example/oauth"),
            subject: Some(format!("{route}-account")),
            scope: portcullis_types::ScopeSet::parse("repo")?,
            tokens_sealed: b"sealed, never shown".to_vec(),
            access_expires_at: None,
        };
        control.connect_upstream(&Actor::Operator, connection).await?;
    }
    let mut browser = Browser::default();
    let login = browser.login(&server, "/login", "alice", PASSWORD).await?;
    assert_eq!(login.status, 303);
    let page = browser.get(&server, &server.url("/account")).await?;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Accounts you connected") && page.body.contains("github-account"), "{}", page.body);
    assert!(page.body.contains("https://linear.example/oauth") && !page.body.contains("sealed"), "{}", page.body);
    let csrf = page.input("csrf").ok_or("csrf")?;
    // Without the form token, nothing happens.
    let forged = browser.post(&server, "/account/upstreams/disconnect", &[("route", "github")]).await?;
    assert_eq!(forged.status, 403);
    assert!(server.store()?.find_upstream_credential(&server.alice_id, "github").await?.is_some());
    let done = browser.post(&server, "/account/upstreams/disconnect", &[("csrf", &csrf), ("route", "github")]).await?;
    assert_eq!((done.status, done.location.as_deref()), (303, Some("/account")));
    let store = server.store()?;
    assert!(store.find_upstream_credential(&server.alice_id, "github").await?.is_none());
    assert!(store.find_upstream_credential(&server.alice_id, "linear").await?.is_some(), "her other account stays");
    assert!(store.find_upstream_credential(&bob.id, "github").await?.is_some(), "bob's stays");
    let filter = portcullis_store::AuditFilter {
        kinds: vec![portcullis_store::AuditKind::UpstreamDisconnected],
        ..Default::default()
    };
    let recorded = store.audit_events(None, 10, &filter).await?;
    assert!(
        recorded.iter().any(|e| e.event.user_id.as_deref() == Some(server.alice_id.as_str())
            && e.event.route.as_deref() == Some("github")
            && e.event.actor.as_deref() == Some(format!("user:{}", server.alice_id).as_str())),
        "{recorded:?}"
    );
    Ok(())
}

#[tokio::test]
async fn users_see_and_revoke_their_consents_on_the_account_page() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let tokens = tokens_for_alice(&server, &mut browser).await?;
    let access = tokens["access_token"].as_str().ok_or("at")?.to_owned();
    let page = browser.get(&server, &server.url("/account")).await?;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Desktop &#60;Agent&#62;") && page.body.contains("Read your CRM contacts"),
        "{}",
        page.body
    );
    let csrf = page.input("csrf").ok_or("csrf")?;
    let revoked = browser
        .post(
            &server,
            "/account/consents/revoke",
            &[("csrf", &csrf), ("client_id", PUBLIC_CLIENT), ("resource", &server.resource)],
        )
        .await?;
    assert_eq!(revoked.status, 303);
    assert!(server.store()?.find_consent(&server.alice_id, PUBLIC_CLIENT, &server.resource).await?.is_none());
    assert_eq!(server.introspect(&access).await?["active"], false, "revoking consent revokes its grants");
    assert!(browser.get(&server, &server.url("/account")).await?.body.contains("not allowed any agent"));
    // Without a session the account page sends you to sign in, and that sign-in comes back here.
    let mut stranger = Browser::default();
    let to_login = stranger.get(&server, &server.url("/account")).await?;
    assert_eq!(to_login.location.as_deref(), Some("/login"));
    let signed_in = stranger.login(&server, "/login", "alice", PASSWORD).await?;
    assert_eq!(signed_in.location.as_deref(), Some("/account"));
    Ok(())
}

#[tokio::test]
async fn forged_host_and_forwarded_headers_do_not_change_the_issuer() -> TestResult {
    let server = TestServer::start().await?;
    let response = server
        .http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .header("host", "evil.example.test")
        .header("x-forwarded-host", "evil.example.test")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "host=evil.example.test;proto=https")
        .send()
        .await?;
    let metadata: serde_json::Value = response.json().await?;
    assert_eq!(metadata["issuer"], server.issuer.as_str());
    assert_eq!(metadata["authorization_endpoint"], server.url("/authorize"));
    Ok(())
}

#[tokio::test]
async fn signing_in_again_replaces_the_session() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    browser.login(&server, "/login", "alice", PASSWORD).await?;
    let first = browser.cookies.get("portcullis_session").cloned().ok_or("session")?;
    browser.login(&server, "/login", "alice", PASSWORD).await?;
    let second = browser.cookies.get("portcullis_session").cloned().ok_or("session")?;
    assert_ne!(first, second, "a fresh session id on every sign-in");
    let mut old = Browser::default();
    old.cookies.insert("portcullis_session".into(), first);
    assert!(!old.get(&server, &server.url("/")).await?.body.contains("Signed in as"), "the previous session ended");
    Ok(())
}
