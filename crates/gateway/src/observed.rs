//! What the gateway has seen of each route's upstream: the names its list answers offered
//! (before filtering, so tools that no policy maps show up), and how its last exchanges went.
//!
//! Kept in memory, per node: it describes what this node saw, and starts empty after a
//! restart until a client lists again. Bounded: an upstream cannot make it grow without end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::filter::ListKind;

/// Names kept per list kind of a route; more are not recorded (and say so).
pub const MAX_NAMES: usize = 10_000;
/// Error descriptions are cut to this many characters.
const MAX_ERROR_CHARS: usize = 300;

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What one route's upstream offered in list answers: each name with when it was last listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offered {
    pub tools: BTreeMap<String, i64>,
    pub prompts: BTreeMap<String, i64>,
    /// Resource URIs and URI templates.
    pub resources: BTreeMap<String, i64>,
    /// Whether a list held more names than [`MAX_NAMES`] and some were not recorded.
    pub truncated: bool,
}

/// How the route's upstream answered lately.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// When the upstream last answered a forwarded message (any status but an error of its own).
    pub last_ok_at: Option<i64>,
    /// When it last could not be reached, timed out or broke off.
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
    /// Whether the latest exchange failed (kept apart from the times, which have whole seconds).
    latest_failed: bool,
}

impl Health {
    /// Whether the latest exchange failed.
    pub fn failing(&self) -> bool {
        self.latest_failed
    }
}

/// One route's observations, shared by every request on it (and kept over reloads).
#[derive(Debug, Default)]
pub struct Observed {
    offered: Mutex<Offered>,
    /// Every forwarded message notes its answer: atomics, written only when they change, so
    /// the data path takes no lock and does not bounce a cache line between cores.
    last_ok_at: AtomicI64,
    latest_failed: AtomicBool,
    /// When and why the upstream last failed (written only on failures).
    failure: Mutex<Option<(i64, String)>>,
}

impl Observed {
    /// Records the names of a list answer's items (called before the answer is filtered).
    pub(crate) fn listed<'n>(&self, kind: ListKind, listed: impl IntoIterator<Item = &'n str>) {
        let at = now();
        let Ok(mut offered) = self.offered.lock() else { return };
        let mut truncated = false;
        let names = match kind {
            ListKind::Tools => &mut offered.tools,
            ListKind::Prompts => &mut offered.prompts,
            ListKind::Resources | ListKind::ResourceTemplates => &mut offered.resources,
        };
        for name in listed {
            if let Some(seen) = names.get_mut(name) {
                *seen = at;
            } else if names.len() < MAX_NAMES {
                names.insert(name.to_owned(), at);
            } else {
                truncated = true;
            }
        }
        offered.truncated |= truncated;
    }

    pub(crate) fn answered(&self) {
        let at = now();
        if self.last_ok_at.load(Ordering::Relaxed) != at {
            self.last_ok_at.store(at, Ordering::Relaxed);
        }
        if self.latest_failed.load(Ordering::Relaxed) {
            self.latest_failed.store(false, Ordering::Relaxed);
        }
    }

    pub(crate) fn failed(&self, why: &str) {
        if let Ok(mut failure) = self.failure.lock() {
            *failure = Some((now(), why.chars().take(MAX_ERROR_CHARS).collect()));
        }
        self.latest_failed.store(true, Ordering::Relaxed);
    }

    /// A copy of what was seen.
    pub fn snapshot(&self) -> (Offered, Health) {
        let offered = self.offered.lock().map(|o| o.clone()).unwrap_or_default();
        let (last_error_at, last_error) =
            self.failure.lock().ok().and_then(|f| f.clone()).map_or((None, None), |(at, why)| (Some(at), Some(why)));
        let last_ok_at = Some(self.last_ok_at.load(Ordering::Relaxed)).filter(|at| *at > 0);
        let health =
            Health { last_ok_at, last_error_at, last_error, latest_failed: self.latest_failed.load(Ordering::Relaxed) };
        (offered, health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_with_when_they_were_listed_and_bounded() {
        let observed = Observed::default();
        observed.listed(ListKind::Tools, ["a", "b"]);
        observed.listed(ListKind::ResourceTemplates, ["file:///{path}"]);
        let (offered, _) = observed.snapshot();
        assert_eq!(offered.tools.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(offered.resources.keys().collect::<Vec<_>>(), ["file:///{path}"]);
        assert!(!offered.truncated);

        let many: Vec<String> = (0..MAX_NAMES + 5).map(|i| format!("t{i}")).collect();
        observed.listed(ListKind::Prompts, many.iter().map(String::as_str));
        let (offered, _) = observed.snapshot();
        assert_eq!(offered.prompts.len(), MAX_NAMES);
        assert!(offered.truncated);
    }

    #[test]
    fn health_follows_the_latest_exchange() {
        let observed = Observed::default();
        assert!(!observed.snapshot().1.failing());
        observed.failed("connection refused");
        assert!(observed.snapshot().1.failing());
        observed.answered();
        let (_, health) = observed.snapshot();
        assert!(!health.failing());
        assert_eq!(health.last_error.as_deref(), Some("connection refused"));
    }
}
