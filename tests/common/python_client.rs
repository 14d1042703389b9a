//! The official Exoscale Python client (`pip install exoscale==0.16.4`, which ships this API's
//! spec) against a server, unchanged: create, encrypt, decrypt, rotate, generate-data-key, list
//! and a "Key Not Found" error.

use std::process::Command;

/// The script: argv[1] the base URL, argv[2] the JSON of `kmsfs kms org create`.
pub const SCRIPT: &str = r#"
import base64, json, sys
from exoscale.api.v2 import Client
creds = json.loads(sys.argv[2])
c = Client(creds["api-key"], creds["api-secret"], url=sys.argv[1])
b64 = lambda b: base64.b64encode(b).decode()
k = c.create_kms_key(name="py-key", description="from python")
ct = c.encrypt(id=k["id"], plaintext=b64(b"hello"), encryption_context=b64(b"ctx"))
pt = c.decrypt(id=k["id"], ciphertext=ct["ciphertext"], encryption_context=b64(b"ctx"))
assert base64.b64decode(pt["plaintext"]) == b"hello", pt
assert c.rotate_kms_key(id=k["id"])["rotation"]["manual-count"] == 1
dk = c.generate_data_key(id=k["id"], key_spec="AES-256")
assert len(base64.b64decode(dk["plaintext"])) == 32
names = [x["name"] for x in c.list_kms_keys()["kms-keys"]]
assert names == ["Default Organization Key", "py-key"], names
try:
    c.get_kms_key(id="00000000-0000-4000-8000-000000000000")
    raise SystemExit("an unknown key was found")
except Exception as e:
    assert "Key Not Found" in str(e), e
print("OK")
"#;

/// Runs [`SCRIPT`] against `url` with the credentials `creds_json` and asserts that it passed.
/// Returns false (and says so) when python3 or the exoscale package is not installed.
pub fn check(url: &str, creds_json: &str) -> bool {
    // scripts/test.sh installs the client into a virtual environment under target/.
    let venv = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/python-venv/bin/python3"
    );
    let python = if std::path::Path::new(venv).exists() {
        venv
    } else {
        "python3"
    };
    let probe = Command::new(python)
        .args(["-c", "import exoscale.api.v2"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 with the exoscale package is not installed");
        return false;
    }
    let out = Command::new(python)
        .args(["-c", SCRIPT, url, creds_json])
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
