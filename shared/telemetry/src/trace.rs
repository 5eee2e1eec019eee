//! Logs and traces. Traces go out over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the W3C trace context travels in
//! every event envelope so that one order is one trace.

use crate::LogFormat;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes pending spans when dropped at exit.
pub struct TraceGuard(Option<SdkTracerProvider>);

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Sets up the global subscriber. Safe to call more than once (tests).
pub fn init(service: &'static str, format: LogFormat) -> TraceGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(format!("payhub-{service}"))
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                eprintln!("payhub-{service}: OTLP exporter disabled: {e}");
                None
            }
        },
        _ => None,
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().compact()).try_init(),
    };
    TraceGuard(provider)
}

/// The current span's trace context, to put into an outgoing envelope.
pub fn current_context() -> payhub_core::events::TraceContext {
    let mut carrier: HashMap<String, String> = HashMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    payhub_core::events::TraceContext {
        traceparent: carrier.remove("traceparent"),
        tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
    }
}

/// Makes `span` a child of the trace an incoming envelope carries.
pub fn set_parent(span: &tracing::Span, tc: &payhub_core::events::TraceContext) {
    let Some(tp) = &tc.traceparent else { return };
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), tp.clone());
    if let Some(ts) = &tc.tracestate {
        carrier.insert("tracestate".into(), ts.clone());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}
