//! A user's first minutes, with the official MCP TypeScript SDK client against a real
//! `portcullis serve` process set up like the demo: from a bare 401 through DCR or CIMD,
//! sign-in, partial consent, step-up, refresh and reuse detection, to an administrator's
//! suspension from the CLI; a client-credentials agent; and server-everything behind the
//! gateway over stdio with authentication on. Every step must show in the audit trail.
//! See tests/peers/mcp-sdk/e2e.mjs for the client side.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

use crate::harness::*;

const ALICE_PASSWORD: &str = "alice's long demo password";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `portcullis serve` process and its configuration file, for the CLI to share.
struct Served {
    config: PathBuf,
    base: String,
    child: tokio::process::Child,
}

fn cli(config: &Path, args: &[&str], stdin: Option<&str>) -> AnyResult<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("PORTCULLIS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(format!("portcullis {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn serve(dir: &Path, tls_ca: &Path) -> AnyResult<Served> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let database = database_url(dir).await?;
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let everything =
        repo().join("tests/peers/server-everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if !everything.exists() {
        return Err("run `npm ci --prefix tests/peers/server-everything` (scripts/test does)".into());
    }
    let node = which_node()?;
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
issuer = "{base}"
listen = "127.0.0.1:{port}"
data_dir = {data:?}

[database]
url = {database:?}

[tokens]
access_token_ttl_secs = 5

[registration]
enabled = true
initial_access_token = "optional"
allowed_networks = ["127.0.0.0/8"]

[cimd]
enabled = true
allow_any_https = true
allowed_ranges = ["127.0.0.1/32"]
extra_ca_file = {ca:?}

[[upstreams]]
name = "crm"
command = [{bin:?}, "demo-crm"]
tools = {{ list_contacts = ["crm.contacts.read"], update_deal = ["crm.deals.write"], export_contacts = ["crm.contacts.export"] }}
scope_descriptions = {{ "crm.contacts.read" = "Read your CRM contacts", "crm.deals.write" = "Change deals", "crm.contacts.export" = "Export contacts" }}

[[upstreams]]
name = "everything"
command = [{node:?}, {everything:?}, "stdio"]
tools = {{ echo = ["ev.basic"], get-env = ["ev.admin"] }}
resources = {{ "demo://resource/*" = ["ev.basic"], "demo://static/*" = ["ev.basic"] }}
prompts = {{ simple-prompt = ["ev.basic"], args-prompt = ["ev.basic"] }}
scope_descriptions = {{ "ev.basic" = "Use the everything server", "ev.admin" = "Read its environment" }}
"#,
            data = dir.join("data"),
            ca = tls_ca,
        ),
    )?;
    cli(&config, &["migrate"], None)?;
    cli(&config, &["user", "add", "alice", "--password-stdin"], Some(&format!("{ALICE_PASSWORD}\n")))?;
    let mut child = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.map_err(|_| "serve did not start")??;
    Ok(Served { config, base, child })
}

fn which_node() -> AnyResult<String> {
    let out = std::process::Command::new("sh").args(["-c", "command -v node"]).output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() { Err("node is not installed".into()) } else { Ok(path) }
}

