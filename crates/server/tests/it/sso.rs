//! Single sign-on through the organisation's identity providers, against two real
//! `oidc-provider` instances ("corp" and "partner", tests/peers/oidc-provider/sso-idp.mjs), each
//! with its own domain, groups and keys: home-realm discovery, the code flow, JIT users and
//! linking, the group ceiling on consent, and the attacks that must be refused.

use std::time::Duration;

use portcullis::config::IdentityProviderConfig;
use portcullis_store::{AuditFilter, AuditKind, AuditOutcome};

use crate::harness::*;

pub(crate) const CORP_USERS: &str = r#"{
  "carol": {"email": "carol@corp.example", "email_verified": true, "name": "Carol Corp", "groups": ["sales"]},
  "erin": {"email": "erin@corp.example", "email_verified": true, "groups": ["engineering", "sales"]},
  "dana": {"email": "Dana@corp.example", "email_verified": true, "groups": ["engineering"]},
  "mallory": {"email": "alice@example.test", "email_verified": false, "groups": ["engineering"]},
  "eve": {"email": "pat@partner.example", "email_verified": true, "groups": ["engineering"]},
  "nogroups": {"email": "nogroups@corp.example", "email_verified": true}
}"#;
const PARTNER_USERS: &str = r#"{
  "pat": {"email": "pat@partner.example", "email_verified": true, "groups": ["contractors"]}
}"#;

/// A running `sso-idp.mjs`.
pub(crate) struct Idp {
    _process: tokio::process::Child,
    pub(crate) issuer: String,
}

pub(crate) async fn start_idp(redirect_uri: &str, users: &str) -> AnyResult<Idp> {
    start_idp_with(redirect_uri, users, &[]).await
}

/// As `start_idp`, with more of sso-idp.mjs's environment (`CLIENT_AUTH`, `JWKS_URI`).
async fn start_idp_with(redirect_uri: &str, users: &str, env: &[(&str, &str)]) -> AnyResult<Idp> {
    let logout = redirect_uri.replace("/callback", "/backchannel-logout");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/oidc-provider");
    if !dir.join("node_modules/oidc-provider").exists() {
        return Err(format!("run `npm ci --prefix {}` (scripts/test does)", dir.display()).into());
    }
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("sso-idp.mjs"))
        .env("PORT", "0")
        .env("CLIENT_ID", "portcullis")
        .env("CLIENT_SECRET", IDP_SECRET)
        .env("REDIRECT_URI", redirect_uri)
        .env("BACKCHANNEL_LOGOUT_URI", logout)
        .env("USERS", users)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::null());
    let (process, issuer) = spawn_until_ready(command).await?;
    Ok(Idp { _process: process, issuer })
}

pub(crate) const IDP_SECRET: &str = "portcullis-at-the-idp-secret-0123456789";

fn provider(name: &str, issuer: &str, domain: &str, secret_file: &std::path::Path) -> IdentityProviderConfig {
    let group_scopes = match name {
        "corp" => [
            ("engineering".to_owned(), vec!["crm.contacts.read".to_owned(), "crm.deals.write".to_owned()]),
            ("sales".to_owned(), vec!["crm.contacts.read".to_owned()]),
        ]
        .into_iter()
        .collect(),
        _ => [("contractors".to_owned(), vec!["crm.contacts.read".to_owned()])].into_iter().collect(),
    };
    IdentityProviderConfig {
        name: name.into(),
        display_name: format!("{name} SSO"),
        issuer: issuer.into(),
        client_id: "portcullis".into(),
        client_secret_env: None,
        client_secret_file: Some(secret_file.to_owned()),
        private_key_jwt: false,
        scopes: vec!["openid".into(), "email".into(), "profile".into(), "groups".into()],
        email_domains: vec![domain.into()],
        groups_claim: Some("groups".into()),
        jit: true,
        unlinkable_email: Default::default(),
        // The test IdPs run on loopback, which only an explicit allowance reaches.
        allowed_ranges: vec![
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)),
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ],
        allow_http_loopback: true,
        extra_ca_file: None,
        accept_id_jag: false,
        allowed_tenants: Vec::new(),
        group_scopes,
        max_session_secs: 3600,
        timeout_secs: 2,
    }
}

/// Portcullis with "corp" and "partner" (and any `extra` providers), each a real IdP.
struct World {
    server: TestServer,
    corp: Idp,
    partner: Idp,
    _secrets: tempfile::TempDir,
}

async fn world(adjust: impl FnOnce(&mut Vec<IdentityProviderConfig>, &std::path::Path)) -> AnyResult<World> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let corp = start_idp(&format!("{origin}/sso/corp/callback"), CORP_USERS).await?;
    let partner = start_idp(&format!("{origin}/sso/partner/callback"), PARTNER_USERS).await?;
    let secrets = tempfile::tempdir()?;
    let secret_file = secrets.path().join("idp-secret");
    std::fs::write(&secret_file, IDP_SECRET)?;
    let mut identity_providers = vec![
        provider("corp", &corp.issuer, "corp.example", &secret_file),
        provider("partner", &partner.issuer, "partner.example", &secret_file),
    ];
    adjust(&mut identity_providers, &secret_file);
    let server = TestServer::start_with(Options {
        listener: Some(listener),
        identity_providers,
        wall_clock: true,
        // The demo CRM behind the gateway: the resource SSO users' agents call.
        upstreams: vec![portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned())],
        // MCP clients on this machine register themselves.
        registration: portcullis::config::RegistrationConfig {
            enabled: true,
            allowed_networks: vec!["127.0.0.0/8".parse()?],
            initial_access_token: portcullis::config::InitialAccessTokenMode::Optional,
            ..Default::default()
        },
        ..Options::default()
    })
    .await?;
    Ok(World { server, corp, partner, _secrets: secrets })
}

type QueryPairs = Vec<(String, String)>;

fn absolute_at(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
}

/// Plays the user at the identity provider: signs in as `login` and consents, following the
/// provider's redirects until it sends the browser back to Portcullis. Returns that URL.
async fn sign_in_at_idp(world: &World, browser: &mut Browser, idp_url: &str, login: &str) -> AnyResult<String> {
    let idp_base = url::Url::parse(idp_url)?.origin().ascii_serialization();
    let mut url = idp_url.to_owned();
    for _ in 0..12 {
        if url.starts_with(&world.server.origin()) {
            return Ok(url);
        }
        let page = browser.get(&world.server, &url).await?;
        if let Some(location) = page.location {
            url = absolute_at(&idp_base, &location);
            continue;
        }
        let form = if page.body.contains(r#"name="prompt" value="login""#) {
            vec![("prompt", "login"), ("login", login), ("password", "any")]
        } else if page.body.contains(r#"name="prompt" value="consent""#) {
            vec![("prompt", "consent")]
        } else {
            return Err(format!("unexpected IdP page {}: {}", page.status, page.body).into());
        };
        let answer = browser.post_to(&world.server, &url, &form).await?;
        url = absolute_at(&idp_base, answer.location.as_deref().ok_or("the IdP form did not redirect")?);
    }
    Err("the IdP never sent the browser back".into())
}

