//! Certified third-party clients driving the authorization server.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;

/// Runs `run.mjs` of a peer with `env`; fails with its output unless it exits 0.
async fn run_node(dir: &std::path::Path, env: &[(&str, &str)]) -> AnyResult<String> {
    let mut command = tokio::process::Command::new("node");
    command.arg(dir.join("run.mjs")).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.output();
    let output = tokio::time::timeout(Duration::from_secs(90), child).await.map_err(|_| "peer run timed out")??;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("{out}");
    if !output.status.success() {
        return Err(format!("peer {} failed:\n{out}\n{err}", dir.display()).into());
    }
    Ok(out)
}

fn require_installed(dir: &std::path::Path, package: &str) -> TestResult {
    if dir.join("node_modules").join(package).exists() {
        Ok(())
    } else {
        Err(format!(
            "{} has no node_modules: run `npm ci --prefix {}` (scripts/test does)",
            dir.display(),
            dir.display()
        )
        .into())
    }
}

fn peer_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers").join(name)
}

/// openid-client (OpenID Certified RP): discovery, code + PKCE with the RFC 9207 `iss` check,
/// signature verification from the JWKS, refresh with rotation and reuse detection,
/// introspection, revocation and client credentials. See tests/peers/openid-client/run.mjs.
#[tokio::test]
async fn openid_client_drives_every_grant() -> TestResult {
    let dir = peer_dir("openid-client");
    if !dir.join("node_modules/openid-client").exists() {
        return Err(format!(
            "{} has no node_modules: run `npm ci --prefix {}` (scripts/test does)",
            dir.display(),
            dir.display()
        )
        .into());
    }
    let server = TestServer::start().await?;
    let out = run_node(
        &dir,
        &[
            ("ISSUER", server.issuer.as_str()),
            ("CLIENT_ID", CONFIDENTIAL_CLIENT),
            ("CLIENT_SECRET", CONFIDENTIAL_SECRET),
            ("REDIRECT_URI", "http://127.0.0.1:9/callback"),
            ("CC_CLIENT_ID", MACHINE_CLIENT),
            ("CC_CLIENT_SECRET", MACHINE_SECRET),
            ("RESOURCE", server.resource.as_str()),
            ("SCOPE", "crm.contacts.read crm.deals.write"),
            ("USERNAME", "alice"),
            ("PASSWORD", PASSWORD),
        ],
    )
    .await?;
    assert!(out.contains("7 passed, 0 failed"), "{out}");
    Ok(())
}

/// Real Chromium: sign in and consent by clicking, grant less than asked, and the consent page
/// refuses to render in another site's iframe. See tests/peers/browser/run.mjs.
#[tokio::test]
async fn chromium_signs_in_consents_to_less_and_refuses_framing() -> TestResult {
    let dir = peer_dir("browser");
    require_installed(&dir, "playwright-core")?;
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)".into());
    }
    let server = TestServer::start().await?;
    let (verifier, challenge) = pkce()?;
    let url = authorize_url(&server, PUBLIC_CLIENT, "http://127.0.0.1:__PORT__/callback", &challenge, &[]);
    let shots = std::env::var("PORTCULLIS_SCREENSHOT_DIR").unwrap_or_default();
    let mut env = vec![
        ("AUTHORIZE_URL", url.as_str()),
        ("USERNAME", "alice"),
        ("PASSWORD", PASSWORD),
        ("UNTICK", "crm.deals.write"),
    ];
    if !shots.is_empty() {
        env.push(("SCREENSHOT_DIR", shots.as_str()));
    }
    let out = run_node(&dir, &env).await?;
    assert!(out.contains("4 passed, 0 failed"), "{out}");
    let callback = out.lines().find_map(|l| l.strip_prefix("CALLBACK ")).ok_or("no callback")?;
    assert_eq!(query(callback)?.get("iss"), Some(&server.issuer));
    let q = query(callback)?;
    let redirect_uri = callback.split('?').next().ok_or("callback")?;
    let (status, tokens) = server
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", q.get("code").ok_or("code")?),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &verifier),
        ])
        .await?;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "crm.contacts.read", "the unticked scope was not granted");
    Ok(())
}

