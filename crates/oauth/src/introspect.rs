//! Introspection (RFC 7662) and revocation (RFC 7009).
//!
//! An access token is only active if its signature checks out *and* its record, grant, client
//! and user say so: revoking a grant, suspending a client or disabling a user takes effect at
//! once, not at expiry.

use portcullis_control::{Actor, RevocationReason};
use portcullis_crypto::{digest, verify_jwt};
use portcullis_store::GrantSelector;
use portcullis_store::{AccessTokenStatus, ClientRecord};
use portcullis_types::wire::{AccessTokenClaims, IntrospectionResponse};

use crate::{AuthorizationServer, ClientCredentials, OAuthError, Params};

#[derive(Debug, Clone)]
pub struct RevocationRequest {
    pub token: String,
}

/// A validated access token of ours and the live state behind it.
#[derive(Debug, Clone)]
pub struct ActiveAccessToken {
    pub claims: AccessTokenClaims,
    pub status: AccessTokenStatus,
}

impl AuthorizationServer {
    /// Validates an access token this server issued: signature, type, issuer, expiry, and the
    /// live state of its grant, client and user. `None` means "not active", whatever the reason.
    pub async fn active_access_token(&self, token: &str) -> Result<Option<ActiveAccessToken>, OAuthError> {
        match self.verify_access_token(token) {
            Some(claims) => self.access_token_state(claims).await,
            None => Ok(None),
        }
    }

    /// What can be checked without the database: signature, type, issuer and time. Claims
    /// that pass may be remembered (a resource server caches them), but only
    /// [`Self::access_token_state`] says whether the token is still active.
    pub fn verify_access_token(&self, token: &str) -> Option<AccessTokenClaims> {
        let keys = self.keys.published();
        let verified = verify_jwt::<AccessTokenClaims>(token, "at+jwt", keys.iter().map(|k| k.public())).ok()?;
        let now = self.clock.now();
        let claims = verified.claims;
        (claims.iss == self.settings().issuer && claims.exp > now && claims.nbf <= now + 60).then_some(claims)
    }

    /// The live state behind verified claims: the token, its grant, client and user.
    pub async fn access_token_state(&self, claims: AccessTokenClaims) -> Result<Option<ActiveAccessToken>, OAuthError> {
        if claims.exp <= self.clock.now() {
            return Ok(None);
        }
        let Some(status) = self.store.access_token_status(&claims.jti).await? else { return Ok(None) };
        Ok(self.judge_access_token(claims, status))
    }

    /// Whether verified claims and the live state read for them (now, or remembered by a
    /// cache the change feed keeps exact) make an active token: the one copy of that rule.
    pub fn judge_access_token(
        &self,
        claims: AccessTokenClaims,
        status: AccessTokenStatus,
    ) -> Option<ActiveAccessToken> {
        self.is_active_access_token(&claims, &status).then_some(ActiveAccessToken { claims, status })
    }

    /// [`Self::judge_access_token`] for a caller that keeps claims and state shared (the
    /// gateway's caches): the rule, without taking them.
    pub fn is_active_access_token(&self, claims: &AccessTokenClaims, status: &AccessTokenStatus) -> bool {
        let now = self.clock.now();
        // A delegated token (token exchange) is held by its delegate, not the grant's client.
        claims.exp > now && claims.jti == status.jti && status.is_active(now) && status.holder() == claims.client_id
    }