/// From an authorization request to the URL of the IdP's sign-in page, by home-realm
/// discovery on `email`.
async fn discover(world: &World, browser: &mut Browser, authorize: &str, email: &str) -> AnyResult<String> {
    let s = &world.server;
    let login = browser.get(s, authorize).await?.location.ok_or("no redirect to sign in")?;
    let page = browser.get(s, &login).await?;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Sign in with corp SSO") && page.body.contains("Sign in with partner SSO"),
        "{}",
        page.body
    );
    let request = page.input("request").ok_or("request")?;
    let csrf = page.input("csrf").ok_or("csrf")?;
    let discovered =
        browser.post(s, "/login/discover", &[("request", &request), ("csrf", &csrf), ("email", email)]).await?;
    let start = discovered.location.ok_or("discovery did not redirect")?;
    assert!(start.contains("/sso/") && start.contains("login_hint="), "{start}");
    let to_idp = browser.get(s, &start).await?;
    assert_eq!(to_idp.status, 303, "{}", to_idp.body);
    to_idp.location.ok_or_else(|| "no redirect to the IdP".into())
}

fn offered_scopes(page: &Page) -> Vec<String> {
    page.body
        .match_indices("name=\"scope\" value=\"")
        .filter_map(|(i, m)| {
            let rest = page.body.get(i + m.len()..)?;
            Some(rest.get(..rest.find('"')?)?.to_owned())
        })
        .collect()
}

async fn sign_in_events(s: &TestServer, kind: AuditKind) -> AnyResult<Vec<portcullis_store::AuditEventRecord>> {
    let filter = AuditFilter { kinds: vec![kind], ..Default::default() };
    Ok(s.store()?.audit_events(None, 100, &filter).await?)
}

/// The callback's page says the sign-in failed, with `status`, and nobody is signed in.
fn assert_refused(page: &Page, status: u16, says: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(page.location.is_none(), "{:?}", page.location);
    assert!(page.body.contains(says), "page should say {says:?}: {}", page.body);
    assert!(
        !page
            .headers
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap_or_default().starts_with("portcullis_session=")),
        "no session on failure"
    );
}

#[tokio::test]
async fn home_realm_discovery_jit_and_the_group_ceiling() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let mut browser = Browser::default();
    let (verifier, challenge) = pkce()?;
    let scope = "crm.contacts.read crm.deals.write crm.contacts.export";
    let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("scope", scope)]);
    let idp_url = discover(&w, &mut browser, &authorize, "carol@corp.example").await?;
    // A careful relying party: PKCE S256, state, nonce, its own callback, the hint passed on.
    let at_idp = url::Url::parse(&idp_url)?;
    assert!(idp_url.starts_with(&w.corp.issuer), "{idp_url}");
    let q: std::collections::BTreeMap<_, _> = at_idp.query_pairs().into_owned().collect();
    assert_eq!(q.get("code_challenge_method").map(String::as_str), Some("S256"));
    assert!(q.get("state").is_some_and(|v| v.len() >= 43) && q.get("nonce").is_some_and(|v| v.len() >= 43), "{q:?}");
    assert_eq!(q.get("redirect_uri"), Some(&format!("{}/sso/corp/callback", s.origin())));
    assert_eq!(q.get("login_hint").map(String::as_str), Some("carol@corp.example"));

    let callback = sign_in_at_idp(&w, &mut browser, &idp_url, "carol").await?;
    assert!(callback.contains("iss="), "RFC 9207 iss from the IdP: {callback}");
    let back = browser.get(s, &callback).await?;
    assert_eq!(back.status, 303, "{}", back.body);
    let cont = browser.get(s, back.location.as_deref().ok_or("continue")?).await?;
    let consent = browser.get(s, cont.location.as_deref().ok_or("consent")?).await?;
    assert_eq!(consent.status, 200, "{}", consent.body);
    // Carol is in "sales": of what was asked, only the contact read is hers to grant.
    assert_eq!(offered_scopes(&consent), ["crm.contacts.read"]);
    let location = browser
        .consent(s, &consent, &["crm.contacts.read", "crm.deals.write", "crm.contacts.export"], "approve")
        .await?
        .location
        .ok_or("redirect")?;
    let (status, tokens) = redeem(s, &location, &verifier).await?;
    assert_eq!((status, tokens["scope"].as_str()), (200, Some("crm.contacts.read")), "{tokens}");

    // Carol was created at her first sign-in, keyed by the IdP's subject, with her verified email.
    let carol = s.store()?.find_user_by_username("carol@corp.example").await?.ok_or("carol was not created")?;
    assert_eq!((carol.email.as_deref(), carol.password_hash.as_deref()), (Some("carol@corp.example"), None));
    let identity = s.store()?.find_federated_identity("corp", &w.corp.issuer, "carol").await?.ok_or("identity")?;
    assert_eq!(identity.user_id, carol.id);
    let added = sign_in_events(s, AuditKind::UserAdded).await?;
    assert!(
        added
            .iter()
            .any(|e| e.event.user_id.as_deref() == Some(&carol.id) && e.event.actor.as_deref() == Some("idp:corp"))
    );
    let succeeded = sign_in_events(s, AuditKind::SignInSucceeded).await?;
    let record = succeeded.iter().find(|e| e.event.user_id.as_deref() == Some(&carol.id)).ok_or("no sign-in record")?;
    assert_eq!(
        (record.event.target.as_deref(), record.event.issuer.as_deref(), record.event.subject.as_deref()),
        (Some("corp"), Some(w.corp.issuer.as_str()), Some("carol"))
    );

    // Signing in again is the same user, and a user of two groups gets both groups' scopes.
    let (_, challenge) = pkce()?;
    let mut other = Browser::default();
    let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("scope", scope)]);
    let idp_url = discover(&w, &mut other, &authorize, "erin@corp.example").await?;
    let callback = sign_in_at_idp(&w, &mut other, &idp_url, "erin").await?;
    let back = other.get(s, &callback).await?;
    let cont = other.get(s, back.location.as_deref().ok_or("continue")?).await?;
    let consent = other.get(s, cont.location.as_deref().ok_or("consent")?).await?;
    assert_eq!(offered_scopes(&consent), ["crm.contacts.read", "crm.deals.write"]);
    Ok(())
}

#[tokio::test]
async fn hints_skip_the_question_and_unknown_domains_get_a_clear_page() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let (_, challenge) = pkce()?;
    // idp_hint names the provider; login_hint routes by domain.
    for (hint, expected) in
        [(("idp_hint", "partner"), &w.partner.issuer), (("login_hint", "carol@corp.example"), &w.corp.issuer)]
    {
        let mut browser = Browser::default();
        let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[hint]);
        let login = browser.get(s, &authorize).await?.location.ok_or("login")?;
        let start = browser.get(s, &login).await?.location.ok_or("no redirect to the provider's start")?;
        let to_idp = browser.get(s, &start).await?.location.ok_or("no redirect to the IdP")?;
        assert!(to_idp.starts_with(expected.as_str()), "{hint:?}: {to_idp}");
    }
    // A domain no provider is authoritative for: the password form stays, and the answer
    // is the same whether or not such a user exists.
    let mut browser = Browser::default();
    let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let login = browser.get(s, &authorize).await?.location.ok_or("login")?;
    let page = browser.get(s, &login).await?;
    let (request, csrf) = (page.input("request").ok_or("request")?, page.input("csrf").ok_or("csrf")?);
    let mut answers = Vec::new();
    for email in ["alice@example.test", "nobody@example.test"] {
        let posted =
            browser.post(s, "/login/discover", &[("request", &request), ("csrf", &csrf), ("email", email)]).await?;
        let shown = browser.get(s, posted.location.as_deref().ok_or("back to login")?).await?;
        assert!(shown.body.contains("No single sign-on is set up for that email address"), "{}", shown.body);
        answers.push((posted.location, shown.status));
    }
    assert_eq!(answers[0], answers[1], "no user enumeration");
    Ok(())
}

