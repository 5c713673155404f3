//! The channel bridge: how message-stream upstreams (a stdio child, a 2024-11-05 HTTP+SSE
//! connection) are served to Streamable HTTP clients.
//!
//! Each MCP session gets its own channel: a stdio child is never shared between users. Answers
//! are routed back to the POST that asked by JSON-RPC id; messages the server sends on its own
//! (notifications, sampling or elicitation requests) go to the newest open POST stream, else
//! to the session's GET stream, else wait in a small backlog for one to open.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use futures_util::StreamExt;
use http::HeaderValue;
use serde_json::Value;
use sse_stream::{Sse, SseBody};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::Call;
use crate::auth::Principal;
use crate::filter::{ListFilter, ListKind};
use crate::jsonrpc::{self, Kind};
use crate::protocol::{Declared, EVENT_STREAM, accepts};
use crate::sessions::{Session, SessionUpstream};
use crate::{Gateway, GatewayError, Reply, ReplyStatus, Route, UpstreamSettings};

/// Unsolicited messages kept while no stream is open to take them.
const BACKLOG: usize = 256;

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
    pub(super) tasks: Vec<tokio::task::AbortHandle>,
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

impl Gateway {
    /// A decided POST over the session's channel; `initialize` opens one (and the session).
    /// Answers are collected into one JSON reply, or passed on as an event stream when the
    /// client takes one (with whatever else the server sends meanwhile).
    pub(super) async fn post_channel(&self, call: Call<'_>) -> Result<Reply, GatewayError> {
        if let Declared::Version(version) = call.version
            && version.is_stateless()
        {
            return Err(GatewayError::UnsupportedProtocolVersion(format!(
                "{version} (route {:?} bridges a session-based upstream; use 2025-11-25 or earlier)",
                call.route.settings.name
            )));
        }
        let first_id = call.first_id();
        let Call { route, principal, headers, messages, session, lists, request_ids, initialize, .. } = call;
        let (session, created) = match session {
            Some(s) => (s, false),
            None if initialize => (self.open_channel_session(route, principal, first_id.clone()).await?, true),
            None => return Err(GatewayError::SessionRequired),
        };
        let SessionUpstream::Channel(channel) = &session.upstream else {
            return Err(GatewayError::Internal("a channel route holds an HTTP session".into()));
        };
        let wants_events = accepts(headers, EVENT_STREAM) && !initialize;
        let lines: Vec<String> = messages.iter().map(Value::to_string).collect();
        let started = std::time::Instant::now();
        let mut answers = match channel.send(lines, &request_ids, wants_events).await {
            Ok(a) => {
                route.observed.answered();
                a
            }
            Err(reason) => {
                self.0.sessions.remove(&session.id);
                return Err(GatewayError::UpstreamUnavailable { message: reason, id: first_id });
            }
        };
        if request_ids.is_empty() {
            return Ok(Reply::accepted());
        }
        let session_id = created.then(|| session.id.clone());
        let timeout = route.settings.request_timeout;
        let filter = ListFilter::new(route, principal);
        let mut remaining: HashSet<String> = request_ids.iter().map(jsonrpc::id_key).collect();
        if !wants_events {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut collected = Vec::new();
            while !remaining.is_empty() {
                match tokio::time::timeout_at(deadline, answers.next()).await {
                    Ok(Some(Delivery::Message(mut m))) => {
                        if let Ok(Kind::Response { id }) = jsonrpc::classify(&m)
                            && remaining.remove(&jsonrpc::id_key(&id))
                        {
                            filter.apply(&mut m, &lists, false);
                            collected.push(m);
                        }
                    }
                    Ok(Some(Delivery::Closed(reason))) => {
                        self.0.sessions.remove(&session.id);
                        return Err(GatewayError::UpstreamUnavailable { message: reason, id: first_id });
                    }
                    Ok(None) => {
                        self.0.sessions.remove(&session.id);
                        return Err(GatewayError::UpstreamUnavailable {
                            message: "the upstream has stopped".into(),
                            id: first_id,
                        });
                    }
                    Err(_) => {
                        return Err(GatewayError::UpstreamTimeout { seconds: timeout.as_secs(), id: first_id });
                    }
                }
            }
            portcullis_telemetry::gateway_upstream_duration(&route.settings.name, started.elapsed().as_secs_f64());
            let body = if collected.len() == 1 && request_ids.len() == 1 {
                collected.remove(0)
            } else {
                Value::Array(collected)
            };
            return Ok(Reply::json(ReplyStatus::Ok, &body, session_id));
        }

        // An event stream: server messages and answers as they come, then the end. The
        // upstream's share counted is what it took to accept the messages.
        portcullis_telemetry::gateway_upstream_duration(&route.settings.name, started.elapsed().as_secs_f64());
        struct State {
            answers: PostStream,
            remaining: HashSet<String>,
            deadline: tokio::time::Instant,
            lists: HashMap<String, ListKind>,
            filter: ListFilter,
            seconds: u64,
            gateway: Gateway,
            session_id: String,
            pending_errors: Vec<Value>,
        }
        let state = State {
            answers,
            remaining,
            deadline: tokio::time::Instant::now() + timeout,
            lists,
            filter,
            seconds: timeout.as_secs(),
            gateway: self.clone(),
            session_id: session.id.clone(),
            pending_errors: Vec::new(),
        };
        let events = futures_util::stream::unfold(state, |mut st| async move {
            if let Some(e) = st.pending_errors.pop() {
                return Some((
                    Ok::<_, std::convert::Infallible>(Sse::default().event("message").data(e.to_string())),
                    st,
                ));
            }
            if st.remaining.is_empty() {
                return None;
            }
            let fail_all = |st: &mut State, code: i64, message: &str| {
                let ids: Vec<String> = st.remaining.drain().collect();
                st.pending_errors = ids
                    .iter()
                    .filter_map(|k| serde_json::from_str::<Value>(k).ok())
                    .map(|id| jsonrpc::error_response(Some(&id), code, message))
                    .collect();
            };
            match tokio::time::timeout_at(st.deadline, st.answers.next()).await {
                Ok(Some(Delivery::Message(mut m))) => {
                    if let Ok(Kind::Response { id }) = jsonrpc::classify(&m) {
                        st.remaining.remove(&jsonrpc::id_key(&id));
                        st.filter.apply(&mut m, &st.lists, false);
                    }
                    Some((Ok(Sse::default().event("message").data(m.to_string())), st))
                }
                Ok(Some(Delivery::Closed(reason))) => {
                    st.gateway.0.sessions.remove(&st.session_id);
                    fail_all(
                        &mut st,
                        jsonrpc::UPSTREAM_ERROR,
                        &format!("the upstream MCP server is unavailable: {reason}"),
                    );
                    let first = st.pending_errors.pop()?;
                    Some((Ok(Sse::default().event("message").data(first.to_string())), st))
                }
                Ok(None) => None,
                Err(_) => {
                    let message = format!("the upstream MCP server did not answer within {} s", st.seconds);
                    fail_all(&mut st, jsonrpc::REQUEST_TIMEOUT, &message);
                    let first = st.pending_errors.pop()?;
                    Some((Ok(Sse::default().event("message").data(first.to_string())), st))
                }
            }
        });
        Ok(Reply {
            status: ReplyStatus::Ok,
            content_type: Some(HeaderValue::from_static(EVENT_STREAM)),
            session_id,
            body: Body::new(SseBody::new(events)),
        })
    }

