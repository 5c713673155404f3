//! Discovery documents and the JWKS.

use crate::harness::*;

#[tokio::test]
async fn metadata_for_a_root_issuer() -> TestResult {
    let server = TestServer::start().await?;
    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let response = server.http.get(server.url(path)).send().await?;
        assert_eq!(response.status(), 200, "{path}");
        let m: serde_json::Value = response.json().await?;
        assert_eq!(m["issuer"], server.issuer.as_str(), "{path}");
        assert_eq!(m["authorization_endpoint"], server.url("/authorize"));
        assert_eq!(m["token_endpoint"], server.url("/token"));
        assert_eq!(m["jwks_uri"], server.url("/jwks.json"));
        assert_eq!(m["introspection_endpoint"], server.url("/introspect"));
        assert_eq!(m["revocation_endpoint"], server.url("/revoke"));
        assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
        assert_eq!(
            m["grant_types_supported"],
            serde_json::json!([
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"])
        );
        assert_eq!(m["token_endpoint_auth_signing_alg_values_supported"], serde_json::json!(["ES256"]));
        let scopes = m["scopes_supported"].as_array().ok_or("scopes_supported")?;
        for s in SCOPES {
            assert!(scopes.iter().any(|v| v == s), "{s} missing from scopes_supported");
        }
    }
    Ok(())
}

#[tokio::test]
async fn metadata_for_an_issuer_with_a_path_at_every_probed_location() -> TestResult {
    let server = TestServer::start_with(Options { issuer_path: "/tenant", ..Options::default() }).await?;
    let origin = server.origin();
    for url in [
        format!("{origin}/.well-known/oauth-authorization-server/tenant"),
        format!("{origin}/.well-known/openid-configuration/tenant"),
        format!("{origin}/tenant/.well-known/openid-configuration"),
    ] {
        let response = server.http.get(&url).send().await?;
        assert_eq!(response.status(), 200, "{url}");
        let m: serde_json::Value = response.json().await?;
        assert_eq!(m["issuer"], format!("{origin}/tenant"), "{url}");
        assert_eq!(m["token_endpoint"], format!("{origin}/tenant/token"));
    }
    // The root form belongs to another issuer (the origin itself), which this is not.
    assert_eq!(server.http.get(format!("{origin}/.well-known/oauth-authorization-server")).send().await?.status(), 404);
    // And the endpoints really live under the path.
    let jwks = server.http.get(format!("{origin}/tenant/jwks.json")).send().await?;
    assert_eq!(jwks.status(), 200);
    Ok(())
}

#[tokio::test]
async fn jwks_publishes_the_signing_key_and_rotation_keeps_the_old_one() -> TestResult {
    let server = TestServer::start().await?;
    let mut browser = Browser::default();
    let before = tokens_for_alice(&server, &mut browser).await?;
    let jwks: serde_json::Value = server.http.get(server.url("/jwks.json")).send().await?.json().await?;
    let keys = jwks["keys"].as_array().ok_or("keys")?;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0].get("d").is_none(), "no private key material in the JWKS");

    let running = server.running.as_ref().ok_or("stopped")?;
    let now = server.clock.now();
    running.server.keys().rotate(server.control()?, &Actor::Operator, now, now + 600).await?;
    running.server.keys().reload(server.store()?, now).await?;
    let jwks: serde_json::Value = server.http.get(server.url("/jwks.json")).send().await?.json().await?;
    assert_eq!(jwks["keys"].as_array().ok_or("keys")?.len(), 2, "old key still published");

    // The old token still introspects active; new tokens are signed by the new key.
    assert_eq!(server.introspect(before["access_token"].as_str().ok_or("at")?).await?["active"], true);
    let after = tokens_for_alice(&server, &mut browser).await?;
    let kid = |t: &serde_json::Value| -> AnyResult<String> {
        let header = t["access_token"].as_str().ok_or("at")?.split('.').next().ok_or("jwt")?.to_owned();
        let header: serde_json::Value = serde_json::from_slice(&base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            header,
        )?)?;
        Ok(header["kid"].as_str().ok_or("kid")?.to_owned())
    };
    assert_ne!(kid(&before)?, kid(&after)?);
    assert_eq!(jwks["keys"][0]["kid"], kid(&after)?.as_str(), "newest key first");

    // Once the old key's tokens have expired, it is no longer published.
    server.clock.advance(601);
    running.server.keys().reload(server.store()?, server.clock.now()).await?;
    let jwks: serde_json::Value = server.http.get(server.url("/jwks.json")).send().await?.json().await?;
    assert_eq!(jwks["keys"].as_array().ok_or("keys")?.len(), 1);
    Ok(())
}
