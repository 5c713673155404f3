//! Sign-in rate limits, per account name and per source address. They apply to every name,
//! existing or not, so that being limited says nothing about which accounts exist.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub per_account_per_minute: u32,
    pub per_address_per_minute: u32,
    /// Dynamic client registrations per source address.
    pub registrations_per_address_per_minute: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self { per_account_per_minute: 10, per_address_per_minute: 30, registrations_per_address_per_minute: 10 }
    }
}

pub struct LoginLimiter {
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl LoginLimiter {
    pub(crate) fn new(limits: LoginLimits) -> Self {
        Self {
            accounts: DefaultKeyedRateLimiter::keyed(quota(limits.per_account_per_minute)),
            addresses: DefaultKeyedRateLimiter::keyed(quota(limits.per_address_per_minute)),
        }
    }

    /// Takes one attempt from both budgets; `false` when either is exhausted.
    pub(crate) fn allow(&self, username: &str, address: IpAddr) -> bool {
        let address_ok = self.addresses.check_key(&address).is_ok();
        let account_ok = self.accounts.check_key(&username.to_lowercase()).is_ok();
        if self.accounts.len() > 100_000 {
            self.accounts.retain_recent();
            self.addresses.retain_recent();
        }
        address_ok && account_ok
    }
}

/// Registrations allowed per source address per minute.
pub struct RegistrationLimiter {
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

impl RegistrationLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self { addresses: DefaultKeyedRateLimiter::keyed(quota(per_minute)) }
    }

    pub(crate) fn allow(&self, address: IpAddr) -> bool {
        let ok = self.addresses.check_key(&address).is_ok();
        if self.addresses.len() > 100_000 {
            self.addresses.retain_recent();
        }
        ok
    }
}
