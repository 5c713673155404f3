//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP
//! 2025-11-25 "Client ID Metadata Documents"): a `client_id` that is an https URL names a JSON
//! document describing the client, which we fetch (SSRF-safely, see `portcullis-outbound`),
//! validate, cache within bounds, and record as a client of origin `cimd`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portcullis_control::{Actor, ClientAuth, ClientSpec, ControlError, parse_grant_types};
use portcullis_outbound::{FetchError, Fetcher};
use portcullis_store::{ApplicationType, ClientRecord, ClientStatus, GrantType, RegistrationOrigin};
use portcullis_types::OAuthErrorCode;
use portcullis_types::ScopeSet;
use serde_json::Value;
use url::Url;

use crate::redirect_uri::{is_loopback_host, validate_redirect_uri};
use crate::{AuthorizationServer, OAuthError};

#[derive(Debug, Clone)]
pub struct CimdPolicy {
    pub enabled: bool,
    /// Domains whose documents are trusted (the client shows as verified): exact hosts, or
    /// `.example.com` for subdomains.
    pub trusted_domains: Vec<String>,
    /// Domains never accepted, same syntax; checked first.
    pub blocked_domains: Vec<String>,
    /// Accept documents from any other https host (the client shows as unverified).
    pub allow_any_https: bool,
    /// Bounds on how long a fetched document is reused, whatever its cache headers say.
    pub cache_min_secs: i64,
    pub cache_max_secs: i64,
}

impl Default for CimdPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            trusted_domains: Vec::new(),
            blocked_domains: Vec::new(),
            allow_any_https: false,
            cache_min_secs: 60,
            cache_max_secs: 86_400,
        }
    }
}

/// Fetched documents, as the client records they produced, until they expire.
#[derive(Debug, Clone, Default)]
pub(crate) struct CimdCache {
    entries: Arc<Mutex<HashMap<String, (ClientRecord, i64)>>>,
}

const MAX_CACHE_ENTRIES: usize = 10_000;

impl CimdCache {
    fn get(&self, client_id: &str, now: i64) -> Option<ClientRecord> {
        let entries = self.entries.lock().ok()?;
        let found = entries.get(client_id).filter(|(_, until)| *until > now).map(|(c, _)| c.clone());
        portcullis_telemetry::cache_lookup(portcullis_telemetry::Cache::ClientMetadataDocuments, found.is_some());
        found
    }

    pub(crate) fn forget(&self, client_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(client_id);
        }
    }

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    fn put(&self, client: ClientRecord, until: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(client.client_id.clone(), (client, until));
        }
    }
}

fn invalid_client(d: impl Into<String>) -> OAuthError {
    OAuthError::new(OAuthErrorCode::InvalidClient, d)
}

fn domain_matches(host: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix('.') {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    })
}

impl AuthorizationServer {
    /// Whether `client_id` is to be treated as a metadata document URL.
    pub fn is_metadata_document_client_id(&self, client_id: &str) -> bool {
        self.settings().cimd.enabled && (client_id.starts_with("https://") || client_id.starts_with("http://"))
    }

    /// Fetches (or takes from the cache), validates and records the client a metadata
    /// document describes. Every failure is `invalid_client` with the reason.
    pub async fn metadata_document_client(&self, client_id: &str) -> Result<ClientRecord, OAuthError> {
        let policy = &self.settings().cimd;
        let now = self.clock.now();
        let url = self.check_client_id_url(client_id)?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if domain_matches(&host, &policy.blocked_domains) {
            return Err(invalid_client(format!("client metadata documents from {host} are not accepted")));
        }
        let verified = domain_matches(&host, &policy.trusted_domains);
        if !verified && !policy.allow_any_https {
            return Err(invalid_client(format!("{host} is not a trusted publisher of client metadata documents")));
        }
        if let Some(cached) = self.cimd_cache.get(client_id, now) {
            return Ok(cached);
        }
        let fetcher: &Fetcher =
            self.fetcher.as_ref().ok_or_else(|| invalid_client("client metadata documents are not enabled"))?;
        let fetched = fetcher.get(&url).await.map_err(|e: FetchError| {
            tracing::warn!(client_id, error = %e, "client metadata document fetch refused or failed");
            invalid_client(format!("the client metadata document could not be fetched: {e}"))
        })?;
        let document: Value = serde_json::from_slice(&fetched.body)
            .map_err(|_| invalid_client("the client metadata document is not valid JSON"))?;
        let spec = self.client_from_document(client_id, &document, verified)?;
        // An administrator's suspension is kept; everything else follows the document.
        let stored = self.control.declare_client(&Actor::Registrant { source: None }, client_id, spec).await.map_err(
            |e| match e {
                ControlError::InvalidClient(rule) => {
                    invalid_client(format!("the document describes no valid client: {rule}"))
                }
                other => other.into(),
            },
        )?;
        let ttl = match fetched.max_age {
            Some(0) => 0,
            Some(secs) => i64::try_from(secs).unwrap_or(i64::MAX).clamp(policy.cache_min_secs, policy.cache_max_secs),
            None => policy.cache_min_secs,
        };
        if ttl > 0 {
            self.cimd_cache.put(stored.clone(), now + ttl);
        }
        Ok(stored)
    }

