//! FUSE over io_uring (`kmsfs mount --io-uring`) on a real mount: files, directories, links,
//! extended attributes, a small untar, `ls -lR` and `rm -rf` through it, with proof from the
//! daemon's io_uring descriptors (their completion counters in /proc/PID/fdinfo) that the
//! requests went through the rings and not through /dev/fuse.
//!
//! The kernel offers the feature only when root sets /sys/module/fuse/parameters/enable_uring
//! to Y. These tests set it when they can and leave it set: it changes nothing for other
//! mounts, since only a daemon that asks at INIT gets io_uring. When it cannot be set (not
//! root, a kernel without the parameter) the tests say why and pass without checking.
//! The fallback when the kernel refuses is a unit test of its decision (`fuse::ring`).

mod common;

use common::{Env, MountGuard, is_mounted};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// True when the kernel offers FUSE over io_uring to a daemon that asks, turning the module
/// parameter on if needed; false (with the reason printed) when that cannot be.
fn ring_offered() -> bool {
    match std::fs::read_to_string(PARAMETER) {
        Ok(v) if v.trim() == "Y" => true,
        Ok(_) => match std::fs::write(PARAMETER, "Y") {
            Ok(()) => true,
            Err(e) => {
                println!("skipped: cannot turn {PARAMETER} on ({e}); run as root");
                false
            }
        },
        Err(e) => {
            println!("skipped: this kernel has no FUSE over io_uring ({PARAMETER}: {e})");
            false
        }
    }
}

/// Mounts `env` with `--io-uring` (and `extra`); the daemon's pid and the guard.
fn mount_ring(env: &Env, extra: &[&str]) -> (u32, MountGuard) {
    let guard = MountGuard::adopt(env);
    let mut args = env.mount_args();
    if !args.contains(&"--io-uring") {
        args.push("--io-uring");
    }
    args.extend_from_slice(extra);
    let out = env.ok(&args);
    assert!(is_mounted(&env.plain), "nothing mounted: {out}");
    let pid = out
        .split("daemon pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {out:?}"));
    (pid, guard)
}

/// The daemon's io_uring descriptors and the completions consumed on them (the sum of their
/// `CqHead` counters).
fn ring_completions(pid: u32) -> (usize, u64) {
    let mut rings = 0;
    let mut completions = 0;
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir).expect("daemon's fds") {
        let entry = entry.expect("fd entry");
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        rings += 1;
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().display()
        ))
        .unwrap_or_default();
        completions += info
            .lines()
            .find_map(|l| l.strip_prefix("CqHead:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    (rings, completions)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sh(script: &str, dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) for process `pid` to be gone.
fn exited(pid: u32) -> bool {
    common::process_gone_within(pid, Duration::from_secs(20))
}

#[test]
fn a_ring_mount_serves_every_kind_of_request_through_the_rings() {
    if !ring_offered() {
        return;
    }
    let env = Env::new();
    env.init();
    let (pid, guard) = mount_ring(&env, &[]);
    let (rings, before) = ring_completions(pid);
    assert!(
        rings >= 1,
        "the daemon has no io_uring: it fell back to /dev/fuse"
    );
    let plain = &env.plain;

    // Files of several sizes, written and read back.
    for (i, len) in [0usize, 1, 4095, 4096, (1 << 20) + 3]
        .into_iter()
        .enumerate()
    {
        let data = pattern(len, i as u8);
        let path = plain.join(format!("f{len}"));
        std::fs::write(&path, &data).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), data, "size {len}");
    }
    // Names, links, attributes.
    std::fs::create_dir(plain.join("d")).expect("mkdir");
    std::fs::rename(plain.join("f1"), plain.join("d/moved")).expect("rename");
    assert_eq!(
        std::fs::read(plain.join("d/moved")).expect("read"),
        pattern(1, 1)
    );
    std::os::unix::fs::symlink("d/moved", plain.join("link")).expect("symlink");
    assert_eq!(
        std::fs::read_link(plain.join("link")).expect("readlink"),
        Path::new("d/moved")
    );
    sh("setfattr -n user.color -v blue f4096", plain);
    assert!(sh("getfattr -n user.color --only-values f4096", plain).contains("blue"));
    sh("setfattr -x user.color f4096", plain);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(plain.join("f4095"))
        .expect("open");
    file.set_len(100).expect("truncate");
    drop(file);
    assert_eq!(
        std::fs::read(plain.join("f4095")).expect("read"),
        pattern(4095, 2)[..100]
    );
    std::fs::remove_file(plain.join("d/moved")).expect("unlink");
    std::fs::remove_dir(plain.join("d")).expect("rmdir");
    assert!(!plain.join("d").exists());

    // A small tree: untar, compare, ls -lR, rm -rf.
    let source = tempfile::tempdir().expect("tempdir");
    sh(
        "mkdir -p t/a/b t/c && for i in $(seq 1 60); do head -c $((i * 97)) /dev/urandom > t/a/f$i; \
         echo $i > t/c/g$i; ln -s f$i t/a/b/l$i; done && tar -cf tree.tar t",
        source.path(),
    );
    let tar = source.path().join("tree.tar");
    sh(&format!("tar -xf {}", tar.display()), plain);
    sh(
        &format!("diff -r --no-dereference {}/t t", source.path().display()),
        plain,
    );
    let listing = sh("ls -lR t", plain);
    assert_eq!(listing.matches("f60").count(), 2, "{listing}");
    sh("rm -rf t", plain);
    assert!(!plain.join("t").exists());

    let (rings_after, after) = ring_completions(pid);
    assert_eq!(rings_after, rings, "ring descriptors came and went");
    // Several hundred requests went through the rings (each completion is one request).
    assert!(
        after - before >= 300,
        "only {} requests came through the rings",
        after - before
    );
    assert!(
        !env.log_text().contains("not available"),
        "{}",
        env.log_text()
    );
    guard.unmount();
    assert!(exited(pid), "the daemon did not exit after the unmount");
}

#[test]
fn the_mount_helper_option_turns_the_rings_on() {
    if !ring_offered() {
        return;
    }
    let env = Env::new();
    env.init();
    let guard = MountGuard::adopt(&env);
    let options = format!(
        "passfile={},log={},io_uring",
        env.passfile.display(),
        env.log.display()
    );
    // Run under the helper's name, the binary is mount(8)'s helper.
    let bin = tempfile::tempdir().expect("tempdir");
    let helper = bin.path().join("mount.fuse.kmsfs");
    std::os::unix::fs::symlink(common::kmsfs_bin(), &helper).expect("helper link");
    let template = env.cmd();
    let mut cmd = Command::new(&helper);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd
        .args([Env::s(&env.cipher), Env::s(&env.plain), "-o", &options])
        .output()
        .expect("run the helper");
    assert!(
        out.status.success(),
        "the mount helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = daemon_of(&env).expect("the daemon's pid");
    std::fs::write(env.plain.join("x"), b"through the ring").expect("write");
    let (rings, completions) = ring_completions(pid);
    assert!(rings >= 1 && completions > 0, "no io_uring in the daemon");
    guard.unmount();
    assert!(exited(pid));
}

/// The pid of the environment's one kmsfs daemon, from the pid file it keeps under its state
/// directory.
fn daemon_of(env: &Env) -> Option<u32> {
    let run = env.dir.path().join("state-home/kmsfs/run");
    let entry = std::fs::read_dir(run).ok()?.next()?.ok()?;
    std::fs::read_to_string(entry.path())
        .ok()?
        .trim()
        .parse()
        .ok()
}
