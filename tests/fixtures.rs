//! Cipher directories of every format version (`testdata/*-fixture/`) keep mounting: a copy is
//! mounted with the fixture's own keystore and passphrase, and every file, symlink and extended
//! attribute reads back as it was written.

mod common;

use common::{Env, MountGuard, pattern};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The regular files of the version 1 fixture: path in the mount, length, `pattern` seed.
const V1_FILES: [(&str, usize, u64); 7] = [
    ("empty", 0, 0),
    ("one-byte", 1, 1),
    ("block", 4096, 2),
    ("block-and-one", 4097, 3),
    ("hundred-kib", 102_400, 4),
    ("dir/nested", 5000, 5),
    ("with-xattr", 10, 6),
];

/// An environment whose cipher directory, keystore and passphrase are a copy of fixture
/// `name`, with the extended attributes git does not keep set again from its `xattrs.tsv`.
fn copy_of(name: &str) -> Env {
    let source = fixture(name);
    let mut env = Env::new();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(source.join("cipher"))
        .arg(&env.cipher)
        .status()
        .expect("run cp");
    assert!(copied.success(), "cp -a of the fixture failed");
    env.keystore = env.dir.path().join("fixture-keystore");
    fs::copy(source.join("keystore"), &env.keystore).expect("copy keystore");
    env.passfile = env.dir.path().join("fixture-passphrase");
    fs::copy(source.join("passphrase"), &env.passfile).expect("copy passphrase");
    let xattrs = fs::read_to_string(source.join("xattrs.tsv")).unwrap_or_default();
    for line in xattrs.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [path, attr, value] = fields[..] else {
            panic!("{name}/xattrs.tsv: expected PATH, NAME, VALUE separated by tabs: {line:?}");
        };
        let target = env.cipher.join(path);
        let set = Command::new("setfattr")
            .args(["-n", attr, "-v", value])
            .arg(&target)
            .status()
            .expect("run setfattr (package attr)");
        assert!(set.success(), "setfattr {attr} on {}", target.display());
    }
    env
}

