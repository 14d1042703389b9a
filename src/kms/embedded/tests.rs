//! The embedded KMS over real files in a temporary directory, with cheap Argon2 costs.

use super::*;
use crate::kms::Refusal;
use crate::kms::blob::blob_key_version;
use crate::kms::clock::ManualClock;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::os::unix::fs::PermissionsExt;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const CHEAP: KdfParams = KdfParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

fn pass(text: &str) -> SecretBytes {
    SecretBytes::new(text.as_bytes().to_vec())
}

fn request(name: &str) -> wire::CreateKeyRequest {
    wire::CreateKeyRequest {
        name: name.to_string(),
        description: None,
        usage: None,
        multi_zone: false,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    kms: EmbeddedKms,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keystore");
    let clock = Arc::new(ManualClock::new(T0));
    let kms = EmbeddedKms::create_with_params(
        &path,
        &pass("correct horse"),
        "embedded",
        CHEAP,
        clock.clone(),
    )
    .expect("creates");
    Setup {
        _dir: dir,
        path,
        kms,
        clock,
    }
}

fn keystore_message<T: std::fmt::Debug>(result: Result<T, KmsError>) -> String {
    match result {
        Err(KmsError::Keystore(e)) => e.to_string(),
        other => panic!("expected a keystore error, got {other:?}"),
    }
}

fn is_refused(result: Result<impl std::fmt::Debug, KmsError>, expected: Refusal) -> bool {
    result.err().and_then(|e| e.refusal()) == Some(expected)
}

#[test]
fn embedded_kms_is_send_and_sync_and_debug_hides_the_passphrase() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<EmbeddedKms>();
    let s = setup();
    let shown = format!("{:?}", s.kms);
    assert!(shown.contains("keystore") && !shown.contains("horse"));
}

#[test]
fn create_then_open_round_trips_keys_and_ciphertexts() {
    let s = setup();
    assert_eq!(s.kms.path(), s.path.as_path());
    let default = s.kms.default_key_id().expect("has a default key");
    let key = s.kms.create_key(&request("data")).expect("creates");
    assert_eq!(key.created_at, T0);
    let blob = s
        .kms
        .encrypt(key.id, b"hello", Some(b"ctx"))
        .expect("encrypts");
    let reopened = EmbeddedKms::open(&s.path, &pass("correct horse")).expect("opens");
    assert_eq!(reopened.default_key_id(), Some(default));
    assert_eq!(
        reopened.list_keys().expect("lists"),
        s.kms.list_keys().expect("lists")
    );
    let plain = reopened
        .decrypt(key.id, &blob, Some(b"ctx"))
        .expect("decrypts");
    assert_eq!(plain.expose_secret(), b"hello");
    let again =
        EmbeddedKms::create_with_params(&s.path, &pass("x"), "embedded", CHEAP, s.clock.clone());
    assert!(keystore_message(again).contains("already exists"));
}

#[test]
fn open_names_the_problem_in_one_sentence() {
    let s = setup();
    let shown = s.path.display().to_string();
    let result = EmbeddedKms::open(&s.path, &pass("wrong horse"));
    assert!(matches!(
        &result,
        Err(KmsError::Keystore(KeystoreError::WrongPassphrase { path })) if *path == s.path
    ));
    let wrong = keystore_message(result);
    assert_eq!(wrong, format!("wrong passphrase for the keystore {shown}"));
    let missing_path = s.path.with_file_name("absent");
    let missing = keystore_message(EmbeddedKms::open(&missing_path, &pass("x")));
    assert_eq!(
        missing,
        format!(
            "there is no keystore at {}; create one with `kmsfs init`",
            missing_path.display()
        )
    );
    let original = std::fs::read(&s.path).expect("reads");
    let mut doc: serde_json::Value = serde_json::from_slice(&original).expect("JSON");
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let rows: Vec<(&str, Edit, &str)> = vec![
        (
            "version",
            Box::new(|d| d["version"] = 2.into()),
            "unsupported keystore version 2",
        ),
        (
            "format",
            Box::new(|d| d["format"] = "other".into()),
            "not a kmsfs keystore",
        ),
        (
            "extra field",
            Box::new(|d| d["extra"] = 1.into()),
            "not a kmsfs keystore",
        ),
        (
            "memory",
            Box::new(|d| d["kdf"]["m-cost-kib"] = u32::MAX.into()),
            "out of range",
        ),
        (
            "lanes",
            Box::new(|d| d["kdf"]["p-cost"] = 0.into()),
            "out of range",
        ),
        (
            "nonce",
            Box::new(|d| d["nonce"] = "AAAA".into()),
            "wrong length",
        ),
        (
            "sealed",
            Box::new(|d| d["sealed"] = BASE64.encode([0u8; 64]).into()),
            "authentication failed",
        ),
    ];
    for (name, edit, expected) in rows {
        let mut edited = doc.clone();
        edit(&mut edited);
        std::fs::write(&s.path, serde_json::to_vec(&edited).expect("JSON")).expect("writes");
        let message = keystore_message(EmbeddedKms::open(&s.path, &pass("correct horse")));
        assert!(
            message.starts_with(&format!("the keystore {shown} is damaged")),
            "{name}: {message}"
        );
        assert!(message.contains(expected), "{name}: {message}");
    }
    doc["kdf"]["salt"] = BASE64.encode([7u8; 16]).into();
    std::fs::write(&s.path, serde_json::to_vec(&doc).expect("JSON")).expect("writes");
    let message = keystore_message(EmbeddedKms::open(&s.path, &pass("correct horse")));
    assert!(
        message.starts_with("wrong passphrase"),
        "another salt derives other keys"
    );
}

