//! The server's front door: the accept loop and what it does to stay up when strangers knock.
//!
//! - **Connection caps**: a total cap and a cap per client address, chosen from the descriptor
//!   limit (raised to its hard limit at start, with a reserve kept for the state files, the
//!   audit log and the peers). A connection over its client's cap is closed at accept. At the
//!   total cap, the oldest connection that has not yet sent a whole request head is closed to
//!   make room (so idle strangers cannot keep new clients out); when there is none, the new
//!   connection gets a 503 problem document with `Retry-After` from a small pool of *shed*
//!   slots, and is closed at accept when even those are taken. Accept never spins on `EMFILE`:
//!   it backs off and logs once per interval.
//! - **Timeouts**: the request head must arrive within the request timeout, and the same timer
//!   bounds an idle keep-alive connection (hyper starts it as soon as a connection waits for a
//!   head); a head cut short is closed without an answer. The body must arrive within the
//!   request timeout too, or the request gets a 408 problem document and the connection
//!   closes. A TLS handshake has the same bound.
//! - **Memory**: after a flood of connections has gone, the allocator's free memory is given back
//!   to the system (glibc's `malloc_trim`).
//!
//! Connections are HTTP/1.1 (hyper), over TCP or TLS ([`super::tls`]); shutdown is graceful
//! (in-flight requests finish, bounded by the request timeout).

use super::auth::MAX_BODY_BYTES;
use super::problem::{ApiError, PROBLEM_JSON};
use super::tls;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

/// The default request timeout: head, body and TLS handshake each; and an idle keep-alive
/// connection.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The default cap of connections from one client address.
pub const DEFAULT_MAX_PER_CLIENT: usize = 256;
/// The highest default total cap, however many descriptors the system allows.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Descriptors kept for everything but client connections (state files, audit log, peers,
/// the runtime), plus one sixteenth of the limit.
const FIXED_RESERVE: usize = 128;
/// Connections over the total cap that may be answered 503 at the same time.
const SHED_SLOTS: usize = 64;
/// How long a shed connection may take to send its head (it gets a 503 whatever it says).
const SHED_TIMEOUT: Duration = Duration::from_secs(2);
/// What a shed connection is told to wait before trying again, in seconds.
const RETRY_AFTER_SECS: u64 = 1;
/// How long accept waits after running out of descriptors, and how often that is logged.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How often the memory give-back checks, and the fall in open connections that triggers it.
const TRIM_CHECK: Duration = Duration::from_secs(2);
const TRIM_AFTER_DROP: usize = 512;

/// What `kms serve` was asked to allow (`None`: the default from the descriptor limit).
#[derive(Debug, Clone)]
pub struct FrontLimits {
    /// The most client connections open at once.
    pub max_connections: Option<usize>,
    /// The most connections open at once from one client address.
    pub max_connections_per_client: Option<usize>,
    /// The bound on a request head, a request body, a TLS handshake and an idle connection.
    pub request_timeout: Duration,
}

