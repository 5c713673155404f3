//! How the gateway becomes a client of an upstream's authorization server, in the MCP
//! specification's order of preference: a client an operator registered; else Portcullis's own
//! Client ID Metadata Document, where the server supports them; else Dynamic Client
//! Registration (RFC 7591), as a public client that proves itself with PKCE.

use portcullis_outbound::Fetcher;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::discovery::{ServerMetadata, printable};
use crate::{ClientSettings, UpstreamAuthError};

/// How the gateway authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A public client (PKCE is its proof).
    None,
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post`.
    Post,
}

impl ClientAuth {
    pub fn from_method(method: &str) -> Option<Self> {
        match method {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::Basic),
            "client_secret_post" => Some(Self::Post),
            _ => None,
        }
    }
}

/// A client of an upstream's authorization server. The secret is never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub auth: ClientAuth,
}

impl std::fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| ".."))
            .field("auth", &self.auth)
            .finish()
    }
}

/// The registration the gateway uses with one authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Preconfigured(RegisteredClient),
    /// The client id is the URL of Portcullis's metadata document.
    MetadataDocument(RegisteredClient),
    /// Register (once; the caller keeps what it got).
    Dynamic,
}

pub(crate) fn choose(settings: &ClientSettings, server: &ServerMetadata) -> Result<Registration, UpstreamAuthError> {
    if let Some(client) = &settings.preconfigured {
        return Ok(Registration::Preconfigured(client.clone()));
    }
    if let (Some(document), true) = (&settings.metadata_document, server.client_id_metadata_document_supported) {
        return Ok(Registration::MetadataDocument(RegisteredClient {
            client_id: document.to_string(),
            client_secret: None,
            auth: ClientAuth::None,
        }));
    }
    if server.registration_endpoint.is_some() {
        return Ok(Registration::Dynamic);
    }
    Err(UpstreamAuthError::NoRegistration)
}

/// What the gateway says about itself as a client, in its metadata document and its dynamic
/// registrations alike (one owner for both).
fn client_metadata(settings: &ClientSettings) -> Value {
    json!({
        "client_name": settings.client_name,
        // SEP-837: a server-side client whose redirect URI is its own web address.
        "application_type": "web",
        "redirect_uris": [settings.redirect_uri.as_str()],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "software_id": "portcullis",
        "software_version": env!("CARGO_PKG_VERSION"),
    })
}

/// Portcullis's Client ID Metadata Document, served at `document_url` (which is its client id).
pub fn client_metadata_document(settings: &ClientSettings, document_url: &str, client_uri: &str) -> Value {
    let mut document = client_metadata(settings);
    if let Value::Object(fields) = &mut document {
        fields.insert("client_id".into(), Value::String(document_url.to_owned()));
        fields.insert("client_uri".into(), Value::String(client_uri.to_owned()));
    }
    document
}

pub(crate) async fn register(
    fetcher: &Fetcher,
    settings: &ClientSettings,
    server: &ServerMetadata,
) -> Result<RegisteredClient, UpstreamAuthError> {
    let endpoint = server.registration_endpoint.as_ref().ok_or(UpstreamAuthError::NoRegistration)?;
    let request = http::Request::post(endpoint.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(client_metadata(settings).to_string().into_bytes())
        .map_err(|e| UpstreamAuthError::Registration(e.to_string()))?;
    let response = fetcher.send(request).await.map_err(|e| UpstreamAuthError::Unreachable(e.to_string()))?;
    let status = response.status();
    let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
        return Err(UpstreamAuthError::Registration(format!("it answered {status} ({})", printable(error))));
    }
    let client_id = body
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| UpstreamAuthError::Registration("its answer has no client_id".into()))?;
    let client_secret = body.get("client_secret").and_then(Value::as_str).map(str::to_owned);
    let auth = match body.get("token_endpoint_auth_method").and_then(Value::as_str) {
        Some(method) => ClientAuth::from_method(method).ok_or_else(|| {
            UpstreamAuthError::Registration(format!("it assigned an unsupported method {:?}", printable(method)))
        })?,
        None if client_secret.is_some() => ClientAuth::Basic,
        None => ClientAuth::None,
    };
    if auth != ClientAuth::None && client_secret.is_none() {
        return Err(UpstreamAuthError::Registration("it assigned a secret-based method but no secret".into()));
    }
    Ok(RegisteredClient { client_id: client_id.to_owned(), client_secret, auth })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(preconfigured: bool, document: bool) -> Option<ClientSettings> {
        Some(ClientSettings {
            upstream: url::Url::parse("https://mcp.example/mcp").ok()?,
            redirect_uri: url::Url::parse("https://gw.example/connect/callback").ok()?,
            metadata_document: if document {
                url::Url::parse("https://gw.example/connect/client.json").ok()
            } else {
                None
            },
            client_name: "Portcullis".into(),
            preconfigured: preconfigured.then(|| RegisteredClient {
                client_id: "configured".into(),
                client_secret: Some("s".into()),
                auth: ClientAuth::Basic,
            }),
            authorization_server: None,
            scopes: Vec::new(),
            fetch: Default::default(),
        })
    }

    fn server(cimd: bool, dcr: bool) -> Option<ServerMetadata> {
        Some(ServerMetadata {
            issuer: "https://as.example".into(),
            authorization_endpoint: url::Url::parse("https://as.example/authorize").ok(),
            token_endpoint: url::Url::parse("https://as.example/token").ok()?,
            registration_endpoint: if dcr { url::Url::parse("https://as.example/register").ok() } else { None },
            revocation_endpoint: None,
            token_endpoint_auth_methods: Vec::new(),
            client_id_metadata_document_supported: cimd,
            sends_iss: false,
            scopes_supported: Vec::new(),
        })
    }

    #[test]
    fn registration_follows_the_specifications_preference() {
        let check = |preconfigured: bool, document: bool, cimd: bool, dcr: bool, expected: &str| {
            let (Some(settings), Some(server)) = (settings(preconfigured, document), server(cimd, dcr)) else {
                unreachable!("the fixtures parse")
            };
            let chosen = match choose(&settings, &server) {
                Ok(Registration::Preconfigured(_)) => "preconfigured",
                Ok(Registration::MetadataDocument(c)) => {
                    assert_eq!(c.client_id, "https://gw.example/connect/client.json");
                    "document"
                }
                Ok(Registration::Dynamic) => "dynamic",
                Err(_) => "none",
            };
            assert_eq!(chosen, expected, "preconfigured={preconfigured} document={document} cimd={cimd} dcr={dcr}");
        };
        check(true, true, true, true, "preconfigured");
        check(false, true, true, true, "document");
        check(false, false, true, true, "dynamic");
        check(false, true, false, true, "dynamic");
        check(false, true, false, false, "none");
        check(false, false, true, false, "none");
    }

    #[test]
    fn the_metadata_document_names_itself_and_one_redirect() {
        let Some(s) = settings(false, true) else { return };
        let doc = client_metadata_document(&s, "https://gw.example/connect/client.json", "https://gw.example");
        assert_eq!(doc["client_id"], "https://gw.example/connect/client.json");
        assert_eq!(doc["redirect_uris"], json!(["https://gw.example/connect/callback"]));
        assert_eq!(doc["token_endpoint_auth_method"], "none");
        assert!(!format!("{:?}", s.preconfigured).contains("\"s\""));
    }
}
