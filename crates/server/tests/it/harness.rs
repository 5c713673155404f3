//! Boots a Portcullis on a loopback port with a fresh database and a movable clock, and drives
//! it the way a browser and an OAuth client would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::app::{self, RunningServer};
use portcullis::config::{ClientConfig, Config, ResourceConfig, ScopeConfig};
pub use portcullis_control::{Actor, Control, NewUser};
use portcullis_crypto::{digest, random_token};
use portcullis_store::Store;

pub use portcullis_types::Clock;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

pub const PASSWORD: &str = "correct horse battery staple";
pub const SCOPES: &[&str] = &["crm.contacts.read", "crm.deals.write", "crm.contacts.export"];
pub const PUBLIC_CLIENT: &str = "public-app";
pub const CONFIDENTIAL_CLIENT: &str = "web-app";
pub const CONFIDENTIAL_SECRET: &str = "web-app-secret-with-plenty-of-entropy-0123456789";
pub const MACHINE_CLIENT: &str = "machine";
pub const MACHINE_SECRET: &str = "machine-secret-with-plenty-of-entropy-0123456789";
pub const RESOURCE_SERVER: &str = "resource-server";
pub const RESOURCE_SERVER_SECRET: &str = "resource-server-secret-with-plenty-of-entropy-0123";
/// Confidential clients that may exchange tokens (RFC 8693): agents others delegate to.
pub const DELEGATE_CLIENT: &str = "delegate";
pub const DELEGATE_2_CLIENT: &str = "delegate-2";
pub const DELEGATE_SECRET: &str = "delegate-secret-with-plenty-of-entropy-0123456789";
pub const PUBLIC_REDIRECT: &str = "http://127.0.0.1/callback";
pub const WEB_REDIRECT: &str = "https://app.example.test/cb";

#[derive(Debug)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct TestServer {
    pub running: Option<RunningServer>,
    pub issuer: String,
    pub resource: String,
    pub other_resource: String,
    pub clock: Arc<TestClock>,
    pub http: reqwest::Client,
    pub alice_id: String,
    _dir: tempfile::TempDir,
}

fn backend() -> String {
    std::env::var("PORTCULLIS_TEST_DATABASE").unwrap_or_else(|_| "sqlite".into())
}

pub async fn database_url(dir: &std::path::Path) -> AnyResult<String> {
    match backend().as_str() {
        "sqlite" => Ok(format!("sqlite://{}", dir.join("it.db").display())),
        "postgres" => Ok(fresh_postgres_schema().await?.0),
        other => Err(format!("PORTCULLIS_TEST_DATABASE={other:?}: use sqlite or postgres").into()),
    }
}

fn postgres_base() -> String {
    std::env::var("PORTCULLIS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema on the test PostgreSQL: its URL, and the server's address.
pub async fn fresh_postgres_schema() -> AnyResult<(String, std::net::SocketAddr)> {
    let base = postgres_base();
    let schema = format!("it_{}", random_token(9)?.to_lowercase().replace(['-', '_'], "x"));
    let admin = Store::connect(&base, 1)
        .await
        .map_err(|e| format!("PostgreSQL is required (PORTCULLIS_TEST_POSTGRES_URL or 127.0.0.1:5432): {e}"))?;
    admin.execute_admin_sql(&format!("CREATE SCHEMA {schema}")).await?;
    admin.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let parsed = url::Url::parse(&base)?;
    let host = parsed.host_str().ok_or("no host in the PostgreSQL URL")?;
    let port = parsed.port().unwrap_or(5432);
    let addr = tokio::net::lookup_host((host, port)).await?.next().ok_or("the PostgreSQL host does not resolve")?;
    Ok((format!("{base}{sep}options=-c%20search_path%3D{schema}"), addr))
}

/// `url` with its host and port replaced by `addr` (to go through a [`Relay`]).
pub fn via(url: &str, addr: std::net::SocketAddr) -> AnyResult<String> {
    let mut parsed = url::Url::parse(url)?;
    parsed.set_host(Some(&addr.ip().to_string()))?;
    parsed.set_port(Some(addr.port())).map_err(|_| "cannot set the port")?;
    Ok(parsed.to_string())
}

/// What a [`Relay`] does with the bytes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    Forward,
    /// Connections stay open but nothing passes, as when a database host vanishes without
    /// closing anything; new connections are accepted and left hanging.
    BlackHole,
}

/// A TCP relay on loopback that the test owns, in front of a real server: it can cut every
/// connection or turn into a black hole, so a test can take the database away from a node
/// without touching the shared server.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    mode: tokio::sync::watch::Sender<RelayMode>,
    cut: tokio::sync::broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.cut.send(());
    }
}

