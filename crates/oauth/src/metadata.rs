//! RFC 8414 authorization server metadata, also served as OpenID Connect discovery.

use portcullis_types::wire::AuthorizationServerMetadata;

use crate::Settings;
use crate::settings::BUILTIN_SCOPES;

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
        grant_types_supported: vec!["authorization_code".into(), "refresh_token".into(), "client_credentials".into()],
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
    }
}
