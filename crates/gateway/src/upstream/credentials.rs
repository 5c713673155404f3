//! What the gateway presents to a Streamable HTTP upstream besides the configured headers,
//! per the route's `upstream_auth`: nothing more, the calling user's own token from the vault,
//! or the gateway's client-credentials token; and what it does when the upstream refuses it
//! (refresh once, ask the user to connect or grant more, or give up).

use http::StatusCode;
use serde_json::Value;

use crate::auth::Principal;
use crate::vault::Credential;
use crate::{Gateway, GatewayError, Route, UpstreamAuth, VaultError, upstream_oauth};

// The vault's futures (a token request upstream, the store) are tens of kilobytes; awaited
// inline they would make every call's future that large, to be written and moved on each
// call of every route, with `upstream_auth` or without. Boxed, only the routes that use the
// vault pay for them, and only when they do.

impl Gateway {
    /// The user this principal speaks for, on a route that acts as each user.
    fn user_of<'p>(route: &Route, principal: &'p Principal, id: Option<&Value>) -> Result<&'p str, GatewayError> {
        match (&principal.grant_id, principal.subject.as_deref()) {
            (Some(_), Some(user_id)) => Ok(user_id),
            _ => Err(GatewayError::UserRequired { route: route.settings.name.clone(), id: id.cloned() }),
        }
    }

    /// What the gateway presents upstream besides the configured headers: the user's own token
    /// or the gateway's, per the route's `upstream_auth`.
    pub(super) async fn upstream_credential(
        &self,
        route: &Route,
        principal: &Principal,
        id: Option<&Value>,
        url_elicitation: bool,
    ) -> Result<Option<Credential>, GatewayError> {
        let name = &route.settings.name;
        let unavailable = |e: VaultError| GatewayError::UpstreamUnavailable { message: e.to_string(), id: id.cloned() };
        match &route.settings.upstream_auth {
            UpstreamAuth::Static => Ok(None),
            UpstreamAuth::ClientCredentials(client) => {
                Box::pin(self.0.vault.service_token(name, client, None)).await.map(Some).map_err(unavailable)
            }
            UpstreamAuth::User(client) => {
                let user_id = Self::user_of(route, principal, id)?;
                match Box::pin(self.0.vault.user_token(name, client, user_id)).await.map_err(unavailable)? {
                    Some(credential) => Ok(Some(credential)),
                    None => Err(self.connection_required(route, user_id, None, id, url_elicitation)),
                }
            }
        }
    }

    /// The upstream refused what the gateway presented: refresh (or renew the service token)
    /// once; on a 403 that asks for more scope, ask the user to grant it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn after_refusal(
        &self,
        route: &Route,
        principal: &Principal,
        presented: Option<&Credential>,
        status: StatusCode,
        challenge: Option<upstream_oauth::Challenge>,
        id: Option<Value>,
        url_elicitation: bool,
    ) -> Result<Credential, GatewayError> {
        let name = &route.settings.name;
        let unavailable = |e: VaultError| GatewayError::UpstreamUnavailable { message: e.to_string(), id: id.clone() };
        let refused = || GatewayError::UpstreamUnavailable {
            message: format!("it refused the gateway's own credentials ({status})"),
            id: id.clone(),
        };
        match &route.settings.upstream_auth {
            UpstreamAuth::Static => Err(refused()),
            UpstreamAuth::ClientCredentials(client) => {
                let stale = presented.map(|c| c.access_token.as_str());
                Box::pin(self.0.vault.service_token(name, client, stale)).await.map_err(unavailable)
            }
            UpstreamAuth::User(client) => {
                let user_id = Self::user_of(route, principal, id.as_ref())?;
                if status == StatusCode::UNAUTHORIZED {
                    // A refused token may mean the upstream changed authorization servers.
                    client.forget_discovery();
                }
                if status == StatusCode::FORBIDDEN {
                    let Some(c) = challenge.filter(upstream_oauth::Challenge::is_insufficient_scope) else {
                        return Err(refused());
                    };
                    // Asking the user again for what their account already granted would loop.
                    let scope = c.scope.as_deref().unwrap_or_default();
                    if Box::pin(self.0.vault.already_granted(name, user_id, scope)).await.map_err(unavailable)? {
                        return Err(GatewayError::UpstreamUnavailable {
                            message: format!(
                                "it asks for scope {scope:?}, which your account there already granted; not asking again"
                            ),
                            id: id.clone(),
                        });
                    }
                    // Step-up: the user grants the upstream more, in the browser.
                    return Err(self.connection_required(
                        route,
                        user_id,
                        c.scope.as_deref(),
                        id.as_ref(),
                        url_elicitation,
                    ));
                }
                let stale = presented.map(|c| c.access_token.as_str()).unwrap_or_default();
                match Box::pin(self.0.vault.refresh(name, client, user_id, stale)).await.map_err(unavailable)? {
                    Some(credential) => Ok(credential),
                    None => Err(self.connection_required(route, user_id, None, id.as_ref(), url_elicitation)),
                }
            }
        }
    }

    /// Asks the user to connect (or grant more): MCP URL-mode elicitation where the client
    /// declared it, else a JSON-RPC error carrying the URL.
    fn connection_required(
        &self,
        route: &Route,
        user_id: &str,
        scope: Option<&str>,
        id: Option<&Value>,
        url_elicitation: bool,
    ) -> GatewayError {
        let name = &route.settings.name;
        let url = self.connect_url(name, user_id, scope);
        let message = match scope {
            Some(scope) => format!(
                "The {name} server needs more access from your account there ({scope}). Open {url} to grant it, then try again."
            ),
            None => format!("Connect your {name} account first: open {url}, then try again."),
        };
        let elicitation_id = url_elicitation.then(|| portcullis_crypto::random_token(16).unwrap_or_default());
        GatewayError::ConnectionRequired { message, url, elicitation_id, id: id.cloned() }
    }
}

/// A refusal the data path does not retry (a GET stream, a DELETE) is the upstream being
/// unavailable to this caller.
pub(super) fn settle_refusal(e: GatewayError) -> GatewayError {
    match e {
        GatewayError::UpstreamRefused { status, id, .. } => GatewayError::UpstreamUnavailable {
            message: format!("it refused the gateway's own credentials ({status})"),
            id,
        },
        other => other,
    }
}
