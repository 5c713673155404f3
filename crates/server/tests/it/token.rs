//! The token endpoint, introspection and revocation.

use crate::harness::*;

#[track_caller]
fn assert_oauth_error(result: &(u16, serde_json::Value), status: u16, error: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["error"], error, "{}", result.1);
    assert!(result.1["error_description"].as_str().is_some_and(|d| !d.is_empty()));
}

async fn code_for_alice(server: &TestServer, browser: &mut Browser, challenge: &str) -> AnyResult<String> {
    let url = authorize_url(server, PUBLIC_CLIENT, PUBLIC_REDIRECT, challenge, &[]);
    let location = authorize_as_alice(server, browser, &url, &["crm.contacts.read", "crm.deals.write"]).await?;
    Ok(query(&location)?.get("code").cloned().ok_or("no code")?)
}

#[tokio::test]
async fn access_tokens_are_rfc9068_jwts_with_no_store() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let code = code_for_alice(&server, &mut browser, &challenge).await?;
    let response = server
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", PUBLIC_CLIENT),
                ("code", &code),
                ("code_verifier", &verifier),
            ],
        )
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["expires_in"], 300);
    let token = body["access_token"].as_str().ok_or("at")?;

    // Verify with the published key, as a resource server would.
    let jwks: serde_json::Value = server.http.get(server.url("/jwks.json")).send().await?.json().await?;
    let header = jsonwebtoken::decode_header(token)?;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = &jwks["keys"][0];
    assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
    let key =
        jsonwebtoken::DecodingKey::from_ec_components(jwk["x"].as_str().ok_or("x")?, jwk["y"].as_str().ok_or("y")?)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[&server.resource]);
    validation.set_issuer(&[&server.issuer]);
    validation.validate_exp = false; // the test clock is in the future
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)?.claims;
    assert_eq!(claims["sub"], server.alice_id.as_str());
    assert_eq!(claims["client_id"], PUBLIC_CLIENT);
    assert_eq!(claims["scope"], "crm.contacts.read crm.deals.write");
    assert_eq!(claims["exp"].as_i64(), Some(server.clock.now() + 300));
    assert_eq!(claims["iat"].as_i64(), Some(server.clock.now()));
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
    Ok(())
}

#[tokio::test]
async fn pkce_is_enforced_and_codes_are_single_use() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let code = code_for_alice(&server, &mut browser, &challenge).await?;
    let server = &server;
    let redeem = |verifier: Option<&str>, extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> =
            vec![("grant_type", "authorization_code"), ("client_id", PUBLIC_CLIENT), ("code", &code)]
                .into_iter()
                .map(|(k, v)| (k, v.to_owned()))
                .collect();
        if let Some(v) = verifier {
            form.push(("code_verifier", v.to_owned()));
        }
        form.extend(extra);
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server.token(&pairs).await
        }
    };
    // Wrong, missing and malformed verifiers; a changed redirect_uri or resource.
    let (other_verifier, _) = pkce()?;
    assert_oauth_error(&redeem(Some(&other_verifier), vec![]).await?, 400, "invalid_grant");
    assert_oauth_error(&redeem(None, vec![]).await?, 400, "invalid_grant");
    assert_oauth_error(&redeem(Some("short"), vec![]).await?, 400, "invalid_grant");
    assert_oauth_error(
        &redeem(Some(&verifier), vec![("redirect_uri", "http://127.0.0.1/other".into())]).await?,
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &redeem(Some(&verifier), vec![("resource", server.other_resource.clone())]).await?,
        400,
        "invalid_target",
    );
    // Another client cannot redeem it.
    assert_oauth_error(
        &server.token(&[("grant_type", "authorization_code"), ("code", &code), ("code_verifier", &verifier)]).await?,
        401,
        "invalid_client",
    );
    // The failed attempts did not burn the code; the right verifier works once.
    let first = redeem(Some(&verifier), vec![("resource", server.resource.clone())]).await?;
    assert_eq!(first.0, 200, "{}", first.1);
    let access = first.1["access_token"].as_str().ok_or("at")?.to_owned();
    let refresh = first.1["refresh_token"].as_str().ok_or("rt")?.to_owned();
    assert_eq!(server.introspect(&access).await?["active"], true);

    // Replay: refused, and everything the first redemption issued is revoked (RFC 9700 §4.5).
    assert_oauth_error(&redeem(Some(&verifier), vec![]).await?, 400, "invalid_grant");
    assert_eq!(server.introspect(&access).await?, serde_json::json!({"active": false}));
    assert_oauth_error(
        &server
            .token(&[("grant_type", "refresh_token"), ("client_id", PUBLIC_CLIENT), ("refresh_token", &refresh)])
            .await?,
        400,
        "invalid_grant",
    );

    // Codes expire.
    let (verifier2, challenge2) = pkce()?;
    let code2 = code_for_alice(server, &mut browser, &challenge2).await?;
    server.clock.advance(61);
    assert_oauth_error(
        &server
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", PUBLIC_CLIENT),
                ("code", &code2),
                ("code_verifier", &verifier2),
            ])
            .await?,
        400,
        "invalid_grant",
    );
    Ok(())
}