/// The demo CRM behind the gateway at `/mcp/crm`: the SDK discovers Portcullis from the
/// route's own RFC 9728 metadata.
fn crm_route() -> Vec<portcullis::config::UpstreamConfig> {
    vec![portcullis::demo_crm::demo_upstream(env!("CARGO_BIN_EXE_portcullis").to_owned())]
}

/// The official MCP TypeScript SDK client discovers, registers by DCR, authorizes with PKCE
/// and `resource`, and refreshes. See tests/peers/mcp-sdk/run.mjs.
#[tokio::test]
async fn mcp_typescript_sdk_registers_by_dcr_and_authorizes() -> TestResult {
    let dir = peer_dir("mcp-sdk");
    require_installed(&dir, "@modelcontextprotocol/sdk")?;
    let registration = portcullis::config::RegistrationConfig {
        enabled: true,
        allowed_networks: vec!["127.0.0.0/8".parse()?],
        initial_access_token: portcullis::config::InitialAccessTokenMode::Optional,
        ..Default::default()
    };
    let server = TestServer::start_with(Options { registration, upstreams: crm_route(), ..Options::default() }).await?;
    let resource = server.route("crm");
    let out =
        run_node(&dir, &[("SERVER_URL", resource.as_str()), ("USERNAME", "alice"), ("PASSWORD", PASSWORD)]).await?;
    assert!(out.contains("6 passed, 0 failed"), "{out}");
    let client_id = out.lines().find_map(|l| l.strip_prefix("CLIENT_ID ")).ok_or("no client id")?;
    let client = server.store()?.find_client(client_id).await?.ok_or("registered client")?;
    assert_eq!(client.origin, portcullis_store::RegistrationOrigin::Dcr);
    assert_eq!(client.application_type, portcullis_store::ApplicationType::Native);
    Ok(())
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI.
pub fn loopback_tls(dir: &std::path::Path) -> AnyResult<()> {
    let run = |args: &[&str]| -> AnyResult<()> {
        let output = std::process::Command::new("openssl").args(args).current_dir(dir).output()?;
        if !output.status.success() {
            return Err(format!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(())
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=Portcullis test CA"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    run(&ca)?;
    let mut leaf = vec!["req"];
    leaf.extend(ec);
    leaf.extend(["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]);
    run(&leaf)?;
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ])
}

/// The same SDK client with a Client ID Metadata Document (`clientMetadataUrl`) that it
/// publishes over https on loopback; Portcullis fetches it (trusting the test CA) and the SDK
/// completes the authorization with the URL as its client_id. DCR is off.
#[tokio::test]
async fn mcp_typescript_sdk_registers_by_cimd_and_authorizes() -> TestResult {
    let dir = peer_dir("mcp-sdk");
    require_installed(&dir, "@modelcontextprotocol/sdk")?;
    let tls = tempfile::tempdir()?;
    loopback_tls(tls.path())?;
    let cimd = portcullis::config::CimdConfig {
        enabled: true,
        allow_any_https: true,
        allowed_ranges: vec!["127.0.0.1/32".parse()?],
        extra_ca_file: Some(tls.path().join("ca.pem")),
        ..Default::default()
    };
    let server = TestServer::start_with(Options { cimd, upstreams: crm_route(), ..Options::default() }).await?;
    let resource = server.route("crm");
    let cert = tls.path().join("leaf.pem");
    let key = tls.path().join("leaf.key");
    let out = run_node(
        &dir,
        &[
            ("SERVER_URL", resource.as_str()),
            ("USERNAME", "alice"),
            ("PASSWORD", PASSWORD),
            ("REGISTRATION", "cimd"),
            ("TLS_CERT", cert.to_str().ok_or("path")?),
            ("TLS_KEY", key.to_str().ok_or("path")?),
        ],
    )
    .await?;
    assert!(out.contains("6 passed, 0 failed"), "{out}");
    let client_id = out.lines().find_map(|l| l.strip_prefix("CLIENT_ID ")).ok_or("no client id")?;
    assert!(client_id.starts_with("https://127.0.0.1:"), "{client_id}");
    let client = server.store()?.find_client(client_id).await?.ok_or("recorded client")?;
    assert_eq!(client.origin, portcullis_store::RegistrationOrigin::Cimd);
    Ok(())
}
