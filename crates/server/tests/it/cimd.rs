//! Client ID Metadata Documents: fetching, validation, caching, policy, and SSRF refusals.
//! Documents are served by the test itself on loopback (under the development flag); no
//! traffic goes anywhere else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use portcullis::config::CimdConfig;
use serde_json::{Value, json};

use crate::harness::*;

#[derive(Clone)]
struct Doc {
    status: u16,
    body: String,
    cache_control: Option<&'static str>,
    delay: Duration,
}

#[derive(Clone, Default)]
struct DocState {
    docs: Arc<Mutex<HashMap<String, Doc>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

/// A loopback web server publishing client metadata documents.
struct DocServer {
    base: String,
    state: DocState,
}

async fn serve_doc(State(state): State<DocState>, Path(name): Path<String>) -> Response {
    if let Ok(mut hits) = state.hits.lock() {
        *hits.entry(name.clone()).or_default() += 1;
    }
    let doc = state.docs.lock().ok().and_then(|d| d.get(&name).cloned());
    let Some(doc) = doc else { return (axum::http::StatusCode::NOT_FOUND, "no such document").into_response() };
    tokio::time::sleep(doc.delay).await;
    let mut response =
        (axum::http::StatusCode::from_u16(doc.status).unwrap_or(axum::http::StatusCode::OK), doc.body).into_response();
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    if doc.status == 302 {
        response
            .headers_mut()
            .insert("location", axum::http::HeaderValue::from_static("http://127.0.0.1:9/elsewhere.json"));
    }
    if let Some(cc) = doc.cache_control {
        response.headers_mut().insert("cache-control", axum::http::HeaderValue::from_static(cc));
    }
    response
}

impl DocServer {
    async fn start() -> AnyResult<Self> {
        let state = DocState::default();
        let app = axum::Router::new().route("/clients/{name}", axum::routing::get(serve_doc)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://127.0.0.1:{}/clients", listener.local_addr()?.port());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, state })
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn publish(&self, name: &str, doc: Doc) {
        if let Ok(mut docs) = self.state.docs.lock() {
            docs.insert(name.to_owned(), doc);
        }
    }

    fn publish_json(&self, name: &str, body: Value, cache_control: Option<&'static str>) {
        self.publish(name, Doc { status: 200, body: body.to_string(), cache_control, delay: Duration::ZERO });
    }

    fn hits(&self, name: &str) -> usize {
        self.state.hits.lock().ok().and_then(|h| h.get(name).copied()).unwrap_or(0)
    }

    fn document(&self, name: &str) -> Value {
        json!({
            "client_id": self.url(name),
            "client_name": "Cursor",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none"
        })
    }
}

fn dev_policy() -> AnyResult<CimdConfig> {
    Ok(CimdConfig {
        enabled: true,
        allow_any_https: true,
        allow_http_loopback: true,
        allowed_ranges: vec!["127.0.0.1/32".parse()?],
        fetch_timeout_secs: 1,
        max_document_bytes: 4096,
        ..CimdConfig::default()
    })
}

async fn start(policy: CimdConfig) -> AnyResult<TestServer> {
    TestServer::start_with(Options { cimd: policy, ..Options::default() }).await
}

/// Starts an authorization for `client_id` in a fresh browser and returns the first answer.
async fn attempt(server: &TestServer, client_id: &str, redirect: &str) -> AnyResult<Page> {
    let (_, challenge) = pkce()?;
    let url = authorize_url(server, client_id, redirect, &challenge, &[]);
    Browser::default().get(server, &url).await
}

#[track_caller]
fn assert_refused(page: &Page, code: &str, words: &str) {
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.location.is_none(), "never a redirect: {:?}", page.location);
    assert!(page.body.contains(code) && page.body.contains(words), "expected {code} / {words}: {}", page.body);
}

#[tokio::test]
async fn a_metadata_document_client_signs_a_user_in() -> TestResult {
    let docs = DocServer::start().await?;
    let mut policy = dev_policy()?;
    policy.trusted_domains = vec!["127.0.0.1".into()];
    let server = start(policy).await?;
    let metadata: Value =
        server.http.get(server.url("/.well-known/oauth-authorization-server")).send().await?.json().await?;
    assert_eq!(metadata["client_id_metadata_document_supported"], true);

    docs.publish_json("cursor.json", docs.document("cursor.json"), Some("max-age=600"));
    let client_id = docs.url("cursor.json");
    let (verifier, challenge) = pkce()?;
    let redirect = "http://127.0.0.1:51000/callback";
    let url = authorize_url(&server, &client_id, redirect, &challenge, &[]);
    let mut browser = Browser::default();
    let consent = sign_in_to_consent(&server, &mut browser, &url).await?;
    assert!(
        consent.body.contains("Published by") && consent.body.contains("<code>127.0.0.1</code>"),
        "{}",
        consent.body
    );
    assert!(consent.body.contains("its published metadata document"));
    assert!(consent.body.contains("any program there could claim its name"), "localhost-only warning");
    assert!(consent.body.contains(">verified<"), "a trusted domain makes it verified");
    let approved = browser.consent(&server, &consent, &["crm.contacts.read"], "approve").await?;
    let code = query(approved.location.as_deref().ok_or("callback")?)?.get("code").cloned().ok_or("code")?;
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
    let stored = server.store()?.find_client(&client_id).await?.ok_or("recorded")?;
    assert_eq!((stored.origin, stored.verified), (portcullis_store::RegistrationOrigin::Cimd, true));

    // Cached for its max-age: a second authorization does not fetch again.
    let again = authorize_url(&server, &client_id, redirect, &challenge, &[]);
    browser.get(&server, &again).await?;
    assert_eq!(docs.hits("cursor.json"), 1);
    Ok(())
}

#[tokio::test]
async fn documents_are_validated_before_anything_is_shown() -> TestResult {
    let docs = DocServer::start().await?;
    let server = start(dev_policy()?).await?;
    let cb = "http://127.0.0.1/callback";
    let with = |name: &str, changes: Value| {
        let mut doc = docs.document(name);
        if let (Some(d), Some(c)) = (doc.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                if v.is_null() {
                    d.remove(k);
                } else {
                    d.insert(k.clone(), v.clone());
                }
            }
        }
        doc
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("other-id.json", json!({"client_id": "https://evil.example.test/client.json"}), "not exactly the URL"),
        ("no-name.json", json!({"client_name": null}), "needs a client_name"),
        ("no-redirects.json", json!({"redirect_uris": []}), "needs redirect_uris"),
        ("bad-redirect.json", json!({"redirect_uris": ["http://evil.example.test/cb"]}), "not loopback"),
        (
            "secret.json",
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
            "not allowed for metadata documents",
        ),
        ("jwt.json", json!({"token_endpoint_auth_method": "private_key_jwt"}), "needs a jwks of EC P-256 keys"),
        (
            "jwks-uri.json",
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://x.test/jwks"}),
            "jwks_uri is not fetched",
        ),
        (
            "rsa.json",
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "RSA", "crv": "", "x": "", "y": "", "kid": "r", "use": "sig", "alg": "RS256"}]}}),
            "EC P-256",
        ),
        ("cc.json", json!({"grant_types": ["client_credentials"]}), "not available to clients registered by cimd"),
    ];
    for (name, changes, words) in cases {
        docs.publish_json(name, with(name, changes), None);
        assert_refused(&attempt(&server, &docs.url(name), cb).await?, "invalid_client", words);
    }
    docs.publish(
        "not-json.json",
        Doc { status: 200, body: "<html>".into(), cache_control: None, delay: Duration::ZERO },
    );
    assert_refused(&attempt(&server, &docs.url("not-json.json"), cb).await?, "invalid_client", "not valid JSON");
    docs.publish(
        "big.json",
        Doc {
            status: 200,
            body: format!("{{\"pad\":\"{}\"}}", "x".repeat(5000)),
            cache_control: None,
            delay: Duration::ZERO,
        },
    );
    assert_refused(&attempt(&server, &docs.url("big.json"), cb).await?, "invalid_client", "larger than 4096 bytes");
    docs.publish("moved.json", Doc { status: 302, body: String::new(), cache_control: None, delay: Duration::ZERO });
    assert_refused(&attempt(&server, &docs.url("moved.json"), cb).await?, "invalid_client", "answered 302");
    assert_refused(&attempt(&server, &docs.url("missing.json"), cb).await?, "invalid_client", "answered 404");
    docs.publish(
        "slow.json",
        Doc {
            status: 200,
            body: docs.document("slow.json").to_string(),
            cache_control: None,
            delay: Duration::from_secs(3),
        },
    );
    assert_refused(&attempt(&server, &docs.url("slow.json"), cb).await?, "invalid_client", "timed out");

    // A redirect URI the document does not list is refused like any other mismatch.
    docs.publish_json("good.json", docs.document("good.json"), None);
    assert_refused(
        &attempt(&server, &docs.url("good.json"), "http://127.0.0.1/other").await?,
        "invalid_request",
        "does not exactly match",
    );
    Ok(())
}