impl Relay {
    pub async fn start(target: std::net::SocketAddr) -> AnyResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = tokio::sync::watch::channel(RelayMode::Forward);
        let (cut, _) = tokio::sync::broadcast::channel(4);
        let (mode_tx, cut_tx) = (mode.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut mode = mode_tx.subscribe();
                let mut cut = cut_tx.subscribe();
                tokio::spawn(async move {
                    // A connection made in black-hole mode hangs until the relay forwards again,
                    // then is closed (the client reconnects).
                    if *mode.borrow() == RelayMode::BlackHole {
                        let _ = mode.wait_for(|m| *m == RelayMode::Forward).await;
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let forward = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        }
                    };
                    let black_hole = tokio::select! {
                        _ = forward => false,
                        _ = cut.recv() => false,
                        _ = mode.wait_for(|m| *m == RelayMode::BlackHole) => true,
                    };
                    if black_hole {
                        // The sockets stay open, passing nothing, until forwarding resumes or
                        // the relay cuts; then they are closed.
                        tokio::select! {
                            _ = mode.wait_for(|m| *m == RelayMode::Forward) => {}
                            _ = cut.recv() => {}
                        }
                    }
                    drop((client_read, client_write, server_read, server_write));
                });
            }
        });
        Ok(Self { addr, mode, cut, task })
    }

    /// Closes every open connection at once (new ones are accepted as before).
    pub fn cut(&self) {
        let _ = self.cut.send(());
    }

    pub fn set_mode(&self, mode: RelayMode) {
        let _ = self.mode.send(mode);
    }
}

pub struct Options {
    pub issuer_path: &'static str,
    /// Announce an https issuer (the listener stays plain http: TLS is terminated in front).
    pub https: bool,
    pub access_token_ttl: i64,
    pub per_account_per_minute: u32,
    pub per_address_per_minute: u32,
    pub registration: portcullis::config::RegistrationConfig,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub cimd: portcullis::config::CimdConfig,
    /// Another resource (with the CRM scopes), e.g. one whose RFC 9728 metadata a test serves.
    pub extra_resource: Option<String>,
    /// Gateway routes; a route replaces the `[[resources]]` entry of the same URL.
    pub upstreams: Vec<portcullis::config::UpstreamConfig>,
    pub gateway: portcullis::config::GatewayConfig,
    /// A listener bound beforehand, when a peer must know the port first.
    pub listener: Option<tokio::net::TcpListener>,
    /// A database of the test's own (say, reached through a [`Relay`]) instead of a fresh one.
    pub database_url: Option<String>,
    pub database: Option<portcullis::config::DatabaseConfig>,
    pub identity_providers: Vec<portcullis::config::IdentityProviderConfig>,
    pub local_passwords: bool,
    /// Start the clock at the real time (for peers that sign with theirs, such as an IdP).
    pub wall_clock: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            issuer_path: "",
            https: false,
            access_token_ttl: 300,
            per_account_per_minute: 10,
            per_address_per_minute: 30,
            registration: Default::default(),
            trusted_proxies: Vec::new(),
            cimd: Default::default(),
            extra_resource: None,
            upstreams: Vec::new(),
            gateway: Default::default(),
            listener: None,
            database_url: None,
            database: None,
            identity_providers: Vec::new(),
            local_passwords: true,
            wall_clock: false,
        }
    }
}

