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
    // No passphrase at all (no terminal, no file, no environment variable, no passphrase file
    // recorded by init).
    let record = env
        .dir
        .path()
        .join("config-home/kmsfs/passphrase-files.json");
    fs::remove_file(&record).expect("init --passphrase-file recorded the file");
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
    // Not a cipher directory: 8.
    let out = env.run(&["fsck", Env::s(&env.cipher)]);
    let err = failure_with(&out, 8);
    assert!(err.contains("is not a kmsfs cipher directory"), "{err}");
    env.init();
    // Wrong passphrase: 4.
    let wrong = env.dir.path().join("wrong-passphrase");
    fs::write(&wrong, "wrong horse\n").expect("write");
    let out = env.run(&[
        "fsck",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&wrong),
    ]);
    let err = failure_with(&out, 4);
    assert!(err.contains("wrong passphrase"), "{err}");
    // No keystore where kmsfs.conf says: 5.
    let moved = env.dir.path().join("moved-keystore");
    fs::rename(&env.keystore, &moved).expect("move keystore");
    let err = failure_with(&env.fsck(), 5);
    assert!(err.contains("no keystore"), "{err}");
    fs::rename(&moved, &env.keystore).expect("restore keystore");
    // A passphrase file that cannot be read: 6.
    let absent = env.dir.path().join("absent");
    let out = env.run(&[
        "fsck",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&absent),
    ]);
    let err = failure_with(&out, 6);
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
    // No credentials: 4, before anything is sent.
    let err = failure_with(&env.run(&["init", cipher, "--kms", &url]), 4);
    assert!(err.contains("EXOSCALE_API_KEY"), "{err}");
    // Not an endpoint: 2.
    let err = failure_with(&env.run(&["init", cipher, "--kms", "ftp://x"]), 2);
    assert!(err.contains("not a KMS endpoint"), "{err}");
    // An endpoint nothing answers at: 3.
    let mut env = env;
    env.vars = vec![
        ("EXOSCALE_API_KEY".into(), "EXOtest".into()),
        ("EXOSCALE_API_SECRET".into(), "secret".into()),
    ];
    let err = failure_with(&env.run(&["init", Env::s(&env.cipher), "--kms", &url]), 3);
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
    let err = failure_with(&env.run(&["man", Env::s(&blocked.join("man1"))]), 6);
    assert!(err.contains("a-file"), "{err}");
}

/// The key id recorded in a cipher directory's `kmsfs.conf`.
fn conf_key_id(cipher: &Path) -> String {
    let conf: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cipher.join("kmsfs.conf")).expect("conf"))
            .expect("json");
    conf["key-id"].as_str().expect("key id").to_string()
}

#[test]
fn the_remaining_exit_codes_come_from_real_cases() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::write(env.plain.join("a"), common::pattern(10_000, 1)).expect("write");
    let cipher_file = env.cipher_map()[Path::new("a")].clone();
    mount.unmount();
    // 1: fsck finds damage (a flipped byte in a block).
    let mut bytes = fs::read(&cipher_file).expect("read");
    bytes[600] ^= 0x40;
    fs::write(&cipher_file, &bytes).expect("damage");
    assert_eq!(env.fsck().status.code(), Some(1));
    bytes[600] ^= 0x40;
    fs::write(&cipher_file, &bytes).expect("mend");
    assert_eq!(env.fsck().status.code(), Some(0));
    // 10: the name key in kmsfs.conf is another directory's (wrapped under another key).
    let other = env.dir.path().join("other");
    env.ok(&[
        "init",
        Env::s(&other),
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
    ]);
    let conf_path = env.cipher.join("kmsfs.conf");
    let original = fs::read_to_string(&conf_path).expect("conf");
    let mut conf: serde_json::Value = serde_json::from_str(&original).expect("json");
    let theirs: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(other.join("kmsfs.conf")).expect("conf"))
            .expect("json");
    conf["fs-key"]["wrapped"] = theirs["fs-key"]["wrapped"].clone();
    fs::write(&conf_path, conf.to_string()).expect("swap the name key");
    let err = failure_with(&env.fsck(), 10);
    assert!(!err.is_empty());
    fs::write(&conf_path, &original).expect("restore");
    // 9: a "KMS" that answers 200 with something that is not the operation's JSON.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v2", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 65536];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let body = "this is not JSON";
            let _ = std::io::Write::write_all(
                &mut stream,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let mut remote = Env::new();
    remote.vars = vec![
        ("EXOSCALE_API_KEY".into(), "EXOtest".into()),
        ("EXOSCALE_API_SECRET".into(), "secret".into()),
    ];
    let err = failure_with(&remote.run(&["key", "list", "--kms", &url]), 9);
    assert!(!err.is_empty());
    // 5: no keystore where --keystore says.
    let absent = env.dir.path().join("no-keystore");
    let err = failure_with(
        &env.run(&[
            "key",
            "list",
            "--keystore",
            Env::s(&absent),
            "--passphrase-file",
            Env::s(&env.passfile),
        ]),
        5,
    );
    assert!(err.contains("no keystore"), "{err}");
}