#[tokio::test]
async fn client_id_urls_must_be_well_formed_and_from_an_accepted_domain() -> TestResult {
    let docs = DocServer::start().await?;
    let (_, challenge) = pkce()?;
    let mut policy = dev_policy()?;
    policy.blocked_domains = vec!["localhost".into()];
    let server = start(policy).await?;
    let mut browser = Browser::default();
    let port = docs.base.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap_or_default().to_owned();
    for (client_id, words) in [
        (format!("http://127.0.0.1:{port}/"), "must have a path"),
        (format!("http://127.0.0.1:{port}/clients/a.json#frag"), "fragment"),
        (format!("http://127.0.0.1:{port}/clients/../a.json"), "dot segments"),
        (format!("http://user:pw@127.0.0.1:{port}/clients/a.json"), "credentials"),
        (format!("http://localhost:{port}/clients/a.json"), "are not accepted"),
        ("ftp://127.0.0.1/clients/a.json".to_owned(), "no client is registered"),
    ] {
        let url = authorize_url(&server, &client_id, "http://127.0.0.1/callback", &challenge, &[]);
        assert_refused(&browser.get(&server, &url).await?, "invalid_client", words);
    }
    assert_eq!(docs.state.hits.lock().map(|h| h.values().sum::<usize>()).unwrap_or(1), 0, "none of those was fetched");

    // Without allow_any_https, only trusted domains are accepted.
    let mut strict = dev_policy()?;
    strict.allow_any_https = false;
    let server = start(strict).await?;
    docs.publish_json("a.json", docs.document("a.json"), None);
    let url = authorize_url(&server, &docs.url("a.json"), "http://127.0.0.1/callback", &challenge, &[]);
    assert_refused(&browser.get(&server, &url).await?, "invalid_client", "not a trusted publisher");
    assert_eq!(docs.hits("a.json"), 0);
    Ok(())
}