/// `kmsfs fsck` of a fixture's copy, with its keystore, finds nothing.
fn assert_fsck_clean(env: &Env, keystore: &str) {
    let out = env.fsck_with(&["--keystore", keystore]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck of the fixture: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get_xattr(path: &Path, attr: &str) -> Option<String> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", attr])
        .arg(path)
        .output()
        .expect("run getfattr (package attr)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_version_1_directory_mounts_and_reads_back() {
    let env = copy_of("v1-fixture");
    let conf = fs::read_to_string(env.cipher.join("kmsfs.conf")).expect("kmsfs.conf");
    assert!(conf.contains("\"format-version\": 1"), "{conf}");
    let keystore = Env::s(&env.keystore);
    assert_fsck_clean(&env, keystore);

    let _mount: MountGuard = env.mount_with(&["--keystore", keystore]);
    let p = |path: &str| env.plain.join(path);
    for (path, len, seed) in V1_FILES {
        let got = fs::read(p(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(got.len(), len, "{path}");
        assert!(got == pattern(len, seed), "{path}: wrong bytes");
        assert_eq!(fs::metadata(p(path)).expect("stat").len(), len as u64);
    }
    assert_eq!(
        fs::read_link(p("link")).expect("readlink"),
        Path::new("dir/nested")
    );
    assert!(fs::read(p("link")).expect("through the link") == pattern(5000, 5));
    assert_eq!(
        get_xattr(&p("with-xattr"), "user.kmsfs.fixture").as_deref(),
        Some("format version 1")
    );
    let mut names: Vec<String> = fs::read_dir(&env.plain)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "block",
            "block-and-one",
            "dir",
            "empty",
            "hundred-kib",
            "link",
            "one-byte",
            "with-xattr"
        ],
        "every entry, and kmsfs.conf hidden"
    );
}

/// The regular files of the version 2 fixture: path in the mount, length, `pattern` seed.
fn v2_files() -> Vec<(String, usize, u64)> {
    vec![
        ("empty".into(), 0, 0),
        ("one-byte".into(), 1, 1),
        ("block".into(), 4096, 2),
        ("block-and-one".into(), 4097, 3),
        ("hundred-kib".into(), 102_400, 4),
        ("dir/nested".into(), 5000, 5),
        ("with-xattr".into(), 10, 6),
        ("Grüße, 世界 🌍.txt".into(), 300, 7),
        ("l".repeat(200), 4500, 8),
        (format!("dir/{}", "ü".repeat(100)), 70, 9),
    ]
}

#[test]
fn a_version_2_directory_mounts_and_reads_back() {
    let env = copy_of("v2-fixture");
    let conf = fs::read_to_string(env.cipher.join("kmsfs.conf")).expect("kmsfs.conf");
    assert!(conf.contains("\"format-version\": 2"), "{conf}");
    let keystore = Env::s(&env.keystore);
    assert_fsck_clean(&env, keystore);

    let _mount: MountGuard = env.mount_with(&["--keystore", keystore]);
    let p = |path: &str| env.plain.join(path);
    for (path, len, seed) in v2_files() {
        let got = fs::read(p(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(got.len(), len, "{path}");
        assert!(got == pattern(len, seed), "{path}: wrong bytes");
    }
    assert_eq!(
        fs::read_link(p("link")).expect("readlink"),
        Path::new("dir/nested")
    );
    let long_target = format!("../{}", "l".repeat(200));
    assert_eq!(
        fs::read_link(p("dir/long-link")).expect("readlink"),
        Path::new(&long_target)
    );
    assert!(fs::read(p("dir/long-link")).expect("through the link") == pattern(4500, 8));
    assert_eq!(
        get_xattr(&p("with-xattr"), "user.kmsfs.fixture").as_deref(),
        Some("format version 2")
    );
    assert_eq!(
        get_xattr(&p("dir"), "user.comment").as_deref(),
        Some("a directory's xattr")
    );
    let listing = |dir: &Path| {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut expected: Vec<String> = [
        "Grüße, 世界 🌍.txt",
        "block",
        "block-and-one",
        "dir",
        "empty",
        "hundred-kib",
        "link",
        "one-byte",
        "with-xattr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.push("l".repeat(200));
    expected.sort();
    assert_eq!(
        listing(&env.plain),
        expected,
        "every entry, the internal files hidden"
    );
    let mut in_dir = vec![
        "long-link".to_string(),
        "nested".to_string(),
        "ü".repeat(100),
    ];
    in_dir.sort();
    assert_eq!(listing(&p("dir")), in_dir);
    // This build writes into the old directory.
    fs::write(p("dir/new"), b"made by this build").expect("write");
    assert_eq!(fs::read(p("dir/new")).expect("read"), b"made by this build");
}

#[test]
fn the_fixture_needs_its_keystore_named_since_kmsfs_conf_names_another_path() {
    let env = copy_of("v1-fixture");
    let out = env.run(&env.mount_args());
    assert!(!out.status.success(), "mounted without --keystore");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("there is no keystore at"), "{stderr}");
}

/// The version 1 fixture with its kmsfs.conf naming the copied keystore, for the commands that
/// take no `--keystore` (`rewrap`).
fn copy_of_v1_with_its_keystore() -> Env {
    let env = copy_of("v1-fixture");
    let conf_path = env.cipher.join("kmsfs.conf");
    let mut conf: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&conf_path).expect("kmsfs.conf")).expect("json");
    conf["kms"]["keystore"] = Env::s(&env.keystore).into();
    fs::write(
        &conf_path,
        serde_json::to_string_pretty(&conf).expect("serializes"),
    )
    .expect("write kmsfs.conf");
    env
}

fn header_of(path: &Path) -> Vec<u8> {
    fs::read(path).expect("read cipher file")[..512].to_vec()
}

#[test]
fn version_1_files_stay_version_1_when_rewrapped_and_new_files_get_version_2() {
    let env = copy_of_v1_with_its_keystore();
    let files: Vec<(&str, usize, u64)> = V1_FILES.into_iter().filter(|f| f.1 > 0).collect();
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|(path, ..)| header_of(&env.cipher.join(path)))
        .collect();
    let new_key = uuid::Uuid::parse_str(&env.create_key("destination")).expect("uuid");
    env.ok(&[
        "rewrap",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&env.passfile),
        "--to-key",
        &new_key.to_string(),
    ]);
    for ((path, ..), old) in files.iter().zip(&before) {
        let new = header_of(&env.cipher.join(path));
        assert_eq!(&old[..8], b"KMSFS\0\0\x01", "{path}: version 1 before");
        assert_eq!(
            new[..28],
            old[..28],
            "{path}: still version 1, same file id"
        );
        assert_eq!(&new[28..44], new_key.as_bytes(), "{path}: the new key id");
    }
    let out = env.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mount = env.mount();
    for (path, len, seed) in &files {
        assert!(
            fs::read(env.plain.join(path)).expect("read") == pattern(*len, *seed),
            "{path}"
        );
    }
    fs::write(env.plain.join("new-file"), b"made by this build").expect("write");
    mount.unmount();
    let shown = |path: &str| -> serde_json::Value {
        serde_json::from_str(&env.ok(&["inspect", Env::s(&env.cipher.join(path))])).expect("json")
    };
    assert_eq!(shown("new-file")["header-version"], 2);
    assert_eq!(shown("block")["header-version"], 1);
}

#[test]
fn a_version_1_file_whose_key_id_changed_reads_as_eio_and_fsck_names_it() {
    let env = copy_of_v1_with_its_keystore();
    let cipher = env.cipher.join("block");
    let mut header = header_of(&cipher);
    header[28] ^= 0x01;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&cipher)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, &header[28..29], 28).expect("change key id");
    drop(f);
    let out = env.fsck();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(report.lines().count(), 1, "{report}");
    assert!(
        report.starts_with(&format!(
            "{}: header: the KMS refuses key",
            cipher.display()
        )),
        "{report}"
    );
    let _mount = env.mount();
    let err = fs::read(env.plain.join("block")).expect_err("a changed key id");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(fs::read(env.plain.join("one-byte")).expect("the others read") == pattern(1, 1));
}