#[tokio::test]
async fn accounts_are_linked_only_by_a_verified_email_in_the_providers_own_domain() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let control = s.control()?;
    let dana = control
        .add_user(
            &Actor::Operator,
            NewUser {
                username: "dana".into(),
                display_name: None,
                email: Some("dana@corp.example".into()),
                password_hash: None,
                is_admin: false,
            },
        )
        .await?;
    let pat = control
        .add_user(
            &Actor::Operator,
            NewUser {
                username: "pat-local".into(),
                display_name: None,
                email: Some("pat@partner.example".into()),
                password_hash: None,
                is_admin: false,
            },
        )
        .await?;
    let sign_in = |login: &'static str, email: &'static str| {
        let w = &w;
        async move {
            let mut browser = Browser::default();
            let (_, challenge) = pkce()?;
            let authorize = authorize_url(&w.server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
            let idp_url = discover(w, &mut browser, &authorize, email).await?;
            let callback = sign_in_at_idp(w, &mut browser, &idp_url, login).await?;
            browser.get(&w.server, &callback).await
        }
    };
    // Dana's IdP asserts her verified address in its own domain: her account.
    let linked = sign_in("dana", "dana@corp.example").await?;
    assert_eq!(linked.status, 303, "{}", linked.body);
    assert_eq!(
        s.store()?.find_federated_identity("corp", &w.corp.issuer, "dana").await?.map(|i| i.user_id),
        Some(dana.id)
    );
    assert!(!sign_in_events(s, AuditKind::UserLinked).await?.is_empty());

    // An unverified email equal to a local user's never reaches that account.
    let unverified = sign_in("mallory", "mallory@corp.example").await?;
    assert_refused(&unverified, 403, "did not assert a verified address");
    // A verified email in a domain another provider is authoritative for, neither.
    let foreign = sign_in("eve", "eve@corp.example").await?;
    assert_refused(&foreign, 403, "did not assert a verified address");
    assert!(s.store()?.federated_identities_of(&pat.id).await?.is_empty());
    assert!(s.store()?.federated_identities_of(&s.alice_id).await?.is_empty());
    let failed = sign_in_events(s, AuditKind::SignInFailed).await?;
    for subject in ["mallory", "eve"] {
        let e = failed.iter().find(|e| e.event.subject.as_deref() == Some(subject)).ok_or("no failure record")?;
        assert_eq!((e.event.outcome, e.event.target.as_deref()), (AuditOutcome::Failed, Some("corp")));
        assert!(e.event.reason.as_deref().is_some_and(|r| r.contains("verified address")), "{e:?}");
    }

    // A user disabled here is refused at the callback too.
    control.disable_user(&Actor::Operator, "dana").await?;
    let disabled = sign_in("dana", "dana@corp.example").await?;
    assert_refused(&disabled, 403, "disabled");
    Ok(())
}

#[tokio::test]
async fn forged_and_crossed_responses_are_refused_and_recorded() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let (_, challenge) = pkce()?;
    let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let with_query = |url: &str, change: &dyn Fn(&mut QueryPairs)| -> AnyResult<String> {
        let mut parsed = url::Url::parse(url)?;
        let mut pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        change(&mut pairs);
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        Ok(parsed.to_string())
    };

    // A swapped state: the answer is not this browser's sign-in.
    let mut browser = Browser::default();
    let idp_url = discover(&w, &mut browser, &authorize, "carol@corp.example").await?;
    let callback = sign_in_at_idp(&w, &mut browser, &idp_url, "carol").await?;
    let swapped = with_query(&callback, &|p| {
        for (k, v) in p.iter_mut() {
            if k == "state" {
                *v = "another-state-entirely-0123456789012345678901".into();
            }
        }
    })?;
    assert_refused(&browser.get(s, &swapped).await?, 400, "not started in this browser");
    // ...and the real answer cannot be used after that: the pending sign-in was spent.
    assert_refused(&browser.get(s, &callback).await?, 400, "not started in this browser");

    // A nonce changed on the way to the IdP, or removed: the ID token is not this sign-in's.
    for tamper in [Some("a-nonce-the-attacker-chose-0123456789012345"), None] {
        let mut browser = Browser::default();
        let idp_url = discover(&w, &mut browser, &authorize, "carol@corp.example").await?;
        let tampered = with_query(&idp_url, &|p| {
            p.retain(|(k, _)| k != "nonce");
            if let Some(n) = tamper {
                p.push(("nonce".into(), n.into()));
            }
        })?;
        let callback = sign_in_at_idp(&w, &mut browser, &tampered, "carol").await?;
        assert_refused(&browser.get(s, &callback).await?, 400, "nonce");
    }

    // A code from corp delivered to partner's callback (mix-up).
    let mut browser = Browser::default();
    let idp_url = discover(&w, &mut browser, &authorize, "carol@corp.example").await?;
    let callback = sign_in_at_idp(&w, &mut browser, &idp_url, "carol").await?;
    let crossed = callback.replace("/sso/corp/callback", "/sso/partner/callback");
    assert_refused(&browser.get(s, &crossed).await?, 400, "started with another identity provider");

    // The IdP's own error response, with this sign-in's state.
    let mut browser = Browser::default();
    let idp_url = discover(&w, &mut browser, &authorize, "carol@corp.example").await?;
    let state = url::Url::parse(&idp_url)?
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .ok_or("state")?;
    let error = format!(
        "/sso/corp/callback?error=access_denied&error_description=the+user+said+no&state={state}&iss={}",
        w.corp.issuer
    );
    assert_refused(&browser.get(s, &error).await?, 403, "the user said no");

    let failed = sign_in_events(s, AuditKind::SignInFailed).await?;
    for says in ["not started in this browser", "nonce", "another identity provider", "refused the sign-in"] {
        assert!(
            failed.iter().any(|e| e.event.reason.as_deref().is_some_and(|r| r.contains(says))),
            "no audit record saying {says:?}: {failed:?}"
        );
    }
    assert!(s.store()?.find_user_by_username("carol@corp.example").await?.is_none(), "nobody was signed in");
    Ok(())
}

#[tokio::test]
async fn an_identity_provider_that_is_down_or_slow_gets_a_page_in_time() -> TestResult {
    // Down: nothing listens. Slow: accepts and never answers.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let down = format!("http://127.0.0.1:{}", closed.local_addr()?.port());
    drop(closed);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let slow = format!("http://127.0.0.1:{}", silent.local_addr()?.port());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
            if open.len() > 16 {
                break;
            }
        }
    });
    let w = world(|providers, secret| {
        let mut d = provider("down", &down, "down.example", secret);
        d.timeout_secs = 1;
        let mut s = provider("slow", &slow, "slow.example", secret);
        s.timeout_secs = 1;
        providers.extend([d, s]);
    })
    .await?;
    for name in ["down", "slow"] {
        let mut browser = Browser::default();
        let started = std::time::Instant::now();
        let page = browser.get(&w.server, &format!("/sso/{name}/start")).await?;
        assert!(started.elapsed() < Duration::from_secs(4), "{name}: {:?}", started.elapsed());
        assert_refused(&page, 502, "could not be reached");
        assert!(page.body.contains(&format!("{name} SSO")), "{}", page.body);
    }
    let unknown = Browser::default().get(&w.server, "/sso/nope/start").await?;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    held.abort();
    Ok(())
}

