//! Request parameters as decoded pairs. RFC 6749 §3.1 and §3.2: parameters sent without a
//! value are treated as omitted, and request and response parameters MUST NOT be included more
//! than once.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Params {
    values: HashMap<String, Vec<String>>,
}

/// Why a parameter cannot be read; each message names the parameter and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter {0:?} was given more than once")]
    Repeated(String),
    #[error("parameter {name:?} is longer than {MAX_PARAM_LEN} characters ({len})")]
    TooLong { name: String, len: usize },
    /// No identifier, secret or value of OAuth holds one (and PostgreSQL cannot store one).
    #[error("parameter {0:?} holds a NUL character")]
    Nul(String),
}

impl ParamError {
    pub fn parameter(&self) -> &str {
        match self {
            Self::Repeated(name) | Self::TooLong { name, .. } | Self::Nul(name) => name,
        }
    }
}

/// Longest value accepted for any single parameter; longer is a malformed request.
pub const MAX_PARAM_LEN: usize = 4096;

impl Params {
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            values.entry(k).or_default().push(v);
        }
        Self { values }
    }

    /// The single value of `name`, or `None` when absent or empty.
    pub fn single(&self, name: &str) -> Result<Option<&str>, ParamError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) if v.is_empty() => Ok(None),
            Some([v]) if v.len() > MAX_PARAM_LEN => Err(ParamError::TooLong { name: name.to_owned(), len: v.len() }),
            Some([v]) if v.contains('\0') => Err(ParamError::Nul(name.to_owned())),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(ParamError::Repeated(name.to_owned())),
        }
    }

    /// Every non-empty value of a parameter that may repeat (e.g. consent checkboxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.values
            .get(name)
            .map(|v| v.iter().map(String::as_str).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }

    pub fn count(&self, name: &str) -> usize {
        self.values.get(name).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(pairs: &[(&str, &str)], name: &str, expect: Result<Option<&str>, &str>) {
        let params = Params::from_pairs(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let got = params.single(name).map_err(|e| e.to_string());
        assert_eq!(got, expect.map_err(str::to_owned));
    }

    #[test]
    fn single_values_and_what_is_wrong_with_them() {
        let long = "x".repeat(MAX_PARAM_LEN + 1);
        check(&[("a", "1")], "a", Ok(Some("1")));
        check(&[("a", "")], "a", Ok(None));
        check(&[], "a", Ok(None));
        check(&[("a", "1"), ("a", "2")], "a", Err("parameter \"a\" was given more than once"));
        check(&[("token", &long)], "token", Err("parameter \"token\" is longer than 4096 characters (4097)"));
        check(&[("client_id", "a\0b")], "client_id", Err("parameter \"client_id\" holds a NUL character"));
    }
}
