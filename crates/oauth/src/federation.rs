//! Signing in through the organisation's identity providers, and what such a sign-in may grant.
//!
//! The protocol toward the provider is `portcullis-sso`'s; who the asserted identity is
//! locally is the control layer's linking rule; this module joins them to the browser session
//! and applies the group ceiling (the most a federated user may grant) and the session bound.

use std::net::IpAddr;

use portcullis_control::{AssertedIdentity, LinkPolicy, SignInMethod, SignInRefusal, UnlinkableEmail};
use portcullis_crypto::{digest, random_token, unverified_string_claim};
use portcullis_sso::{CallbackParams, IdentityProvider, PendingSignIn, SsoError};
use portcullis_store::{
    BrowserSession, ClientRecord, ClientType, GrantKind, GrantRecord, GrantType, SessionFederation, UserRecord,
};
use portcullis_types::ScopeSet;
use portcullis_types::wire::TokenResponse;

use crate::token::allows_grant;
use crate::{AuthorizationServer, NewSession, OAuthError, ServerError, Settings};

/// An identity provider's linking policy, beside its protocol settings.
#[derive(Debug, Clone)]
pub struct FederatedProvider {
    pub provider: std::sync::Arc<IdentityProvider>,
    pub jit: bool,
    pub unlinkable_email: UnlinkableEmail,
}

impl FederatedProvider {
    fn link_policy(&self) -> LinkPolicy {
        LinkPolicy {
            email_domains: self.provider.settings().email_domains.clone(),
            jit: self.jit,
            unlinkable_email: self.unlinkable_email,
        }
    }
}

