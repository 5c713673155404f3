//! Outbound HTTP that a stranger can point at (Client ID Metadata Documents, identity
//! providers' discovery, keys and token endpoints), made safe against server-side request
//! forgery.
//!
//! A fetch (1) accepts only https, or http to loopback when the operator turned on the
//! development flag, (2) resolves the host itself and refuses unless *every* address is
//! allowed (loopback, private, link-local, CGNAT, multicast, reserved and documentation
//! ranges, v4 and v6, including IPv4-mapped, -compatible, 6to4, Teredo and NAT64 forms, are
//! refused unless explicitly allowed), (3) connects only to the address it checked, pinned in
//! the client, so DNS cannot change its answer in between (no rebinding window), (4) follows no
//! redirects, and (5) bounds connect time, total time and body size.

mod address;
pub mod issuer;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use address::{AddressClass, classify};
use ipnet::IpNet;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Development only: allow `http://` when the host resolves to loopback.
    pub allow_http_loopback: bool,
    /// Ranges allowed although their class is refused by default (e.g. an internal network the
    /// operator trusts, or loopback for development).
    pub allowed_ranges: Vec<IpNet>,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_bytes: usize,
    /// Extra trust anchors (PEM), on top of the system's, for hosts with a private CA.
    pub extra_roots_pem: Vec<Vec<u8>>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            allow_http_loopback: false,
            allowed_ranges: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            total_timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            extra_roots_pem: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{0} is not an absolute URL")]
    BadUrl(String),
    #[error("only https URLs are fetched (http only to loopback, with the development flag)")]
    Scheme,
    #[error("URLs with user information are not fetched")]
    UserInfo,
    #[error("the host could not be resolved")]
    Resolve,
    #[error("the host resolves to {address} ({class}), which is not allowed")]
    ForbiddenAddress { address: IpAddr, class: AddressClass },
    #[error("could not connect or the request failed")]
    Connect,
    #[error("an extra trust anchor is not a PEM certificate")]
    BadRoot,
    #[error("the request timed out")]
    Timeout,
    #[error("the server answered {0}, not 200 (redirects are not followed)")]
    Status(u16),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
}

/// A fetched document.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// What `Cache-Control` allows: `None` for no-store/no-cache, else max-age seconds.
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Fetcher {
    policy: FetchPolicy,
}

impl Fetcher {
    pub fn new(policy: FetchPolicy) -> Self {
        Self { policy }
    }

    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Whether connecting to `address` is allowed, and if not, why.
    pub fn check_address(&self, address: IpAddr) -> Result<(), FetchError> {
        let class = classify(address);
        if class == AddressClass::Public || self.policy.allowed_ranges.iter().any(|r| r.contains(&address)) {
            return Ok(());
        }
        Err(FetchError::ForbiddenAddress { address, class })
    }

    /// GETs a JSON document, which must answer 200.
    pub async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        let request = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|_| FetchError::BadUrl(url.to_string()))?;
        let response = self.send(request).await?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let content_type =
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let max_age = cache_max_age(response.headers());
        Ok(Fetched { body: response.into_body(), content_type, max_age })
    }

    /// Sends any request under the same rules (the address checked and pinned, no redirects,
    /// bounded time and size) and returns the answer whatever its status: a token endpoint's
    /// 400 carries the OAuth error its caller must read.
    pub async fn send(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, FetchError> {
        let url = Url::parse(&request.uri().to_string()).map_err(|_| FetchError::BadUrl(request.uri().to_string()))?;
        let client = self.client_for(&url).await?;
        let (parts, body) = request.into_parts();
        let work = async {
            let mut response = client
                .request(parts.method, url.clone())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| if e.is_timeout() { FetchError::Timeout } else { FetchError::Connect })?;
            if response.content_length().is_some_and(|n| n > self.policy.max_bytes as u64) {
                return Err(FetchError::TooLarge(self.policy.max_bytes));
            }
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| if e.is_timeout() { FetchError::Timeout } else { FetchError::Connect })?
            {
                if body.len() + chunk.len() > self.policy.max_bytes {
                    return Err(FetchError::TooLarge(self.policy.max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            let mut answer = http::Response::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok(answer)
        };
        tokio::time::timeout(self.policy.total_timeout, work).await.map_err(|_| FetchError::Timeout)?
    }

    /// A client that connects only to the checked address of `url`'s host.
    async fn client_for(&self, url: &Url) -> Result<reqwest::Client, FetchError> {
        let host = url.host_str().ok_or_else(|| FetchError::BadUrl(url.to_string()))?.to_owned();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::UserInfo);
        }
        let port = url.port_or_known_default().ok_or(FetchError::Scheme)?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addresses: Vec<SocketAddr> = match tokio::time::timeout(
            self.policy.connect_timeout,
            tokio::net::lookup_host((bare_host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(_)) => return Err(FetchError::Resolve),
            Err(_) => return Err(FetchError::Timeout),
        };
        if addresses.is_empty() {
            return Err(FetchError::Resolve);
        }
        for a in &addresses {
            self.check_address(a.ip())?;
        }
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http_loopback && addresses.iter().all(|a| a.ip().is_loopback()) => {}
            _ => return Err(FetchError::Scheme),
        }
        let pinned = *addresses.first().ok_or(FetchError::Resolve)?;
        let mut roots = Vec::with_capacity(self.policy.extra_roots_pem.len());
        for pem in &self.policy.extra_roots_pem {
            roots.push(reqwest::Certificate::from_pem(pem).map_err(|_| FetchError::BadRoot)?);
        }
        reqwest::Client::builder()
            .tls_certs_merge(roots)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.policy.connect_timeout)
            .timeout(self.policy.total_timeout)
            .resolve(&bare_host, pinned)
            .user_agent(concat!("Portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| FetchError::Connect)
    }
}

/// `Cache-Control` as a cache of client metadata reads it: `no-store`/`no-cache` mean do not
/// reuse; otherwise `max-age`, or nothing said.
fn cache_max_age(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?.to_ascii_lowercase();
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        if directive == "no-store" || directive == "no-cache" {
            return Some(0);
        }
        if let Some(v) = directive.strip_prefix("max-age=") {
            max_age = v.trim_matches('"').parse().ok();
        }
    }
    max_age
}