#[tokio::test]
async fn an_sso_only_deployment_refuses_passwords() -> TestResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let corp = start_idp(&format!("{origin}/sso/corp/callback"), CORP_USERS).await?;
    let secrets = tempfile::tempdir()?;
    let secret_file = secrets.path().join("idp-secret");
    std::fs::write(&secret_file, IDP_SECRET)?;
    let s = TestServer::start_with(Options {
        listener: Some(listener),
        identity_providers: vec![provider("corp", &corp.issuer, "corp.example", &secret_file)],
        local_passwords: false,
        wall_clock: true,
        ..Options::default()
    })
    .await?;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let authorize = authorize_url(&s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let login = browser.get(&s, &authorize).await?.location.ok_or("login")?;
    let page = browser.get(&s, &login).await?;
    assert!(page.body.contains("Work email") && !page.body.contains("type=\"password\""), "{}", page.body);
    // A password posted anyway is refused, however right it is.
    let posted = browser.login(&s, &login, "alice", PASSWORD).await?;
    let shown = browser.get(&s, posted.location.as_deref().ok_or("back")?).await?;
    assert_eq!(shown.status, 403, "{}", shown.body);
    assert!(shown.body.contains("does not accept passwords"), "{}", shown.body);
    // An unknown domain is a clear dead end, not a password form.
    let (request, csrf) = (page.input("request").ok_or("request")?, page.input("csrf").ok_or("csrf")?);
    let posted = browser
        .post(&s, "/login/discover", &[("request", &request), ("csrf", &csrf), ("email", "x@example.test")])
        .await?;
    let shown = browser.get(&s, posted.location.as_deref().ok_or("back")?).await?;
    assert_eq!(shown.status, 400, "{}", shown.body);
    assert!(shown.body.contains("ask your administrator"), "{}", shown.body);
    Ok(())
}

/// Signs `login` in through corp for the public client and returns its tokens, leaving the
/// browser signed in at corp too.
async fn tokens_through_corp(
    w: &World,
    browser: &mut Browser,
    login: &str,
    email: &str,
) -> AnyResult<serde_json::Value> {
    let s = &w.server;
    let (verifier, challenge) = pkce()?;
    let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("scope", "crm.contacts.read")]);
    let idp_url = discover(w, browser, &authorize, email).await?;
    let callback = sign_in_at_idp(w, browser, &idp_url, login).await?;
    let back = browser.get(s, &callback).await?;
    let cont = browser.get(s, back.location.as_deref().ok_or("continue")?).await?;
    let consent = browser.get(s, cont.location.as_deref().ok_or("consent")?).await?;
    let location = browser.consent(s, &consent, &["crm.contacts.read"], "approve").await?.location.ok_or("code")?;
    let (status, tokens) = redeem(s, &location, &verifier).await?;
    assert_eq!(status, 200, "{tokens}");
    Ok(tokens)
}