/// Why a federated sign-in did not sign anyone in.
#[derive(Debug, thiserror::Error)]
pub enum FederatedSignInError {
    #[error(transparent)]
    Protocol(#[from] SsoError),
    #[error(transparent)]
    Refused(SignInRefusal),
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl From<portcullis_control::ControlError> for FederatedSignInError {
    fn from(e: portcullis_control::ControlError) -> Self {
        Self::Server(e.into())
    }
}

/// A successful federated sign-in: the user and their new browser session.
#[derive(Debug)]
pub struct FederatedSession {
    pub user: UserRecord,
    pub session: NewSession,
}

impl Settings {
    /// The identity provider configured under `name`.
    pub fn identity_provider(&self, name: &str) -> Option<&FederatedProvider> {
        self.identity_providers.iter().find(|p| p.provider.settings().name == name)
    }

    /// Home-realm discovery: the provider authoritative for the domain of `email`.
    pub fn identity_provider_for_email(&self, email: &str) -> Option<&FederatedProvider> {
        self.identity_providers.iter().find(|p| p.provider.settings().is_authoritative_for(email))
    }

    /// The most the user of `session` may grant on `resource`'s own scopes: everything for a
    /// local sign-in; for a federated one, the union of the scopes of the groups their
    /// provider asserted at this sign-in (none if the provider is no longer configured).
    /// OpenID Connect's own scopes are never limited.
    /// The admin API's scopes only ever to an administrator.
    pub fn grantable(&self, session: &BrowserSession, requested: &ScopeSet) -> ScopeSet {
        let requested =
            if session.user.is_admin { requested.clone() } else { Settings::without_admin_scopes(requested) };
        let Some(federation) = &session.federation else { return requested };
        let ceiling = self
            .identity_provider(&federation.idp)
            .map(|p| p.provider.settings().scope_ceiling(&federation.groups))
            .unwrap_or_default();
        let builtin = Settings::builtin_scopes();
        ScopeSet::from_scopes(
            requested.iter().filter(|s| builtin.contains(s.as_str()) || ceiling.contains(s.as_str())).cloned(),
        )
    }

    /// The latest a grant made in `session` may live: a federated sign-in must be renewed at
    /// its provider after `max_session_secs`, and its grants end with it.
    pub fn grant_not_after(&self, session: &BrowserSession) -> Option<i64> {
        let federation = session.federation.as_ref()?;
        let bound = self.identity_provider(&federation.idp).map_or(0, |p| p.provider.settings().max_session_secs);
        Some(session.auth_time.saturating_add(bound))
    }
}

impl AuthorizationServer {
    /// Starts a sign-in at identity provider `name`: where to send the browser, and what it
    /// must bring back (to be kept sealed and bound to the browser).
    pub async fn begin_federated_sign_in(
        &self,
        name: &str,
        login_hint: Option<&str>,
        reauthentication: portcullis_sso::Reauthentication,
    ) -> Result<(url::Url, PendingSignIn), SsoError> {
        let settings = self.settings();
        let provider = settings.identity_provider(name).ok_or_else(|| SsoError::UnknownProvider(name.to_owned()))?;
        provider.provider.begin(login_hint, reauthentication).await
    }

    /// Finishes a sign-in at identity provider `name`: verifies the provider's answer against
    /// `pending`, decides who the user is, records the outcome, and starts a browser session.
    /// Every failure is in the audit trail with the provider and why.
    pub async fn finish_federated_sign_in(
        &self,
        name: &str,
        pending: Option<&PendingSignIn>,
        callback: &CallbackParams,
        source: Option<IpAddr>,
    ) -> Result<FederatedSession, FederatedSignInError> {
        let settings = self.settings();
        let Some(provider) = settings.identity_provider(name) else {
            return Err(SsoError::UnknownProvider(name.to_owned()).into());
        };
        let unknown = AssertedIdentity {
            idp: name.to_owned(),
            issuer: String::new(),
            subject: String::new(),
            email: None,
            email_verified: false,
            name: None,
            groups: None,
            method: SignInMethod::Browser,
        };
        let Some(pending) = pending else {
            // No sign-in was started in this browser: nothing to record but a log line (anyone
            // can send this request, and each would otherwise be a write).
            tracing::info!(idp = name, "a callback arrived for no sign-in in progress");
            return Err(SsoError::StateMismatch.into());
        };
        let verified = provider.provider.complete(pending, callback).await;
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(idp = name, error = %e, "federated sign-in failed");
                self.control.record_federated_failure(&unknown, None, &e.to_string(), source).await?;
                return Err(e.into());
            }
        };
        let asserted = AssertedIdentity {
            idp: name.to_owned(),
            issuer: verified.issuer.clone(),
            subject: verified.subject.clone(),
            email: verified.email.clone(),
            email_verified: verified.email_verified,
            name: verified.name.clone(),
            groups: Some(verified.groups.clone()),
            method: SignInMethod::Browser,
        };
        let user = match self.control.federated_sign_in(&provider.link_policy(), &asserted, source).await? {
            Ok(user) => user,
            Err(refusal) => return Err(FederatedSignInError::Refused(refusal)),
        };
        let federation =
            SessionFederation { idp: name.to_owned(), idp_session_id: verified.session_id, groups: verified.groups };
        let max = provider.provider.settings().max_session_secs;
        let session = self.start_session_bounded(&user, Some(&federation), Some(max)).await?;
        Ok(FederatedSession { user, session })
    }

