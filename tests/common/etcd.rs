//! A real etcd for tests ([`EtcdGuard`]): Debian's `etcd` on 127.0.0.1 with free ports and a
//! private data directory, started and waited for, killed on drop. It can be stopped and
//! started again on the same ports and data (an outage in the middle of a test).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd; killed (SIGKILL) on drop.
pub struct EtcdGuard {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether the `etcd` binary is installed (scripts/test.sh installs `etcd-server`).
pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl EtcdGuard {
    /// Starts a one-member etcd and waits until it answers.
    pub fn start() -> EtcdGuard {
        assert!(
            available(),
            "etcd is not installed: scripts/test.sh installs Debian's etcd-server"
        );
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-etcd-")
            .tempdir()
            .expect("tempdir");
        let mut guard = EtcdGuard {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        guard.resume();
        guard
    }

    /// `etcd://127.0.0.1:PORT`, as `--store` takes it.
    pub fn store_url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:PORT`, as etcdctl takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// etcd's own log.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Kills etcd (SIGKILL); its data stays for [`EtcdGuard::resume`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd (again) on the same ports and data, and waits until it answers.
    pub fn resume(&mut self) {
        self.kill();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("open the etcd log");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let started = Instant::now();
        while !self.healthy() {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "etcd did not answer in time; its log:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether etcd answers a health check.
    pub fn healthy(&self) -> bool {
        self.etcdctl(&["endpoint", "health"]).is_some()
    }

    /// Runs `etcdctl` against this etcd; its stdout when it succeeded.
    pub fn etcdctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "--command-timeout=2s"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