#[test]
fn every_flipped_byte_and_every_truncation_is_refused() {
    let s = setup();
    s.kms.create_key(&request("data")).expect("creates");
    let original = std::fs::read(&s.path).expect("reads");
    let shown = s.path.display().to_string();
    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&s.path, bytes).expect("writes");
        let message = keystore_message(EmbeddedKms::open(&s.path, &pass("correct horse")));
        let damaged = message.starts_with(&format!("the keystore {shown} is damaged ("));
        let wrong = message == format!("wrong passphrase for the keystore {shown}");
        assert!(damaged || wrong, "{what}: {message}");
    };
    for i in 0..original.len() {
        for bit in [0x01, 0x80] {
            let mut bytes = original.clone();
            bytes[i] ^= bit;
            check(&bytes, &format!("byte {i} ^ {bit:#x}"));
        }
    }
    for len in [0, 1, original.len() / 2, original.len() - 2] {
        check(&original[..len], &format!("first {len} bytes"));
    }
    std::fs::write(&s.path, &original).expect("writes");
    assert!(EmbeddedKms::open(&s.path, &pass("correct horse")).is_ok());
}

#[test]
fn a_second_handle_sees_changes_made_by_the_first() {
    let s = setup();
    let other = EmbeddedKms::open(&s.path, &pass("correct horse")).expect("opens");
    let key = s.kms.create_key(&request("shared")).expect("creates");
    assert_eq!(
        other
            .get_key(key.id)
            .expect("sees the new key")
            .material
            .version,
        1
    );
    let old = other.encrypt(key.id, b"before", None).expect("encrypts");
    s.kms.rotate_key(key.id).expect("rotates");
    assert_eq!(other.get_key(key.id).expect("found").material.version, 2);
    let new = other.encrypt(key.id, b"after", None).expect("encrypts");
    assert_eq!(blob_key_version(&new), Some((key.id, 2)));
    assert_eq!(
        s.kms
            .decrypt(key.id, &old, None)
            .expect("decrypts")
            .expose_secret(),
        b"before"
    );
    other.disable_key(key.id).expect("disables");
    assert!(is_refused(
        s.kms.encrypt(key.id, b"x", None),
        Refusal::KeyDisabled
    ));
    std::fs::remove_file(&s.path).expect("removes");
    assert!(keystore_message(other.get_key(key.id)).contains("there is no keystore"));
}