async fn mcp_initialize(s: &TestServer, token: &str) -> AnyResult<u16> {
    let init = serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name":"it","version":"1"}}});
    let response = s
        .http
        .post(s.route("crm"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// The tools a token sees through the gateway's `crm` route (a 2025-11-25 session).
async fn mcp_tool_names(s: &TestServer, token: &str) -> AnyResult<Vec<String>> {
    let post = |session: Option<String>, message: serde_json::Value| {
        let mut request = s
            .http
            .post(s.route("crm"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(message.to_string());
        if let Some(id) = session {
            request = request.header("mcp-session-id", id);
        }
        request.send()
    };
    let init = serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name":"it","version":"1"}}});
    let answer = post(None, init).await?;
    let session = answer.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(answer.status().as_u16(), 200, "{}", answer.text().await?);
    post(session.clone(), serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await?;
    let text = post(session, serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).await?.text().await?;
    let body: serde_json::Value = serde_json::from_str(
        text.lines().filter_map(|l| l.strip_prefix("data:")).next_back().map(str::trim).unwrap_or(&text),
    )?;
    Ok(body["result"]["tools"]
        .as_array()
        .ok_or_else(|| format!("no tools: {body}"))?
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn back_channel_logout_from_the_provider_signs_the_user_out_everywhere() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let mut browser = Browser::default();
    let tokens = tokens_through_corp(&w, &mut browser, "erin", "erin@corp.example").await?;
    let access = tokens["access_token"].as_str().ok_or("access token")?;
    let refresh = tokens["refresh_token"].as_str().ok_or("refresh token")?;
    assert_eq!(mcp_initialize(s, access).await?, 200, "the SSO user's agent reaches the MCP server");
    assert_eq!(browser.get(s, "/account").await?.status, 200, "signed in here");

    // The user signs out at corp, which tells Portcullis over the back channel.
    let end = browser.get(s, &format!("{}/session/end", w.corp.issuer)).await?;
    let xsrf = end.input("xsrf").ok_or_else(|| format!("no logout form: {}", end.body))?;
    let confirmed = browser
        .post_to(s, &format!("{}/session/end/confirm", w.corp.issuer), &[("xsrf", &xsrf), ("logout", "yes")])
        .await?;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.introspect(access).await?["active"] == serde_json::json!(true) {
        assert!(std::time::Instant::now() < deadline, "the logout never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mcp_initialize(s, access).await?, 401, "the agent's next MCP call is refused");
    let (status, refused) =
        s.token(&[("grant_type", "refresh_token"), ("client_id", PUBLIC_CLIENT), ("refresh_token", refresh)]).await?;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_grant")), "{refused}");
    let account = browser.get(s, "/account").await?;
    assert!(account.location.is_some_and(|l| l.ends_with("/login")), "the browser session ended");
    let erin = s.store()?.find_user_by_username("erin@corp.example").await?.ok_or("erin")?;
    let logged_out = sign_in_events(s, AuditKind::SignedOutByIdp).await?;
    assert!(
        logged_out
            .iter()
            .any(|e| e.event.user_id.as_deref() == Some(&erin.id) && e.event.actor.as_deref() == Some("idp:corp")),
        "{logged_out:?}"
    );
    Ok(())
}

#[tokio::test]
async fn forged_logout_tokens_are_refused() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let mut browser = Browser::default();
    let tokens = tokens_through_corp(&w, &mut browser, "erin", "erin@corp.example").await?;
    let access = tokens["access_token"].as_str().ok_or("access token")?;
    let id_token_like = tokens["access_token"].as_str().ok_or("a JWT")?;
    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none", "typ": "logout+jwt"})),
        b64(serde_json::json!({"iss": w.corp.issuer, "aud": "portcullis", "sub": "erin", "iat": s.clock.now(),
            "exp": s.clock.now() + 60, "jti": "x", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}))
    );
    for (path, form) in [
        ("/sso/corp/backchannel-logout", vec![("logout_token", unsigned.as_str())]),
        // Signed, but by Portcullis, not by corp.
        ("/sso/corp/backchannel-logout", vec![("logout_token", id_token_like)]),
        ("/sso/corp/backchannel-logout", vec![]),
        ("/sso/nope/backchannel-logout", vec![("logout_token", unsigned.as_str())]),
    ] {
        let response = s.post_form(path, &form).await?;
        assert_eq!(response.status().as_u16(), 400, "{path} {form:?}");
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    assert_eq!(s.introspect(access).await?["active"], serde_json::json!(true), "nothing was revoked");
    Ok(())
}

const AGENT: &str = "enterprise-agent";
const AGENT_SECRET: &str = "enterprise-agent-secret-with-plenty-of-entropy-01234";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// corp accepts identity assertions; an operator's client may present them.
async fn assertion_world() -> AnyResult<World> {
    let w = world(|providers, _| {
        for p in providers.iter_mut().filter(|p| p.name == "corp") {
            p.accept_id_jag = true;
        }
    })
    .await?;
    let spec = portcullis::app::operator_client(portcullis::app::OperatorClient {
        client_name: "Enterprise agent".into(),
        secret_digest: Some(portcullis_crypto::digest(AGENT_SECRET).to_vec()),
        redirect_uris: vec![],
        grant_types: vec![portcullis_store::GrantType::JwtBearer],
        scopes: portcullis_types::ScopeSet::new(),
        resources: vec![],
        origin: portcullis_store::RegistrationOrigin::Admin,
        verified: true,
        can_introspect: false,
    });
    w.server.control()?.declare_client(&Actor::Operator, AGENT, spec).await?;
    Ok(w)
}

/// An ID-JAG signed by `idp` (see sso-idp.mjs): `spec` names the claims, and for attacks the
/// lifetime, expiry, type and key.
async fn id_jag(s: &TestServer, idp: &Idp, spec: serde_json::Value) -> AnyResult<String> {
    let answer: serde_json::Value =
        s.http.post(format!("{}/test/id-jag", idp.issuer)).json(&spec).send().await?.json().await?;
    Ok(answer["assertion"].as_str().ok_or("no assertion")?.to_owned())
}

async fn present(
    s: &TestServer,
    client: (&str, &str),
    assertion: &str,
    extra: &[(&str, &str)],
) -> AnyResult<(u16, serde_json::Value)> {
    let mut form = vec![("grant_type", JWT_BEARER), ("assertion", assertion)];
    form.extend_from_slice(extra);
    let response = s.http.post(s.url("/token")).basic_auth(client.0, Some(client.1)).form(&form).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test]
async fn identity_assertion_grants_follow_sep_990() -> TestResult {
    let w = assertion_world().await?;
    let s = &w.server;
    let crm = s.route("crm");
    let metadata: serde_json::Value =
        s.http.get(s.url("/.well-known/oauth-authorization-server")).send().await?.json().await?;
    assert!(
        metadata["grant_types_supported"].as_array().is_some_and(|g| g.iter().any(|v| v == JWT_BEARER)),
        "{metadata}"
    );
    assert_eq!(
        metadata["authorization_grant_profiles_supported"],
        serde_json::json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );

    let base = serde_json::json!({"sub": "erin", "client_id": AGENT, "aud": s.issuer, "resource": crm,
        "scope": "crm.contacts.read crm.deals.write crm.contacts.export", "groups": ["engineering"]});
    let with = |changes: serde_json::Value| {
        let mut spec = base.clone();
        if let (Some(spec), Some(changes)) = (spec.as_object_mut(), changes.as_object()) {
            for (k, v) in changes {
                spec.insert(k.clone(), v.clone());
            }
        }
        spec
    };
    // requested ∩ asserted ∩ the group ceiling: engineering may not export.
    let assertion = id_jag(s, &w.corp, base.clone()).await?;
    let (status, refused) = present(s, (AGENT, AGENT_SECRET), &assertion, &[("scope", "crm.contacts.export")]).await?;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_scope")), "{refused}");
    // That refusal spent nothing: the same assertion still works once, without the export.
    let (status, tokens) = present(s, (AGENT, AGENT_SECRET), &assertion, &[("resource", &crm)]).await?;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "crm.contacts.read crm.deals.write");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens.get("refresh_token").is_none(), "no refresh token: come back with a new assertion");
    let access = tokens["access_token"].as_str().ok_or("token")?;
    assert_eq!(mcp_initialize(s, access).await?, 200, "the token is good at its one resource");
    let introspected = s.introspect(access).await?;
    assert_eq!(introspected["aud"], serde_json::json!(crm), "{introspected}");
    let erin = s.store()?.find_user_by_username("erin@corp.example").await?;
    assert!(erin.is_none(), "an assertion's unverified email is not a username");
    let identity = s.store()?.find_federated_identity("corp", &w.corp.issuer, "erin").await?.ok_or("identity")?;
    let signed_in = sign_in_events(s, AuditKind::SignInSucceeded).await?;
    assert!(
        signed_in.iter().any(|e| e.event.user_id.as_deref() == Some(&identity.user_id)
            && e.event.reason.as_deref() == Some("identity assertion grant (SEP-990)")),
        "{signed_in:?}"
    );

    // Asking for more than is available gets what is (RFC 6749 §3.3), and says so.
    let (status, partial) = present(
        s,
        (AGENT, AGENT_SECRET),
        &id_jag(s, &w.corp, base.clone()).await?,
        &[("scope", "crm.contacts.read crm.contacts.export")],
    )
    .await?;
    assert_eq!((status, partial["scope"].as_str()), (200, Some("crm.contacts.read")), "{partial}");

    // Each refusal the draft names is invalid_grant, and issues nothing.
    let grants_before = s.store()?.list_grants(None, Some(&identity.user_id)).await?.len();
    let replay = present(s, (AGENT, AGENT_SECRET), &assertion, &[]).await?;
    let cases: Vec<(&str, (u16, serde_json::Value))> = vec![
        ("replayed", replay),
        (
            "expired",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"exp_in": -120}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "for another audience",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"aud": "https://other-as.example"}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "for another client",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"client_id": "someone-else"}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "for an unknown resource",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"resource": "https://unknown.example/mcp"}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "signed by an untrusted key",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"key": "stray"}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "not typed as an ID-JAG",
            present(s, (AGENT, AGENT_SECRET), &id_jag(s, &w.corp, with(serde_json::json!({"typ": "JWT"}))).await?, &[])
                .await?,
        ),
        (
            "long-lived",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"lifetime": 3600}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "from a provider not trusted for assertions",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.partner, with(serde_json::json!({"sub": "pat"}))).await?,
                &[],
            )
            .await?,
        ),
        (
            "with a resource other than the request's",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, base.clone()).await?,
                &[("resource", &s.other_resource)],
            )
            .await?,
        ),
        (
            "with an array for a resource",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"resource": [crm]}))).await?,
                &[("resource", &crm)],
            )
            .await?,
        ),
        (
            "with an array for a scope",
            present(
                s,
                (AGENT, AGENT_SECRET),
                &id_jag(s, &w.corp, with(serde_json::json!({"scope": ["crm.contacts.read"]}))).await?,
                &[],
            )
            .await?,
        ),
    ];
    for (case, (status, body)) in cases {
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{case}: {body}");
        assert!(body.get("access_token").is_none(), "{case}");
    }
    assert_eq!(s.store()?.list_grants(None, Some(&identity.user_id)).await?.len(), grants_before, "nothing was issued");

    // Only a client an operator allowed the grant may present one, authenticated.
    let other_client = id_jag(s, &w.corp, with(serde_json::json!({"client_id": CONFIDENTIAL_CLIENT}))).await?;
    let (status, body) = present(s, (CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET), &other_client, &[]).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("unauthorized_client")), "{body}");
    let (status, body) = present(s, (AGENT, "wrong-secret"), &id_jag(s, &w.corp, base.clone()).await?, &[]).await?;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");

    // A user disabled here is refused, whatever their IdP says.
    let erin_name = s.store()?.find_user(&identity.user_id).await?.ok_or("erin")?.username;
    s.control()?.disable_user(&Actor::Operator, &erin_name).await?;
    let (status, body) = present(s, (AGENT, AGENT_SECRET), &id_jag(s, &w.corp, base.clone()).await?, &[]).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().is_some_and(|d| d.contains("disabled")), "{body}");
    Ok(())
}

