//! Harness of the crash-consistency tests (tests/crash.rs): how many rounds and which seed, a
//! SIGKILL that waits for the process to be gone, a guard for a mount whose daemon is killed
//! (lazily unmounted on drop, even when the test fails), a small ext4 volume on a loop device
//! whose writes are throttled, the parser of `kmsfs fsck` lines, and KMS calls that report a
//! dead server instead of panicking.

use super::kms_server::KmsClient;
use super::{Env, is_mounted};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Rounds of each kind of crash: `KMSFS_CRASH_ROUNDS`, else `default` (few, for CI).
pub fn rounds(default: usize) -> usize {
    std::env::var("KMSFS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed of a test's random choices: `KMSFS_CRASH_SEED`, else the clock. Printed, so that a
/// failing run can be repeated with the same choices (the kill's timing still varies).
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("KMSFS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    println!("{test}: seed {seed} (KMSFS_CRASH_SEED={seed} repeats its choices)");
    seed
}

/// True while process `pid` runs (a zombie has stopped running).
pub fn alive(pid: u32) -> bool {
    kmsfs::sys::process_alive(pid as libc::pid_t)
}

/// Sends SIGKILL to `pid` and waits (up to 10 s) until it no longer runs.
pub fn kill_9(pid: u32) {
    ArmedKill::arm(pid).fire();
}

/// A SIGKILL ready to go: a shell waiting on a line of its stdin to run its `kill` builtin, so
/// that the signal leaves within microseconds of [`ArmedKill::fire`] rather than after a fork
/// and an exec (long enough for a write that looked cut short to finish).
pub struct ArmedKill {
    pid: u32,
    shell: std::process::Child,
}

impl ArmedKill {
    /// Starts the shell that will kill `pid`.
    pub fn arm(pid: u32) -> ArmedKill {
        let shell = Command::new("sh")
            .args(["-c", &format!("read go; kill -KILL {pid}")])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("start a shell");
        ArmedKill { pid, shell }
    }

    /// Sends the SIGKILL and waits (up to 10 s) until the process no longer runs.
    pub fn fire(mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.shell.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let _ = self.shell.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(self.pid) {
            assert!(
                Instant::now() < deadline,
                "process {} survives SIGKILL",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ArmedKill {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// The write-side system calls the threads of process `pid` are inside, per
/// `/proc/PID/task/*/syscall` (x86_64 numbers; none elsewhere): `write`, `pwrite64`, `writev`,
/// `pwritev`, `pwritev2`, `sync_file_range`, `fsync`, `fdatasync`, `ftruncate`, `fallocate`.
pub fn in_write(pid: u32) -> Vec<&'static str> {
    const CALLS: [(&str, &str); 10] = [
        ("1", "write"),
        ("18", "pwrite64"),
        ("20", "writev"),
        ("296", "pwritev"),
        ("328", "pwritev2"),
        ("277", "sync_file_range"),
        ("74", "fsync"),
        ("75", "fdatasync"),
        ("77", "ftruncate"),
        ("285", "fallocate"),
    ];
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let syscall = std::fs::read_to_string(task.path().join("syscall")).ok()?;
            let nr = syscall.split(' ').next()?.trim().to_string();
            CALLS.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
        })
        .collect()
}

/// Whether a thread of process `pid` is inside a `pwrite64` that extends its file and has
/// written part of its bytes (the file's size lies strictly inside the write's range), per
/// `/proc/PID/task/*/syscall` and `/proc/PID/fd` (x86_64; false elsewhere). A kill then cuts
/// the write short at a page boundary.
pub fn in_partly_done_write(pid: u32) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let hex = |field: Option<&str>| {
        field.and_then(|f| u64::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
    };
    tasks.filter_map(Result::ok).any(|task| {
        let Ok(syscall) = std::fs::read_to_string(task.path().join("syscall")) else {
            return false;
        };
        let mut fields = syscall.split(' ');
        if fields.next() != Some("18") {
            return false;
        }
        let (Some(fd), _, Some(count), Some(offset)) = (
            hex(fields.next()),
            fields.next(),
            hex(fields.next()),
            hex(fields.next()),
        ) else {
            return false;
        };
        std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|m| offset < m.len() && m.len() < offset + count)
    })
}

/// A mount whose daemon a test kills: on drop, the daemon is killed if it still runs and the
/// mount is lazily unmounted (`umount -l`; a dead FUSE mount cannot be unmounted otherwise).
pub struct CrashMount {
    /// The mount point.
    pub mountpoint: PathBuf,
    /// The daemon's pid, from `kmsfs mount`'s message.
    pub pid: u32,
}

impl CrashMount {
    /// Mounts `env` (`kmsfs mount` daemonizes) and learns the daemon's pid from its message
    /// `... (daemon pid N, ...)`.
    pub fn mount(env: &Env) -> CrashMount {
        let out = env.run(&env.mount_args());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid = stdout
            .split("daemon pid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.parse().ok());
        let guard = CrashMount {
            mountpoint: env.plain.clone(),
            pid: pid.unwrap_or(0),
        };
        assert!(
            out.status.success() && pid.is_some(),
            "kmsfs mount failed: {}{stdout}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.log_text()
        );
        assert!(
            is_mounted(&env.plain),
            "kmsfs mount returned but nothing is mounted"
        );
        guard
    }

    /// Kills the daemon with `kill` (armed, see [`ArmedKill`]); returns the write-side system
    /// calls its threads were inside ([`in_write`]).
    pub fn kill_daemon(&self, kill: ArmedKill) -> Vec<&'static str> {
        let writing = in_write(self.pid);
        kill.fire();
        writing
    }

    /// Lazily unmounts the (dead) mount and waits until it is gone.
    pub fn lazy_unmount(self) {
        drop(self);
    }
}

/// Lazily unmounts `path` and waits (up to 10 s) until nothing is mounted there.
pub fn lazy_unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let done = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(path)
        .output()
        .is_ok_and(|out| out.status.success());
    if !done {
        let _ = Command::new("umount").arg("-l").arg(path).output();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(path) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for CrashMount {
    fn drop(&mut self) {
        if self.pid != 0 && alive(self.pid) {
            kill_9(self.pid);
        }
        lazy_unmount(&self.mountpoint);
    }
}

/// How writes to a block device are slowed: a cgroup limit on the bytes per second written to
/// the device, and the device's dirty-page limit made strict and small, so that a writer waits
/// inside write(2) for the device instead of filling the page cache.
///
/// Measured on a 6.18 kernel whose io controller is on cgroup v1 (`blkio`; cgroup v2 has no
/// `io` there): the bdi limit alone slows nothing (the loop device drains fast); a v1 limit on a
/// child cgroup slows only the writeback its processes start themselves (fsync,
/// `sync_file_range`), since v1 charges the flusher's writeback to the root; a v1 limit in the
/// root cgroup (on this test's own loop device, which nothing else writes) together with the
/// bdi limit holds each 8 MiB write(2) ~1 s at 8 MiB/s. With cgroup v2 `io.max` the limit is
/// set on a child cgroup that the daemon joins ([`Throttle::add`]): v2 charges writeback to
/// the cgroup that dirtied the pages.
pub struct Throttle {
    /// The cgroup whose limit applies: the v1 root, or a new v2 child.
    cgroup: PathBuf,
    v2: bool,
    dev: String,
    bdi: PathBuf,
    bdi_before: Vec<(&'static str, String)>,
    /// Bytes per second.
    pub bps: u64,
}

/// The root of a cgroup v2 hierarchy whose `io` controller can be enabled, if any.
fn cgroup_v2_with_io() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "io"))
        })
}

