//! The token endpoint: authorization code with PKCE, refresh with rotation and reuse
//! detection, and client credentials (RFC 6749 §4.1.3, §4.4, §6; OAuth 2.1 §4.3; RFC 7636
//! §4.6; RFC 8707 §2.2; RFC 9068).

use portcullis_crypto::{digest, pkce_s256_matches, random_token, sign_jwt, time_ordered_id};
use portcullis_store::{
    AuditKind, ClientRecord, ClientType, CodeRedemption, GrantKind, GrantRecord, GrantType, NewAccessToken,
    NewRefreshToken, RefreshRotation,
};
use portcullis_types::wire::{AccessTokenClaims, ActClaim, IdTokenClaims, TokenResponse};
use portcullis_types::{OAuthErrorCode, ScopeSet};

use crate::{AuthorizationServer, ClientCredentials, OAuthError, Params};

/// A parsed token request.
#[derive(Debug, Clone)]
pub enum TokenRequest {
    AuthorizationCode {
        code: String,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
        resource: Option<String>,
    },
    RefreshToken {
        refresh_token: String,
        scope: Option<String>,
        resource: Option<String>,
    },
    ClientCredentials {
        scope: Option<String>,
        resource: Option<String>,
        resource_count: usize,
    },
    /// RFC 7523 §2.1 with an identity assertion (SEP-990).
    JwtBearer {
        assertion: String,
        scope: Option<String>,
        resource: Option<String>,
        resource_count: usize,
    },
    /// RFC 8693: a delegate exchanges a user's token for one of its own.
    TokenExchange(crate::exchange::ExchangeRequest),
}

/// The token response plus what the caller may want to log.
#[derive(Debug, Clone)]
pub struct TokenResponseOutcome {
    pub response: TokenResponse,
    pub client_id: String,
}

impl TokenRequest {
    pub fn from_params(params: &Params) -> Result<Self, OAuthError> {
        let get = |name: &str| {
            params.single(name).map(|v| v.map(str::to_owned)).map_err(|e| OAuthError::invalid_request(e.to_string()))
        };
        let resource = if params.count("resource") > 1 {
            return Err(OAuthError::invalid_target("request tokens for one resource at a time"));
        } else {
            get("resource")?
        };
        match get("grant_type")?.as_deref() {
            Some("authorization_code") => Ok(Self::AuthorizationCode {
                code: get("code")?.ok_or_else(|| OAuthError::invalid_request("the code parameter is missing"))?,
                redirect_uri: get("redirect_uri")?,
                code_verifier: get("code_verifier")?,
                resource,
            }),
            Some("refresh_token") => Ok(Self::RefreshToken {
                refresh_token: get("refresh_token")?
                    .ok_or_else(|| OAuthError::invalid_request("the refresh_token parameter is missing"))?,
                scope: get("scope")?,
                resource,
            }),
            Some("client_credentials") => {
                Ok(Self::ClientCredentials { scope: get("scope")?, resource, resource_count: params.count("resource") })
            }
            Some(JWT_BEARER) => Ok(Self::JwtBearer {
                assertion: get("assertion")?
                    .ok_or_else(|| OAuthError::invalid_request("the assertion parameter is missing"))?,
                scope: get("scope")?,
                resource,
                resource_count: params.count("resource"),
            }),
            Some(TOKEN_EXCHANGE) => Ok(Self::TokenExchange(crate::exchange::ExchangeRequest {
                subject_token: get("subject_token")?
                    .ok_or_else(|| OAuthError::invalid_request("the subject_token parameter is missing"))?,
                subject_token_type: get("subject_token_type")?
                    .ok_or_else(|| OAuthError::invalid_request("the subject_token_type parameter is missing"))?,
                actor_token: get("actor_token")?,
                actor_token_type: get("actor_token_type")?,
                requested_token_type: get("requested_token_type")?,
                scope: get("scope")?,
                resource,
                resource_count: params.count("resource"),
                audience: if params.count("audience") > 1 {
                    return Err(OAuthError::invalid_target("request tokens for one audience at a time"));
                } else {
                    get("audience")?
                },
            })),
            Some(other) => Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!(
                    "grant_type {other:?} is not supported; use authorization_code, refresh_token, client_credentials, {JWT_BEARER} or {TOKEN_EXCHANGE}"
                ),
            )),
            None => Err(OAuthError::invalid_request("the grant_type parameter is missing")),
        }
    }
}

