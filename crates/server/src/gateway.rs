//! From configuration to the gateway's settings: routes, policies, the gateway's own upstream
//! credentials, trusted issuers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use portcullis_authz::Policy;
use portcullis_gateway::upstream_oauth::{ClientAuth, ClientSettings, RegisteredClient, UpstreamClient};
use portcullis_gateway::{
    GatewaySettings, RouteSettings, StdioCommand, TrustedIssuerSettings, UpstreamAuth, UpstreamSettings,
};
use portcullis_oauth::{ResourceSettings, ScopeSettings};
use portcullis_types::{Scope, ScopeSet};

use crate::config::{Config, UpstreamAuthMode, UpstreamConfig, UpstreamHeaderConfig, UpstreamTransport, read_secret};

/// Where upstreams' authorization servers send users back after they connect an account.
pub fn connect_redirect_uri(config: &Config) -> String {
    format!("{}/connect-callback", config.issuer().trim_end_matches('/'))
}

/// Portcullis's Client ID Metadata Document, which is its client id where upstreams accept
/// them: where the operator publishes it, else at an https issuer (a metadata document's URL
/// must be https).
pub fn client_metadata_document_url(config: &Config) -> Option<url::Url> {
    if let Some(url) = &config.gateway.client_metadata_document_url {
        return url::Url::parse(url).ok();
    }
    let issuer = config.issuer();
    issuer
        .starts_with("https://")
        .then(|| url::Url::parse(&format!("{}/connect-client.json", issuer.trim_end_matches('/'))).ok())
        .flatten()
}

/// The route's OAuth client toward its upstream, when it has `upstream_auth` other than static.
fn upstream_auth(config: &Config, u: &UpstreamConfig) -> anyhow::Result<UpstreamAuth> {
    if u.upstream_auth == UpstreamAuthMode::Static {
        return Ok(UpstreamAuth::Static);
    }
    let oauth = u.oauth.clone().unwrap_or_default();
    let upstream =
        url::Url::parse(u.url.as_deref().unwrap_or_default()).with_context(|| format!("upstream {:?}: url", u.name))?;
    let preconfigured = match &oauth.client_id {
        Some(client_id) => {
            let secret = if oauth.client_secret_env.is_some() || oauth.client_secret_file.is_some() {
                Some(read_secret(
                    &format!("upstream {:?}: oauth client secret", u.name),
                    oauth.client_secret_env.as_ref(),
                    oauth.client_secret_file.as_ref(),
                )?)
            } else {
                None
            };
            let auth = match (&secret, oauth.client_auth.as_deref()) {
                (None, _) => ClientAuth::None,
                (Some(_), Some("client_secret_post")) => ClientAuth::Post,
                (Some(_), _) => ClientAuth::Basic,
            };
            Some(RegisteredClient { client_id: client_id.clone(), client_secret: secret, auth })
        }
        None => None,
    };
    let fetch = crate::app::fetch_policy(
        &format!("upstream {:?}: oauth", u.name),
        crate::app::Reach {
            allowed_ranges: &oauth.allowed_ranges,
            allow_http_loopback: oauth.allow_http_loopback,
            extra_ca_file: oauth.extra_ca_file.as_deref(),
            timeout_secs: oauth.timeout_secs,
        },
        crate::app::ISSUER_DOCUMENT_BYTES,
    )?;
    let client = Arc::new(UpstreamClient::new(ClientSettings {
        upstream,
        redirect_uri: url::Url::parse(&connect_redirect_uri(config)).context("the issuer is not a URL")?,
        metadata_document: client_metadata_document_url(config),
        client_name: format!("Portcullis ({})", config.issuer()),
        preconfigured,
        authorization_server: oauth.authorization_server.clone(),
        scopes: oauth.scopes.clone(),
        fetch,
    }));
    Ok(match u.upstream_auth {
        UpstreamAuthMode::ClientCredentials => UpstreamAuth::ClientCredentials(client),
        _ => UpstreamAuth::User(client),
    })
}

/// Each upstream's tool-level policy, compiled once (in the order of `config.upstreams`) for
/// both the authorization server's resources and the gateway's routes.
pub fn compile_policies(config: &Config) -> anyhow::Result<Vec<Arc<Policy>>> {
    config
        .upstreams
        .iter()
        .map(|u| Ok(Arc::new(Policy::compile(&u.policy_source()).with_context(|| format!("upstream {:?}", u.name))?)))
        .collect()
}