/// The v1 blkio limit file of the root cgroup.
const V1_LIMIT: &str = "/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device";

impl Throttle {
    /// Limits writes to device `dev` (`MAJ:MIN`, a device of this test's own) to `bps` bytes
    /// per second; with cgroup v2, for the processes [`Throttle::add`]ed to a new cgroup named
    /// `name`.
    pub fn new(dev: &str, bps: u64, name: &str) -> Throttle {
        let (cgroup, v2) = match cgroup_v2_with_io() {
            Some(root) => {
                std::fs::write(root.join("cgroup.subtree_control"), "+io")
                    .expect("enable the io controller");
                let cgroup = root.join(name);
                std::fs::create_dir_all(&cgroup).expect("create the cgroup");
                (cgroup, true)
            }
            None => {
                assert!(
                    Path::new(V1_LIMIT).exists(),
                    "neither a cgroup v2 io controller nor cgroup v1 blkio throttling is available"
                );
                (PathBuf::from("/sys/fs/cgroup/blkio"), false)
            }
        };
        let bdi = PathBuf::from(format!("/sys/class/bdi/{dev}"));
        let bdi_before = ["strict_limit", "max_bytes"]
            .into_iter()
            .map(|knob| {
                let value = std::fs::read_to_string(bdi.join(knob)).expect("read a bdi knob");
                (knob, value.trim().to_string())
            })
            .collect();
        let throttle = Throttle {
            cgroup,
            v2,
            dev: dev.to_string(),
            bdi,
            bdi_before,
            bps,
        };
        let (file, limit) = if v2 {
            ("io.max", format!("{dev} wbps={bps}"))
        } else {
            ("blkio.throttle.write_bps_device", format!("{dev} {bps}"))
        };
        std::fs::write(throttle.cgroup.join(file), limit).expect("set the write limit");
        std::fs::write(throttle.bdi.join("strict_limit"), "1").expect("bdi strict_limit");
        std::fs::write(throttle.bdi.join("max_bytes"), (1u64 << 20).to_string())
            .expect("bdi max_bytes");
        throttle
    }

