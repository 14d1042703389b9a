//! The KMS server's metrics (`kmsfs kms serve --metrics-listen ADDR`), in the Prometheus text
//! format on a listener of their own (unauthenticated, off by default): requests by operation
//! and status and their latency, counted by a middleware around every route; and, read at each
//! scrape, keys by status, replication lag per peer zone and the audit queue's depth.

use super::App;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Upper bounds of the request latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The spec's operation id (see [`operation_of`]).
    operation: &'static str,
    /// The HTTP status code.
    status: u16,
}

/// The labels of a latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// The server's metrics: the registry a scrape encodes, and the request counters the
/// middleware fills.
pub(crate) struct ServerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
}

impl ServerMetrics {
    /// The metrics of the server `app` serves.
    pub(crate) fn new(app: &Arc<App>) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "kmsfs_kms_requests",
            "API requests, by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "kmsfs_kms_request_duration_seconds",
            "Time to answer an API request, by operation",
            latency.clone(),
        );
        registry.register_collector(Box::new(StateCollector(app.clone())));
        Arc::new(ServerMetrics {
            registry,
            requests,
            latency,
        })
    }

    /// The metrics in the Prometheus text format.
    pub(crate) fn text(&self) -> Response {
        text_of(&self.registry)
    }
}

/// `registry` in the Prometheus text format (version 0.0.4), as an HTTP answer.
pub(crate) fn text_of(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// The middleware: counts and times every request by operation and status.
pub(crate) async fn track(
    State(metrics): State<Arc<ServerMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let operation = operation_of(
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&OperationLabels { operation })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            operation,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The spec's operation id of a request to the route `route` (`unknown` for a path no route
/// serves, `replica-push` for a peer zone's push).
fn operation_of(method: &Method, route: Option<&str>) -> &'static str {
    let Some(route) = route else {
        return "unknown";
    };
    let get = *method == Method::GET;
    match route.strip_prefix("/v2/kms-key") {
        Some("") if get => "list-kms-keys",
        Some("") => "create-kms-key",
        Some("/{id}") => "get-kms-key",
        Some("/{id}/rotate") => "rotate-kms-key",
        Some("/{id}/enable-key-rotation") => "enable-kms-key-rotation",
        Some("/{id}/disable-key-rotation") => "disable-kms-key-rotation",
        Some("/{id}/list-key-rotations") => "list-kms-key-rotations",
        Some("/{id}/enable") => "enable-kms-key",
        Some("/{id}/disable") => "disable-kms-key",
        Some("/{id}/schedule-deletion") => "schedule-kms-key-deletion",
        Some("/{id}/cancel-deletion") => "cancel-kms-key-deletion",
        Some("/{id}/replicate") => "replicate-kms-key",
        Some("/{id}/encrypt") => "encrypt",
        Some("/{id}/decrypt") => "decrypt",
        Some("/{id}/generate-data-key") => "generate-data-key",
        Some("/{id}/re-encrypt") => "re-encrypt",
        _ if route.starts_with("/v2/_peer/") => "replica-push",
        _ => "unknown",
    }
}

/// Serves `GET /metrics` of `metrics` on `listener` until the task is aborted.
pub(crate) fn spawn_listener(
    listener: tokio::net::TcpListener,
    metrics: Arc<ServerMetrics>,
) -> tokio::task::JoinHandle<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.text() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("the metrics listener stopped: {e}");
        }
    })
}

/// Reads the server's state at each scrape: keys by status, replication lag, audit queue.
struct StateCollector(Arc<App>);

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