#[test]
fn concurrent_writers_lose_no_update() {
    let s = setup();
    let shared = Arc::new(s.kms);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let kms: Arc<EmbeddedKms> = if t % 2 == 0 {
                Arc::clone(&shared)
            } else {
                Arc::new(EmbeddedKms::open(&s.path, &pass("correct horse")).expect("opens"))
            };
            std::thread::spawn(move || {
                for i in 0..5 {
                    kms.create_key(&request(&format!("t{t}-k{i}")))
                        .expect("creates");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread finishes");
    }
    let fresh = EmbeddedKms::open(&s.path, &pass("correct horse")).expect("opens");
    assert_eq!(fresh.list_keys().expect("lists").len(), 1 + 8 * 5);
    assert_eq!(shared.list_keys().expect("lists").len(), 1 + 8 * 5);
}

#[test]
fn files_are_private_and_hold_no_material_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new").join("sub").join("keystore");
    let clock = Arc::new(SystemClock);
    let kms = EmbeddedKms::create_with_params(&path, &pass("pw"), "embedded", CHEAP, clock)
        .expect("creates");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("parent")), 0o700);
    let key = kms.create_key(&request("visible-name")).expect("creates");
    kms.rotate_key(key.id).expect("rotates");
    let dek = kms
        .generate_data_key(key.id, DataKeySpec::Aes256, None)
        .expect("generates");
    assert_eq!(mode(&path), 0o600, "after a rewrite too");
    let file = std::fs::read(&path).expect("reads");
    let text = String::from_utf8_lossy(&file).into_owned();
    let mut secrets = vec![dek.plaintext.expose_secret().to_vec()];
    for version in [1, 2] {
        let material = kms
            .state()
            .keyring
            .material_for_test(key.id, version)
            .expect("present");
        secrets.push(material.expose_secret().to_vec());
    }
    for secret in &secrets {
        assert!(
            !file.windows(secret.len()).any(|w| w == secret.as_slice()),
            "raw bytes"
        );
        assert!(!text.contains(&BASE64.encode(secret)), "base64");
    }
    assert!(
        !text.contains("visible-name"),
        "the keyring is sealed as a whole"
    );
    let names: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "keystore" || n == "keystore.lock"),
        "no temp left: {names:?}"
    );
}

#[test]
fn scheduler_uses_the_injected_clock_and_writes_only_when_it_changes_something() {
    let s = setup();
    let key = s.kms.create_key(&request("k")).expect("creates");
    assert!(s.kms.run_scheduler().expect("runs").is_empty());
    s.clock.advance_days(366);
    let report = s.kms.run_scheduler().expect("runs");
    assert_eq!(
        report.rotated.len(),
        2,
        "the key and the Default Organization Key"
    );
    let reopened = EmbeddedKms::open(&s.path, &pass("correct horse")).expect("opens");
    let seen = reopened.get_key(key.id).expect("found");
    assert_eq!((seen.material.version, seen.material.automatic), (2, true));
    let before = std::fs::read(&s.path).expect("reads");
    assert!(s.kms.run_scheduler().expect("runs").is_empty());
    assert_eq!(
        s.kms.enable_key(key.id).expect("enables"),
        Applied::AlreadyApplied
    );
    assert!(is_refused(
        s.kms.rotate_key(s.kms.default_key_id().expect("default")),
        Refusal::NotOnDefault
    ));
    assert!(s.kms.schedule_deletion(key.id, Some(7)).is_ok());
    let pending = std::fs::read(&s.path).expect("reads");
    assert_ne!(before, pending, "a real change is written");
    assert!(s.kms.schedule_deletion(key.id, Some(8)).is_ok());
    assert_eq!(
        std::fs::read(&s.path).expect("reads"),
        pending,
        "no-ops and refusals write nothing"
    );
    s.clock.advance_days(7);
    assert_eq!(s.kms.run_scheduler().expect("runs").destroyed, vec![key.id]);
    assert!(is_refused(reopened.get_key(key.id), Refusal::KeyNotFound));
}

/// A key of `s` rotating automatically every `days` days, the first time `days` from now.
fn rotating_key(s: &Setup, name: &str, days: i64) -> Uuid {
    let key = s.kms.create_key(&request(name)).expect("creates");
    s.kms
        .disable_rotation(key.id)
        .expect("the default goes off");
    s.kms
        .enable_rotation(key.id, Some(days))
        .expect("rotation on");
    key.id
}

/// The versions of the rotations of `id`, oldest first.
fn rotated_versions(kms: &EmbeddedKms, id: Uuid) -> Vec<u32> {
    let rotations = kms.list_rotations(id).expect("lists");
    rotations.iter().map(|r| r.version).collect()
}

