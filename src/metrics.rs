//! Prometheus metrics: requests and latency per endpoint, tokens issued and refused by reason.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub grant_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntrospectionLabels {
    pub active: bool,
}

type HistogramCtor = fn() -> Histogram;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram, HistogramCtor>,
    pub tokens_issued: Family<GrantLabels, Counter>,
    pub tokens_refused: Family<RefusalLabels, Counter>,
    pub introspections: Family<IntrospectionLabels, Counter>,
    pub revocation_store_failures: Counter,
    /// Audit events committed by the batch writer, its transactions, and failed batches.
    pub audit_events: Counter,
    pub audit_batches: Counter,
    pub audit_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mandate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram, HistogramCtor>::new_with_constructor(
            latency_histogram as HistogramCtor,
        );
        let tokens_issued = Family::<GrantLabels, Counter>::default();
        let tokens_refused = Family::<RefusalLabels, Counter>::default();
        let introspections = Family::<IntrospectionLabels, Counter>::default();
        let revocation_store_failures = Counter::default();
        let (audit_events, audit_batches, audit_failures) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "audit_events_written",
            "Audit events committed by the batch writer",
            audit_events.clone(),
        );
        registry.register(
            "audit_batches",
            "Audit batch transactions committed",
            audit_batches.clone(),
        );
        registry.register(
            "audit_batch_failures",
            "Audit batches that could not be written (their requests failed)",
            audit_failures.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint",
            latency.clone(),
        );
        registry.register(
            "tokens_issued",
            "Access tokens issued",
            tokens_issued.clone(),
        );
        registry.register(
            "tokens_refused",
            "Token requests refused, by OAuth error code",
            tokens_refused.clone(),
        );
        registry.register(
            "introspections",
            "Introspection answers",
            introspections.clone(),
        );
        registry.register(
            "revocation_store_failures",
            "Times the revocation store could not answer (requests failed closed)",
            revocation_store_failures.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tokens_issued,
            tokens_refused,
            introspections,
            revocation_store_failures,
            audit_events,
            audit_batches,
            audit_failures,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
