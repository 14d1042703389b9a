//! The endpoints of one remote KMS zone and the order to try them in.
//!
//! - [`EndpointList`]: `URL1,URL2,...` as the user gives it (`--kms`, `kmsfs.conf`), every URL
//!   checked on its own, all of one API (same path, the zone's `/v2` base), none twice.
//! - [`Target`]: one address to send to. A URL whose host is a name that resolves to several
//!   addresses is several targets, each keeping the host name for TLS (SNI, certificate) and
//!   the `Host` header; [`resolve`] makes them.
//! - [`Rotation`]: which target to try first: the one that answered last (sticky); a target
//!   that failed cools down for [`COOL_DOWN`], during which it is tried only after every other.
//!   Pure: it takes `now` and knows no HTTP.

use super::http::{Endpoint, RemoteError};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// How long a target that failed is tried only after every other one.
pub const COOL_DOWN: Duration = Duration::from_secs(10);

/// How long a host name's addresses are used before they are looked up again (they are also
/// looked up again after a call on which every target failed).
pub const RESOLVE_EVERY: Duration = Duration::from_secs(60);

/// The path every endpoint of a list of several must end with: the zone's API base.
const API_BASE: &str = "/v2";

/// One or more endpoints of one KMS zone, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointList {
    endpoints: Vec<Endpoint>,
}

impl EndpointList {
    /// Parses `URL` or `URL1,URL2,...`: each URL as [`Endpoint::parse`] checks it; with several,
    /// each must end with `/v2`, all with the same path, and none may be given twice.
    pub fn parse(text: &str) -> Result<Self, RemoteError> {
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for part in text.split(',') {
            if part.trim().is_empty() {
                return Err(RemoteError::EmptyInList(text.to_string()));
            }
            let endpoint = Endpoint::parse(part.trim())?;
            if endpoints.contains(&endpoint) {
                return Err(RemoteError::Repeated(endpoint.to_string()));
            }
            endpoints.push(endpoint);
        }
        if let [first, others @ ..] = endpoints.as_slice()
            && !others.is_empty()
        {
            for endpoint in &endpoints {
                if !endpoint.path().ends_with(API_BASE) {
                    return Err(RemoteError::NotApiBase(endpoint.to_string()));
                }
            }
            if let Some(other) = others.iter().find(|e| e.path() != first.path()) {
                return Err(RemoteError::OtherApi {
                    first: first.to_string(),
                    other: other.to_string(),
                });
            }
        }
        Ok(EndpointList { endpoints })
    }

    /// A list from endpoints already checked one by one (e.g. the lines of a `kmsfs.conf`);
    /// the list rules of [`EndpointList::parse`] apply.
    pub fn of(endpoints: &[String]) -> Result<Self, RemoteError> {
        EndpointList::parse(&endpoints.join(","))
    }

    /// The endpoints, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter()
    }

    /// The first endpoint (the one older builds, which know a single endpoint, use).
    pub fn first(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// How many endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Always false: a list has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The normalized URLs, as recorded in `kmsfs.conf`.
    pub fn to_strings(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.as_str().to_string())
            .collect()
    }
}

impl std::fmt::Display for EndpointList {
    /// The list as `--kms` takes it: `URL1,URL2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(endpoint.as_str())?;
        }
        Ok(())
    }
}

/// One place to send a request to: an endpoint, and the address its host name resolved to
/// (none when the host is an IP address, or when it could not be resolved: the HTTP client
/// then resolves it itself and reports the failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The endpoint (its URL keeps the host name).
    pub endpoint: Endpoint,
    /// The host name and the address it is pinned to.
    pub pinned: Option<(String, SocketAddr)>,
}

impl Target {
    /// How logs and errors name it: the URL, with the address when a name was resolved.
    pub fn label(&self) -> String {
        match &self.pinned {
            Some((_, addr)) => format!("{} ({})", self.endpoint, addr.ip()),
            None => self.endpoint.to_string(),
        }
    }
}

