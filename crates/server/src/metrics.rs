//! Prometheus metrics on a listener of their own (`[metrics] listen`): what the workspace
//! records through `portcullis-telemetry`, rendered by metrics-exporter-prometheus. Kept off
//! the public listener so that scraping needs no token and exposes nothing to clients.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// The process's one recorder: installed by the first server that wants metrics (a process
/// may start several servers in tests; they share it).
fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for name in portcullis_telemetry::LATENCY_HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), portcullis_telemetry::LATENCY_BUCKETS)
            .context("histogram buckets")?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Only the first installation succeeds; a racing second one keeps the first's handle.
    if metrics::set_global_recorder(recorder).is_ok() {
        portcullis_telemetry::describe();
        let _ = HANDLE.set(handle.clone());
    }
    HANDLE.get().cloned().context("the metrics recorder was installed by someone else")
}

/// What a scrape reads besides the recorder: gauges set from live state at that moment.
#[derive(Clone)]
pub struct Sources {
    pub gateway: Option<portcullis_gateway::Gateway>,
    pub feed: portcullis_control::ChangeFeed,
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    sources: Sources,
}

async fn render(State(scrape): State<Scrape>) -> impl IntoResponse {
    if let Some(gateway) = &scrape.sources.gateway {
        gateway.report_load();
    }
    scrape.sources.feed.report();
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], scrape.handle.render())
}

/// Serves `/metrics` on `listen` until `stop`; returns the address it listens on.
pub async fn serve(
    listen: SocketAddr,
    sources: Sources,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let handle = recorder()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .with_state(Scrape { handle: handle.clone(), sources });
    let mut upkeep_stop = stop.clone();
    tokio::spawn(async move {
        // Histograms keep their buckets; upkeep keeps the recorder's internal buffers small.
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => handle.run_upkeep(),
                _ = upkeep_stop.changed() => return,
            }
        }
    });
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(addr)
}