/// Runs e2e.mjs; a `SUSPEND <client_id>` line makes the administrator suspend that client
/// from the CLI. Returns the output.
async fn run_e2e(served: &Served, env: &[(&str, String)], suspend_done: Option<&Path>) -> AnyResult<String> {
    let dir = repo().join("tests/peers/mcp-sdk");
    if !dir.join("node_modules/@modelcontextprotocol/sdk").exists() {
        return Err(format!("run `npm ci --prefix {}` (scripts/test does)", dir.display()).into());
    }
    let mut command = tokio::process::Command::new("node");
    command.arg(dir.join("e2e.mjs")).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    if let Some(done) = suspend_done {
        command.env("SUSPEND_FIFO", "1").env("SUSPEND_DONE", done);
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut out = String::new();
    let run = async {
        while let Some(line) = lines.next_line().await? {
            if let (Some(id), Some(done)) = (line.strip_prefix("SUSPEND "), suspend_done) {
                cli(&served.config, &["client", "suspend", id.trim()], None)?;
                std::fs::write(done, "suspended")?;
            }
            out.push_str(&line);
            out.push('\n');
        }
        let status = child.wait().await?;
        Ok::<_, Box<dyn std::error::Error>>(status)
    };
    let status = tokio::time::timeout(Duration::from_secs(120), run).await.map_err(|_| "e2e.mjs timed out")??;
    let shown: String = out.lines().filter(|l| !l.starts_with("# ")).map(|l| format!("{l}\n")).collect();
    println!("{shown}");
    if !status.success() {
        return Err(format!("e2e.mjs failed:\n{out}").into());
    }
    Ok(out)
}

fn client_id(out: &str) -> AnyResult<String> {
    Ok(out.lines().find_map(|l| l.strip_prefix("CLIENT_ID ")).ok_or("no CLIENT_ID line")?.trim().to_owned())
}

#[tokio::test]
async fn mcp_sdk_clients_end_to_end_through_the_gateway() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tls = tempfile::tempdir()?;
    crate::peers::loopback_tls(tls.path())?;
    let served = serve(dir.path(), &tls.path().join("ca.pem")).await?;
    let crm = format!("{}/mcp/crm", served.base);
    let user = |registration: &str| {
        vec![
            ("SERVER_URL", crm.clone()),
            ("USERNAME", "alice".to_owned()),
            ("PASSWORD", ALICE_PASSWORD.to_owned()),
            ("REGISTRATION", registration.to_owned()),
            ("GRANT_SCOPES", "crm.contacts.read".to_owned()),
        ]
    };
    let mut table: Vec<(&str, Result<String, String>)> = Vec::new();

    // DCR, with refresh, reuse detection and the administrator's suspension.
    let done = dir.path().join("suspended");
    let mut env = user("dcr");
    env.push(("ACCESS_TOKEN_TTL", "5".into()));
    let dcr = run_e2e(&served, &env, Some(&done)).await;
    table.push((
        "TS SDK, DCR: 401 → consent → step-up → refresh → suspension",
        dcr.as_ref().map(|o| o.clone()).map_err(|e| e.to_string()),
    ));

    // The same flow with a Client ID Metadata Document instead of DCR.
    let done = dir.path().join("suspended-cimd");
    let mut env = user("cimd");
    env.push(("ACCESS_TOKEN_TTL", "5".into()));
    env.push(("TLS_CERT", tls.path().join("leaf.pem").to_string_lossy().into_owned()));
    env.push(("TLS_KEY", tls.path().join("leaf.key").to_string_lossy().into_owned()));
    let cimd = run_e2e(&served, &env, Some(&done)).await;
    table.push((
        "TS SDK, CIMD: 401 → consent → step-up → refresh → suspension",
        cimd.as_ref().map(|o| o.clone()).map_err(|e| e.to_string()),
    ));

    // A client-credentials agent registered by an administrator.
    let added = cli(
        &served.config,
        &["client", "add", "--name", "Nightly agent", "--confidential", "--scope", "crm.contacts.read"],
        None,
    )?;
    let field = |name: &str| added.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()));
    let (agent, secret) = (field("client_id:").ok_or("client_id")?, field("client_secret:").ok_or("secret")?);
    let cc = run_e2e(
        &served,
        &[
            ("SERVER_URL", crm.clone()),
            ("MODE", "client_credentials".into()),
            ("CLIENT_ID", agent.clone()),
            ("CLIENT_SECRET", secret),
        ],
        None,
    )
    .await;
    table.push((
        "client credentials agent: allowed tool, refused tool",
        cc.as_ref().map(|o| o.clone()).map_err(|e| e.to_string()),
    ));

    // server-everything over stdio, authentication on.
    let everything = run_e2e(
        &served,
        &[
            ("SERVER_URL", format!("{}/mcp/everything", served.base)),
            ("MODE", "everything".into()),
            ("USERNAME", "alice".into()),
            ("PASSWORD", ALICE_PASSWORD.into()),
            ("GRANT_SCOPES", "ev.basic".into()),
            ("ALLOWED_TOOL", "echo".into()),
            ("DENIED_TOOL", "get-env".into()),
            ("PROMPT_NAME", "args-prompt".into()),
            ("PROMPT_ARGS", r#"{"city":"Paris"}"#.into()),
        ],
        None,
    )
    .await;
    table.push((
        "server-everything over stdio: tools, resource, prompt",
        everything.as_ref().map(|o| o.clone()).map_err(|e| e.to_string()),
    ));

    // The audit trail saw every step with the right user, client, tool and decision.
    let audit = cli(&served.config, &["audit", "tail", "-n", "2000", "--json"], None)?;
    let events: Vec<serde_json::Value> = audit.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let audit_check = (|| -> AnyResult<String> {
        let dcr_client = client_id(dcr.as_deref().map_err(|e| e.to_string())?)?;
        let has = |client: &str, target: &str, decision: &str, status: i64| {
            events.iter().any(|e| {
                e["client_id"] == client && e["target"] == target && e["decision"] == decision && e["status"] == status
            })
        };
        let alice = events
            .iter()
            .filter(|e| e["kind"] == "mcp.message" && e["client_id"] == dcr_client.as_str() && e["status"] != 401)
            .all(|e| e["username"] == "alice");
        // Identity actions share the trail, each with who did it.
        let action = |kind: &str, actor_prefix: &str, reason: Option<&str>| {
            events.iter().any(|e| {
                e["kind"] == kind
                    && e["client_id"] == dcr_client.as_str()
                    && e["actor"].as_str().is_some_and(|a| a.starts_with(actor_prefix))
                    && reason.is_none_or(|r| e["reason"].as_str().is_some_and(|x| x.contains(r)))
            })
        };
        let checks = [
            ("alice's list_contacts allowed", has(&dcr_client, "list_contacts", "allowed", 200)),
            ("alice's update_deal refused before step-up", has(&dcr_client, "update_deal", "denied", 403)),
            ("alice's update_deal allowed after step-up", has(&dcr_client, "update_deal", "allowed", 200)),
            ("every row of alice's client names alice", alice),
            ("the agent's list_contacts allowed", has(&agent, "list_contacts", "allowed", 200)),
            ("the agent's update_deal refused", has(&agent, "update_deal", "denied", 403)),
            (
                "echo allowed on everything",
                events
                    .iter()
                    .any(|e| e["route"] == "everything" && e["target"] == "echo" && e["decision"] == "allowed"),
            ),
            (
                "get-env refused on everything",
                events
                    .iter()
                    .any(|e| e["route"] == "everything" && e["target"] == "get-env" && e["decision"] == "denied"),
            ),
            ("the client registered itself by DCR", action("client.registered", "registrant", Some("dcr"))),
            ("alice consented, as alice", action("consent.given", "user:", Some("crm.contacts.read"))),
            ("the reused refresh token revoked the grant", action("grants.revoked", "system", Some("reused"))),
            ("the operator suspended the client", action("client.suspended", "operator", None)),
            (
                "alice's sign-in succeeded",
                events.iter().any(|e| e["kind"] == "signin.succeeded" && e["username"] == "alice"),
            ),
            (
                "the suspended client's call refused with 401",
                events.iter().any(|e| e["status"] == 401 && e["client_id"] == dcr_client.as_str()),
            ),
        ];
        let missing: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
        if missing.is_empty() {
            Ok(format!("{} events", events.len()))
        } else {
            Err(format!("missing: {}", missing.join("; ")).into())
        }
    })();
    table.push(("audit trail: user, client, tool and decision of every step", audit_check.map_err(|e| e.to_string())));

    println!("\nscenario                                                          result");
    for (name, result) in &table {
        println!("{name:<65} {}", if result.is_ok() { "pass" } else { "FAIL" });
    }
    let failed: Vec<String> =
        table.iter().filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}"))).collect();
    println!("{} passed, {} failed", table.len() - failed.len(), failed.len());
    drop(served.child);
    if failed.is_empty() { Ok(()) } else { Err(failed.join("\n\n").into()) }
}