#[tokio::test]
async fn refresh_rotates_never_widens_and_reuse_revokes_the_family() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let tokens = tokens_for_alice(&server, &mut browser).await?;
    let rt1 = tokens["refresh_token"].as_str().ok_or("rt")?.to_owned();
    let server = &server;
    let refresh = |rt: String, extra: Vec<(&'static str, String)>| async move {
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", PUBLIC_CLIENT.to_owned()),
            ("refresh_token", rt),
        ];
        form.extend(extra);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.token(&pairs).await
    };
    // No widening of scope or resource, and these refusals do not spend the token.
    assert_oauth_error(
        &refresh(rt1.clone(), vec![("scope", "crm.contacts.read crm.contacts.export".into())]).await?,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &refresh(rt1.clone(), vec![("resource", server.other_resource.clone())]).await?,
        400,
        "invalid_target",
    );
    // Narrowing is allowed.
    let narrowed =
        refresh(rt1.clone(), vec![("scope", "crm.contacts.read".into()), ("resource", server.resource.clone())])
            .await?;
    assert_eq!(narrowed.0, 200, "{}", narrowed.1);
    assert_eq!(narrowed.1["scope"], "crm.contacts.read");
    let rt2 = narrowed.1["refresh_token"].as_str().ok_or("rt2")?.to_owned();
    assert_ne!(rt1, rt2, "rotation on every use");
    // The family keeps the full grant: the next refresh may ask for both scopes again.
    let full = refresh(rt2.clone(), vec![]).await?;
    assert_eq!(full.1["scope"], "crm.contacts.read crm.deals.write", "{}", full.1);
    let rt3 = full.1["refresh_token"].as_str().ok_or("rt3")?.to_owned();
    let at3 = full.1["access_token"].as_str().ok_or("at3")?.to_owned();

    // Reuse of rt1: refused, and the whole family (rt3, at3) dies.
    assert_oauth_error(&refresh(rt1.clone(), vec![]).await?, 400, "invalid_grant");
    assert_oauth_error(&refresh(rt3.clone(), vec![]).await?, 400, "invalid_grant");
    assert_eq!(server.introspect(&at3).await?["active"], false);
    let grants = server.store()?.list_grants(Some(PUBLIC_CLIENT), None).await?;
    assert_eq!(grants.first().and_then(|g| g.revoked_reason.clone()).as_deref(), Some("refresh token reused"));

    // Another client's refresh token, and garbage.
    let other = tokens_for_alice(server, &mut browser).await?;
    let other_rt = other["refresh_token"].as_str().ok_or("rt")?;
    let stolen = server
        .http
        .post(server.url("/token"))
        .basic_auth(CONFIDENTIAL_CLIENT, Some(CONFIDENTIAL_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", other_rt)])
        .send()
        .await?;
    let stolen = (stolen.status().as_u16(), stolen.json::<serde_json::Value>().await?);
    assert_oauth_error(&stolen, 400, "invalid_grant");
    assert_eq!(refresh(other_rt.to_owned(), vec![]).await?.0, 200, "the owner's token was not burnt by the thief");
    assert_oauth_error(&refresh("not-a-token".into(), vec![]).await?, 400, "invalid_grant");
    // Refresh tokens expire with their lifetime.
    let last = tokens_for_alice(server, &mut browser).await?;
    server.clock.advance(31 * 24 * 3600);
    assert_oauth_error(
        &refresh(last["refresh_token"].as_str().ok_or("rt")?.to_owned(), vec![]).await?,
        400,
        "invalid_grant",
    );
    Ok(())
}

#[tokio::test]
async fn client_authentication_and_grant_errors() -> TestResult {
    let server = TestServer::start().await?;
    // client_credentials with Basic and with post.
    let basic = server
        .http
        .post(server.url("/token"))
        .basic_auth(MACHINE_CLIENT, Some(MACHINE_SECRET))
        .form(&[("grant_type", "client_credentials"), ("resource", &server.resource)])
        .send()
        .await?;
    assert_eq!(basic.status(), 200);
    let body: serde_json::Value = basic.json().await?;
    assert_eq!(body["scope"], "crm.contacts.read", "defaults to what the client is allowed");
    assert!(body.get("refresh_token").is_none());
    let post = server
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
            ("scope", "crm.contacts.read"),
        ])
        .await?;
    assert_eq!(post.0, 200, "{}", post.1);
    let info = server
        .introspect_as(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, post.1["access_token"].as_str().ok_or("at")?)
        .await?;
    assert_eq!(info, serde_json::json!({"active": false}), "another client may not introspect this token");
    let own: serde_json::Value = server
        .http
        .post(server.url("/introspect"))
        .basic_auth(MACHINE_CLIENT, Some(MACHINE_SECRET))
        .form(&[("token", post.1["access_token"].as_str().ok_or("at")?)])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (own["active"].clone(), own["sub"].clone()),
        (serde_json::json!(true), serde_json::json!(MACHINE_CLIENT))
    );

    let server = &server;
    let cc = |form: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.token(&pairs).await
    };
    let m = |extra: &[(&'static str, &str)]| {
        let mut v = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", MACHINE_CLIENT.to_owned()),
            ("client_secret", MACHINE_SECRET.to_owned()),
        ];
        v.extend(extra.iter().map(|(k, s)| (*k, (*s).to_owned())));
        v
    };
    assert_oauth_error(&cc(m(&[("scope", "crm.deals.write")])).await?, 400, "invalid_scope");
    assert_oauth_error(&cc(m(&[("resource", "https://elsewhere.test/mcp")])).await?, 400, "invalid_target");
    let mut wrong = m(&[]);
    wrong[2].1 = "wrong-secret".into();
    assert_oauth_error(&cc(wrong).await?, 401, "invalid_client");
    let mut missing = m(&[]);
    missing.truncate(2);
    assert_oauth_error(&cc(missing).await?, 401, "invalid_client");
    // Both Basic and a body secret.
    let both = server
        .http
        .post(server.url("/token"))
        .basic_auth(MACHINE_CLIENT, Some(MACHINE_SECRET))
        .form(&[("grant_type", "client_credentials"), ("client_secret", MACHINE_SECRET)])
        .send()
        .await?;
    assert_eq!(both.status(), 400);
    // Public clients cannot use client credentials; a client not allowed a grant is told so.
    assert_oauth_error(
        &cc(vec![("grant_type", "client_credentials".into()), ("client_id", PUBLIC_CLIENT.into())]).await?,
        400,
        "unauthorized_client",
    );
    assert_oauth_error(
        &cc(m(&[])
            .into_iter()
            .map(|(k, v)| if k == "grant_type" { (k, "refresh_token".into()) } else { (k, v) })
            .chain([("refresh_token", "x".to_owned())])
            .collect())
        .await?,
        400,
        "unauthorized_client",
    );
    // Unsupported and missing grants, duplicated parameters, wrong media type.
    for grant in ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"] {
        assert_oauth_error(
            &cc(vec![("grant_type", grant.into()), ("client_id", PUBLIC_CLIENT.into())]).await?,
            400,
            "unsupported_grant_type",
        );
    }
    assert_oauth_error(&cc(vec![("client_id", PUBLIC_CLIENT.into())]).await?, 400, "invalid_request");
    assert_oauth_error(
        &cc(vec![("grant_type", "client_credentials".into()), ("grant_type", "client_credentials".into())]).await?,
        400,
        "invalid_request",
    );
    let json = server
        .http
        .post(server.url("/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await?;
    assert_eq!(json.status(), 400);
    let body: serde_json::Value = json.json().await?;
    assert_eq!(body["error"], "invalid_request");
    // A suspended client is refused, and its tokens stop working at once.
    let live = post.1["access_token"].as_str().ok_or("at")?.to_owned();
    server.control()?.suspend_client(&Actor::Operator, MACHINE_CLIENT).await?;
    assert_oauth_error(&cc(m(&[])).await?, 401, "invalid_client");
    let after: serde_json::Value = server
        .http
        .post(server.url("/introspect"))
        .basic_auth(RESOURCE_SERVER, Some(RESOURCE_SERVER_SECRET))
        .form(&[("token", live.as_str())])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(after["active"], false);
    Ok(())
}

#[tokio::test]
async fn introspection_and_revocation() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let tokens = tokens_for_alice(&server, &mut browser).await?;
    let at = tokens["access_token"].as_str().ok_or("at")?.to_owned();
    let rt = tokens["refresh_token"].as_str().ok_or("rt")?.to_owned();

    // Introspection needs an authenticated confidential client.
    let anonymous = server.post_form("/introspect", &[("token", &at)]).await?;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let public = server.post_form("/introspect", &[("token", &at), ("client_id", PUBLIC_CLIENT)]).await?;
    assert_eq!(public.status(), 401);
    let missing = server
        .http
        .post(server.url("/introspect"))
        .basic_auth(CONFIDENTIAL_CLIENT, Some(CONFIDENTIAL_SECRET))
        .form(&[("x", "y")])
        .send()
        .await?;
    assert_eq!(missing.status(), 400);

    // The public client's token is not the web app's to see, only a resource server's.
    assert_eq!(
        server.introspect_as(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, &at).await?,
        serde_json::json!({"active": false})
    );
    let info = server.introspect(&at).await?;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], PUBLIC_CLIENT);
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(server.introspect(&rt).await?["token_type"], "refresh_token");
    for garbage in ["garbage", "a.b.c", &format!("{at}x")] {
        assert_eq!(server.introspect(garbage).await?, serde_json::json!({"active": false}));
    }

    // Disabling the user makes the token inactive at once; enabling restores it.
    server.control()?.disable_user(&Actor::Operator, "alice").await?;
    assert_eq!(server.introspect(&at).await?["active"], false);
    assert_eq!(server.introspect(&rt).await?["active"], false);
    server.control()?.enable_user(&Actor::Operator, "alice").await?;
    assert_eq!(server.introspect(&at).await?["active"], true);
    // Expiry by the clock.
    server.clock.advance(301);
    assert_eq!(server.introspect(&at).await?["active"], false);

    // Revocation: public clients identify with client_id; unknown tokens are still 200.
    let fresh = tokens_for_alice(&server, &mut browser).await?;
    let at2 = fresh["access_token"].as_str().ok_or("at")?.to_owned();
    let rt2 = fresh["refresh_token"].as_str().ok_or("rt")?.to_owned();
    assert_eq!(server.post_form("/revoke", &[("token", "unknown"), ("client_id", PUBLIC_CLIENT)]).await?.status(), 200);
    assert_eq!(server.post_form("/revoke", &[("token", &at2)]).await?.status(), 401);
    // Another client cannot revoke it (200, but nothing happens).
    let by_other = server
        .http
        .post(server.url("/revoke"))
        .basic_auth(CONFIDENTIAL_CLIENT, Some(CONFIDENTIAL_SECRET))
        .form(&[("token", at2.as_str())])
        .send()
        .await?;
    assert_eq!(by_other.status(), 200);
    assert_eq!(server.introspect(&at2).await?["active"], true);
    assert_eq!(
        server
            .post_form("/revoke", &[("token", &at2), ("client_id", PUBLIC_CLIENT), ("token_type_hint", "access_token")])
            .await?
            .status(),
        200
    );
    assert_eq!(server.introspect(&at2).await?["active"], false);
    assert_eq!(server.introspect(&rt2).await?["active"], true, "revoking an access token leaves the refresh token");
    // Revoking the refresh token revokes the grant.
    let fresh = tokens_for_alice(&server, &mut browser).await?;
    let at3 = fresh["access_token"].as_str().ok_or("at")?;
    let rt3 = fresh["refresh_token"].as_str().ok_or("rt")?;
    assert_eq!(server.post_form("/revoke", &[("token", rt3), ("client_id", PUBLIC_CLIENT)]).await?.status(), 200);
    assert_eq!(server.introspect(at3).await?["active"], false);
    assert_eq!(server.introspect(rt3).await?["active"], false);
    Ok(())
}