/// What replication to one peer zone still has to do.
#[derive(Default)]
struct PeerLag {
    /// Replicas there that have not applied their primary's newest revision.
    keys: i64,
    /// Revisions not applied yet, over those keys.
    revisions: i64,
    /// Seconds since the oldest of those revisions was made.
    oldest_seconds: i64,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let app = &self.0;
        let zone = app.store.zone().to_string();
        let now = app.now();
        let mut by_status: BTreeMap<&'static str, i64> =
            ["enabled", "disabled", "pending-deletion"]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
        let mut lag: BTreeMap<String, PeerLag> = app
            .replication
            .as_ref()
            .map(|r| r.peers.zones())
            .unwrap_or_default()
            .into_iter()
            .map(|peer| (peer, PeerLag::default()))
            .collect();
        for org in app.store.orgs() {
            for key in org.keyring().list_keys(now) {
                *by_status.entry(key.status.as_str()).or_default() += 1;
                for replica in &key.replicas_status {
                    let behind = key
                        .revision
                        .seq
                        .saturating_sub(replica.last_applied_watermark);
                    let Some(peer) = lag.get_mut(&replica.zone) else {
                        continue;
                    };
                    if behind > 0 {
                        peer.keys += 1;
                        peer.revisions += i64::try_from(behind).unwrap_or(i64::MAX);
                        let age = (now - key.revision.at).whole_seconds().max(0);
                        peer.oldest_seconds = peer.oldest_seconds.max(age);
                    }
                }
            }
        }
        let mut keys = encoder.encode_descriptor(
            "kmsfs_kms_keys",
            "Keys held in this zone (primaries and replicas), by status",
            None,
            MetricType::Gauge,
        )?;
        for (status, count) in &by_status {
            let labels = [("zone", zone.as_str()), ("status", status)];
            ConstGauge::new(*count).encode(keys.encode_family(&labels)?)?;
        }
        for (name, help, value) in [
            (
                "kmsfs_kms_replication_lagging_keys",
                "Replicas in the peer zone that have not applied their primary's newest revision",
                (|l: &PeerLag| l.keys) as fn(&PeerLag) -> i64,
            ),
            (
                "kmsfs_kms_replication_lag_revisions",
                "Revisions of primaries here that the peer zone has not applied yet",
                |l: &PeerLag| l.revisions,
            ),
            (
                "kmsfs_kms_replication_lag_seconds",
                "Age of the oldest revision the peer zone has not applied yet (0: none)",
                |l: &PeerLag| l.oldest_seconds,
            ),
        ] {
            if lag.is_empty() {
                break;
            }
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (peer, peer_lag) in &lag {
                let labels = [("zone", zone.as_str()), ("peer", peer.as_str())];
                ConstGauge::new(value(peer_lag)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let queued = i64::try_from(app.audit.queued()).unwrap_or(i64::MAX);
        ConstGauge::new(queued).encode(encoder.encode_descriptor(
            "kmsfs_kms_audit_queue",
            "Audit records waiting to be written",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_the_spec_operation_id() {
        let post = Method::POST;
        let get = Method::GET;
        let cases = [
            (&get, "/v2/kms-key", "list-kms-keys"),
            (&post, "/v2/kms-key", "create-kms-key"),
            (&get, "/v2/kms-key/{id}", "get-kms-key"),
            (&post, "/v2/kms-key/{id}/rotate", "rotate-kms-key"),
            (
                &post,
                "/v2/kms-key/{id}/enable-key-rotation",
                "enable-kms-key-rotation",
            ),
            (
                &post,
                "/v2/kms-key/{id}/disable-key-rotation",
                "disable-kms-key-rotation",
            ),
            (
                &get,
                "/v2/kms-key/{id}/list-key-rotations",
                "list-kms-key-rotations",
            ),
            (&post, "/v2/kms-key/{id}/enable", "enable-kms-key"),
            (&post, "/v2/kms-key/{id}/disable", "disable-kms-key"),
            (
                &post,
                "/v2/kms-key/{id}/schedule-deletion",
                "schedule-kms-key-deletion",
            ),
            (
                &post,
                "/v2/kms-key/{id}/cancel-deletion",
                "cancel-kms-key-deletion",
            ),
            (&post, "/v2/kms-key/{id}/replicate", "replicate-kms-key"),
            (&post, "/v2/kms-key/{id}/encrypt", "encrypt"),
            (&post, "/v2/kms-key/{id}/decrypt", "decrypt"),
            (
                &post,
                "/v2/kms-key/{id}/generate-data-key",
                "generate-data-key",
            ),
            (&post, "/v2/kms-key/{id}/re-encrypt", "re-encrypt"),
            (&post, "/v2/_peer/replica", "replica-push"),
            (&post, "/v2/kms-key/{id}/frobnicate", "unknown"),
        ];
        for (method, route, operation) in cases {
            assert_eq!(
                operation_of(method, Some(route)),
                operation,
                "{method} {route}"
            );
        }
        assert_eq!(operation_of(&get, None), "unknown");
    }
}
