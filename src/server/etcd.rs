//! The etcd store of a zone ([`EtcdStore`]): the same sealed org records as the file store, one
//! etcd key each, changed only by compare-and-swap transactions, and how fresh this server's
//! copy is.
//!
//! Keys under the zone's prefix `P` (`--etcd-prefix`, default `/kmsfs`):
//! - `P/orgs/ORG-UUID`: the bytes of the org file (sealed under the zone's root key; etcd never
//!   sees key material or API secrets in clear);
//! - `P/root.kdf`: with `--passphrase-file`, the KDF record (salt, costs, check value) that
//!   makes every server's passphrase give the same root key; the root key itself never goes to
//!   etcd;
//! - `P/leader`: the election of the server that runs once-per-zone work
//!   ([`super::etcd_leader`]).
//!
//! Every call here blocks the calling thread (it runs on the server's runtime through its
//! handle) and gives up after [`OP_TIMEOUT`]; callers are blocking threads, never async tasks.

use super::ServerError;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long one etcd request may take before the change answers 503.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a server serves keys after it last confirmed that its copy is current: past this,
/// cryptography answers 503 rather than risk using a key disabled elsewhere.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// The default key prefix of a zone.
pub const DEFAULT_PREFIX: &str = "/kmsfs";

/// Where a zone's state is in etcd: the cluster's endpoints and the zone's key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTarget {
    /// `http://HOST:PORT` of every member given.
    pub endpoints: Vec<String>,
    /// The zone's key prefix, without a trailing `/`.
    pub prefix: String,
}

impl EtcdTarget {
    /// Reads `etcd://HOST:PORT[,HOST:PORT...]` and the key prefix (`/kmsfs/...`).
    ///
    /// # Errors
    /// [`ServerError::Invalid`] naming what is wrong.
    pub fn parse(url: &str, prefix: &str) -> Result<Self, ServerError> {
        let invalid = || {
            ServerError::Invalid(format!(
                "{url:?} is not a store: say etcd://HOST:PORT[,HOST:PORT...]"
            ))
        };
        let hosts = url.strip_prefix("etcd://").ok_or_else(invalid)?;
        let endpoints = hosts
            .split(',')
            .map(|host| {
                let host = host.trim();
                match host.rsplit_once(':') {
                    Some((name, port))
                        if !name.is_empty()
                            && !host.contains('/')
                            && port.parse::<u16>().is_ok_and(|p| p != 0) =>
                    {
                        Ok(format!("http://{host}"))
                    }
                    _ => Err(invalid()),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains("//") {
            return Err(ServerError::Invalid(format!(
                "the etcd prefix {prefix:?} must start with / and name something, like /kmsfs/ch-gva-2"
            )));
        }
        Ok(EtcdTarget {
            endpoints,
            prefix: prefix.to_string(),
        })
    }
}

/// A record read from etcd: its bytes and its mod revision.
pub(crate) struct EtcdRecord {
    /// The stored bytes.
    pub(crate) bytes: Vec<u8>,
    /// The revision of its last change.
    pub(crate) revision: i64,
}

/// Why a compare-and-swap did not write.
pub(crate) enum CasError {
    /// The record changed since it was read; here it is now (`None` when it is gone).
    Lost(Option<EtcdRecord>),
    /// etcd did not answer, or refused; the sentence says why.
    Unreachable(String),
}

/// A connection to the zone's etcd cluster.
pub(crate) struct EtcdStore {
    client: Client,
    handle: tokio::runtime::Handle,
    target: EtcdTarget,
    /// When the copy in memory was last confirmed current, in ms since `epoch`.
    confirmed_ms: AtomicU64,
    epoch: Instant,
}

/// A sentence for an etcd failure.
fn say(doing: &str, e: impl std::fmt::Display) -> String {
    format!("etcd: cannot {doing}: {e}")
}

/// An etcd client error in a few words (a gRPC status without its metadata).
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{} ({:?})", status.message(), status.code())
        }
        other => other.to_string(),
    }
}