#[tokio::test]
async fn openid_scope_yields_an_id_token_for_the_client() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT,
        PUBLIC_REDIRECT,
        &challenge,
        &[("scope", "openid profile crm.contacts.read"), ("nonce", "n-0S6_WzA2Mj")],
    );
    let location = authorize_as_alice(&server, &mut browser, &url, &["openid", "profile", "crm.contacts.read"]).await?;
    let (status, tokens) = redeem(&server, &location, &verifier).await?;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().ok_or("no id_token")?;
    let jwks: serde_json::Value = server.http.get(server.url("/jwks.json")).send().await?.json().await?;
    let jwk = &jwks["keys"][0];
    let key =
        jsonwebtoken::DecodingKey::from_ec_components(jwk["x"].as_str().ok_or("x")?, jwk["y"].as_str().ok_or("y")?)?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[PUBLIC_CLIENT]);
    validation.set_issuer(&[&server.issuer]);
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(id_token, &key, &validation)?.claims;
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["sub"], server.alice_id.as_str());
    assert_eq!(claims["azp"], PUBLIC_CLIENT);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["auth_time"].as_i64(), Some(server.clock.now()));
    assert!(claims.get("email").is_none(), "email only with the email scope");
    // An ID token is not an access token: introspection and revocation do not take it as one.
    assert_eq!(server.introspect(id_token).await?, serde_json::json!({"active": false}));
    Ok(())
}

