//! The token vault on the request path, and connecting accounts to it.
//!
//! A route with `upstream_auth = "user"` reaches its upstream with the calling user's own
//! token, which this module finds (sealed in the store, bound to user, route and the
//! upstream's authorization server), refreshes when it is about to expire or the upstream
//! refuses it, and asks the user to connect when there is none. Refreshes are single-flight:
//! one per user and route on this node (a lock), and one across nodes (a lease in the
//! database); the others wait for its result. A refresh the authorization server refuses
//! forgets the account, so the next call asks the user to connect again instead of looping.
//!
//! A route with `upstream_auth = "client_credentials"` reaches its upstream with the gateway's
//! own token, held in memory and renewed before it expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_crypto::{UpstreamTokens, VaultBinding};
use portcullis_oauth::AuthorizationServer;
use portcullis_store::{Actor, UpstreamClientRecord, UpstreamCredentialRecord};
use portcullis_types::{Scope, ScopeSet};
use portcullis_upstream_oauth::{
    CallbackParams, ClientAuth, Discovered, PendingConnection, RegisteredClient, Registration, TokenSet,
    UpstreamAuthError, UpstreamClient,
};

/// A token is refreshed when it has less than this left, so it does not expire in flight.
const REFRESH_EARLY_SECS: i64 = 10;
/// How long a node may hold the refresh lease before others may take it over.
const LEASE_SECS: i64 = 15;
/// How long a request waits for another node's refresh, in steps.
const LEASE_WAIT_STEP: Duration = Duration::from_millis(100);
const LEASE_WAIT_STEPS: u32 = 100;

/// Why a user's account could not be used or connected.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("route {0:?} does not connect users' own accounts")]
    NotConnectable(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamAuthError),
    #[error("the token vault is unavailable: {0}")]
    Store(String),
    #[error("another node is refreshing this account's token and did not finish in time; try again")]
    RefreshPending,
}

impl From<portcullis_store::StoreError> for VaultError {
    fn from(e: portcullis_store::StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<portcullis_control::ControlError> for VaultError {
    fn from(e: portcullis_control::ControlError) -> Self {
        Self::Store(e.to_string())
    }
}

/// A usable upstream token, and whose it is.
#[derive(Clone)]
pub(crate) struct Credential {
    pub access_token: String,
}

impl Credential {
    /// The `Authorization` header that carries it (marked sensitive: never logged).
    pub fn header(&self) -> Result<http::HeaderValue, crate::GatewayError> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", self.access_token)).map_err(|_| {
            crate::GatewayError::UpstreamUnavailable {
                message: "its authorization server issued a token that cannot be sent in a header".into(),
                id: None,
            }
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// Held while one request refreshes a user's token for a route; the others wait on it.
type RefreshLock = Arc<tokio::sync::Mutex<()>>;

struct ServiceToken {
    access_token: String,
    expires_at: Option<i64>,
}

pub(crate) struct Vault {
    server: AuthorizationServer,
    /// One refresh at a time per (user, route) on this node.
    refreshing: Mutex<HashMap<(String, String), RefreshLock>>,
    /// The gateway's own tokens, by route (client credentials).
    service: tokio::sync::Mutex<HashMap<String, ServiceToken>>,
}

fn binding<'a>(user_id: &'a str, route: &'a str, issuer: &'a str) -> VaultBinding<'a> {
    VaultBinding { user_id, route, issuer }
}

/// Scope names the store can hold (RFC 6749 §3.3 syntax); others are dropped.
fn scope_set(names: impl IntoIterator<Item = String>) -> ScopeSet {
    let mut set = ScopeSet::new();
    for name in names {
        if let Ok(scope) = Scope::parse(&name) {
            set.insert(scope);
        }
    }
    set
}

impl Vault {
    pub fn new(server: AuthorizationServer) -> Self {
        Self { server, refreshing: Mutex::default(), service: tokio::sync::Mutex::default() }
    }

    fn now(&self) -> i64 {
        self.server.now()
    }

