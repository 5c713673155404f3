//! Filtering of list results: an item is shown only if the decision function would allow
//! using it, so what a token is shown and what it may call never disagree.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use portcullis_authz::{Operation, Policy};
use portcullis_types::ScopeSet;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::Route;
use crate::auth::Principal;
use crate::jsonrpc;
use crate::observed::Observed;

/// Which list a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    pub fn for_method(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::ResourceTemplates,
            _ => return None,
        })
    }

    /// The member of the result that holds the items, and the item member naming each.
    pub(crate) fn members(self) -> (&'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name"),
            Self::Prompts => ("prompts", "name"),
            Self::Resources => ("resources", "uri"),
            Self::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        }
    }

    fn operation(self, name: &str) -> Operation<'_> {
        match self {
            Self::Tools => Operation::CallTool(name),
            Self::Prompts => Operation::GetPrompt(name),
            Self::Resources | Self::ResourceTemplates => Operation::ReadResource(name),
        }
    }

    /// For responses whose request the gateway did not see (a resumed stream): the list kind
    /// a result's shape says it is.
    pub fn from_shape(result: &Value) -> Option<Self> {
        [Self::Tools, Self::Prompts, Self::Resources, Self::ResourceTemplates]
            .into_iter()
            .find(|kind| result.get(kind.members().0).is_some_and(Value::is_array))
    }
}

/// Removes from a JSON-RPC response every item the policy would not allow. Returns how many
/// items were removed. An item without a string name is removed too: it could not be used
/// through the gateway anyway.
pub fn filter_list_response(message: &mut Value, kind: ListKind, policy: &Policy, granted: &ScopeSet) -> usize {
    let (items_member, name_member) = kind.members();
    let Some(items) = message.get_mut("result").and_then(|r| r.get_mut(items_member)).and_then(Value::as_array_mut)
    else {
        return 0;
    };
    let before = items.len();
    items.retain(|item| {
        item.get(name_member).and_then(Value::as_str).is_some_and(|name| shown(kind, name, policy, granted))
    });
    before - items.len()
}

/// The one rule for an item of a list: shown exactly when the caller may use it.
fn shown(kind: ListKind, name: &str, policy: &Policy, granted: &ScopeSet) -> bool {
    policy.decide(granted, kind.operation(name)).is_allowed()
}

/// An object key, borrowed from the text unless it had to be unescaped.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// One list item, read in the same pass as the list: its members as raw text (written again
/// as they are if it is kept), and its name. A member that appears twice makes the name
/// ambiguous (a client might read either), and such an item is not shown.
struct RawItem<'de> {
    members: Vec<(Cow<'de, str>, &'de RawValue)>,
    name: Option<Cow<'de, str>>,
}

impl RawItem<'_> {
    /// Anything but an object: it has no name, and is not shown.
    fn nameless() -> Self {
        Self { members: Vec::new(), name: None }
    }
}

#[derive(Clone, Copy)]
struct RawItems {
    name_member: &'static str,
}

impl<'de> serde::de::DeserializeSeed<'de> for RawItems {
    type Value = Vec<RawItem<'de>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RawItems {
    type Value = Vec<RawItem<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(RawItemSeed { name_member: self.name_member })? {
            items.push(item);
        }
        Ok(items)
    }
}

struct RawItemSeed {
    name_member: &'static str,
}

impl<'de> serde::de::DeserializeSeed<'de> for RawItemSeed {
    type Value = RawItem<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RawItemSeed {
    type Value = RawItem<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list item")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut item = RawItem::nameless();
        let mut ambiguous = false;
        while let Some(key) = map.next_key_seed(Key)? {
            let value: &'de RawValue = map.next_value()?;
            ambiguous |= item.members.iter().any(|(k, _)| *k == key);
            if key == self.name_member {
                item.name = serde_json::from_str::<Cow<'de, str>>(value.get()).ok();
            }
            item.members.push((key, value));
        }
        if ambiguous {
            item.name = None;
        }
        Ok(item)
    }

    // Anything but an object has no name: read past it, and it is not shown.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(RawItem::nameless())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawItem::nameless())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawItem::nameless())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawItem::nameless())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawItem::nameless())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawItem::nameless())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawItem::nameless())
    }
}

/// A JSON object read with its members kept as raw JSON text, in order, except the one named
/// `descend`, which `seed` reads.
struct RawObject<'de, T> {
    members: Vec<(String, &'de RawValue)>,
    descended: Option<T>,
}

