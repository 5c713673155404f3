//! From an upstream MCP server to its authorization server, as the MCP authorization
//! specification asks of a client: the server's Protected Resource Metadata (RFC 9728) at the
//! URL its 401 names or at the well-known locations, then the authorization server's metadata
//! (RFC 8414, or OpenID Connect Discovery), every fetch through `portcullis-outbound`.

use portcullis_outbound::{Fetcher, issuer};
use serde_json::Value;
use url::Url;

use crate::{Challenge, UpstreamAuthError};

/// What the upstream publishes about itself (RFC 9728 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    /// The `resource` every authorization and token request names.
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
}

/// What the chosen authorization server publishes about itself (RFC 8414 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Url,
    pub registration_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    pub token_endpoint_auth_methods: Vec<String>,
    pub client_id_metadata_document_supported: bool,
    /// RFC 9207: the authorization response carries `iss`.
    pub sends_iss: bool,
    pub scopes_supported: Vec<String>,
}

/// An upstream and its authorization server, as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub resource: ProtectedResource,
    pub server: ServerMetadata,
    /// The challenge the upstream answered an unauthenticated request with, if it did: its
    /// `scope` is what to ask for first (the MCP specification's scope selection).
    pub challenge: Option<Challenge>,
}

/// The RFC 9728 §3.1 locations for `upstream`: the well-known segment inserted before its path,
/// then at the root.
pub fn resource_metadata_urls(upstream: &Url) -> Vec<String> {
    let origin = upstream.origin().ascii_serialization();
    let path = upstream.path().trim_end_matches('/');
    let mut urls = vec![format!("{origin}/.well-known/oauth-protected-resource{path}")];
    if !path.is_empty() {
        urls.push(format!("{origin}/.well-known/oauth-protected-resource"));
    }
    urls
}