#[test]
fn a_mount_point_that_is_not_empty_is_refused_unless_nonempty() {
    let env = Env::new();
    env.init();
    fs::write(env.plain.join("mine"), b"not to be hidden").expect("write");
    // Should the refusal fail, the mount goes.
    let _guard = common::MountGuard::adopt(&env);
    let out = env.run(&env.mount_args());
    let err = failure_with(&out, 1);
    assert!(
        err.contains("not empty") && err.contains(Env::s(&env.plain)),
        "{err}"
    );
    assert!(!common::is_mounted(&env.plain));
    // -o nonempty mounts over it; the file is back once unmounted.
    let mount = env.mount_with(&["-o", "nonempty"]);
    assert!(!env.plain.join("mine").exists(), "the mount hides it");
    mount.unmount();
    assert_eq!(
        fs::read(env.plain.join("mine")).expect("read"),
        b"not to be hidden"
    );
}

#[test]
fn one_cipher_directory_is_mounted_once_and_again_after_a_kill_9() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let second = env.dir.path().join("second");
    fs::create_dir(&second).expect("mkdir");
    // Should the refusal fail, the second mount goes too.
    let _second = LazyUnmount(second.clone());
    let out = env.run(&mount_args(&env, Env::s(&env.cipher), Env::s(&second)));
    let err = failure_with(&out, 1);
    assert!(
        err.contains("already mounted") && err.contains(Env::s(&env.plain)),
        "{err}"
    );
    assert!(!common::is_mounted(&second));
    // Killed: the kernel drops the daemon's lock; the dead mount is detached and the directory
    // mounts again.
    let daemon = daemon_pid(&env);
    common::crash::kill_9(daemon);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::crash::alive(daemon) {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon outlived kill -9"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    common::crash::lazy_unmount(&env.plain);
    drop(mount);
    let again = env.mount_with(&[]);
    fs::write(env.plain.join("f"), b"after the crash").expect("write");
    again.unmount();
}

/// Detaches whatever is mounted at the path on drop.
struct LazyUnmount(std::path::PathBuf);

impl Drop for LazyUnmount {
    fn drop(&mut self) {
        if common::is_mounted(&self.0) {
            common::crash::lazy_unmount(&self.0);
        }
    }
}

/// The pid of the daemon serving `env`'s mount, from the pid file `kmsfs mount` keeps.
fn daemon_pid(env: &Env) -> u32 {
    let run = env.dir.path().join("state-home/kmsfs/run");
    let entry = fs::read_dir(&run)
        .expect("the pid directory")
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .expect("a pid file");
    fs::read_to_string(entry.path())
        .expect("read the pid file")
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn an_unmount_logs_no_warning() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::write(env.plain.join("f"), b"x").expect("write");
    mount.unmount();
    let log = fs::read_to_string(&env.log).expect("log");
    assert!(log.contains("session ended"), "{log}");
    assert!(
        !log.contains("WARN") && !log.contains("Failed to umount"),
        "{log}"
    );
}

