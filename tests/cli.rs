//! The command line: every start-up error is one plain sentence and mounts nothing; key
//! management and inspect speak the API's field names.

mod common;

use common::Env;
use std::fs;
use std::path::Path;

fn one_sentence(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.starts_with("kmsfs: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    stderr
}

/// The one sentence of a failure that exited with `code`.
fn failure_with(out: &std::process::Output, code: i32) -> String {
    let err = one_sentence(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

fn mount_args<'a>(env: &'a Env, cipher: &'a str, plain: &'a str) -> Vec<&'a str> {
    vec![
        "mount",
        cipher,
        plain,
        "--passphrase-file",
        Env::s(&env.passfile),
        "--log",
        Env::s(&env.log),
    ]
}

#[test]
fn start_up_errors_are_one_sentence_and_mount_nothing() {
    let env = Env::new();
    // Not a cipher directory.
    fs::create_dir(&env.cipher).expect("mkdir");
    let err = one_sentence(&env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain))));
    assert!(err.contains("is not a kmsfs cipher directory"), "{err}");
    fs::remove_dir(&env.cipher).expect("rmdir");
    env.init();
    // Mount point missing.
    let missing = env.dir.path().join("nowhere");
    let err = one_sentence(&env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&missing))));
    assert!(err.contains("mount point"), "{err}");
    // Mount point busy.
    let mount = env.mount();
    let err = one_sentence(&env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain))));
    assert!(err.contains("busy"), "{err}");
    mount.unmount();
    // No passphrase at all (no terminal, no file, no environment variable).
    let err = one_sentence(&env.run(&["mount", Env::s(&env.cipher), Env::s(&env.plain)]));
    assert!(err.contains("passphrase"), "{err}");
    // Keystore gone.
    fs::rename(&env.keystore, env.dir.path().join("moved-keystore")).expect("move keystore");
    let err = one_sentence(&env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain))));
    assert!(err.contains("no keystore"), "{err}");
    fs::rename(env.dir.path().join("moved-keystore"), &env.keystore).expect("restore keystore");
    // A flipped byte in the keystore.
    let mut bytes = fs::read(&env.keystore).expect("read keystore");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&env.keystore, &bytes).expect("damage keystore");
    let out = env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain)));
    one_sentence(&out);
    assert!(!common::is_mounted(&env.plain));
    bytes[middle] ^= 0x01;
    fs::write(&env.keystore, &bytes).expect("repair keystore");
    // Unknown mount option.
    let mut args = mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain));
    args.extend_from_slice(&["-o", "bogus"]);
    let err = one_sentence(&env.run(&args));
    assert!(err.contains("bogus"), "{err}");
    assert!(!common::is_mounted(&env.plain));
    // Unmount of nothing.
    let err = one_sentence(&env.run(&["unmount", Env::s(&env.plain)]));
    assert!(err.contains("nothing is mounted"), "{err}");
}

#[test]
fn init_refuses_a_non_empty_directory_and_reuses_a_keystore() {
    let env = Env::new();
    fs::create_dir(&env.cipher).expect("mkdir");
    fs::write(env.cipher.join("file"), b"x").expect("write");
    let err = one_sentence(&env.run(&[
        "init",
        Env::s(&env.cipher),
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
    ]));
    assert!(err.contains("not empty"), "{err}");
    assert!(!env.keystore.exists(), "nothing created on failure");
    fs::remove_file(env.cipher.join("file")).expect("rm");
    env.init();
    let conf = fs::read_to_string(env.cipher.join("kmsfs.conf")).expect("conf");
    assert!(!conf.contains("correct horse"), "no secret in kmsfs.conf");
    let conf: serde_json::Value = serde_json::from_str(&conf).expect("json");
    assert_eq!(conf["format-version"], 2);
    assert_eq!(conf["kms"]["backend"], "embedded");
    // Names are encrypted by default: the name key, wrapped by the directory's key, is kept.
    assert_eq!(conf["fs-key"]["key-id"], conf["key-id"]);
    assert!(
        conf["fs-key"]["wrapped"]
            .as_str()
            .is_some_and(|w| w.len() > 40),
        "{conf}"
    );
    // A second directory in the same keystore gets its own key.
    let second = env.dir.path().join("second");
    env.ok(&[
        "init",
        Env::s(&second),
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
        "--plaintext-names",
    ]);
    let conf2: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(second.join("kmsfs.conf")).expect("conf"))
            .expect("json");
    assert_ne!(conf["key-id"], conf2["key-id"]);
    assert!(
        conf2.get("fs-key").is_none(),
        "plaintext names need no name key: {conf2}"
    );
    // --key reuses an existing key.
    let third = env.dir.path().join("third");
    let key = conf["key-id"].as_str().expect("key id");
    env.ok(&[
        "init",
        Env::s(&third),
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
        "--key",
        key,
    ]);
    let conf3: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(third.join("kmsfs.conf")).expect("conf"))
            .expect("json");
    assert_eq!(conf3["key-id"], conf["key-id"]);
    let out = env.run(&[
        "init",
        Env::s(&env.dir.path().join("fourth")),
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
        "--key",
        "00000000-0000-4000-8000-000000000000",
    ]);
    let err = failure_with(&out, 7);
    assert!(err.contains("Key Not Found"), "{err}");
}

