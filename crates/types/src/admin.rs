//! The admin API's documents (`/admin/api/v1`), with the OpenAPI schemas the API's document is
//! generated from. The API's paths and the scopes that guard them live in `portcullis-web`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The resource the admin API is, at Portcullis's own authorization server: `<issuer>` and
/// this path.
pub const ADMIN_API_PATH: &str = "/admin/api";
/// Reading anything the admin API shows.
pub const ADMIN_READ_SCOPE: &str = "portcullis.admin.read";
/// Changing anything through the admin API (suspending an agent, revoking a grant, ...).
pub const ADMIN_WRITE_SCOPE: &str = "portcullis.admin.write";

/// How an agent (an OAuth client) came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// An operator, at the command line.
    Operator,
    /// The configuration file.
    Configuration,
    /// Dynamic Client Registration (RFC 7591).
    Dynamic,
    /// A Client ID Metadata Document.
    MetadataDocument,
    /// Dynamic registration with a trusted software statement.
    SoftwareStatement,
}

impl Registration {
    /// In words, as the dashboard shows it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Configuration => "configuration",
            Self::Dynamic => "dynamic registration",
            Self::MetadataDocument => "metadata document",
            Self::SoftwareStatement => "software statement",
        }
    }
}

/// Whether an agent may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Active,
    /// Waiting for an administrator's approval.
    Pending,
    /// Switched off: refused everywhere, its grants revoked.
    Suspended,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Suspended => "suspended",
        }
    }
}

/// An agent: an OAuth client of Portcullis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub client_id: String,
    pub client_name: String,
    pub registration: Registration,
    /// Vouched for (an operator, an initial access token, a trusted publisher or domain).
    pub verified: bool,
    pub status: AgentStatus,
    /// `public` or `confidential`.
    pub client_type: String,
    pub grant_types: Vec<String>,
    /// The hosts of its redirect URIs.
    pub redirect_hosts: Vec<String>,
    /// Who answers for it: the domain that publishes its metadata document, else the host of
    /// the home page it registered (`client_uri`); absent for operators' and configured agents.
    pub owner: Option<String>,
    /// The address it registered itself from (dynamic registration).
    pub registered_from: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, to the minute; absent when never used.
    pub last_used_at: Option<i64>,
}

/// One page of agents; `next_cursor` fetches the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentPage {
    pub items: Vec<Agent>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Every refusal of the admin API (the OAuth error codes for 401 and 403).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: String,
    pub error_description: String,
}

/// A user of Portcullis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub user_id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub administrator: bool,
    pub disabled: bool,
    /// The identity providers the user signs in with (none: a local password).
    pub identity_providers: Vec<String>,
    /// The groups their identity providers last asserted.
    pub groups: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One page of users; `next_cursor` fetches the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    pub next_cursor: Option<String>,
}

/// A live grant able to reach a route (and, when asked, call a tool): who holds what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Holder {
    pub grant_id: String,
    /// The user it acts for; absent for a client acting on its own behalf.
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub client_id: String,
    /// The scopes it holds, space-separated.
    pub scope: String,
    /// Unix seconds: granted at, and lives until.
    pub since: i64,
    pub expires_at: i64,
    /// Unix seconds: when a token of it was last issued.
    pub last_token_at: Option<i64>,
}

/// One page of who holds what on a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HolderPage {
    pub route: String,
    /// The tool asked about: only grants whose scopes the route's policy lets call it.
    pub tool: Option<String>,
    pub items: Vec<Holder>,
    pub next_cursor: Option<String>,
}

/// A user's own account at an upstream, connected through the token vault (never its tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpstreamConnection {
    pub user_id: String,
    pub route: String,
    /// The upstream's authorization server, and the account there when it said.
    pub issuer: String,
    pub subject: Option<String>,
    pub scope: String,
    /// Unix seconds.
    pub connected_at: i64,
}

