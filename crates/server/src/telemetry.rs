//! Logging and traces: the `tracing` subscriber every command logs through, and, when
//! `[tracing] otlp_endpoint` is set, an OpenTelemetry layer that exports the data path's spans
//! over OTLP/HTTP (protobuf) in batches, off the request path.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, TracingConfig};

/// Flushes the spans still queued when dropped (at the end of the process).
pub struct TracesGuard(Option<SdkTracerProvider>);

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: the last spans could not be exported: {e}");
        }
    }
}

/// Installs the subscriber: log lines to standard error (text or JSON, `PORTCULLIS_LOG`
/// filtering), and the OTLP exporter when configured.
pub fn init(format: LogFormat, traces: &TracingConfig) -> anyhow::Result<TracesGuard> {
    // The log filter is the log's alone: what is logged does not decide what is traced.
    let filter = || tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().with_filter(filter()).boxed(),
        LogFormat::Text => fmt.with_filter(filter()).boxed(),
    };
    let Some(endpoint) = &traces.otlp_endpoint else {
        tracing_subscriber::registry().with(fmt).try_init().context("installing the logger")?;
        return Ok(TracesGuard(None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/')))
        .build()
        .context("building the OTLP exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(traces.sample_ratio))))
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(traces.service_name.clone()).build())
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("portcullis"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(fmt).with(layer).try_init().context("installing the logger")?;
    portcullis_telemetry::enable_tracing();
    Ok(TracesGuard(Some(provider)))
}
