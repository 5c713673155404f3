//! Filtering of list results: an item is shown only if the decision function would allow
//! using it, so what a token is shown and what it may call never disagree.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_authz::{Operation, Policy};
use portcullis_types::ScopeSet;
use serde_json::Value;

use crate::Route;
use crate::auth::Principal;
use crate::jsonrpc::{self, Kind};
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
        item.get(name_member)
            .and_then(Value::as_str)
            .is_some_and(|name| policy.decide(granted, kind.operation(name)).is_allowed())
    });
    before - items.len()
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

    /// Removes what the policy would not allow from one message or a batch of them.
    pub(crate) fn apply(&self, message: &mut Value, lists: &HashMap<String, ListKind>, by_shape: bool) -> bool {
        if let Value::Array(items) = message {
            let mut changed = false;
            for item in items {
                changed |= self.apply(item, lists, by_shape);
            }
            return changed;
        }
        let Ok(Kind::Response { id }) = jsonrpc::classify(message) else { return false };
        let kind = lists
            .get(&jsonrpc::id_key(&id))
            .copied()
            .or_else(|| if by_shape { message.get("result").and_then(ListKind::from_shape) } else { None });
        let Some(kind) = kind else { return false };
        if let Some(items) = message.get("result").and_then(|r| r.get(kind.members().0)).and_then(Value::as_array) {
            self.observed.listed(kind, items);
        }
        filter_list_response(message, kind, &self.policy, &self.scopes) > 0
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
}
