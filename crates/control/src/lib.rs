//! The control layer: the one owner of every change to shared state.
//!
//! Each command of [`Control`] takes the [`Actor`] who asks and a typed input, checks the rules
//! that input must obey (once, here), and commits the change in one transaction together with
//! its audit record and, where other nodes must learn of it, a change record
//! ([`portcullis_store::Store::commit`]). The CLI, the configuration sync, Dynamic Client
//! Registration and RFC 7592, client metadata documents, the sign-in, consent and account pages
//! and the maintenance sweeps all change state through here and nowhere else.
//!
//! [`ChangeFeed`] is the other half: it follows the change log on every node (PostgreSQL
//! `LISTEN/NOTIFY` plus a read by revision, or a cheap revision poll on SQLite) and hands each
//! change to whatever keeps state in memory.

mod audit;

use portcullis_telemetry::SignIn;
mod clients;
mod federation;
mod feed;
mod vault;

use std::sync::Arc;

use portcullis_crypto::{CryptoError, digest, random_identifier, random_token};
use portcullis_store::{
    AuditKind, AuditOutcome, ClientRecord, ClientStatus, GrantSelector, InitialAccessTokenRecord, Mutation,
    NewAuditEvent, RegistrationOrigin, SigningKeyRecord, Store, StoreError, UserRecord,
};
use portcullis_types::{Clock, ScopeSet};

pub use audit::{AuditSigner, TrustedAuditKeys, trusted_audit_keys};
pub use clients::{ClientAuth, ClientSpec, ClientSpecError, default_grant_types, parse_grant_types};
pub use federation::{
    AssertedIdentity, EmailMatch, FederatedSignIn, LinkDecision, LinkPolicy, SignInMethod, SignInRefusal,
    UnlinkableEmail, decide_link,
};
pub use feed::{ChangeFeed, FeedSettings};
pub use portcullis_store::Actor;
pub use vault::UpstreamConnection;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("there is no client {0:?}")]
    ClientNotFound(String),
    #[error("there is no user {0:?}")]
    UserNotFound(String),
    #[error("there is no such consent")]
    ConsentNotFound,
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("client {client_id} is not pending approval (it is {status})")]
    NotPending { client_id: String, status: ClientStatus },
    #[error(transparent)]
    InvalidClient(#[from] ClientSpecError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("the audit trail was tampered with: {0}; nothing was pruned (`portcullis audit verify` says more)")]
    AuditTampered(portcullis_store::ChainFault),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::Conflict(what),
            other => Self::Store(other),
        }
    }
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// Why grants are revoked; stored with them and written in the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// The user, on their account page or through an administrator.
    UserRequest,
    /// An administrator or operator.
    AdministratorRequest,
    /// The client revoked its own token (RFC 7009).
    ClientRequest,
}

impl RevocationReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UserRequest => "revoked at the user's request",
            Self::AdministratorRequest => "revoked by an administrator",
            Self::ClientRequest => "refresh token revoked by client",
        }
    }
}

/// A user to create. The password, if any, is already hashed (argon2id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub is_admin: bool,
}

/// What one sweep of the maintenance task removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired requests, codes, sessions and tokens.
    pub expired_rows: u64,
    /// Self-registered clients unused for too long.
    pub unused_clients: Vec<String>,
}

/// Told of each change this node commits, before the command returns.
pub type CommitObserver = Arc<dyn Fn(AuditKind, Option<&str>) + Send + Sync>;

/// The control layer; cheap to clone.
#[derive(Clone)]
pub struct Control {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Woken after every local commit, so this node's feed reads the log at once.
    local_commit: Arc<tokio::sync::Notify>,
    /// Called with the kind and client of every local commit, so that what this node caches
    /// is dropped before the command returns (other nodes learn through the change feed).
    observers: Arc<std::sync::RwLock<Vec<CommitObserver>>>,
    /// Where gateway routes' resources live (`<issuer>/mcp/`): a route's resource is this and
    /// its name. Without it, revoking grants leaves the token vault alone.
    route_resource_prefix: Option<Arc<str>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// Names in a user's or client's record may be shown anywhere: bounded, printable.
fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(ControlError::Invalid(format!("{what} must be 1 to {max} characters with no control characters")));
    }
    Ok(())
}