/// The MCP Python SDK's identity assertion client (mcp 2.3.0, `IdentityAssertionOAuthProvider`)
/// end to end: an ID-JAG from the test IdP, the JWT bearer grant at Portcullis (with either
/// client authentication method), and tool calls through the gateway under the group ceiling.
#[tokio::test]
async fn the_mcp_python_sdk_gets_tokens_with_an_identity_assertion() -> TestResult {
    let python = std::env::var("PORTCULLIS_PYTHON_PEER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/portcullis/python-mcp")
        })
        .join("bin/python");
    if !python.exists() {
        return Err(format!("{} is missing: run scripts/install-test-deps", python.display()).into());
    }
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/python-mcp/id_jag_client.py");
    let w = assertion_world().await?;
    let s = &w.server;
    for method in ["client_secret_basic", "client_secret_post"] {
        let run = tokio::process::Command::new(&python)
            .arg(&script)
            .env("MCP_URL", s.route("crm"))
            .env("ISSUER", &s.issuer)
            .env("CLIENT_ID", AGENT)
            .env("CLIENT_SECRET", AGENT_SECRET)
            .env("AUTH_METHOD", method)
            .env("IDP", &w.corp.issuer)
            .env("SUBJECT", "erin")
            .env("ASSERTED_SCOPE", "crm.contacts.read crm.deals.write crm.contacts.export")
            .env("GROUPS", "engineering")
            .kill_on_drop(true)
            .output();
        let output =
            tokio::time::timeout(Duration::from_secs(60), run).await.map_err(|_| "the Python client hung")??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{method}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
        // The group ceiling (engineering: read and write, no export) shapes what the agent sees.
        assert_eq!(result["tools"], serde_json::json!(["list_contacts", "update_deal"]), "{method}: {result}");
        assert!(result["call"].as_str().is_some_and(|t| t.contains("Ada")), "{method}: {result}");
        assert!(
            result["refused"] != serde_json::json!({"is_error": false}),
            "{method}: the export was refused: {result}"
        );
        let asked = result["assertions"].as_array().ok_or("assertions")?;
        assert!(!asked.is_empty(), "{method}: {result}");
        assert_eq!(asked[0]["audience"], serde_json::json!(s.issuer), "{method}: the ID-JAG's aud is our issuer");
        assert_eq!(asked[0]["resource"], serde_json::json!(s.route("crm")), "{method}");
    }
    Ok(())
}

/// The official MCP TypeScript SDK client with a user of the organisation's identity provider:
/// discovery from the gateway route, DCR, then the email question, corp's sign-in and consent,
/// Portcullis's consent offering only the group-allowed scopes, tokens, refresh. See
/// tests/peers/mcp-sdk/run.mjs (EMAIL mode).
#[tokio::test]
async fn the_mcp_typescript_sdk_authorizes_a_single_sign_on_user() -> TestResult {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/mcp-sdk");
    if !dir.join("node_modules/@modelcontextprotocol/sdk").exists() {
        return Err(format!("run `npm ci --prefix {}` (scripts/test does)", dir.display()).into());
    }
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let run = tokio::process::Command::new("node")
        .arg(dir.join("run.mjs"))
        .env("SERVER_URL", s.route("crm"))
        .env("EMAIL", "carol@corp.example")
        .env("IDP_LOGIN", "carol")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run).await.map_err(|_| "the SDK run hung")??;
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && out.contains("7 passed, 0 failed"),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Carol is in sales: of the route's scopes, only the contact read is hers to grant.
    assert!(out.lines().any(|l| l == "OFFERED crm.contacts.read"), "{out}");
    assert!(s.store()?.find_user_by_username("carol@corp.example").await?.is_some());
    Ok(())
}

/// Real Chromium: the email question, the provider's sign-in and consent, Portcullis's consent
/// offering only the group-allowed scopes, the code at the client; then the client's MCP call
/// through the gateway sees only what those scopes allow. See tests/peers/browser/sso.mjs.
#[tokio::test]
async fn chromium_signs_in_through_the_company_idp_and_calls_mcp() -> TestResult {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!("run `npm ci --prefix {}` (scripts/test does)", dir.display()).into());
    }
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)".into());
    }
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let (verifier, challenge) = pkce()?;
    let scope = "crm.contacts.read crm.deals.write crm.contacts.export";
    let url = authorize_url(s, PUBLIC_CLIENT, "http://127.0.0.1:__PORT__/callback", &challenge, &[("scope", scope)]);
    let shots = std::env::var("PORTCULLIS_SCREENSHOT_DIR").unwrap_or_default();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("sso.mjs"))
        .env("AUTHORIZE_URL", &url)
        .env("EMAIL", "carol@corp.example")
        .env("IDP_LOGIN", "carol")
        .env("IDP_ORIGIN", &w.corp.issuer)
        .env("EXPECT_OFFERED", "crm.contacts.read")
        .kill_on_drop(true);
    if !shots.is_empty() {
        command.env("SCREENSHOT_DIR", &shots);
    }
    let output =
        tokio::time::timeout(Duration::from_secs(90), command.output()).await.map_err(|_| "Chromium hung")??;
    let out = String::from_utf8_lossy(&output.stdout);
    println!("{out}");
    assert!(
        output.status.success() && out.contains("5 passed, 0 failed"),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let callback = out.lines().find_map(|l| l.strip_prefix("CALLBACK ")).ok_or("no callback")?;
    let q = query(callback)?;
    let (status, tokens) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", q.get("code").ok_or("code")?),
            ("redirect_uri", callback.split('?').next().ok_or("callback")?),
            ("code_verifier", &verifier),
        ])
        .await?;
    assert_eq!((status, tokens["scope"].as_str()), (200, Some("crm.contacts.read")), "{tokens}");
    let access = tokens["access_token"].as_str().ok_or("token")?;
    // The MCP call through the gateway, as the SSO user's agent.
    let names = mcp_tool_names(s, access).await?;
    assert_eq!(names, ["list_contacts"], "the group ceiling reaches the tools the agent sees");
    Ok(())
}

