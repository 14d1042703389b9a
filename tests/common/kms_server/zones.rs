//! Several zone servers that know each other, for the multi-zone tests: [`Zones::start`]
//! reserves a port per zone, writes one peer secret file, and starts every `kmsfs kms serve`
//! with `--peer` for each other zone; [`import_org`] installs an organization in a zone.

use super::{KmsClient, OrgCreds, ServerGuard, create_org};
use crate::common::kmsfs_bin;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The peer secret of every test deployment.
pub const PEER_SECRET: &str = "multi-zone test secret, shared by every zone";

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn reserve_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Zone servers that are each other's peers; all killed on drop.
pub struct Zones {
    /// The servers, in the order of the zone names given.
    pub servers: Vec<ServerGuard>,
    /// The peer secret file.
    pub secret_file: PathBuf,
    /// The private directory of the deployment.
    pub dir: tempfile::TempDir,
}

impl Zones {
    /// Starts one server per zone in `zones`, each knowing every other one.
    pub fn start(zones: &[&str]) -> Zones {
        Zones::start_with_secrets(zones, &vec![PEER_SECRET; zones.len()])
    }

    /// [`Zones::start`] with the peer secret of each zone given (to give one a wrong one).
    pub fn start_with_secrets(zones: &[&str], secrets: &[&str]) -> Zones {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-zones-")
            .tempdir()
            .expect("tempdir");
        let secret_file = dir.path().join("peer-secret");
        std::fs::write(&secret_file, format!("{PEER_SECRET}\n")).expect("write the secret");
        let ports: Vec<u16> = zones.iter().map(|_| reserve_port()).collect();
        let mut servers = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let file = dir.path().join(format!("peer-secret-{zone}"));
            std::fs::write(&file, secrets[i]).expect("write the secret");
            let mut extra = vec!["--peer-secret-file".to_string(), file.display().to_string()];
            for (j, other) in zones.iter().enumerate() {
                if j != i {
                    extra.push("--peer".into());
                    extra.push(format!("{other}=http://127.0.0.1:{}/v2", ports[j]));
                }
            }
            let args: Vec<&str> = extra.iter().map(String::as_str).collect();
            let data = dir.path().join(zone);
            let listen = format!("127.0.0.1:{}", ports[i]);
            servers.push(ServerGuard::start_in(&data, zone, &listen, &args));
        }
        Zones {
            servers,
            secret_file,
            dir,
        }
    }

    /// An organization created in the first zone and imported in every other one, with a
    /// client per zone (in zone order).
    pub fn org(&self) -> Vec<KmsClient> {
        let creds = create_org(&self.servers[0].data);
        for server in &self.servers[1..] {
            import_org(&server.data, &creds);
        }
        self.clients(&creds)
    }

    /// A client per zone for `creds`.
    pub fn clients(&self, creds: &OrgCreds) -> Vec<KmsClient> {
        self.servers
            .iter()
            .map(|s| KmsClient::new(&s.url, creds.clone()))
            .collect()
    }
}

/// Runs `kmsfs kms org import --data DATA` with the JSON `org create` printed.
pub fn import_org(data: &Path, creds: &OrgCreds) {
    let mut child = Command::new(kmsfs_bin())
        .args(["kms", "org", "import", "--data"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kmsfs kms org import");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(creds.json.as_bytes())
        .expect("write the JSON");
    let out = child.wait_with_output().expect("import finishes");
    assert!(
        out.status.success(),
        "org import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` every 50 ms until it is true; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates a multi-zone key named `name` and returns its id.
pub fn mz_key(c: &super::KmsClient, name: &str) -> String {
    let key = super::ok(c.call(
        "POST",
        "/kms-key",
        Some(&serde_json::json!({"name": name, "multi-zone": true})),
    ));
    key["id"].as_str().expect("id").to_string()
}

/// The replica state of `zone` in the primary's `replicas-status` (Null when absent).
pub fn replica_state(primary: &KmsClient, key: &str, zone: &str) -> serde_json::Value {
    let k = super::get_key(primary, key);
    let states = k["replicas-status"].as_array().cloned().unwrap_or_default();
    states
        .into_iter()
        .find(|s| s["zone"] == zone)
        .unwrap_or(serde_json::Value::Null)
}
