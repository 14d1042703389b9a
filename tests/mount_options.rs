//! The common mount(8) options are accepted and take effect: access-time modes, `dev`, `suid`.

mod common;

use common::{Env, MountGuard};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The options field of the mount at `path` in /proc/self/mountinfo (per-mount flags).
fn mount_flags(path: &std::path::Path) -> Vec<String> {
    let target = std::fs::canonicalize(path).expect("canonicalize");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .filter(|f| f.get(4).map(std::path::Path::new) == Some(target.as_path()))
        .filter_map(|f| f.get(5).map(|o| o.split(',').map(str::to_string).collect()))
        .next_back()
        .expect("the mount is listed")
}

#[test]
fn access_time_options_are_applied_and_the_others_accepted() {
    let env = Env::new();
    env.init();
    for (options, expect, absent) in [
        ("relatime", vec!["relatime"], vec!["noatime"]),
        ("noatime", vec!["noatime"], vec!["relatime"]),
        (
            "strictatime,nodiratime",
            vec!["nodiratime"],
            vec!["relatime", "noatime"],
        ),
        (
            "lazytime,dev,suid",
            vec!["relatime"],
            vec!["nodev", "nosuid"],
        ),
        ("noatime,relatime", vec!["relatime"], vec!["noatime"]),
        (
            "nodev,nosuid,strictatime",
            vec!["nodev", "nosuid"],
            vec!["relatime"],
        ),
    ] {
        let mount = env.mount_with(&["-o", options]);
        let flags = mount_flags(&env.plain);
        for want in &expect {
            assert!(
                flags.iter().any(|f| f == want),
                "-o {options}: {want} missing from {flags:?}"
            );
        }
        for not in &absent {
            assert!(
                !flags.iter().any(|f| f == not),
                "-o {options}: {not} in {flags:?}"
            );
        }
        std::fs::write(env.plain.join("f"), b"x").expect("the mount works");
        mount.unmount();
    }
    let out = env.run(&[
        "mount",
        Env::s(&env.cipher),
        Env::s(&env.plain),
        "--passphrase-file",
        Env::s(&env.passfile),
        "-o",
        "bogus",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown mount option \"bogus\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `kmsfs ARGS`, killing it after a minute: a foreground mount that does mount would not
/// return on its own.
fn run_bounded(env: &Env, args: &[&str]) -> Output {
    let mut child = env
        .cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kmsfs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for kmsfs").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kmsfs {args:?} did not return within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("kmsfs output")
}

#[test]
fn a_mount_the_daemon_cannot_make_exits_with_the_code_it_has_in_the_foreground() {
    let env = Env::new();
    env.init();
    let _guard = MountGuard::adopt(&env);
    // auto_unmount needs allow_other or allow_root: found only when the mount is made, which
    // the daemon does after the fork.
    for extra in [
        &["-o", "auto_unmount"][..],
        &["-o", "auto_unmount", "--foreground"],
    ] {
        let mut args = env.mount_args();
        args.extend_from_slice(extra);
        let out = run_bounded(&env, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.trim_end().lines().last().unwrap_or_default();
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            last.starts_with("kmsfs: cannot mount at ") && last.contains("auto_unmount"),
            "{extra:?}: {stderr}"
        );
        assert!(!common::is_mounted(&env.plain), "{extra:?}");
    }
}