/// The resources the authorization server issues tokens for on behalf of the gateway: one
/// per authenticated route, with the scopes its policy uses.
pub fn route_resources(config: &Config, policies: &[Arc<Policy>]) -> Vec<ResourceSettings> {
    config
        .upstreams
        .iter()
        .zip(policies)
        .filter(|(u, _)| u.requires_authentication())
        .map(|(u, policy)| {
            let scopes = policy
                .all_scopes()
                .iter()
                .map(|s| ScopeSettings {
                    name: s.as_str().to_owned(),
                    description: u.scope_descriptions.get(s.as_str()).cloned().unwrap_or_else(|| s.as_str().to_owned()),
                })
                .collect();
            ResourceSettings {
                uri: config.route_resource(&u.name),
                name: u.name.clone(),
                scopes,
                default_scopes: u.default_scopes.as_ref().map(|d| crate::app::scope_names(d)),
            }
        })
        .collect()
}

fn header_value(upstream: &UpstreamConfig, h: &UpstreamHeaderConfig) -> anyhow::Result<http::HeaderValue> {
    let key = format!("upstream {:?}: header {}", upstream.name, h.name);
    let value = read_secret(&key, h.value_env.as_ref(), h.value_file.as_ref())?;
    let mut value =
        http::HeaderValue::from_str(&value).with_context(|| format!("{key}: the value is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

pub fn gateway_settings(config: &Config, policies: &[Arc<Policy>]) -> anyhow::Result<GatewaySettings> {
    let mut routes = Vec::new();
    for (u, policy) in config.upstreams.iter().zip(policies) {
        let scopes_supported = match &u.scopes_supported {
            Some(list) => {
                let mut set = ScopeSet::new();
                for s in list {
                    set.insert(Scope::parse(s).with_context(|| format!("upstream {:?}: scopes_supported", u.name))?);
                }
                set
            }
            None => policy.all_scopes(),
        };
        let upstream = if let Some(url) = &u.url {
            let url = url::Url::parse(url).with_context(|| format!("upstream {:?}: url", u.name))?;
            if u.transport == UpstreamTransport::Sse {
                UpstreamSettings::LegacySse { url }
            } else {
                UpstreamSettings::StreamableHttp { url }
            }
        } else {
            let (program, args) =
                u.command.split_first().with_context(|| format!("upstream {:?} has no command", u.name))?;
            UpstreamSettings::Stdio(StdioCommand {
                program: program.clone(),
                args: args.to_vec(),
                env: u.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                cwd: u.cwd.clone(),
            })
        };
        let mut upstream_headers = Vec::new();
        for h in &u.headers {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .with_context(|| format!("upstream {:?}: header name {:?}", u.name, h.name))?;
            upstream_headers.push((name, header_value(u, h)?));
        }
        if !u.requires_authentication() {
            tracing::warn!(route = %u.name, "authentication is off on this route: anyone who can reach it can use it");
        }
        routes.push(RouteSettings {
            name: u.name.clone(),
            resource: config.route_resource(&u.name),
            upstream,
            authentication: u.requires_authentication(),
            policy: Arc::clone(policy),
            scopes_supported,
            upstream_headers,
            upstream_auth: upstream_auth(config, u)?,
            connect_timeout: Duration::from_secs(u.connect_timeout_secs),
            request_timeout: Duration::from_secs(u.request_timeout_secs),
            max_sessions: u.max_sessions,
            idle_timeout: Duration::from_secs(u.idle_timeout_secs),
            publish_at_root: u.publish_at_root,
        });
    }
    let mut trusted_issuers = Vec::new();
    for t in &config.gateway.trusted_issuers {
        let introspection = match &t.introspection_client_id {
            Some(id) => Some((
                id.clone(),
                read_secret(
                    &format!("trusted issuer {:?}: introspection secret", t.issuer),
                    t.introspection_client_secret_env.as_ref(),
                    t.introspection_client_secret_file.as_ref(),
                )?,
            )),
            None => None,
        };
        trusted_issuers.push(TrustedIssuerSettings {
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            algorithms: t.algorithms.iter().filter_map(|a| portcullis_crypto::ForeignAlgorithm::parse(a)).collect(),
            token_types: t.token_types.clone(),
            leeway_secs: t.leeway_secs,
            jwks_refresh_min: Duration::from_secs(t.jwks_refresh_min_secs),
            introspection,
            introspection_cache_max: Duration::from_secs(t.introspection_cache_max_secs),
            routes: t.routes.clone(),
            fetch: crate::app::fetch_policy(
                &format!("trusted issuer {:?}", t.issuer),
                crate::app::Reach {
                    allowed_ranges: &t.allowed_ranges,
                    allow_http_loopback: t.allow_http_loopback,
                    extra_ca_file: t.extra_ca_file.as_deref(),
                    timeout_secs: t.timeout_secs,
                },
                crate::app::ISSUER_DOCUMENT_BYTES,
            )?,
        });
    }
    Ok(GatewaySettings {
        issuer: config.issuer(),
        allowed_origins: config.gateway.allowed_origins.clone(),
        allowed_hosts: config.gateway.allowed_hosts.clone(),
        max_request_bytes: config.gateway.max_request_bytes,
        trusted_issuers,
        routes,
    })
}