impl TestServer {
    pub async fn start() -> AnyResult<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> AnyResult<Self> {
        let dir = tempfile::tempdir()?;
        let listener = match options.listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        };
        let port = listener.local_addr()?.port();
        let scheme = if options.https { "https" } else { "http" };
        let issuer = format!("{scheme}://127.0.0.1:{port}{}", options.issuer_path);
        let resource = format!("http://127.0.0.1:{port}/mcp/crm");
        let other_resource = format!("http://127.0.0.1:{port}/mcp/billing");
        let scope = |name: &str, description: &str| ScopeConfig { name: name.into(), description: description.into() };
        let mut config = Config::default();
        config.server.issuer = issuer.clone();
        config.server.data_dir = dir.path().join("data");
        if let Some(database) = options.database {
            config.database = database;
        }
        config.database.url = match options.database_url {
            Some(url) => url,
            None => database_url(dir.path()).await?,
        };
        config.tokens.access_token_ttl_secs = options.access_token_ttl;
        config.login.per_account_per_minute = options.per_account_per_minute;
        config.login.per_address_per_minute = options.per_address_per_minute;
        config.registration = options.registration;
        config.server.trusted_proxies = options.trusted_proxies;
        config.cimd = options.cimd;
        config.resources = vec![
            ResourceConfig {
                uri: resource.clone(),
                name: "Demo CRM".into(),
                scopes: vec![
                    scope("crm.contacts.read", "Read your CRM contacts"),
                    scope("crm.deals.write", "Create and change deals in your CRM"),
                    scope("crm.contacts.export", "Export your whole contact list"),
                ],
                // A request without `scope` is offered these (never the export).
                default_scopes: Some(vec!["crm.contacts.read".into(), "crm.deals.write".into()]),
            },
            ResourceConfig {
                uri: other_resource.clone(),
                name: "Billing".into(),
                scopes: vec![scope("billing.read", "Read invoices")],
                default_scopes: None,
            },
        ];
        if let Some(uri) = options.extra_resource {
            let mut extra = config.resources.first().cloned().ok_or("resources")?;
            extra.uri = uri;
            extra.name = "Extra".into();
            config.resources.push(extra);
        }
        let hex = |s: &str| digest(s).iter().map(|b| format!("{b:02x}")).collect::<String>();
        config.clients = vec![
            ClientConfig {
                client_id: PUBLIC_CLIENT.into(),
                client_name: "Desktop <Agent>".into(),
                redirect_uris: vec![PUBLIC_REDIRECT.into()],
                scopes: vec![],
                resources: vec![resource.clone(), format!("{issuer}/admin/api")],
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                client_secret_env: None,
                client_secret_sha256: None,
                can_introspect: false,
                verified: false,
            },
            ClientConfig {
                client_id: CONFIDENTIAL_CLIENT.into(),
                client_name: "Web app".into(),
                redirect_uris: vec![WEB_REDIRECT.into(), "http://127.0.0.1:9/callback".into()],
                scopes: vec![],
                resources: vec![],
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                client_secret_env: None,
                client_secret_sha256: Some(hex(CONFIDENTIAL_SECRET)),
                can_introspect: false,
                verified: true,
            },
            ClientConfig {
                client_id: MACHINE_CLIENT.into(),
                client_name: "Reporting agent".into(),
                redirect_uris: vec![],
                scopes: vec!["crm.contacts.read".into()],
                resources: vec![resource.clone()],
                grant_types: vec!["client_credentials".into()],
                client_secret_env: None,
                client_secret_sha256: Some(hex(MACHINE_SECRET)),
                can_introspect: false,
                verified: true,
            },
            ClientConfig {
                client_id: RESOURCE_SERVER.into(),
                client_name: "Gateway".into(),
                redirect_uris: vec![],
                scopes: vec![],
                resources: vec![],
                grant_types: vec!["client_credentials".into()],
                client_secret_env: None,
                client_secret_sha256: Some(hex(RESOURCE_SERVER_SECRET)),
                can_introspect: true,
                verified: true,
            },
        ];
        for delegate in [DELEGATE_CLIENT, DELEGATE_2_CLIENT] {
            config.clients.push(ClientConfig {
                client_id: delegate.into(),
                client_name: format!("Delegate {delegate}"),
                redirect_uris: vec![],
                scopes: vec![],
                resources: vec![],
                grant_types: vec!["urn:ietf:params:oauth:grant-type:token-exchange".into()],
                client_secret_env: None,
                client_secret_sha256: Some(hex(DELEGATE_SECRET)),
                can_introspect: false,
                verified: true,
            });
        }
        if !options.upstreams.is_empty() {
            let routes: Vec<String> =
                options.upstreams.iter().map(|u| format!("http://127.0.0.1:{port}/mcp/{}", u.name)).collect();
            config.resources.retain(|r| !routes.contains(&r.uri));
            for c in &mut config.clients {
                c.resources.clear();
            }
        }
        config.upstreams = options.upstreams;
        config.gateway = options.gateway;
        config.identity_providers = options.identity_providers;
        config.login.local_passwords = options.local_passwords;
        config.validate()?;
        let start = if options.wall_clock {
            i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?
        } else {
            1_900_000_000
        };
        let clock = Arc::new(TestClock(AtomicI64::new(start)));
        let running = app::start_on(listener, config.clone(), clock.clone()).await?;
        let hasher = app::password_hasher(&config)?;
        let alice = NewUser {
            username: "alice".into(),
            display_name: Some("Alice Example".into()),
            email: Some("alice@example.test".into()),
            password_hash: Some(hasher.hash_blocking(PASSWORD)?),
            is_admin: true,
        };
        let alice = running.server.control().add_user(&Actor::Operator, alice).await?;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self {
            running: Some(running),
            issuer,
            resource,
            other_resource,
            clock,
            http,
            alice_id: alice.id,
            _dir: dir,
        })
    }

    /// The public URL of a gateway route (also its resource URI).
    pub fn route(&self, name: &str) -> String {
        format!("{}/mcp/{name}", self.issuer.replacen("https://", "http://", 1))
    }

    pub fn gateway(&self) -> AnyResult<&portcullis_gateway::Gateway> {
        Ok(self.running.as_ref().ok_or("server stopped")?.gateway.as_ref().ok_or("no gateway")?)
    }

    pub fn store(&self) -> AnyResult<&Store> {
        Ok(self.running.as_ref().ok_or("server stopped")?.server.store())
    }

    /// The control layer, for changes made as an operator would make them.
    pub fn control(&self) -> AnyResult<&Control> {
        Ok(self.running.as_ref().ok_or("server stopped")?.server.control())
    }

    /// The URL to reach `path` on (plain http even for an https issuer).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.replacen("https://", "http://", 1))
    }

    pub fn origin(&self) -> String {
        let u = url::Url::parse(&self.issuer).map(|u| u.origin().ascii_serialization());
        u.unwrap_or_default()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> AnyResult<reqwest::Response> {
        Ok(self.http.post(self.url(path)).form(form).send().await?)
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> AnyResult<(u16, serde_json::Value)> {
        let response = self.post_form("/token", form).await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// Introspects as a resource server allowed to see every token.
    pub async fn introspect(&self, token: &str) -> AnyResult<serde_json::Value> {
        self.introspect_as(RESOURCE_SERVER, RESOURCE_SERVER_SECRET, token).await
    }

    pub async fn introspect_as(&self, client: &str, secret: &str, token: &str) -> AnyResult<serde_json::Value> {
        let response = self
            .http
            .post(self.url("/introspect"))
            .basic_auth(client, Some(secret))
            .form(&[("token", token)])
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        Ok(response.json().await?)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move {
                let _ = running.shutdown().await;
            });
        }
    }
}