#[test]
fn a_directory_or_mount_point_finds_its_keystore_and_recorded_passphrase_file() {
    let env = Env::new();
    env.init();
    let id = conf_key_id(&env.cipher);
    // No default keystore: the sentence says what to name instead, not `kmsfs init`.
    let err = failure_with(&env.run(&["key", "list"]), 5);
    assert!(
        err.contains("no keystore") && err.contains("kmsfs key list DIR"),
        "{err}"
    );
    // The directory names its keystore, init recorded its passphrase file: nothing to add.
    let listed = env.ok(&["key", "list", Env::s(&env.cipher), "--json"]);
    assert!(listed.contains(&id), "{listed}");
    let mount = env.mount();
    let err = failure_with(&env.run(&["key", "list"]), 5);
    assert!(
        err.contains(Env::s(&env.plain)),
        "the mount is named: {err}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "show", Env::s(&env.plain), "--json"]))
            .expect("json");
    assert_eq!(shown["id"], id.as_str());
    let rotated: serde_json::Value =
        serde_json::from_str(&env.ok(&["key", "rotate", Env::s(&env.plain), "--json"]))
            .expect("json");
    assert_eq!(rotated["rotation"]["manual-count"], 1);
    fs::write(env.plain.join("f"), b"x").expect("write");
    env.ok(&["rewrap", Env::s(&env.plain)]);
    env.ok(&["fsck", Env::s(&env.plain)]);
    let shown = env.ok(&["key", "show", &id, "--cipherdir", Env::s(&env.plain)]);
    assert!(shown.contains("version 2"), "{shown}");
    // The cipher directory names its mount to unmount too.
    env.ok(&["unmount", Env::s(&env.cipher)]);
    assert!(!common::is_mounted(&env.plain));
    drop(mount);
    // The mount point, once unmounted, is no cipher directory.
    let err = failure_with(&env.run(&["fsck", Env::s(&env.plain)]), 8);
    assert!(err.contains("not a kmsfs cipher directory"), "{err}");
}

#[test]
fn every_key_command_speaks_json() {
    let env = Env::new();
    env.init();
    let dir = Env::s(&env.cipher);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["key"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--cipherdir", dir, "--json"]);
        serde_json::from_str(&env.ok(&all)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let made = json(&["create", "extra"]);
    let id = made["id"].as_str().expect("id").to_string();
    assert!(json(&["list"])["kms-keys"].is_array());
    assert_eq!(json(&["show", &id])["name"], "extra");
    assert!(json(&["rotate", &id])["rotation"].is_object());
    assert!(json(&["rotations", &id])["rotations"].is_array());
    assert_eq!(json(&["disable", &id])["status"], "success");
    assert_eq!(json(&["enable", &id])["status"], "success");
    assert_eq!(json(&["enable", &id])["status"], "already-applied");
    assert!(json(&["disable-rotation", &id])["rotation"].is_object());
    assert!(json(&["enable-rotation", &id, "--period", "120"])["rotation"].is_object());
    assert!(json(&["schedule-deletion", &id, "--days", "7"])["delete-at"].is_string());
    assert_eq!(json(&["cancel-deletion", &id])["status"], "success");
    // Neither an id nor a directory: a usage error.
    let err = failure_with(&env.run(&["key", "show", "no-such-key"]), 2);
    assert!(err.contains("neither a key id"), "{err}");
}

#[test]
fn passwd_reseals_the_keystore_and_a_wrong_passphrase_changes_nothing() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::write(env.plain.join("f"), b"kept").expect("write");
    // Not while a mount uses the keystore.
    let new = env.dir.path().join("new-passphrase");
    fs::write(&new, "a new passphrase\n").expect("write");
    let err = failure_with(
        &env.run(&[
            "passwd",
            Env::s(&env.cipher),
            "--new-passphrase-file",
            Env::s(&new),
        ]),
        1,
    );
    assert!(err.contains("in use by the mount"), "{err}");
    let cipher_file = env.cipher_path("f");
    mount.unmount();
    let before = fs::read(&env.keystore).expect("keystore");
    let cipher_before = fs::read(&cipher_file).expect("cipher file");
    // A wrong current passphrase: 4, nothing changed.
    let wrong = env.dir.path().join("wrong");
    fs::write(&wrong, "wrong\n").expect("write");
    let out = env.run(&[
        "passwd",
        Env::s(&env.cipher),
        "--passphrase-file",
        Env::s(&wrong),
        "--new-passphrase-file",
        Env::s(&new),
    ]);
    let err = failure_with(&out, 4);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert_eq!(fs::read(&env.keystore).expect("keystore"), before);
    // The right one (the file init recorded): resealed; the record follows the new file.
    let said = env.ok(&[
        "passwd",
        Env::s(&env.cipher),
        "--new-passphrase-file",
        Env::s(&new),
    ]);
    assert!(said.contains("Changed the passphrase"), "{said}");
    assert_ne!(fs::read(&env.keystore).expect("keystore"), before);
    let old = env.run(&[
        "key",
        "list",
        "--keystore",
        Env::s(&env.keystore),
        "--passphrase-file",
        Env::s(&env.passfile),
    ]);
    failure_with(&old, 4);
    env.ok(&["key", "list", Env::s(&env.cipher)]);
    // Nothing was re-encrypted, and the file opens under the new passphrase.
    assert_eq!(fs::read(&cipher_file).expect("cipher file"), cipher_before);
    let mut args = mount_args(&env, Env::s(&env.cipher), Env::s(&env.plain));
    args[4] = Env::s(&new);
    let mount = common::MountGuard::adopt(&env);
    env.ok(&args);
    assert_eq!(fs::read(env.plain.join("f")).expect("read"), b"kept");
    mount.unmount();
}

#[test]
fn version_names_the_commit_and_the_formats() {
    let env = Env::new();
    let out = env.ok(&["--version"]);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_string(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        );
    let first = out.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("kmsfs {} (commit {commit})", env!("CARGO_PKG_VERSION")),
        "{out}"
    );
    for line in [
        "cipher directory (kmsfs.conf): reads versions 1 to 2, writes 2",
        "file header: reads versions 1 to 2, writes 2",
        "keystore file: version 1; keyring: version 1",
    ] {
        assert!(out.contains(line), "{line:?} missing: {out}");
    }
}

#[test]
fn fsck_json_reports_each_finding_with_stable_fields() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::write(env.plain.join("good"), common::pattern(5000, 2)).expect("write");
    fs::write(env.plain.join("bad"), common::pattern(9000, 3)).expect("write");
    let bad = env.cipher_map()[Path::new("bad")].clone();
    mount.unmount();
    let clean: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&env.fsck_with(&["--json"]).stdout))
            .expect("json");
    assert_eq!(clean["clean"], true, "{clean}");
    assert_eq!(clean["files"], 2);
    assert_eq!(clean["findings"], serde_json::json!([]));
    let mut bytes = fs::read(&bad).expect("read");
    bytes[5000] ^= 1;
    fs::write(&bad, &bytes).expect("damage");
    let out = env.fsck_with(&["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).expect("json");
    assert_eq!(report["clean"], false, "{report}");
    assert_eq!(report["damaged-files"], 1, "{report}");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["kind"], "damaged-file");
    assert_eq!(findings[0]["path"], Env::s(&bad));
    assert_eq!(findings[0]["plain-path"], "/bad");
    assert!(
        findings[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("block")),
        "{report}"
    );
}

