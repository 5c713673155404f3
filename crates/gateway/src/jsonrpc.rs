//! JSON-RPC 2.0 as the gateway must read it: strictly, so that what the policy decides is what
//! the upstream will act on.
//!
//! A lenient parser takes the last of two duplicate keys and many upstreams take the first;
//! `{"name":"list_contacts","name":"export_contacts"}` would then be decided as one tool and
//! run as another. Duplicate keys anywhere in a message are therefore refused.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The gateway's own codes, in the range JSON-RPC leaves to implementations.
pub const UPSTREAM_ERROR: i64 = -32000;
pub const UNAUTHORIZED: i64 = -32001;
pub const FORBIDDEN: i64 = -32003;
pub const REQUEST_TIMEOUT: i64 = -32004;
pub const SESSION_NOT_FOUND: i64 = -32005;
/// The user must connect their account at the upstream first; `data.url` says where.
pub const CONNECTION_REQUIRED: i64 = -32010;
/// MCP 2025-11-25: the request needs the user to complete URL-mode elicitations first.
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// MCP 2026-07-28: `HeaderMismatch` and `UnsupportedProtocolVersionError`.
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// MCP: a resource that does not exist.
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// A JSON value parsed with duplicate object keys refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// Parses a body, refusing duplicate keys.
pub fn parse_strict(body: &[u8]) -> Result<Value, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let Strict(value) = Strict::deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// What one message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Request { id: Value, method: String },
    Notification { method: String },
    Response { id: Value },
}

/// Classifies one message, or says why it is not a JSON-RPC 2.0 message.
pub fn classify(message: &Value) -> Result<Kind, &'static str> {
    let Some(object) = message.as_object() else { return Err("a JSON-RPC message must be an object") };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("\"jsonrpc\" must be \"2.0\"");
    }
    let id = object.get("id");
    if let Some(id) = id
        && echoable_id(Some(id)).is_none()
        // A response to a request whose id could not be read carries `null`.
        && (!id.is_null() || object.contains_key("method"))
    {
        return Err("\"id\" must be a string or an integer of at most 64 bits");
    }
    if object.get("params").is_some_and(|p| !(p.is_object() || p.is_array())) {
        return Err("\"params\" must be an object or an array");
    }
    match (object.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Kind::Request { id: id.clone(), method: method.clone() }),
        (Some(Value::String(method)), None) => Ok(Kind::Notification { method: method.clone() }),
        (Some(_), _) => Err("\"method\" must be a string"),
        (None, Some(id)) if object.contains_key("result") != object.contains_key("error") => {
            Ok(Kind::Response { id: id.clone() })
        }
        (None, _) => Err("a message needs a \"method\", or an \"id\" with exactly one of \"result\" and \"error\""),
    }
}

/// The id of a message, if it is one that can be echoed in an answer: a string or an integer
/// (JSON-RPC 2.0 §5: when the id cannot be determined, the answer's id is `null`). Integers
/// beyond 64 bits arrive as floats and are not ids.
pub fn echoable_id(id: Option<&Value>) -> Option<&Value> {
    id.filter(|id| id.is_string() || id.is_i64() || id.is_u64())
}

/// At most `max` characters of text the client chose, for an error message: whatever a client
/// sends, what is echoed back stays small.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A key that identifies a request id in maps (`1` and `"1"` are different ids).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        let nested = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#;
        assert!(parse_strict(nested).unwrap_err().contains("duplicate key \"name\""));
        assert!(parse_strict(br#"[{"x":1},{"x":1}]"#).is_ok());
        assert!(parse_strict(br#"{"a":1} trailing"#).is_err());
    }

    #[test]
    fn only_strings_and_64_bit_integers_are_echoed_as_ids() {
        let ids = parse_strict(br#"["a", 9007199254740993, -5, 18446744073709551615, 1.5, {"x":1}, [1], null, 1e30]"#)
            .unwrap_or_default();
        let echoed: Vec<bool> =
            ids.as_array().into_iter().flatten().map(|id| echoable_id(Some(id)).is_some()).collect();
        assert_eq!(echoed, [true, true, true, true, false, false, false, false, false]);
        assert_eq!(ids.get(1).map(ToString::to_string).as_deref(), Some("9007199254740993"), "2^53 + 1 stays exact");
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("2025-06-18", 40), "2025-06-18");
        assert_eq!(excerpt(&"é".repeat(100), 3), "ééé…");
    }

    #[test]
    fn messages_are_classified() {
        let req = parse_strict(br#"{"jsonrpc":"2.0","id":"x","method":"ping"}"#).unwrap();
        assert_eq!(classify(&req), Ok(Kind::Request { id: Value::from("x"), method: "ping".into() }));
        let note = parse_strict(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(classify(&note), Ok(Kind::Notification { .. })));
        let resp = parse_strict(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap();
        assert!(matches!(classify(&resp), Ok(Kind::Response { .. })));
        for bad in [
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"[]"#,
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":100000000000000000000,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#,
        ] {
            assert!(classify(&parse_strict(bad.as_bytes()).unwrap()).is_err(), "{bad}");
        }
    }
}