/// A provider that answers like corp but whose token endpoint hands out ID tokens signed by
/// whichever real IdP the test chooses: it publishes corp's keys (its discovery document is
/// corp's, with its own issuer and endpoints).
struct Impostor {
    base: String,
    signer: std::sync::Arc<std::sync::Mutex<String>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Impostor {
    async fn start(corp: &Idp) -> AnyResult<Self> {
        use axum::extract::{Query, State};
        use axum::response::{IntoResponse, Redirect};
        #[derive(Clone)]
        struct Shared {
            base: String,
            corp_document: serde_json::Value,
            nonce: std::sync::Arc<std::sync::Mutex<String>>,
            signer: std::sync::Arc<std::sync::Mutex<String>>,
            http: reqwest::Client,
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
        let http = reqwest::Client::new();
        let corp_document: serde_json::Value =
            http.get(format!("{}/.well-known/openid-configuration", corp.issuer)).send().await?.json().await?;
        let signer = std::sync::Arc::new(std::sync::Mutex::new(corp.issuer.clone()));
        let shared = Shared {
            base: base.clone(),
            corp_document,
            nonce: std::sync::Arc::default(),
            signer: signer.clone(),
            http,
        };
        let discovery = |State(s): State<Shared>| async move {
            let mut doc = s.corp_document.clone();
            doc["issuer"] = serde_json::json!(s.base);
            doc["authorization_endpoint"] = serde_json::json!(format!("{}/authorize", s.base));
            doc["token_endpoint"] = serde_json::json!(format!("{}/token", s.base));
            doc["authorization_response_iss_parameter_supported"] = serde_json::json!(true);
            axum::Json(doc)
        };
        let authorize = |State(s): State<Shared>, Query(q): Query<std::collections::HashMap<String, String>>| async move {
            if let Ok(mut nonce) = s.nonce.lock() {
                *nonce = q.get("nonce").cloned().unwrap_or_default();
            }
            let back = format!(
                "{}?code=impostor-code&state={}&iss={}",
                q.get("redirect_uri").cloned().unwrap_or_default(),
                q.get("state").cloned().unwrap_or_default(),
                s.base
            );
            Redirect::to(&back)
        };
        let token = |State(s): State<Shared>| async move {
            let nonce = s.nonce.lock().map(|n| n.clone()).unwrap_or_default();
            let signer = s.signer.lock().map(|n| n.clone()).unwrap_or_default();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let claims = serde_json::json!({"iss": s.base, "aud": "portcullis", "sub": "impostor-user", "nonce": nonce,
                "iat": now, "exp": now + 300, "email": "victim@impostor.example", "email_verified": true});
            let signed: serde_json::Value = match s
                .http
                .post(format!("{signer}/test/sign"))
                .json(&serde_json::json!({"claims": claims}))
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            axum::Json(serde_json::json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 300,
                "id_token": signed["jwt"]}))
            .into_response()
        };
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", axum::routing::get(discovery))
            .route("/authorize", axum::routing::get(authorize))
            .route("/token", axum::routing::post(token))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { base, signer, _task: task })
    }

    fn sign_with(&self, idp: &Idp) {
        if let Ok(mut signer) = self.signer.lock() {
            *signer = idp.issuer.clone();
        }
    }
}

/// An ID token signed by another identity provider (here: partner's key, presented by a
/// provider that publishes corp's) is refused, recorded, and signs nobody in; the same token
/// signed with the provider's own published key passes, so it is the key that decides.
/// One sign-in at the impostor, returning Portcullis's answer at the callback.
async fn impostor_sign_in(s: &TestServer) -> AnyResult<Page> {
    let mut browser = Browser::default();
    let to_idp = browser.get(s, "/sso/impostor/start").await?.location.ok_or("no redirect to the provider")?;
    let callback = s.http.get(&to_idp).send().await?;
    let back = callback.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no callback")?.to_owned();
    browser.get(s, &back).await
}

/// An ID token signed by another identity provider (here: partner's key, presented by a
/// provider that publishes corp's) is refused, recorded, and signs nobody in; the same token
/// signed with the provider's own published key passes, so it is the key that decides.
#[tokio::test]
async fn an_id_token_signed_by_another_provider_is_refused() -> TestResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let corp = start_idp(&format!("{origin}/sso/corp/callback"), CORP_USERS).await?;
    let partner = start_idp(&format!("{origin}/sso/partner/callback"), PARTNER_USERS).await?;
    let impostor = Impostor::start(&corp).await?;
    let secrets = tempfile::tempdir()?;
    let secret_file = secrets.path().join("idp-secret");
    std::fs::write(&secret_file, IDP_SECRET)?;
    let mut impostor_provider = provider("impostor", &impostor.base, "impostor.example", &secret_file);
    impostor_provider.unlinkable_email = portcullis::config::UnlinkableEmailMode::NewUser;
    let s = TestServer::start_with(Options {
        listener: Some(listener),
        identity_providers: vec![provider("corp", &corp.issuer, "corp.example", &secret_file), impostor_provider],
        wall_clock: true,
        ..Options::default()
    })
    .await?;

    impostor.sign_with(&partner);
    let refused = impostor_sign_in(&s).await?;
    assert_refused(&refused, 400, "signature");
    let failed = sign_in_events(&s, AuditKind::SignInFailed).await?;
    assert!(
        failed.iter().any(|e| e.event.target.as_deref() == Some("impostor")
            && e.event.reason.as_deref().is_some_and(|r| r.contains("signature"))),
        "{failed:?}"
    );
    assert!(s.store()?.find_federated_identity("impostor", &impostor.base, "impostor-user").await?.is_none());

    // The control: the provider's own published key passes.
    impostor.sign_with(&corp);
    let accepted = impostor_sign_in(&s).await?;
    assert_eq!(accepted.status, 303, "{}", accepted.body);
    assert!(s.store()?.find_federated_identity("impostor", &impostor.base, "impostor-user").await?.is_some());
    Ok(())
}

