//! What an issuer publishes about itself, fetched under the [`Fetcher`]'s rules: its metadata
//! document (RFC 8414, or OpenID Connect Discovery 1.0) and, through the same fetcher, its JWK
//! Set. The gateway's trusted issuers and the identity providers users sign in with both find
//! their issuers here, so there is one way out to an issuer, not two.

use url::Url;

use crate::{FetchError, Fetcher};

/// Why an issuer's metadata could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("the issuer {0:?} is not an absolute URL without query or fragment")]
    BadIssuer(String),
    #[error("{url}: {error}")]
    Fetch { url: String, error: FetchError },
    #[error("{0} is not a JSON object")]
    NotJson(String),
    #[error("{url} names issuer {named:?}, not {expected:?}")]
    WrongIssuer { url: String, named: String, expected: String },
}

/// Where an issuer's metadata may be, in the order they are tried: RFC 8414 §3.1 (the
/// well-known segment inserted before the issuer's path), the same for OpenID Connect, and
/// OpenID Connect Discovery 1.0 §4 (appended to the issuer).
pub fn metadata_urls(issuer: &str) -> Result<Vec<String>, IssuerError> {
    let parsed = Url::parse(issuer).map_err(|_| IssuerError::BadIssuer(issuer.to_owned()))?;
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.cannot_be_a_base() {
        return Err(IssuerError::BadIssuer(issuer.to_owned()));
    }
    let origin = parsed.origin().ascii_serialization();
    let path = parsed.path().trim_end_matches('/');
    let mut urls = vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}/.well-known/openid-configuration{path}"),
        format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/')),
    ];
    urls.dedup();
    Ok(urls)
}

/// The first metadata document, among [`metadata_urls`], whose `issuer` `accepts` (for most
/// issuers: equality with the configured issuer). A document naming another issuer is skipped
/// (RFC 8414 §3.3), and the last error is returned when none is found.
pub async fn fetch_metadata(
    fetcher: &Fetcher,
    issuer: &str,
    accepts: impl Fn(&str) -> bool,
) -> Result<serde_json::Value, IssuerError> {
    let mut last = IssuerError::BadIssuer(issuer.to_owned());
    for url in metadata_urls(issuer)? {
        match fetch_json(fetcher, &url).await {
            Ok(document) => {
                let named = document.get("issuer").and_then(serde_json::Value::as_str).unwrap_or_default();
                if accepts(named) {
                    return Ok(document);
                }
                last = IssuerError::WrongIssuer { url, named: named.to_owned(), expected: issuer.to_owned() };
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// GETs a JSON object (a metadata document, a JWK Set).
pub async fn fetch_json(fetcher: &Fetcher, url: &str) -> Result<serde_json::Value, IssuerError> {
    let parsed = Url::parse(url)
        .map_err(|_| IssuerError::Fetch { url: url.to_owned(), error: FetchError::BadUrl(url.to_owned()) })?;
    let fetched = fetcher.get(&parsed).await.map_err(|error| IssuerError::Fetch { url: url.to_owned(), error })?;
    match serde_json::from_slice(&fetched.body) {
        Ok(document @ serde_json::Value::Object(_)) => Ok(document),
        _ => Err(IssuerError::NotJson(url.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_the_specifications_put_it() {
        let check = |issuer: &str, expected: &[&str]| {
            assert_eq!(
                metadata_urls(issuer).ok().as_deref(),
                Some(&expected.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()[..]),
                "{issuer}"
            );
        };
        check(
            "https://idp.test",
            &[
                "https://idp.test/.well-known/oauth-authorization-server",
                "https://idp.test/.well-known/openid-configuration",
            ],
        );
        check(
            "https://login.test/tenant/v2.0",
            &[
                "https://login.test/.well-known/oauth-authorization-server/tenant/v2.0",
                "https://login.test/.well-known/openid-configuration/tenant/v2.0",
                "https://login.test/tenant/v2.0/.well-known/openid-configuration",
            ],
        );
        assert!(metadata_urls("https://idp.test/?x=1").is_err());
        assert!(metadata_urls("not a url").is_err());
    }

    #[tokio::test]
    async fn an_issuer_on_a_private_address_is_refused_unless_allowed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").ok();
        let port = listener.as_ref().and_then(|l| l.local_addr().ok()).map_or(9, |a| a.port());
        let issuer = format!("http://127.0.0.1:{port}");
        let fetcher = Fetcher::new(crate::FetchPolicy { allow_http_loopback: true, ..Default::default() });
        let refused = fetch_metadata(&fetcher, &issuer, |_| true).await;
        assert!(
            matches!(&refused, Err(IssuerError::Fetch { error: FetchError::ForbiddenAddress { .. }, .. })),
            "{refused:?}"
        );
    }
}