impl Default for FrontLimits {
    fn default() -> Self {
        FrontLimits {
            max_connections: None,
            max_connections_per_client: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The limits in force, once the descriptor limit is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Total connections served.
    pub(crate) total: usize,
    /// Connections served per client address.
    pub(crate) per_client: usize,
    /// Connections answered 503 at once; also the most connections closed to make room that
    /// may not yet be gone.
    pub(crate) shed: usize,
}

impl Caps {
    /// The caps for `asked` under a soft descriptor limit of `nofile`: the total never exceeds
    /// what the descriptors left after the reserve and the shed slots allow.
    pub(crate) fn resolve(asked: &FrontLimits, nofile: u64) -> Caps {
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        let reserve = FIXED_RESERVE.saturating_add(nofile / 16);
        let budget = nofile.saturating_sub(reserve);
        let shed = SHED_SLOTS.min(budget / 8);
        // The shed slots, and as many connections closed to make room but not yet gone.
        let allowed = budget.saturating_sub(2 * shed).max(1);
        let total = asked
            .max_connections
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .clamp(1, allowed);
        let per_client = asked
            .max_connections_per_client
            .unwrap_or(DEFAULT_MAX_PER_CLIENT)
            .clamp(1, total);
        Caps {
            total,
            per_client,
            shed,
        }
    }
}

/// Raises the descriptor limit to its hard limit and resolves the caps under it; logs them.
pub(crate) fn caps(asked: &FrontLimits) -> Caps {
    let nofile = crate::sys::raise_open_file_limit()
        .or_else(|_| crate::sys::open_file_limit())
        .unwrap_or(1024);
    let caps = Caps::resolve(asked, nofile);
    if let Some(wanted) = asked.max_connections
        && wanted > caps.total
    {
        tracing::warn!(
            "--max-connections {wanted} is more than {nofile} open files allow: {} it is",
            caps.total
        );
    }
    tracing::info!(
        max_connections = caps.total,
        max_connections_per_client = caps.per_client,
        open_file_limit = nofile,
        request_timeout_secs = asked.request_timeout.as_secs_f64(),
        "connection limits"
    );
    caps
}

/// Open connections, in total and per client address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    shed: usize,
    /// Connections closed to make room whose task has not ended yet.
    evicting: usize,
    per_client: HashMap<IpAddr, usize>,
    /// Served connections in the order they came, to find the oldest one that has not sent a
    /// request head yet; entries of connections gone or past their first head are dropped as
    /// they are met.
    arrivals: VecDeque<Weak<Slot>>,
}

/// What the accept loop knows of a served connection.
#[derive(Debug)]
struct Slot {
    /// No whole request head has arrived yet.
    fresh: AtomicBool,
    /// Closed to make room.
    evicted: AtomicBool,
    /// Told when the connection is closed to make room.
    evict: Notify,
}

impl Slot {
    /// A whole request head has arrived.
    fn used(&self) {
        self.fresh.store(false, Ordering::Relaxed);
    }
}

/// What accept does with a new connection.
enum Admission {
    /// Serve it; the permit gives its place back on drop; the slot says when to give up.
    Serve(Permit, Arc<Slot>),
    /// Answer 503 and close; the permit gives the shed slot back on drop.
    Shed(Permit),
    /// Close it at once.
    Close,
}

/// The connection counts every connection task shares.
#[derive(Debug)]
struct Tracker {
    caps: Caps,
    counts: Mutex<Counts>,
}

impl Tracker {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `ip` in, or says why not.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let mut counts = self.counts();
        let mine = counts.per_client.get(&ip).copied().unwrap_or(0);
        if mine >= self.caps.per_client {
            return Admission::Close;
        }
        if counts.total >= self.caps.total {
            // Room made by closing an idle newcomer; the total may pass the cap until it has
            // gone, by at most the shed slots (which the descriptor budget keeps twice).
            if counts.evicting < self.caps.shed && evict_oldest_fresh(&mut counts.arrivals) {
                counts.evicting += 1;
                return self.serve(&mut counts, ip);
            }
            if counts.shed >= self.caps.shed {
                return Admission::Close;
            }
            counts.shed += 1;
            return Admission::Shed(Permit {
                tracker: Arc::clone(self),
                ip: None,
                slot: None,
            });
        }
        self.serve(&mut counts, ip)
    }

    /// Counts a connection from `ip` in and remembers its arrival.
    fn serve(self: &Arc<Self>, counts: &mut Counts, ip: IpAddr) -> Admission {
        counts.total += 1;
        *counts.per_client.entry(ip).or_insert(0) += 1;
        let slot = Arc::new(Slot {
            fresh: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        // Forget connections gone or used once the list holds many more than are open.
        if counts.arrivals.len() > 2 * self.caps.total.max(64) {
            forget_used(&mut counts.arrivals);
        }
        counts.arrivals.push_back(Arc::downgrade(&slot));
        Admission::Serve(
            Permit {
                tracker: Arc::clone(self),
                ip: Some(ip),
                slot: Some(Arc::clone(&slot)),
            },
            slot,
        )
    }

    /// Connections being served.
    fn open(&self) -> usize {
        self.counts().total
    }
}

/// Drops the arrivals of connections gone or past their first head (a `Weak` keeps its slot's
/// memory, and scattered slots would keep the heap's pages from being given back).
fn forget_used(arrivals: &mut VecDeque<Weak<Slot>>) {
    arrivals.retain(|w| w.upgrade().is_some_and(|s| s.fresh.load(Ordering::Relaxed)));
    arrivals.shrink_to_fit();
}

/// Closes the oldest served connection that has not sent a request head yet; false if none.
fn evict_oldest_fresh(arrivals: &mut VecDeque<Weak<Slot>>) -> bool {
    while let Some(oldest) = arrivals.pop_front() {
        if let Some(slot) = oldest.upgrade()
            && slot.fresh.swap(false, Ordering::Relaxed)
        {
            slot.evicted.store(true, Ordering::Relaxed);
            slot.evict.notify_one();
            return true;
        }
    }
    false
}

/// A counted connection; gives its place back on drop.
struct Permit {
    tracker: Arc<Tracker>,
    /// The client address of a served connection; `None` for a shed one.
    ip: Option<IpAddr>,
    /// A served connection's slot.
    slot: Option<Arc<Slot>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.tracker.counts();
        let Some(ip) = self.ip else {
            counts.shed = counts.shed.saturating_sub(1);
            return;
        };
        counts.total = counts.total.saturating_sub(1);
        if self
            .slot
            .as_ref()
            .is_some_and(|s| s.evicted.load(Ordering::Relaxed))
        {
            counts.evicting = counts.evicting.saturating_sub(1);
        }
        if let Some(n) = counts.per_client.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&ip);
            }
        }
    }
}