/// Bad input at the AS endpoints: each gets an error that says what is wrong, and RFC 7009 /
/// RFC 7662 answers for tokens that cannot be ours.
#[tokio::test]
async fn oversized_and_repeated_input_is_named() -> TestResult {
    let server = TestServer::start().await?;
    let long = "A".repeat(20_000);

    let (status, body) = server.token(&[("grant_type", "authorization_code"), ("code", &long)]).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_description"], "parameter \"code\" is longer than 4096 characters (20000)");

    // RFC 7009 §2.2: a token the server does not know is revoked "successfully".
    let revoke = server.post_form("/revoke", &[("token", &long), ("client_id", PUBLIC_CLIENT)]).await?;
    assert_eq!(revoke.status(), 200);
    assert_eq!(server.introspect(&long).await?, serde_json::json!({"active": false}));

    // Two Authorization headers: refused before either is read.
    let basic = |id: &str, secret: &str| {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    };
    for path in ["/token", "/revoke", "/introspect"] {
        let response = server
            .http
            .post(server.url(path))
            .header("authorization", basic(MACHINE_CLIENT, MACHINE_SECRET))
            .header("authorization", basic(MACHINE_CLIENT, "wrong"))
            .form(&[("grant_type", "client_credentials"), ("token", "x")])
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 400, "{path}");
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"], "invalid_request", "{path}");
        assert_eq!(body["error_description"], "the authorization header was sent more than once; send it once");
    }
    Ok(())
}

/// A NUL in a parameter (PostgreSQL cannot even compare one) is a client's error, not ours.
#[tokio::test]
async fn a_nul_in_a_parameter_is_refused_as_a_bad_request() -> TestResult {
    let server = TestServer::start().await?;
    for form in [
        vec![("grant_type", "client_credentials"), ("client_id", "mach\0ine"), ("client_secret", "x")],
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", MACHINE_CLIENT),
            ("client_secret", MACHINE_SECRET),
            ("scope", "a\0b"),
        ],
    ] {
        let (status, body) = server.token(&form).await?;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{form:?}: {body}");
    }
    // In HTTP Basic client authentication: not valid client authentication.
    let basic = server
        .http
        .post(server.url("/token"))
        .basic_auth("mach\0ine", Some(MACHINE_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?;
    let status = basic.status().as_u16();
    let body: serde_json::Value = basic.json().await?;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    Ok(())
}