/// `private_key_jwt` toward the provider: Portcullis redeems the code with an assertion signed
/// by its own key, which oidc-provider reads from `<issuer>/jwks.json`; no secret is shared.
#[tokio::test]
async fn portcullis_can_authenticate_to_the_provider_with_private_key_jwt() -> TestResult {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let jwks_uri = format!("{origin}/jwks.json");
    let corp = start_idp_with(
        &format!("{origin}/sso/corp/callback"),
        CORP_USERS,
        &[("CLIENT_AUTH", "private_key_jwt"), ("JWKS_URI", &jwks_uri)],
    )
    .await?;
    let secrets = tempfile::tempdir()?;
    let mut corp_provider = provider("corp", &corp.issuer, "corp.example", &secrets.path().join("unused"));
    corp_provider.client_secret_file = None;
    corp_provider.private_key_jwt = true;
    let server = TestServer::start_with(Options {
        listener: Some(listener),
        identity_providers: vec![corp_provider],
        wall_clock: true,
        ..Options::default()
    })
    .await?;
    let w = World {
        server,
        partner: start_idp(&format!("{origin}/sso/partner/callback"), PARTNER_USERS).await?,
        corp,
        _secrets: secrets,
    };
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let authorize = authorize_url(&w.server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let login = browser.get(&w.server, &authorize).await?.location.ok_or("login")?;
    let page = browser.get(&w.server, &login).await?;
    let (request, csrf) = (page.input("request").ok_or("request")?, page.input("csrf").ok_or("csrf")?);
    let discovered = browser
        .post(&w.server, "/login/discover", &[("request", &request), ("csrf", &csrf), ("email", "carol@corp.example")])
        .await?;
    let to_idp = browser.get(&w.server, discovered.location.as_deref().ok_or("start")?).await?.location.ok_or("idp")?;
    let callback = sign_in_at_idp(&w, &mut browser, &to_idp, "carol").await?;
    let back = browser.get(&w.server, &callback).await?;
    assert_eq!(back.status, 303, "{}", back.body);
    assert!(w.server.store()?.find_federated_identity("corp", &w.corp.issuer, "carol").await?.is_some());
    Ok(())
}

/// A federated sign-in, and every grant made in it, ends after the provider's
/// `max_session_secs`: the refresh token stops working and the browser session is gone, so
/// the user signs in at the provider again (and group changes take effect).
#[tokio::test]
async fn federated_grants_end_with_the_sign_in() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let mut browser = Browser::default();
    let tokens = tokens_through_corp(&w, &mut browser, "erin", "erin@corp.example").await?;
    let refresh = |token: String| async move {
        s.token(&[("grant_type", "refresh_token"), ("client_id", PUBLIC_CLIENT), ("refresh_token", &token)]).await
    };
    s.clock.advance(1800);
    let (status, rotated) = refresh(tokens["refresh_token"].as_str().ok_or("refresh token")?.to_owned()).await?;
    assert_eq!((status, rotated["expires_in"].as_i64()), (200, Some(300)), "within the bound: {rotated}");
    // Close to the bound, the access token ends with it, not 5 minutes later.
    s.clock.advance(1700);
    let (status, rotated) =
        refresh(rotated["refresh_token"].as_str().ok_or("rotated refresh token")?.to_owned()).await?;
    let expires_in = rotated["expires_in"].as_i64().ok_or("expires_in")?;
    assert!(status == 200 && expires_in <= 100, "cut to the sign-in's end: {rotated}");
    s.clock.advance(101);
    let (status, refused) =
        refresh(rotated["refresh_token"].as_str().ok_or("rotated refresh token")?.to_owned()).await?;
    assert_eq!((status, refused["error"].as_str()), (400, Some("invalid_grant")), "past max_session_secs: {refused}");
    let account = browser.get(s, "/account").await?;
    assert!(account.location.is_some_and(|l| l.ends_with("/login")), "the browser session ended too");
    Ok(())
}

/// A user whose groups allow none of what the application asks for is sent back with
/// access_denied, even when OpenID Connect's own scopes were asked too.
#[tokio::test]
async fn a_user_whose_groups_allow_nothing_is_denied() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let mut browser = Browser::default();
    let (_, challenge) = pkce()?;
    let scope = "openid offline_access crm.contacts.read";
    let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("scope", scope)]);
    let idp_url = discover(&w, &mut browser, &authorize, "nogroups@corp.example").await?;
    let callback = sign_in_at_idp(&w, &mut browser, &idp_url, "nogroups").await?;
    let back = browser.get(s, &callback).await?;
    let cont = browser.get(s, back.location.as_deref().ok_or("continue")?).await?;
    let location = cont.location.ok_or("a redirect to the client")?;
    assert!(location.starts_with(PUBLIC_REDIRECT), "{location}");
    assert_eq!(query(&location)?.get("error").map(String::as_str), Some("access_denied"), "{location}");
    Ok(())
}

/// Groups remembered from an earlier sign-in bound an identity assertion that carries none
/// only while a sign-in would still be valid; older ones may be stale, so they bound nothing.
#[tokio::test]
async fn remembered_groups_go_stale_for_identity_assertions() -> TestResult {
    let w = assertion_world().await?;
    let s = &w.server;
    let crm = s.route("crm");
    let with_groups = serde_json::json!({"sub": "erin", "client_id": AGENT, "aud": s.issuer, "resource": crm,
        "scope": "crm.contacts.read", "groups": ["engineering"]});
    let (status, body) = present(s, (AGENT, AGENT_SECRET), &id_jag(s, &w.corp, with_groups).await?, &[]).await?;
    assert_eq!(status, 200, "{body}");
    // The test IdP signs with our (moved) clock.
    let without_groups = |now: i64| {
        serde_json::json!({"sub": "erin", "client_id": AGENT, "aud": s.issuer, "resource": crm,
            "scope": "crm.contacts.read", "now": now})
    };
    // Within max_session_secs of the groups' assertion: remembered.
    s.clock.advance(600);
    let (status, body) =
        present(s, (AGENT, AGENT_SECRET), &id_jag(s, &w.corp, without_groups(s.clock.now())).await?, &[]).await?;
    assert_eq!((status, body["scope"].as_str()), (200, Some("crm.contacts.read")), "{body}");
    // Past it: nothing is remembered, so nothing can be granted.
    s.clock.advance(3600);
    let (status, body) =
        present(s, (AGENT, AGENT_SECRET), &id_jag(s, &w.corp, without_groups(s.clock.now())).await?, &[]).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
    Ok(())
}

/// Two first sign-ins of one new identity at once (two tabs, a double click) end as one user,
/// not as a conflict.
#[tokio::test]
async fn simultaneous_first_sign_ins_make_one_user() -> TestResult {
    let s = TestServer::start().await?;
    let control = s.control()?;
    let policy = portcullis_control::LinkPolicy {
        email_domains: vec!["corp.example".into()],
        jit: true,
        unlinkable_email: portcullis_control::UnlinkableEmail::Refuse,
    };
    let asserted = portcullis_control::AssertedIdentity {
        idp: "corp".into(),
        issuer: "https://corp.example".into(),
        subject: "twin".into(),
        email: Some("twin@corp.example".into()),
        email_verified: true,
        name: None,
        groups: Some(vec!["engineering".into()]),
        method: portcullis_control::SignInMethod::Browser,
    };
    let (first, second) = tokio::join!(
        control.federated_sign_in(&policy, &asserted, None),
        control.federated_sign_in(&policy, &asserted, None)
    );
    let (first, second) = (first?.map_err(|e| e.to_string())?, second?.map_err(|e| e.to_string())?);
    assert_eq!(first.id, second.id, "one user");
    assert_eq!(s.store()?.find_users_by_email("twin@corp.example").await?.len(), 1);
    Ok(())
}

/// A client that asks for a fresh (`prompt=login`) or recent (`max_age`) sign-in gets one at
/// the identity provider too, not a silent single sign-on from an old session there.
#[tokio::test]
async fn prompt_login_and_max_age_reach_the_provider() -> TestResult {
    let w = world(|_, _| {}).await?;
    let s = &w.server;
    let (_, challenge) = pkce()?;
    for (extra, expected) in
        [(vec![("prompt", "login")], ("prompt", "login")), (vec![("max_age", "60")], ("max_age", "60"))]
    {
        let mut browser = Browser::default();
        let authorize = authorize_url(s, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &extra);
        let idp_url = discover(&w, &mut browser, &authorize, "carol@corp.example").await?;
        let q: std::collections::BTreeMap<_, _> = url::Url::parse(&idp_url)?.query_pairs().into_owned().collect();
        assert_eq!(q.get(expected.0).map(String::as_str), Some(expected.1), "{extra:?}: {idp_url}");
        // And the sign-in completes: the request is satisfied by this fresh sign-in.
        let callback = sign_in_at_idp(&w, &mut browser, &idp_url, "carol").await?;
        let back = browser.get(s, &callback).await?;
        let cont = browser.get(s, back.location.as_deref().ok_or("continue")?).await?;
        assert!(cont.location.as_deref().is_some_and(|l| l.contains("/consent?")), "{extra:?}: {:?}", cont.location);
    }
    Ok(())
}
