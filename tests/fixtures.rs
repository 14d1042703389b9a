//! Cipher directories of past format versions (`testdata/*-fixture/`) keep mounting: a copy is
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
    let out = env.fsck_with(&["--keystore", keystore]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck of the fixture: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

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

#[test]
fn the_fixture_needs_its_keystore_named_since_kmsfs_conf_names_another_path() {
    let env = copy_of("v1-fixture");
    let out = env.run(&env.mount_args());
    assert!(!out.status.success(), "mounted without --keystore");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("there is no keystore at"), "{stderr}");
}