/// Whether the resource a server's metadata names may stand for `upstream` (the URL the
/// gateway is configured with): the same origin, and a path that is `upstream`'s or one of its
/// ancestors, on a segment boundary. Anything else is metadata for another server.
pub fn resource_covers(published: &str, upstream: &Url) -> bool {
    let Ok(published) = Url::parse(published) else { return false };
    if published.origin() != upstream.origin() || published.query().is_some() || published.fragment().is_some() {
        return false;
    }
    let prefix = published.path().trim_end_matches('/');
    let path = upstream.path().trim_end_matches('/');
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn strings(document: &Value, name: &str) -> Vec<String> {
    document
        .get(name)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn endpoint(document: &Value, name: &str, fetcher: &Fetcher) -> Result<Option<Url>, UpstreamAuthError> {
    let Some(text) = document.get(name).and_then(Value::as_str) else { return Ok(None) };
    let url = Url::parse(text).map_err(|_| UpstreamAuthError::Metadata(format!("its {name} is not a URL")))?;
    // The endpoint is reached later through the same fetcher; an http endpoint is refused
    // there unless the development flag allows it. Refusing here says which one it was.
    if url.scheme() != "https" && !(url.scheme() == "http" && fetcher.policy().allow_http_loopback) {
        return Err(UpstreamAuthError::Metadata(format!("its {name} is not https")));
    }
    Ok(Some(url))
}

/// Reads the upstream's Protected Resource Metadata: at `challenge`'s `resource_metadata` when
/// the upstream named one, else at the well-known locations, else by asking the upstream itself
/// (an unauthenticated `initialize`, whose 401 names it).
pub async fn protected_resource(
    fetcher: &Fetcher,
    upstream: &Url,
    challenge: Option<&Challenge>,
) -> Result<(ProtectedResource, Option<Challenge>), UpstreamAuthError> {
    let mut candidates: Vec<String> = Vec::new();
    let challenge = match challenge {
        Some(c) => Some(c.clone()),
        None => probe(fetcher, upstream).await,
    };
    if let Some(url) = challenge.as_ref().and_then(|c| c.resource_metadata.clone()) {
        candidates.push(url);
    }
    candidates.extend(resource_metadata_urls(upstream));
    let mut last = UpstreamAuthError::Metadata("it publishes no protected resource metadata".into());
    for url in candidates {
        match issuer::fetch_json(fetcher, &url).await {
            Ok(document) => return Ok((read_protected_resource(&document, upstream)?, challenge)),
            Err(e) => last = UpstreamAuthError::Discovery(e.to_string()),
        }
    }
    Err(last)
}

fn read_protected_resource(document: &Value, upstream: &Url) -> Result<ProtectedResource, UpstreamAuthError> {
    let resource = document
        .get("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamAuthError::Metadata("its protected resource metadata names no resource".into()))?;
    if !resource_covers(resource, upstream) {
        return Err(UpstreamAuthError::ResourceMismatch {
            published: printable(resource),
            configured: upstream.to_string(),
        });
    }
    let authorization_servers = strings(document, "authorization_servers");
    if authorization_servers.is_empty() {
        return Err(UpstreamAuthError::Metadata(
            "its protected resource metadata names no authorization server".into(),
        ));
    }
    Ok(ProtectedResource {
        resource: resource.to_owned(),
        authorization_servers,
        scopes_supported: strings(document, "scopes_supported"),
    })
}

/// Asks the upstream without credentials, to read its challenge: `initialize` first, then
/// `ping` for a server that lets anyone initialize. Neither has an effect on the upstream.
async fn probe(fetcher: &Fetcher, upstream: &Url) -> Option<Challenge> {
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")}}
    });
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    for body in [initialize, ping] {
        let Ok(request) = http::Request::post(upstream.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream")
            .body(body.to_string().into_bytes())
        else {
            return None;
        };
        let response = fetcher.send(request).await.ok()?;
        if response.status() == http::StatusCode::UNAUTHORIZED {
            return Challenge::from_headers(response.headers());
        }
    }
    None
}

/// The authorization server's metadata. Its `issuer` must be the one the upstream named
/// (RFC 8414 §3.3), and it must offer PKCE with S256 (the MCP specification: a client refuses
/// to go on otherwise).
pub async fn authorization_server(fetcher: &Fetcher, issuer_url: &str) -> Result<ServerMetadata, UpstreamAuthError> {
    let document = issuer::fetch_metadata(fetcher, issuer_url, |named| named == issuer_url)
        .await
        .map_err(|e| UpstreamAuthError::Discovery(e.to_string()))?;
    read_server_metadata(&document, issuer_url, fetcher)
}

fn read_server_metadata(
    document: &Value,
    issuer_url: &str,
    fetcher: &Fetcher,
) -> Result<ServerMetadata, UpstreamAuthError> {
    let token_endpoint = endpoint(document, "token_endpoint", fetcher)?
        .ok_or_else(|| UpstreamAuthError::Metadata("its authorization server names no token endpoint".into()))?;
    let authorization_endpoint = endpoint(document, "authorization_endpoint", fetcher)?;
    if authorization_endpoint.is_some()
        && !strings(document, "code_challenge_methods_supported").iter().any(|m| m == "S256")
    {
        return Err(UpstreamAuthError::Metadata(
            "its authorization server does not list PKCE with S256 (code_challenge_methods_supported)".into(),
        ));
    }
    let flag = |name: &str| document.get(name).and_then(Value::as_bool).unwrap_or(false);
    Ok(ServerMetadata {
        issuer: issuer_url.to_owned(),
        authorization_endpoint,
        token_endpoint,
        registration_endpoint: endpoint(document, "registration_endpoint", fetcher)?,
        revocation_endpoint: endpoint(document, "revocation_endpoint", fetcher)?,
        token_endpoint_auth_methods: strings(document, "token_endpoint_auth_methods_supported"),
        client_id_metadata_document_supported: flag("client_id_metadata_document_supported"),
        sends_iss: flag("authorization_response_iss_parameter_supported"),
        scopes_supported: strings(document, "scopes_supported"),
    })
}

/// A stranger's text, safe to show: control characters out, bounded.
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_looked_for_where_rfc_9728_puts_it() {
        let check = |upstream: &str, expected: &[&str]| {
            let url = Url::parse(upstream).ok();
            assert_eq!(
                url.as_ref().map(resource_metadata_urls),
                Some(expected.iter().map(|s| (*s).to_owned()).collect()),
                "{upstream}"
            );
        };
        check(
            "https://mcp.example/v1/mcp",
            &[
                "https://mcp.example/.well-known/oauth-protected-resource/v1/mcp",
                "https://mcp.example/.well-known/oauth-protected-resource",
            ],
        );
        check("https://mcp.example/", &["https://mcp.example/.well-known/oauth-protected-resource"]);
    }

    #[test]
    fn a_resource_stands_for_the_upstream_only_on_its_origin_and_path() {
        let upstream = Url::parse("https://mcp.example/v1/mcp").ok();
        let Some(upstream) = upstream else { return };
        for (published, covers) in [
            ("https://mcp.example/v1/mcp", true),
            ("https://mcp.example/v1/mcp/", true),
            ("https://mcp.example/v1", true),
            ("https://mcp.example/", true),
            ("https://mcp.example", true),
            ("https://mcp.example/v1/m", false),
            ("https://mcp.example/v1/mcp/deeper", false),
            ("https://other.example/v1/mcp", false),
            ("http://mcp.example/v1/mcp", false),
            ("https://mcp.example:8443/v1/mcp", false),
            ("https://mcp.example/v1/mcp?x=1", false),
            ("not a url", false),
        ] {
            assert_eq!(resource_covers(published, &upstream), covers, "{published}");
        }
    }

    #[test]
    fn protected_resource_metadata_must_name_this_upstream_and_a_server() {
        let Ok(upstream) = Url::parse("https://mcp.example/mcp") else { return };
        let good = json!({"resource": "https://mcp.example/mcp", "authorization_servers": ["https://as.example"],
                          "scopes_supported": ["read"]});
        assert_eq!(
            read_protected_resource(&good, &upstream).ok(),
            Some(ProtectedResource {
                resource: "https://mcp.example/mcp".into(),
                authorization_servers: vec!["https://as.example".into()],
                scopes_supported: vec!["read".into()],
            })
        );
        let other = json!({"resource": "https://evil.example/mcp", "authorization_servers": ["https://as.example"]});
        assert!(matches!(read_protected_resource(&other, &upstream), Err(UpstreamAuthError::ResourceMismatch { .. })));
        let no_server = json!({"resource": "https://mcp.example/mcp", "authorization_servers": []});
        assert!(read_protected_resource(&no_server, &upstream).is_err());
    }

    #[test]
    fn an_authorization_server_without_s256_is_refused() {
        let fetcher = Fetcher::new(portcullis_outbound::FetchPolicy::default());
        let base = json!({"issuer": "https://as.example", "authorization_endpoint": "https://as.example/authorize",
                          "token_endpoint": "https://as.example/token"});
        assert!(read_server_metadata(&base, "https://as.example", &fetcher).is_err(), "no methods listed");
        let mut plain = base.clone();
        plain["code_challenge_methods_supported"] = json!(["plain"]);
        assert!(read_server_metadata(&plain, "https://as.example", &fetcher).is_err());
        let mut s256 = base.clone();
        s256["code_challenge_methods_supported"] = json!(["S256"]);
        s256["client_id_metadata_document_supported"] = json!(true);
        let read = read_server_metadata(&s256, "https://as.example", &fetcher);
        assert!(read.as_ref().is_ok_and(|m| m.client_id_metadata_document_supported), "{read:?}");
        let mut http_token = s256.clone();
        http_token["token_endpoint"] = json!("http://as.example/token");
        assert!(read_server_metadata(&http_token, "https://as.example", &fetcher).is_err(), "http endpoint");
        // Client credentials only: no authorization endpoint, so PKCE is not asked.
        let cc = json!({"issuer": "https://as.example", "token_endpoint": "https://as.example/token"});
        assert!(read_server_metadata(&cc, "https://as.example", &fetcher).is_ok());
    }
}