    /// The client the gateway uses with `discovered`'s server, registering dynamically once
    /// (the registration is kept for every node and restart).
    pub async fn registered_client(
        &self,
        client: &UpstreamClient,
        discovered: &Discovered,
    ) -> Result<RegisteredClient, VaultError> {
        match client.registration(discovered)? {
            Registration::Preconfigured(c) | Registration::MetadataDocument(c) => Ok(c),
            Registration::Dynamic => {
                let issuer = &discovered.server.issuer;
                let redirect_uri = client.settings().redirect_uri.as_str();
                if let Some(stored) = self.server.store().find_upstream_client(issuer, redirect_uri).await? {
                    return self.open_client(stored);
                }
                let registered = client.register(discovered).await?;
                let master = self.server.keys().master();
                let client_secret_sealed = registered
                    .client_secret
                    .as_deref()
                    .map(|s| master.seal_upstream_client_secret(issuer, s))
                    .transpose()
                    .map_err(|e| VaultError::Store(e.to_string()))?;
                let record = UpstreamClientRecord {
                    issuer: issuer.clone(),
                    redirect_uri: redirect_uri.to_owned(),
                    client_id: registered.client_id.clone(),
                    client_secret_sealed,
                    auth_method: auth_method_name(registered.auth).to_owned(),
                    registered_at: self.now(),
                };
                tracing::info!(issuer = %issuer, client_id = %registered.client_id, "registered with an upstream's authorization server");
                let kept = self.server.store().save_upstream_client(&record).await?;
                self.open_client(kept)
            }
        }
    }

    fn open_client(&self, record: UpstreamClientRecord) -> Result<RegisteredClient, VaultError> {
        let client_secret = record
            .client_secret_sealed
            .as_deref()
            .map(|sealed| self.server.keys().master().open_upstream_client_secret(&record.issuer, sealed))
            .transpose()
            .map_err(|_| {
                VaultError::Store(format!(
                    "the stored client secret for {:?} does not open; is this the master key it was sealed with?",
                    record.issuer
                ))
            })?;
        Ok(RegisteredClient {
            client_id: record.client_id,
            client_secret,
            auth: ClientAuth::from_method(&record.auth_method).unwrap_or(ClientAuth::None),
        })
    }

    /// The registration that issued tokens to `client_id`: the current one when it is the
    /// same client, else (the operator changed the configuration since) a public client of
    /// that id.
    async fn client_with_id(
        &self,
        client: &UpstreamClient,
        discovered: &Discovered,
        client_id: &str,
    ) -> Result<RegisteredClient, VaultError> {
        let current = self.registered_client(client, discovered).await?;
        if current.client_id == client_id || client_id.is_empty() {
            return Ok(current);
        }
        Ok(RegisteredClient { client_id: client_id.to_owned(), client_secret: None, auth: ClientAuth::None })
    }

    /// Starts connecting `user_id`'s account for `route`: where to send their browser, and
    /// what its callback must find again. `more_scope` is what the upstream asked for on a
    /// step-up, added to what the user already granted it.
    pub async fn begin_connect(
        &self,
        route: &str,
        client: &UpstreamClient,
        user_id: &str,
        more_scope: Option<&str>,
    ) -> Result<(url::Url, PendingConnection), VaultError> {
        let discovered = client.discover(None, false).await?;
        let registered = self.registered_client(client, &discovered).await?;
        let mut scope = client.scopes_to_request(&discovered, None);
        if let Some(existing) = self.server.store().find_upstream_credential(user_id, route).await? {
            scope.extend(existing.scope.iter().map(|s| s.as_str().to_owned()));
        }
        if let Some(more) = more_scope {
            scope.extend(more.split_whitespace().map(str::to_owned));
        }
        scope.sort();
        scope.dedup();
        Ok(client.begin(&discovered, &registered, &scope)?)
    }

    /// Finishes a connection: the code is redeemed, the tokens sealed for this user and route,
    /// and the account stored (replacing what was there).
    pub async fn finish_connect(
        &self,
        route: &str,
        client: &UpstreamClient,
        actor: &Actor,
        user_id: &str,
        pending: &PendingConnection,
        callback: &CallbackParams,
    ) -> Result<(), VaultError> {
        let discovered = client.discover(None, false).await?;
        let registered = self.client_with_id(client, &discovered, &pending.client_id).await?;
        let tokens = client.complete(&discovered, &registered, pending, callback).await?;
        let scope = match &tokens.scope {
            Some(granted) => scope_set(granted.split_whitespace().map(str::to_owned)),
            None => scope_set(pending.scope.iter().cloned()),
        };
        let issuer = discovered.server.issuer.clone();
        let sealed = self.seal(user_id, route, &issuer, &tokens, &registered.client_id)?;
        let connection = portcullis_control::UpstreamConnection {
            user_id: user_id.to_owned(),
            route: route.to_owned(),
            issuer,
            subject: tokens.subject.clone(),
            scope,
            tokens_sealed: sealed,
            access_expires_at: self.expires_at(&tokens),
        };
        self.server.control().connect_upstream(actor, connection).await?;
        Ok(())
    }

