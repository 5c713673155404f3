//! The 2024-11-05 HTTP+SSE transport: one GET event stream per MCP session, whose first event
//! names the URL to POST messages to. Its messages go through the channel bridge
//! (`channel.rs`).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::channel::{Channel, ChannelError, ChannelGuard, Incoming};

/// Connects to a 2024-11-05 HTTP+SSE server: a GET stream whose first event names the URL to
/// POST messages to. That URL must be on the same origin as the stream.
pub async fn connect(
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
