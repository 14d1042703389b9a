//! What a running mount daemon tells about itself: its status ([`MountStatus`], answered on
//! the control socket for `kmsfs status`) and, with `--metrics-listen`, the same counters in
//! the Prometheus text format. Both read one snapshot of the counters of [`crate::fs::stats`],
//! the DEK cache and the logged errors.

use super::control::{self, Request};
use super::logging::{self, LogFormat, LoggedError};
use crate::cache::CacheStats;
use crate::config::{CipherConfig, KmsConfig};
use crate::fs::CryptFs;
use crate::fs::stats::{KmsOperationSnapshot, RequestCounters, RequestSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The observability options of `kmsfs mount`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ObserveArgs {
    /// Serve the mount's counters in the Prometheus text format at http://ADDR/metrics
    /// (unauthenticated; off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines as text (the default) or one JSON object a line, each naming the mount.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// Which KMS a mount uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KmsUsed {
    /// The embedded KMS over a keystore file.
    Embedded {
        /// The keystore.
        keystore: PathBuf,
    },
    /// A remote KMS.
    Remote {
        /// Its API base URL.
        url: String,
    },
}

/// What the daemon knows of its mount before it starts.
#[derive(Debug, Clone)]
pub struct Observe {
    args: ObserveArgs,
    kms: KmsUsed,
    key_id: Uuid,
}

impl Observe {
    /// The options `args` for a mount of the directory configured by `config` (the keystore
    /// already the one the mount uses).
    pub fn new(args: &ObserveArgs, config: &CipherConfig) -> Self {
        let kms = match &config.kms {
            KmsConfig::Embedded { keystore } => KmsUsed::Embedded {
                keystore: std::fs::canonicalize(keystore).unwrap_or_else(|_| keystore.clone()),
            },
            // Every endpoint of the zone, comma-separated as `--kms` takes them.
            KmsConfig::Remote {
                endpoint,
                endpoints,
            } => KmsUsed::Remote {
                url: if endpoints.is_empty() {
                    endpoint.clone()
                } else {
                    endpoints.join(",")
                },
            },
        };
        Observe {
            args: args.clone(),
            kms,
            key_id: config.key_id,
        }
    }

    /// Starts answering on the control socket and, if asked, serving metrics, once the mount
    /// at `mountpoint` of `cipherdir` is live. A metrics address that cannot be bound is an
    /// error (the user asked for it); a control socket that cannot be set up is logged.
    pub fn start(
        &self,
        fs: &Arc<CryptFs>,
        requests: Arc<RequestCounters>,
        cipherdir: &Path,
        mountpoint: &Path,
    ) -> Result<Observer, String> {
        let source = Arc::new(Source {
            fs: fs.clone(),
            requests,
            cipherdir: cipherdir.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            kms: self.kms.clone(),
            key_id: self.key_id,
            metrics_listen: self.args.metrics_listen,
            key: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        });
        if let Some(addr) = self.args.metrics_listen {
            serve_metrics(addr, source.clone())
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
        }
        source.refresh_key();
        let socket = match control::bind(mountpoint) {
            Ok((listener, path)) => {
                let answering = source.clone();
                control::serve(listener, move |request| match request {
                    Request::Status => serde_json::to_value(answering.status())
                        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
                });
                Some(path)
            }
            Err(e) => {
                tracing::warn!("{e}; `kmsfs status` will not reach this mount");
                None
            }
        };
        Ok(Observer { socket })
    }
}

/// A running observer; dropping it (at unmount) removes the control socket.
pub struct Observer {
    socket: Option<PathBuf>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The key's newest material as last asked of the KMS.
#[derive(Debug, Clone)]
struct KeySeen {
    version: u32,
    status: String,
    at: Instant,
}

/// How old the key's version may be before a status request asks the KMS again.
const KEY_REFRESH: Duration = Duration::from_secs(60);

/// What a status or a scrape reads.
struct Source {
    fs: Arc<CryptFs>,
    requests: Arc<RequestCounters>,
    cipherdir: PathBuf,
    mountpoint: PathBuf,
    kms: KmsUsed,
    key_id: Uuid,
    metrics_listen: Option<SocketAddr>,
    key: Mutex<Option<KeySeen>>,
    refreshing: AtomicBool,
}

impl Source {
    /// Asks the KMS for the key's newest version in the background (never while a status
    /// waits: a KMS that is down must not make the daemon look hung).
    fn refresh_key(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let source = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsfs-key-info".into())
            .spawn(move || {
                match source.fs.keys().kms().get_key(source.key_id) {
                    Ok(key) => {
                        *source.key.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(KeySeen {
                                version: key.material.version,
                                status: key.status.as_str().to_string(),
                                at: Instant::now(),
                            });
                    }
                    Err(e) => tracing::warn!("cannot ask the KMS for key {}: {e}", source.key_id),
                }
                source.refreshing.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.refreshing.store(false, Ordering::Release);
        }
    }

    fn status(self: &Arc<Self>) -> MountStatus {
        let key = self
            .key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if key.as_ref().is_none_or(|k| k.at.elapsed() > KEY_REFRESH) {
            self.refresh_key();
        }
        let cache = self.fs.keys().cache();
        let requests = self.requests.snapshot();
        MountStatus {
            mountpoint: self.mountpoint.clone(),
            cipherdir: self.cipherdir.clone(),
            pid: std::process::id(),
            kms: self.kms.clone(),
            key_id: self.key_id,
            key_version: key.as_ref().map(|k| k.version),
            key_status: key.map(|k| k.status),
            uptime_seconds: self.requests.uptime().as_secs(),
            open_files: self.fs.open_files() as u64,
            dek_cache: DekCacheStatus {
                stats: cache.stats(),
                entries: cache.len() as u64,
            },
            errors: ErrorStatus {
                eio: requests.eio,
                logged: logging::errors_logged(),
                last: logging::last_error(),
            },
            requests,
            kms_calls: self.fs.keys().kms_meter().snapshot(),
            metrics_listen: self.metrics_listen,
            control_socket: control::socket_path(&self.mountpoint),
        }
    }
}

/// A mount's status as its daemon tells it (`kmsfs status --json`; field names are stable).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MountStatus {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// The cipher directory.
    pub cipherdir: PathBuf,
    /// The daemon's process id.
    pub pid: u32,
    /// The KMS.
    pub kms: KmsUsed,
    /// The key that wraps new files' DEKs.
    pub key_id: Uuid,
    /// Its newest material version, as last asked of the KMS (none yet, or the KMS failed).
    pub key_version: Option<u32>,
    /// Its status, likewise.
    pub key_status: Option<String>,
    /// Seconds since the mount started.
    pub uptime_seconds: u64,
    /// Regular files open.
    pub open_files: u64,
    /// The DEK cache.
    pub dek_cache: DekCacheStatus,
    /// FUSE requests served.
    pub requests: RequestSnapshot,
    /// KMS calls by operation.
    pub kms_calls: Vec<KmsOperationSnapshot>,
    /// EIO answers and errors logged.
    pub errors: ErrorStatus,
    /// Where metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The control socket this answer came through.
    pub control_socket: PathBuf,
}

/// The DEK cache's counters and size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DekCacheStatus {
    /// Hits, misses, evictions, expirations.
    #[serde(flatten, with = "CacheStatsDef")]
    pub stats: CacheStats,
    /// Entries held.
    pub entries: u64,
}

/// [`CacheStats`] as the status writes it.
#[derive(Serialize, Deserialize)]
#[serde(remote = "CacheStats")]
struct CacheStatsDef {
    hits: u64,
    misses: u64,
    evictions: u64,
    expirations: u64,
}

/// Errors: EIO answers and error lines logged, with the last one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ErrorStatus {
    /// Requests answered EIO.
    pub eio: u64,
    /// Error lines logged.
    pub logged: u64,
    /// The last error line: when, what, the file and block.
    pub last: Option<LoggedError>,
}