#[test]
fn key_commands_and_inspect_show_rotation_in_new_files() {
    let env = Env::new();
    env.init();
    let ks = [
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
    ];
    let key = |args: &[&str]| {
        let mut all = vec!["key"];
        all.extend_from_slice(args);
        all.extend_from_slice(&ks);
        env.ok(&all)
    };
    let list: serde_json::Value = serde_json::from_str(&key(&["list", "--json"])).expect("json");
    let keys = list["kms-keys"].as_array().expect("kms-keys");
    assert_eq!(
        keys.len(),
        2,
        "the default key and the directory's key: {list}"
    );
    let conf: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.cipher.join("kmsfs.conf")).expect("conf"))
            .expect("json");
    let id = conf["key-id"].as_str().expect("key id").to_string();
    let shown: serde_json::Value =
        serde_json::from_str(&key(&["show", &id, "--json"])).expect("json");
    for field in [
        "id",
        "name",
        "usage",
        "source",
        "status",
        "status-since",
        "material",
        "rotation",
        "multi-zone",
        "origin-zone",
        "created-at",
        "revision",
    ] {
        assert!(shown.get(field).is_some(), "show lacks {field}: {shown}");
    }
    assert_eq!(shown["material"]["version"], 1);
    assert_eq!(shown["rotation"]["rotation-period"], 365);
    let text = key(&["list"]);
    assert!(text.contains(&id), "{text}");

    let mount = env.mount();
    fs::write(env.plain.join("before"), b"old material").expect("write");
    let rotated: serde_json::Value =
        serde_json::from_str(&key(&["rotate", &id, "--json"])).expect("json");
    assert_eq!(rotated["rotation"]["manual-count"], 1);
    // The embedded backend reloads the keystore when it changes: new files take version 2.
    fs::write(env.plain.join("after"), b"new material").expect("write");
    assert_eq!(
        fs::read(env.plain.join("before")).expect("read old"),
        b"old material"
    );
    let cipher = env.cipher_map();
    mount.unmount();
    let inspect = |name: &str| -> serde_json::Value {
        serde_json::from_str(&env.ok(&["inspect", Env::s(&cipher[Path::new(name)])])).expect("json")
    };
    let before = inspect("before");
    let after = inspect("after");
    assert_eq!(before["key-material-version"], 1, "{before}");
    assert_eq!(after["key-material-version"], 2, "{after}");
    assert_eq!(before["key-id"], id.as_str());
    assert_eq!(
        before["header-version"], 2,
        "new files get header version 2"
    );
    assert_eq!(before["plain-size"], 12);
    assert_eq!(before["file-id"].as_str().expect("file id").len(), 32);
    assert!(before["wrapped-dek-length"].as_u64().expect("length") > 32);
    // Disabled key: mount refuses with a sentence.
    key(&["disable", &id]);
    let out = env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain)));
    let err = failure_with(&out, 7);
    assert!(err.contains("disabled"), "{err}");
    key(&["enable", &id]);
    let _mount = env.mount();
    assert_eq!(
        fs::read(env.plain.join("after")).expect("read"),
        b"new material"
    );
}

#[test]
fn inspect_refuses_a_file_that_is_not_ours() {
    let env = Env::new();
    let path = env.dir.path().join("random");
    fs::write(&path, common::pattern(600, 3)).expect("write");
    let err = one_sentence(&env.run(&["inspect", Env::s(&path)]));
    assert!(err.contains("no valid kmsfs header"), "{err}");
}