    fn check_client_id_url(&self, client_id: &str) -> Result<Url, OAuthError> {
        let url = Url::parse(client_id).map_err(|_| invalid_client("client_id is not a URL"))?;
        let dev_http = self.fetcher.as_ref().is_some_and(|f| f.policy().allow_http_loopback);
        match url.scheme() {
            "https" => {}
            "http" if dev_http && url.host().as_ref().is_some_and(is_loopback_host) => {}
            _ => return Err(invalid_client("a metadata document client_id must be an https URL")),
        }
        if url.path() == "/" || url.path().is_empty() {
            return Err(invalid_client("a metadata document client_id must have a path"));
        }
        if url.fragment().is_some() || client_id.contains('#') {
            return Err(invalid_client("a metadata document client_id must not have a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid_client("a metadata document client_id must not carry credentials"));
        }
        let raw_path =
            client_id.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("");
        if raw_path.split(['/', '?']).any(|segment| segment == "." || segment == "..") {
            return Err(invalid_client("a metadata document client_id must not have dot segments"));
        }
        if url.as_str() != client_id {
            return Err(invalid_client("a metadata document client_id must be in canonical URL form"));
        }
        Ok(url)
    }

    fn client_from_document(&self, client_id: &str, doc: &Value, verified: bool) -> Result<ClientSpec, OAuthError> {
        let doc = doc.as_object().ok_or_else(|| invalid_client("the client metadata document is not a JSON object"))?;
        match doc.get("client_id").and_then(Value::as_str) {
            Some(id) if id == client_id => {}
            _ => return Err(invalid_client("the document's client_id is not exactly the URL it was fetched from")),
        }
        let client_name = doc
            .get("client_name")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().count() <= 100 && !n.chars().any(char::is_control))
            .ok_or_else(|| invalid_client("the document needs a client_name (at most 100 characters)"))?
            .to_owned();
        let redirect_uris: Vec<String> = doc
            .get("redirect_uris")
            .and_then(Value::as_array)
            .map(|uris| uris.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .filter(|uris: &Vec<String>| !uris.is_empty() && uris.len() <= 10)
            .ok_or_else(|| invalid_client("the document needs redirect_uris (1 to 10 URIs)"))?;
        for uri in &redirect_uris {
            validate_redirect_uri(uri, false).map_err(|e| invalid_client(format!("the document's {e}")))?;
        }
        let jwks = match doc.get("token_endpoint_auth_method").and_then(Value::as_str) {
            None | Some("none") => None,
            Some("private_key_jwt") => Some(document_keys(doc)?),
            Some(other) => {
                return Err(invalid_client(format!(
                    "token_endpoint_auth_method {other:?} is not allowed for metadata documents"
                )));
            }
        };
        if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
            return Err(invalid_client("metadata documents must not carry client secrets"));
        }
        let grant_types = match doc.get("grant_types").and_then(Value::as_array) {
            Some(gs) => {
                let names: Vec<&str> = gs.iter().filter_map(Value::as_str).collect();
                parse_grant_types(&names).map_err(|e| invalid_client(format!("the document's {e}")))?
            }
            None => vec![GrantType::AuthorizationCode],
        };
        let local = redirect_uris
            .iter()
            .all(|u| Url::parse(u).ok().and_then(|u| u.host().map(|h| is_loopback_host(&h))).unwrap_or(false));
        Ok(ClientSpec {
            name: client_name,
            auth: match jwks {
                Some(jwks) => ClientAuth::PrivateKeyJwt { jwks },
                None => ClientAuth::None,
            },
            redirect_uris,
            grant_types,
            scopes: ScopeSet::new(),
            resources: Vec::new(),
            application_type: if local { ApplicationType::Native } else { ApplicationType::Web },
            origin: RegistrationOrigin::Cimd,
            verified,
            status: ClientStatus::Active,
            can_introspect: false,
            client_uri: doc
                .get("client_uri")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://"))
                .map(str::to_owned),
            registration_token_digest: None,
            registered_from: None,
        })
    }

    pub(crate) fn forget_cached_documents(&self) {
        self.cimd_cache.clear();
    }
}

/// The keys a `private_key_jwt` document publishes inline (`jwks`), as a JWKS of P-256 keys.
fn document_keys(doc: &serde_json::Map<String, Value>) -> Result<String, OAuthError> {
    if doc.contains_key("jwks_uri") && !doc.contains_key("jwks") {
        return Err(invalid_client("publish the client's keys inline as jwks; jwks_uri is not fetched"));
    }
    let jwks: portcullis_types::wire::JwkSet = doc
        .get("jwks")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| invalid_client("private_key_jwt needs a jwks of EC P-256 keys with kid"))?;
    if jwks.keys.is_empty() || jwks.keys.iter().any(|k| k.kty != "EC" || k.crv != "P-256") {
        return Err(invalid_client("private_key_jwt needs a jwks of EC P-256 keys with kid"));
    }
    for k in &jwks.keys {
        portcullis_crypto::PublicKey::from_p256_jwk(&k.x, &k.y, Some(&k.kid))
            .map_err(|_| invalid_client(format!("key {} in the jwks is not a valid P-256 key", k.kid)))?;
    }
    serde_json::to_string(&jwks).map_err(|_| OAuthError::server_error())
}