/// How stale a client's `last_used_at` may get before a token request refreshes it.
const LAST_USED_PRECISION: i64 = 60;

const JWT_BEARER: &str = GrantType::JwtBearer.as_str();
const TOKEN_EXCHANGE: &str = GrantType::TokenExchange.as_str();

pub(crate) fn allows_grant(client: &ClientRecord, grant: GrantType) -> bool {
    client.grant_types.contains(&grant)
}

impl AuthorizationServer {
    pub async fn token(
        &self,
        credentials: &ClientCredentials,
        request: TokenRequest,
    ) -> Result<TokenResponseOutcome, OAuthError> {
        let client = self.authenticate_client(credentials).await?;
        let grant_type = match &request {
            TokenRequest::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            TokenRequest::RefreshToken { .. } => GrantType::RefreshToken,
            TokenRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
            TokenRequest::JwtBearer { .. } => GrantType::JwtBearer,
            TokenRequest::TokenExchange(_) => GrantType::TokenExchange,
        };
        let response = match request {
            TokenRequest::AuthorizationCode { code, redirect_uri, code_verifier, resource } => {
                self.redeem_code(&client, &code, redirect_uri.as_deref(), code_verifier.as_deref(), resource.as_deref())
                    .await?
            }
            TokenRequest::RefreshToken { refresh_token, scope, resource } => {
                self.refresh(&client, &refresh_token, scope.as_deref(), resource.as_deref()).await?
            }
            TokenRequest::ClientCredentials { scope, resource, resource_count } => {
                self.client_credentials(&client, scope.as_deref(), resource.as_deref(), resource_count).await?
            }
            TokenRequest::JwtBearer { assertion, scope, resource, resource_count } => {
                self.identity_assertion_grant(
                    &client,
                    &assertion,
                    scope.as_deref(),
                    resource.as_deref(),
                    resource_count,
                )
                .await?
            }
            TokenRequest::TokenExchange(exchange) => self.token_exchange(&client, exchange).await?,
        };
        // "Last used" only needs minute precision (it drives the unused-client sweep); writing
        // it on every request would make each token cost an extra write.
        let now = self.clock.now();
        if client.last_used_at.is_none_or(|t| now - t >= LAST_USED_PRECISION) {
            self.touch_client(&client.client_id, now).await?;
        }
        portcullis_telemetry::token_issued(grant_type.as_str());
        Ok(TokenResponseOutcome { response, client_id: client.client_id })
    }