/// Serves `GET /metrics` on `addr` from a thread of its own (bound before this returns).
fn serve_metrics(addr: SocketAddr, source: Arc<Source>) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MountCollector(source)));
    let registry = Arc::new(registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("kmsfs-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::warn!("cannot serve metrics: {e}");
                        return;
                    }
                };
                let router = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let registry = registry.clone();
                        async move { crate::server::metrics::text_of(&registry) }
                    }),
                );
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!("the metrics listener stopped: {e}");
                }
            });
        })?;
    Ok(())
}

/// Encodes a status snapshot at each scrape.
struct MountCollector(Arc<Source>);

impl std::fmt::Debug for MountCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MountCollector")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    value: i64,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric.encode_family(&labels)?)
}

impl Collector for MountCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let status = self.0.status();
        let mount = status.mountpoint.display().to_string();
        let at: &[(&str, &str)] = &[("mount", mount.as_str())];
        let e = &mut encoder;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            e,
            "kmsfs_mount_uptime_seconds",
            "Seconds since the mount started",
            at,
            as_i64(status.uptime_seconds),
        )?;
        gauge(
            e,
            "kmsfs_mount_open_files",
            "Regular files open on the mount",
            at,
            as_i64(status.open_files),
        )?;
        gauge(
            e,
            "kmsfs_dek_cache_entries",
            "Unwrapped DEKs held in the cache",
            at,
            as_i64(status.dek_cache.entries),
        )?;
        let cache = status.dek_cache.stats;
        counter(
            e,
            "kmsfs_dek_cache_hits",
            "DEK cache lookups answered from the cache",
            &[(at, cache.hits)],
        )?;
        counter(
            e,
            "kmsfs_dek_cache_misses",
            "DEK cache lookups that needed the KMS",
            &[(at, cache.misses)],
        )?;
        counter(
            e,
            "kmsfs_dek_cache_evictions",
            "DEK cache entries pushed out by capacity",
            &[(at, cache.evictions)],
        )?;
        counter(
            e,
            "kmsfs_dek_cache_expirations",
            "DEK cache entries dropped by age",
            &[(at, cache.expirations)],
        )?;
        let by_operation: Vec<([(&str, &str); 2], u64)> = status
            .requests
            .by_operation
            .iter()
            .map(|(op, n)| ([("mount", mount.as_str()), ("operation", op.as_str())], *n))
            .collect();
        let by_operation: Vec<(&[(&str, &str)], u64)> =
            by_operation.iter().map(|(l, n)| (&l[..], *n)).collect();
        counter(
            e,
            "kmsfs_fuse_requests",
            "FUSE requests served, by operation",
            &by_operation,
        )?;
        counter(
            e,
            "kmsfs_fuse_eio",
            "FUSE requests answered EIO",
            &[(at, status.errors.eio)],
        )?;
        counter(
            e,
            "kmsfs_errors_logged",
            "Error lines the daemon logged",
            &[(at, status.errors.logged)],
        )?;
        let calls: Vec<([(&str, &str); 2], &KmsOperationSnapshot)> = status
            .kms_calls
            .iter()
            .map(|c| {
                (
                    [
                        ("mount", mount.as_str()),
                        ("operation", c.operation.as_str()),
                    ],
                    c,
                )
            })
            .collect();
        let totals: Vec<(&[(&str, &str)], u64)> =
            calls.iter().map(|(l, c)| (&l[..], c.calls)).collect();
        counter(e, "kmsfs_kms_calls", "KMS calls, by operation", &totals)?;
        let errors: Vec<(&[(&str, &str)], u64)> =
            calls.iter().map(|(l, c)| (&l[..], c.errors)).collect();
        counter(
            e,
            "kmsfs_kms_call_errors",
            "KMS calls that failed, by operation",
            &errors,
        )?;
        let mut latency = e.encode_descriptor(
            "kmsfs_kms_call_duration_seconds",
            "Latency of KMS calls, by operation",
            None,
            MetricType::Histogram,
        )?;
        for (labels, call) in &calls {
            latency
                .encode_family(labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    call.latency.sum_seconds,
                    call.latency.count,
                    &call.latency.buckets,
                    None,
                )?;
        }
        Ok(())
    }
}
