//! The authorization endpoint (RFC 6749 §4.1, OAuth 2.1 §4.1, RFC 7636, RFC 8707, RFC 9207,
//! OIDC Core §3.1.2) and the sign-in and consent steps between request and code.
//!
//! A request is validated in two phases. Until the client and redirect URI are known to be
//! good, an error can only be shown to the user ([`AuthorizeRejection::Fatal`]): redirecting
//! would make us an open redirector. After that, errors go back to the client
//! ([`AuthorizeRejection::Redirect`]) with `state` and `iss`. A valid request is parked in the
//! store under a random handle while the user signs in and consents.

use portcullis_crypto::{digest, is_valid_s256_challenge, random_token};
use portcullis_store::{
    AuthorizationCodeRecord, AuthorizationRequestRecord, BrowserSession, ClientRecord, ClientStatus, UserRecord,
};
use portcullis_types::{OAuthErrorCode, ScopeSet};
use url::Url;

use crate::redirect_uri::redirect_uri_matches;
use crate::{AuthorizationServer, OAuthError, Params, Settings};

/// Why an authorization request did not produce a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeRejection {
    /// The client or redirect URI is not trustworthy: show an error page, never redirect.
    Fatal(OAuthError),
    /// Tell the client, at its (verified) redirect URI.
    Redirect { location: String, error: OAuthError },
}

impl AuthorizeRejection {
    fn fatal(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self::Fatal(OAuthError::new(code, description))
    }
}

/// A validated authorization request, parked under `handle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    pub handle: String,
}

/// What the browser must do next for a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Login,
    Consent,
    /// Back to the client, with a code (or an error such as `login_required`).
    Redirect(String),
}

/// The parsed query of an authorization request.
#[derive(Debug, Clone, Default)]
pub struct AuthorizationRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Option<String>,
    pub resource_count: usize,
    pub nonce: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub response_mode: Option<String>,
    pub has_request_object: bool,
}

/// One line of the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLine {
    pub scope: String,
    pub description: String,
    /// Already granted before (pre-ticked, and shown as such).
    pub previously_granted: bool,
}

/// Everything the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentPrompt {
    pub client_id: String,
    pub client_name: String,
    pub client_verified: bool,
    pub client_origin: String,
    pub redirect_host: String,
    pub redirect_uri: String,
    pub resource: String,
    pub resource_name: String,
    pub scopes: Vec<ScopeLine>,
    pub user: UserRecord,
    /// For a metadata-document client, the host that published it (the client's identity).
    pub client_id_host: Option<String>,
    /// Every redirect URI of the client is on this machine: anyone could claim to be it.
    pub localhost_only: bool,
    /// The identity provider the user signed in through (its display name), if any.
    pub identity_provider: Option<String>,
    /// What was asked that the user's groups do not allow them to grant.
    pub withheld: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentDecision {
    /// Grant these scopes (a subset of what was asked; an empty subset is a denial).
    Approve(Vec<String>),
    Deny,
}

impl AuthorizationRequest {
    pub fn from_params(params: &Params) -> Result<Self, crate::ParamError> {
        let get = |name: &str| params.single(name).map(|v| v.map(str::to_owned));
        Ok(Self {
            client_id: get("client_id")?,
            redirect_uri: get("redirect_uri")?,
            response_type: get("response_type")?,
            scope: get("scope")?,
            state: get("state")?,
            code_challenge: get("code_challenge")?,
            code_challenge_method: get("code_challenge_method")?,
            resource: params.all("resource").first().map(|s| (*s).to_owned()),
            resource_count: params.count("resource"),
            nonce: get("nonce")?,
            prompt: get("prompt")?,
            max_age: get("max_age")?,
            response_mode: get("response_mode")?,
            has_request_object: params.count("request") > 0 || params.count("request_uri") > 0,
        })
    }
}

/// Appends `pairs` to a redirect URI's query, keeping any query it already has (RFC 6749 §3.1.2).
pub(crate) fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (k, v) in pairs {
                    query.append_pair(k, v);
                }
            }
            url.to_string()
        }
        // Registered URIs are validated as absolute URLs, so this is unreachable in practice.
        Err(_) => redirect_uri.to_owned(),
    }
}