/// The targets of `list`, in its order: an endpoint whose host is a name becomes one target per
/// address the name resolves to (in the resolver's order, duplicates dropped).
pub fn resolve(list: &EndpointList) -> Vec<Target> {
    let mut targets = Vec::new();
    for endpoint in list.iter() {
        let unpinned = Target {
            endpoint: endpoint.clone(),
            pinned: None,
        };
        let Some(host) = endpoint.host_name() else {
            targets.push(unpinned);
            continue;
        };
        let addrs: Vec<SocketAddr> = match (host.as_str(), endpoint.port()).to_socket_addrs() {
            Ok(found) => found.collect(),
            Err(e) => {
                tracing::debug!("cannot resolve {host}: {e}");
                Vec::new()
            }
        };
        let mut seen: Vec<IpAddr> = Vec::new();
        for addr in addrs {
            if seen.contains(&addr.ip()) {
                continue;
            }
            seen.push(addr.ip());
            targets.push(Target {
                endpoint: endpoint.clone(),
                pinned: Some((host.clone(), addr)),
            });
        }
        if seen.is_empty() {
            targets.push(unpinned);
        }
    }
    targets
}

/// Which target to try first: sticky to the last one that answered, failed ones cooled down.
/// Targets are known by their [`Target::label`], so the state survives a new resolution.
#[derive(Debug, Default)]
pub struct Rotation {
    sticky: Option<String>,
    cooling: HashMap<String, Instant>,
}

impl Rotation {
    /// The indices of `targets` in the order to try them at `now`: the sticky target, then the
    /// others in list order (from the sticky one on, wrapping around); targets still cooling
    /// down go last, the one whose cool-down ends first before the others.
    pub fn order(&self, targets: &[Target], now: Instant) -> Vec<usize> {
        let start = self
            .sticky
            .as_ref()
            .and_then(|label| targets.iter().position(|t| &t.label() == label))
            .unwrap_or(0);
        let cycled = (0..targets.len()).map(|i| (start + i) % targets.len());
        let until = |i: usize| {
            self.cooling
                .get(&targets[i].label())
                .copied()
                .filter(|&until| until > now)
        };
        let (mut cooling, mut order): (Vec<usize>, Vec<usize>) =
            cycled.partition(|&i| until(i).is_some());
        cooling.sort_by_key(|&i| until(i));
        order.extend(cooling);
        order
    }

    /// `target` answered: it is tried first from now on, and its cool-down ends.
    pub fn succeeded(&mut self, target: &Target) {
        let label = target.label();
        self.cooling.remove(&label);
        self.sticky = Some(label);
    }