    /// Puts process `pid` (all its threads) under the limit: with cgroup v2, moves it into the
    /// cgroup; with v1 the limit is the root's, on every process already.
    pub fn add(&self, pid: u32) {
        if self.v2 {
            std::fs::write(self.cgroup.join("cgroup.procs"), pid.to_string())
                .expect("move the daemon into the cgroup");
        }
    }

    /// Which cgroup interface limits the writes.
    pub fn kind(&self) -> &'static str {
        if self.v2 {
            "cgroup v2 io.max"
        } else {
            "cgroup v1 blkio.throttle.write_bps_device (root cgroup)"
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        for (knob, value) in &self.bdi_before {
            let _ = std::fs::write(self.bdi.join(knob), value);
        }
        if !self.v2 {
            let _ = std::fs::write(V1_LIMIT, format!("{} 0", self.dev));
            return;
        }
        // Processes still in the cgroup (none once their daemons are killed) go back to the
        // root, so that it can be removed.
        let root = self
            .cgroup
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if let Ok(procs) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// One damaged file named by `kmsfs fsck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckFile {
    /// The plaintext path, from the root of the mount (`/name`).
    pub plain: String,
    /// The blocks named (failed, torn, ending the file unsealed as the last).
    pub blocks: Vec<u64>,
    /// What fsck said, whole.
    pub line: String,
}

/// The damaged files of `kmsfs fsck` output (encrypted names: `CIPHER (plaintext /P): ...`).
/// Lines of any other kind (names, orphans, headers, blocks added after the end) come back in
/// the second list: a killed daemon never leaves them.
pub fn parse_fsck(stdout: &str) -> (Vec<FsckFile>, Vec<String>) {
    let (mut files, mut others) = (Vec::new(), Vec::new());
    for line in stdout.lines() {
        let parsed = line.split_once(" (plaintext ").and_then(|(_, rest)| {
            let (plain, damage) = rest.split_once("): ")?;
            let mut blocks = Vec::new();
            for part in damage.split("; ") {
                let part = part.strip_prefix("torn tail: ").unwrap_or(part);
                let numbers = if let Some(list) = part.strip_prefix("blocks ") {
                    list.strip_suffix(" fail authentication")?
                } else {
                    let rest = part.strip_prefix("block ")?;
                    let (number, what) = rest.split_once(' ')?;
                    let known = what == "fails authentication"
                        || what.starts_with("is torn")
                        || what.starts_with("ends the file but is not sealed as its last block");
                    if !known {
                        return None;
                    }
                    number
                };
                for n in numbers.split(", ") {
                    blocks.push(n.parse().ok()?);
                }
            }
            Some(FsckFile {
                plain: plain.to_string(),
                blocks,
                line: line.to_string(),
            })
        });
        match parsed {
            Some(file) => files.push(file),
            None => others.push(line.to_string()),
        }
    }
    (files, others)
}

/// A signed call to the KMS server that reports a dead or dying server as an error rather
/// than panicking (a server killed in the middle of the request).
pub fn try_call(
    client: &KmsClient,
    http: &reqwest::blocking::Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let expires = super::kms_server::now() + 300;
    let auth = client.authorization(&client.creds.api_secret, method, path, &bytes, expires);
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = http
        .request(method, format!("{}{path}", client.base))
        .header("authorization", auth)
        .body(bytes.clone());
    if !bytes.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let response = request.send().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}
