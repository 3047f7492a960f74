//! Prometheus metrics (`/metrics` on the debug address), with istiod's names where the meaning
//! is the same:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `pilot_xds` | gauge | connected ADS streams (Envoys) |
//! | `pilot_xds_pushes{type}` | counter | xDS responses sent, per type (`cds`, `eds`, `lds`, `rds`, `sds`) |
//! | `pilot_xds_push_time{type}` | histogram | seconds from the event that caused a response (a request or a new snapshot) to the response being handed to the stream |
//! | `pilot_xds_config_size_bytes{type}` | histogram | encoded size of each response |
//! | `pilot_total_xds_rejects{type}` | counter | responses an Envoy NACKed |
//! | `pilot_proxy_convergence_time` | histogram | seconds from the hub translating a generation (or the Envoy connecting, if later) to that Envoy ACKing every type of it |
//! | `pilot_services` | gauge | Kubernetes Services known |
//! | `knative_pilot_xds_acks{type}` | counter | responses ACKed |
//! | `knative_pilot_inputs{kind}` | gauge | input objects by kind |
//! | `knative_pilot_input_errors` | gauge | input problems currently reported (objects left out or kept at their last good version) |
//! | `knative_pilot_generation` | gauge | generation of the inputs last translated |
//! | `knative_pilot_label_sets` | gauge | proxy label sets with a translation kept up to date (the gateways' included; at most `--xds-max-label-sets` more) |
//! | `knative_pilot_xds_auth_failures{reason}` | counter | streams / TLS handshakes refused: `tls_handshake`, `no_credentials`, `bad_certificate`, `token_rejected`, `token_unverifiable`, `bad_authorization`, `node_mismatch` |
//! | `knative_pilot_sds_denied{reason}` | counter | secrets not sent to a stream (once per stream and secret): `unauthenticated`, `other_namespace`, `not_permitted`, `unsupported_name` |
//!
//! The exposition is the Prometheus text format (0.0.4), as istiod serves it: counters keep their
//! exact names (`pilot_xds_pushes{type="cds"}`, not OpenMetrics' `pilot_xds_pushes_total`), so
//! dashboards and alerts written for istiod work unchanged. Gauges about state (connections,
//! inputs) are read from the hub and the connection registry when scraped, so they are never
//! stale.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::hub::Hub;
use crate::model::Kind;
use crate::xds::conn::NackStatus;
use crate::xds::observe::{Push, StreamObserver};
pub use crate::xds::resource::type_short;
use crate::xds::server::ConnectionRegistry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn type_label(type_url: &str) -> Labels {
    vec![("type", type_short(type_url).to_string())]
}

