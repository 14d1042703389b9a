//! Shared harness of the integration tests: a private environment per test (its own keystore,
//! XDG directories, cipher directory and mount point), the real `kmsfs` binary, and a guard
//! that unmounts on drop, even when the test fails.

#![allow(dead_code)]

pub mod crash;
pub mod etcd;
pub mod kms_server;
pub mod python_client;
pub mod volume;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The kmsfs binary built by cargo for this test run.
pub fn kmsfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kmsfs")
}

/// One test's private world.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub passfile: PathBuf,
    pub keystore: PathBuf,
    pub cipher: PathBuf,
    pub plain: PathBuf,
    pub log: PathBuf,
    /// Extra environment variables of every command (e.g. KMS credentials).
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A fresh environment (nothing created yet but the passphrase file and mount point).
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let passfile = root.join("passphrase");
        std::fs::write(&passfile, "correct horse battery staple\n").expect("write passphrase");
        let plain = root.join("plain");
        std::fs::create_dir(&plain).expect("mkdir plain");
        Env {
            keystore: root.join("data/keystore"),
            cipher: root.join("cipher"),
            log: root.join("kmsfs.log"),
            plain,
            passfile,
            dir,
            vars: Vec::new(),
        }
    }

    /// A `kmsfs` command with this environment's XDG directories and no passphrase in the
    /// environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(kmsfs_bin());
        let root = self.dir.path();
        cmd.env("XDG_DATA_HOME", root.join("data-home"))
            .env("XDG_CONFIG_HOME", root.join("config-home"))
            .env("XDG_STATE_HOME", root.join("state-home"))
            .env_remove("KMSFS_PASSPHRASE")
            .env_remove("KMSFS_LOG")
            .env_remove("EXOSCALE_API_KEY")
            .env_remove("EXOSCALE_API_SECRET")
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `kmsfs ARGS`, returning its output (whatever the exit code).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run kmsfs")
    }

    /// Runs `kmsfs ARGS` and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kmsfs {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn s(path: &Path) -> &str {
        path.to_str().expect("utf-8 path")
    }

    /// `kmsfs init` of the cipher directory with the environment's keystore.
    pub fn init(&self) {
        self.init_with(&[]);
    }

    /// `kmsfs init` with extra arguments.
    pub fn init_with(&self, extra: &[&str]) {
        let mut args = vec![
            "init",
            Self::s(&self.cipher),
            "--keystore",
            Self::s(&self.keystore),
            "--passphrase-file",
            Self::s(&self.passfile),
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// Mounts the cipher directory at the mount point; the guard unmounts.
    pub fn mount(&self) -> MountGuard {
        self.mount_with(&[])
    }

    /// The arguments of `kmsfs mount` for this environment (with `--io-uring` when the
    /// environment variable KMSFS_TEST_IO_URING is 1: the suite through FUSE over io_uring).
    pub fn mount_args(&self) -> Vec<&str> {
        let mut args = vec![
            "mount",
            Self::s(&self.cipher),
            Self::s(&self.plain),
            "--passphrase-file",
            Self::s(&self.passfile),
            "--log",
            Self::s(&self.log),
        ];
        if std::env::var_os("KMSFS_TEST_IO_URING").is_some_and(|v| v == "1") {
            args.push("--io-uring");
        }
        args
    }

    /// Mounts with extra arguments.
    pub fn mount_with(&self, extra: &[&str]) -> MountGuard {
        let mut args = self.mount_args();
        args.extend_from_slice(extra);
        let guard = MountGuard {
            mountpoint: self.plain.clone(),
            bin_env: self.dir.path().to_path_buf(),
        };
        self.ok(&args);
        assert!(
            is_mounted(&self.plain),
            "kmsfs mount returned but nothing is mounted"
        );
        guard
    }

    /// `kmsfs fsck` of the cipher directory with the environment's passphrase.
    pub fn fsck(&self) -> Output {
        self.fsck_with(&[])
    }

    /// `kmsfs fsck` with extra arguments (`--repair`).
    pub fn fsck_with(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "fsck",
            Self::s(&self.cipher),
            "--passphrase-file",
            Self::s(&self.passfile),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `kmsfs rewrap` of the cipher directory with the environment's passphrase and extra
    /// arguments (`--to-key ID`, `--dry-run`), whatever the exit code.
    pub fn rewrap_with(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "rewrap",
            Self::s(&self.cipher),
            "--passphrase-file",
            Self::s(&self.passfile),
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The cipher path of every entry under the mount point, by its path relative to the
    /// mount point (the mount must be live). Found by inode number, which a node shares with
    /// its backing inode, so it works with encrypted names; hard links map to one of their
    /// cipher paths.
    pub fn cipher_map(&self) -> std::collections::HashMap<PathBuf, PathBuf> {
        use std::os::unix::fs::MetadataExt;
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(u64, PathBuf)>) {
            for entry in std::fs::read_dir(dir).expect("list") {
                let path = entry.expect("entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("lstat");
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.push((meta.ino(), rel));
                if meta.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut cipher = Vec::new();
        walk(&self.cipher, &self.cipher, &mut cipher);
        let by_ino: std::collections::HashMap<u64, PathBuf> = cipher
            .into_iter()
            .map(|(ino, rel)| (ino, self.cipher.join(rel)))
            .collect();
        let mut plain = Vec::new();
        walk(&self.plain, &self.plain, &mut plain);
        plain
            .into_iter()
            .map(|(ino, rel)| {
                let cipher = by_ino.get(&ino).unwrap_or_else(|| {
                    panic!("no cipher entry has the inode of {}", rel.display())
                });
                (rel, cipher.clone())
            })
            .collect()
    }

    /// The cipher path of `rel` (a path under the live mount point); see [`Env::cipher_map`].
    pub fn cipher_path(&self, rel: &str) -> PathBuf {
        self.cipher_map()
            .remove(Path::new(rel))
            .unwrap_or_else(|| panic!("{rel} is not under the mount point"))
    }

    /// `kmsfs key create NAME` in the environment's keystore; returns the new key's id.
    pub fn create_key(&self, name: &str) -> String {
        let out = self.ok(&[
            "key",
            "create",
            name,
            "--keystore",
            Self::s(&self.keystore),
            "--passphrase-file",
            Self::s(&self.passfile),
            "--json",
        ]);
        let key: serde_json::Value = serde_json::from_str(&out).expect("key JSON");
        key["id"].as_str().expect("key id").to_string()
    }

    /// The key id in the cipher directory's `kmsfs.conf`.
    pub fn key_id(&self) -> String {
        let conf: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.cipher.join("kmsfs.conf")).expect("conf"),
        )
        .expect("json");
        conf["key-id"].as_str().expect("key id").to_string()
    }

    /// Rotates the cipher directory's key in its keystore (`kmsfs key rotate`).
    pub fn rotate_key(&self) {
        self.ok(&[
            "key",
            "rotate",
            &self.key_id(),
            "--keystore",
            Env::s(&self.keystore),
            "--passphrase-file",
            Env::s(&self.passfile),
        ]);
    }

    /// The daemon log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Unmounts on drop (then lazily, if files are still open), so a failing test leaves no mount.
pub struct MountGuard {
    pub mountpoint: PathBuf,
    bin_env: PathBuf,
}

impl MountGuard {
    /// A guard for a mount of `env` made some other way.
    pub fn adopt(env: &Env) -> MountGuard {
        MountGuard {
            mountpoint: env.plain.clone(),
            bin_env: env.dir.path().to_path_buf(),
        }
    }

    /// Unmounts now through `kmsfs unmount` and checks it worked.
    pub fn unmount(self) {
        let out = Command::new(kmsfs_bin())
            .env("XDG_STATE_HOME", self.bin_env.join("state-home"))
            .args(["unmount", Env::s(&self.mountpoint)])
            .output()
            .expect("run kmsfs unmount");
        assert!(
            out.status.success(),
            "kmsfs unmount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!is_mounted(&self.mountpoint));
        // Drop runs next and finds nothing to do.
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !is_mounted(&self.mountpoint) {
            return;
        }
        let _ = Command::new(kmsfs_bin())
            .env("XDG_STATE_HOME", self.bin_env.join("state-home"))
            .args(["unmount", Env::s(&self.mountpoint)])
            .output();
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .output();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_mounted(&self.mountpoint) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True when something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mount_device(path).is_some()
}

/// The `major:minor` device of the filesystem mounted at `path`, per /proc/self/mountinfo (the
/// last one mounted there).
pub fn mount_device(path: &Path) -> Option<String> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let target = canonical.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .filter(|fields| fields.get(4) == Some(&target.as_str()))
        .filter_map(|fields| fields.get(2).map(|dev| dev.to_string()))
        .next_back()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A small deterministic random number generator for operation sequences.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The on-disk size formula of docs/FORMAT.md.
pub fn expected_cipher_size(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        512 + n + 28 * n.div_ceil(4096)
    }
}

/// Runs a command and insists on success; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `limit` for process `pid` to be gone; true when it is.
pub fn process_gone_within(pid: impl Into<u64>, limit: Duration) -> bool {
    let pid = pid.into();
    let deadline = Instant::now() + limit;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}
