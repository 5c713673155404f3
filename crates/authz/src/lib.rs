//! Tool-level policy for MCP: which scopes each tool, prompt and resource needs, decided by one
//! pure function.
//!
//! A [`Policy`] is compiled once from configuration and never changes; [`Policy::decide`] is
//! the only place an MCP operation is allowed or refused, and list filtering asks it about each
//! item, so what a token may call and what it is shown can never disagree. Anything the policy
//! does not map is denied unless the upstream is explicitly configured otherwise, and names
//! that merely look like a mapped name (other case, compatibility forms, invisible characters)
//! are denied even then, so an encoding trick cannot reach a tool by a name the policy missed.

use std::collections::BTreeMap;

use portcullis_types::{Scope, ScopeError, ScopeSet};
use unicode_normalization::UnicodeNormalization;

/// What happens to operations on names the policy does not map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmapped {
    /// The default: refused.
    Deny,
    /// Allowed with these scopes (an empty set allows any valid token).
    RequireScopes(ScopeSet),
}

/// An MCP operation the policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    CallTool(&'a str),
    GetPrompt(&'a str),
    ReadResource(&'a str),
    SubscribeResource(&'a str),
    /// Any other JSON-RPC method. The MCP methods that carry no tool, prompt or resource name
    /// (`initialize`, `ping`, the list methods, notifications, ...) are allowed; a method that
    /// merely looks like a known one (`Tools/Call`) is refused; anything else is unmapped.
    Method(&'a str),
}

/// MCP methods that name no tool, prompt or resource and so need no scope of their own. List
/// results are filtered item by item with the operations above.
pub const PROTOCOL_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/unsubscribe",
    "logging/setLevel",
    "completion/complete",
    "server/discover",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

/// Methods whose name the policy decides with its own operation; a look-alike of one of these
/// must never reach an upstream that might be lenient about case.
const NAMED_METHODS: &[&str] = &["tools/call", "prompts/get", "resources/read", "resources/subscribe"];

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Mapped, but the token lacks scopes: the client can step up (403 `insufficient_scope`).
    InsufficientScope,
    /// The policy does not know this name and denies unknown names.
    Unmapped,
    /// The name is not a mapped name but looks like one.
    Confusable { mapped: String },
}

/// What an operation needs, before any token is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement<'p> {
    /// A protocol method that names nothing: any valid token.
    Protocol,
    /// Mapped by name (or pattern) to these scopes.
    Mapped(&'p ScopeSet),
    /// Not mapped: refused (`None`), or allowed with the scopes configured for unmapped names.
    Unmapped(Option<&'p ScopeSet>),
    /// Not mapped, but looks like this mapped name: refused.
    Confusable { mapped: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        reason: DenyReason,
        /// Every scope the operation needs (for the `scope` of a step-up challenge); empty when
        /// no scope would help.
        required: ScopeSet,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{kind} {name:?}: {source}")]
    Scope { kind: &'static str, name: String, source: ScopeError },
    #[error("{kind} {name:?} is mapped twice")]
    Duplicate { kind: &'static str, name: String },
    #[error("resource pattern {0:?} may only have one `*`, at the end")]
    Pattern(String),
    #[error("{kind} name must not be empty")]
    EmptyName { kind: &'static str },
}

/// A resource URI pattern: exact, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourcePattern {
    text: String,
    prefix: bool,
}

impl ResourcePattern {
    fn parse(pattern: &str) -> Result<Self, PolicyError> {
        match pattern.find('*') {
            None => Ok(Self { text: pattern.to_owned(), prefix: false }),
            Some(i) if i + 1 == pattern.len() => Ok(Self { text: pattern[..i].to_owned(), prefix: true }),
            Some(_) => Err(PolicyError::Pattern(pattern.to_owned())),
        }
    }

    fn matches(&self, uri: &str) -> bool {
        if self.prefix { uri.starts_with(&self.text) } else { uri == self.text }
    }

    /// Longer (more specific) patterns win; exact beats prefix of the same length.
    fn specificity(&self) -> (usize, bool) {
        (self.text.len(), !self.prefix)
    }
}

/// The compiled policy of one upstream.
#[derive(Debug, Clone)]
pub struct Policy {
    tools: BTreeMap<String, ScopeSet>,
    prompts: BTreeMap<String, ScopeSet>,
    resources: Vec<(ResourcePattern, ScopeSet)>,
    unmapped: Unmapped,
    /// Fold form → mapped name, to catch look-alikes.
    folded_tools: BTreeMap<String, String>,
    folded_prompts: BTreeMap<String, String>,
}

/// What a configuration says, before compilation.
#[derive(Debug, Clone, Default)]
pub struct PolicySource {
    pub tools: Vec<(String, Vec<String>)>,
    pub prompts: Vec<(String, Vec<String>)>,
    pub resources: Vec<(String, Vec<String>)>,
    /// `None` denies unmapped names; `Some(scopes)` allows them with those scopes.
    pub unmapped_requires: Option<Vec<String>>,
}

/// The form in which two names that a person (or a lenient upstream) would take for the same
/// name become equal: NFKC, case-folded, without invisible formatting characters.
fn fold(name: &str) -> String {
    // ASCII is its own NFKC form and holds no invisible character: only case is left to fold.
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    fold_unicode(name)
}

fn fold_unicode(name: &str) -> String {
    name.nfkc().filter(|c| !is_invisible(*c)).flat_map(char::to_lowercase).collect()
}

/// The methods a look-alike method is compared with, folded once.
static FOLDED_METHODS: std::sync::LazyLock<Vec<(String, &'static str)>> = std::sync::LazyLock::new(|| {
    PROTOCOL_METHODS.iter().chain(NAMED_METHODS).map(|known| (fold(known), *known)).collect()
});

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{E0000}'..='\u{E0FFF}')
}

fn scope_set(kind: &'static str, name: &str, scopes: &[String]) -> Result<ScopeSet, PolicyError> {
    let mut set = ScopeSet::new();
    for s in scopes {
        set.insert(Scope::parse(s).map_err(|source| PolicyError::Scope { kind, name: name.to_owned(), source })?);
    }
    Ok(set)
}

/// Mapped names with their scopes, and the fold form of each name back to it.
type CompiledNames = (BTreeMap<String, ScopeSet>, BTreeMap<String, String>);

fn compile_names(kind: &'static str, entries: &[(String, Vec<String>)]) -> Result<CompiledNames, PolicyError> {
    let mut map = BTreeMap::new();
    let mut folded = BTreeMap::new();
    for (name, scopes) in entries {
        if name.is_empty() {
            return Err(PolicyError::EmptyName { kind });
        }
        if map.insert(name.clone(), scope_set(kind, name, scopes)?).is_some() {
            return Err(PolicyError::Duplicate { kind, name: name.clone() });
        }
        folded.insert(fold(name), name.clone());
    }
    Ok((map, folded))
}

impl Policy {
    pub fn compile(source: &PolicySource) -> Result<Self, PolicyError> {
        let (tools, folded_tools) = compile_names("tool", &source.tools)?;
        let (prompts, folded_prompts) = compile_names("prompt", &source.prompts)?;
        let mut resources = Vec::with_capacity(source.resources.len());
        for (pattern, scopes) in &source.resources {
            if pattern.is_empty() {
                return Err(PolicyError::EmptyName { kind: "resource" });
            }
            let parsed = ResourcePattern::parse(pattern)?;
            if resources.iter().any(|(p, _): &(ResourcePattern, ScopeSet)| p == &parsed) {
                return Err(PolicyError::Duplicate { kind: "resource", name: pattern.clone() });
            }
            resources.push((parsed, scope_set("resource", pattern, scopes)?));
        }
        resources.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.specificity()));
        let unmapped = match &source.unmapped_requires {
            None => Unmapped::Deny,
            Some(scopes) => Unmapped::RequireScopes(scope_set("unmapped", "*", scopes)?),
        };
        Ok(Self { tools, prompts, resources, unmapped, folded_tools, folded_prompts })
    }

    /// What an operation needs, as the policy maps it: the one place a name is looked up.
    pub fn requirement(&self, operation: Operation<'_>) -> Requirement<'_> {
        let (needed, confusable) = match operation {
            Operation::Method(method) => {
                if PROTOCOL_METHODS.contains(&method) {
                    return Requirement::Protocol;
                }
                let folded = fold(method);
                let lookalike = FOLDED_METHODS.iter().find(|(known, _)| *known == folded);
                (None, lookalike.map(|(_, known)| (*known).to_owned()))
            }
            Operation::CallTool(name) => Self::lookup(&self.tools, &self.folded_tools, name),
            Operation::GetPrompt(name) => Self::lookup(&self.prompts, &self.folded_prompts, name),
            Operation::ReadResource(uri) | Operation::SubscribeResource(uri) => {
                (self.resources.iter().find(|(p, _)| p.matches(uri)).map(|(_, s)| s), None)
            }
        };
        if let Some(mapped) = confusable {
            return Requirement::Confusable { mapped };
        }
        match (needed, &self.unmapped) {
            (Some(needed), _) => Requirement::Mapped(needed),
            (None, Unmapped::RequireScopes(scopes)) => Requirement::Unmapped(Some(scopes)),
            (None, Unmapped::Deny) => Requirement::Unmapped(None),
        }
    }

    /// The one decision function.
    pub fn decide(&self, granted: &ScopeSet, operation: Operation<'_>) -> Decision {
        let needed = match self.requirement(operation) {
            Requirement::Protocol => return Decision::Allow,
            Requirement::Confusable { mapped } => {
                return Decision::Deny { reason: DenyReason::Confusable { mapped }, required: ScopeSet::new() };
            }
            Requirement::Unmapped(None) => {
                return Decision::Deny { reason: DenyReason::Unmapped, required: ScopeSet::new() };
            }
            Requirement::Mapped(needed) | Requirement::Unmapped(Some(needed)) => needed,
        };
        if needed.is_subset(granted) {
            Decision::Allow
        } else {
            Decision::Deny { reason: DenyReason::InsufficientScope, required: needed.clone() }
        }
    }

    /// The mapped tools and the scopes each needs, by name.
    pub fn tools(&self) -> impl Iterator<Item = (&str, &ScopeSet)> {
        self.tools.iter().map(|(name, scopes)| (name.as_str(), scopes))
    }

    /// The mapped prompts and the scopes each needs, by name.
    pub fn prompts(&self) -> impl Iterator<Item = (&str, &ScopeSet)> {
        self.prompts.iter().map(|(name, scopes)| (name.as_str(), scopes))
    }

    /// The mapped resource patterns (as configured, `*` for a prefix) and their scopes.
    pub fn resources(&self) -> impl Iterator<Item = (String, &ScopeSet)> {
        self.resources
            .iter()
            .map(|(p, scopes)| (if p.prefix { format!("{}*", p.text) } else { p.text.clone() }, scopes))
    }

    fn lookup<'p>(
        map: &'p BTreeMap<String, ScopeSet>,
        folded: &BTreeMap<String, String>,
        name: &str,
    ) -> (Option<&'p ScopeSet>, Option<String>) {
        if let Some(scopes) = map.get(name) {
            return (Some(scopes), None);
        }
        if folded.is_empty() {
            return (None, None);
        }
        match folded.get(&fold(name)) {
            Some(mapped) => (None, Some(mapped.clone())),
            None => (None, None),
        }
    }

    /// The smallest scope set that unlocks anything (for RFC 9728 `scopes_supported` and the
    /// scope of a first 401 challenge): the scopes of every mapped tool, prompt and resource.
    pub fn all_scopes(&self) -> ScopeSet {
        let mut all = ScopeSet::new();
        for s in self.tools.values().chain(self.prompts.values()).chain(self.resources.iter().map(|(_, s)| s)) {
            all = all.union(s);
        }
        if let Unmapped::RequireScopes(s) = &self.unmapped {
            all = all.union(s);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, scopes: &[&str]) -> (String, Vec<String>) {
        (name.to_owned(), scopes.iter().map(|s| (*s).to_owned()).collect())
    }

    fn crm() -> Policy {
        let source = PolicySource {
            tools: vec![
                entry("list_contacts", &["crm.contacts.read"]),
                entry("update_deal", &["crm.deals.write"]),
                entry("export_contacts", &["crm.contacts.export", "crm.contacts.read"]),
            ],
            prompts: vec![entry("summarize_account", &["crm.contacts.read"])],
            resources: vec![
                entry("crm://contacts/*", &["crm.contacts.read"]),
                entry("crm://contacts/vip", &["crm.contacts.export"]),
            ],
            unmapped_requires: None,
        };
        Policy::compile(&source).expect("the CRM policy compiles")
    }

    fn scopes(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap_or_default()
    }

    #[track_caller]
    fn check(policy: &Policy, granted: &str, op: Operation<'_>, expect: &str) {
        let got = match policy.decide(&scopes(granted), op) {
            Decision::Allow => "allow".to_owned(),
            Decision::Deny { reason: DenyReason::InsufficientScope, required } => format!("insufficient: {required}"),
            Decision::Deny { reason: DenyReason::Unmapped, .. } => "unmapped".to_owned(),
            Decision::Deny { reason: DenyReason::Confusable { mapped }, .. } => format!("confusable with {mapped}"),
        };
        assert_eq!(got, expect, "{op:?} with {granted:?}");
    }

    #[test]
    fn tools_need_their_own_scopes() {
        let p = crm();
        check(&p, "crm.contacts.read", Operation::CallTool("list_contacts"), "allow");
        check(&p, "crm.contacts.read", Operation::CallTool("update_deal"), "insufficient: crm.deals.write");
        check(
            &p,
            "crm.contacts.read",
            Operation::CallTool("export_contacts"),
            "insufficient: crm.contacts.export crm.contacts.read",
        );
        check(&p, "crm.contacts.export crm.contacts.read", Operation::CallTool("export_contacts"), "allow");
        check(&p, "", Operation::CallTool("list_contacts"), "insufficient: crm.contacts.read");
        check(
            &p,
            "crm.contacts.read crm.deals.write crm.contacts.export",
            Operation::CallTool("delete_everything"),
            "unmapped",
        );
        check(&p, "crm.contacts.read", Operation::GetPrompt("summarize_account"), "allow");
        check(&p, "crm.contacts.read", Operation::GetPrompt("other"), "unmapped");
    }

    #[test]
    fn protocol_methods_pass_and_their_look_alikes_do_not() {
        let p = crm();
        check(&p, "", Operation::Method("initialize"), "allow");
        check(&p, "", Operation::Method("tools/list"), "allow");
        check(&p, "", Operation::Method("Tools/Call"), "confusable with tools/call");
        check(&p, "", Operation::Method("tools/list\u{200B}"), "confusable with tools/list");
        check(&p, "", Operation::Method("vendor/extension"), "unmapped");
        let lenient = Policy::compile(&PolicySource { unmapped_requires: Some(vec![]), ..PolicySource::default() })
            .expect("compiles");
        check(&lenient, "", Operation::Method("vendor/extension"), "allow");
        check(&lenient, "", Operation::Method("TOOLS/CALL"), "confusable with tools/call");
    }

    #[test]
    fn resources_match_the_most_specific_pattern() {
        let p = crm();
        check(&p, "crm.contacts.read", Operation::ReadResource("crm://contacts/42"), "allow");
        check(
            &p,
            "crm.contacts.read",
            Operation::ReadResource("crm://contacts/vip"),
            "insufficient: crm.contacts.export",
        );
        check(&p, "crm.contacts.read", Operation::SubscribeResource("crm://contacts/7"), "allow");
        check(&p, "crm.contacts.read", Operation::ReadResource("crm://deals/1"), "unmapped");
        check(&p, "crm.contacts.read", Operation::ReadResource("crm://contacts"), "unmapped");
    }

    #[test]
    fn look_alike_names_are_denied_even_when_unmapped_names_are_allowed() {
        let lenient = Policy::compile(&PolicySource {
            tools: vec![entry("export_contacts", &["crm.contacts.export"])],
            unmapped_requires: Some(vec![]),
            ..PolicySource::default()
        })
        .expect("the lenient policy compiles");
        check(&lenient, "", Operation::CallTool("harmless"), "allow");
        for disguised in [
            "Export_Contacts",
            "EXPORT_CONTACTS",
            "export\u{200B}_contacts",
            "export_contacts\u{FEFF}",
            "\u{FF45}xport_contacts", // fullwidth e
        ] {
            check(&lenient, "", Operation::CallTool(disguised), "confusable with export_contacts");
        }
        // A homoglyph from another script is a different name to any upstream too; a lenient
        // policy treats it as unmapped, the default policy denies it.
        check(&lenient, "", Operation::CallTool("export_cont\u{0430}cts"), "allow");
        check(
            &crm(),
            "crm.contacts.export crm.contacts.read",
            Operation::CallTool("export_cont\u{0430}cts"),
            "unmapped",
        );
        // With the default (deny), look-alikes are refused all the same.
        check(
            &crm(),
            "crm.contacts.read crm.contacts.export",
            Operation::CallTool("Export_Contacts"),
            "confusable with export_contacts",
        );
    }

    #[test]
    fn ascii_folds_as_the_unicode_rules_fold_it() {
        for c in (0u8..=0x7f).map(char::from) {
            let name = format!("a{c}Z");
            assert_eq!(fold(&name), fold_unicode(&name), "{name:?}");
        }
        assert_eq!(fold("Export_Contacts"), "export_contacts");
        assert_eq!(fold("export\u{200B}_Contacts"), "export_contacts");
    }

    #[test]
    fn compile_errors() {
        let bad_scope = PolicySource { tools: vec![entry("t", &["bad scope\""])], ..PolicySource::default() };
        assert!(matches!(Policy::compile(&bad_scope), Err(PolicyError::Scope { .. })));
        let dup = PolicySource { tools: vec![entry("t", &["a"]), entry("t", &["b"])], ..PolicySource::default() };
        assert!(matches!(Policy::compile(&dup), Err(PolicyError::Duplicate { .. })));
        let star = PolicySource { resources: vec![entry("crm://*/x", &["a"])], ..PolicySource::default() };
        assert!(matches!(Policy::compile(&star), Err(PolicyError::Pattern(_))));
        let empty = PolicySource { prompts: vec![entry("", &["a"])], ..PolicySource::default() };
        assert!(matches!(Policy::compile(&empty), Err(PolicyError::EmptyName { kind: "prompt" })));
    }

    #[test]
    fn all_scopes_is_the_union() {
        assert_eq!(crm().all_scopes().to_string(), "crm.contacts.export crm.contacts.read crm.deals.write");
    }
}