    fn expires_at(&self, tokens: &TokenSet) -> Option<i64> {
        tokens.expires_in.map(|secs| self.now().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)))
    }

    fn seal(
        &self,
        user_id: &str,
        route: &str,
        issuer: &str,
        tokens: &TokenSet,
        client_id: &str,
    ) -> Result<Vec<u8>, VaultError> {
        let plain = UpstreamTokens {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            client_id: client_id.to_owned(),
        };
        self.server
            .keys()
            .master()
            .seal_upstream_tokens(binding(user_id, route, issuer), &plain)
            .map_err(|e| VaultError::Store(e.to_string()))
    }

    /// The tokens of a row, or `None` when the row does not open for this user and route (it
    /// was copied from another user, or altered): such a row is never used.
    fn open(&self, row: &UpstreamCredentialRecord) -> Option<UpstreamTokens> {
        match self
            .server
            .keys()
            .master()
            .open_upstream_tokens(binding(&row.user_id, &row.route, &row.issuer), &row.tokens_sealed)
        {
            Ok(tokens) => Some(tokens),
            Err(_) => {
                tracing::warn!(
                    user_id = %row.user_id,
                    route = %row.route,
                    "a stored upstream credential does not open for its user and route; it is not used"
                );
                None
            }
        }
    }

    /// Whether the user's account for `route` was already granted every scope of `scope`: a
    /// step-up for those would only loop.
    pub async fn already_granted(&self, route: &str, user_id: &str, scope: &str) -> Result<bool, VaultError> {
        let Some(row) = self.server.store().find_upstream_credential(user_id, route).await? else { return Ok(false) };
        let asked = scope_set(scope.split_whitespace().map(str::to_owned));
        Ok(!asked.is_empty() && asked.difference(&row.scope).is_empty())
    }

    /// The user's token for `route`, refreshed first when it is about to expire. `None`: the
    /// user has not connected (or must connect again).
    pub async fn user_token(
        &self,
        route: &str,
        client: &UpstreamClient,
        user_id: &str,
    ) -> Result<Option<Credential>, VaultError> {
        let Some(row) = self.server.store().find_upstream_credential(user_id, route).await? else { return Ok(None) };
        let Some(tokens) = self.open(&row) else { return Ok(None) };
        if row.access_expires_at.is_some_and(|at| at <= self.now() + REFRESH_EARLY_SECS) {
            return self.refresh(route, client, user_id, &tokens.access_token).await;
        }
        Ok(Some(Credential { access_token: tokens.access_token }))
    }

    /// Replaces `stale` (expired, or refused by the upstream) with a fresh token: once per user
    /// and route however many requests ask at the same time, on any node.
    pub async fn refresh(
        &self,
        route: &str,
        client: &UpstreamClient,
        user_id: &str,
        stale: &str,
    ) -> Result<Option<Credential>, VaultError> {
        let key = (user_id.to_owned(), route.to_owned());
        let lock = match self.refreshing.lock() {
            Ok(mut map) => Arc::clone(map.entry(key.clone()).or_default()),
            Err(_) => Arc::default(),
        };
        let outcome = {
            let _one_at_a_time = lock.lock().await;
            self.refresh_under_lease(route, client, user_id, stale).await
        };
        if let Ok(mut map) = self.refreshing.lock()
            && map.get(&key).is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            map.remove(&key);
        }
        outcome
    }

    async fn refresh_under_lease(
        &self,
        route: &str,
        client: &UpstreamClient,
        user_id: &str,
        stale: &str,
    ) -> Result<Option<Credential>, VaultError> {
        let store = self.server.store();
        let mut steps = 0;
        let (row, tokens) = loop {
            let Some(row) = store.find_upstream_credential(user_id, route).await? else { return Ok(None) };
            let Some(tokens) = self.open(&row) else { return Ok(None) };
            let now = self.now();
            let fresh = row.access_expires_at.is_none_or(|at| at > now + REFRESH_EARLY_SECS);
            if tokens.access_token != stale && fresh {
                // Someone else refreshed while we waited.
                return Ok(Some(Credential { access_token: tokens.access_token }));
            }
            if store.take_refresh_lease(user_id, route, now, now + LEASE_SECS).await? {
                break (row, tokens);
            }
            steps += 1;
            if steps >= LEASE_WAIT_STEPS {
                return Err(VaultError::RefreshPending);
            }
            tokio::time::sleep(LEASE_WAIT_STEP).await;
        };
        let Some(refresh_token) = tokens.refresh_token.as_deref() else {
            self.forget(user_id, route, "its token expired and the upstream gave no refresh token").await?;
            return Ok(None);
        };
        let discovered = match client.discover(None, false).await {
            Ok(d) => d,
            Err(e) => {
                store.release_refresh_lease(user_id, route).await?;
                return Err(e.into());
            }
        };
        if discovered.server.issuer != row.issuer {
            // The upstream moved to another authorization server (SEP-2352): what the old one
            // issued is not presented to the new one; the user connects there afresh.
            self.forget(user_id, route, "the upstream moved to another authorization server").await?;
            return Ok(None);
        }
        let attempt = async {
            let registered = self.client_with_id(client, &discovered, &tokens.client_id).await?;
            let refreshed = client.refresh(&discovered, &registered, refresh_token).await?;
            Ok::<_, VaultError>((refreshed, registered.client_id))
        };
        match attempt.await {
            Ok((refreshed, client_id)) => {
                let sealed = self.seal(user_id, route, &row.issuer, &refreshed, &client_id)?;
                let stored = store
                    .store_refreshed_tokens(user_id, route, &sealed, self.expires_at(&refreshed), self.now())
                    .await?;
                tracing::info!(route, user_id, "refreshed a user's upstream token");
                Ok(stored.then_some(Credential { access_token: refreshed.access_token }))
            }
            Err(VaultError::Upstream(e @ UpstreamAuthError::TokenRequest(_))) => {
                // Refused for good (invalid_grant, a revoked or rotated-away refresh token):
                // the user must connect again; retrying would only loop.
                tracing::info!(route, user_id, error = %e, "an upstream refused to refresh a user's token");
                self.forget(user_id, route, &format!("refresh refused: {e}")).await?;
                Ok(None)
            }
            Err(e) => {
                store.release_refresh_lease(user_id, route).await?;
                Err(e)
            }
        }
    }

    async fn forget(&self, user_id: &str, route: &str, reason: &str) -> Result<(), VaultError> {
        self.server.control().disconnect_upstream(&Actor::System, user_id, route, Some(reason)).await?;
        Ok(())
    }

    /// Disconnects a user's account: revoked at the upstream where it offers revocation
    /// (RFC 7009; a failure there is logged, the account is forgotten here regardless), then
    /// forgotten. Returns whether there was one.
    pub async fn disconnect(
        &self,
        route: &str,
        client: Option<&UpstreamClient>,
        actor: &Actor,
        user_id: &str,
    ) -> Result<bool, VaultError> {
        if let (Some(client), Some(row)) = (client, self.server.store().find_upstream_credential(user_id, route).await?)
            && let Some(tokens) = self.open(&row)
        {
            let revoked = async {
                let discovered = client.discover(None, false).await?;
                let registered = self.client_with_id(client, &discovered, &tokens.client_id).await?;
                Ok::<_, VaultError>(
                    client
                        .revoke(&discovered, &registered, &tokens.access_token, tokens.refresh_token.as_deref())
                        .await?,
                )
            };
            match revoked.await {
                Ok(true) => tracing::info!(route, user_id, "revoked a user's upstream token at the upstream"),
                Ok(false) => {
                    tracing::info!(route, user_id, "the upstream offers no revocation; the token is forgotten")
                }
                Err(e) => {
                    tracing::warn!(route, user_id, error = %e, "revoking at the upstream failed; the token is forgotten")
                }
            }
        }
        Ok(self.server.control().disconnect_upstream(actor, user_id, route, None).await?)
    }

    /// The gateway's own token for a client-credentials route, renewed when it is about to
    /// expire or `stale` (refused by the upstream).
    pub async fn service_token(
        &self,
        route: &str,
        client: &UpstreamClient,
        stale: Option<&str>,
    ) -> Result<Credential, VaultError> {
        let mut tokens = self.service.lock().await;
        if let Some(held) = tokens.get(route)
            && Some(held.access_token.as_str()) != stale
            && held.expires_at.is_none_or(|at| at > self.now() + REFRESH_EARLY_SECS)
        {
            return Ok(Credential { access_token: held.access_token.clone() });
        }
        let discovered = client.discover(None, stale.is_some()).await?;
        let registered = self.registered_client(client, &discovered).await?;
        let scope = client.scopes_to_request(&discovered, None);
        let issued = client.client_credentials(&discovered, &registered, &scope).await?;
        let credential = Credential { access_token: issued.access_token.clone() };
        tokens.insert(
            route.to_owned(),
            ServiceToken { access_token: issued.access_token.clone(), expires_at: self.expires_at(&issued) },
        );
        Ok(credential)
    }
}

fn auth_method_name(auth: ClientAuth) -> &'static str {
    match auth {
        ClientAuth::None => "none",
        ClientAuth::Basic => "client_secret_basic",
        ClientAuth::Post => "client_secret_post",
    }
}
