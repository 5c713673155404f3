//! Records as the store hands them out, already typed: enums for every closed set of values,
//! [`ScopeSet`] for scopes. A stored value that does not parse is a [`crate::StoreError::Corrupt`]
//! that names the row, never a silent default. Lists are stored space-separated: every element
//! is a URI, a grant type or a scope token, none of which can contain a space.

use std::fmt;

use portcullis_types::ScopeSet;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(value: &str) -> Option<Self> {
                match value { $($text => Some(Self::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Whether a client can keep a secret (RFC 6749 §2.1).
    ClientType { Public = "public", Confidential = "confidential" }
);
text_enum!(
    /// OIDC Registration `application_type`.
    ApplicationType { Web = "web", Native = "native" }
);
text_enum!(
    /// How the client came to be known.
    RegistrationOrigin { Admin = "admin", Config = "config", Dcr = "dcr", Cimd = "cimd", SoftwareStatement = "software_statement" }
);
text_enum!(
    ClientStatus { Active = "active", Pending = "pending", Suspended = "suspended" }
);
text_enum!(
    GrantKind {
        AuthorizationCode = "authorization_code",
        ClientCredentials = "client_credentials",
        /// Made from an identity provider's identity assertion (SEP-990, the ID-JAG).
        IdentityAssertion = "identity_assertion",
    }
);
text_enum!(
    /// An OAuth grant type a client may use (RFC 7591 `grant_types`).
    GrantType {
        AuthorizationCode = "authorization_code",
        RefreshToken = "refresh_token",
        ClientCredentials = "client_credentials",
        /// RFC 7523 §2.1, here only for identity assertions (SEP-990).
        JwtBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer",
        /// RFC 8693: an agent exchanges a token it was given for one it may use elsewhere.
        TokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange",
    }
);
text_enum!(
    /// What an audit record is about: a gateway decision (`mcp.message`) or an identity action.
    /// Every identity action that changes state is also the kind of its change record.
    AuditKind {
        McpMessage = "mcp.message",
        ClientRegistered = "client.registered",
        ClientUpdated = "client.updated",
        ClientApproved = "client.approved",
        ClientRejected = "client.rejected",
        ClientSuspended = "client.suspended",
        ClientResumed = "client.resumed",
        ClientDeleted = "client.deleted",
        UserAdded = "user.added",
        UserUpdated = "user.updated",
        UserDisabled = "user.disabled",
        UserEnabled = "user.enabled",
        UserDeleted = "user.deleted",
        UserLinked = "user.linked",
        UpstreamConnected = "upstream.connected",
        UpstreamDisconnected = "upstream.disconnected",
        SignInSucceeded = "signin.succeeded",
        SignInFailed = "signin.failed",
        SignedOutByIdp = "signin.logged_out",
        ConsentGiven = "consent.given",
        ConsentRevoked = "consent.revoked",
        GrantsRevoked = "grants.revoked",
        KeyRotated = "key.rotated",
        ConfigReloaded = "config.reloaded",
        ConfigReloadRequested = "config.reload_requested",
        InitialAccessTokenCreated = "iat.created",
        /// Old records removed on purpose, leaving a signed base checkpoint.
        AuditPruned = "audit.pruned",
    }
);
text_enum!(
    /// How an audited event ended: a gateway decision is allowed or denied, an identity action
    /// succeeded or failed.
    AuditOutcome { Allowed = "allowed", Denied = "denied", Succeeded = "succeeded", Failed = "failed" }
);

text_enum!(
    /// What a checkpoint marks.
    CheckpointKind {
        /// Signed at an interval, over the chain as it then was.
        Periodic = "periodic",
        /// Where a pruned trail now starts: the records up to it were removed on purpose.
        Base = "base",
    }
);

impl AuditKind {
    pub const ALL: &[AuditKind] = &[
        Self::McpMessage,
        Self::ClientRegistered,
        Self::ClientUpdated,
        Self::ClientApproved,
        Self::ClientRejected,
        Self::ClientSuspended,
        Self::ClientResumed,
        Self::ClientDeleted,
        Self::UserAdded,
        Self::UserUpdated,
        Self::UserDisabled,
        Self::UserEnabled,
        Self::UserDeleted,
        Self::UserLinked,
        Self::UpstreamConnected,
        Self::UpstreamDisconnected,
        Self::SignInSucceeded,
        Self::SignInFailed,
        Self::SignedOutByIdp,
        Self::ConsentGiven,
        Self::ConsentRevoked,
        Self::GrantsRevoked,
        Self::KeyRotated,
        Self::ConfigReloaded,
        Self::ConfigReloadRequested,
        Self::InitialAccessTokenCreated,
        Self::AuditPruned,
    ];
}

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub client_name: String,
    pub client_type: ClientType,
    /// SHA-256 of the client secret, for confidential clients.
    pub secret_digest: Option<Vec<u8>>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// The scopes the client may ask for; empty means every scope of the resources it may use.
    pub allowed_scopes: ScopeSet,
    /// Resources (MCP server URLs) the client may get tokens for; empty means all of them.
    pub allowed_resources: Vec<String>,
    pub application_type: ApplicationType,
    pub origin: RegistrationOrigin,
    pub verified: bool,
    pub status: ClientStatus,
    pub can_introspect: bool,
    /// RFC 7592: digest of the registration access token, for dynamically registered clients.
    pub registration_token_digest: Option<Vec<u8>>,
    /// The source address a dynamically registered client registered from.
    pub registered_from: Option<String>,
    /// The client's home page, as it registered it (shown, never fetched).
    pub client_uri: Option<String>,
    /// A JWKS document of the client's public keys, for `private_key_jwt` authentication.
    pub jwks: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

/// Which clients a listing shows (`None`: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFilter {
    pub status: Option<ClientStatus>,
    pub origin: Option<RegistrationOrigin>,
    pub verified: Option<bool>,
}

/// How many clients have one status and verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCount {
    pub status: ClientStatus,
    pub verified: bool,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialAccessTokenRecord {
    pub label: String,
    pub uses_left: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRecord {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_key_sealed: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSession {
    pub user: UserRecord,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    /// `None` when the user signed in with a local password.
    pub federation: Option<SessionFederation>,
}

/// How a federated sign-in made a browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFederation {
    /// The identity provider's configured name.
    pub idp: String,
    /// The provider's own session id (`sid`), which back-channel logout may name.
    pub idp_session_id: Option<String>,
    /// The groups the provider asserted at this sign-in.
    pub groups: Vec<String>,
}

/// A user's own credentials for one upstream (the token vault). The tokens are sealed; only
/// the master key, with this row's user, route and issuer, opens them.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamCredentialRecord {
    pub user_id: String,
    /// The gateway route (upstream name).
    pub route: String,
    /// The upstream's authorization server.
    pub issuer: String,
    /// The user's account at the upstream, when it says.
    pub subject: Option<String>,
    pub scope: ScopeSet,
    pub tokens_sealed: Vec<u8>,
    pub access_expires_at: Option<i64>,
    pub refresh_lease_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for UpstreamCredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCredentialRecord")
            .field("user_id", &self.user_id)
            .field("route", &self.route)
            .field("issuer", &self.issuer)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A user as an identity provider knows them. The key is (idp, issuer, subject), never the
/// email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedIdentityRecord {
    pub idp: String,
    pub issuer: String,
    pub subject: String,
    pub user_id: String,
    /// As last asserted, verified or not: for display, never for finding a user.
    pub email: Option<String>,
    /// The groups of the last sign-in that asserted any (they bound an identity assertion that
    /// carries none, while they are recent), and when they were asserted.
    pub groups: Vec<String>,
    pub groups_at: Option<i64>,
    pub created_at: i64,
    pub last_sign_in_at: i64,
}

/// An authorization request parked while the user signs in and consents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequestRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: ScopeSet,
    pub resource: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    /// Space-separated `prompt` values.
    pub prompt: String,
    pub max_age: Option<i64>,
    /// Who signed in on the login page of this request, if anyone has yet.
    pub login_user_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCodeRecord {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub resource: String,
    pub scope: ScopeSet,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
    /// The latest the grant this code makes may live (a federated sign-in's bound); `None`:
    /// the server's grant lifetime alone.
    pub grant_not_after: Option<i64>,
}

impl AuthorizationCodeRecord {
    /// When the grant this code makes ends: at `limit` (the server's grant lifetime from now),
    /// or at the code's own bound (a federated sign-in's end) if that is sooner.
    pub fn grant_expires_at(&self, limit: i64) -> i64 {
        self.grant_not_after.map_or(limit, |bound| bound.min(limit))
    }
}

/// A grant: one user's (or, for client credentials, one client's) authorization of one client
/// for one resource and scope set. Refresh tokens and access tokens hang off it; revoking it
/// revokes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub kind: GrantKind,
    pub resource: String,
    pub scope: ScopeSet,
    pub auth_time: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// A refresh token as found by its digest, with its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub grant: GrantRecord,
    pub scope: ScopeSet,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessToken {
    pub jti: String,
    pub scope: ScopeSet,
    pub issued_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub digest: Vec<u8>,
    pub scope: ScopeSet,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Everything that decides whether an access token is still good, in one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenStatus {
    pub jti: String,
    pub grant_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub scope: ScopeSet,
    pub resource: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub token_revoked: bool,
    pub grant_revoked: bool,
    pub user_disabled: bool,
    pub client_status: ClientStatus,
    /// A delegated token's holder (token exchange), when it is not the grant's client.
    pub holder: Option<String>,
    /// How many of a delegated token's clients are no longer active (suspended, deleted).
    pub inactive_actors: i64,
}

impl AccessTokenStatus {
    /// Whether the token is usable at `now`, ignoring its signature (checked before).
    pub fn is_active(&self, now: i64) -> bool {
        now < self.expires_at
            && !self.token_revoked
            && !self.grant_revoked
            && !self.user_disabled
            && self.client_status == ClientStatus::Active
            && self.inactive_actors == 0
    }

    /// The client that holds the token: a delegate, or the grant's own client.
    pub fn holder(&self) -> &str {
        self.holder.as_deref().unwrap_or(&self.client_id)
    }
}

/// What happened to a code presented for redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// Redeemed now; the grant row exists.
    Redeemed(Box<AuthorizationCodeRecord>),
    /// Redeemed before: the grant it produced has been revoked.
    Replayed {
        grant_id: String,
    },
    NotFound,
}

/// What happened to a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    Rotated,
    /// It had been rotated already: the family (the grant) is now revoked.
    Reused {
        grant_id: String,
    },
    /// Gone, expired, or its grant revoked.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub user_id: String,
    pub client_id: String,
    pub resource: String,
    pub scope: ScopeSet,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One audit record: a gateway decision or an identity action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub occurred_at: i64,
    pub kind: AuditKind,
    /// Who did it, as [`crate::Actor`] renders it (`operator`, `admin:ID`, `user:ID`,
    /// `client:ID`, `system`); `None` for gateway decisions, whose caller is the user and client.
    pub actor: Option<String>,
    /// The network address the action came from, when it came over the network.
    pub source_address: Option<String>,
    /// The gateway route (upstream name).
    pub route: Option<String>,
    pub method: Option<String>,
    /// The tool, prompt or resource the message named, if any.
    pub target: Option<String>,
    pub outcome: AuditOutcome,
    /// Why: the policy's reason for a denial, the cause of a revocation, what failed.
    pub reason: Option<String>,
    /// The user the event is about (the caller of a gateway decision, the subject of an action).
    pub user_id: Option<String>,
    pub username: Option<String>,
    /// The client the event is about.
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    /// The subject an identity provider asserted (federated sign-ins and logouts).
    pub subject: Option<String>,
    /// The HTTP status the client got (gateway decisions).
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
}

impl NewAuditEvent {
    /// An identity action at `occurred_at` by `actor`, successful, about nobody yet.
    pub fn action(kind: AuditKind, actor: &crate::Actor, occurred_at: i64) -> Self {
        Self {
            occurred_at,
            kind,
            actor: Some(actor.to_string()),
            source_address: actor.source_address().map(|a| a.to_string()),
            route: None,
            method: None,
            target: None,
            outcome: AuditOutcome::Succeeded,
            reason: None,
            user_id: None,
            username: None,
            client_id: None,
            issuer: None,
            subject: None,
            status: None,
            latency_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventRecord {
    pub id: i64,
    pub event: NewAuditEvent,
}

/// Gateway decisions within one interval of a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionBucket {
    /// Unix seconds: where the interval starts.
    pub start: i64,
    pub allowed: i64,
    pub denied: i64,
}

/// Whose token families to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamiliesOf<'a> {
    Client(&'a str),
    User(&'a str),
}

/// A live grant with its tokens: one refresh-token family and the access tokens issued from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFamily {
    pub grant: GrantRecord,
    /// When its current (unrotated) refresh token expires; absent when it has none live.
    pub refresh_expires_at: Option<i64>,
    /// Access tokens of it that have not expired or been revoked.
    pub live_access_tokens: i64,
    pub last_issued_at: Option<i64>,
}

/// A live browser session, as an administrator may see it (never its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub created_at: i64,
    pub expires_at: i64,
    pub auth_time: i64,
    /// The identity provider it was signed in with; absent for a local password.
    pub identity_provider: Option<String>,
}

/// A grant live now, with whom it acts for and when a token of it was last issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGrant {
    pub grant: GrantRecord,
    /// The user's username (absent for a client acting for itself).
    pub username: Option<String>,
    pub last_token_at: Option<i64>,
}

/// Live grants for a resource that hold exactly one set of scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeHolders {
    pub scope: portcullis_types::ScopeSet,
    pub grants: i64,
    /// Distinct users they act for (a client acting for itself counts as none).
    pub users: i64,
}