    /// OpenID Connect Back-Channel Logout from provider `name`: the token is verified, and every
    /// user it names (by subject, or by the provider's session id) is signed
    /// out everywhere: browser sessions end and every grant they gave is revoked, which every
    /// node learns through the change feed. Returns how many users were signed out (none is
    /// a success too: they had nothing here).
    pub async fn backchannel_logout(
        &self,
        name: &str,
        logout_token: &str,
        source: Option<IpAddr>,
    ) -> Result<usize, FederatedSignInError> {
        let settings = self.settings();
        let Some(provider) = settings.identity_provider(name) else {
            return Err(SsoError::UnknownProvider(name.to_owned()).into());
        };
        let claims = match provider.provider.verify_logout_token(logout_token).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(idp = name, error = %e, "back-channel logout refused");
                return Err(e.into());
            }
        };
        let mut users = Vec::new();
        if let Some(subject) = &claims.subject
            && let Some(identity) =
                self.store.find_federated_identity(name, &claims.issuer, subject).await.map_err(ServerError::from)?
        {
            users.push(identity.user_id);
        }
        if let Some(sid) = &claims.session_id {
            for user_id in self.store.users_of_idp_session(name, sid).await.map_err(ServerError::from)? {
                if !users.contains(&user_id) {
                    users.push(user_id);
                }
            }
        }
        for user_id in &users {
            self.control.sign_out_everywhere(name, user_id, claims.subject.as_deref(), source).await?;
        }
        // Spent only once the work is done, so a provider that retries after a failure here
        // is not refused; a replay merely signs the same users out again, which changes nothing.
        let remember_until = claims.expires_at.max(self.clock.now()).saturating_add(60);
        let fresh = self
            .store
            .record_seen_assertion(&claims.issuer, &claims.jti, remember_until)
            .await
            .map_err(ServerError::from)?;
        if !fresh {
            tracing::info!(idp = name, "a logout token was delivered again");
        }
        tracing::info!(idp = name, users = users.len(), "signed out by the identity provider");
        Ok(users.len())
    }

    /// The identity assertion grant (SEP-990; RFC 7523 §2.1 with an ID-JAG): an identity
    /// provider vouches for a user to a client it issued the assertion to, with no browser.
    /// The assertion must verify (see `IdentityProvider::verify_identity_assertion`), be this
    /// client's, be for a resource this server knows, and be used once; its subject is mapped to
    /// a user by the same rule as a browser sign-in. The token gets at most the requested ∩
    /// asserted ∩ client-allowed scopes ∩ the user's group ceiling, for that one resource, and
    /// no refresh token: the client comes back with a fresh assertion. Every problem with the
    /// assertion is `invalid_grant`.
    pub(crate) async fn identity_assertion_grant(
        &self,
        client: &ClientRecord,
        assertion: &str,
        scope: Option<&str>,
        resource: Option<&str>,
        resource_count: usize,
    ) -> Result<TokenResponse, OAuthError> {
        if client.client_type != ClientType::Confidential || !allows_grant(client, GrantType::JwtBearer) {
            return Err(OAuthError::unauthorized_client(
                "this client may not present identity assertions; an operator allows it with --grant-type urn:ietf:params:oauth:grant-type:jwt-bearer",
            ));
        }
        let settings = self.settings();
        let issuer = unverified_string_claim(assertion, "iss")
            .ok_or_else(|| OAuthError::invalid_grant("the assertion is not a signed JWT that names its issuer"))?;
        let mut provider = None;
        for candidate in settings.identity_providers.iter().filter(|p| p.provider.settings().accept_id_jag) {
            if candidate.provider.is_issuer(&issuer).await {
                provider = Some(candidate);
                break;
            }
        }
        let provider = provider.ok_or_else(|| {
            OAuthError::invalid_grant(
                "the assertion's issuer is not an identity provider whose assertions this server accepts",
            )
        })?;
        let claims =
            provider.provider.verify_identity_assertion(assertion, &settings.issuer).await.map_err(|e| match e {
                // What could not be reached, and where, is for the log, not for the client.
                SsoError::Unreachable(detail) => {
                    tracing::warn!(idp = %provider.provider.settings().name, %detail, "identity provider unreachable");
                    OAuthError::invalid_grant("the identity provider's keys could not be read; try again later")
                }
                other => OAuthError::invalid_grant(format!("the identity assertion is not valid: {other}")),
            })?;
        if claims.client_id != client.client_id {
            return Err(OAuthError::invalid_grant("the identity assertion was issued to another client"));
        }
        // The assertion and the request must agree on one resource this server knows.
        let resource = match (claims.resource.as_deref(), resource) {
            (Some(asserted), Some(requested)) if asserted != requested => {
                return Err(OAuthError::invalid_grant(
                    "the identity assertion is for another resource than the request names",
                ));
            }
            (Some(asserted), _) => {
                if settings.resource(asserted).is_none() {
                    return Err(OAuthError::invalid_grant(
                        "the identity assertion is for a resource this server does not know",
                    ));
                }
                self.resolve_resource(client, Some(asserted), resource_count.max(1))?
            }
            (None, requested) => {
                if requested.is_none() {
                    return Err(OAuthError::invalid_target(
                        "name the MCP server the token is for in the resource parameter",
                    ));
                }
                self.resolve_resource(client, requested, resource_count)?
            }
        };
        self.check_admin_resource(client, &resource, crate::admin::AdminAccess::IdentityAssertion)?;
        // The ceiling comes from the assertion's groups, else from the last sign-in's.
        let idp = provider.provider.settings().name.clone();
        let max_age = provider.provider.settings().max_session_secs;
        let now = self.clock.now();
        let groups = match claims.groups.clone() {
            Some(groups) => groups,
            // Remembered groups count only while a sign-in would: older ones may be stale.
            None => self
                .store
                .find_federated_identity(&idp, &claims.issuer, &claims.subject)
                .await
                .map_err(ServerError::from)?
                .filter(|identity| identity.groups_at.is_some_and(|at| now.saturating_sub(at) <= max_age))
                .map(|identity| identity.groups)
                .unwrap_or_default(),
        };
        let offered = self.allowed_scopes(client, &resource, false);
        let asserted_scopes = match claims.scope.as_deref() {
            Some(s) => ScopeSet::parse(s)
                .map_err(|e| OAuthError::invalid_grant(format!("the identity assertion's scope is malformed: {e}")))?,
            None => offered.clone(),
        };
        let grantable =
            offered.intersection(&asserted_scopes).intersection(&provider.provider.settings().scope_ceiling(&groups));
        // RFC 6749 §3.3: the token may carry less than was asked; the response says what.
        let granted = match scope {
            Some(requested) => ScopeSet::parse(requested)
                .map_err(|e| OAuthError::invalid_scope(e.to_string()))?
                .intersection(&grantable),
            None => grantable,
        };
        if granted.is_empty() {
            return Err(OAuthError::invalid_scope(
                "none of the requested scopes is available: the assertion, this client or the user's groups allow none of them",
            ));
        }
        // The checks that need no write are done: spend the assertion, then map its subject to
        // a user (which may create one, or still refuse: a disabled or unlinkable user).
        let remember_until = claims.expires_at.max(self.clock.now()) + 60;
        if !self
            .store
            .record_seen_assertion(&claims.issuer, &claims.jti, remember_until)
            .await
            .map_err(ServerError::from)?
        {
            return Err(OAuthError::invalid_grant(
                "the identity assertion was used before; ask the identity provider for a new one",
            ));
        }
        let asserted = AssertedIdentity {
            idp: idp.clone(),
            issuer: claims.issuer.clone(),
            subject: claims.subject.clone(),
            email: claims.email.clone(),
            // An assertion says nothing of verification: it never links an existing account.
            email_verified: false,
            name: None,
            groups: claims.groups.clone(),
            method: SignInMethod::IdentityAssertion,
        };
        let user = match self
            .control
            .federated_sign_in(&provider.link_policy(), &asserted, None)
            .await
            .map_err(ServerError::from)?
        {
            Ok(user) => user,
            Err(refusal) => {
                return Err(OAuthError::invalid_grant(format!("the asserted user cannot act here: {refusal}")));
            }
        };
        let access = self.mint_access_token(
            client,
            crate::token::OnBehalfOf { subject: &user.id, auth_time: None, act: None },
            &resource,
            &granted,
            crate::token::Lifetime { now, not_after: None },
        )?;
        let grant = GrantRecord {
            id: portcullis_crypto::time_ordered_id(now).map_err(ServerError::from)?,
            client_id: client.client_id.clone(),
            user_id: Some(user.id.clone()),
            kind: GrantKind::IdentityAssertion,
            resource,
            scope: granted.clone(),
            auth_time: None,
            created_at: now,
            expires_at: access.record.expires_at,
            revoked_at: None,
            revoked_reason: None,
        };
        self.store.insert_grant_with_access_token(&grant, &access.record).await.map_err(ServerError::from)?;
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            scope: granted.to_string(),
            refresh_token: None,
            id_token: None,
            issued_token_type: None,
        })
    }

    /// A browser session for `user`, signed in now; a federated one lasts no longer than its
    /// provider allows.
    pub(crate) async fn start_session_bounded(
        &self,
        user: &UserRecord,
        federation: Option<&SessionFederation>,
        max_secs: Option<i64>,
    ) -> Result<NewSession, ServerError> {
        let now = self.clock.now();
        let cookie_value = random_token(32)?;
        let ttl = max_secs.map_or(self.settings().session_ttl, |max| max.min(self.settings().session_ttl));
        let expires_at = now + ttl;
        self.store.insert_session(&digest(&cookie_value), &user.id, now, expires_at, federation).await?;
        Ok(NewSession { cookie_value, expires_at })
    }
}