/// How many grants a revocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// One record of the audit trail: a gateway decision or an identity action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    /// Unix seconds.
    pub occurred_at: i64,
    /// `mcp.message` for a gateway decision; otherwise the identity action (`client.suspended`, ...).
    pub kind: String,
    /// Who did it (`operator`, `admin:ID`, `user:ID`, `client:ID`, `system`); for a delegated
    /// gateway call, the acting client and who delegated to it.
    pub actor: Option<String>,
    pub source_address: Option<String>,
    pub route: Option<String>,
    pub method: Option<String>,
    /// The tool, prompt or resource a gateway decision named.
    pub target: Option<String>,
    /// `allowed` or `denied` (gateway decisions), `succeeded` or `failed` (actions).
    pub outcome: String,
    pub reason: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    /// The HTTP status the caller got (gateway decisions).
    pub status: Option<i64>,
    pub latency_ms: Option<i64>,
}

/// One page of the audit trail, newest first; `next_cursor` fetches older records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// A grant: what a user (or a client for itself) allowed an agent on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    pub grant_id: String,
    pub client_id: String,
    /// Absent for a client acting on its own behalf.
    pub user_id: Option<String>,
    /// `authorization_code`, `client_credentials` or `identity_assertion`.
    pub kind: String,
    pub resource: String,
    pub scope: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// How a route reaches its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteTransport {
    Stdio,
    StreamableHttp,
    LegacySse,
}

/// How a route's upstream answered lately (as this node saw it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteHealth {
    /// `unknown` (nothing forwarded yet), `up` or `failing` (the latest exchange failed).
    pub state: String,
    /// Unix seconds.
    pub last_ok_at: Option<i64>,
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
}

/// A tool, prompt or resource of a route: what the policy maps, what the upstream offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteItem {
    /// A name, a resource URI or template, or a resource pattern of the policy (`*` at the end).
    pub name: String,
    /// The scopes calling it needs; absent when nothing can call it.
    pub scopes: Option<String>,
    /// `mapped` (the policy names it), `unmapped_allowed` (not named, allowed by the rule for
    /// unmapped names), `unmapped` (not named, refused: flagged) or `confusable` (refused: it
    /// looks like a mapped name).
    pub mapping: String,
    /// Unix seconds: when a list answer of the upstream last offered it; absent when never.
    pub last_listed_at: Option<i64>,
}

/// A gateway route with its upstream, health and what it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Route {
    pub name: String,
    /// Its resource: the audience of its tokens.
    pub resource: String,
    pub transport: RouteTransport,
    /// The upstream's URL (without user information or query), or the program a stdio route runs.
    pub upstream: String,
    /// `false` for a route deliberately left open.
    pub authentication: bool,
    /// `static`, `user` (each user's own account, from the token vault) or `client_credentials`.
    pub upstream_auth: String,
    pub health: RouteHealth,
    pub tools: Vec<RouteItem>,
    pub prompts: Vec<RouteItem>,
    pub resources: Vec<RouteItem>,
    /// The upstream offered tools that no policy maps and that are refused.
    pub unmapped_tools: Vec<String>,
    /// A list held more names than are kept; some are not shown.
    pub truncated: bool,
}

/// A user's remembered consent to an agent, for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Consent {
    pub user_id: String,
    pub client_id: String,
    pub resource: String,
    pub scope: String,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A live grant's tokens: its refresh-token family and the access tokens issued from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenFamily {
    pub grant_id: String,
    pub client_id: String,
    /// Absent for a client acting on its own behalf.
    pub user_id: Option<String>,
    pub resource: String,
    pub scope: String,
    /// Unix seconds: when its current refresh token expires; absent when it has none.
    pub refresh_token_expires_at: Option<i64>,
    /// Access tokens of it neither expired nor revoked.
    pub live_access_tokens: i64,
    /// Unix seconds: when an access token of it was last issued.
    pub last_issued_at: Option<i64>,
}

/// A live browser session of a user (never its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// When the user last proved who they are.
    pub auth_time: i64,
    /// The identity provider it was signed in with; absent for a local password.
    pub identity_provider: Option<String>,
}