/// Which audit records to read; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub kinds: Vec<AuditKind>,
    /// A user id or username.
    pub user: Option<String>,
    pub client_id: Option<String>,
    /// Unix seconds: from (inclusive) and to (exclusive).
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub route: Option<String>,
    /// The tool, prompt or resource a gateway decision named.
    pub target: Option<String>,
    pub outcome: Option<AuditOutcome>,
}

/// A committed change, as every node reads it from the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// One more than the revision before it, in commit order.
    pub revision: i64,
    pub kind: AuditKind,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub occurred_at: i64,
}

/// Who performs an identity action; every audit record of one names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An operator at the command line.
    Operator,
    /// The configuration file, applied at start or on reload.
    Configuration,
    /// A signed-in administrator.
    Administrator { user_id: String, source: Option<std::net::IpAddr> },
    /// A user acting for themselves: signing in, consenting, on the account page.
    User { user_id: String, source: Option<std::net::IpAddr> },
    /// A client registering itself (DCR) or publishing a metadata document; it has no id yet.
    Registrant { source: Option<std::net::IpAddr> },
    /// Someone not (yet) known: a sign-in with a username that does not exist.
    Anonymous { source: Option<std::net::IpAddr> },
    /// A client managing its own registration (RFC 7592) or using its tokens.
    Client { client_id: String, source: Option<std::net::IpAddr> },
    /// Portcullis itself: sweeps, replay and reuse detection.
    System,
    /// An identity provider speaking for its users (back-channel logout).
    IdentityProvider { name: String, source: Option<std::net::IpAddr> },
}

impl Actor {
    pub fn source_address(&self) -> Option<std::net::IpAddr> {
        match self {
            Self::Administrator { source, .. }
            | Self::User { source, .. }
            | Self::Registrant { source }
            | Self::Anonymous { source }
            | Self::Client { source, .. }
            | Self::IdentityProvider { source, .. } => *source,
            Self::Operator | Self::Configuration | Self::System => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operator => f.write_str("operator"),
            Self::Configuration => f.write_str("configuration"),
            Self::Administrator { user_id, .. } => write!(f, "admin:{user_id}"),
            Self::User { user_id, .. } => write!(f, "user:{user_id}"),
            Self::Registrant { .. } => f.write_str("registrant"),
            Self::Anonymous { .. } => f.write_str("anonymous"),
            Self::Client { client_id, .. } => write!(f, "client:{client_id}"),
            Self::System => f.write_str("system"),
            Self::IdentityProvider { name, .. } => write!(f, "idp:{name}"),
        }
    }
}