/// Serves `router` on `listener` (TLS when `tls` is given) under `caps` and `timeout` until
/// `shutdown` completes; then lets in-flight requests finish, for at most `timeout` more.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    caps: Caps,
    timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(timeout, body_deadline));
    let tracker = Arc::new(Tracker {
        caps,
        counts: Mutex::new(Counts::default()),
    });
    let graceful = GracefulShutdown::new();
    let trimmer = tokio::spawn(give_back_memory(Arc::clone(&tracker)));
    let mut exhausted = Throttled::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if out_of_descriptors(&e) => {
                exhausted.note(|n| {
                    tracing::warn!("cannot accept connections: {e} ({n} times); backing off")
                });
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::debug!("accept failed: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match tracker.admit(peer.ip()) {
            Admission::Serve(permit, slot) => {
                let watcher = graceful.watcher();
                let (router, tls) = (router.clone(), tls.clone());
                tokio::spawn(async move {
                    let served = match tls {
                        None => connection(tcp, router, timeout, watcher, slot).await,
                        Some(tls) => match tls::handshake(&tls, tcp, peer, timeout).await {
                            Some(stream) => {
                                connection(stream, router, timeout, watcher, slot).await
                            }
                            None => Ok(()),
                        },
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            Admission::Shed(permit) => {
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => shed(tcp).await,
                        Some(tls) => {
                            if let Some(stream) =
                                tls::handshake(&tls, tcp, peer, SHED_TIMEOUT).await
                            {
                                shed(stream).await;
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Admission::Close => drop(tcp),
        }
    }
    drop(listener);
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("stopped waiting for the last connections");
    }
    trimmer.abort();
}

/// The HTTP/1.1 settings of a connection: the head (and an idle keep-alive wait) bounded by
/// `head_timeout`.
fn http(head_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    builder
}

/// Serves one admitted connection until it closes, the server shuts down, or it is closed to
/// make room (only before its first request head).
async fn connection<S>(
    stream: S,
    router: Router,
    timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
    slot: Arc<Slot>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let routes = TowerToHyperService::new(router);
    let seen = Arc::clone(&slot);
    let service = hyper::service::service_fn(move |request| {
        seen.used();
        routes.call(request)
    });
    let conn = watcher.watch(http(timeout).serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        served = conn => served,
        () = slot.evict.notified() => {
            tracing::debug!("closed an idle connection to make room");
            Ok(())
        }
    }
}

/// Answers a connection over the total cap with 503 and closes it.
async fn shed<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_request| async {
        Ok::<_, std::convert::Infallible>(overloaded())
    });
    let conn = http(SHED_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(SHED_TIMEOUT * 2, conn).await;
}

/// The 503 of a connection over the total cap.
fn overloaded() -> Response {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server has too many connections open; try again shortly",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// A problem document the front answers before any route (so no audit line, no caller).
fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reads the whole request body within `timeout` (408 otherwise) before the routes see it.
async fn body_deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => ApiError::TooLarge.into_response(),
        Err(_) => problem(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// Whether an accept error means the process or system is out of descriptors or memory.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A warning said at most once per [`ACCEPT_LOG_INTERVAL`], with how often it happened.
struct Throttled {
    last: Option<Instant>,
    since: u64,
}

impl Throttled {
    fn new() -> Self {
        Throttled {
            last: None,
            since: 0,
        }
    }

    fn note(&mut self, say: impl FnOnce(u64)) {
        self.since += 1;
        if self
            .last
            .is_none_or(|last| last.elapsed() >= ACCEPT_LOG_INTERVAL)
        {
            say(self.since);
            self.since = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// Gives freed memory back to the system once many connections have closed since the last
/// peak and their number has stopped falling (the last tasks of closed connections are freed
/// just after they give their place back): each connection's buffers are freed when it
/// closes, but glibc keeps the freed pages in its arenas until asked.
async fn give_back_memory(tracker: Arc<Tracker>) {
    let mut peak = 0usize;
    let mut last = 0usize;
    loop {
        tokio::time::sleep(TRIM_CHECK).await;
        let open = tracker.open();
        peak = peak.max(open);
        let falling = open < last;
        last = open;
        if !falling && peak.saturating_sub(open) >= TRIM_AFTER_DROP {
            forget_used(&mut tracker.counts().arrivals);
            let started = Instant::now();
            tokio::task::spawn_blocking(trim_heap).await.ok();
            tracing::debug!(
                peak,
                open,
                "gave freed memory back in {:?}",
                started.elapsed()
            );
            peak = open;
        }
    }
}

/// Returns the allocator's free memory to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators give memory back by themselves (or not at all).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(total: Option<usize>, per_client: Option<usize>) -> FrontLimits {
        FrontLimits {
            max_connections: total,
            max_connections_per_client: per_client,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    #[test]
    fn the_total_cap_never_exceeds_what_the_descriptors_allow() {
        // 20,000 descriptors: 128 + 1,250 kept, 64 shed slots, 64 closing to make room.
        let caps = Caps::resolve(&asked(None, None), 20_000);
        assert_eq!(caps.total, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(caps.per_client, DEFAULT_MAX_PER_CLIENT);
        let caps = Caps::resolve(&asked(Some(1_000_000), None), 20_000);
        assert_eq!(caps.total, 20_000 - 128 - 1_250 - 2 * 64);
        assert!(caps.total + 2 * caps.shed + 128 < 20_000);
        // 1,024 descriptors: the default is cut to what is left.
        let caps = Caps::resolve(&asked(None, None), 1024);
        assert_eq!(caps.total, 1024 - 128 - 64 - 2 * 64);
        assert!(caps.per_client <= caps.total);
    }

    #[test]
    fn the_per_client_cap_is_at_most_the_total_and_at_least_one() {
        let caps = Caps::resolve(&asked(Some(10), Some(50)), 20_000);
        assert_eq!((caps.total, caps.per_client), (10, 10));
        let caps = Caps::resolve(&asked(Some(0), Some(0)), 20_000);
        assert_eq!((caps.total, caps.per_client), (1, 1));
    }

    #[test]
    fn admission_counts_per_client_then_sheds_then_closes() {
        let tracker = Arc::new(Tracker {
            caps: Caps {
                total: 3,
                per_client: 2,
                shed: 1,
            },
            counts: Mutex::new(Counts::default()),
        });
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let c: IpAddr = [127, 0, 0, 4].into();
        let a1 = tracker.admit(a);
        let _a2 = tracker.admit(a);
        assert!(matches!(tracker.admit(a), Admission::Close), "over a's cap");
        let _b1 = tracker.admit(b);
        assert_eq!(tracker.open(), 3);
        // Every connection has sent a request: nothing to close to make room.
        for admitted in [&a1, &_a2, &_b1] {
            if let Admission::Serve(_, slot) = admitted {
                slot.used();
            }
        }
        let shed = tracker.admit(c);
        assert!(matches!(shed, Admission::Shed(_)), "over the total cap");
        assert!(matches!(tracker.admit(c), Admission::Close), "no shed slot");
        drop(shed);
        assert!(matches!(tracker.admit(c), Admission::Shed(_)));
        drop(a1);
        assert_eq!(tracker.open(), 2);
        assert!(matches!(tracker.admit(c), Admission::Serve(..)));
        assert_eq!(tracker.counts().per_client.len(), 2, "c's count is gone");
    }

    #[test]
    fn at_the_total_cap_the_oldest_connection_without_a_request_makes_room() {
        let tracker = Arc::new(Tracker {
            caps: Caps {
                total: 2,
                per_client: 10,
                shed: 1,
            },
            counts: Mutex::new(Counts::default()),
        });
        let ip: IpAddr = [127, 0, 0, 2].into();
        let slot_of = |admitted: &Admission| match admitted {
            Admission::Serve(_, slot) => Arc::clone(slot),
            _ => panic!("not served"),
        };
        let idle = tracker.admit(ip);
        let busy = tracker.admit(ip);
        slot_of(&busy).used();
        let newcomer = tracker.admit(ip);
        assert!(matches!(newcomer, Admission::Serve(..)), "room was made");
        assert!(
            !slot_of(&idle).fresh.load(Ordering::Relaxed),
            "the idle one is closed"
        );
        // Until the closed one has gone, the total passes the cap by at most the shed slots.
        assert_eq!(tracker.open(), 3);
        slot_of(&newcomer).used();
        assert!(matches!(tracker.admit(ip), Admission::Shed(_)));
        drop(idle);
        assert_eq!(tracker.open(), 2);
        assert_eq!(tracker.counts().evicting, 0);
        drop((busy, newcomer));
    }
}