    /// `target` failed at `now` (no connection, or trouble at the server): it cools down.
    pub fn failed(&mut self, target: &Target, now: Instant) {
        let label = target.label();
        if self.sticky.as_ref() == Some(&label) {
            self.sticky = None;
        }
        self.cooling.retain(|_, until| *until > now);
        self.cooling.insert(label, now + COOL_DOWN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Result<EndpointList, String> {
        EndpointList::parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_single_url_is_a_list_of_one_as_before() {
        let one = list("http://127.0.0.1:8400/v2/").expect("valid");
        assert_eq!(one.len(), 1);
        assert_eq!(one.to_string(), "http://127.0.0.1:8400/v2");
        // One endpoint keeps the old, lax rule about its path.
        assert!(list("https://kms.example/api").is_ok());
    }

    #[test]
    fn several_urls_are_checked_one_by_one_and_as_a_list() {
        let two = list(" http://127.0.0.1:1/v2 , https://kms.example:8443/v2/").expect("valid");
        assert_eq!(
            two.to_strings(),
            ["http://127.0.0.1:1/v2", "https://kms.example:8443/v2"]
        );
        assert_eq!(
            two.to_string(),
            "http://127.0.0.1:1/v2,https://kms.example:8443/v2"
        );
        assert_eq!(EndpointList::of(&two.to_strings()), Ok(two));

        let cases = [
            (
                "http://a/v2,ftp://b/v2",
                "\"ftp://b/v2\" is not a KMS endpoint",
            ),
            ("http://a/v2,,http://b/v2", "an empty entry"),
            ("http://a/v2,", "an empty entry"),
            ("http://a/v2,http://a/v2/", "http://a/v2 is listed twice"),
            (
                "http://a/v2,http://b/api",
                "http://b/api is not a zone's API base",
            ),
            ("http://a/x/v2,http://b/v2", "http://b/v2 does not serve"),
        ];
        for (text, expected) in cases {
            let err = list(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn ip_hosts_are_one_target_and_names_one_per_address() {
        let ips = list("http://127.0.0.1:1/v2,http://[::1]:2/v2").expect("valid");
        let targets = resolve(&ips);
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|t| t.pinned.is_none()));
        assert_eq!(targets[1].label(), "http://[::1]:2/v2");

        let named = list("http://localhost:8400/v2").expect("valid");
        let targets = resolve(&named);
        assert!(!targets.is_empty());
        for t in &targets {
            let (host, addr) = t.pinned.as_ref().expect("a name is pinned");
            assert_eq!(host, "localhost");
            assert!(addr.ip().is_loopback(), "{addr}");
            assert_eq!(addr.port(), 8400);
            assert!(
                t.label().starts_with("http://localhost:8400/v2 ("),
                "{}",
                t.label()
            );
        }
        let unique: std::collections::HashSet<_> = targets.iter().map(Target::label).collect();
        assert_eq!(unique.len(), targets.len(), "no address twice");

        // A name that does not resolve stays one target, for the client to report.
        let nowhere = list("http://no-such-host.invalid:1/v2").expect("valid");
        assert_eq!(
            resolve(&nowhere),
            [Target {
                endpoint: nowhere.first().clone(),
                pinned: None
            }]
        );
    }

    fn targets(n: u16) -> Vec<Target> {
        let text: Vec<String> = (1..=n)
            .map(|p| format!("http://127.0.0.1:{p}/v2"))
            .collect();
        resolve(&list(&text.join(",")).expect("valid"))
    }

    #[test]
    fn the_list_order_holds_until_something_fails() {
        let t = targets(3);
        let rotation = Rotation::default();
        let now = Instant::now();
        assert_eq!(rotation.order(&t, now), [0, 1, 2]);
        assert_eq!(Rotation::default().order(&[], now), Vec::<usize>::new());
    }

    #[test]
    fn the_last_target_that_answered_stays_first() {
        let t = targets(3);
        let mut rotation = Rotation::default();
        let now = Instant::now();
        rotation.failed(&t[0], now);
        rotation.succeeded(&t[1]);
        assert_eq!(rotation.order(&t, now), [1, 2, 0]);
        // Still first long after the first one's cool-down: sticky, not back to list order.
        let later = now + COOL_DOWN * 3;
        assert_eq!(rotation.order(&t, later), [1, 2, 0]);
        rotation.succeeded(&t[2]);
        assert_eq!(rotation.order(&t, later), [2, 0, 1]);
    }

    #[test]
    fn a_failed_target_is_tried_last_until_its_cool_down_ends() {
        let t = targets(3);
        let mut rotation = Rotation::default();
        let now = Instant::now();
        rotation.succeeded(&t[0]);
        rotation.failed(&t[0], now);
        assert_eq!(rotation.order(&t, now), [1, 2, 0]);
        let soon = now + Duration::from_secs(1);
        rotation.failed(&t[1], soon);
        // Both cool down; the one whose cool-down ends first comes first among them.
        assert_eq!(rotation.order(&t, soon), [2, 0, 1]);
        // Every target failed: all are still tried, none is skipped.
        rotation.failed(&t[2], soon);
        assert_eq!(rotation.order(&t, soon), [0, 1, 2]);
        // After the cool-down the list order is back (nothing is sticky).
        assert_eq!(
            rotation.order(&t, now + COOL_DOWN + Duration::from_secs(2)),
            [0, 1, 2]
        );
        // An answer ends a cool-down at once.
        rotation.succeeded(&t[1]);
        assert_eq!(rotation.order(&t, soon), [1, 0, 2]);
    }

    #[test]
    fn the_state_survives_a_new_resolution() {
        let t = targets(3);
        let mut rotation = Rotation::default();
        let now = Instant::now();
        rotation.succeeded(&t[2]);
        rotation.failed(&t[0], now);
        // The targets come back in another order, one fewer.
        let again = vec![t[2].clone(), t[0].clone()];
        assert_eq!(rotation.order(&again, now), [0, 1]);
        let without_sticky = vec![t[0].clone(), t[1].clone()];
        assert_eq!(rotation.order(&without_sticky, now), [1, 0]);
    }
}
