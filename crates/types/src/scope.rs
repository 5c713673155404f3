//! Scope tokens (RFC 6749 §3.3) and sets of them.

use std::collections::BTreeSet;
use std::fmt;

/// One scope token: `1*( %x21 / %x23-5B / %x5D-7E )`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope token {0:?} contains a character RFC 6749 §3.3 does not allow")]
    InvalidCharacter(String),
    #[error("empty scope token")]
    Empty,
    #[error("scope token longer than {max} characters", max = Scope::MAX_LEN)]
    TooLong,
}

impl Scope {
    pub const MAX_LEN: usize = 128;

    pub fn parse(token: &str) -> Result<Self, ScopeError> {
        if token.is_empty() {
            return Err(ScopeError::Empty);
        }
        if token.len() > Self::MAX_LEN {
            return Err(ScopeError::TooLong);
        }
        let allowed = |c: char| c == '\x21' || ('\x23'..='\x5b').contains(&c) || ('\x5d'..='\x7e').contains(&c);
        if !token.chars().all(allowed) {
            return Err(ScopeError::InvalidCharacter(token.to_owned()));
        }
        Ok(Self(token.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ordered, duplicate-free set of scopes. Its string form is canonical (sorted, one space
/// between tokens), so two equal sets always serialize the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// At most this many tokens in one request; more is a malformed request, not a big grant.
    pub const MAX_TOKENS: usize = 64;

    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a space-delimited `scope` parameter. Consecutive spaces are tolerated, other
    /// whitespace is not (RFC 6749 uses %x20 only).
    pub fn parse(value: &str) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for token in value.split(' ').filter(|t| !t.is_empty()) {
            set.insert(Scope::parse(token)?);
            if set.len() > Self::MAX_TOKENS {
                return Err(ScopeError::TooLong);
            }
        }
        Ok(Self(set))
    }

    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0.insert(scope);
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expect: Result<&str, ScopeError>) {
        assert_eq!(ScopeSet::parse(input).map(|s| s.to_string()), expect.map(str::to_owned));
    }

    #[test]
    fn parses_canonically() {
        check("b a  a", Ok("a b"));
        check("", Ok(""));
        check("crm.contacts.read", Ok("crm.contacts.read"));
    }

    #[test]
    fn refuses_bad_characters() {
        check("a\"b", Err(ScopeError::InvalidCharacter("a\"b".into())));
        check("a\\b", Err(ScopeError::InvalidCharacter("a\\b".into())));
        check("a\tb", Err(ScopeError::InvalidCharacter("a\tb".into())));
        check("caf\u{e9}", Err(ScopeError::InvalidCharacter("caf\u{e9}".into())));
    }

    #[test]
    fn refuses_too_many_tokens() {
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        check(&many.join(" "), Err(ScopeError::TooLong));
    }
}
