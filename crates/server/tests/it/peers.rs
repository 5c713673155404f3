//! Certified third-party clients driving the authorization server.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::*;

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
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("run.mjs"))
        .env("ISSUER", &server.issuer)
        .env("CLIENT_ID", CONFIDENTIAL_CLIENT)
        .env("CLIENT_SECRET", CONFIDENTIAL_SECRET)
        .env("REDIRECT_URI", "http://127.0.0.1:9/callback")
        .env("CC_CLIENT_ID", MACHINE_CLIENT)
        .env("CC_CLIENT_SECRET", MACHINE_SECRET)
        .env("RESOURCE", &server.resource)
        .env("SCOPE", "crm.contacts.read crm.deals.write")
        .env("USERNAME", "alice")
        .env("PASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let stderr = child.stderr.take().ok_or("stderr")?;
    let read_all = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s).await;
        s
    };
    let out = tokio::spawn(read_all(Box::new(stdout)));
    let err = tokio::spawn(read_all(Box::new(stderr)));
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .map_err(|_| "openid-client run timed out")??;
    let (out, err) = (out.await?, err.await?);
    println!("{out}");
    assert!(status.success(), "openid-client run failed:\n{out}\n{err}");
    assert!(out.contains("7 passed, 0 failed"), "{out}");
    Ok(())
}
