//! How `kmsfs kms serve` is set up: HTTPS with a PEM certificate, a data directory sealed
//! under a passphrase, `org import`, and the official Python client pointed at it.

mod common;

use common::kms_server::{KmsClient, ServerGuard, create_org_with};
use common::kmsfs_bin;
use serde_json::json;
use std::process::{Command, Stdio};

const ZONE: &str = "ch-dk-2";

#[test]
fn https_with_a_pem_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = common::kms_server::self_signed_cert(dir.path());
    let data = dir.path().join("data");
    let tls = [
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    let server = ServerGuard::start_in(&data, ZONE, "127.0.0.1:0", &tls);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let pem = std::fs::read(&cert).expect("cert");
    let c = KmsClient::with_root_pem(&server.url, create_org_with(&data, "tls", &[]), Some(&pem));
    let id = c.create_key("over-tls");
    let (status, _) = c.call(
        "POST",
        &format!("/kms-key/{id}/encrypt"),
        Some(&json!({"plaintext": "eA=="})),
    );
    assert_eq!(status, 200);
    // A client that does not trust the certificate is refused by TLS itself.
    let untrusting = KmsClient::new(&server.url, c.creds.clone());
    let http = reqwest::blocking::Client::new();
    assert!(
        http.get(format!("{}/kms-key", untrusting.base))
            .send()
            .is_err()
    );
}

#[test]
fn passphrase_sealed_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "a long server passphrase\n").expect("write");
    let pass_arg = ["--passphrase-file", pass.to_str().expect("utf-8")];
    let data = dir.path().join("data");
    let mut server = ServerGuard::start_in(&data, ZONE, "127.0.0.1:0", &pass_arg);
    assert!(
        !data.join("root.key").exists(),
        "no key file with a passphrase"
    );
    let creds = create_org_with(&data, "sealed", &pass_arg);
    let c = KmsClient::new(&server.url, creds);
    let id = c.create_key("k");
    // Without the passphrase, neither org create nor the server opens the directory.
    let out = Command::new(kmsfs_bin())
        .args(["kms", "org", "create", "x", "--data"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase"));
    server.kill_9();
    let out = common::kms_server::serve_command(ZONE, &data)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").expect("write");
    let out = common::kms_server::serve_command(ZONE, &data)
        .arg("--passphrase-file")
        .arg(&wrong)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    let server = ServerGuard::start_in(&data, ZONE, "127.0.0.1:0", &pass_arg);
    let c = KmsClient::new(&server.url, c.creds.clone());
    let (status, key) = c.call("GET", &format!("/kms-key/{id}"), None);
    assert_eq!((status, key["name"].as_str()), (200, Some("k")));
}

#[test]
fn org_import_installs_the_same_credentials_elsewhere() {
    let first = ServerGuard::start(ZONE);
    let creds = create_org_with(&first.data, "shared", &[]);
    let other = tempfile::tempdir().expect("tempdir");
    let data = other.path().join("data");
    let import = |input: &str| {
        let mut child = Command::new(kmsfs_bin())
            .args(["kms", "org", "import", "--data"])
            .arg(&data)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    assert!(import(&creds.json).status.success());
    assert!(
        import(&creds.json).status.success(),
        "importing twice is fine"
    );
    assert!(
        !import("{\"org\": 1}").status.success(),
        "garbage is refused"
    );
    let server = ServerGuard::start_in(&data, "at-vie-1", "127.0.0.1:0", &[]);
    let c = KmsClient::new(&server.url, creds);
    assert_eq!(c.call("GET", "/kms-key", None).0, 200);
}

/// The official Python client (`pip install exoscale==0.16.4`, which ships this API's spec),
/// pointed at our server with `url=`, works unchanged. Skipped when it is not installed.
#[test]
fn the_official_python_client_works_unchanged() {
    let server = ServerGuard::start(ZONE);
    let creds = create_org_with(&server.data, "python", &[]);
    common::python_client::check(&server.url, &creds.json);
}