#[derive(Clone)]
struct RawObjectSeed<S> {
    descend: &'static str,
    seed: S,
}

impl<'de, S> serde::de::DeserializeSeed<'de> for RawObjectSeed<S>
where
    S: serde::de::DeserializeSeed<'de> + Clone,
{
    type Value = RawObject<'de, S::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, S> serde::de::Visitor<'de> for RawObjectSeed<S>
where
    S: serde::de::DeserializeSeed<'de> + Clone,
{
    type Value = RawObject<'de, S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = RawObject { members: Vec::new(), descended: None };
        while let Some(key) = map.next_key::<String>()? {
            if object.members.iter().any(|(k, _)| *k == key) || (key == self.descend && object.descended.is_some()) {
                return Err(serde::de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            if key == self.descend {
                object.descended = Some(map.next_value_seed(self.seed.clone())?);
            } else {
                object.members.push((key, map.next_value()?));
            }
        }
        Ok(object)
    }
}

/// Writes an object from members given as raw JSON text, in order (a kept item as it was
/// read, or an object with one member replaced).
struct WriteMembers<'a, K>(&'a [(K, &'a RawValue)]);

impl<K: AsRef<str>> serde::Serialize for WriteMembers<'_, K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

/// Filters a list answer given as JSON text without building a tree of it: the text is read
/// once (each item's members kept as raw text, its name read on the way), and the kept items
/// are written again member by member, their values as they were. The same rule as
/// [`filter_list_response`] (an item without a string name is removed), and stricter where a
/// tree cannot see: an item with a member twice is removed. `None` when the text is not one
/// JSON-RPC response, with the id whose key is `id_key`, whose `result` holds this list (a batch, an error answer, a
/// duplicate member): the caller takes the general path. The names offered (before
/// filtering) go to `offered`.
pub fn filter_list_text(
    text: &str,
    kind: ListKind,
    id_key: &str,
    policy: &Policy,
    granted: &ScopeSet,
    offered: impl FnOnce(&mut dyn Iterator<Item = &str>),
) -> Option<String> {
    let (items_member, name_member) = kind.members();
    let result_seed = RawObjectSeed { descend: items_member, seed: RawItems { name_member } };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let top = serde::de::DeserializeSeed::deserialize(
        RawObjectSeed { descend: "result", seed: result_seed },
        &mut deserializer,
    )
    .ok()?;
    deserializer.end().ok()?;
    let id = top.members.iter().find(|(k, _)| k == "id").map(|(_, raw)| raw.get())?;
    if jsonrpc::id_key(&serde_json::from_str::<Value>(id).ok()?) != id_key {
        return None;
    }
    let result = top.descended?;
    let items = result.descended?;
    offered(&mut items.iter().filter_map(|item| item.name.as_deref()));
    let kept: Vec<WriteMembers<'_, Cow<'_, str>>> = items
        .iter()
        .filter(|item| item.name.as_deref().is_some_and(|name| shown(kind, name, policy, granted)))
        .map(|item| WriteMembers(&item.members))
        .collect();
    let kept = serde_json::value::to_raw_value(&kept).ok()?;
    let mut result_members: Vec<(&str, &RawValue)> = result.members.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    result_members.push((items_member, &kept));
    let result = serde_json::value::to_raw_value(&WriteMembers(&result_members)).ok()?;
    let mut top_members: Vec<(&str, &RawValue)> = top.members.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    top_members.push(("result", &result));
    serde_json::to_string(&WriteMembers(&top_members)).ok()
}

/// What filtering one caller's list answers on a route needs: the route's policy, the
/// caller's scopes, and where the names the upstream offered are noted.
#[derive(Clone)]
pub(crate) struct ListFilter {
    policy: Arc<Policy>,
    scopes: ScopeSet,
    observed: Arc<Observed>,
}

impl ListFilter {
    pub(crate) fn new(route: &Route, principal: &Principal) -> Self {
        Self {
            policy: Arc::clone(&route.settings.policy),
            scopes: principal.scopes.clone(),
            observed: Arc::clone(&route.observed),
        }
    }

    /// Removes what the policy would not allow from one message or a batch of them. True when
    /// one was a list answer: the message must then be written again from this tree, filtered
    /// or not, since its text may hold what the tree does not (a member twice, of which a
    /// client might read the copy the filter never saw).
    pub(crate) fn apply(&self, message: &mut Value, lists: &HashMap<String, ListKind>, by_shape: bool) -> bool {
        if let Value::Array(items) = message {
            let mut answered_a_list = false;
            for item in items {
                answered_a_list |= self.apply(item, lists, by_shape);
            }
            return answered_a_list;
        }
        // Anything that carries an id and a result is filtered, well-formed or not: a client
        // may read the result of a message that is not quite JSON-RPC.
        let (Some(id), Some(result)) = (message.get("id"), message.get("result")) else { return false };
        let kind = lists
            .get(&jsonrpc::id_key(id))
            .copied()
            .or_else(|| if by_shape { ListKind::from_shape(result) } else { None });
        let Some(kind) = kind else { return false };
        let (items_member, name_member) = kind.members();
        if let Some(items) = result.get(items_member).and_then(Value::as_array) {
            self.observed.listed(kind, items.iter().filter_map(|item| item.get(name_member).and_then(Value::as_str)));
        }
        filter_list_response(message, kind, &self.policy, &self.scopes);
        true
    }

    /// The answer to one list request as JSON text, filtered without building a tree of it
    /// (`filter_list_text`); `None` when it is not that (the caller then parses and `apply`s).
    pub(crate) fn apply_text(&self, bytes: &[u8], lists: &HashMap<String, ListKind>) -> Option<String> {
        let mut requested = lists.iter();
        let (Some((id_key, kind)), None) = (requested.next(), requested.next()) else { return None };
        let text = std::str::from_utf8(bytes).ok()?;
        filter_list_text(text, *kind, id_key, &self.policy, &self.scopes, |names| self.observed.listed(*kind, names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_authz::PolicySource;
    use serde_json::json;

    #[test]
    fn lists_keep_only_what_may_be_used() {
        let policy = Policy::compile(&PolicySource {
            tools: vec![("a".into(), vec!["s.a".into()]), ("b".into(), vec!["s.b".into()])],
            resources: vec![("x://1".into(), vec!["s.a".into()])],
            ..PolicySource::default()
        })
        .unwrap();
        let granted = ScopeSet::parse("s.a").unwrap();
        let mut tools = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"},{"name":"c"},{}]}});
        assert_eq!(filter_list_response(&mut tools, ListKind::Tools, &policy, &granted), 3);
        assert_eq!(tools["result"]["tools"], json!([{"name":"a"}]));
        let mut resources = json!({"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"x://1"},{"uri":"x://2"}]}});
        filter_list_response(&mut resources, ListKind::Resources, &policy, &granted);
        assert_eq!(resources["result"]["resources"], json!([{"uri":"x://1"}]));
        assert_eq!(ListKind::from_shape(&json!({"prompts": []})), Some(ListKind::Prompts));
    }

    /// The text path and the tree path agree: `text` filtered over its text, for the request
    /// whose id key is `1`, is `expected` (or `None`: the text path declines), and when the
    /// text path answers, the tree path gives the same message.
    fn check(kind: ListKind, text: &str, expected: Option<Value>) {
        let policy = Policy::compile(&PolicySource {
            tools: vec![("a".into(), vec!["s.a".into()]), ("b".into(), vec!["s.b".into()])],
            prompts: vec![("p".into(), vec!["s.a".into()])],
            resources: vec![("x://1".into(), vec!["s.a".into()]), ("x://{id}".into(), vec!["s.a".into()])],
            ..PolicySource::default()
        })
        .unwrap();
        let granted = ScopeSet::parse("s.a").unwrap();
        let mut offered = Vec::new();
        let filtered = filter_list_text(text, kind, "1", &policy, &granted, |names| {
            offered.extend(names.map(str::to_owned));
        });
        let filtered: Option<Value> = filtered.map(|t| serde_json::from_str(&t).unwrap());
        assert_eq!(filtered, expected, "{text}");
        if let Some(expected) = expected {
            let mut tree: Value = serde_json::from_str(text).unwrap();
            filter_list_response(&mut tree, kind, &policy, &granted);
            assert_eq!(tree, expected, "the tree path differs on {text}");
            assert!(!offered.is_empty() || text.contains("[]"), "names offered are noted: {text}");
        }
    }

    #[test]
    fn list_text_is_filtered_by_the_same_rule() {
        use ListKind::*;
        let cases: &[(ListKind, &str, Option<Value>)] = &[
            (
                Tools,
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","inputSchema":{"type":"object"}},{"name":"b"},{"name":"c"},{},{"name":7},"a"],"nextCursor":"n"},"_meta":{"k":[1,2]}}"#,
                Some(
                    json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","inputSchema":{"type":"object"}}],"nextCursor":"n"},"_meta":{"k":[1,2]}}),
                ),
            ),
            // Escapes are read as the upstream's client would read them.
            (
                Tools,
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}"#,
                Some(json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}})),
            ),
            (
                Prompts,
                r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p"},{"name":"q"}]}}"#,
                Some(json!({"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p"}]}})),
            ),
            (
                Resources,
                r#"{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"x://1","name":"a"},{"uri":"x://2","name":"a"}]}}"#,
                Some(json!({"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"x://1","name":"a"}]}})),
            ),
            (
                ResourceTemplates,
                r#"{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"x://{id}"},{"uriTemplate":"y://{id}","name":"x://{id}"}]}}"#,
                Some(json!({"jsonrpc":"2.0","id":1,"result":{"resourceTemplates":[{"uriTemplate":"x://{id}"}]}})),
            ),
            (
                Tools,
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
                Some(json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}})),
            ),
            // Not the answer to this list request: the text path declines.
            (Tools, r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"b"}]}}"#, None),
            (Tools, r#"{"jsonrpc":"2.0","id":"1","result":{"tools":[{"name":"b"}]}}"#, None),
            (Tools, r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}"#, None),
            (Tools, r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"b"}]}}]"#, None),
            (Tools, r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"b"}]}}"#, None),
            (Tools, r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"b"}]}} trailing"#, None),
            // A member twice at the top or in the result: declined, and the tree path decides.
            (Tools, r#"{"jsonrpc":"2.0","id":1,"id":1,"result":{"tools":[{"name":"b"}]}}"#, None),
            (Tools, r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"b"}],"tools":[{"name":"a"}]}}"#, None),
        ];
        for (kind, text, expected) in cases {
            check(*kind, text, expected.clone());
        }
    }

    /// Tool `a` needs `s.a`, tool `b` needs `s.b`.
    fn tools_a_and_b() -> Policy {
        Policy::compile(&PolicySource {
            tools: vec![("a".into(), vec!["s.a".into()]), ("b".into(), vec!["s.b".into()])],
            ..PolicySource::default()
        })
        .unwrap()
    }

    #[test]
    fn whatever_carries_the_id_and_a_result_is_filtered() {
        let policy = tools_a_and_b();
        let filter = ListFilter {
            policy: Arc::new(policy),
            scopes: ScopeSet::parse("s.a").unwrap(),
            observed: Arc::new(Observed::default()),
        };
        let lists = HashMap::from([(jsonrpc::id_key(&json!(1)), ListKind::Tools)]);
        let tools = json!([{"name":"a"},{"name":"b"}]);
        for mut message in [
            json!({"jsonrpc":"2.0","id":1,"result":{"tools":tools}}),
            json!({"id":1,"result":{"tools":tools}}),
            json!({"jsonrpc":"2.0","id":1,"result":{"tools":tools},"error":{"code":1,"message":"x"}}),
            json!({"jsonrpc":"1.0","id":1,"method":"x","result":{"tools":tools}}),
        ] {
            assert!(filter.apply(&mut message, &lists, false), "{message}");
            assert_eq!(message["result"]["tools"], json!([{"name":"a"}]));
        }
        let mut other = json!({"jsonrpc":"2.0","id":2,"result":{"tools":tools}});
        assert!(!filter.apply(&mut other, &lists, false), "not the list request's answer");
        assert!(filter.apply(&mut other, &lists, true), "unless filtered by its shape");
        let mut nothing_removed = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}});
        assert!(filter.apply(&mut nothing_removed, &lists, false), "a list answer is written again all the same");
    }

    #[test]
    fn an_item_naming_itself_twice_is_not_shown() {
        let policy = tools_a_and_b();
        let granted = ScopeSet::parse("s.a").unwrap();
        // A client might read either name; the item is not shown at all.
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"},{"name":"b","name":"a"},{"name":"a"}]}}"#;
        let filtered = filter_list_text(text, ListKind::Tools, "1", &policy, &granted, |_| ()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&filtered).unwrap(),
            json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}})
        );
    }
}