#[test]
fn the_default_keystore_and_the_passphrase_variable_work() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["init", Env::s(&env.cipher)])
        .env("KMSFS_PASSPHRASE", "from the environment")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let default = env.dir.path().join("data-home/kmsfs/keystore");
    assert!(
        default.exists(),
        "keystore at $XDG_DATA_HOME/kmsfs/keystore"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(&default).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let listed = env
        .cmd()
        .args(["key", "list"])
        .env("KMSFS_PASSPHRASE", "from the environment")
        .output()
        .expect("run");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let wrong = env
        .cmd()
        .args(["key", "list"])
        .env("KMSFS_PASSPHRASE", "wrong")
        .output()
        .expect("run");
    let err = one_sentence(&wrong);
    assert!(err.contains("passphrase"), "{err}");
}

#[test]
fn exit_codes_say_what_failed() {
    let env = Env::new();
    // Not a cipher directory: 4.
    let out = env.run(&["fsck", Env::s(&env.cipher)]);
    let err = failure_with(&out, 4);
    assert!(err.contains("is not a kmsfs cipher directory"), "{err}");
    env.init();
    // Wrong passphrase: 5.
    let wrong = env.dir.path().join("wrong-passphrase");
    fs::write(&wrong, "wrong horse\n").expect("write");
    let out = env.run(&[
        "fsck",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&wrong),
    ]);
    let err = failure_with(&out, 5);
    assert!(err.contains("wrong passphrase"), "{err}");
    // No keystore where kmsfs.conf says: 5.
    let moved = env.dir.path().join("moved-keystore");
    fs::rename(&env.keystore, &moved).expect("move keystore");
    let err = failure_with(&env.fsck(), 5);
    assert!(err.contains("no keystore"), "{err}");
    fs::rename(&moved, &env.keystore).expect("restore keystore");
    // A passphrase file that cannot be read: 3.
    let absent = env.dir.path().join("absent");
    let out = env.run(&[
        "fsck",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&absent),
    ]);
    let err = failure_with(&out, 3);
    assert!(err.contains("cannot read the passphrase file"), "{err}");
    // A command line clap refuses: 2.
    let out = env.run(&["fsck"]);
    assert_eq!(out.status.code(), Some(2));
    // The fsck that runs fine: 0.
    assert_eq!(env.fsck().status.code(), Some(0));
}

#[test]
fn exit_codes_of_a_remote_kms() {
    let env = Env::new();
    // Nothing listens on this port once the listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/v2");
    let cipher = Env::s(&env.cipher);
    // No credentials: 8, before anything is sent.
    let err = failure_with(&env.run(&["init", cipher, "--kms", &url]), 8);
    assert!(err.contains("EXOSCALE_API_KEY"), "{err}");
    // Not an endpoint: 2.
    let err = failure_with(&env.run(&["init", cipher, "--kms", "ftp://x"]), 2);
    assert!(err.contains("not a KMS endpoint"), "{err}");
    // An endpoint nothing answers at: 6.
    let mut env = env;
    env.vars = vec![
        ("EXOSCALE_API_KEY".into(), "EXOtest".into()),
        ("EXOSCALE_API_SECRET".into(), "secret".into()),
    ];
    let err = failure_with(&env.run(&["init", Env::s(&env.cipher), "--kms", &url]), 6);
    assert!(err.contains("unreachable"), "{err}");
    assert!(!env.cipher.exists(), "nothing created on failure");
}

#[test]
fn completions_name_every_command_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = env.ok(&["completions", shell]);
        for command in ["init", "mount", "unmount", "rewrap", "fsck", "serve"] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
    }
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_writes_a_page_per_command_and_subcommand() {
    let env = Env::new();
    let dir = env.dir.path().join("man/man1");
    let listed = env.ok(&["man", Env::s(&dir)]);
    for name in [
        "kmsfs",
        "kmsfs-init",
        "kmsfs-mount",
        "kmsfs-unmount",
        "kmsfs-key-rotate",
        "kmsfs-kms-serve",
        "kmsfs-kms-org-create",
        "kmsfs-rewrap",
        "kmsfs-fsck",
    ] {
        let path = dir.join(format!("{name}.1"));
        let page = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(
            page.contains(&format!(".TH {name} 1")),
            "{name}.1 is a man page"
        );
        assert!(listed.contains(Env::s(&path)), "{name}.1 is listed");
    }
    assert!(
        !dir.join("kmsfs-help.1").exists(),
        "no page for clap's help"
    );
    // A directory that cannot be made: a regular file stands in its way.
    let blocked = env.dir.path().join("a-file");
    fs::write(&blocked, b"x").expect("write");
    let err = failure_with(&env.run(&["man", Env::s(&blocked.join("man1"))]), 3);
    assert!(err.contains("a-file"), "{err}");
}
