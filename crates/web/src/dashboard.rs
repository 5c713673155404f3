//! The dashboard, `/admin`: server-rendered pages over what the admin API serves, for
//! administrators signed in with a browser session.
//!
//! Every page needs a signed-in administrator (anyone else gets 403; no session goes to sign
//! in and comes back). Every change is a plain form POST (works without JavaScript),
//! CSRF-checked like every form of ours, answered with 303, and made by a command of the control
//! layer with the administrator as the actor; switching an agent off asks to confirm first.
//! JavaScript only adds the audit viewer's live tail (`/assets/admin.js`, our own file).
//! The views are the admin API's own documents (`portcullis_types::admin`), built by the same
//! functions, so the dashboard and the API cannot describe an agent differently.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use portcullis_control::{Actor, ControlError, RevocationReason};
use portcullis_oauth::{OAuthError, Params};
use portcullis_store::{BrowserSession, ClientFilter, ClientStatus, GrantSelector};
use portcullis_types::admin::{Agent, AuditEvent, Consent, Grant, Route, Session, TokenFamily, User};

use crate::admin_api::{self, AuditQuery};
use crate::pages::render;
use crate::{AppState, Peer};

/// Rows on a page of a list.
const PAGE: i64 = 50;
/// Rows the live tail adds at most per poll.
const TAIL: i64 = 100;

