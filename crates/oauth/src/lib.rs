//! The OAuth 2.1 authorization server as a library.
//!
//! [`AuthorizationServer`] holds the store, the key ring, the clock and the settings, and
//! exposes one method per protocol step: validating and parking an authorization request,
//! deciding what the browser must do next (sign in, consent, or go back with a code), the token
//! grants, introspection and revocation. It knows nothing about HTTP: callers hand it parsed
//! parameters and get typed outcomes or [`OAuthError`]s, and the web layer picks status codes.
//! Time comes from the injected [`Clock`], randomness from `portcullis-crypto`.

mod admin;
mod authorize;
mod cimd;
mod client_auth;
mod clients;
mod error;
mod exchange;
mod federation;
mod introspect;
mod keyring;
mod login;
mod metadata;
mod params;
mod redirect_uri;
mod registration;
mod settings;
mod token;

use std::sync::Arc;

use portcullis_control::Control;
use portcullis_crypto::PasswordHasher;
use portcullis_store::Store;
use portcullis_types::Clock;

pub use authorize::{
    AuthorizationRequest, AuthorizeRejection, ConsentDecision, ConsentPrompt, NextStep, PendingAuthorization, ScopeLine,
};
pub use cimd::CimdPolicy;
pub use client_auth::ClientCredentials;
pub use error::{OAuthError, ServerError};
pub use exchange::{ACCESS_TOKEN_TYPE, ExchangeRequest, MAX_ACTORS};
pub use federation::{FederatedProvider, FederatedSession, FederatedSignInError};
pub use introspect::{ActiveAccessToken, RevocationRequest};
pub use keyring::{IdentityProviderAssertions, KeyRing, KeyRingError};
pub use login::{LoginError, NewSession};
pub use params::{ParamError, Params};
pub use redirect_uri::{RedirectUriError, is_loopback_host, redirect_uri_matches, validate_redirect_uri};
pub use registration::{
    ConfidentialWithoutToken, InitialAccessTokenPolicy, RegistrationContext, RegistrationPolicy, StatementIssuer,
};
pub use settings::{BUILTIN_SCOPES, ResourceSettings, ScopeSettings, Settings};
pub use token::{TokenRequest, TokenResponseOutcome};

/// The authorization server. Cheap to clone.
#[derive(Clone)]
pub struct AuthorizationServer {
    /// Every change to shared state goes through here.
    pub(crate) control: Control,
    /// For reads and for the raced token transitions (codes, refresh rotation), which are the
    /// protocol's own and audit themselves when they revoke.
    pub(crate) store: Store,
    pub(crate) keys: KeyRing,
    pub(crate) clock: Arc<dyn Clock>,
    /// Replaced whole when the configuration is reloaded; each use reads one snapshot.
    settings: Arc<arc_swap::ArcSwap<Settings>>,
    pub(crate) passwords: PasswordHasher,
    pub(crate) fetcher: Option<portcullis_outbound::Fetcher>,
    pub(crate) cimd_cache: cimd::CimdCache,
    pub(crate) client_cache: Arc<clients::ClientCache>,
    /// While it is current, client records are served from `client_cache`.
    pub(crate) feed: Option<portcullis_control::ChangeFeed>,
    metadata: Arc<arc_swap::ArcSwap<portcullis_types::wire::AuthorizationServerMetadata>>,
}

impl std::fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationServer").field("issuer", &self.settings().issuer).finish_non_exhaustive()
    }
}

impl AuthorizationServer {
    pub fn new(
        control: Control,
        keys: KeyRing,
        clock: Arc<dyn Clock>,
        settings: Settings,
        passwords: PasswordHasher,
    ) -> Self {
        let metadata = Arc::new(arc_swap::ArcSwap::from_pointee(metadata::build(&settings)));
        let client_cache: Arc<clients::ClientCache> = Arc::default();
        let cimd_cache = cimd::CimdCache::default();
        // This node's own changes reach its caches before the command that made them returns.
        let (cache, documents) = (Arc::downgrade(&client_cache), cimd_cache.clone());
        control.observe(Arc::new(move |kind, client_id| {
            if let (Some(cache), Some(client_id)) = (cache.upgrade(), client_id) {
                clients::forget_changed(&cache, &documents, kind, client_id);
            }
        }));
        Self {
            store: control.store().clone(),
            control,
            keys,
            clock,
            settings: Arc::new(arc_swap::ArcSwap::from_pointee(settings)),
            passwords,
            fetcher: None,
            cimd_cache,
            client_cache,
            feed: None,
            metadata,
        }
    }

    /// Follows `feed`: client records are cached while it is current (the node applies
    /// `client_changed` for every change it reports).
    pub fn with_change_feed(mut self, feed: portcullis_control::ChangeFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Enables outbound fetches (client metadata documents) through `fetcher`.
    pub fn with_fetcher(mut self, fetcher: portcullis_outbound::Fetcher) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// The current settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Takes new settings (a reloaded configuration) for every request from now on. The
    /// issuer cannot change: it is in every token and every client's configuration.
    pub fn replace_settings(&self, settings: Settings) -> Result<(), OAuthError> {
        if settings.issuer != self.settings().issuer {
            return Err(OAuthError::invalid_request("the issuer cannot change without a restart"));
        }
        self.metadata.store(Arc::new(metadata::build(&settings)));
        self.settings.store(Arc::new(settings));
        Ok(())
    }

    /// RFC 8414 metadata (also served as OpenID Connect discovery).
    pub fn metadata(&self) -> Arc<portcullis_types::wire::AuthorizationServerMetadata> {
        self.metadata.load_full()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn passwords(&self) -> &PasswordHasher {
        &self.passwords
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }
}