    async fn redeem_code(
        &self,
        client: &ClientRecord,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if !allows_grant(client, GrantType::AuthorizationCode) {
            return Err(OAuthError::unauthorized_client("this client may not use the authorization code grant"));
        }
        let now = self.clock.now();
        let code_digest = digest(code);
        let invalid = || OAuthError::invalid_grant("the authorization code is invalid, expired, or was already used");
        let found = self.store.find_authorization_code(&code_digest).await?.ok_or_else(invalid)?;
        // A code issued to another client is not this client's to burn.
        if found.client_id != client.client_id {
            return Err(invalid());
        }
        if found.redeemed_at.is_none() {
            if found.expires_at <= now {
                return Err(invalid());
            }
            if redirect_uri.is_some_and(|r| r != found.redirect_uri) {
                return Err(OAuthError::invalid_grant(
                    "redirect_uri differs from the one in the authorization request",
                ));
            }
            if resource.is_some_and(|r| r != found.resource) {
                return Err(OAuthError::invalid_target("resource differs from the one in the authorization request"));
            }
            let Some(verifier) = code_verifier else {
                return Err(OAuthError::invalid_grant("code_verifier is required (PKCE)"));
            };
            if !pkce_s256_matches(verifier, &found.code_challenge) {
                return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
            }
        }
        // Redeeming is the atomic step; a second redemption revokes the first one's grant.
        let grant_expires_at = now + self.settings().grant_max_lifetime;
        let code = match self.store.redeem_authorization_code(&code_digest, now, grant_expires_at).await? {
            CodeRedemption::Redeemed(code) => code,
            CodeRedemption::Replayed { grant_id } => {
                self.control.announce_local(AuditKind::GrantsRevoked, Some(&client.client_id));
                tracing::warn!(client_id = %client.client_id, grant_id = %grant_id, "authorization code replayed; grant revoked");
                return Err(OAuthError::invalid_grant(
                    "the authorization code was already used; tokens issued for it are revoked",
                ));
            }
            CodeRedemption::NotFound => return Err(invalid()),
        };
        let user = self.store.find_user(&code.user_id).await?.filter(|u| !u.is_disabled()).ok_or_else(invalid)?;
        // The grant ends with a federated sign-in's bound, as the store made it.
        let grant_expires_at = code.grant_expires_at(grant_expires_at);
        if grant_expires_at <= now {
            return Err(OAuthError::invalid_grant("the sign-in this code came from has ended; sign in again"));
        }
        let scope = code.scope.clone();
        let access = self.mint_access_token(
            client,
            OnBehalfOf { subject: &user.id, auth_time: Some(code.auth_time), act: None },
            &code.resource,
            &scope,
            Lifetime { now, not_after: Some(grant_expires_at) },
        )?;
        let refresh = if allows_grant(client, GrantType::RefreshToken) {
            let value = random_token(32)?;
            let record = NewRefreshToken {
                digest: digest(&value).to_vec(),
                scope: code.scope.clone(),
                created_at: now,
                expires_at: (now + self.refresh_token_ttl(client)).min(grant_expires_at),
            };
            Some((value, record))
        } else {
            None
        };
        self.store.insert_grant_tokens(&code.grant_id, refresh.as_ref().map(|(_, r)| r), &access.record).await?;
        let id_token = if scope.contains("openid") {
            let claims = IdTokenClaims {
                iss: self.settings().issuer.clone(),
                sub: user.id.clone(),
                aud: client.client_id.clone(),
                azp: client.client_id.clone(),
                exp: now + self.settings().id_token_ttl,
                iat: now,
                auth_time: code.auth_time,
                nonce: code.nonce.clone(),
                preferred_username: scope.contains("profile").then(|| user.username.clone()),
                name: if scope.contains("profile") { user.display_name.clone() } else { None },
                email: if scope.contains("email") { user.email.clone() } else { None },
            };
            {
                let key = self.keys.signing_key().map_err(crate::ServerError::from)?;
                Some(sign_jwt(&key, "JWT", &claims)?)
            }
        } else {
            None
        };
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            scope: code.scope.to_string(),
            refresh_token: refresh.map(|(v, _)| v),
            id_token,
            issued_token_type: None,
        })
    }

    async fn refresh(
        &self,
        client: &ClientRecord,
        refresh_token: &str,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        if !allows_grant(client, GrantType::RefreshToken) {
            return Err(OAuthError::unauthorized_client("this client may not use refresh tokens"));
        }
        let now = self.clock.now();
        let old_digest = digest(refresh_token);
        let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let found = self.store.find_refresh_token(&old_digest).await?.ok_or_else(invalid)?;
        if found.grant.client_id != client.client_id {
            return Err(invalid());
        }
        let granted = found.scope.clone();
        let scope = match scope {
            None => granted.clone(),
            Some(s) => {
                let asked = ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                if !asked.is_subset(&granted) {
                    return Err(OAuthError::invalid_scope(format!(
                        "a refresh cannot widen the grant: {} was not granted",
                        asked.difference(&granted)
                    )));
                }
                asked
            }
        };
        if found.rotated_at.is_none() && resource.is_some_and(|r| r != found.grant.resource) {
            return Err(OAuthError::invalid_target("a refresh token is bound to the resource it was issued for"));
        }
        let user_id = found.grant.user_id.clone().ok_or_else(invalid)?;
        let user = self.store.find_user(&user_id).await?.filter(|u| !u.is_disabled()).ok_or_else(invalid)?;
        let access = self.mint_access_token(
            client,
            OnBehalfOf { subject: &user.id, auth_time: found.grant.auth_time, act: None },
            &found.grant.resource,
            &scope,
            Lifetime { now, not_after: Some(found.grant.expires_at) },
        )?;
        let new_value = random_token(32)?;
        let new_refresh = NewRefreshToken {
            digest: digest(&new_value).to_vec(),
            // The family keeps its full grant; a narrowed request only narrows this token.
            scope: found.scope.clone(),
            created_at: now,
            expires_at: (now + self.refresh_token_ttl(client)).min(found.grant.expires_at),
        };
        match self.store.rotate_refresh_token(&old_digest, now, &new_refresh, &access.record).await? {
            RefreshRotation::Rotated => Ok(TokenResponse {
                access_token: access.jwt,
                token_type: "Bearer".into(),
                expires_in: access.expires_in,
                scope: scope.to_string(),
                refresh_token: Some(new_value),
                id_token: None,
                issued_token_type: None,
            }),
            RefreshRotation::Reused { grant_id } => {
                self.control.announce_local(AuditKind::GrantsRevoked, Some(&client.client_id));
                tracing::warn!(client_id = %client.client_id, grant_id = %grant_id, "refresh token reused; token family revoked");
                Err(OAuthError::invalid_grant(
                    "the refresh token was already used; every token of this grant is now revoked",
                ))
            }
            RefreshRotation::Invalid => Err(invalid()),
        }
    }

    async fn client_credentials(
        &self,
        client: &ClientRecord,
        scope: Option<&str>,
        resource: Option<&str>,
        resource_count: usize,
    ) -> Result<TokenResponse, OAuthError> {
        if client.client_type != ClientType::Confidential {
            return Err(OAuthError::unauthorized_client("only confidential clients may use client credentials"));
        }
        if !allows_grant(client, GrantType::ClientCredentials) {
            return Err(OAuthError::unauthorized_client("this client may not use the client credentials grant"));
        }
        let resource = self.resolve_resource(client, resource, resource_count)?;
        self.check_admin_resource(client, &resource, crate::admin::AdminAccess::ClientCredentials)?;
        let scope = self.resolve_scope(client, &resource, scope, true)?;
        let now = self.clock.now();
        let access = self.mint_access_token(
            client,
            OnBehalfOf { subject: &client.client_id, auth_time: None, act: None },
            &resource,
            &scope,
            Lifetime { now, not_after: None },
        )?;
        let grant = GrantRecord {
            id: time_ordered_id(now)?,
            client_id: client.client_id.clone(),
            user_id: None,
            kind: GrantKind::ClientCredentials,
            resource,
            scope: scope.clone(),
            auth_time: None,
            created_at: now,
            expires_at: access.record.expires_at,
            revoked_at: None,
            revoked_reason: None,
        };
        self.store.insert_grant_with_access_token(&grant, &access.record).await?;
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            scope: scope.to_string(),
            refresh_token: None,
            id_token: None,
            issued_token_type: None,
        })
    }

    /// Self-registered clients get shorter-lived refresh tokens.
    fn refresh_token_ttl(&self, client: &ClientRecord) -> i64 {
        if self.is_dynamic(client) {
            self.settings().refresh_token_ttl.min(self.settings().registration.refresh_token_ttl)
        } else {
            self.settings().refresh_token_ttl
        }
    }

    pub(crate) fn mint_access_token(
        &self,
        client: &ClientRecord,
        on_behalf_of: OnBehalfOf<'_>,
        resource: &str,
        scope: &ScopeSet,
        lifetime: Lifetime,
    ) -> Result<MintedAccessToken, OAuthError> {
        let OnBehalfOf { subject, auth_time, act } = on_behalf_of;
        let Lifetime { now, not_after } = lifetime;
        // Never past the grant it is drawn from (a federated sign-in's bound, say).
        let exp = not_after
            .map_or(now + self.settings().access_token_ttl, |bound| bound.min(now + self.settings().access_token_ttl));
        let jti = time_ordered_id(now)?;
        let claims = AccessTokenClaims {
            iss: self.settings().issuer.clone(),
            sub: subject.to_owned(),
            aud: resource.to_owned(),
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            exp,
            iat: now,
            nbf: now,
            jti: jti.clone(),
            auth_time,
            act,
        };
        let key = self.keys.signing_key().map_err(crate::ServerError::from)?;
        let jwt = sign_jwt(&key, "at+jwt", &claims)?;
        Ok(MintedAccessToken {
            jwt,
            expires_in: exp - now,
            record: NewAccessToken { jti, scope: scope.clone(), issued_at: now, expires_at: claims.exp },
        })
    }
}

pub(crate) struct MintedAccessToken {
    pub(crate) jwt: String,
    /// Seconds from issue to expiry: the token response's `expires_in`.
    pub(crate) expires_in: i64,
    pub(crate) record: NewAccessToken,
}

/// Whom a token speaks for: its subject (a user, or the client itself), when they signed in,
/// and the clients acting for them (token exchange).
pub(crate) struct OnBehalfOf<'a> {
    pub(crate) subject: &'a str,
    pub(crate) auth_time: Option<i64>,
    pub(crate) act: Option<ActClaim>,
}

/// When a token is minted, and the latest it may expire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    pub(crate) now: i64,
    pub(crate) not_after: Option<i64>,
}