/// A timestamp to the minute, UTC, as the dashboard shows times.
pub(crate) fn when(timestamp: impl std::borrow::Borrow<i64>) -> String {
    time::OffsetDateTime::from_unix_timestamp(*timestamp.borrow())
        .map(|t| {
            format!("{}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
        })
        .unwrap_or_default()
}

/// What a path segment or query value keeps as it is: RFC 3986 unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A path segment or query value, percent-encoded (templates put ids into links with it).
pub(crate) fn enc(segment: impl AsRef<str>) -> String {
    percent_encoding::utf8_percent_encode(segment.as_ref(), UNRESERVED).to_string()
}

/// A `snake_case` value in words.
pub(crate) fn words(value: impl AsRef<str>) -> String {
    value.as_ref().replace('_', " ")
}

fn when_opt(timestamp: Option<i64>) -> String {
    timestamp.map(when).unwrap_or_else(|| "never".to_owned())
}

/// What every dashboard page's frame needs.
pub(crate) struct Frame {
    pub issuer: String,
    pub base_path: String,
    pub username: String,
    pub csrf: String,
    /// Which item of the navigation is current.
    pub section: &'static str,
}

/// One bar of the activity chart, laid out already.
pub(crate) struct Bar {
    pub x: i64,
    pub allowed_y: i64,
    pub allowed_h: i64,
    pub denied_y: i64,
    pub denied_h: i64,
    pub label: String,
    pub allowed: i64,
    pub denied: i64,
}

pub(crate) struct Chart {
    pub title: String,
    pub bars: Vec<Bar>,
    pub allowed: i64,
    pub denied: i64,
    pub peak: i64,
}

/// Height of the chart's plot area, in SVG units.
const CHART_HEIGHT: i64 = 80;
const BAR_WIDTH: i64 = 12;

fn chart(title: &str, buckets: &[portcullis_store::DecisionBucket], start: i64, step: i64, count: i64) -> Chart {
    let by_start: HashMap<i64, &portcullis_store::DecisionBucket> = buckets.iter().map(|b| (b.start, b)).collect();
    let peak = buckets.iter().map(|b| b.allowed + b.denied).max().unwrap_or(0).max(1);
    let mut bars = Vec::with_capacity(count as usize);
    let (mut allowed_total, mut denied_total) = (0, 0);
    for i in 0..count {
        let at = start + i * step;
        let (allowed, denied) = by_start.get(&at).map_or((0, 0), |b| (b.allowed, b.denied));
        allowed_total += allowed;
        denied_total += denied;
        let allowed_h = allowed * CHART_HEIGHT / peak;
        let denied_h = denied * CHART_HEIGHT / peak;
        bars.push(Bar {
            x: i * (BAR_WIDTH + 2),
            allowed_y: CHART_HEIGHT - allowed_h,
            allowed_h,
            denied_y: CHART_HEIGHT - allowed_h - denied_h,
            denied_h,
            label: when(at),
            allowed,
            denied,
        });
    }
    Chart { title: title.to_owned(), bars, allowed: allowed_total, denied: denied_total, peak }
}

pub(crate) struct CountRow {
    pub status: &'static str,
    pub verified: i64,
    pub unverified: i64,
}

pub(crate) struct UnmappedTool {
    pub route: String,
    pub tool: String,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
pub(crate) struct OverviewPage {
    pub frame: Frame,
    pub counts: Vec<CountRow>,
    /// The last hour and the last day.
    pub charts: Vec<Chart>,
    pub pending: Vec<Agent>,
    pub unmapped: Vec<UnmappedTool>,
    pub failing: Vec<Route>,
}

#[derive(Template)]
#[template(path = "admin/agents.html")]
pub(crate) struct AgentsPage {
    pub frame: Frame,
    pub agents: Vec<Agent>,
    pub status: String,
    pub registration: String,
    pub verified: String,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/agent.html")]
pub(crate) struct AgentPage {
    pub frame: Frame,
    pub agent: Agent,
    pub consents: Vec<Consent>,
    pub families: Vec<TokenFamily>,
    pub grants: Vec<Grant>,
    pub calls: Vec<AuditEvent>,
    pub notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "admin/confirm.html")]
pub(crate) struct ConfirmPage {
    pub frame: Frame,
    pub heading: String,
    pub explanation: &'static str,
    pub action: String,
    pub button: &'static str,
    pub back: String,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
pub(crate) struct UsersPage {
    pub frame: Frame,
    pub users: Vec<User>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/user.html")]
pub(crate) struct UserPage {
    pub frame: Frame,
    pub user: User,
    pub consents: Vec<Consent>,
    pub sessions: Vec<Session>,
    pub families: Vec<TokenFamily>,
    pub grants: Vec<Grant>,
    pub calls: Vec<AuditEvent>,
    pub notice: Option<&'static str>,
}

/// One row of the tool matrix.
pub(crate) struct MatrixRow {
    pub tool: String,
    pub scopes: String,
    pub mapping: String,
    pub listed: bool,
    /// Live grants (and distinct users) whose scopes let them call it now.
    pub grants: i64,
    pub users: i64,
}

pub(crate) struct MatrixRoute {
    pub route: String,
    pub rows: Vec<MatrixRow>,
}

#[derive(Template)]
#[template(path = "admin/tools.html")]
pub(crate) struct ToolsPage {
    pub frame: Frame,
    pub routes: Vec<MatrixRoute>,
}

pub(crate) struct HolderRow {
    pub grant_id: String,
    pub who: String,
    pub user_id: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub since: String,
    pub expires: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "admin/holders.html")]
pub(crate) struct HoldersPage {
    pub frame: Frame,
    pub route: String,
    pub tool: String,
    pub holders: Vec<HolderRow>,
    pub truncated: bool,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
pub(crate) struct AuditPage {
    pub frame: Frame,
    pub events: Vec<AuditEvent>,
    pub form: AuditForm,
    /// The query string of the current filters (for the next page, the tail and exports).
    pub filters: String,
    pub next: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/audit_rows.html")]
pub(crate) struct AuditRows {
    pub base_path: String,
    pub events: Vec<AuditEvent>,
}

#[derive(Template)]
#[template(path = "admin/routes.html")]
pub(crate) struct RoutesPage {
    pub frame: Frame,
    pub routes: Vec<Route>,
}

/// The audit viewer's filters as its form sends them: every field may be empty.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub(crate) struct AuditForm {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub tool: String,
    #[serde(default)]
    pub decision: String,
    /// `YYYY-MM-DDTHH:MM` (a `datetime-local` field), UTC.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// Only records older than this id (the next page).
    #[serde(default)]
    pub before: Option<i64>,
    /// Only records newer than this id (the live tail).
    #[serde(default)]
    pub after: Option<i64>,
    /// `jsonl` or `csv` (exports only).
    #[serde(default)]
    pub format: Option<String>,
}

/// A `datetime-local` value (`YYYY-MM-DDTHH:MM`, taken as UTC) as unix seconds.
fn minute(text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a time (YYYY-MM-DDTHH:MM, UTC)");
    let (date, clock) = text.split_once('T').ok_or_else(bad)?;
    let numbers = |part: &str, sep: char| -> Option<Vec<i64>> { part.split(sep).map(|n| n.parse().ok()).collect() };
    let (Some([year, month, day]), Some([hour, minute])) = (
        numbers(date, '-').as_deref().and_then(|d| <[i64; 3]>::try_from(d).ok()),
        numbers(clock, ':').as_deref().and_then(|c| <[i64; 2]>::try_from(c).ok()),
    ) else {
        return Err(bad());
    };
    let month = u8::try_from(month).ok().and_then(|m| time::Month::try_from(m).ok()).ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(
        i32::try_from(year).map_err(|_| bad())?,
        month,
        u8::try_from(day).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    let clock =
        time::Time::from_hms(u8::try_from(hour).map_err(|_| bad())?, u8::try_from(minute).map_err(|_| bad())?, 0)
            .map_err(|_| bad())?;
    Ok(Some(time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp()))
}

impl AuditForm {
    fn query(&self) -> Result<AuditQuery, String> {
        let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
        Ok(AuditQuery {
            from: minute(&self.from)?,
            to: minute(&self.to)?,
            kind: some(&self.kind),
            user: some(&self.user),
            client: some(&self.client),
            route: some(&self.route),
            tool: some(&self.tool),
            decision: some(&self.decision),
            ..AuditQuery::default()
        })
    }

    /// The filters as a query string (without the paging members).
    fn encoded(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("kind", &self.kind),
            ("user", &self.user),
            ("client", &self.client),
            ("route", &self.route),
            ("tool", &self.tool),
            ("decision", &self.decision),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }
}

impl AppState {
    fn admin_error(&self, status: StatusCode, message: &str) -> Response {
        self.page_error(status, &OAuthError::new(portcullis_types::OAuthErrorCode::AccessDenied, message))
    }

    fn dashboard_failed(&self, e: impl std::fmt::Display) -> Response {
        tracing::error!(error = %e, "a dashboard page failed");
        self.page_error(StatusCode::INTERNAL_SERVER_ERROR, &OAuthError::server_error())
    }

    /// The signed-in administrator, or the answer: sign in and come back to `back`, or 403.
    async fn administrator(
        &self,
        jar: CookieJar,
        back: &str,
        section: &'static str,
    ) -> Result<(CookieJar, BrowserSession, Frame), Response> {
        let session = self.session(&jar).await?;
        let (jar, session) = self.signed_in_or_login(jar, session, back)?;
        if !session.user.is_admin || session.user.is_disabled() {
            return Err(self.admin_error(StatusCode::FORBIDDEN, "The dashboard is for administrators only."));
        }
        let (jar, browser) = self.browser_id(jar)?;
        let frame = Frame {
            issuer: self.server.settings().issuer.clone(),
            base_path: self.base_path.clone(),
            username: session.user.username.clone(),
            csrf: self.csrf_token(&browser),
            section,
        };
        Ok((jar, session, frame))
    }

    /// A dashboard form: CSRF-checked, from a signed-in administrator, who is the actor.
    async fn admin_form(
        &self,
        peer: Peer,
        headers: &HeaderMap,
        jar: &CookieJar,
        body: &Bytes,
    ) -> Result<(Params, Actor), Response> {
        let params = self.checked_form(headers, jar, body)?;
        let session = self.session(jar).await?.ok_or_else(|| Redirect::to(&self.path("/login")).into_response())?;
        if !session.user.is_admin || session.user.is_disabled() {
            return Err(self.admin_error(StatusCode::FORBIDDEN, "The dashboard is for administrators only."));
        }
        let source = Some(self.client_address(peer.0, headers));
        Ok((params, Actor::Administrator { user_id: session.user.id, source }))
    }
}

/// A dashboard page: ours may run the dashboard's script.
fn page(jar: CookieJar, template: &impl Template) -> Response {
    page_with(jar, StatusCode::OK, template)
}

fn page_with(jar: CookieJar, status: StatusCode, template: &impl Template) -> Response {
    let mut response = (jar, render(status, template)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(crate::headers::DASHBOARD_CSP));
    response
}

// ---- overview ----

pub(crate) async fn overview(State(state): State<AppState>, jar: CookieJar) -> Response {
    let (jar, _, frame) = match state.administrator(jar, &state.path("/admin"), "overview").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = state.server.store();
    let now = state.server.now();
    let counts = match store.client_counts().await {
        Ok(c) => c,
        Err(e) => return state.dashboard_failed(e),
    };
    let counts = [ClientStatus::Active, ClientStatus::Pending, ClientStatus::Suspended]
        .into_iter()
        .map(|status| {
            let of = |verified: bool| {
                counts.iter().filter(|c| c.status == status && c.verified == verified).map(|c| c.count).sum()
            };
            CountRow { status: status.as_str(), verified: of(true), unverified: of(false) }
        })
        .collect();
    // The last hour in 5-minute bars, the last day in hourly ones, each ending with the
    // interval that holds now.
    let hour_start = (now / 300) * 300 - 11 * 300;
    let day_start = (now / 3600) * 3600 - 23 * 3600;
    let (hour, day) =
        match (store.decision_histogram(hour_start, 300).await, store.decision_histogram(day_start, 3600).await) {
            (Ok(h), Ok(d)) => (chart("Last hour", &h, hour_start, 300, 12), chart("Last day", &d, day_start, 3600, 24)),
            (Err(e), _) | (_, Err(e)) => return state.dashboard_failed(e),
        };
    let pending_filter = ClientFilter { status: Some(ClientStatus::Pending), ..ClientFilter::default() };
    let pending = match store.clients_page(&pending_filter, None, 20).await {
        Ok(p) => p.into_iter().map(admin_api::agent).collect(),
        Err(e) => return state.dashboard_failed(e),
    };
    let routes: Vec<Route> = state
        .gateway
        .as_ref()
        .map(|g| g.route_overviews().into_iter().map(admin_api::route_view).collect())
        .unwrap_or_default();
    let unmapped = routes
        .iter()
        .flat_map(|r| r.unmapped_tools.iter().map(|t| UnmappedTool { route: r.name.clone(), tool: t.clone() }))
        .collect();
    let failing = routes.into_iter().filter(|r| r.health.state == "failing").collect();
    page(jar, &OverviewPage { frame, counts, charts: vec![hour, day], pending, unmapped, failing })
}

// ---- agents ----

pub(crate) async fn agents(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (jar, _, frame) = match state.administrator(jar, &state.path("/admin/agents"), "agents").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let get = |name: &str| q.get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (status, registration, verified) = (get("status"), get("registration"), get("verified"));
    let filter = ClientFilter {
        status: ClientStatus::parse(&status),
        origin: serde_json::from_value::<portcullis_types::admin::Registration>(serde_json::Value::String(
            registration.clone(),
        ))
        .ok()
        .map(admin_api::origin_of),
        verified: match verified.as_str() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        },
    };
    let after = q.get("after").filter(|a| !a.is_empty()).map(String::as_str);
    let mut found = match state.server.store().clients_page(&filter, after, PAGE + 1).await {
        Ok(f) => f,
        Err(e) => return state.dashboard_failed(e),
    };
    let next = if found.len() as i64 > PAGE {
        found.truncate(PAGE as usize);
        found.last().map(|c| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("status", &status).append_pair("registration", &registration);
            query.append_pair("verified", &verified).append_pair("after", &c.client_id);
            query.finish()
        })
    } else {
        None
    };
    let agents = found.into_iter().map(admin_api::agent).collect();
    page(jar, &AgentsPage { frame, agents, status, registration, verified, next })
}

fn grant_views(grants: Vec<portcullis_store::GrantRecord>) -> Vec<Grant> {
    grants.into_iter().map(admin_api::grant_view).collect()
}

/// Recent gateway decisions matching `filter`, newest first.
async fn recent_calls(state: &AppState, filter: portcullis_store::AuditFilter) -> Result<Vec<AuditEvent>, Response> {
    let filter = portcullis_store::AuditFilter { kinds: vec![portcullis_store::AuditKind::McpMessage], ..filter };
    match state.server.store().audit_events_before(None, 20, &filter).await {
        Ok(found) => Ok(found.into_iter().map(admin_api::audit_view).collect()),
        Err(e) => Err(state.dashboard_failed(e)),
    }
}

fn notice(q: &HashMap<String, String>) -> Option<&'static str> {
    Some(match q.get("done")?.as_str() {
        "suspended" => "Suspended: every grant it held is revoked, and it is refused everywhere.",
        "resumed" => "Resumed: it may act again once users authorize it anew.",
        "approved" => "Approved: it may now ask users for access.",
        "revoked" => "Every grant it held is revoked.",
        "disabled" => "Disabled: every token of theirs stopped, and their sessions ended.",
        "enabled" => "Enabled: they may sign in again.",
        _ => return None,
    })
}

pub(crate) async fn agent(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(client_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let back = state.path(&format!("/admin/agents/{}", enc(&client_id)));
    let (jar, _, frame) = match state.administrator(jar, &back, "agents").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = state.server.store();
    let agent = match store.find_client(&client_id).await {
        Ok(Some(c)) => admin_api::agent(c),
        Ok(None) => return state.admin_error(StatusCode::NOT_FOUND, "There is no such agent."),
        Err(e) => return state.dashboard_failed(e),
    };
    let now = state.server.now();
    let (consents, families, grants) = match (
        store.consents_to_client(&client_id).await,
        store.token_families(portcullis_store::FamiliesOf::Client(&client_id), now).await,
        store.list_grants(Some(&client_id), None).await,
    ) {
        (Ok(c), Ok(f), Ok(g)) => (
            c.into_iter().map(admin_api::consent_view).collect(),
            f.into_iter().map(admin_api::family_view).collect(),
            grant_views(g),
        ),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return state.dashboard_failed(e),
    };
    let filter = portcullis_store::AuditFilter { client_id: Some(client_id), ..Default::default() };
    let calls = match recent_calls(&state, filter).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    page(jar, &AgentPage { frame, agent, consents, families, grants, calls, notice: notice(&q) })
}

/// What an action on an agent is called, does, and asks before doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentAction {
    Suspend,
    Resume,
    Approve,
    Reject,
    Delete,
    RevokeGrants,
}

impl AgentAction {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "suspend" => Self::Suspend,
            "resume" => Self::Resume,
            "approve" => Self::Approve,
            "reject" => Self::Reject,
            "delete" => Self::Delete,
            "revoke-grants" => Self::RevokeGrants,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Suspend => "suspend",
            Self::Resume => "resume",
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Delete => "delete",
            Self::RevokeGrants => "revoke-grants",
        }
    }

    /// What the confirmation page says (only destructive actions ask).
    fn confirmation(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Suspend => Some((
                "Every grant it holds is revoked and its tokens stop at once, on every node; it is refused at the \
                 token endpoint and the gateway until resumed. Users must authorize it again after that.",
                "Suspend it now",
            )),
            Self::Reject => Some(("It is removed; it may register again and wait for approval anew.", "Reject it")),
            Self::Delete => Some((
                "It is removed with every grant, token and consent it holds. This cannot be undone.",
                "Delete it",
            )),
            Self::RevokeGrants => Some((
                "Every grant it holds is revoked and its tokens stop at once; users may authorize it again.",
                "Revoke its grants",
            )),
            Self::Resume | Self::Approve => None,
        }
    }

    async fn run(self, state: &AppState, actor: &Actor, client_id: &str) -> Result<(), ControlError> {
        let control = state.server.control();
        match self {
            Self::Suspend => control.suspend_client(actor, client_id).await,
            Self::Resume => control.resume_client(actor, client_id).await,
            Self::Approve => control.approve_client(actor, client_id).await,
            Self::Reject => control.reject_client(actor, client_id).await,
            Self::Delete => control.delete_client(actor, client_id).await,
            Self::RevokeGrants => control
                .revoke_grants(
                    actor,
                    GrantSelector::Client(client_id.to_owned()),
                    RevocationReason::AdministratorRequest,
                )
                .await
                .map(|_| ()),
        }
    }

    /// Where the browser goes afterwards, and what the page then says.
    fn done(self) -> Option<&'static str> {
        match self {
            Self::Suspend => Some("suspended"),
            Self::Resume => Some("resumed"),
            Self::Approve => Some("approved"),
            Self::RevokeGrants => Some("revoked"),
            // The agent is gone: back to the list.
            Self::Reject | Self::Delete => None,
        }
    }
}

