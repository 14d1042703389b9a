//! Mounting the way Linux mounts, as root: `kmsfs install-helpers`, the helper mount(8) runs
//! for `mount -t fuse.kmsfs` and fstab lines (installed where mount(8) looks, removed on drop),
//! `mount -a` over an fstab file, the systemd units under `systemd-analyze verify`, and the
//! readiness notifications (sd_notify) of `kms serve` and `mount --foreground` on a socket of
//! the test's own, with the passphrase as a systemd credential.

mod common;

use common::{Env, MountGuard, is_mounted, kmsfs_bin};
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Skips (with the reason printed) when not root: mount(8) helpers and /sbin need it.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (mount helpers live in /sbin)");
            return;
        }
    };
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kmsfs install-helpers --prefix DIR`, insisting on success; returns what it printed.
fn install_into(env: &Env, prefix: &Path) -> String {
    env.ok(&["install-helpers", "--prefix", Env::s(prefix)])
}

/// The fields of the /proc/mounts line whose mount point is `mountpoint`.
fn proc_mounts_line(mountpoint: &Path) -> Option<Vec<String>> {
    let mountpoint = std::fs::canonicalize(mountpoint).ok()?;
    std::fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        .rfind(|f| f.get(1).map(PathBuf::from) == Some(mountpoint.clone()))
}

#[test]
fn install_helpers_puts_links_completions_and_pages_under_a_prefix_and_again() {
    let env = Env::new();
    let prefix = env.dir.path().join("root");
    let binary = std::fs::canonicalize(kmsfs_bin()).expect("binary");
    for round in 0..2 {
        let said = install_into(&env, &prefix);
        for name in ["mount.fuse.kmsfs", "mount.kmsfs"] {
            let link = prefix.join("sbin").join(name);
            assert_eq!(
                std::fs::read_link(&link).expect("a link"),
                binary,
                "round {round}"
            );
            assert!(said.contains(Env::s(&link)), "it says where: {said}");
        }
        for (place, marker) in [
            (
                "usr/local/share/bash-completion/completions/kmsfs",
                "install-helpers",
            ),
            (
                "usr/local/share/zsh/site-functions/_kmsfs",
                "#compdef kmsfs",
            ),
            (
                "usr/local/share/fish/vendor_completions.d/kmsfs.fish",
                "complete -c kmsfs",
            ),
        ] {
            let path = prefix.join(place);
            let script = std::fs::read_to_string(&path).expect("completion script");
            assert!(script.contains(marker), "{place}");
            assert!(said.contains(Env::s(&path)), "it says where: {said}");
        }
        let man = prefix.join("usr/local/share/man/man1");
        for page in ["kmsfs.1", "kmsfs-mount.1", "kmsfs-install-helpers.1"] {
            let page = man.join(page);
            assert!(
                std::fs::metadata(&page).expect("page").len() > 100,
                "{}",
                page.display()
            );
            assert!(said.contains(Env::s(&page)), "it says where: {said}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(prefix.join("sbin"))
            .expect("sbin")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    // Run under a helper name, the binary is the helper: it answers in mount(8)'s terms.
    let helper = prefix.join("sbin/mount.fuse.kmsfs");
    let out = Command::new(&helper).output().expect("run the helper");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("mount.fuse.kmsfs: usage: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

/// The helper links in /sbin, where mount(8) looks, for as long as the guard lives. One test
/// (of any test run on this machine) at a time holds them, through a lock file; what was
/// there before comes back on drop.
struct SbinHelpers {
    saved: Vec<(PathBuf, Option<PathBuf>)>,
    _lock: std::fs::File,
}

impl SbinHelpers {
    /// Installs into a private prefix with `kmsfs install-helpers`, then moves the links it
    /// made into /sbin.
    fn install(env: &Env) -> SbinHelpers {
        let lock = std::fs::File::create("/run/lock/kmsfs-test-sbin-helpers.lock")
            .or_else(|_| std::fs::File::create("/tmp/kmsfs-test-sbin-helpers.lock"))
            .expect("lock file");
        lock.lock().expect("lock");
        let prefix = env.dir.path().join("helpers-root");
        install_into(env, &prefix);
        let mut guard = SbinHelpers {
            saved: Vec::new(),
            _lock: lock,
        };
        for name in ["mount.fuse.kmsfs", "mount.kmsfs"] {
            let target = Path::new("/sbin").join(name);
            let before = std::fs::read_link(&target).ok();
            if before.is_none() && target.exists() {
                panic!(
                    "{} is a file, not a link: not replacing it",
                    target.display()
                );
            }
            guard.saved.push((target.clone(), before));
            let staged = prefix.join("sbin").join(name);
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(std::fs::read_link(&staged).expect("link"), &target)
                .expect("link into /sbin");
        }
        guard
    }
}

impl Drop for SbinHelpers {
    fn drop(&mut self) {
        for (target, before) in &self.saved {
            let _ = std::fs::remove_file(target);
            if let Some(before) = before {
                let _ = std::os::unix::fs::symlink(before, target);
            }
        }
    }
}

/// `mount ARGS` (util-linux) with the environment's XDG directories, so the daemon keeps its
/// files inside the test's directory.
fn mount_cmd(env: &Env, program: &str, args: &[&str]) -> Output {
    let root = env.dir.path();
    Command::new(program)
        .args(args)
        .env("XDG_DATA_HOME", root.join("data-home"))
        .env("XDG_CONFIG_HOME", root.join("config-home"))
        .env("XDG_STATE_HOME", root.join("state-home"))
        .env_remove("KMSFS_PASSPHRASE")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Waits until nothing is mounted at `path` (the daemon finishing after umount).
fn wait_unmounted(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(path) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_mounted(path)
}

#[test]
fn mount_t_fuse_kmsfs_mounts_through_the_installed_helper_and_umount_unmounts() {
    require_root!();
    let env = Env::new();
    env.init();
    let _helpers = SbinHelpers::install(&env);
    let options = format!(
        "passfile={},noatime,nofail,_netdev,x-systemd.automount,log={},cache_ttl=30,threads=2",
        Env::s(&env.passfile),
        Env::s(&env.log)
    );
    let guard = MountGuard::adopt(&env);
    let out = mount_cmd(
        &env,
        "mount",
        &[
            "-t",
            "fuse.kmsfs",
            Env::s(&env.cipher),
            Env::s(&env.plain),
            "-o",
            &options,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    // mount(8) returned: the mount is live already.
    assert!(
        is_mounted(&env.plain),
        "mount returned before the mount was live"
    );
    std::fs::write(env.plain.join("hello.txt"), b"through mount(8)\n").expect("write");
    assert_eq!(
        std::fs::read(env.plain.join("hello.txt")).expect("read"),
        b"through mount(8)\n"
    );
    let line = proc_mounts_line(&env.plain).expect("a /proc/mounts line");
    let cipher = std::fs::canonicalize(&env.cipher).expect("cipher");
    assert_eq!(
        line[0],
        Env::s(&cipher),
        "the source is the cipher directory: {line:?}"
    );
    assert_eq!(line[2], "fuse.kmsfs", "{line:?}");
    assert!(line[3].split(',').any(|o| o == "noatime"), "{line:?}");
    // On disk, nothing of the plaintext.
    let on_disk: Vec<u8> = std::fs::read_dir(&env.cipher)
        .expect("cipher dir")
        .filter_map(|e| std::fs::read(e.expect("entry").path()).ok())
        .flatten()
        .collect();
    assert!(
        !on_disk
            .windows(b"through mount(8)".len())
            .any(|w| w == b"through mount(8)")
    );

    let out = mount_cmd(&env, "umount", &[Env::s(&env.plain)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_unmounted(&env.plain), "umount left the mount");
    drop(guard);

    // A failure is mount(8)'s exit code 32 and one sentence; nothing is mounted.
    let out = mount_cmd(
        &env,
        "mount",
        &[
            "-t",
            "fuse.kmsfs",
            Env::s(&env.dir.path().join("no-such-cipher")),
            Env::s(&env.plain),
            "-o",
            &format!("passfile={}", Env::s(&env.passfile)),
        ],
    );
    assert_eq!(out.status.code(), Some(32), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("mount.fuse.kmsfs: ") && stderr.trim_end().lines().count() == 1,
        "{stderr}"
    );
    assert!(!is_mounted(&env.plain));

    // An unknown option is refused with one sentence (exit 1); mount(8)'s sloppy -s drops it.
    let bogus = format!("passfile={},bogus_option", Env::s(&env.passfile));
    let args = [
        "-t",
        "fuse.kmsfs",
        Env::s(&env.cipher),
        Env::s(&env.plain),
        "-o",
        &bogus,
    ];
    let out = mount_cmd(&env, "mount", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_option"));
    assert!(!is_mounted(&env.plain));
    let guard = MountGuard::adopt(&env);
    // Type `kmsfs` (the helper mount.kmsfs) is the same filesystem.
    let mut sloppy = vec!["-s"];
    sloppy.extend_from_slice(&args);
    sloppy[2] = "kmsfs";
    let out = mount_cmd(&env, "mount", &sloppy);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(env.plain.join("hello.txt")).expect("read again"),
        b"through mount(8)\n"
    );
    let line = proc_mounts_line(&env.plain).expect("a /proc/mounts line");
    assert_eq!(line[2], "fuse.kmsfs", "{line:?}");
    guard.unmount();
}

#[test]
fn mount_a_mounts_the_good_line_of_an_fstab_whose_nofail_line_is_missing() {
    require_root!();
    let env = Env::new();
    env.init();
    let _helpers = SbinHelpers::install(&env);
    let missing_plain = env.dir.path().join("plain-of-missing");
    std::fs::create_dir(&missing_plain).expect("mkdir");
    let fstab = env.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a test fstab\n\
             {missing} {missing_plain} fuse.kmsfs passfile={pass},nofail,_netdev 0 0\n\
             {cipher} {plain} fuse.kmsfs passfile={pass},log={log},allow_other,nofail,_netdev,x-systemd.requires=network-online.target,comment=test 0 0\n",
            missing = Env::s(&env.dir.path().join("no-such-cipher")),
            missing_plain = Env::s(&missing_plain),
            cipher = Env::s(&env.cipher),
            plain = Env::s(&env.plain),
            pass = Env::s(&env.passfile),
            log = Env::s(&env.log),
        ),
    )
    .expect("write fstab");
    let guard = MountGuard::adopt(&env);
    let out = mount_cmd(&env, "mount", &["-a", "--fstab", Env::s(&fstab)]);
    assert!(
        is_mounted(&env.plain),
        "the good line was not mounted: {}",
        text(&out)
    );
    // mount(8)'s "some mounts succeeded", with the helper's one sentence for the other.
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mount.fuse.kmsfs: ") && stderr.contains("no-such-cipher"),
        "{stderr}"
    );
    assert!(!is_mounted(&missing_plain));
    let line = proc_mounts_line(&env.plain).expect("a /proc/mounts line");
    assert_eq!(line[2], "fuse.kmsfs");
    assert!(line[3].contains("allow_other"), "{line:?}");
    std::fs::write(env.plain.join("f"), b"fstab").expect("write");
    assert_eq!(std::fs::read(env.plain.join("f")).expect("read"), b"fstab");
    // A second `mount -a` sees the line mounted and leaves it.
    let device = common::mount_device(&env.plain);
    mount_cmd(&env, "mount", &["-a", "--fstab", Env::s(&fstab)]);
    assert_eq!(common::mount_device(&env.plain), device, "mounted twice");
    let out = mount_cmd(&env, "umount", &[Env::s(&env.plain)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_unmounted(&env.plain));
    drop(guard);
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed (scripts/test.sh installs systemd)");
        return;
    };
    assert!(version.status.success());
    let env = Env::new();
    // The pages the units' Documentation= lines name must exist: systemd-analyze runs man.
    let prefix = env.dir.path().join("root");
    install_into(&env, &prefix);
    let units = env.dir.path().join("units");
    std::fs::create_dir(&units).expect("mkdir");
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&contrib).expect("contrib/systemd") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        // The units run the installed binary; here it is this build's.
        let unit = std::fs::read_to_string(&path)
            .expect("unit")
            .replace("/usr/local/bin/kmsfs", kmsfs_bin());
        std::fs::write(units.join(&name), unit).expect("copy unit");
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        ["kmsfs-kms.service", "kmsfs@.service", "srv-plain.mount"]
    );
    for unit in [
        "kmsfs-kms.service",
        "kmsfs@srv-plain.service",
        "srv-plain.mount",
    ] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(units.join(unit))
            .env("MANPATH", prefix.join("usr/local/share/man"))
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .expect("systemd-analyze verify");
        // verify exits 0 on many mistakes (an unknown key, a bad value) and only says so.
        assert!(
            out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
            "{unit}: {}",
            text(&out)
        );
    }
}

/// A notification socket of the test's own, in the environment's directory.
fn notify_socket(env: &Env) -> (UnixDatagram, PathBuf) {
    let path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    (socket, path)
}

/// The next notification within [`NOTIFY_TIMEOUT`], or `None` once `child` has exited and
/// nothing came.
fn next_notification(socket: &UnixDatagram, child: &mut Child) -> Option<String> {
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => {
                if child.try_wait().ok().flatten().is_some() {
                    // One last look: it may have sent before exiting.
                    return socket
                        .recv(&mut buf)
                        .ok()
                        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        }
    }
    None
}

/// A child killed (SIGKILL) and waited for on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for `child` to exit; its status code.
fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn kms_serve_says_ready_once_its_port_answers_and_stopping_at_sigterm() {
    let env = Env::new();
    let (socket, path) = notify_socket(&env);
    let child = env
        .cmd()
        .args([
            "kms",
            "serve",
            "--zone",
            "z",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(env.dir.path().join("kms-data"))
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kms serve");
    let mut child = ChildGuard(child);
    let ready = next_notification(&socket, &mut child.0).expect("a notification");
    // The moment READY=1 arrives, the port answers.
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=listening on http://"))
        .unwrap_or_else(|| panic!("no listening status: {ready:?}"));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let addr = status.split('/').next().expect("host:port");
    std::net::TcpStream::connect(addr).expect("the port answers once READY=1 is sent");
    sigterm(&child.0);
    let stopping = next_notification(&socket, &mut child.0).expect("STOPPING=1");
    assert_eq!(stopping, "STOPPING=1");
    assert_eq!(wait_exit(&mut child.0), Some(0));
}

/// Starts `kmsfs mount --foreground` of `env` with `$NOTIFY_SOCKET` = `notify`, as `configure`
/// adds (stderr piped).
fn foreground_mount(env: &Env, notify: &Path, configure: impl FnOnce(&mut Command)) -> ChildGuard {
    let mut cmd = env.cmd();
    cmd.args([
        "mount",
        "--foreground",
        Env::s(&env.cipher),
        Env::s(&env.plain),
    ])
    .env("NOTIFY_SOCKET", notify)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    configure(&mut cmd);
    ChildGuard(cmd.spawn().expect("start kmsfs mount --foreground"))
}

#[test]
fn mount_foreground_says_ready_only_once_the_mount_is_live_with_the_credential_passphrase() {
    let env = Env::new();
    env.init();
    let (socket, path) = notify_socket(&env);
    // The passphrase as systemd's LoadCredential=passphrase:... hands it over.
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("mkdir");
    std::fs::copy(&env.passfile, credentials.join("passphrase")).expect("credential");
    let guard = MountGuard::adopt(&env);
    let mut child = foreground_mount(&env, &path, |cmd| {
        cmd.env("CREDENTIALS_DIRECTORY", &credentials);
    });
    let ready = next_notification(&socket, &mut child.0);
    // Checked at once: the mount must already be live when READY=1 arrives.
    let live = is_mounted(&env.plain);
    let Some(ready) = ready else {
        let mut stderr = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("no READY=1; stderr: {stderr}");
    };
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(live, "READY=1 came before the mount was live");
    assert!(ready.contains("STATUS=mounted "), "{ready:?}");
    std::fs::write(env.plain.join("f"), b"notify").expect("write");
    assert_eq!(std::fs::read(env.plain.join("f")).expect("read"), b"notify");
    // SIGTERM (systemctl stop) unmounts and the daemon exits cleanly.
    sigterm(&child.0);
    let stopping = next_notification(&socket, &mut child.0).expect("STOPPING=1");
    assert_eq!(stopping, "STOPPING=1");
    assert_eq!(wait_exit(&mut child.0), Some(0));
    assert!(wait_unmounted(&env.plain));
    drop(guard);
}

#[test]
fn mount_foreground_that_fails_never_says_ready() {
    let env = Env::new();
    env.init();
    let (socket, path) = notify_socket(&env);
    let wrong = env.dir.path().join("wrong-passphrase");
    std::fs::write(&wrong, "not the passphrase\n").expect("write");
    let guard = MountGuard::adopt(&env);
    let mut child = foreground_mount(&env, &path, |cmd| {
        cmd.arg("--passphrase-file").arg(&wrong);
    });
    assert_eq!(next_notification(&socket, &mut child.0), None);
    assert_ne!(wait_exit(&mut child.0), Some(0));
    assert!(!is_mounted(&env.plain));
    drop(guard);
}

#[test]
fn a_remote_mount_takes_its_api_key_from_systemd_credentials() {
    use common::kms_server::{ServerGuard, create_org};
    let mut env = Env::new();
    let data = env.dir.path().join("kms-data");
    let server = ServerGuard::start_in(&data, "ch-gva-2", "127.0.0.1:0", &[]);
    let org = create_org(&data);
    env.vars = vec![
        ("EXOSCALE_API_KEY".into(), org.api_key.clone()),
        ("EXOSCALE_API_SECRET".into(), org.api_secret.clone()),
    ];
    env.ok(&["init", Env::s(&env.cipher), "--kms", &server.url]);
    let mount = |credentials: Option<&Path>| {
        let mut cmd = env.cmd();
        cmd.args(["mount", Env::s(&env.cipher), Env::s(&env.plain)])
            .args(["--log", Env::s(&env.log)])
            .env_remove("EXOSCALE_API_KEY")
            .env_remove("EXOSCALE_API_SECRET");
        if let Some(dir) = credentials {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        cmd.output().expect("run kmsfs mount")
    };
    // Neither environment nor credentials: refused, naming both ways.
    let out = mount(None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EXOSCALE_API_KEY"),
        "{}",
        text(&out)
    );
    assert!(!is_mounted(&env.plain));
    // As LoadCredential= leaves them: one file per credential, a trailing newline kept.
    let credentials = env.dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("mkdir");
    std::fs::write(
        credentials.join("exoscale-api-key"),
        format!("{}\n", org.api_key),
    )
    .expect("write");
    std::fs::write(
        credentials.join("exoscale-api-secret"),
        format!("{}\n", org.api_secret),
    )
    .expect("write");
    let guard = MountGuard::adopt(&env);
    let out = mount(Some(&credentials));
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(env.plain.join("remote.txt"), b"key from a credential").expect("write");
    assert_eq!(
        std::fs::read(env.plain.join("remote.txt")).expect("read"),
        b"key from a credential"
    );
    guard.unmount();
    drop(server);
}