    pub async fn introspect(
        &self,
        credentials: &ClientCredentials,
        params: &Params,
    ) -> Result<IntrospectionResponse, OAuthError> {
        let caller = self.authenticate_client(credentials).await?;
        if caller.secret_digest.is_none() {
            return Err(OAuthError::invalid_client("introspection requires a confidential client"));
        }
        let Some(token) = presented_token(params)? else { return Ok(IntrospectionResponse::default()) };
        let may_see = |client_id: &str| caller.can_introspect || caller.client_id == client_id;

        if let Some(active) = self.active_access_token(token).await? {
            if !may_see(&active.claims.client_id) {
                return Ok(IntrospectionResponse::default());
            }
            let c = active.claims;
            return Ok(IntrospectionResponse {
                active: true,
                scope: Some(c.scope),
                client_id: Some(c.client_id),
                username: active.status.username,
                token_type: Some("Bearer".into()),
                exp: Some(c.exp),
                iat: Some(c.iat),
                nbf: Some(c.nbf),
                sub: Some(c.sub),
                aud: Some(c.aud),
                iss: Some(c.iss),
                jti: Some(c.jti),
                act: c.act,
            });
        }
        let now = self.clock.now();
        if let Some(rt) = self.store.find_refresh_token(&digest(token)).await? {
            let live = rt.rotated_at.is_none()
                && rt.expires_at > now
                && rt.grant.revoked_at.is_none()
                && rt.grant.expires_at > now;
            let user = match &rt.grant.user_id {
                Some(id) => self.store.find_user(id).await?,
                None => None,
            };
            let client_ok = self
                .store
                .find_client(&rt.grant.client_id)
                .await?
                .is_some_and(|c| c.status == portcullis_store::ClientStatus::Active);
            if live && client_ok && user.as_ref().is_some_and(|u| !u.is_disabled()) && may_see(&rt.grant.client_id) {
                return Ok(IntrospectionResponse {
                    active: true,
                    scope: Some(rt.scope.to_string()),
                    client_id: Some(rt.grant.client_id),
                    username: user.map(|u| u.username),
                    token_type: Some("refresh_token".into()),
                    exp: Some(rt.expires_at),
                    iat: Some(rt.created_at),
                    sub: rt.grant.user_id,
                    aud: Some(rt.grant.resource),
                    iss: Some(self.settings().issuer.clone()),
                    ..Default::default()
                });
            }
        }
        Ok(IntrospectionResponse::default())
    }

    /// RFC 7009: revokes an access or refresh token the caller owns. Unknown tokens and tokens
    /// of other clients are not an error (§2.2), so the response never reveals which exist.
    /// Revoking a refresh token revokes its whole grant, access tokens included.
    pub async fn revoke(&self, credentials: &ClientCredentials, params: &Params) -> Result<(), OAuthError> {
        let caller = self.authenticate_client(credentials).await?;
        let Some(token) = presented_token(params)? else { return Ok(()) };
        let actor = Actor::Client { client_id: caller.client_id.clone(), source: None };
        if let Some(rt) = self.store.find_refresh_token(&digest(token)).await? {
            if owns(&caller, &rt.grant.client_id) && rt.grant.revoked_at.is_none() {
                self.control
                    .revoke_grants(&actor, GrantSelector::Grant(rt.grant.id), RevocationReason::ClientRequest)
                    .await?;
            }
            return Ok(());
        }
        let keys = self.keys.published();
        if let Ok(verified) = verify_jwt::<AccessTokenClaims>(token, "at+jwt", keys.iter().map(|k| k.public()))
            && owns(&caller, &verified.claims.client_id)
        {
            self.control.revoke_access_token(&actor, &caller.client_id, &verified.claims.jti).await?;
        }
        Ok(())
    }
}

/// The `token` of an introspection or revocation request. A token longer than any this server
/// issues cannot be one of ours: `Ok(None)`, which introspection answers as inactive and
/// revocation as done (RFC 7662 §2.2, RFC 7009 §2.2), rather than as a malformed request.
fn presented_token(params: &Params) -> Result<Option<&str>, OAuthError> {
    match params.single("token") {
        Ok(Some(token)) => Ok(Some(token)),
        Ok(None) => Err(OAuthError::invalid_request("the token parameter is missing")),
        Err(crate::ParamError::TooLong { .. }) => Ok(None),
        Err(e) => Err(OAuthError::invalid_request(e.to_string())),
    }
}

fn owns(caller: &ClientRecord, client_id: &str) -> bool {
    caller.client_id == client_id
}
