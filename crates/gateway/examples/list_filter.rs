//! What the policy costs per call as the configuration grows, and what filtering a large
//! `tools/list` answer costs: the decision for one `tools/call` against a policy of 3 tools
//! and of 2,000, and a 1,000-tool answer (each tool with a description and an input schema,
//! as real servers send them) filtered for a token that may use half of them: on a parsed tree,
//! parsed from the upstream's bytes and written again, and over the text as the gateway does
//! it (`filter_list_text`: only each item's name is read, kept items copied as they are). Prints
//! the median and p99 of each. Run by `bench/gateway/run`, or:
//!
//!     cargo run --release -p portcullis-gateway --example list_filter

use std::hint::black_box;
use std::time::{Duration, Instant};

use portcullis_authz::{Operation, Policy, PolicySource};
use portcullis_gateway::{ListKind, filter_list_response, filter_list_text};
use portcullis_types::ScopeSet;
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

fn policy(tools: usize) -> Result<Policy, Error> {
    let mut source = PolicySource {
        tools: vec![
            ("list_contacts".into(), vec!["crm.contacts.read".into()]),
            ("update_deal".into(), vec!["crm.deals.write".into()]),
            ("export_contacts".into(), vec!["crm.contacts.export".into()]),
        ],
        prompts: Vec::new(),
        resources: Vec::new(),
        unmapped_requires: None,
    };
    for n in source.tools.len()..tools {
        // Even tools need the scope the token holds, odd ones one it does not.
        let scope = if n % 2 == 0 { "crm.contacts.read" } else { "crm.deals.write" };
        source.tools.push((format!("tool_{n:04}"), vec![scope.into()]));
    }
    Ok(Policy::compile(&source)?)
}

fn tools_list(tools: usize) -> Value {
    let items: Vec<Value> = (0..tools)
        .map(|n| {
            json!({
                "name": format!("tool_{n:04}"),
                "title": format!("Tool {n}"),
                "description": "Looks up records in the CRM by name, company or owner and returns them page by page.",
                "inputSchema": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "What to look for"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        "cursor": {"type": "string"}
                    },
                    "required": ["query"]
                }
            })
        })
        .collect();
    json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": items}})
}

/// Runs `f` `rounds` times (bounded by `budget`) and returns the sorted durations.
fn measure(rounds: usize, budget: Duration, mut f: impl FnMut()) -> Vec<Duration> {
    let started = Instant::now();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
        if started.elapsed() > budget {
            break;
        }
    }
    times.sort();
    times
}

fn report(what: &str, times: &[Duration], per: u32) {
    let at = |q: f64| {
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6 / f64::from(per))
    };
    println!("{what:<58} median {:>9.3} µs   p99 {:>9.3} µs   ({} runs)", at(0.5), at(0.99), times.len());
}

fn main() -> Result<(), Error> {
    let granted = ScopeSet::parse("crm.contacts.read")?;
    let budget = Duration::from_secs(10);

    // One decision, as each tools/call makes it, against a small and a large policy.
    const DECISIONS: u32 = 1000;
    for size in [3, 2000] {
        let p = policy(size)?;
        let times = measure(2000, budget, || {
            for _ in 0..DECISIONS {
                black_box(p.decide(black_box(&granted), Operation::CallTool(black_box("list_contacts"))));
            }
        });
        report(&format!("decide one tools/call, policy of {size} tools"), &times, DECISIONS);
    }

    // A 1,000-tool answer against the 2,000-tool policy: half of it is kept.
    let p = policy(2000)?;
    let answer = tools_list(1000);
    let bytes = answer.to_string();
    let mut kept = 0;
    let times = measure(500, budget, || {
        let mut message = answer.clone();
        kept = 1000 - filter_list_response(&mut message, ListKind::Tools, &p, &granted);
        black_box(message);
    });
    report("filter a 1,000-tool tools/list (already parsed, incl. a copy)", &times, 1);
    serde_json::from_str::<Value>(&bytes)?;
    let times = measure(500, budget, || {
        if let Ok(mut message) = serde_json::from_str::<Value>(&bytes) {
            filter_list_response(&mut message, ListKind::Tools, &p, &granted);
            black_box(message.to_string());
        }
    });
    report("parse, filter and write a 1,000-tool tools/list (a tree)", &times, 1);
    let mut written = 0;
    let times = measure(500, budget, || {
        written = filter_list_text(&bytes, ListKind::Tools, "7", &p, &granted, |names| {
            black_box(names.count());
        })
        .map_or(0, |text| black_box(text).len());
    });
    report("filter a 1,000-tool tools/list over its text (the gateway)", &times, 1);
    println!("answer: {} bytes, {kept} of 1000 tools kept; filtered over its text: {written} bytes", bytes.len());
    Ok(())
}
