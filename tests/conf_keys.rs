//! The two keys `kmsfs.conf` names: the KMS key of the filesystem key (`fs-key.key-id`), bound
//! into that key's encryption context, so a changed id refuses to mount with one sentence; and
//! the key new files get (`key-id`), which `rewrap --to-key` moves once every header and the
//! filesystem key are under the new key, so that the old key can be retired.

mod common;

use common::{Env, is_mounted, pattern};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn conf(env: &Env) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(env.cipher.join("kmsfs.conf")).expect("conf"))
        .expect("json")
}

fn write_conf(env: &Env, conf: &serde_json::Value) {
    fs::write(
        env.cipher.join("kmsfs.conf"),
        serde_json::to_string_pretty(conf).expect("json"),
    )
    .expect("write conf");
}

/// (`key-id`, `fs-key.key-id`) of the directory's kmsfs.conf.
fn key_ids(env: &Env) -> (String, String) {
    let conf = conf(env);
    (
        conf["key-id"].as_str().expect("key-id").to_string(),
        conf["fs-key"]["key-id"]
            .as_str()
            .expect("fs-key key-id")
            .to_string(),
    )
}

fn key(env: &Env, verb: &str, id: &str) {
    env.ok(&[
        "key",
        verb,
        id,
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
    ]);
}

fn inspect_key_id(env: &Env, cipher: &Path) -> String {
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", Env::s(cipher)])).expect("json");
    shown["key-id"].as_str().expect("key-id").to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `a`, `dir/b` and `dir/empty` through a mount.
fn populate(env: &Env) {
    let _mount = env.mount();
    fs::create_dir(env.plain.join("dir")).expect("mkdir");
    fs::write(env.plain.join("a"), pattern(5000, 1)).expect("write");
    fs::write(env.plain.join("dir/b"), pattern(100, 2)).expect("write");
    fs::write(env.plain.join("dir/empty"), b"").expect("write");
}

fn reads_back(env: &Env) {
    assert_eq!(
        fs::read(env.plain.join("a")).expect("read a"),
        pattern(5000, 1)
    );
    assert_eq!(
        fs::read(env.plain.join("dir/b")).expect("read b"),
        pattern(100, 2)
    );
}

#[test]
fn an_fs_key_whose_key_id_was_changed_refuses_to_mount_with_one_sentence() {
    let env = Env::new();
    env.init();
    populate(&env);
    let (_, own) = key_ids(&env);
    let other = env.create_key("other");
    let nowhere = uuid::Uuid::from_bytes([0x5a; 16]).to_string();
    for changed in [&other, &nowhere] {
        let mut edited = conf(&env);
        edited["fs-key"]["key-id"] = changed.as_str().into();
        write_conf(&env, &edited);
        let out = env.run(&env.mount_args());
        assert!(
            !out.status.success(),
            "mounted with fs-key key-id {changed}"
        );
        assert!(!is_mounted(&env.plain));
        let err = text(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
        assert!(
            err.contains(&format!(
                "cannot unwrap the directory's name key with KMS key {changed}: "
            )),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let out = env.fsck();
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("cannot unwrap the directory's name key"),
            "{}",
            text(&out.stderr)
        );
    }
    // Put back, it mounts.
    let mut edited = conf(&env);
    edited["fs-key"]["key-id"] = own.as_str().into();
    write_conf(&env, &edited);
    let _mount = env.mount();
    reads_back(&env);
}

#[test]
fn rewrap_to_another_key_moves_the_conf_key_id_and_the_old_key_can_be_disabled() {
    let env = Env::new();
    env.init();
    populate(&env);
    let (old, old_fs) = key_ids(&env);
    assert_eq!(old, old_fs);
    let new = env.create_key("next");
    let conf_before = fs::read(env.cipher.join("kmsfs.conf")).expect("conf");

    let dry = env.rewrap_with(&["--to-key", &new, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(
        text(&dry.stdout).contains(&format!("kmsfs.conf's key-id would move to {new}")),
        "{}",
        text(&dry.stdout)
    );
    assert_eq!(
        fs::read(env.cipher.join("kmsfs.conf")).expect("conf"),
        conf_before,
        "a dry run writes no conf"
    );

    let out = env.rewrap_with(&["--to-key", &new]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "kmsfs.conf's key-id moved from {old} to {new}: new files get key {new}"
        )),
        "{said}"
    );
    assert_eq!(key_ids(&env), (new.clone(), new.clone()));
    assert!(
        !env.cipher.join(".kmsfs.conf.tmp").exists(),
        "no temporary file left"
    );

    // The old key retired: nothing needs it any more.
    key(&env, "disable", &old);
    {
        let _mount = env.mount();
        reads_back(&env);
        fs::write(env.plain.join("made-after"), b"new file").expect("write");
        let made = env.cipher_path("made-after");
        assert_eq!(inspect_key_id(&env, &made), new);
        assert_eq!(
            inspect_key_id(&env, &env.cipher_path("a")),
            new,
            "and old files"
        );
    }
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // A plain rewrap (new material of the same key) leaves key-id where it is.
    key(&env, "rotate", &new);
    let out = env.rewrap_with(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("key-id"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(key_ids(&env), (new.clone(), new.clone()));
}

#[test]
fn a_header_left_behind_keeps_the_conf_key_id_and_says_so() {
    let env = Env::new();
    env.init();
    populate(&env);
    let (old, _) = key_ids(&env);
    let broken = {
        let _mount = env.mount();
        env.cipher_path("dir/b")
    };
    // The wrapped DEK of one header damaged: the KMS cannot re-encrypt it.
    let f = OpenOptions::new().write(true).open(&broken).expect("open");
    f.write_all_at(&[0xee; 8], 60)
        .expect("damage the wrap slot");
    drop(f);
    let new = env.create_key("next");
    let out = env.rewrap_with(&["--to-key", &new]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "kmsfs.conf's key-id stays {old}: not every file is under {new} yet (1 failed); run rewrap --to-key {new} again"
        )),
        "{said}"
    );
    assert!(
        text(&out.stderr).contains(Env::s(&broken)),
        "the failed file is named: {}",
        text(&out.stderr)
    );
    // The name key moved (it is independent of the headers); new files keep the old key.
    assert_eq!(key_ids(&env), (old.clone(), new.clone()));
    let _mount = env.mount();
    assert_eq!(
        fs::read(env.plain.join("a")).expect("read a"),
        pattern(5000, 1)
    );
    fs::write(env.plain.join("made-after"), b"x").expect("write");
    assert_eq!(inspect_key_id(&env, &env.cipher_path("made-after")), old);
}

#[test]
fn rewrap_to_another_key_under_a_live_mount_says_the_mount_keeps_the_old_key() {
    let env = Env::new();
    env.init();
    populate(&env);
    let (old, _) = key_ids(&env);
    let new = env.create_key("next");
    let _mount = env.mount();
    let out = env.rewrap_with(&["--to-key", &new]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!(
            "the mount at {} still gives new files key {old}: remount it, then run rewrap --to-key {new} again",
            fs::canonicalize(&env.plain).expect("canonical").display()
        )),
        "{said}"
    );
    assert_eq!(key_ids(&env), (new.clone(), new));
    reads_back(&env);
}