/// PKCE pair.
pub fn pkce() -> AnyResult<(String, String)> {
    let verifier = random_token(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(aws_sha256(verifier.as_bytes()));
    Ok((verifier, challenge))
}

fn aws_sha256(data: &[u8]) -> Vec<u8> {
    // The verifier is ASCII, so digest() of the string is the SHA-256 the spec means.
    digest(std::str::from_utf8(data).unwrap_or_default()).to_vec()
}

/// A browser: a cookie jar and manual redirects.
#[derive(Default)]
pub struct Browser {
    pub cookies: BTreeMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Page {
    /// The value of a hidden input.
    pub fn input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body.get(start..)?.find('"')? + start;
        Some(html_unescape(self.body.get(start..end)?))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn read(&mut self, response: reqwest::Response) -> AnyResult<Page> {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str()?;
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().await?;
        Ok(Page { status, location, body, headers })
    }

    pub async fn get(&mut self, server: &TestServer, url: &str) -> AnyResult<Page> {
        let url = absolute(server, url);
        let response = server.http.get(url).header("cookie", self.cookie_header()).send().await?;
        self.read(response).await
    }

    /// POSTs a form to another site (an identity provider's page), with this browser's cookies.
    pub async fn post_to(&mut self, server: &TestServer, url: &str, form: &[(&str, &str)]) -> AnyResult<Page> {
        let response = server.http.post(url).header("cookie", self.cookie_header()).form(form).send().await?;
        self.read(response).await
    }

    pub async fn post(&mut self, server: &TestServer, path: &str, form: &[(&str, &str)]) -> AnyResult<Page> {
        let response = server
            .http
            .post(absolute(server, path))
            .header("cookie", self.cookie_header())
            .header("origin", server.origin())
            .form(form)
            .send()
            .await?;
        self.read(response).await
    }

    /// Signs in on a login page reached at `login_url`; returns the POST's answer.
    pub async fn login(
        &mut self,
        server: &TestServer,
        login_url: &str,
        username: &str,
        password: &str,
    ) -> AnyResult<Page> {
        let page = self.get(server, login_url).await?;
        assert_eq!(page.status, 200, "login page: {}", page.body);
        let request = page.input("request").ok_or("no request field")?;
        let csrf = page.input("csrf").ok_or("no csrf field")?;
        let action = format!("{}/login", url::Url::parse(&server.issuer)?.path().trim_end_matches('/'));
        self.post(
            server,
            &action,
            &[("request", &request), ("csrf", &csrf), ("username", username), ("password", password)],
        )
        .await
    }

    /// Approves the consent page `page` with `grant` ticked.
    pub async fn consent(
        &mut self,
        server: &TestServer,
        page: &Page,
        grant: &[&str],
        decision: &str,
    ) -> AnyResult<Page> {
        let request = page.input("request").ok_or("no request field on consent page")?;
        let csrf = page.input("csrf").ok_or("no csrf field")?;
        let mut form = vec![("request", request.as_str()), ("csrf", csrf.as_str()), ("decision", decision)];
        for scope in grant {
            form.push(("scope", scope));
        }
        let action = format!("{}/consent", url::Url::parse(&server.issuer)?.path().trim_end_matches('/'));
        self.post(server, &action, &form).await
    }
}

/// A redirect to the client, not to one of our own pages: our pages redirect by path, a client
/// redirect is an absolute URL.
fn is_client_redirect(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

fn absolute(server: &TestServer, url: &str) -> String {
    if url.starts_with("http") { url.to_owned() } else { format!("{}{url}", server.origin()) }
}

/// Query parameters of a redirect.
pub fn query(location: &str) -> AnyResult<BTreeMap<String, String>> {
    Ok(url::Url::parse(location)?.query_pairs().into_owned().collect())
}

/// An authorization URL for `client` with sensible defaults; `extra` overrides or adds.
pub fn authorize_url(
    server: &TestServer,
    client: &str,
    redirect: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut params: BTreeMap<&str, String> = BTreeMap::new();
    params.insert("response_type", "code".into());
    params.insert("client_id", client.into());
    params.insert("redirect_uri", redirect.into());
    params.insert("code_challenge", challenge.into());
    params.insert("code_challenge_method", "S256".into());
    params.insert("state", "state-123".into());
    params.insert("scope", "crm.contacts.read crm.deals.write".into());
    params.insert("resource", server.resource.clone());
    for (k, v) in extra {
        if v.is_empty() {
            params.remove(k);
        } else {
            params.insert(k, (*v).to_owned());
        }
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
    server.url(&format!("/authorize?{query}"))
}

/// Starts an authorization in a browser with nobody signed in, signs Alice in, and returns the
/// consent page it leads to.
pub async fn sign_in_to_consent(server: &TestServer, browser: &mut Browser, url: &str) -> AnyResult<Page> {
    let first = browser.get(server, url).await?;
    let posted =
        browser.login(server, first.location.as_deref().ok_or("no redirect to sign in")?, "alice", PASSWORD).await?;
    let cont = browser.get(server, posted.location.as_deref().ok_or("no redirect after sign-in")?).await?;
    browser.get(server, cont.location.as_deref().ok_or("no redirect to consent")?).await
}

/// Runs the whole browser flow (sign in if asked, consent to `grant` if asked) and returns
/// the final redirect to the client.
pub async fn authorize_as_alice(
    server: &TestServer,
    browser: &mut Browser,
    url: &str,
    grant: &[&str],
) -> AnyResult<String> {
    authorize_as(server, browser, url, grant, "alice").await
}

/// As [`authorize_as_alice`], for another user (whose password is [`PASSWORD`] too).
pub async fn authorize_as(
    server: &TestServer,
    browser: &mut Browser,
    url: &str,
    grant: &[&str],
    username: &str,
) -> AnyResult<String> {
    let mut page = browser.get(server, url).await?;
    for _ in 0..10 {
        let Some(location) = page.location.clone() else {
            return Err(format!("flow stopped at {}: {}", page.status, page.body).into());
        };
        if is_client_redirect(&location) {
            return Ok(location);
        }
        if location.contains("/login?") {
            page = browser.login(server, &location, username, PASSWORD).await?;
            assert_eq!(page.status, 303, "login POST must answer 303");
        } else if location.contains("/consent?") {
            let consent = browser.get(server, &location).await?;
            assert_eq!(consent.status, 200, "consent page: {}", consent.body);
            page = browser.consent(server, &consent, grant, "approve").await?;
            assert_eq!(page.status, 303, "consent POST must answer 303");
        } else {
            page = browser.get(server, &location).await?;
        }
    }
    Err("redirect loop".into())
}

/// Redeems a code redirect for tokens with the public client.
pub async fn redeem(server: &TestServer, location: &str, verifier: &str) -> AnyResult<(u16, serde_json::Value)> {
    let q = query(location)?;
    let code = q.get("code").ok_or("no code in redirect")?;
    server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", verifier),
            ("resource", &server.resource),
        ])
        .await
}

/// Signs in, consents to the default scopes, and returns the token response.
pub async fn tokens_for_alice(server: &TestServer, browser: &mut Browser) -> AnyResult<serde_json::Value> {
    let (verifier, challenge) = pkce()?;
    let url = authorize_url(server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[]);
    let location = authorize_as_alice(server, browser, &url, &["crm.contacts.read", "crm.deals.write"]).await?;
    let (status, body) = redeem(server, &location, &verifier).await?;
    assert_eq!(status, 200, "{body}");
    Ok(body)
}

/// Adds a local user with [`PASSWORD`]; returns their record.
pub async fn add_user(server: &TestServer, username: &str, is_admin: bool) -> AnyResult<portcullis_store::UserRecord> {
    let hasher = app::password_hasher(&Config::default())?;
    let user = NewUser {
        username: username.into(),
        display_name: None,
        email: None,
        password_hash: Some(hasher.hash_blocking(PASSWORD)?),
        is_admin,
    };
    Ok(server.control()?.add_user(&Actor::Operator, user).await?)
}

/// Alice's access token for `resource` holding exactly `scopes` (she consents to just those).
pub async fn alice_token_for(server: &TestServer, resource: &str, scopes: &[&str]) -> AnyResult<String> {
    user_token_for(server, &mut Browser::default(), "alice", resource, scopes).await
}

/// A user's access token for `resource` holding exactly `scopes`, signed in and consenting in
/// `browser` (which stays signed in).
pub async fn user_token_for(
    server: &TestServer,
    browser: &mut Browser,
    username: &str,
    resource: &str,
    scopes: &[&str],
) -> AnyResult<String> {
    let (verifier, challenge) = pkce()?;
    let scope = scopes.join(" ");
    let url =
        authorize_url(server, PUBLIC_CLIENT, PUBLIC_REDIRECT, &challenge, &[("resource", resource), ("scope", &scope)]);
    let location = authorize_as(server, browser, &url, scopes, username).await?;
    let q = query(&location)?;
    let code = q.get("code").ok_or("no code in redirect")?;
    let (status, body) = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &verifier),
            ("resource", resource),
        ])
        .await?;
    assert_eq!(status, 200, "{body}");
    Ok(body["access_token"].as_str().ok_or("no access token")?.to_owned())
}

