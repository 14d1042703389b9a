//! The keys `kmsfs.conf` names: the KMS key of the filesystem key (`fs-key.key-id`), bound into
//! that key's encryption context, so a changed id refuses to mount with one sentence.

mod common;

use common::{Env, is_mounted, pattern};
use std::fs;

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
