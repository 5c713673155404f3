//! Message-stream upstreams (a stdio child process, or a 2024-11-05 HTTP+SSE server) and the
//! bridge that serves them to Streamable HTTP clients.
//!
//! Each MCP session gets its own channel: a stdio child is never shared between users. Answers
//! are routed back to the POST that asked by JSON-RPC id; messages the server sends on its own
//! (notifications, sampling or elicitation requests) go to the newest open POST stream, else
//! to the session's GET stream, else wait in a small backlog for one to open.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::jsonrpc::{self, Kind};

/// Longest line a stdio server may write (one JSON-RPC message).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// Unsolicited messages kept while no stream is open to take them.
const BACKLOG: usize = 256;

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

/// What a channel delivers.
#[derive(Debug)]
pub enum Incoming {
    Message(Value),
    Closed(String),
}

/// A started upstream: messages go out on `outgoing`, come back on `incoming`. Dropping the
/// guard stops the upstream (kills the child, closes the SSE connection).
pub struct Channel {
    pub outgoing: mpsc::Sender<String>,
    pub incoming: mpsc::Receiver<Incoming>,
    pub guard: ChannelGuard,
}

/// Stops an upstream's tasks when dropped.
pub struct ChannelGuard {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot start {program:?}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("cannot reach {0}")]
    Connect(String),
    #[error("{0} did not announce its message endpoint")]
    NoEndpoint(String),
}

