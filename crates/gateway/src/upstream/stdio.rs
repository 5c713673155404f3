//! The stdio transport: a local command, spawned once per MCP session (a child is never shared
//! between users), speaking newline-delimited JSON-RPC on stdin and stdout. Its messages go
//! through the channel bridge (`channel.rs`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};

use super::channel::{Channel, ChannelError, ChannelGuard, Incoming};

/// Longest line a stdio server may write (one JSON-RPC message).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How to start a stdio upstream.
#[derive(Debug, Clone)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    /// Only these variables (and `PATH`, `HOME`, `LANG`) reach the child: the gateway's own
    /// environment may hold its master key.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

/// Spawns a stdio MCP server: newline-delimited JSON-RPC on stdin and stdout, stderr logged.
pub fn spawn(command: &StdioCommand, route: &str) -> Result<Channel, ChannelError> {
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(command.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = &command.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|source| ChannelError::Spawn { program: command.program.clone(), source })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ChannelError::Spawn {
            program: command.program.clone(),
            source: std::io::Error::other("the child's standard streams were not captured"),
        });
    };
    let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
    let (in_tx, in_rx) = mpsc::channel::<Incoming>(64);
    let route = route.to_owned();

    let writer = tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.write_all(b"\n").await.is_err() {
                break;
            }
            if stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let log_route = route.clone();
    let stderr_task = tokio::spawn(async move {
        let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(64 * 1024));
        while let Some(line) = lines.next().await {
            match line {
                Ok(line) => tracing::info!(target: "portcullis::upstream", route = %log_route, "{line}"),
                Err(_) => break,
            }
        }
    });
    let reader_route = route.clone();
    let reader = tokio::spawn(async move {
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
        let reason = loop {
            match lines.next().await {
                Some(Ok(line)) if line.trim().is_empty() => {}
                Some(Ok(line)) => match serde_json::from_str::<Value>(&line) {
                    Ok(message) => {
                        if in_tx.send(Incoming::Message(message)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(route = %reader_route, error = %e, "upstream wrote a line that is not JSON")
                    }
                },
                Some(Err(e)) => break format!("the upstream's output could not be read: {e}"),
                None => break "the upstream process closed its output".to_owned(),
            }
        };
        let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Ok(status)) => format!("{reason} ({status})"),
            _ => reason,
        };
        tracing::warn!(route = %reader_route, "{status}");
        let _ = in_tx.send(Incoming::Closed(status)).await;
    });
    Ok(Channel {
        outgoing: out_tx,
        incoming: in_rx,
        guard: ChannelGuard { tasks: vec![writer.abort_handle(), stderr_task.abort_handle(), reader.abort_handle()] },
    })
}
