//! A real `kmsfs kms serve` for tests: [`ServerGuard`] starts it on 127.0.0.1 with a free port
//! and a private data directory, learns its URL from the "listening on" line, and kills it on
//! drop. [`create_org`] makes credentials with `kmsfs kms org create`; [`KmsClient`] sends
//! signed requests (EXO2-HMAC-SHA256, through `kmsfs::kms::sign`) and returns status and JSON.

pub mod zones;

use super::kmsfs_bin;
use kmsfs::crypto::SecretBytes;
use kmsfs::kms::sign::{self, Credentials};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A key id no organization has.
pub const NO_SUCH_KEY: &str = "00000000-0000-4000-8000-000000000000";

/// How long a server may take to print its "listening on" line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `kmsfs kms serve`; killed (SIGKILL) on drop.
pub struct ServerGuard {
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    /// Base URL, e.g. `http://127.0.0.1:41234/v2`.
    pub url: String,
    /// The zone served.
    pub zone: String,
    /// The data directory.
    pub data: PathBuf,
    /// The server's stderr (its log).
    pub log: PathBuf,
    /// The extra arguments it was started with (kept for [`ServerGuard::restart`]).
    pub extra: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl ServerGuard {
    /// Starts a server for `zone` on a fresh data directory.
    pub fn start(zone: &str) -> ServerGuard {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-server-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let mut guard = ServerGuard::start_in(&data, zone, "127.0.0.1:0", &[]);
        guard._dir = Some(dir);
        guard
    }

    /// Starts a server on data directory `data` (created if absent), listening on `listen`,
    /// with `extra` arguments (e.g. `--passphrase-file F`).
    pub fn start_in(data: &Path, zone: &str, listen: &str, extra: &[&str]) -> ServerGuard {
        let log = data.with_extension("log");
        let (child, stdout, url) = spawn(data, zone, listen, extra, &log);
        ServerGuard {
            child: Some(child),
            _stdout: Some(stdout),
            url,
            zone: zone.to_string(),
            data: data.to_path_buf(),
            log,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            _dir: None,
        }
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches("/v2")
            .to_string()
    }

    /// Kills the server with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self._stdout = None;
    }

    /// Stops the server with SIGTERM and waits for a graceful exit; returns its exit success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let ok = child.wait().map(|s| s.success()).unwrap_or(false);
        self._stdout = None;
        ok
    }

    /// Starts the server again (after [`ServerGuard::kill_9`] or [`ServerGuard::stop`]) on the
    /// same data directory and the same port; kills it first if it still runs.
    pub fn restart(&mut self) {
        self.kill_9();
        let listen = self.addr();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, stdout, url) = spawn(&self.data, &self.zone, &listen, &extra, &self.log);
        assert_eq!(url, self.url, "the server came back on another address");
        self.child = Some(child);
        self._stdout = Some(stdout);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new organization on this server's data directory, and a client for it.
    pub fn new_client(&self) -> KmsClient {
        KmsClient::new(&self.url, create_org(&self.data))
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn spawn(
    data: &Path,
    zone: &str,
    listen: &str,
    extra: &[&str],
    log: &Path,
) -> (Child, BufReader<ChildStdout>, String) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the server log");
    let mut child = Command::new(kmsfs_bin())
        .args(["kms", "serve", "--zone", zone, "--listen", listen, "--data"])
        .arg(data)
        .args(extra)
        .env("KMSFS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start kmsfs kms serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        stdout
    });
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "the server printed nothing in time; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    };
    let stdout = reader.join().expect("reader thread");
    let prefix = "kmsfs kms: listening on ";
    let Some(rest) = line.trim_end().strip_prefix(prefix) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "unexpected first line {line:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    let url = rest
        .split(' ')
        .next()
        .expect("a URL after 'listening on'")
        .to_string();
    assert!(rest.ends_with(&format!("(zone {zone})")), "line: {line:?}");
    (child, stdout, url)
}

/// A TCP connection to `addr` (`host:port`) from the loopback address `source` (any of
/// 127.0.0.0/8), so that a test can be several clients at once.
pub fn connect_from(source: [u8; 4], addr: &str) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let target: std::net::SocketAddr = addr.parse().expect("a host:port address");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// Credentials printed by `kmsfs kms org create`.
#[derive(Debug, Clone)]
pub struct OrgCreds {
    /// Organization id.
    pub org: String,
    /// API key.
    pub api_key: String,
    /// API secret.
    pub api_secret: String,
    /// The whole JSON printed.
    pub json: String,
}

/// Runs `kmsfs kms org create` on `data` (while a server runs there or not).
pub fn create_org(data: &Path) -> OrgCreds {
    create_org_with(data, "test-org", &[])
}

