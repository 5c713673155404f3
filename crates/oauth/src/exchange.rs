//! Token exchange (RFC 8693), for agents that delegate to other agents: a client holding one
//! of our access tokens for a user (the subject token) gives it to another agent, which
//! exchanges it here for a token of its own, for another resource, with at most the subject's
//! scopes, carrying the `act` claim chain (the delegate, then whoever delegated to it).
//!
//! The new token is drawn from the subject token's grant: revoking that grant, disabling its
//! user or suspending its client ends every token delegated from it at once, and so does
//! suspending any client in the chain. Nothing here issues a refresh token, and the new token
//! never outlives the subject token.

use portcullis_store::{ClientRecord, ClientType, GrantType};
use portcullis_types::wire::{ActClaim, TokenResponse};
use portcullis_types::{OAuthErrorCode, ScopeSet};

use crate::token::{Lifetime, allows_grant};
use crate::{AuthorizationServer, OAuthError};

/// RFC 8693 §3: the only token type exchanged here, and the only one issued.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How many clients a chain of delegations may hold (the holder included): enough for an
/// orchestrator handing work down twice, bounded so a chain cannot grow without end.
pub const MAX_ACTORS: usize = 4;

/// A parsed token-exchange request (RFC 8693 §2.1).
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    pub subject_token: String,
    pub subject_token_type: String,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub resource_count: usize,
    pub audience: Option<String>,
}

impl AuthorizationServer {
    pub(crate) async fn token_exchange(
        &self,
        client: &ClientRecord,
        request: ExchangeRequest,
    ) -> Result<TokenResponse, OAuthError> {
        if client.client_type != ClientType::Confidential || !allows_grant(client, GrantType::TokenExchange) {
            return Err(OAuthError::unauthorized_client("this client may not use token exchange"));
        }
        if request.subject_token_type != ACCESS_TOKEN_TYPE {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE}: only this server's access tokens are exchanged"
            )));
        }
        if let Some(requested) = &request.requested_token_type
            && requested != ACCESS_TOKEN_TYPE
        {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type must be {ACCESS_TOKEN_TYPE}: only access tokens are issued"
            )));
        }
        // RFC 8693 §2.2.2: an unusable subject or actor token is invalid_request.
        let subject = self.active_access_token(&request.subject_token).await?.ok_or_else(|| {
            OAuthError::invalid_request("the subject_token is not an active access token of this server")
        })?;
        match (&request.actor_token, &request.actor_token_type) {
            (None, None) => {}
            (Some(actor_token), Some(kind)) if kind == ACCESS_TOKEN_TYPE => {
                // The actor proves who it is with a token of its own: it must be the client
                // asking, so nobody can name another client as the actor.
                let actor = self.active_access_token(actor_token).await?.ok_or_else(|| {
                    OAuthError::invalid_request("the actor_token is not an active access token of this server")
                })?;
                if actor.claims.client_id != client.client_id {
                    return Err(OAuthError::invalid_request(
                        "the actor_token belongs to another client; the actor is the client that asks",
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(format!("actor_token_type must be {ACCESS_TOKEN_TYPE}")));
            }
            _ => {
                return Err(OAuthError::invalid_request("actor_token and actor_token_type go together"));
            }
        }
        // `audience` names the same thing as `resource` here (a resource's URI); when both are
        // given they must agree.
        let wanted = match (&request.resource, &request.audience) {
            (Some(r), Some(a)) if r != a => {
                return Err(OAuthError::invalid_target("resource and audience name different resources"));
            }
            (Some(r), _) | (None, Some(r)) => Some(r.as_str()),
            (None, None) => None,
        };
        let Some(wanted) = wanted else {
            return Err(OAuthError::invalid_target("name the resource the new token is for"));
        };
        let resource = self.resolve_resource(client, Some(wanted), request.resource_count.max(1))?;
        self.check_admin_resource(client, &resource, crate::admin::AdminAccess::TokenExchange)?;

        // At most the subject's scopes, and only those the resource knows and this client may have.
        let subject_scopes = subject.status.scope.clone();
        let available = self.allowed_scopes(client, &resource, false).intersection(&subject_scopes);
        let scope = match request.scope.as_deref() {
            Some(asked) => {
                let asked = ScopeSet::parse(asked).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                let refused = asked.difference(&available);
                if !refused.is_empty() {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {refused} is more than the subject token holds for {resource}"
                    )));
                }
                asked
            }
            None => available,
        };
        if scope.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "the subject token holds no scope that {resource} knows; nothing to delegate"
            )));
        }

        // The chain: this client, then whoever acted before.
        let previous =
            subject.claims.act.clone().unwrap_or_else(|| ActClaim { sub: subject.claims.client_id.clone(), act: None });
        let mut actors: Vec<String> = vec![client.client_id.clone()];
        actors.extend(previous.chain().into_iter().map(str::to_owned));
        if actors.len() > MAX_ACTORS {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidRequest,
                format!("a delegation chain holds at most {MAX_ACTORS} clients"),
            ));
        }
        let act = ActClaim { sub: client.client_id.clone(), act: Some(Box::new(previous)) };

        let now = self.clock.now();
        let grant = self
            .store
            .find_grant(&subject.status.grant_id)
            .await?
            .ok_or_else(|| OAuthError::invalid_request("the subject token's grant is gone"))?;
        // Never past the subject token, nor its grant.
        let not_after = subject.claims.exp.min(grant.expires_at);
        let access = self.mint_access_token(
            client,
            crate::token::OnBehalfOf {
                subject: &subject.claims.sub,
                auth_time: subject.claims.auth_time,
                act: Some(act),
            },
            &resource,
            &scope,
            Lifetime { now, not_after: Some(not_after) },
        )?;
        self.store.insert_delegated_access_token(&grant.id, &access.record, &resource, &actors).await?;
        tracing::info!(
            client_id = %client.client_id,
            subject = %subject.claims.sub,
            resource = %resource,
            chain = %actors.join(" < "),
            "token exchanged"
        );
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            scope: scope.to_string(),
            refresh_token: None,
            id_token: None,
            issued_token_type: Some(ACCESS_TOKEN_TYPE.to_owned()),
        })
    }
}