#[tokio::test]
async fn cache_headers_are_honoured_within_bounds_and_changes_are_revalidated() -> TestResult {
    let docs = DocServer::start().await?;
    let server = start(dev_policy()?).await?;
    let cb = "http://127.0.0.1/callback";
    docs.publish_json("nostore.json", docs.document("nostore.json"), Some("no-store"));
    attempt(&server, &docs.url("nostore.json"), cb).await?;
    attempt(&server, &docs.url("nostore.json"), cb).await?;
    assert_eq!(docs.hits("nostore.json"), 2, "no-store is fetched every time");

    // max-age=1 is raised to the 60 s floor; after that the changed document is fetched and
    // validated again, and its removed redirect URI no longer works.
    docs.publish_json("short.json", docs.document("short.json"), Some("max-age=1"));
    assert!(attempt(&server, &docs.url("short.json"), cb).await?.location.is_some_and(|l| l.contains("/login?")));
    server.clock.advance(30);
    attempt(&server, &docs.url("short.json"), cb).await?;
    assert_eq!(docs.hits("short.json"), 1, "within the floor");
    let mut changed = docs.document("short.json");
    changed["redirect_uris"] = json!(["http://127.0.0.1/new-callback"]);
    docs.publish_json("short.json", changed, Some("max-age=1"));
    server.clock.advance(31);
    let page = attempt(&server, &docs.url("short.json"), cb).await?;
    assert_eq!(docs.hits("short.json"), 2);
    assert_refused(&page, "invalid_request", "does not exactly match");
    let stored = server.store()?.find_client(&docs.url("short.json")).await?.ok_or("client")?;
    assert_eq!(stored.redirect_uris, vec!["http://127.0.0.1/new-callback".to_owned()]);
    Ok(())
}

/// A listener that counts connections, to prove that a refused fetch never connected.
async fn trap(address: &str) -> AnyResult<(u16, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind(format!("{address}:0")).await?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Ok((port, count))
}

