//! The demo CRM: a small MCP server with the classic example of tool-level scopes (three
//! tools over the same data, each needing its own scope). `portcullis demo` runs it behind the
//! gateway as a stdio child; `portcullis demo-crm --listen ADDR` serves it over Streamable
//! HTTP (JSON responses), which the gateway benchmark uses as its upstream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

#[derive(Debug, Clone)]
struct Contact {
    id: u32,
    name: &'static str,
    email: &'static str,
    company: &'static str,
}

/// The CRM's data: contacts, and deals whose stage `update_deal` changes.
#[derive(Debug)]
pub struct Crm {
    contacts: Vec<Contact>,
    deals: BTreeMap<String, (String, u32, String)>,
}

impl Default for Crm {
    fn default() -> Self {
        let contacts = vec![
            Contact { id: 1, name: "Ada Lovelace", email: "ada@analytical.example", company: "Analytical Engines" },
            Contact { id: 2, name: "Grace Hopper", email: "grace@cobol.example", company: "Compilers Inc." },
            Contact { id: 3, name: "Alan Turing", email: "alan@bletchley.example", company: "Bletchley Labs" },
        ];
        let mut deals = BTreeMap::new();
        deals.insert("D-100".to_owned(), ("Analytical Engines renewal".to_owned(), 1, "proposal".to_owned()));
        deals.insert("D-200".to_owned(), ("Compilers Inc. expansion".to_owned(), 2, "negotiation".to_owned()));
        Self { contacts, deals }
    }
}

fn text_result(text: String, structured: Value) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "structuredContent": structured, "isError": false })
}

fn tool_error(text: &str) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": true })
}

fn tools() -> Value {
    json!([
        {
            "name": "list_contacts",
            "title": "List contacts",
            "description": "Lists the CRM's contacts with their company.",
            "inputSchema": { "type": "object", "properties": {} },
            "annotations": { "readOnlyHint": true }
        },
        {
            "name": "update_deal",
            "title": "Update a deal",
            "description": "Moves a deal to another stage.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "deal_id": { "type": "string", "description": "For example D-100" },
                    "stage": { "type": "string", "enum": ["lead", "proposal", "negotiation", "won", "lost"] }
                },
                "required": ["deal_id", "stage"]
            }
        },
        {
            "name": "export_contacts",
            "title": "Export contacts",
            "description": "Exports every contact with e-mail address as CSV.",
            "inputSchema": { "type": "object", "properties": {} },
            "annotations": { "readOnlyHint": true }
        }
    ])
}

impl Crm {
    fn call_tool(&mut self, params: &Value) -> Result<Value, (i64, String)> {
        let name = params.get("name").and_then(Value::as_str).unwrap_or_default();
        let args = params.get("arguments").cloned().unwrap_or_else(|| json!({}));
        Ok(match name {
            "list_contacts" => {
                let lines: Vec<String> = self.contacts.iter().map(|c| format!("{} ({})", c.name, c.company)).collect();
                let list: Vec<Value> =
                    self.contacts.iter().map(|c| json!({"id": c.id, "name": c.name, "company": c.company})).collect();
                text_result(lines.join("\n"), json!({ "contacts": list }))
            }
            "update_deal" => {
                let (Some(id), Some(stage)) =
                    (args.get("deal_id").and_then(Value::as_str), args.get("stage").and_then(Value::as_str))
                else {
                    return Ok(tool_error("update_deal needs deal_id and stage"));
                };
                if !["lead", "proposal", "negotiation", "won", "lost"].contains(&stage) {
                    return Ok(tool_error("stage must be lead, proposal, negotiation, won or lost"));
                }
                match self.deals.get_mut(id) {
                    Some(deal) => {
                        deal.2 = stage.to_owned();
                        text_result(
                            format!("{id} ({}) is now in stage {stage}", deal.0),
                            json!({"deal_id": id, "stage": stage}),
                        )
                    }
                    None => tool_error(&format!("there is no deal {id}")),
                }
            }
            "export_contacts" => {
                let mut csv = String::from("id,name,email,company\n");
                for c in &self.contacts {
                    csv.push_str(&format!("{},{},{},{}\n", c.id, c.name, c.email, c.company));
                }
                text_result(csv, json!({ "rows": self.contacts.len() }))
            }
            other => return Err((-32602, format!("Unknown tool: {other}"))),
        })
    }

    fn resources(&self) -> Value {
        let list: Vec<Value> = self
            .contacts
            .iter()
            .map(|c| json!({"uri": format!("crm://contacts/{}", c.id), "name": c.name, "mimeType": "application/json"}))
            .collect();
        Value::Array(list)
    }

    fn read_resource(&self, params: &Value) -> Result<Value, (i64, String)> {
        let uri = params.get("uri").and_then(Value::as_str).unwrap_or_default();
        let contact = uri
            .strip_prefix("crm://contacts/")
            .and_then(|id| id.parse::<u32>().ok())
            .and_then(|id| self.contacts.iter().find(|c| c.id == id))
            .ok_or((-32002, format!("Resource not found: {uri}")))?;
        let body = json!({"id": contact.id, "name": contact.name, "email": contact.email, "company": contact.company});
        Ok(json!({ "contents": [{ "uri": uri, "mimeType": "application/json", "text": body.to_string() }] }))
    }