#[test]
fn housekeeping_rotates_a_key_once_per_period_at_the_clocks_time() {
    let s = setup();
    let key = rotating_key(&s, "k", 90);
    s.clock.advance_days(89);
    assert_eq!(s.kms.housekeeping().expect("runs"), None);
    s.clock.advance_days(1);
    let line = s.kms.housekeeping().expect("runs").expect("a line");
    assert!(line.contains(&key.to_string()), "{line}");
    assert_eq!(rotated_versions(&s.kms, key), vec![2]);
    let rotation = &s.kms.list_rotations(key).expect("lists")[0];
    assert_eq!(
        (rotation.rotated_at, rotation.automatic),
        (T0 + time::Duration::days(90), true)
    );
    assert_eq!(s.kms.housekeeping().expect("runs"), None, "not twice");
    s.clock.advance_days(90);
    assert!(s.kms.housekeeping().expect("runs").is_some());
    let reopened = EmbeddedKms::open(&s.path, &pass("correct horse")).expect("opens");
    assert_eq!(rotated_versions(&reopened, key), vec![2, 3], "written");
}

#[test]
fn housekeeping_destroys_a_key_at_delete_at_and_spares_a_cancelled_one() {
    let s = setup();
    let doomed = s.kms.create_key(&request("doomed")).expect("creates").id;
    let spared = s.kms.create_key(&request("spared")).expect("creates").id;
    let delete_at = s.kms.schedule_deletion(doomed, Some(7)).expect("schedules");
    s.kms.schedule_deletion(spared, Some(7)).expect("schedules");
    assert_eq!(delete_at, T0 + time::Duration::days(7));
    s.clock.advance_days(6);
    assert_eq!(s.kms.housekeeping().expect("runs"), None);
    assert!(is_refused(
        s.kms.rotate_key(doomed),
        Refusal::KeyPendingDeletion
    ));
    assert!(is_refused(
        s.kms.enable_key(doomed),
        Refusal::KeyPendingDeletion
    ));
    s.kms
        .cancel_deletion(spared)
        .expect("cancels before delete-at");

    s.clock.advance_days(1);
    let line = s.kms.housekeeping().expect("runs").expect("a line");
    assert!(
        line.contains("destroyed") && line.contains(&doomed.to_string()),
        "{line}"
    );
    assert!(!line.contains(&spared.to_string()), "{line}");
    assert!(is_refused(s.kms.get_key(doomed), Refusal::KeyNotFound));
    assert!(is_refused(
        s.kms.cancel_deletion(doomed),
        Refusal::KeyNotFound
    ));
    let kept = s.kms.get_key(spared).expect("kept");
    assert_eq!(kept.status, wire::KeyStatus::Disabled);
}

#[test]
fn housekeeping_skips_a_disabled_key_and_a_clock_going_back_changes_nothing() {
    let s = setup();
    let key = rotating_key(&s, "k", 90);
    let disabled = rotating_key(&s, "disabled", 90);
    s.kms.disable_key(disabled).expect("disables");
    s.clock.advance_days(90);
    let line = s.kms.housekeeping().expect("runs").expect("a line");
    assert!(!line.contains(&disabled.to_string()), "{line}");
    assert_eq!(rotated_versions(&s.kms, disabled), Vec::<u32>::new());

    s.clock.advance_days(-80);
    assert_eq!(s.kms.housekeeping().expect("runs"), None, "back in time");
    s.clock.advance_days(80);
    assert_eq!(s.kms.housekeeping().expect("runs"), None, "forward again");
    assert_eq!(
        rotated_versions(&s.kms, key),
        vec![2],
        "neither undone nor repeated"
    );
}

#[test]
fn housekeeping_on_a_keystore_it_cannot_read_fails_and_changes_nothing() {
    let s = setup();
    let key = rotating_key(&s, "k", 90);
    let aside = s.path.with_extension("aside");
    std::fs::rename(&s.path, &aside).expect("moves the keystore aside");
    std::fs::create_dir(&s.path).expect("a directory in its place");
    s.clock.advance_days(90);
    assert!(matches!(s.kms.housekeeping(), Err(KmsError::Keystore(_))));

    std::fs::remove_dir(&s.path).expect("removes the directory");
    std::fs::rename(&aside, &s.path).expect("puts the keystore back");
    assert_eq!(rotated_versions(&s.kms, key), Vec::<u32>::new());
    assert!(s.kms.housekeeping().expect("runs").is_some());
    assert_eq!(rotated_versions(&s.kms, key), vec![2], "once");
}