impl EtcdStore {
    /// Connects to `target` (lazily: an unreachable cluster shows on the first request).
    /// Needs a tokio runtime (the current one) that outlives the store.
    ///
    /// # Errors
    /// [`ServerError::Store`] when there is no runtime or the endpoints are refused.
    pub(crate) fn connect(target: &EtcdTarget) -> Result<Self, ServerError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| ServerError::Store(say("start (no async runtime)", e)))?;
        let options = ConnectOptions::new()
            .with_connect_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), OP_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let endpoints = target.endpoints.clone();
        let client = handle
            .block_on(async move {
                tokio::time::timeout(OP_TIMEOUT, Client::connect(endpoints, Some(options))).await
            })
            .map_err(|e| ServerError::Store(say("connect", e)))?
            .map_err(|e| ServerError::Store(say("connect", describe(&e))))?;
        Ok(EtcdStore {
            client,
            handle,
            target: target.clone(),
            confirmed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A client for the async tasks (watch, election).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Where the zone is, for messages: `etcd://HOSTS PREFIX`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "etcd {} {}",
            self.target.endpoints.join(","),
            self.target.prefix
        )
    }

    /// The prefix of the org records.
    pub(crate) fn orgs_prefix(&self) -> String {
        format!("{}/orgs/", self.target.prefix)
    }

    /// The key of a record `name` under the zone's prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.target.prefix)
    }

    /// The key of `org`'s record.
    pub(crate) fn org_key(&self, org: Uuid) -> String {
        format!("{}{org}", self.orgs_prefix())
    }

    /// The org an etcd key stands for.
    pub(crate) fn org_of_key(&self, key: &[u8]) -> Option<Uuid> {
        let key = std::str::from_utf8(key).ok()?;
        Uuid::parse_str(key.strip_prefix(&self.orgs_prefix())?).ok()
    }

    /// A place name for errors about `name` (as a path, like the file store's).
    pub(crate) fn place(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("etcd:{}", self.key(name)))
    }

    /// Runs `request` on the runtime, with [`OP_TIMEOUT`].
    fn run<T>(
        &self,
        doing: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, String> {
        self.handle
            .block_on(async { tokio::time::timeout(OP_TIMEOUT, request).await })
            .map_err(|_| say(doing, "no answer in time"))?
            .map_err(|e| say(doing, describe(&e)))
    }

    /// Every record under `prefix`, with its key.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<(Vec<u8>, EtcdRecord)>, String> {
        let mut kv = self.client.kv_client();
        let prefix = prefix.to_string();
        let response = self.run("list the records", async move {
            kv.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        let records = response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    EtcdRecord {
                        bytes: kv.value().to_vec(),
                        revision: kv.mod_revision(),
                    },
                )
            })
            .collect();
        Ok(records)
    }

    /// How many keys the zone's prefix holds (anything at all under it).
    pub(crate) fn count(&self) -> Result<i64, String> {
        let mut kv = self.client.kv_client();
        let prefix = format!("{}/", self.target.prefix);
        let response = self.run("count the records", async move {
            kv.get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        })?;
        Ok(response.count())
    }

    /// The record at `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Result<Option<EtcdRecord>, String> {
        let mut kv = self.client.kv_client();
        let key = key.to_string();
        let response = self.run("read a record", async move { kv.get(key, None).await })?;
        Ok(response.kvs().first().map(|kv| EtcdRecord {
            bytes: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }))
    }

    /// Writes `bytes` at `key` if the record's mod revision is still `revision` (0: if there is
    /// no record). One transaction; returns the new record's revision.
    pub(crate) fn compare_and_swap(
        &self,
        key: &str,
        bytes: &[u8],
        revision: i64,
    ) -> Result<i64, CasError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, bytes, None)])
            .or_else([TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let response = self
            .run("write a record", async move { kv.txn(txn).await })
            .map_err(CasError::Unreachable)?;
        if response.succeeded() {
            return Ok(response.header().map_or(0, |h| h.revision()));
        }
        let current = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| EtcdRecord {
                bytes: kv.value().to_vec(),
                revision: kv.mod_revision(),
            }),
            _ => None,
        });
        Err(CasError::Lost(current))
    }

    /// Marks the copy in memory as current now.
    pub(crate) fn confirm(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.confirmed_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long ago the copy in memory was last confirmed current.
    pub(crate) fn unconfirmed_for(&self) -> Duration {
        let now = self.epoch.elapsed();
        let confirmed = Duration::from_millis(self.confirmed_ms.load(Ordering::Relaxed));
        now.saturating_sub(confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let t = EtcdTarget::parse("etcd://a:2379,127.0.0.1:2380", "/kmsfs/z1/").expect("parses");
        assert_eq!(t.endpoints, ["http://a:2379", "http://127.0.0.1:2380"]);
        assert_eq!(t.prefix, "/kmsfs/z1");
        for bad in [
            "http://a:1",
            "etcd://",
            "etcd://a",
            "etcd://a:0",
            "etcd://a:x",
            "etcd://a:1,",
            "etcd://a/b:1",
        ] {
            let e = EtcdTarget::parse(bad, "/kmsfs").expect_err(bad);
            assert!(e.to_string().contains("etcd://HOST:PORT"), "{bad}: {e}");
        }
        for bad in ["kmsfs", "/", "", "/a//b"] {
            assert!(EtcdTarget::parse("etcd://a:1", bad).is_err(), "{bad}");
        }
    }
}