/// Spawns a peer that prints `READY <value>` as its first line of standard output once it
/// listens (the test IdPs), and returns the process (ended when dropped) and that value.
pub async fn spawn_until_ready(mut command: tokio::process::Command) -> AnyResult<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = command.stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "the peer did not start within 30 s")??;
    let ready =
        line.and_then(|l| l.strip_prefix("READY ").map(str::to_owned)).ok_or("the peer printed no READY line")?;
    Ok((child, ready))
}

/// A peer's directory under tests/peers, once its npm packages are installed.
pub fn peer_dir(name: &str) -> AnyResult<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers").join(name);
    if !dir.join("node_modules").exists() {
        return Err(format!("run `npm ci --prefix {}` (scripts/test does)", dir.display()).into());
    }
    Ok(dir)
}

/// Initializes a session on `route` and sends one request; the HTTP status and the answer.
pub async fn mcp(
    server: &TestServer,
    route: &str,
    token: &str,
    method: &str,
    params: serde_json::Value,
) -> AnyResult<(u16, serde_json::Value)> {
    let post = |body: serde_json::Value, session: Option<String>| {
        let mut request = server
            .http
            .post(server.route(route))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string());
        if let Some(s) = session {
            request = request.header("mcp-session-id", s);
        }
        request.send()
    };
    let init = serde_json::json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name":"it","version":"1"}}});
    let answer = post(init, None).await?;
    if answer.status() != 200 {
        let status = answer.status().as_u16();
        return Ok((status, answer.json().await.unwrap_or(serde_json::Value::Null)));
    }
    let session = answer.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    post(serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}), session.clone()).await?;
    let answer = post(serde_json::json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}), session).await?;
    let status = answer.status().as_u16();
    let text = answer.text().await?;
    let message = match text.lines().find_map(|l| l.strip_prefix("data:")) {
        Some(data) => serde_json::from_str(data.trim())?,
        None => serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    };
    Ok((status, message))
}
