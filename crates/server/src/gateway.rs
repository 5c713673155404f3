//! From configuration to the gateway's settings: routes, policies, the gateway's own upstream
//! credentials, trusted issuers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use portcullis_authz::Policy;
use portcullis_gateway::{GatewaySettings, RouteSettings, StdioCommand, TrustedIssuerSettings, UpstreamSettings};
use portcullis_oauth::{ResourceSettings, ScopeSettings};
use portcullis_types::{Scope, ScopeSet};

use crate::config::{Config, UpstreamConfig};

/// The resources the authorization server issues tokens for on behalf of the gateway: one
/// per authenticated route, with the scopes its policy uses.
pub fn route_resources(config: &Config) -> Vec<ResourceSettings> {
    config
        .upstreams
        .iter()
        .filter(|u| u.requires_authentication())
        .filter_map(|u| {
            let policy = Policy::compile(&u.policy_source()).ok()?;
            let scopes = policy
                .all_scopes()
                .iter()
                .map(|s| ScopeSettings {
                    name: s.as_str().to_owned(),
                    description: u.scope_descriptions.get(s.as_str()).cloned().unwrap_or_else(|| s.as_str().to_owned()),
                })
                .collect();
            Some(ResourceSettings { uri: config.route_resource(&u.name), name: u.name.clone(), scopes })
        })
        .collect()
}

fn header_value(
    upstream: &UpstreamConfig,
    h: &crate::config::UpstreamHeaderConfig,
) -> anyhow::Result<http::HeaderValue> {
    let value = match (&h.value_env, &h.value_file) {
        (Some(var), _) => std::env::var(var).with_context(|| {
            format!("upstream {:?}: header {} needs the environment variable {var}", upstream.name, h.name)
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("upstream {:?}: reading {}", upstream.name, path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => bail!("upstream {:?}: header {} has no value source", upstream.name, h.name),
    };
    let mut value = http::HeaderValue::from_str(&value).with_context(|| {
        format!("upstream {:?}: the value of header {} is not a valid header value", upstream.name, h.name)
    })?;
    value.set_sensitive(true);
    Ok(value)
}

pub fn gateway_settings(config: &Config) -> anyhow::Result<GatewaySettings> {
    let mut routes = Vec::new();
    for u in &config.upstreams {
        let policy = Policy::compile(&u.policy_source()).with_context(|| format!("upstream {:?}", u.name))?;
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
            if u.transport == "sse" {
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
            policy: Arc::new(policy),
            scopes_supported,
            upstream_headers,
            connect_timeout: Duration::from_secs(u.connect_timeout_secs),
            request_timeout: Duration::from_secs(u.request_timeout_secs),
            max_sessions: u.max_sessions,
            idle_timeout: Duration::from_secs(u.idle_timeout_secs),
            publish_at_root: u.publish_at_root,
        });
    }
    let mut trusted_issuers = Vec::new();
    for t in &config.gateway.trusted_issuers {
        let introspection =
            match (&t.introspection_client_id, &t.introspection_client_secret_env, &t.introspection_client_secret_file)
            {
                (Some(id), Some(var), _) => Some((
                    id.clone(),
                    std::env::var(var).with_context(|| {
                        format!("trusted issuer {}: introspection secret variable {var} is not set", t.issuer)
                    })?,
                )),
                (Some(id), None, Some(path)) => Some((
                    id.clone(),
                    std::fs::read_to_string(path)
                        .with_context(|| format!("trusted issuer {}: reading {}", t.issuer, path.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                )),
                _ => None,
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
