//! Records as the store hands them out. Lists are stored space-separated: every element is a
//! URI or a scope token, neither of which can contain a space.

use std::fmt;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

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
    GrantKind { AuthorizationCode = "authorization_code", ClientCredentials = "client_credentials" }
);

/// A registered OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub client_name: String,
    pub client_type: ClientType,
    /// SHA-256 of the client secret, for confidential clients.
    pub secret_digest: Option<Vec<u8>>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// Space-separated scopes the client may ask for; empty means every scope of the resources
    /// it may use.
    pub allowed_scopes: String,
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
}

/// An authorization request parked while the user signs in and consents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequestRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
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
    pub scope: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
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
    pub scope: String,
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
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessToken {
    pub jti: String,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub digest: Vec<u8>,
    pub scope: String,
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
    pub scope: String,
    pub resource: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub token_revoked: bool,
    pub grant_revoked: bool,
    pub user_disabled: bool,
    pub client_status: ClientStatus,
}

impl AccessTokenStatus {
    /// Whether the token is usable at `now`, ignoring its signature (checked before).
    pub fn is_active(&self, now: i64) -> bool {
        now < self.expires_at
            && !self.token_revoked
            && !self.grant_revoked
            && !self.user_disabled
            && self.client_status == ClientStatus::Active
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
    pub scope: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One decided MCP message, as the gateway records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub occurred_at: i64,
    /// The gateway route (upstream name).
    pub route: String,
    pub method: String,
    /// The tool, prompt or resource the message named, if any.
    pub target: Option<String>,
    /// `allowed` or `denied`.
    pub decision: String,
    pub reason: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    /// The HTTP status the client got.
    pub status: i64,
    pub latency_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEventRecord {
    pub id: i64,
    pub event: NewAuditEvent,
}