    /// Answers one JSON-RPC message; `None` for notifications and responses.
    pub fn handle(&mut self, message: &Value) -> Option<Value> {
        let id = message.get("id")?.clone();
        let method = message.get("method").and_then(Value::as_str)?;
        let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
        let result = match method {
            "initialize" => {
                let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
                let version = if PROTOCOL_VERSIONS.contains(&asked) { asked } else { PROTOCOL_VERSIONS[0] };
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": { "tools": {}, "resources": {}, "prompts": {} },
                    "serverInfo": { "name": "portcullis-demo-crm", "version": env!("CARGO_PKG_VERSION") },
                    "instructions": "A demo CRM: contacts and deals."
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({ "tools": tools() })),
            "tools/call" => self.call_tool(&params),
            "resources/list" => Ok(json!({ "resources": self.resources() })),
            "resources/templates/list" => Ok(json!({ "resourceTemplates": [
                { "uriTemplate": "crm://contacts/{id}", "name": "A contact", "mimeType": "application/json" }
            ] })),
            "resources/read" => self.read_resource(&params),
            "prompts/list" => Ok(json!({ "prompts": [
                { "name": "summarize_account", "description": "Summarise a customer account",
                  "arguments": [{ "name": "company", "required": true }] }
            ] })),
            "prompts/get" => match params.get("name").and_then(Value::as_str) {
                Some("summarize_account") => {
                    let company =
                        params.pointer("/arguments/company").and_then(Value::as_str).unwrap_or("the customer");
                    Ok(json!({ "messages": [{ "role": "user", "content": { "type": "text",
                        "text": format!("Summarise our relationship with {company}: contacts, open deals, next steps.") } }] }))
                }
                other => Err((-32602, format!("Unknown prompt: {}", other.unwrap_or_default()))),
            },
            "logging/setLevel" => Ok(json!({})),
            other => Err((-32601, format!("Method not found: {other}"))),
        };
        Some(match result {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err((code, message)) => {
                json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
            }
        })
    }
}

/// Serves the CRM over stdio: one JSON-RPC message per line in, one per line out.
pub async fn run_stdio() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut crm = Crm::default();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            eprintln!("demo-crm: ignoring a line that is not JSON");
            continue;
        };
        if let Some(answer) = crm.handle(&message) {
            stdout.write_all(answer.to_string().as_bytes()).await?;
            stdout.write_all(b"\n").await?;
            stdout.flush().await?;
        }
    }
    Ok(())
}

/// The CRM as a Streamable HTTP server at `/mcp` (JSON responses; a session id is issued on
/// initialize and required afterwards, like most servers do).
pub fn http_router() -> axum::Router {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let crm = Arc::new(Mutex::new(Crm::default()));
    let sessions: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let crm = crm.clone();
            let sessions = sessions.clone();
            async move {
                let Ok(message) = serde_json::from_slice::<Value>(&body) else {
                    return (StatusCode::BAD_REQUEST, "not JSON").into_response();
                };
                let initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
                let presented = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let mut new_session = None;
                if initialize {
                    let id = portcullis_crypto::random_token(16).unwrap_or_default();
                    if let Ok(mut s) = sessions.lock() {
                        s.insert(id.clone());
                    }
                    new_session = Some(id);
                } else {
                    let known = presented.as_ref().is_some_and(|p| sessions.lock().is_ok_and(|s| s.contains(p)));
                    if !known {
                        return (StatusCode::NOT_FOUND, "unknown session").into_response();
                    }
                }
                let answer = crm.lock().ok().and_then(|mut c| c.handle(&message));
                let mut response = match answer {
                    Some(a) => {
                        ([(axum::http::header::CONTENT_TYPE, "application/json")], a.to_string()).into_response()
                    }
                    None => StatusCode::ACCEPTED.into_response(),
                };
                if let Some(id) = new_session.and_then(|id| axum::http::HeaderValue::from_str(&id).ok()) {
                    response.headers_mut().insert("mcp-session-id", id);
                }
                response
            }
        }),
    )
}

/// The demo's upstream configuration: the CRM as a stdio child of the gateway, each tool mapped
/// to its own scope.
pub fn demo_upstream(program: String) -> crate::config::UpstreamConfig {
    let map = |entries: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()])).collect()
    };
    crate::config::UpstreamConfig {
        name: "crm".into(),
        command: vec![program, "demo-crm".into()],
        env: BTreeMap::new(),
        cwd: None,
        url: None,
        transport: crate::config::UpstreamTransport::StreamableHttp,
        authentication: crate::config::RouteAuthentication::Required,
        tools: map(&[
            ("list_contacts", "crm.contacts.read"),
            ("update_deal", "crm.deals.write"),
            ("export_contacts", "crm.contacts.export"),
        ]),
        prompts: map(&[("summarize_account", "crm.contacts.read")]),
        resources: map(&[("crm://contacts/*", "crm.contacts.read")]),
        unmapped: crate::config::UnmappedPolicy::Deny,
        unmapped_scopes: Vec::new(),
        scope_descriptions: [
            ("crm.contacts.read", "Read your CRM contacts"),
            ("crm.deals.write", "Create and change deals in your CRM"),
            ("crm.contacts.export", "Export your whole contact list"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
        scopes_supported: None,
        default_scopes: None,
        headers: Vec::new(),
        upstream_auth: Default::default(),
        oauth: None,
        connect_timeout_secs: 5,
        request_timeout_secs: 30,
        max_sessions: 32,
        idle_timeout_secs: 1800,
        publish_at_root: false,
    }
}
