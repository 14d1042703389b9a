//! The common mount(8) options are accepted and take effect: access-time modes, `dev`, `suid`.

mod common;

use common::Env;

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