#[tokio::test]
async fn ssrf_a_document_url_on_a_refused_address_is_never_contacted() -> TestResult {
    // Loopback is not allowed here (no allowed_ranges); https is required.
    let policy = CimdConfig { enabled: true, allow_any_https: true, ..CimdConfig::default() };
    let server = start(policy).await?;
    let (port, connections) = trap("127.0.0.2").await?;
    let (_, challenge) = pkce()?;
    let mut browser = Browser::default();
    for client_id in [
        format!("https://127.0.0.2:{port}/client.json"),
        format!("https://localhost:{port}/client.json"),
        format!("https://[::ffff:127.0.0.2]:{port}/client.json"),
        format!("http://127.0.0.2:{port}/client.json"),
    ] {
        let url = authorize_url(&server, &client_id, "http://127.0.0.1/callback", &challenge, &[]);
        let page = browser.get(&server, &url).await?;
        assert_eq!(page.status, 400, "{client_id}: {}", page.body);
        assert!(page.location.is_none());
    }
    let page = browser
        .get(
            &server,
            &authorize_url(
                &server,
                &format!("https://127.0.0.2:{port}/client.json"),
                "http://127.0.0.1/callback",
                &challenge,
                &[],
            ),
        )
        .await?;
    assert!(page.body.contains("127.0.0.2 (loopback), which is not allowed"), "{}", page.body);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "no connection was made to the refused address");
    Ok(())
}

#[tokio::test]
async fn private_key_jwt_clients_authenticate_with_single_use_assertions() -> TestResult {
    let docs = DocServer::start().await?;
    let server = start(dev_policy()?).await?;
    let key = portcullis_crypto::SigningKey::generate()?;
    let other_key = portcullis_crypto::SigningKey::generate()?;
    let mut doc = docs.document("agent.json");
    doc["token_endpoint_auth_method"] = json!("private_key_jwt");
    doc["jwks"] = serde_json::to_value(portcullis_types::wire::JwkSet { keys: vec![key.public_jwk()] })?;
    docs.publish_json("agent.json", doc, None);
    let client_id = docs.url("agent.json");

    let (verifier, challenge) = pkce()?;
    let url = authorize_url(&server, &client_id, "http://127.0.0.1/callback", &challenge, &[]);
    let location = authorize_as_alice(&server, &mut Browser::default(), &url, &["crm.contacts.read"]).await?;
    let code = query(&location)?.get("code").cloned().ok_or("code")?;

    let now = server.clock.now();
    let token_endpoint = server.url("/token");
    let assertion = |signer: &portcullis_crypto::SigningKey, changes: Value| -> AnyResult<String> {
        let mut claims = json!({"iss": client_id, "sub": client_id, "aud": token_endpoint, "exp": now + 60, "iat": now, "jti": portcullis_crypto::random_token(16)?});
        if let (Some(c), Some(x)) = (claims.as_object_mut(), changes.as_object()) {
            for (k, v) in x {
                c.insert(k.clone(), v.clone());
            }
        }
        Ok(portcullis_crypto::sign_jwt(signer, "JWT", &claims)?)
    };
    let redeem = |assertion: String| {
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("code_verifier", verifier.clone()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
            ("client_assertion", assertion),
        ];
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server.token(&pairs).await
        }
    };
    // Refused: wrong key, wrong audience, someone else as subject, expired, too long-lived.
    for bad in [
        assertion(&other_key, json!({}))?,
        assertion(&key, json!({"aud": "https://elsewhere.test/token"}))?,
        assertion(&key, json!({"iss": "someone-else"}))?,
        assertion(&key, json!({"exp": now - 1}))?,
        assertion(&key, json!({"exp": now + 3600}))?,
        assertion(&key, json!({"jti": null}))?,
    ] {
        let (status, body) = redeem(bad).await?;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    }
    // Without an assertion the client cannot authenticate at all.
    let (status, body) = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
        ])
        .await?;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");

    let good = assertion(&key, json!({}))?;
    let (status, tokens) = redeem(good.clone()).await?;
    assert_eq!(status, 200, "{tokens}");
    // The same assertion twice is a replay.
    let (status, body) = redeem(good).await?;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (401, Some("this client assertion was already used")),
        "{body}"
    );
    Ok(())
}