fn time_histogram() -> Histogram {
    // 0.5 ms .. ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

fn size_histogram() -> Histogram {
    // 256 B .. 64 MiB
    Histogram::new(exponential_buckets(256.0, 4.0, 10))
}

/// A counter exposed under its exact name, as istiod's are: `# TYPE name counter` and samples
/// `name{...} N` (prometheus-client's own counter always appends OpenMetrics' `_total`).
#[derive(Debug, Default, Clone)]
pub struct PlainCounter(Counter);

impl PlainCounter {
    pub fn inc(&self) {
        self.0.inc();
    }
}

impl TypedMetric for PlainCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for PlainCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The gauge encoding writes the sample under the bare name.
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// All metrics of one server.
pub struct Metrics {
    registry: Registry,
    xds_connected: Gauge,
    pushes: Family<Labels, PlainCounter>,
    push_time: HistogramFamily,
    config_size: HistogramFamily,
    rejects: Family<Labels, PlainCounter>,
    acks: Family<Labels, PlainCounter>,
    convergence: Histogram,
    services: Gauge,
    inputs: Family<Labels, Gauge>,
    input_errors: Gauge,
    generation: Gauge,
    label_sets: Gauge,
    auth_failures: Family<Labels, PlainCounter>,
    sds_denied: Family<Labels, PlainCounter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let xds_connected = Gauge::default();
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS",
            xds_connected.clone(),
        );
        let pushes = Family::<Labels, PlainCounter>::default();
        registry.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds",
            pushes.clone(),
        );
        let push_time: HistogramFamily = Family::new_with_constructor(time_histogram);
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds",
            push_time.clone(),
        );
        let config_size: HistogramFamily = Family::new_with_constructor(size_histogram);
        registry.register(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            config_size.clone(),
        );
        let rejects = Family::<Labels, PlainCounter>::default();
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy",
            rejects.clone(),
        );
        let convergence = time_histogram();
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration",
            convergence.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "pilot_services",
            "Total services known to pilot",
            services.clone(),
        );
        let acks = Family::<Labels, PlainCounter>::default();
        registry.register(
            "knative_pilot_xds_acks",
            "xDS responses ACKed by proxies",
            acks.clone(),
        );
        let inputs = Family::<Labels, Gauge>::default();
        registry.register(
            "knative_pilot_inputs",
            "Input objects currently known, by kind",
            inputs.clone(),
        );
        let input_errors = Gauge::default();
        registry.register(
            "knative_pilot_input_errors",
            "Input problems currently reported (objects left out or kept at their last good version)",
            input_errors.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "knative_pilot_generation",
            "Generation of the inputs last translated",
            generation.clone(),
        );
        let label_sets = Gauge::default();
        registry.register(
            "knative_pilot_label_sets",
            "Proxy label sets with a translation kept up to date (the gateways' included)",
            label_sets.clone(),
        );
        let auth_failures = Family::<Labels, PlainCounter>::default();
        registry.register(
            "knative_pilot_xds_auth_failures",
            "ADS streams and TLS handshakes refused, by reason",
            auth_failures.clone(),
        );
        let sds_denied = Family::<Labels, PlainCounter>::default();
        registry.register(
            "knative_pilot_sds_denied",
            "Secrets not sent to an ADS stream (once per stream and secret), by reason",
            sds_denied.clone(),
        );
        Metrics {
            registry,
            xds_connected,
            pushes,
            push_time,
            config_size,
            rejects,
            acks,
            convergence,
            services,
            inputs,
            input_errors,
            generation,
            label_sets,
            auth_failures,
            sds_denied,
        }
    }

    /// A stream or TLS handshake refused (`reason`: see the module table).
    pub fn record_auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A secret not sent to a stream.
    pub fn record_secret_denied(&self, reason: &str) {
        self.sds_denied
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// One xDS response handed to a stream.
    pub fn record_push(&self, type_url: &str, bytes: usize, elapsed: Duration) {
        let l = type_label(type_url);
        self.pushes.get_or_create(&l).inc();
        self.config_size.get_or_create(&l).observe(bytes as f64);
        self.push_time
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_ack(&self, type_url: &str) {
        self.acks.get_or_create(&type_label(type_url)).inc();
    }

    pub fn record_reject(&self, type_url: &str) {
        self.rejects.get_or_create(&type_label(type_url)).inc();
    }

    pub fn record_convergence(&self, elapsed: Duration) {
        self.convergence.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition (format 0.0.4), state gauges refreshed first.
    pub fn render(&self, hub: &Hub, connections: &ConnectionRegistry) -> Result<String, String> {
        self.xds_connected.set(connections.len() as i64);
        let inputs = hub.raw_inputs();
        let mut by_kind: BTreeMap<Kind, i64> = BTreeMap::new();
        for (k, _) in inputs.iter() {
            *by_kind.entry(k.kind).or_default() += 1;
        }
        self.inputs.clear();
        for (kind, n) in &by_kind {
            self.inputs
                .get_or_create(&vec![("kind", kind.to_string())])
                .set(*n);
        }
        self.services
            .set(by_kind.get(&Kind::Service).copied().unwrap_or(0));
        self.input_errors.set(hub.errors().len() as i64);
        self.generation
            .set(i64::try_from(hub.generation()).unwrap_or(i64::MAX));
        self.label_sets
            .set(i64::try_from(hub.label_sets()).unwrap_or(i64::MAX));
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).map_err(|e| format!("encoding metrics: {e}"))?;
        Ok(sort_samples(&out))
    }
}

/// The ADS shell reports its streams' events here (see [`crate::xds::observe`]).
impl StreamObserver for Metrics {
    fn auth_failed(&self, reason: &str) {
        self.record_auth_failure(reason);
    }

    fn secret_denied(&self, reason: &str) {
        self.record_secret_denied(reason);
    }

    fn pushed(&self, p: &Push<'_>) {
        self.record_push(p.type_url, p.bytes, p.push_time);
    }

    fn acked(&self, type_url: &str, _version: &str) {
        self.record_ack(type_url);
    }

    fn nacked(&self, type_url: &str, _nack: &NackStatus) {
        self.record_reject(type_url);
    }

    fn converged(&self, _generation: u64, elapsed: Duration) {
        self.record_convergence(elapsed);
    }
}

/// The label set of a sample line without `le` (histogram buckets of one series stay together).
fn series_key(line: &str) -> String {
    let Some(open) = line.find('{') else {
        return String::new();
    };
    let close = line[open..].find('}').map_or(line.len(), |c| open + c);
    line[open + 1..close]
        .split(',')
        .filter(|l| !l.starts_with("le="))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sorts the series of every metric family by their labels (prometheus-client keeps label sets
/// in a hash map), keeping each series' lines together and in order, so that a scrape is
/// deterministic.
fn sort_samples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut series: Vec<(String, Vec<&str>)> = Vec::new();
    let flush = |series: &mut Vec<(String, Vec<&str>)>, out: &mut String| {
        series.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, lines) in series.drain(..) {
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut series, &mut out);
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let key = series_key(line);
        match series.last_mut() {
            Some((k, lines)) if *k == key => lines.push(line),
            _ => series.push((key, vec![line])),
        }
    }
    flush(&mut series, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_sorted_and_buckets_stay_together() {
        let text = "# TYPE a counter\na_total{type=\"rds\"} 1\na_total{type=\"cds\"} 2\n\
                    # TYPE h histogram\nh_sum{type=\"lds\"} 1\nh_count{type=\"lds\"} 1\n\
                    h_bucket{le=\"1\",type=\"lds\"} 1\nh_sum{type=\"cds\"} 2\n\
                    h_count{type=\"cds\"} 1\nh_bucket{le=\"1\",type=\"cds\"} 1\n# EOF\n";
        let sorted = sort_samples(text);
        assert_eq!(
            sorted,
            "# TYPE a counter\na_total{type=\"cds\"} 2\na_total{type=\"rds\"} 1\n\
             # TYPE h histogram\nh_sum{type=\"cds\"} 2\nh_count{type=\"cds\"} 1\n\
             h_bucket{le=\"1\",type=\"cds\"} 1\nh_sum{type=\"lds\"} 1\nh_count{type=\"lds\"} 1\n\
             h_bucket{le=\"1\",type=\"lds\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn pushes_acks_and_rejects_are_counted_per_type() {
        let m = Metrics::new();
        m.record_push(crate::xds::ROUTE, 100, Duration::from_millis(2));
        m.record_push(crate::xds::ROUTE, 50, Duration::from_millis(1));
        m.record_push(crate::xds::CLUSTER, 10, Duration::from_millis(1));
        m.record_reject(crate::xds::ROUTE);
        let hub = Hub::new(crate::translate::Options::default());
        let text = m.render(&hub, &ConnectionRegistry::new()).unwrap();
        assert!(
            text.contains("pilot_xds_pushes{type=\"rds\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("pilot_xds_pushes{type=\"cds\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pilot_xds_config_size_bytes_sum{type=\"rds\"} 150.0\n"),
            "{text}"
        );
        assert!(
            text.contains("pilot_total_xds_rejects{type=\"rds\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pilot_xds 0\n"), "{text}");
        assert!(text.contains("# TYPE pilot_xds_pushes counter\n"), "{text}");
        assert!(
            !text.lines().filter(|l| !l.starts_with('#')).any(|l| l
                .split(['{', ' '])
                .next()
                .unwrap_or("")
                .ends_with("_total")),
            "istiod's names, no OpenMetrics suffix: {text}"
        );
        assert!(
            !text.contains("# EOF"),
            "Prometheus text format, not OpenMetrics"
        );
        let again = m.render(&hub, &ConnectionRegistry::new()).unwrap();
        assert_eq!(text, again);
    }
}
