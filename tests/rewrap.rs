//! `kmsfs rewrap` after `kmsfs key rotate`: headers change, content bytes never do; idempotent;
//! safe to kill half way; safe on a mounted directory with a file held open.

mod common;

use common::{Env, pattern};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// `kmsfs rewrap` that must succeed; its stdout.
fn rewrap(env: &Env, extra: &[&str]) -> String {
    let out = env.rewrap_with(extra);
    assert!(
        out.status.success(),
        "kmsfs rewrap {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `n` files of mixed sizes (some empty) in a few directories through a mount; returns
/// their names and their cipher paths, in the same order.
fn populate(env: &Env, n: usize) -> (Vec<String>, Vec<PathBuf>) {
    let mount = env.mount();
    let mut names = Vec::new();
    for d in 0..4 {
        fs::create_dir(env.plain.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..n {
        let name = format!("d{}/f{i:05}", i % 4);
        let size = match i % 10 {
            0 => 0,
            1 => 1,
            2 => 4096,
            3 => 20_000,
            _ => (i * 37) % 9000,
        };
        fs::write(env.plain.join(&name), pattern(size, i as u64)).expect("write");
        names.push(name);
    }
    let map = env.cipher_map();
    let cipher = names.iter().map(|n| map[Path::new(n)].clone()).collect();
    mount.unmount();
    (names, cipher)
}

/// (header, SHA-256 of everything after it) of each cipher file.
fn snapshot(cipher: &[PathBuf]) -> Vec<(Vec<u8>, [u8; 32])> {
    cipher
        .iter()
        .map(|path| {
            let bytes = fs::read(path).expect("read cipher file");
            let split = bytes.len().min(512);
            (
                bytes[..split].to_vec(),
                kmsfs::crypto::sha256(&bytes[split..]),
            )
        })
        .collect()
}

fn version_of(env: &Env, path: &Path) -> serde_json::Value {
    let out: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", Env::s(path)])).expect("json");
    out["key-material-version"].clone()
}

fn fsck_clean(env: &Env) {
    let out = env.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rewrap_of_1000_files_changes_every_header_and_no_content_byte() {
    let env = Env::new();
    env.init();
    let (names, cipher) = populate(&env, 1000);
    let before = snapshot(&cipher);
    let non_empty = before.iter().filter(|(h, _)| !h.is_empty()).count();
    env.rotate_key();
    let dry = rewrap(&env, &["--dry-run"]);
    assert!(dry.contains(&format!("{non_empty} to rewrap")), "{dry}");
    assert_eq!(snapshot(&cipher), before, "a dry run changes nothing");

    let summary = rewrap(&env, &[]);
    assert!(
        summary.contains(&format!(
            "1000 files seen, {} empty, 0 already current, {non_empty} rewrapped, 0 failed",
            1000 - non_empty
        )),
        "{summary}"
    );
    let after = snapshot(&cipher);
    for (i, ((h0, c0), (h1, c1))) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            c0, c1,
            "{}: content bytes after the header changed",
            names[i]
        );
        if h0.is_empty() {
            assert!(h1.is_empty());
        } else {
            assert_ne!(h0, h1, "{}: header not rewritten", names[i]);
            assert_eq!(
                h0[..28],
                h1[..28],
                "{}: magic, version and file id stay",
                names[i]
            );
        }
    }
    assert_eq!(version_of(&env, &cipher[3]), 2);

    let again = rewrap(&env, &[]);
    assert!(
        again.contains(&format!("{non_empty} already current, 0 rewrapped")),
        "{again}"
    );
    assert_eq!(snapshot(&cipher), after, "a second run changes nothing");

    fsck_clean(&env);
    let _mount = env.mount();
    for (i, name) in names.iter().enumerate() {
        let expected_len = fs::metadata(env.plain.join(name)).expect("stat").len() as usize;
        assert_eq!(
            fs::read(env.plain.join(name)).expect("read"),
            pattern(expected_len, i as u64),
            "{name}"
        );
    }
}

#[test]
fn rewrap_killed_half_way_leaves_every_file_readable_and_a_rerun_finishes() {
    let env = Env::new();
    env.init();
    let (_, cipher) = populate(&env, 1000);
    let before = snapshot(&cipher);
    env.rotate_key();
    let mut child = env
        .cmd()
        .args([
            "rewrap",
            Env::s(&env.cipher),
            "--jobs",
            "1",
            "--passphrase-file",
            Env::s(&env.passfile),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rewrap");
    // Files are re-wrapped in path order with one job: wait until an early one is done.
    let mut sorted: Vec<PathBuf> = cipher.clone();
    sorted.sort();
    let probe = sorted[40..]
        .iter()
        .find(|p| fs::metadata(p).expect("stat").len() > 0)
        .expect("a non-empty file");
    let original = fs::read(probe).expect("read")
        [..512.min(fs::metadata(probe).expect("stat").len() as usize)]
        .to_vec();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while fs::read(probe).expect("read")[..original.len()] == original[..] {
        assert!(
            std::time::Instant::now() < deadline,
            "rewrap made no progress"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "rewrap finished before it could be killed"
        );
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let partial = snapshot(&cipher);
    let changed = partial
        .iter()
        .zip(&before)
        .filter(|(a, b)| a.0 != b.0)
        .count();
    assert!(
        changed > 0 && changed < 900,
        "killed half way: {changed} headers changed"
    );
    fsck_clean(&env);
    let summary = rewrap(&env, &[]);
    assert!(summary.contains(", 0 failed"), "{summary}");
    let again = rewrap(&env, &[]);
    assert!(again.contains(" 0 rewrapped"), "{again}");
    fsck_clean(&env);
}

#[test]
fn rewrap_on_a_mounted_directory_with_a_file_held_open() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    for i in 0..50 {
        fs::write(env.plain.join(format!("f{i}")), pattern(10_000, i)).expect("write");
    }
    let mut held = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.plain.join("f7"))
        .expect("open");
    env.rotate_key();
    let summary = rewrap(&env, &[]);
    assert!(summary.contains("50 rewrapped, 0 failed"), "{summary}");
    // The open file keeps working, reads and writes.
    let mut buf = Vec::new();
    held.read_to_end(&mut buf).expect("read the held file");
    assert_eq!(buf, pattern(10_000, 7));
    held.seek(SeekFrom::Start(5000)).expect("seek");
    held.write_all(b"written after the rewrap")
        .expect("write the held file");
    drop(held);
    // New opens read the new header.
    for i in 0..50u64 {
        let data = fs::read(env.plain.join(format!("f{i}"))).expect("read");
        if i == 7 {
            assert_eq!(&data[5000..5024], b"written after the rewrap");
        } else {
            assert_eq!(data, pattern(10_000, i));
        }
    }
    let f = fs::File::open(env.plain.join("f3")).expect("open");
    let mut head = [0u8; 4];
    f.read_exact_at(&mut head, 0).expect("read");
    assert_eq!(version_of(&env, &env.cipher_path("f7")), 2);
    // New files take the newest material at once.
    fs::write(env.plain.join("new"), b"new").expect("write");
    assert_eq!(version_of(&env, &env.cipher_path("new")), 2);
}

#[test]
fn rewrap_to_another_key_moves_version_2_files_and_everything_reads() {
    let env = Env::new();
    env.init();
    let (names, cipher) = populate(&env, 200);
    let before = snapshot(&cipher);
    let non_empty = before.iter().filter(|(h, _)| !h.is_empty()).count();
    let old = uuid::Uuid::parse_str(&env.key_id()).expect("uuid");

    // A key that does not exist: refused before any header is touched.
    let nowhere = uuid::Uuid::from_bytes([0x5a; 16]).to_string();
    let out = env.run(&[
        "rewrap",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&env.passfile),
        "--to-key",
        &nowhere,
    ]);
    assert!(!out.status.success(), "rewrap to a key that does not exist");
    assert_eq!(
        snapshot(&cipher),
        before,
        "a refused rewrap changes nothing"
    );

    let new = uuid::Uuid::parse_str(&env.create_key("destination")).expect("uuid");
    let summary = rewrap(&env, &["--to-key", &new.to_string()]);
    assert!(
        summary.contains(&format!("{non_empty} rewrapped, 0 failed")),
        "{summary}"
    );
    let after = snapshot(&cipher);
    for (i, ((h0, c0), (h1, c1))) in before.iter().zip(&after).enumerate() {
        assert_eq!(c0, c1, "{}: content bytes changed", names[i]);
        if h0.is_empty() {
            continue;
        }
        assert_eq!(&h0[..8], b"KMSFS\0\0\x02", "{}: version 2 before", names[i]);
        assert_eq!(
            h0[..28],
            h1[..28],
            "{}: magic, version and file id stay",
            names[i]
        );
        assert_eq!(&h0[28..44], old.as_bytes(), "{}", names[i]);
        assert_eq!(&h1[28..44], new.as_bytes(), "{}: the new key id", names[i]);
    }
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", Env::s(&cipher[3])])).expect("json");
    assert_eq!(
        (shown["header-version"].as_u64(), shown["key-id"].as_str()),
        (Some(2), Some(new.to_string().as_str())),
        "{shown}"
    );
    let again = rewrap(&env, &["--to-key", &new.to_string()]);
    assert!(
        again.contains(&format!("{non_empty} already current, 0 rewrapped")),
        "{again}"
    );
    fsck_clean(&env);
    {
        let _mount = env.mount();
        for (i, name) in names.iter().enumerate() {
            let len = fs::metadata(env.plain.join(name)).expect("stat").len() as usize;
            assert_eq!(
                fs::read(env.plain.join(name)).expect("read"),
                pattern(len, i as u64),
                "{name}"
            );
        }
    }

    // The moved DEK is bound to its new key id: a header whose key id is put back to the old
    // key does not open, and fsck names the file.
    let (index, moved_back) = cipher
        .iter()
        .enumerate()
        .find(|(_, p)| fs::metadata(p).expect("stat").len() > 0)
        .expect("a non-empty file");
    let f = OpenOptions::new()
        .write(true)
        .open(moved_back)
        .expect("open");
    f.write_all_at(old.as_bytes(), 28)
        .expect("put the old key id back");
    drop(f);
    let out = env.fsck();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report.lines().count(), 1, "{report}");
    assert!(
        report.starts_with(&format!(
            "{} (plaintext /{}): header: ",
            moved_back.display(),
            names[index]
        )),
        "{report}"
    );
    let _mount = env.mount();
    let err = fs::read(env.plain.join(&names[index])).expect_err("the old key id");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}
