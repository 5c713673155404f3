//! Wire vocabulary of Portcullis.
//!
//! Everything here is plain data with no I/O: scopes and scope sets, the OAuth error codes of
//! RFC 6749 and its extensions, and the JSON documents Portcullis sends (metadata, token and
//! introspection responses). Serde lives at this boundary so internal types stay free of it.

pub mod admin;
pub mod error_code;
pub mod scope;
pub mod wire;

pub use error_code::OAuthErrorCode;
pub use scope::{Scope, ScopeError, ScopeSet};

/// Whether `email`'s domain (after its last `@`) is one of `domains`, compared without regard to
/// ASCII case: the one rule for which identity provider is authoritative for an address (sign-in
/// routing and account linking both ask it).
pub fn email_in_domains(email: &str, domains: &[String]) -> bool {
    email.rsplit_once('@').is_some_and(|(_, domain)| domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
}

/// Seconds since the Unix epoch. All persisted and compared times use this unit.
pub type UnixTime = i64;

/// The source of "now". Injected everywhere time matters so that tests can move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> UnixTime;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}