impl Control {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock, local_commit: Arc::default(), observers: Arc::default(), route_resource_prefix: None }
    }

    /// Knows the gateway's routes by their resources (`<issuer>/mcp/` and the route's name),
    /// so that revoking the last grant a user holds for a route forgets their upstream account
    /// there.
    pub fn with_route_resource_prefix(mut self, prefix: String) -> Self {
        self.route_resource_prefix = Some(prefix.into());
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Calls `observer` after every commit made through this value (and its clones).
    pub fn observe(&self, observer: CommitObserver) {
        if let Ok(mut observers) = self.observers.write() {
            observers.push(observer);
        }
    }

    /// Woken after every commit made through this value (and its clones).
    pub fn local_commits(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.local_commit)
    }

    /// Tells this node's caches and change feed, at once, of a change the store made and
    /// recorded itself (the protocol's own transitions: a replayed code or a reused refresh
    /// token revokes a grant), as [`Self::commit`] does for commands.
    pub fn announce_local(&self, kind: AuditKind, client_id: Option<&str>) {
        if let Ok(observers) = self.observers.read() {
            for observe in observers.iter() {
                observe(kind, client_id);
            }
        }
        self.local_commit.notify_one();
    }

    /// Commits one mutation with its record; every command ends here.
    async fn commit(&self, mutation: Mutation, audit: NewAuditEvent) -> Result<portcullis_store::Committed> {
        let committed = self.store.commit(&mutation, &audit).await?;
        self.announce_local(audit.kind, audit.client_id.as_deref());
        tracing::info!(
            kind = %audit.kind,
            actor = audit.actor.as_deref().unwrap_or("-"),
            client_id = audit.client_id.as_deref().unwrap_or("-"),
            user_id = audit.user_id.as_deref().unwrap_or("-"),
            revision = committed.revision,
            "state changed"
        );
        Ok(committed)
    }

    /// The username of a user id, so that a record names the user as people know them.
    async fn username_of(&self, user_id: Option<&str>) -> Result<Option<String>> {
        Ok(match user_id {
            Some(id) => self.store.find_user(id).await?.map(|u| u.username),
            None => None,
        })
    }

    fn event(&self, kind: AuditKind, actor: &Actor) -> NewAuditEvent {
        NewAuditEvent::action(kind, actor, self.clock.now())
    }

    async fn client(&self, client_id: &str) -> Result<ClientRecord> {
        self.store.find_client(client_id).await?.ok_or_else(|| ControlError::ClientNotFound(client_id.to_owned()))
    }

    async fn user(&self, username: &str) -> Result<UserRecord> {
        self.store.find_user_by_username(username).await?.ok_or_else(|| ControlError::UserNotFound(username.to_owned()))
    }

    /// Maps "not found" from a commit to the named client.
    fn client_missing(client_id: &str) -> impl FnOnce(ControlError) -> ControlError + '_ {
        move |e| match e {
            ControlError::Store(StoreError::NotFound(_)) => ControlError::ClientNotFound(client_id.to_owned()),
            other => other,
        }
    }

    // ---- clients ----

    /// Registers a new client under a fresh id (which never begins with `-`).
    pub async fn register_client(&self, actor: &Actor, spec: ClientSpec) -> Result<ClientRecord> {
        spec.check()?;
        let record = spec.into_record(random_identifier(16)?, self.clock.now());
        let audit = NewAuditEvent {
            client_id: Some(record.client_id.clone()),
            reason: Some(format!("registered by {}", record.origin)),
            ..self.event(AuditKind::ClientRegistered, actor)
        };
        self.commit(Mutation::InsertClient(Box::new(record.clone())), audit).await?;
        Ok(record)
    }

    /// Makes a client with a chosen id (declared in the configuration, or described by a
    /// metadata document) exist as specified. Its status, creation time and registration
    /// artefacts stay as they are, so an administrator's suspension survives. Nothing is
    /// written when nothing changed.
    pub async fn declare_client(&self, actor: &Actor, client_id: &str, spec: ClientSpec) -> Result<ClientRecord> {
        spec.check()?;
        let now = self.clock.now();
        let wanted = spec.into_record(client_id.to_owned(), now);
        let existing = self.store.find_client(client_id).await?;
        let kind = match &existing {
            None => AuditKind::ClientRegistered,
            Some(current) if clients::same_declaration(current, &wanted) => return Ok(current.clone()),
            Some(_) => AuditKind::ClientUpdated,
        };
        let audit = NewAuditEvent {
            client_id: Some(client_id.to_owned()),
            reason: Some(format!("declared by {}", wanted.origin)),
            ..self.event(kind, actor)
        };
        self.commit(Mutation::UpsertClient(Box::new(wanted)), audit).await?;
        self.client(client_id).await
    }

    /// RFC 7592: a client's own update of its metadata (name, redirect URIs, grant types,
    /// scopes, application type, home page). Its type, status and secrets stay.
    pub async fn update_client_metadata(&self, actor: &Actor, updated: ClientRecord) -> Result<ClientRecord> {
        ClientSpec::from_record(&updated).check()?;
        let updated = ClientRecord { updated_at: self.clock.now(), ..updated };
        let audit =
            NewAuditEvent { client_id: Some(updated.client_id.clone()), ..self.event(AuditKind::ClientUpdated, actor) };
        let id = updated.client_id.clone();
        self.commit(Mutation::UpdateClientMetadata(Box::new(updated.clone())), audit)
            .await
            .map_err(Self::client_missing(&id))?;
        Ok(updated)
    }

    async fn set_client_status(
        &self,
        actor: &Actor,
        client_id: &str,
        status: ClientStatus,
        kind: AuditKind,
    ) -> Result<()> {
        let audit = NewAuditEvent { client_id: Some(client_id.to_owned()), ..self.event(kind, actor) };
        let mutation = Mutation::SetClientStatus { client_id: client_id.to_owned(), status };
        self.commit(mutation, audit).await.map_err(Self::client_missing(client_id))?;
        if status == ClientStatus::Suspended {
            self.forget_ungranted_upstream_accounts(None).await?;
        }
        Ok(())
    }

    /// The kill switch: the client is refused everywhere and every grant it holds is revoked.
    pub async fn suspend_client(&self, actor: &Actor, client_id: &str) -> Result<()> {
        self.set_client_status(actor, client_id, ClientStatus::Suspended, AuditKind::ClientSuspended).await
    }

    /// Lets a suspended client work again (its revoked grants stay revoked).
    pub async fn resume_client(&self, actor: &Actor, client_id: &str) -> Result<()> {
        self.set_client_status(actor, client_id, ClientStatus::Active, AuditKind::ClientResumed).await
    }

    async fn pending(&self, client_id: &str) -> Result<ClientRecord> {
        let client = self.client(client_id).await?;
        if client.status != ClientStatus::Pending {
            return Err(ControlError::NotPending { client_id: client_id.to_owned(), status: client.status });
        }
        Ok(client)
    }

    /// Admits a client waiting in the approval queue.
    pub async fn approve_client(&self, actor: &Actor, client_id: &str) -> Result<()> {
        self.pending(client_id).await?;
        self.set_client_status(actor, client_id, ClientStatus::Active, AuditKind::ClientApproved).await
    }

    /// Turns away a client waiting in the approval queue; it is removed.
    pub async fn reject_client(&self, actor: &Actor, client_id: &str) -> Result<()> {
        self.pending(client_id).await?;
        let audit =
            NewAuditEvent { client_id: Some(client_id.to_owned()), ..self.event(AuditKind::ClientRejected, actor) };
        let mutation = Mutation::DeleteClient { client_id: client_id.to_owned() };
        self.commit(mutation, audit).await.map_err(Self::client_missing(client_id))?;
        Ok(())
    }

    /// Removes a client and everything it holds: grants, tokens, consents.
    pub async fn delete_client(&self, actor: &Actor, client_id: &str) -> Result<()> {
        let audit =
            NewAuditEvent { client_id: Some(client_id.to_owned()), ..self.event(AuditKind::ClientDeleted, actor) };
        let mutation = Mutation::DeleteClient { client_id: client_id.to_owned() };
        self.commit(mutation, audit).await.map_err(Self::client_missing(client_id))?;
        self.forget_ungranted_upstream_accounts(None).await?;
        Ok(())
    }

    // ---- users ----

    pub async fn add_user(&self, actor: &Actor, new: NewUser) -> Result<UserRecord> {
        check_name("a username", &new.username, 100)?;
        if new.username.chars().any(char::is_whitespace) {
            return Err(ControlError::Invalid("a username must not contain spaces".into()));
        }
        let now = self.clock.now();
        let user = UserRecord {
            id: random_identifier(12)?,
            username: new.username,
            display_name: new.display_name,
            email: new.email,
            password_hash: new.password_hash,
            is_admin: new.is_admin,
            disabled_at: None,
            created_at: now,
            updated_at: now,
        };
        let audit = NewAuditEvent {
            user_id: Some(user.id.clone()),
            username: Some(user.username.clone()),
            reason: user.is_admin.then(|| "administrator".to_owned()),
            ..self.event(AuditKind::UserAdded, actor)
        };
        self.commit(Mutation::InsertUser(Box::new(user.clone())), audit).await?;
        Ok(user)
    }

    async fn user_action(&self, actor: &Actor, user: &UserRecord, kind: AuditKind, mutation: Mutation) -> Result<()> {
        let audit = NewAuditEvent {
            user_id: Some(user.id.clone()),
            username: Some(user.username.clone()),
            ..self.event(kind, actor)
        };
        self.commit(mutation, audit).await.map_err(|e| match e {
            ControlError::Store(StoreError::NotFound(_)) => ControlError::UserNotFound(user.username.clone()),
            other => other,
        })?;
        Ok(())
    }

    /// The user is refused everywhere at once: sessions end, tokens stop working.
    pub async fn disable_user(&self, actor: &Actor, username: &str) -> Result<UserRecord> {
        let user = self.user(username).await?;
        let mutation = Mutation::SetUserDisabled { user_id: user.id.clone(), disabled: true };
        self.user_action(actor, &user, AuditKind::UserDisabled, mutation).await?;
        Ok(user)
    }

    pub async fn enable_user(&self, actor: &Actor, username: &str) -> Result<UserRecord> {
        let user = self.user(username).await?;
        let mutation = Mutation::SetUserDisabled { user_id: user.id.clone(), disabled: false };
        self.user_action(actor, &user, AuditKind::UserEnabled, mutation).await?;
        Ok(user)
    }

    /// Removes a user with their sessions, consents and grants.
    pub async fn delete_user(&self, actor: &Actor, username: &str) -> Result<UserRecord> {
        let user = self.user(username).await?;
        let mutation = Mutation::DeleteUser { user_id: user.id.clone() };
        self.user_action(actor, &user, AuditKind::UserDeleted, mutation).await?;
        Ok(user)
    }

    /// A new password (already hashed); the user's browser sessions end.
    pub async fn set_password(&self, actor: &Actor, username: &str, password_hash: String) -> Result<UserRecord> {
        let user = self.user(username).await?;
        let mutation = Mutation::SetUserPassword { user_id: user.id.clone(), password_hash };
        self.user_action(actor, &user, AuditKind::UserUpdated, mutation).await?;
        Ok(user)
    }

    // ---- consents and grants ----

    /// Remembers that the user granted exactly `scope` to the client for the resource.
    pub async fn give_consent(
        &self,
        actor: &Actor,
        user_id: &str,
        client_id: &str,
        resource: &str,
        scope: &ScopeSet,
    ) -> Result<()> {
        let audit = NewAuditEvent {
            user_id: Some(user_id.to_owned()),
            username: self.username_of(Some(user_id)).await?,
            client_id: Some(client_id.to_owned()),
            target: Some(resource.to_owned()),
            reason: Some(format!("granted: {scope}")),
            ..self.event(AuditKind::ConsentGiven, actor)
        };
        let mutation = Mutation::SaveConsent {
            user_id: user_id.to_owned(),
            client_id: client_id.to_owned(),
            resource: resource.to_owned(),
            scope: scope.clone(),
        };
        self.commit(mutation, audit).await?;
        Ok(())
    }

    /// Forgets a consent and revokes the grants it produced.
    pub async fn revoke_consent(&self, actor: &Actor, user_id: &str, client_id: &str, resource: &str) -> Result<()> {
        let audit = NewAuditEvent {
            user_id: Some(user_id.to_owned()),
            username: self.username_of(Some(user_id)).await?,
            client_id: Some(client_id.to_owned()),
            target: Some(resource.to_owned()),
            ..self.event(AuditKind::ConsentRevoked, actor)
        };
        let mutation = Mutation::RevokeConsent {
            user_id: user_id.to_owned(),
            client_id: client_id.to_owned(),
            resource: resource.to_owned(),
        };
        self.commit(mutation, audit).await.map_err(|e| match e {
            ControlError::Store(StoreError::NotFound(_)) => ControlError::ConsentNotFound,
            other => other,
        })?;
        self.forget_ungranted_upstream_accounts(Some(user_id)).await?;
        Ok(())
    }

    /// Revokes the grants `selector` reaches, and every token of theirs; returns how many.
    pub async fn revoke_grants(&self, actor: &Actor, selector: GrantSelector, reason: RevocationReason) -> Result<u64> {
        let (user_id, client_id, target) = match &selector {
            GrantSelector::Grant(id) => (None, None, Some(id.clone())),
            GrantSelector::User(id) => (Some(id.clone()), None, None),
            GrantSelector::Client(id) => (None, Some(id.clone()), None),
            GrantSelector::UserClient { user_id, client_id, resource } => {
                (Some(user_id.clone()), Some(client_id.clone()), resource.clone())
            }
            GrantSelector::Resource(uri) => (None, None, Some(uri.clone())),
        };
        let audit = NewAuditEvent {
            username: self.username_of(user_id.as_deref()).await?,
            user_id,
            client_id,
            target,
            reason: Some(reason.as_str().to_owned()),
            ..self.event(AuditKind::GrantsRevoked, actor)
        };
        let user = match &selector {
            GrantSelector::User(id) | GrantSelector::UserClient { user_id: id, .. } => Some(id.clone()),
            _ => None,
        };
        let committed =
            self.commit(Mutation::RevokeGrants { selector, reason: reason.as_str().to_owned() }, audit).await?;
        self.forget_ungranted_upstream_accounts(user.as_deref()).await?;
        Ok(committed.affected)
    }

    /// RFC 7009: one access token, revoked by the client it was issued to.
    pub async fn revoke_access_token(&self, actor: &Actor, client_id: &str, jti: &str) -> Result<bool> {
        let audit = NewAuditEvent {
            client_id: Some(client_id.to_owned()),
            target: Some(jti.to_owned()),
            reason: Some("access token revoked by client".into()),
            ..self.event(AuditKind::GrantsRevoked, actor)
        };
        let committed = self.commit(Mutation::RevokeAccessToken { jti: jti.to_owned() }, audit).await?;
        Ok(committed.affected > 0)
    }

    // ---- keys and registration tokens ----

    /// Adds a new signing key (sealed by the caller's key ring); the others are retired and
    /// stay published until `old_publish_until`.
    pub async fn add_signing_key(&self, actor: &Actor, key: SigningKeyRecord, old_publish_until: i64) -> Result<()> {
        let audit = NewAuditEvent { target: Some(key.kid.clone()), ..self.event(AuditKind::KeyRotated, actor) };
        self.commit(Mutation::AddSigningKey { key, old_publish_until }, audit).await?;
        Ok(())
    }

    /// An initial access token for Dynamic Client Registration: `uses` registrations within
    /// `expires_in` seconds. The token is returned once; only its digest is kept.
    pub async fn create_initial_access_token(
        &self,
        actor: &Actor,
        label: &str,
        uses: i64,
        expires_in: i64,
    ) -> Result<String> {
        check_name("a label", label, 100)?;
        if uses < 1 || expires_in < 1 {
            return Err(ControlError::Invalid("uses and expires_in must be positive".into()));
        }
        let now = self.clock.now();
        let token = random_token(32)?;
        let record = InitialAccessTokenRecord {
            label: label.to_owned(),
            uses_left: uses,
            created_at: now,
            expires_at: now.saturating_add(expires_in),
        };
        let audit = NewAuditEvent {
            target: Some(label.to_owned()),
            reason: Some(format!("{uses} use(s), expires in {expires_in}s")),
            ..self.event(AuditKind::InitialAccessTokenCreated, actor)
        };
        let mutation = Mutation::InsertInitialAccessToken { token_digest: digest(&token).to_vec(), token: record };
        self.commit(mutation, audit).await?;
        Ok(token)
    }

    // ---- records and sweeps ----

    /// A sign-in attempt: who tried, as whom, and how it ended.
    pub async fn record_sign_in(
        &self,
        actor: &Actor,
        user: Option<&UserRecord>,
        username: &str,
        outcome: Result<(), String>,
    ) -> Result<()> {
        let (kind, outcome, reason) = match outcome {
            Ok(()) => (AuditKind::SignInSucceeded, AuditOutcome::Succeeded, None),
            Err(reason) => (AuditKind::SignInFailed, AuditOutcome::Failed, Some(reason)),
        };
        portcullis_telemetry::sign_in(
            "local",
            if outcome == AuditOutcome::Succeeded { SignIn::Succeeded } else { SignIn::Failed },
        );
        let audit = NewAuditEvent {
            user_id: user.map(|u| u.id.clone()),
            username: Some(username.chars().take(100).collect()),
            outcome,
            reason,
            ..self.event(kind, actor)
        };
        self.commit(Mutation::RecordOnly, audit).await?;
        Ok(())
    }

    /// Asks every node to re-read its configuration file (as SIGHUP asks one).
    pub async fn request_config_reload(&self, actor: &Actor) -> Result<i64> {
        let audit = self.event(AuditKind::ConfigReloadRequested, actor);
        let committed = self.commit(Mutation::Announce, audit).await?;
        committed.revision.ok_or_else(|| ControlError::Invalid("the request was not announced".into()))
    }

    /// The configuration file was re-read: applied, or refused and why.
    pub async fn record_config_reload(&self, actor: &Actor, outcome: Result<(), String>) -> Result<()> {
        let (outcome, reason) = match outcome {
            Ok(()) => (AuditOutcome::Succeeded, None),
            Err(reason) => (AuditOutcome::Failed, Some(reason)),
        };
        // Not announced: each node reads its own configuration file.
        let audit = NewAuditEvent { outcome, reason, ..self.event(AuditKind::ConfigReloaded, actor) };
        self.commit(Mutation::RecordOnly, audit).await?;
        Ok(())
    }

    /// The maintenance sweep: purges what has expired and removes self-registered clients
    /// unused for `unused_client_ttl` seconds (each removal audited).
    pub async fn sweep(&self, unused_client_ttl: i64) -> Result<SweepReport> {
        let now = self.clock.now();
        let expired_rows = self.store.purge_expired(now).await?;
        let template = NewAuditEvent {
            reason: Some(format!("unused for {} days", unused_client_ttl / 86_400)),
            ..self.event(AuditKind::ClientDeleted, &Actor::System)
        };
        let unused_clients = self
            .store
            .delete_unused_clients(
                &[RegistrationOrigin::Dcr, RegistrationOrigin::Cimd],
                now - unused_client_ttl,
                &template,
            )
            .await?;
        if !unused_clients.is_empty() {
            self.local_commit.notify_one();
            tracing::info!(removed = unused_clients.len(), "removed unused self-registered clients");
        }
        Ok(SweepReport { expired_rows, unused_clients })
    }
}