/// Spawns a stdio MCP server: newline-delimited JSON-RPC on stdin and stdout, stderr logged.
pub fn spawn_stdio(command: &StdioCommand, route: &str) -> Result<Channel, ChannelError> {
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

/// Connects to a 2024-11-05 HTTP+SSE server: a GET stream whose first event names the URL to
/// POST messages to. That URL must be on the same origin as the stream.
pub async fn connect_legacy_sse(
    http: &reqwest::Client,
    url: &url::Url,
    headers: &http::HeaderMap,
    connect_timeout: Duration,
) -> Result<Channel, ChannelError> {
    let response = tokio::time::timeout(
        connect_timeout,
        http.get(url.clone()).headers(headers.clone()).header(http::header::ACCEPT, "text/event-stream").send(),
    )
    .await
    .map_err(|_| ChannelError::Connect(url.to_string()))?
    .map_err(|_| ChannelError::Connect(url.to_string()))?;
    if !response.status().is_success() {
        return Err(ChannelError::Connect(format!("{url} (it answered {})", response.status())));
    }
    let mut events = sse_stream::SseByteStream::new(response.bytes_stream());
    let endpoint = loop {
        match tokio::time::timeout(connect_timeout, events.next()).await {
            Ok(Some(Ok(event))) if event.event.as_deref() == Some("endpoint") => {
                let target = event.data.unwrap_or_default();
                match url.join(target.trim()) {
                    Ok(e) if e.origin() == url.origin() => break e,
                    _ => return Err(ChannelError::NoEndpoint(url.to_string())),
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return Err(ChannelError::NoEndpoint(url.to_string())),
        }
    };
    let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
    let (in_tx, in_rx) = mpsc::channel::<Incoming>(64);
    let post_client = http.clone();
    let post_headers = headers.clone();
    let closed_tx = in_tx.clone();
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let result = post_client
                .post(endpoint.clone())
                .headers(post_headers.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(message)
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), "legacy SSE upstream refused a message"),
                Err(e) => {
                    let _ = closed_tx.send(Incoming::Closed(format!("the upstream could not be reached: {e}"))).await;
                    break;
                }
            }
        }
    });
    let reader = tokio::spawn(async move {
        let reason = loop {
            match events.next().await {
                Some(Ok(event)) if event.event.as_deref().is_none_or(|e| e == "message") => {
                    let Some(data) = event.data else { continue };
                    match serde_json::from_str::<Value>(&data) {
                        Ok(message) => {
                            if in_tx.send(Incoming::Message(message)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "legacy SSE upstream sent an event that is not JSON"),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break format!("the upstream's event stream broke: {e}"),
                None => break "the upstream closed its event stream".to_owned(),
            }
        };
        let _ = in_tx.send(Incoming::Closed(reason)).await;
    });
    Ok(Channel {
        outgoing: out_tx,
        incoming: in_rx,
        guard: ChannelGuard { tasks: vec![writer.abort_handle(), reader.abort_handle()] },
    })
}

/// What a POST stream receives.
#[derive(Debug)]
pub enum Delivery {
    Message(Value),
    Closed(String),
}

#[derive(Default)]
struct Routing {
    /// Request id → the stream waiting for its answer.
    pending: HashMap<String, u64>,
    /// Open POST streams, newest last, and whether each takes unsolicited messages.
    streams: Vec<(u64, mpsc::Sender<Delivery>, bool)>,
    get_stream: Option<mpsc::Sender<Delivery>>,
    backlog: VecDeque<Value>,
    closed: Option<String>,
}

/// One session's channel, shared by every request of that session.
pub struct ChannelSession {
    outgoing: mpsc::Sender<String>,
    routing: Mutex<Routing>,
    next_stream: AtomicU64,
    _guard: ChannelGuard,
    _permit: Option<OwnedSemaphorePermit>,
}

impl ChannelSession {
    /// Starts routing a channel's messages; `permit` is the session slot it holds.
    pub fn start(channel: Channel, permit: Option<OwnedSemaphorePermit>) -> Arc<Self> {
        let Channel { outgoing, mut incoming, guard } = channel;
        let session = Arc::new(Self {
            outgoing,
            routing: Mutex::new(Routing::default()),
            next_stream: AtomicU64::new(1),
            _guard: guard,
            _permit: permit,
        });
        let weak = Arc::downgrade(&session);
        tokio::spawn(async move {
            while let Some(incoming) = incoming.recv().await {
                let Some(session) = weak.upgrade() else { return };
                match incoming {
                    Incoming::Message(m) => session.dispatch(m).await,
                    Incoming::Closed(reason) => {
                        session.close(reason).await;
                        return;
                    }
                }
            }
        });
        session
    }

    pub fn closed_reason(&self) -> Option<String> {
        self.routing.lock().ok().and_then(|r| r.closed.clone())
    }

    async fn dispatch(&self, message: Value) {
        let target = {
            let Ok(mut routing) = self.routing.lock() else { return };
            let answered = match jsonrpc::classify(&message) {
                Ok(Kind::Response { id }) => routing.pending.remove(&jsonrpc::id_key(&id)),
                _ => None,
            };
            match answered {
                Some(stream) => routing.streams.iter().find(|(s, _, _)| *s == stream).map(|(_, tx, _)| tx.clone()),
                None => {
                    let newest =
                        routing.streams.iter().rev().find(|(_, _, events)| *events).map(|(_, tx, _)| tx.clone());
                    match newest.or_else(|| routing.get_stream.clone()) {
                        Some(tx) => Some(tx),
                        None => {
                            if routing.backlog.len() == BACKLOG {
                                routing.backlog.pop_front();
                                tracing::warn!("no client stream is open; an upstream message was dropped");
                            }
                            routing.backlog.push_back(message);
                            return;
                        }
                    }
                }
            }
        };
        if let Some(tx) = target {
            let _ = tx.send(Delivery::Message(message)).await;
        }
    }

    async fn close(&self, reason: String) {
        let targets: Vec<mpsc::Sender<Delivery>> = {
            let Ok(mut routing) = self.routing.lock() else { return };
            routing.closed = Some(reason.clone());
            routing.pending.clear();
            let mut all: Vec<_> = routing.streams.drain(..).map(|(_, tx, _)| tx).collect();
            all.extend(routing.get_stream.take());
            all
        };
        for tx in targets {
            let _ = tx.send(Delivery::Closed(reason.clone())).await;
        }
    }

    /// Sends client messages upstream; answers to `request_ids` arrive on the returned stream.
    /// `takes_events`: the client reads this POST as an event stream, so server messages that
    /// answer nothing may be delivered on it.
    pub async fn send(
        self: &Arc<Self>,
        messages: Vec<String>,
        request_ids: &[Value],
        takes_events: bool,
    ) -> Result<PostStream, String> {
        let (tx, rx) = mpsc::channel(64);
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        {
            let mut routing = self.routing.lock().map_err(|_| "session state is unusable".to_owned())?;
            if let Some(reason) = &routing.closed {
                return Err(reason.clone());
            }
            for id in request_ids {
                if routing.pending.contains_key(&jsonrpc::id_key(id)) {
                    return Err(format!("request id {id} is already in flight in this session"));
                }
            }
            for id in request_ids {
                routing.pending.insert(jsonrpc::id_key(id), stream_id);
            }
            if !request_ids.is_empty() {
                routing.streams.push((stream_id, tx.clone(), takes_events));
            }
        }
        let stream = PostStream { session: self.clone(), stream_id, receiver: rx, _sender: tx };
        for m in messages {
            if self.outgoing.send(m).await.is_err() {
                return Err(self.closed_reason().unwrap_or_else(|| "the upstream has stopped".to_owned()));
            }
        }
        Ok(stream)
    }

    /// Attaches the session's GET stream (replacing an earlier one), with the backlog first.
    pub fn attach_get_stream(&self) -> Result<(Vec<Value>, mpsc::Receiver<Delivery>), String> {
        let (tx, rx) = mpsc::channel(64);
        let mut routing = self.routing.lock().map_err(|_| "session state is unusable".to_owned())?;
        if let Some(reason) = &routing.closed {
            return Err(reason.clone());
        }
        routing.get_stream = Some(tx);
        Ok((routing.backlog.drain(..).collect(), rx))
    }

    fn forget(&self, stream_id: u64) {
        if let Ok(mut routing) = self.routing.lock() {
            routing.streams.retain(|(s, _, _)| *s != stream_id);
            routing.pending.retain(|_, s| *s != stream_id);
        }
    }
}

/// The answers to one POST; dropping it stops routing to it.
pub struct PostStream {
    session: Arc<ChannelSession>,
    stream_id: u64,
    receiver: mpsc::Receiver<Delivery>,
    /// Keeps the channel open even when the POST carried no requests.
    _sender: mpsc::Sender<Delivery>,
}

impl PostStream {
    pub async fn next(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }
}

impl Drop for PostStream {
    fn drop(&mut self) {
        self.session.forget(self.stream_id);
    }
}