/// The confirmation step of a destructive action (a page, so it works without JavaScript).
pub(crate) async fn confirm_agent_action(
    State(state): State<AppState>,
    jar: CookieJar,
    Path((client_id, action)): Path<(String, String)>,
) -> Response {
    let path = format!("/admin/agents/{}", enc(&client_id));
    let (jar, _, frame) = match state.administrator(jar, &state.path(&path), "agents").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some((action, (explanation, button))) =
        AgentAction::parse(&action).and_then(|a| a.confirmation().map(|c| (a, c)))
    else {
        return state.admin_error(StatusCode::NOT_FOUND, "There is no such action.");
    };
    let name = match state.server.store().find_client(&client_id).await {
        Ok(Some(c)) => c.client_name,
        Ok(None) => return state.admin_error(StatusCode::NOT_FOUND, "There is no such agent."),
        Err(e) => return state.dashboard_failed(e),
    };
    let verb = match action {
        AgentAction::Suspend => "Suspend",
        AgentAction::Reject => "Reject",
        AgentAction::Delete => "Delete",
        _ => "Revoke every grant of",
    };
    let page_view = ConfirmPage {
        heading: format!("{verb} {name}?"),
        explanation,
        action: state.path(&format!("{path}/{}", action.name())),
        button,
        back: state.path(&path),
        frame,
    };
    page(jar, &page_view)
}

