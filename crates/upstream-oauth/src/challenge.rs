//! What an upstream says in `WWW-Authenticate` when it refuses a request: the Bearer
//! challenge's `resource_metadata` (RFC 9728 §5.1), `scope` and `error` (RFC 6750 §3).
//!
//! The grammar is RFC 9110 §11.6.1: `auth-scheme [ 1*SP ( token68 / #auth-param ) ]`, several
//! challenges separated by commas, an auth-param's value a token or a quoted string with
//! backslash escapes. Only the Bearer challenge is read; anything we cannot parse is no
//! challenge at all (the caller then falls back to the well-known locations).

/// The Bearer challenge's parameters that an MCP client acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

impl Challenge {
    /// Reads every `WWW-Authenticate` value of a response; the first Bearer challenge wins.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| parse(v).into_iter().find(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map(|(_, params)| {
                let get =
                    |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
                Self { resource_metadata: get("resource_metadata"), scope: get("scope"), error: get("error") }
            })
    }

    /// The upstream asked for more scope (RFC 6750 §3.1): a step-up, not a missing account.
    pub fn is_insufficient_scope(&self) -> bool {
        self.error.as_deref() == Some("insufficient_scope")
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Every challenge in one header value, as (scheme, params). A malformed value yields the
/// challenges before the fault.
fn parse(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut challenges: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && (chars[*i] == ' ' || chars[*i] == '\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && is_tchar(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    loop {
        skip_ws(&mut i);
        while i < chars.len() && chars[i] == ',' {
            i += 1;
            skip_ws(&mut i);
        }
        if i >= chars.len() {
            return challenges;
        }
        // Either a new challenge's scheme, or (after a comma) the next auth-param of this one.
        let start = i;
        let name = token(&mut i);
        if name.is_empty() {
            return challenges;
        }
        let after_name = i;
        skip_ws(&mut i);
        let is_param = i < chars.len() && chars[i] == '=' && !challenges.is_empty() && {
            // `name=` is a parameter; `name==` or `name=,` at the end is a token68 of a scheme.
            let next = chars.get(i + 1).copied();
            next != Some('=')
        };
        if is_param && start > 0 {
            i += 1;
            skip_ws(&mut i);
            let Some(v) = param_value(&chars, &mut i) else { return challenges };
            if let Some(last) = challenges.last_mut() {
                last.1.push((name, v));
            }
            continue;
        }
        i = after_name;
        challenges.push((name, Vec::new()));
        // The first parameter follows the scheme after whitespace.
        skip_ws(&mut i);
        let param_start = i;
        let pname = token(&mut i);
        skip_ws(&mut i);
        if pname.is_empty() || i >= chars.len() || chars[i] != '=' || chars.get(i + 1) == Some(&'=') {
            // No parameters, or a token68: skip to the next comma.
            i = param_start;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            continue;
        }
        i += 1;
        skip_ws(&mut i);
        let Some(v) = param_value(&chars, &mut i) else { return challenges };
        if let Some(last) = challenges.last_mut() {
            last.1.push((pname, v));
        }
    }
}

/// A token or a quoted string (backslash escapes any character).
fn param_value(chars: &[char], i: &mut usize) -> Option<String> {
    if chars.get(*i) == Some(&'"') {
        *i += 1;
        let mut out = String::new();
        while *i < chars.len() {
            match chars[*i] {
                '"' => {
                    *i += 1;
                    return Some(out);
                }
                '\\' => {
                    *i += 1;
                    out.push(*chars.get(*i)?);
                    *i += 1;
                }
                c => {
                    out.push(c);
                    *i += 1;
                }
            }
        }
        None
    } else {
        let start = *i;
        while *i < chars.len() && is_tchar(chars[*i]) {
            *i += 1;
        }
        (*i > start).then(|| chars[start..*i].iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[&str], expected: Option<Challenge>) {
        let mut headers = http::HeaderMap::new();
        for v in values {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                headers.append(http::header::WWW_AUTHENTICATE, v);
            }
        }
        assert_eq!(Challenge::from_headers(&headers), expected, "{values:?}");
    }

    fn challenge(resource_metadata: Option<&str>, scope: Option<&str>, error: Option<&str>) -> Option<Challenge> {
        Some(Challenge {
            resource_metadata: resource_metadata.map(str::to_owned),
            scope: scope.map(str::to_owned),
            error: error.map(str::to_owned),
        })
    }

    #[test]
    fn bearer_challenges_are_read_as_rfc_9110_writes_them() {
        let prm = "https://mcp.example/.well-known/oauth-protected-resource/mcp";
        check(
            &[r#"Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp""#],
            challenge(Some(prm), None, None),
        );
        check(
            &[
                r#"Bearer error="insufficient_scope", scope="files:read files:write", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp""#,
            ],
            challenge(Some(prm), Some("files:read files:write"), Some("insufficient_scope")),
        );
        check(&["Bearer"], challenge(None, None, None));
        check(&[r#"bearer realm="x",error=invalid_token"#], challenge(None, None, Some("invalid_token")));
        check(&[r#"Bearer scope="a \"quoted\" b""#], challenge(None, Some(r#"a "quoted" b"#), None));
        // Another scheme first, in the same value or another header line.
        check(&[r#"Basic realm="x", Bearer scope="a""#], challenge(None, Some("a"), None));
        check(&[r#"Basic realm="x""#, r#"Bearer scope="b""#], challenge(None, Some("b"), None));
        check(&["Negotiate abc123==, Bearer scope=c"], challenge(None, Some("c"), None));
        check(&[r#"Basic realm="x""#], None);
        check(&[], None);
        // Malformed: what could not be read is not guessed.
        check(&[r#"Bearer scope="unterminated"#], challenge(None, None, None));
    }

    #[test]
    fn insufficient_scope_is_a_step_up() {
        let c = Challenge { error: Some("insufficient_scope".into()), ..Default::default() };
        assert!(c.is_insufficient_scope());
        assert!(!Challenge::default().is_insufficient_scope());
    }
}
