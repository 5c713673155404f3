//! Request parameters as decoded pairs. RFC 6749 §3.1 and §3.2: parameters sent without a
//! value are treated as omitted, and request and response parameters MUST NOT be included more
//! than once.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Params {
    values: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {0:?} was given more than once")]
pub struct ParamError(pub String);

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
            Some([v]) if v.len() > MAX_PARAM_LEN => Err(ParamError(name.to_owned())),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(ParamError(name.to_owned())),
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