pub(crate) async fn agent_action(
    State(state): State<AppState>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    Path((client_id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (_, actor) = match state.admin_form(peer, &headers, &jar, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(action) = AgentAction::parse(&action) else {
        return state.admin_error(StatusCode::NOT_FOUND, "There is no such action.");
    };
    match action.run(&state, &actor, &client_id).await {
        Ok(()) => {}
        Err(ControlError::ClientNotFound(_)) => {
            return state.admin_error(StatusCode::NOT_FOUND, "There is no such agent.");
        }
        Err(ControlError::NotPending { .. }) => {
            return state.admin_error(StatusCode::CONFLICT, "This agent is not waiting for approval.");
        }
        Err(e) => return state.dashboard_failed(e),
    }
    let to = match action.done() {
        Some(done) => state.path(&format!("/admin/agents/{}?done={done}", enc(&client_id))),
        None => state.path("/admin/agents"),
    };
    Redirect::to(&to).into_response()
}

// ---- users ----

pub(crate) async fn users(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (jar, _, frame) = match state.administrator(jar, &state.path("/admin/users"), "users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let after = q.get("after").filter(|a| !a.is_empty()).map(String::as_str);
    let mut found = match state.server.store().users_page(None, None, after, PAGE + 1).await {
        Ok(f) => f,
        Err(e) => return state.dashboard_failed(e),
    };
    let next = if found.len() as i64 > PAGE {
        found.truncate(PAGE as usize);
        found.last().map(|u| form_urlencoded::Serializer::new(String::new()).append_pair("after", &u.id).finish())
    } else {
        None
    };
    let mut users = Vec::with_capacity(found.len());
    for u in found {
        match admin_api::user_view(&state, u).await {
            Ok(v) => users.push(v),
            Err(r) => return r,
        }
    }
    page(jar, &UsersPage { frame, users, next })
}

pub(crate) async fn user(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(user_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let back = state.path(&format!("/admin/users/{}", enc(&user_id)));
    let (jar, _, frame) = match state.administrator(jar, &back, "users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = state.server.store();
    let user = match store.find_user(&user_id).await {
        Ok(Some(u)) => match admin_api::user_view(&state, u).await {
            Ok(v) => v,
            Err(r) => return r,
        },
        Ok(None) => return state.admin_error(StatusCode::NOT_FOUND, "There is no such user."),
        Err(e) => return state.dashboard_failed(e),
    };
    let now = state.server.now();
    let (consents, sessions, families, grants) = match (
        store.list_consents(&user_id).await,
        store.sessions_of_user(&user_id, now).await,
        store.token_families(portcullis_store::FamiliesOf::User(&user_id), now).await,
        store.list_grants(None, Some(&user_id)).await,
    ) {
        (Ok(c), Ok(s), Ok(f), Ok(g)) => (
            c.into_iter().map(admin_api::consent_view).collect(),
            s.into_iter().map(admin_api::session_view).collect(),
            f.into_iter().map(admin_api::family_view).collect(),
            grant_views(g),
        ),
        (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
            return state.dashboard_failed(e);
        }
    };
    let filter = portcullis_store::AuditFilter { user: Some(user_id), ..Default::default() };
    let calls = match recent_calls(&state, filter).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    page(jar, &UserPage { frame, user, consents, sessions, families, grants, calls, notice: notice(&q) })
}

pub(crate) async fn user_action(
    State(state): State<AppState>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    Path((user_id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (_, actor) = match state.admin_form(peer, &headers, &jar, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = state.server.store();
    let username = match store.find_user(&user_id).await {
        Ok(Some(u)) => u.username,
        Ok(None) => return state.admin_error(StatusCode::NOT_FOUND, "There is no such user."),
        Err(e) => return state.dashboard_failed(e),
    };
    let control = state.server.control();
    let (outcome, done) = match action.as_str() {
        "disable" => (control.disable_user(&actor, &username).await.map(|_| ()), "disabled"),
        "enable" => (control.enable_user(&actor, &username).await.map(|_| ()), "enabled"),
        "revoke-grants" => (
            control
                .revoke_grants(&actor, GrantSelector::User(user_id.clone()), RevocationReason::AdministratorRequest)
                .await
                .map(|_| ()),
            "revoked",
        ),
        _ => return state.admin_error(StatusCode::NOT_FOUND, "There is no such action."),
    };
    match outcome {
        Ok(()) => Redirect::to(&state.path(&format!("/admin/users/{}?done={done}", enc(&user_id)))).into_response(),
        Err(ControlError::UserNotFound(_)) => state.admin_error(StatusCode::NOT_FOUND, "There is no such user."),
        Err(e) => state.dashboard_failed(e),
    }
}

// ---- who can call what ----

pub(crate) async fn tools(State(state): State<AppState>, jar: CookieJar) -> Response {
    let (jar, _, frame) = match state.administrator(jar, &state.path("/admin/tools"), "tools").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let store = state.server.store();
    let now = state.server.now();
    let overviews = state.gateway.as_ref().map(|g| g.route_overviews()).unwrap_or_default();
    let mut routes = Vec::with_capacity(overviews.len());
    for overview in overviews {
        let holders = match store.live_grant_scopes(&overview.resource, now).await {
            Ok(h) => h,
            Err(e) => return state.dashboard_failed(e),
        };
        let policy = std::sync::Arc::clone(&overview.policy);
        let view = admin_api::route_view(overview);
        let rows = view
            .tools
            .into_iter()
            .map(|t| {
                let able = holders
                    .iter()
                    .filter(|h| policy.decide(&h.scope, portcullis_authz::Operation::CallTool(&t.name)).is_allowed());
                let (grants, users) = able.fold((0, 0), |(g, u), h| (g + h.grants, u + h.users));
                MatrixRow {
                    scopes: t.scopes.clone().unwrap_or_else(|| "—".to_owned()),
                    listed: t.last_listed_at.is_some(),
                    mapping: t.mapping,
                    tool: t.name,
                    grants,
                    users,
                }
            })
            .collect();
        routes.push(MatrixRoute { route: view.name, rows });
    }
    page(jar, &ToolsPage { frame, routes })
}

/// The holders shown at most on one page of who holds what.
const HOLDERS_SHOWN: usize = 200;

pub(crate) async fn holders(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(route): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let back = state.path(&format!("/admin/routes/{}/holders", enc(&route)));
    let (jar, _, frame) = match state.administrator(jar, &back, "tools").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some((resource, policy)) = state.gateway.as_ref().and_then(|g| g.route_policy(&route)) else {
        return state.admin_error(StatusCode::NOT_FOUND, "There is no such route.");
    };
    let tool = q.get("tool").map(|t| t.trim().to_owned()).unwrap_or_default();
    let store = state.server.store();
    let now = state.server.now();
    let mut holders = Vec::new();
    let mut after: Option<String> = None;
    let mut truncated = false;
    // Walk the live grants in pages until enough are found; bounded by the page size.
    loop {
        let found = match store.live_grants_page(&resource, now, after.as_deref(), 500).await {
            Ok(f) => f,
            Err(e) => return state.dashboard_failed(e),
        };
        let last = found.last().map(|live| live.grant.id.clone());
        let full = found.len() == 500;
        for live in found {
            let grant = live.grant;
            if !tool.is_empty()
                && !policy.decide(&grant.scope, portcullis_authz::Operation::CallTool(&tool)).is_allowed()
            {
                continue;
            }
            if holders.len() == HOLDERS_SHOWN {
                truncated = true;
                break;
            }
            holders.push(HolderRow {
                who: match (&live.username, &grant.user_id) {
                    (Some(name), _) => name.clone(),
                    (None, Some(id)) => id.clone(),
                    (None, None) => "(the agent itself)".to_owned(),
                },
                since: when(grant.created_at),
                expires: when(grant.expires_at),
                last_used: when_opt(live.last_token_at),
                scope: grant.scope.to_string(),
                grant_id: grant.id,
                user_id: grant.user_id,
                client_id: grant.client_id,
            });
        }
        if truncated || !full {
            break;
        }
        after = last;
    }
    page(jar, &HoldersPage { frame, route, tool, holders, truncated })
}

pub(crate) async fn revoke_grant(
    State(state): State<AppState>,
    peer: Peer,
    jar: CookieJar,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
    body: Bytes,
) -> Response {
    let (params, actor) = match state.admin_form(peer, &headers, &jar, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let outcome = state
        .server
        .control()
        .revoke_grants(&actor, GrantSelector::Grant(grant_id), RevocationReason::AdministratorRequest)
        .await;
    if let Err(e) = outcome {
        return state.dashboard_failed(e);
    }
    // Back where the button was: only one of our own dashboard paths.
    let back = params.single("back").ok().flatten().unwrap_or_default();
    let to = if state.is_own_page(back, &["/admin/"]) { back.to_owned() } else { state.path("/admin/tools") };
    Redirect::to(&to).into_response()
}

// ---- the audit trail ----

pub(crate) async fn audit(
    State(state): State<AppState>,
    jar: CookieJar,
    form: Result<Query<AuditForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (jar, _, frame) = match state.administrator(jar, &state.path("/admin/audit"), "audit").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form = form.map(|Query(f)| f).unwrap_or_default();
    let filters = form.encoded();
    let filter = form.query().and_then(|q| admin_api::audit_filter(&q));
    let (events, next, error, status) = match filter {
        Ok(filter) => match state.server.store().audit_events_before(form.before, PAGE + 1, &filter).await {
            Ok(mut found) => {
                let more = found.len() as i64 > PAGE;
                found.truncate(PAGE as usize);
                let next = more.then(|| found.last().map(|r| r.id)).flatten();
                let next = next.map(|id| {
                    let sep = if filters.is_empty() { "" } else { "&" };
                    format!("{filters}{sep}before={id}")
                });
                (found.into_iter().map(admin_api::audit_view).collect(), next, None, StatusCode::OK)
            }
            Err(e) => return state.dashboard_failed(e),
        },
        Err(why) => (Vec::new(), None, Some(why), StatusCode::BAD_REQUEST),
    };
    let view = AuditPage { frame, events, form, filters, next, error };
    page_with(jar, status, &view)
}

/// The live tail: rows newer than `after` that match the filters, as table rows (HTML),
/// newest first, for the viewer's script to put on top.
pub(crate) async fn audit_tail(
    State(state): State<AppState>,
    jar: CookieJar,
    form: Result<Query<AuditForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (jar, _, _) = match state.administrator(jar, &state.path("/admin/audit"), "audit").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(Query(form)) = form else {
        return (StatusCode::BAD_REQUEST, "the filters do not parse").into_response();
    };
    let filter = match form.query().and_then(|q| admin_api::audit_filter(&q)) {
        Ok(f) => f,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let found = match state.server.store().audit_events(Some(form.after.unwrap_or(0)), TAIL, &filter).await {
        Ok(f) => f,
        Err(e) => return state.dashboard_failed(e),
    };
    let events = found.into_iter().rev().map(admin_api::audit_view).collect();
    page(jar, &AuditRows { base_path: state.base_path.clone(), events })
}

// ---- routes ----

pub(crate) async fn routes(State(state): State<AppState>, jar: CookieJar) -> Response {
    let (jar, _, frame) = match state.administrator(jar, &state.path("/admin/routes"), "routes").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let routes = state
        .gateway
        .as_ref()
        .map(|g| g.route_overviews().into_iter().map(admin_api::route_view).collect())
        .unwrap_or_default();
    page(jar, &RoutesPage { frame, routes })
}

/// The dashboard's one script: the audit viewer's live tail.
pub(crate) async fn script() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../assets/admin.js"))
        .into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

/// Shown in templates: a count with its noun.
pub(crate) fn plural(n: impl std::borrow::Borrow<i64>, one: &str, many: &str) -> String {
    let n = *n.borrow();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The audit trail as a file, with the viewer's filters (`format=csv` for CSV).
pub(crate) async fn audit_export(
    State(state): State<AppState>,
    jar: CookieJar,
    form: Result<Query<AuditForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = state.administrator(jar, &state.path("/admin/audit"), "audit").await {
        return r;
    }
    let Ok(Query(form)) = form else {
        return state.admin_error(StatusCode::BAD_REQUEST, "The filters do not parse.");
    };
    let filter = match form.query().and_then(|q| admin_api::audit_filter(&q)) {
        Ok(f) => f,
        Err(why) => return state.admin_error(StatusCode::BAD_REQUEST, &why),
    };
    let csv = match form.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return state.admin_error(StatusCode::BAD_REQUEST, "The format is jsonl or csv."),
    };
    admin_api::export(state.server.store().clone(), filter, csv)
}