    /// The session's GET stream over its channel: what waited in the backlog, then what the
    /// server sends as it comes (lists filtered by their shape).
    pub(super) fn listen_channel(
        &self,
        route: &Route,
        principal: &Principal,
        session: Arc<Session>,
    ) -> Result<Reply, GatewayError> {
        let SessionUpstream::Channel(channel) = &session.upstream else {
            return Err(GatewayError::Internal("a channel route holds an HTTP session".into()));
        };
        let (backlog, receiver) = channel.attach_get_stream().map_err(|message| {
            self.0.sessions.remove(&session.id);
            GatewayError::UpstreamUnavailable { message, id: None }
        })?;
        let filter = ListFilter::new(route, principal);
        let lists = HashMap::new();
        let backlog = futures_util::stream::iter(backlog.into_iter().map(Delivery::Message));
        let live = futures_util::stream::unfold(receiver, |mut rx| async move {
            match rx.recv().await {
                Some(Delivery::Message(m)) => Some((Delivery::Message(m), rx)),
                Some(Delivery::Closed(_)) | None => None,
            }
        });
        let events = backlog.chain(live).map(move |delivery| {
            let Delivery::Message(mut m) = delivery else {
                return Ok::<_, std::convert::Infallible>(Sse::default().event("message").data("{}"));
            };
            filter.apply(&mut m, &lists, true);
            Ok(Sse::default().event("message").data(m.to_string()))
        });
        Ok(Reply {
            status: ReplyStatus::Ok,
            content_type: Some(HeaderValue::from_static(EVENT_STREAM)),
            session_id: None,
            body: Body::new(SseBody::new(events)),
        })
    }

    /// Opens the route's channel for a new session (a child, or a connection), within the
    /// route's session slots.
    async fn open_channel_session(
        &self,
        route: &Route,
        principal: &Principal,
        id: Option<Value>,
    ) -> Result<Arc<Session>, GatewayError> {
        let permit = route.slots.clone().try_acquire_owned().map_err(|_| GatewayError::TooManySessions)?;
        let channel = match &route.settings.upstream {
            UpstreamSettings::Stdio(command) => super::stdio::spawn(command, &route.settings.name),
            UpstreamSettings::LegacySse { url } => {
                super::legacy_sse::connect(&self.0.legacy_http, url, &route.headers, route.settings.connect_timeout)
                    .await
            }
            UpstreamSettings::StreamableHttp { .. } => {
                return Err(GatewayError::Internal("an HTTP route has no channel".into()));
            }
        }
        .map_err(|e| {
            tracing::warn!(route = %route.settings.name, error = %e, "upstream could not be started");
            GatewayError::UpstreamUnavailable { message: e.to_string(), id }
        })?;
        let channel = ChannelSession::start(channel, Some(permit));
        let session = Session::new(&route.settings.name, principal, SessionUpstream::Channel(channel))
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let session = Arc::new(session);
        self.0.sessions.insert(session.clone());
        Ok(session)
    }
}