#[test]
fn ctrl_c_at_the_passphrase_prompt_leaves_echo_on() {
    // A real terminal: script(1) runs a shell on a pseudo-terminal; the shell runs `kmsfs key
    // list` (which prompts), the test types Ctrl-C at the prompt, then the shell prints the
    // terminal's settings. The shell traps SIGINT (a handler, not an ignore: kmsfs gets the
    // default again at exec), so it goes on to `stty -a` after kmsfs died of it.
    let env = Env::new();
    env.init();
    let command = format!(
        "trap true INT; {} key list --keystore {}; stty -a",
        common::kmsfs_bin(),
        Env::s(&env.keystore)
    );
    let mut child = KillOnDrop(env_command_in_pty(&env, &command));
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("Passphrase:") {
        let n = std::io::Read::read(&mut stdout, &mut buf).expect("read the terminal");
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // The prompt is printed before echo is turned off: give it a moment, as a person would.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::io::Write::write_all(&mut stdin, b"\x03").expect("type Ctrl-C");
    std::io::Read::read_to_end(&mut stdout, &mut seen).expect("read the rest");
    let _ = child.0.wait();
    let text = String::from_utf8_lossy(&seen);
    let settings = text.split("Passphrase:").nth(1).unwrap_or_default();
    let words: Vec<&str> = settings.split_whitespace().collect();
    assert!(words.contains(&"echo"), "echo is off after Ctrl-C: {text}");
    assert!(
        !words.contains(&"-echo"),
        "echo is off after Ctrl-C: {text}"
    );
}

/// A child process killed on drop, even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `script -q -c COMMAND /dev/null` with `env`'s variables: COMMAND on a pseudo-terminal, the
/// terminal's input and output through the child's pipes.
fn env_command_in_pty(env: &Env, command: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new("script");
    let root = env.dir.path();
    cmd.args(["-q", "-e", "-c", command, "/dev/null"])
        .env("XDG_DATA_HOME", root.join("data-home"))
        .env("XDG_CONFIG_HOME", root.join("config-home"))
        .env("XDG_STATE_HOME", root.join("state-home"))
        .env_remove("KMSFS_PASSPHRASE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // No recorded passphrase file: the prompt must come.
    let _ = fs::remove_file(root.join("config-home/kmsfs/passphrase-files.json"));
    cmd.spawn().expect("script (util-linux)")
}

#[test]
fn fsck_shows_progress_on_a_terminal_only() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    for i in 0..200 {
        fs::write(env.plain.join(format!("f{i}")), b"x").expect("write");
    }
    mount.unmount();
    let command = format!(
        "{} fsck {} --passphrase-file {}",
        common::kmsfs_bin(),
        Env::s(&env.cipher),
        Env::s(&env.passfile)
    );
    let mut child = KillOnDrop(env_command_in_pty(&env, &command));
    drop(child.0.stdin.take());
    let mut seen = Vec::new();
    let mut stdout = child.0.stdout.take().expect("stdout");
    std::io::Read::read_to_end(&mut stdout, &mut seen).expect("read the terminal");
    let status = child.0.wait().expect("wait");
    let text = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("/200 files"),
        "a progress bar on the terminal: {text}"
    );
    // Not a terminal: no bar.
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("/200 files"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