const PROMPT_VALUES: &[&str] = &["none", "login", "consent", "select_account"];

impl AuthorizationServer {
    fn error_redirect(&self, redirect_uri: &str, state: Option<&str>, error: OAuthError) -> AuthorizeRejection {
        let mut pairs = vec![("error", error.code.as_str()), ("error_description", error.description.as_str())];
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        let settings = self.settings();
        pairs.push(("iss", settings.issuer.as_str()));
        AuthorizeRejection::Redirect { location: redirect_with(redirect_uri, &pairs), error }
    }

    /// Validates an authorization request and parks it. See the module docs for the order.
    pub async fn begin_authorization(&self, params: &Params) -> Result<PendingAuthorization, AuthorizeRejection> {
        let now = self.clock.now();
        let request = AuthorizationRequest::from_params(params).map_err(|e| {
            // Until the client is known, even a duplicated parameter can only be shown.
            AuthorizeRejection::fatal(OAuthErrorCode::InvalidRequest, e.to_string())
        })?;

        // Phase one: client and redirect URI.
        let client_id = request.client_id.as_deref().ok_or_else(|| {
            AuthorizeRejection::fatal(OAuthErrorCode::InvalidRequest, "the client_id parameter is missing")
        })?;
        let client = if self.is_metadata_document_client_id(client_id) {
            self.metadata_document_client(client_id).await.map_err(AuthorizeRejection::Fatal)?
        } else {
            self.client(client_id).await.map_err(|e| AuthorizeRejection::Fatal(e.into()))?.ok_or_else(|| {
                AuthorizeRejection::fatal(OAuthErrorCode::InvalidClient, "no client is registered with this client_id")
            })?
        };
        let redirect_uri = match request.redirect_uri.as_deref() {
            Some(presented) => redirect_uri_matches(&client.redirect_uris, presented)
                .map(|_| presented.to_owned())
                .ok_or_else(|| {
                    AuthorizeRejection::fatal(
                        OAuthErrorCode::InvalidRequest,
                        "the redirect_uri does not exactly match any redirect URI registered for this client",
                    )
                })?,
            None => match client.redirect_uris.as_slice() {
                [only] => only.clone(),
                _ => {
                    return Err(AuthorizeRejection::fatal(
                        OAuthErrorCode::InvalidRequest,
                        "the redirect_uri parameter is required because this client has several registered",
                    ));
                }
            },
        };
        match client.status {
            ClientStatus::Active => {}
            ClientStatus::Suspended => {
                return Err(AuthorizeRejection::fatal(
                    OAuthErrorCode::UnauthorizedClient,
                    "this client has been suspended by an administrator",
                ));
            }
            ClientStatus::Pending => {
                return Err(AuthorizeRejection::fatal(
                    OAuthErrorCode::UnauthorizedClient,
                    "this client is waiting for an administrator's approval",
                ));
            }
        }

        // Phase two: errors go back to the client.
        let state = request.state.as_deref();
        let reject = |error: OAuthError| self.error_redirect(&redirect_uri, state, error);
        if request.has_request_object {
            return Err(reject(OAuthError::new(OAuthErrorCode::InvalidRequest, "request objects are not supported")));
        }
        if let Some(mode) = request.response_mode.as_deref()
            && mode != "query"
        {
            return Err(reject(OAuthError::invalid_request(format!(
                "response_mode {mode:?} is not supported; use query"
            ))));
        }
        match request.response_type.as_deref() {
            Some("code") => {}
            None => return Err(reject(OAuthError::invalid_request("the response_type parameter is missing"))),
            Some(other) => {
                return Err(reject(OAuthError::new(
                    OAuthErrorCode::UnsupportedResponseType,
                    format!("response_type {other:?} is not supported; only \"code\" is"),
                )));
            }
        }
        if !client.grant_types.contains(&portcullis_store::GrantType::AuthorizationCode) {
            return Err(reject(OAuthError::unauthorized_client(
                "this client may not use the authorization code grant",
            )));
        }
        let code_challenge = match (request.code_challenge.as_deref(), request.code_challenge_method.as_deref()) {
            (None, _) => {
                return Err(reject(OAuthError::invalid_request(
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                )));
            }
            (Some(_), None | Some("plain")) => {
                return Err(reject(OAuthError::invalid_request(
                    "PKCE method plain is not allowed: use code_challenge_method=S256",
                )));
            }
            (Some(_), Some(method)) if method != "S256" => {
                return Err(reject(OAuthError::invalid_request(format!(
                    "PKCE method {method:?} is not supported: use S256"
                ))));
            }
            (Some(challenge), Some(_)) if !is_valid_s256_challenge(challenge) => {
                return Err(reject(OAuthError::invalid_request(
                    "code_challenge must be 43 base64url characters (a SHA-256 digest)",
                )));
            }
            (Some(challenge), Some(_)) => challenge.to_owned(),
        };
        let resource =
            self.resolve_resource(&client, request.resource.as_deref(), request.resource_count).map_err(reject)?;
        let scope = self.resolve_scope(&client, &resource, request.scope.as_deref(), false).map_err(reject)?;

        let prompt = request.prompt.clone().unwrap_or_default();
        let prompt_values: Vec<&str> = prompt.split(' ').filter(|p| !p.is_empty()).collect();
        if let Some(unknown) = prompt_values.iter().find(|p| !PROMPT_VALUES.contains(p)) {
            return Err(reject(OAuthError::invalid_request(format!("prompt value {unknown:?} is not supported"))));
        }
        if prompt_values.contains(&"none") && prompt_values.len() > 1 {
            return Err(reject(OAuthError::invalid_request("prompt=none cannot be combined with other prompt values")));
        }
        let max_age = match request.max_age.as_deref() {
            None => None,
            Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                reject(OAuthError::invalid_request("max_age must be a non-negative integer of seconds"))
            })?),
        };

        let handle = random_token(32).map_err(|e| AuthorizeRejection::Fatal(e.into()))?;
        let record = AuthorizationRequestRecord {
            client_id: client.client_id.clone(),
            redirect_uri,
            scope,
            resource,
            state: request.state.clone(),
            nonce: request.nonce.clone(),
            code_challenge,
            prompt: prompt_values.join(" "),
            max_age,
            login_user_id: None,
            created_at: now,
            expires_at: now + self.settings().authorization_request_ttl,
        };
        self.store
            .insert_authorization_request(&digest(&handle), &record)
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?;
        Ok(PendingAuthorization { handle })
    }

    /// RFC 8707: one resource, known to us, allowed for this client. Without a `resource`, a
    /// client limited to exactly one resource gets that one.
    pub(crate) fn resolve_resource(
        &self,
        client: &ClientRecord,
        requested: Option<&str>,
        count: usize,
    ) -> Result<String, OAuthError> {
        if count > 1 {
            return Err(OAuthError::invalid_target("request tokens for one resource at a time"));
        }
        let allowed =
            |uri: &str| client.allowed_resources.is_empty() || client.allowed_resources.iter().any(|r| r == uri);
        match requested {
            Some(uri) => {
                if self.settings().resource(uri).is_none() {
                    return Err(OAuthError::invalid_target(format!(
                        "{uri} is not a resource this authorization server issues tokens for"
                    )));
                }
                if !allowed(uri) {
                    return Err(OAuthError::invalid_target(format!("this client may not obtain tokens for {uri}")));
                }
                Ok(uri.to_owned())
            }
            None => {
                let settings = self.settings();
                let candidates: Vec<&str> =
                    settings.resources.iter().map(|r| r.uri.as_str()).filter(|u| allowed(u)).collect();
                match candidates.as_slice() {
                    [only] => Ok((*only).to_owned()),
                    _ => Err(OAuthError::invalid_target(
                        "the resource parameter is required: name the MCP server the token is for",
                    )),
                }
            }
        }
    }

    /// The scopes this client may have for this resource.
    pub(crate) fn allowed_scopes(&self, client: &ClientRecord, resource: &str, include_builtin: bool) -> ScopeSet {
        let mut offered = self.settings().resource_scopes(resource);
        if include_builtin {
            offered = offered.union(&Settings::builtin_scopes());
        }
        let client_scopes = &client.allowed_scopes;
        if client_scopes.is_empty() { offered } else { offered.intersection(client_scopes) }
    }

    /// Checks requested scopes against what the resource and client allow. A request that
    /// names none gets the resource's default scopes (client credentials: everything allowed).
    pub(crate) fn resolve_scope(
        &self,
        client: &ClientRecord,
        resource: &str,
        requested: Option<&str>,
        machine: bool,
    ) -> Result<ScopeSet, OAuthError> {
        let allowed = self.allowed_scopes(client, resource, !machine);
        let requested = match requested {
            Some(s) => ScopeSet::parse(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
            None => ScopeSet::new(),
        };
        if requested.is_empty() {
            // Machines get everything they are allowed; a user is offered the resource's
            // default scopes on the consent page, where each can be unticked.
            let defaults =
                if machine { allowed } else { self.settings().default_scopes(resource).intersection(&allowed) };
            if defaults.is_empty() {
                return Err(OAuthError::invalid_scope(format!(
                    "no scope was named and {resource} has no default scope this client may have; name the scopes the token needs"
                )));
            }
            return Ok(defaults);
        }
        let refused = requested.difference(&allowed);
        if !refused.is_empty() {
            return Err(OAuthError::invalid_scope(format!(
                "scope {refused} is not available to this client for {resource}"
            )));
        }
        Ok(requested)
    }

    async fn parked(&self, handle: &str) -> Result<(AuthorizationRequestRecord, ClientRecord), AuthorizeRejection> {
        let now = self.clock.now();
        let request = self
            .store
            .find_authorization_request(&digest(handle), now)
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?
            .ok_or_else(|| {
                AuthorizeRejection::fatal(
                    OAuthErrorCode::InvalidRequest,
                    "this sign-in request has expired or was already completed; go back to the application and start again",
                )
            })?;
        let client = self
            .client(&request.client_id)
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?
            .filter(|c| c.status == ClientStatus::Active)
            .ok_or_else(|| {
                AuthorizeRejection::fatal(
                    OAuthErrorCode::UnauthorizedClient,
                    "this client is no longer allowed to sign in",
                )
            })?;
        Ok((request, client))
    }

    /// Notes that `user` just signed in on this request's login page.
    pub async fn record_login(&self, handle: &str, user: &UserRecord) -> Result<(), OAuthError> {
        Ok(self.store.set_authorization_request_login(&digest(handle), &user.id).await?)
    }

    /// The client a parked request is for (the login page names it).
    pub async fn pending_client(&self, handle: &str) -> Result<ClientRecord, AuthorizeRejection> {
        self.parked(handle).await.map(|(_, client)| client)
    }

    /// What a parked request demands of the sign-in itself, for an identity provider to be
    /// asked the same: `prompt=login`, and the oldest sign-in it accepts.
    pub async fn pending_reauthentication(
        &self,
        handle: &str,
    ) -> Result<portcullis_sso::Reauthentication, AuthorizeRejection> {
        let (request, client) = self.parked(handle).await?;
        Ok(portcullis_sso::Reauthentication {
            prompt_login: request.prompt.split(' ').any(|p| p == "login"),
            max_age: self.required_max_age(&request, &client),
        })
    }

    /// How recent a sign-in a request needs: its own `max_age`, and for clients nobody vetted,
    /// the registration policy's, whichever is stricter.
    fn required_max_age(&self, request: &AuthorizationRequestRecord, client: &ClientRecord) -> Option<i64> {
        let policy_max_age = self.is_dynamic(client).then_some(self.settings().registration.session_max_age);
        match (request.max_age, policy_max_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn needs_login(
        &self,
        request: &AuthorizationRequestRecord,
        client: &ClientRecord,
        session: Option<&BrowserSession>,
    ) -> bool {
        let now = self.clock.now();
        let Some(session) = session else { return true };
        let prompt_login = request.prompt.split(' ').any(|p| p == "login");
        // prompt=login: the user must have signed in on this request's own login page.
        if prompt_login && request.login_user_id.as_deref() != Some(session.user.id.as_str()) {
            return true;
        }
        // Clients nobody vetted get users who signed in recently, whatever the session allows.
        self.required_max_age(request, client).is_some_and(|max_age| now - session.auth_time > max_age)
    }

    /// Whether a client registered itself (DCR, CIMD) rather than being set up by an operator.
    pub(crate) fn is_dynamic(&self, client: &ClientRecord) -> bool {
        matches!(client.origin, portcullis_store::RegistrationOrigin::Dcr | portcullis_store::RegistrationOrigin::Cimd)
    }

    /// Decides what a parked request needs next, given who (if anyone) is signed in.
    pub async fn next_step(
        &self,
        handle: &str,
        session: Option<&BrowserSession>,
    ) -> Result<NextStep, AuthorizeRejection> {
        let (request, client) = self.parked(handle).await?;
        let prompt_none = request.prompt.split(' ').any(|p| p == "none");
        let reject = |code: OAuthErrorCode, d: &str| {
            self.error_redirect(&request.redirect_uri, request.state.as_deref(), OAuthError::new(code, d))
        };
        if self.needs_login(&request, &client, session) {
            if prompt_none {
                self.forget(handle).await?;
                return Err(reject(
                    OAuthErrorCode::LoginRequired,
                    "the user is not signed in and prompt=none forbids asking",
                ));
            }
            return Ok(NextStep::Login);
        }
        let Some(session) = session else { return Ok(NextStep::Login) };
        // A federated user may grant only what their groups allow; the rest is never offered.
        let requested = &self.settings().grantable(session, &request.scope);
        // Denied when the request asks for the resource and nothing of it remains; OpenID
        // Connect's own scopes (and offline_access) alone would be a token good for nothing.
        let builtin = Settings::builtin_scopes();
        let asks_resource = request.scope.iter().any(|s| !builtin.contains(s.as_str()));
        let resource_left = requested.iter().any(|s| !builtin.contains(s.as_str()));
        if requested.is_empty() || (asks_resource && !resource_left) {
            self.forget(handle).await?;
            let why = if session.federation.is_some() {
                "the user's groups at their identity provider allow none of the requested scopes"
            } else {
                "the user may grant none of the requested scopes (the admin API's are for administrators)"
            };
            return Err(reject(OAuthErrorCode::AccessDenied, why));
        }
        let remembered = self
            .store
            .find_consent(&session.user.id, &client.client_id, &request.resource)
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?
            .map(|c| c.scope);
        let prompt_consent = request.prompt.split(' ').any(|p| p == "consent");
        let covered = remembered.is_some_and(|r| requested.is_subset(&r));
        let requested = requested.clone();
        if prompt_consent || !covered {
            if prompt_none {
                self.forget(handle).await?;
                return Err(reject(
                    OAuthErrorCode::ConsentRequired,
                    "the user has not consented and prompt=none forbids asking",
                ));
            }
            return Ok(NextStep::Consent);
        }
        let location = self.issue_code(handle, &request, &client, session, &requested).await?;
        Ok(NextStep::Redirect(location))
    }

    /// What to show on the consent page.
    pub async fn consent_prompt(
        &self,
        handle: &str,
        session: &BrowserSession,
    ) -> Result<ConsentPrompt, AuthorizeRejection> {
        let (request, client) = self.parked(handle).await?;
        let remembered = self
            .store
            .find_consent(&session.user.id, &client.client_id, &request.resource)
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?
            .map(|c| c.scope)
            .unwrap_or_default();
        let grantable = self.settings().grantable(session, &request.scope);
        let withheld = request.scope.difference(&grantable).iter().map(|s| s.to_string()).collect();
        let identity_provider = session.federation.as_ref().map(|f| {
            self.settings()
                .identity_provider(&f.idp)
                .map_or_else(|| f.idp.clone(), |p| p.provider.settings().display_name.clone())
        });
        let scopes = grantable
            .iter()
            .map(|s| ScopeLine {
                scope: s.to_string(),
                description: self.settings().describe_scope(&request.resource, s.as_str()),
                previously_granted: remembered.contains(s.as_str()),
            })
            .collect();
        let redirect_host = Url::parse(&request.redirect_uri)
            .ok()
            .map(|u| match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                (None, _) => u.scheme().to_owned(),
            })
            .unwrap_or_default();
        let resource_name = self.settings().resource(&request.resource).map(|r| r.name.clone()).unwrap_or_default();
        Ok(ConsentPrompt {
            client_id: client.client_id.clone(),
            client_name: client.client_name.clone(),
            client_verified: client.verified,
            client_origin: client.origin.to_string(),
            redirect_host,
            redirect_uri: request.redirect_uri.clone(),
            resource: request.resource.clone(),
            resource_name,
            scopes,
            user: session.user.clone(),
            client_id_host: (client.origin == portcullis_store::RegistrationOrigin::Cimd)
                .then(|| Url::parse(&client.client_id).ok().and_then(|u| u.host_str().map(str::to_owned)))
                .flatten(),
            identity_provider,
            withheld,
            localhost_only: self.is_dynamic(&client)
                && !client.redirect_uris.is_empty()
                && client.redirect_uris.iter().all(|r| {
                    Url::parse(r).ok().and_then(|u| u.host().map(|h| crate::is_loopback_host(&h))).unwrap_or(false)
                }),
        })
    }

    /// Applies the user's consent decision and returns where to send the browser.
    pub async fn decide_consent(
        &self,
        handle: &str,
        session: &BrowserSession,
        decision: ConsentDecision,
        source: Option<std::net::IpAddr>,
    ) -> Result<String, AuthorizeRejection> {
        let (request, client) = self.parked(handle).await?;
        if self.needs_login(&request, &client, Some(session)) {
            return Err(AuthorizeRejection::fatal(OAuthErrorCode::LoginRequired, "sign in again to continue"));
        }
        let granted = match decision {
            ConsentDecision::Deny => ScopeSet::new(),
            ConsentDecision::Approve(chosen) => {
                // Only what was asked can be granted, whatever the form says; a box that names
                // no scope grants nothing.
                let chosen =
                    ScopeSet::from_scopes(chosen.iter().filter_map(|s| portcullis_types::Scope::parse(s).ok()));
                self.settings().grantable(session, &chosen.intersection(&request.scope))
            }
        };
        if granted.is_empty() {
            self.forget(handle).await?;
            return Err(self.error_redirect(
                &request.redirect_uri,
                request.state.as_deref(),
                OAuthError::new(OAuthErrorCode::AccessDenied, "the user denied the request"),
            ));
        }
        let actor = portcullis_control::Actor::User { user_id: session.user.id.clone(), source };
        self.control
            .give_consent(&actor, &session.user.id, &client.client_id, &request.resource, &granted)
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?;
        self.issue_code(handle, &request, &client, session, &granted).await
    }

    async fn forget(&self, handle: &str) -> Result<(), AuthorizeRejection> {
        self.store
            .take_authorization_request(&digest(handle))
            .await
            .map_err(|e| AuthorizeRejection::Fatal(e.into()))?;
        Ok(())
    }

    /// Issues a code for a parked request, consuming it, and returns the redirect location.
    async fn issue_code(
        &self,
        handle: &str,
        request: &AuthorizationRequestRecord,
        client: &ClientRecord,
        session: &BrowserSession,
        scope: &ScopeSet,
    ) -> Result<String, AuthorizeRejection> {
        let (user, auth_time) = (&session.user, session.auth_time);
        let fatal = |e: OAuthError| AuthorizeRejection::Fatal(e);
        // Taking the request first makes a double-submitted consent form yield one code.
        if !self.store.take_authorization_request(&digest(handle)).await.map_err(|e| fatal(e.into()))? {
            return Err(AuthorizeRejection::fatal(
                OAuthErrorCode::InvalidRequest,
                "this sign-in request was already completed",
            ));
        }
        let now = self.clock.now();
        let code = random_token(32).map_err(|e| fatal(e.into()))?;
        let record = AuthorizationCodeRecord {
            grant_id: portcullis_crypto::time_ordered_id(now).map_err(|e| fatal(e.into()))?,
            client_id: client.client_id.clone(),
            user_id: user.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            resource: request.resource.clone(),
            scope: scope.clone(),
            code_challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            auth_time,
            created_at: now,
            expires_at: now + self.settings().authorization_code_ttl,
            redeemed_at: None,
            grant_not_after: self.settings().grant_not_after(session),
        };
        self.store.insert_authorization_code(&digest(&code), &record).await.map_err(|e| fatal(e.into()))?;
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = request.state.as_deref() {
            pairs.push(("state", state));
        }
        let settings = self.settings();
        pairs.push(("iss", settings.issuer.as_str()));
        Ok(redirect_with(&request.redirect_uri, &pairs))
    }
}
