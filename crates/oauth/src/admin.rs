//! Who may hold a token for the admin API (`<issuer>/admin/api`): an administrator who
//! consented (the consent page offers its scopes to administrators only:
//! `Settings::grantable`), or a client an operator registered, by client credentials. Never a
//! self-registered client, an identity assertion or a token exchange: the control plane is
//! reached only by someone an administrator or operator vouched for, interactively or by hand.

use portcullis_store::{ClientRecord, RegistrationOrigin};
use portcullis_types::ScopeSet;
use portcullis_types::admin::{ADMIN_API_PATH, ADMIN_READ_SCOPE, ADMIN_WRITE_SCOPE};

use crate::{AuthorizationServer, OAuthError, Settings};

/// How a token for the admin API would be obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminAccess {
    ClientCredentials,
    IdentityAssertion,
    TokenExchange,
}

impl Settings {
    /// The admin API's resource URI.
    pub fn admin_resource(&self) -> String {
        format!("{}{ADMIN_API_PATH}", self.issuer.trim_end_matches('/'))
    }

    /// `scopes` without the admin API's (for someone who is not an administrator).
    pub fn without_admin_scopes(scopes: &ScopeSet) -> ScopeSet {
        ScopeSet::from_scopes(
            scopes.iter().filter(|s| !matches!(s.as_str(), ADMIN_READ_SCOPE | ADMIN_WRITE_SCOPE)).cloned(),
        )
    }
}

impl AuthorizationServer {
    /// Refuses a token for the admin API that `client` may not hold this way.
    pub(crate) fn check_admin_resource(
        &self,
        client: &ClientRecord,
        resource: &str,
        access: AdminAccess,
    ) -> Result<(), OAuthError> {
        if resource != self.settings().admin_resource() {
            return Ok(());
        }
        match access {
            AdminAccess::ClientCredentials
                if matches!(client.origin, RegistrationOrigin::Admin | RegistrationOrigin::Config) =>
            {
                Ok(())
            }
            AdminAccess::ClientCredentials => Err(OAuthError::unauthorized_client(
                "only a client an operator registered may use the admin API with client credentials",
            )),
            AdminAccess::IdentityAssertion | AdminAccess::TokenExchange => Err(OAuthError::invalid_target(
                "the admin API is reached only with an administrator's consent or an operator's client",
            )),
        }
    }
}