/// [`create_org`] with a name and extra arguments.
pub fn create_org_with(data: &Path, name: &str, extra: &[&str]) -> OrgCreds {
    let out = Command::new(kmsfs_bin())
        .args(["kms", "org", "create", name, "--data"])
        .arg(data)
        .args(extra)
        .output()
        .expect("run kmsfs kms org create");
    assert!(
        out.status.success(),
        "org create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).expect("utf-8");
    let v: Value = serde_json::from_str(&json).expect("org create prints JSON");
    let field = |name: &str| v[name].as_str().expect(name).to_string();
    OrgCreds {
        org: field("org"),
        api_key: field("api-key"),
        api_secret: field("api-secret"),
        json,
    }
}

/// A small signed HTTP client of the KMS API for tests.
pub struct KmsClient {
    /// Base URL ending in `/v2`.
    pub base: String,
    /// The credentials it signs with.
    pub creds: OrgCreds,
    http: reqwest::blocking::Client,
}

impl KmsClient {
    /// A client of `base` (`http://HOST:PORT/v2`) with `creds`.
    pub fn new(base: &str, creds: OrgCreds) -> KmsClient {
        KmsClient::with_root_pem(base, creds, None)
    }

    /// A client that also trusts the PEM certificate `root` (for a test server's HTTPS).
    pub fn with_root_pem(base: &str, creds: OrgCreds, root: Option<&[u8]>) -> KmsClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = root {
            let cert = reqwest::Certificate::from_pem(pem).expect("a PEM certificate");
            builder = builder.add_root_certificate(cert);
        }
        KmsClient {
            base: base.to_string(),
            creds,
            http: builder.build().expect("HTTP client"),
        }
    }

    /// The path part of the base URL plus `path` (`/v2/kms-key...`), as signed.
    pub fn full_path(&self, path: &str) -> String {
        let after_scheme = self.base.split("://").nth(1).unwrap_or(&self.base);
        let base_path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
        format!("{base_path}{path}")
    }

    /// The `Authorization` value for a request, signed with `secret`, expiring at `expires`.
    pub fn authorization(
        &self,
        secret: &str,
        method: &str,
        path: &str,
        body: &[u8],
        expires: i64,
    ) -> String {
        let credentials = Credentials {
            key: self.creds.api_key.clone(),
            secret: SecretBytes::new(secret.as_bytes().to_vec()),
        };
        sign::authorization(
            &credentials,
            method,
            &self.full_path(path),
            body,
            &[],
            expires,
        )
    }

    /// Sends `method path` (relative to `/v2`) with `body` and the given `Authorization` (none
    /// when `None`); returns status, content type and the body parsed as JSON (Null if not).
    pub fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> (u16, String, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, url).body(body.to_vec());
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        let response = request.send().expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response.bytes().expect("a body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, json)
    }

    /// A correctly signed call: `method path` (relative to `/v2`, e.g. `/kms-key`) with an
    /// optional JSON body. Returns status and JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let expires = now() + 300;
        let auth = self.authorization(&self.creds.api_secret, method, path, &bytes, expires);
        let (status, _, json) = self.send_raw(method, path, &bytes, Some(&auth));
        (status, json)
    }

    /// Creates a key named `name` and returns its id; panics on failure.
    pub fn create_key(&self, name: &str) -> String {
        self.create_key_with(name, serde_json::json!({ "name": name }))
    }

    /// Creates a multi-zone key named `name` and returns its id; panics on failure.
    pub fn create_multi_zone_key(&self, name: &str) -> String {
        self.create_key_with(
            name,
            serde_json::json!({ "name": name, "multi-zone": true }),
        )
    }

    fn create_key_with(&self, name: &str, body: Value) -> String {
        let (status, key) = self.call("POST", "/kms-key", Some(&body));
        assert_eq!(status, 200, "create {name}: {key}");
        key["id"].as_str().expect("an id").to_string()
    }
}

/// The current UNIX time.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Asserts a problem document with `status` and `title`; returns its detail.
#[track_caller]
pub fn assert_problem(answer: (u16, Value), status: u16, title: &str) -> String {
    let (got, body) = answer;
    assert_eq!(got, status, "expected {status} {title}, got {body}");
    assert_eq!(body["title"], title, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["type"].is_string(), "{body}");
    body["detail"].as_str().expect("a detail").to_string()
}

/// Asserts a 200 answer and returns its JSON.
#[track_caller]
pub fn ok(answer: (u16, Value)) -> Value {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1
}

/// `POST /kms-key/KEY/OP` with a JSON body.
pub fn post(c: &KmsClient, key: &str, op: &str, body: Value) -> (u16, Value) {
    c.call("POST", &format!("/kms-key/{key}/{op}"), Some(&body))
}

/// `GET /kms-key/KEY`, which must succeed.
pub fn get_key(c: &KmsClient, key: &str) -> Value {
    ok(c.call("GET", &format!("/kms-key/{key}"), None))
}

/// The id of the Default Organization Key, from the list.
pub fn default_key(c: &KmsClient) -> String {
    let list = ok(c.call("GET", "/kms-key", None));
    let keys = list["kms-keys"].as_array().expect("kms-keys");
    let default = keys
        .iter()
        .find(|k| k["name"] == "Default Organization Key")
        .expect("the Default Organization Key is listed");
    default["id"].as_str().expect("id").to_string()
}

/// A self-signed P-256 certificate for 127.0.0.1 (and its key), made by `openssl` in `dir`:
/// `(cert.pem, key.pem)`, for servers started with `--tls-cert`/`--tls-key`.
#[allow(dead_code)]
pub fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (cert, key)
}

/// `kmsfs kms serve --zone ZONE --listen 127.0.0.1:0 --data DATA`, not started: for the tests
/// that watch a server refuse to start.
#[allow(dead_code)]
pub fn serve_command(zone: &str, data: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(super::kmsfs_bin());
    command
        .args([
            "kms",
            "serve",
            "--zone",
            zone,
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data);
    command
}
