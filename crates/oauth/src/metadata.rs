//! RFC 8414 authorization server metadata, also served as OpenID Connect discovery.

use portcullis_types::wire::AuthorizationServerMetadata;

use crate::Settings;
use crate::settings::BUILTIN_SCOPES;

/// draft-ietf-oauth-identity-assertion-authz-grant §8: the grant profile SEP-990 uses.
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

/// Builds the metadata document once, when the server is set up: it depends on the settings
/// only, which do not change while the server runs.
pub(crate) fn build(s: &Settings) -> AuthorizationServerMetadata {
    let mut scopes: Vec<String> = BUILTIN_SCOPES.iter().map(|(n, _)| (*n).to_owned()).collect();
    for resource in &s.resources {
        for scope in &resource.scopes {
            if !scopes.contains(&scope.name) {
                scopes.push(scope.name.clone());
            }
        }
    }
    let auth_methods = vec![
        "client_secret_basic".to_owned(),
        "client_secret_post".to_owned(),
        "private_key_jwt".to_owned(),
        "none".to_owned(),
    ];
    let secret_methods = vec!["client_secret_basic".to_owned(), "client_secret_post".to_owned()];
    let mut grant_types: Vec<String> = [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        portcullis_store::GrantType::TokenExchange.as_str(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let accepts_assertions = s.identity_providers.iter().any(|p| p.provider.settings().accept_id_jag);
    if accepts_assertions {
        grant_types.push(portcullis_store::GrantType::JwtBearer.as_str().to_owned());
    }
    AuthorizationServerMetadata {
        issuer: s.issuer.clone(),
        authorization_endpoint: s.endpoint("/authorize"),
        token_endpoint: s.endpoint("/token"),
        jwks_uri: s.endpoint("/jwks.json"),
        introspection_endpoint: s.endpoint("/introspect"),
        revocation_endpoint: s.endpoint("/revoke"),
        registration_endpoint: s.registration.enabled.then(|| s.endpoint("/register")),
        scopes_supported: scopes,
        response_types_supported: vec!["code".into()],
        response_modes_supported: vec!["query".into()],
        grant_types_supported: grant_types,
        token_endpoint_auth_methods_supported: auth_methods.clone(),
        token_endpoint_auth_signing_alg_values_supported: vec!["ES256".into()],
        introspection_endpoint_auth_methods_supported: secret_methods,
        revocation_endpoint_auth_methods_supported: auth_methods,
        code_challenge_methods_supported: vec!["S256".into()],
        authorization_response_iss_parameter_supported: true,
        subject_types_supported: vec!["public".into()],
        id_token_signing_alg_values_supported: vec!["ES256".into()],
        claims_supported: [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "azp",
            "preferred_username",
            "name",
            "email",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect(),
        prompt_values_supported: vec!["none".into(), "login".into(), "consent".into()],
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
        client_id_metadata_document_supported: s.cimd.enabled.then_some(true),
        authorization_grant_profiles_supported: if accepts_assertions {
            vec![ID_JAG_PROFILE.to_owned()]
        } else {
            Vec::new()
        },
    }
}
