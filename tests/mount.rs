//! Real mounts: content round trips, sizes on disk, no plaintext on disk, random operations
//! against a plain-file model, and POSIX behaviour of the namespace.

mod common;

use common::{Env, Rng, expected_cipher_size, pattern};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn read_all(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

const SIZES: [usize; 6] = [0, 1, 4095, 4096, 4097, (1 << 20) + 1];

#[test]
fn files_round_trip_byte_exact_across_remount_with_documented_sizes() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    for (i, &n) in SIZES.iter().enumerate() {
        let data = pattern(n, i as u64);
        fs::write(env.plain.join(format!("f{n}")), &data).expect("write");
        assert_eq!(read_all(&env.plain.join(format!("f{n}"))), data, "size {n}");
        assert_eq!(
            fs::metadata(env.plain.join(format!("f{n}")))
                .expect("stat")
                .len(),
            n as u64
        );
    }
    let cipher = env.cipher_map();
    mount.unmount();
    // The daemon logged its cache counters as it exited.
    let log = env.log_text();
    assert!(
        log.contains("DEK cache counters") && log.contains("misses="),
        "log:\n{log}"
    );
    for &n in &SIZES {
        let on_disk = fs::metadata(&cipher[Path::new(&format!("f{n}"))])
            .expect("stat cipher")
            .len();
        assert_eq!(
            on_disk,
            expected_cipher_size(n as u64),
            "on-disk size of a {n}-byte file"
        );
    }
    let _mount = env.mount();
    for (i, &n) in SIZES.iter().enumerate() {
        assert_eq!(
            read_all(&env.plain.join(format!("f{n}"))),
            pattern(n, i as u64),
            "size {n} after remount"
        );
    }
}

#[test]
fn a_marker_written_through_the_mount_appears_nowhere_in_the_cipher_directory() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let marker = b"MARKER-7f3a9c-kmsfs-plaintext-must-not-leak";
    let mut content = Vec::new();
    for i in 0..3000 {
        content.extend_from_slice(marker);
        content.extend_from_slice(format!(" line {i}\n").as_bytes());
    }
    fs::write(env.plain.join("secret.txt"), &content).expect("write");
    fs::create_dir(env.plain.join("dir")).expect("mkdir");
    fs::write(env.plain.join("dir/small"), marker).expect("write small");
    let f = OpenOptions::new()
        .write(true)
        .open(env.plain.join("secret.txt"))
        .expect("open");
    f.write_all_at(marker, 12345)
        .expect("overwrite in the middle");
    drop(f);
    mount.unmount();
    let mut stack = vec![env.cipher.clone()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("readdir") {
            let path = entry.expect("entry").path();
            if path.is_symlink() {
                // A symlink (each directory's kmsfs.dirid): its target is what it holds.
                let target = fs::read_link(&path).expect("readlink");
                assert!(
                    !target
                        .as_os_str()
                        .as_encoded_bytes()
                        .windows(marker.len())
                        .any(|w| w == marker),
                    "the marker appears in {}",
                    path.display()
                );
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = read_all(&path);
            scanned += 1;
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker),
                "the marker appears in {}",
                path.display()
            );
        }
    }
    assert!(scanned >= 3, "scanned {scanned} files");
}

/// Random writes, appends, truncates and reads through the mount and on a plain file give the
/// same bytes.
#[test]
fn random_operations_match_a_plain_file() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let model_path = env.dir.path().join("model");
    for seed in 1..=3u64 {
        let name = env.plain.join(format!("random{seed}"));
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .expect("open")
        };
        let (mut enc, model) = (open(&name), open(&model_path));
        let mut rng = Rng(seed * 7919);
        for step in 0..250 {
            let size = model.metadata().expect("stat").len();
            match rng.below(10) {
                0..=3 => {
                    let offset = rng.below(size + 3 * 4096 + 1);
                    let data = pattern(1 + rng.below(3 * 4096 + 100) as usize, rng.next());
                    enc.write_all_at(&data, offset).expect("write enc");
                    model.write_all_at(&data, offset).expect("write model");
                }
                4 => {
                    let data = pattern(1 + rng.below(5000) as usize, rng.next());
                    let mut a = OpenOptions::new()
                        .append(true)
                        .open(&name)
                        .expect("open append");
                    a.write_all(&data).expect("append enc");
                    let mut b = OpenOptions::new()
                        .append(true)
                        .open(&model_path)
                        .expect("open append");
                    b.write_all(&data).expect("append model");
                }
                5 | 6 => {
                    let new = rng.below(size + 2 * 4096 + 1);
                    enc.set_len(new).expect("truncate enc");
                    model.set_len(new).expect("truncate model");
                }
                7 => {
                    // Reopen: the file's key comes back through the cache.
                    enc = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&name)
                        .expect("reopen");
                }
                _ => {
                    let offset = rng.below(size + 10);
                    let len = 1 + rng.below(3 * 4096) as usize;
                    let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                    let na = read_full_at(&enc, &mut a, offset);
                    let nb = read_full_at(&model, &mut b, offset);
                    assert_eq!(na, nb, "seed {seed} step {step}: read length at {offset}");
                    assert!(
                        a[..na] == b[..nb],
                        "seed {seed} step {step}: bytes at {offset}"
                    );
                }
            }
            assert_eq!(
                fs::metadata(&name).expect("stat").len(),
                model.metadata().expect("stat").len(),
                "seed {seed} step {step}: size"
            );
        }
        drop(enc);
        assert!(
            read_all(&name) == read_all(&model_path),
            "seed {seed}: final content"
        );
        let cipher_len = fs::metadata(env.cipher_path(&format!("random{seed}")))
            .expect("stat")
            .len();
        assert_eq!(
            cipher_len,
            expected_cipher_size(model.metadata().expect("stat").len())
        );
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match file
            .read_at(&mut buf[done..], offset + done as u64)
            .expect("read")
        {
            0 => break,
            n => done += n,
        }
    }
    done
}

#[test]
fn rename_link_symlink_chmod_and_xattrs_behave_as_on_the_backing_filesystem() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let p = |s: &str| env.plain.join(s);
    fs::create_dir_all(p("a/b")).expect("mkdir -p");
    fs::create_dir(p("c")).expect("mkdir");
    fs::write(p("a/b/one"), b"one").expect("write");
    fs::write(p("c/two"), b"two").expect("write");

    // Rename across directories, then over an existing file.
    fs::rename(p("a/b/one"), p("c/one")).expect("rename across dirs");
    assert_eq!(read_all(&p("c/one")), b"one");
    assert!(!p("a/b/one").exists());
    let cipher = env.cipher_map();
    assert!(
        cipher[Path::new("c/one")].starts_with(&cipher[Path::new("c")]),
        "names follow into the cipher directory"
    );
    assert!(
        !cipher[Path::new("c/one")].ends_with("one"),
        "names are encrypted"
    );
    fs::rename(p("c/one"), p("c/two")).expect("rename over");
    assert_eq!(read_all(&p("c/two")), b"one");
    assert!(!p("c/one").exists());

    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(p("x"), b"x").expect("write");
    fs::write(p("y"), b"y").expect("write");
    let cs = |path: &Path| kmsfs::sys::cstr(path.as_os_str()).expect("cstr");
    let root = File::open(&env.plain).expect("open root");
    let dir = std::os::fd::AsFd::as_fd(&root);
    let err = kmsfs::sys::renameat2(
        dir,
        &cs(Path::new("x")),
        dir,
        &cs(Path::new("y")),
        libc::RENAME_NOREPLACE,
    )
    .expect_err("noreplace onto an existing name");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    kmsfs::sys::renameat2(
        dir,
        &cs(Path::new("x")),
        dir,
        &cs(Path::new("y")),
        libc::RENAME_EXCHANGE,
    )
    .expect("exchange");
    assert_eq!(read_all(&p("x")), b"y");
    assert_eq!(read_all(&p("y")), b"x");

    // Hard links share content and count.
    fs::hard_link(p("x"), p("a/x-link")).expect("link");
    assert_eq!(fs::metadata(p("x")).expect("stat").nlink(), 2);
    assert_eq!(
        fs::metadata(p("x")).expect("stat").ino(),
        fs::metadata(p("a/x-link")).expect("stat").ino()
    );
    fs::write(p("a/x-link"), b"through the link").expect("write link");
    assert_eq!(read_all(&p("x")), b"through the link");
    fs::remove_file(p("x")).expect("unlink");
    assert_eq!(read_all(&p("a/x-link")), b"through the link");

    // Symlinks.
    std::os::unix::fs::symlink("c/two", p("sym")).expect("symlink");
    assert_eq!(
        fs::read_link(p("sym")).expect("readlink"),
        Path::new("c/two")
    );
    assert_eq!(read_all(&p("sym")), b"one");
    assert!(
        fs::symlink_metadata(p("sym"))
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
    let backing_target = fs::read_link(env.cipher_path("sym")).expect("backing readlink");
    assert!(
        !backing_target.to_string_lossy().contains("two"),
        "symlink targets are encrypted: {}",
        backing_target.display()
    );

    // chmod, chown and times.
    fs::set_permissions(p("c/two"), fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(
        fs::metadata(p("c/two")).expect("stat").mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::metadata(env.cipher_path("c/two")).expect("stat").mode() & 0o7777,
        0o640
    );
    std::os::unix::fs::chown(p("c/two"), Some(1234), Some(5678)).expect("chown");
    let meta = fs::metadata(p("c/two")).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(p("c/two"))
        .expect("open")
        .set_modified(when)
        .expect("utimens");
    assert_eq!(
        fs::metadata(p("c/two")).expect("stat").mtime(),
        1_000_000_000
    );

    // Extended attributes pass through.
    let xattr = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("run attr tool");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let target = p("c/two");
    let target = target.to_str().expect("utf-8");
    assert!(xattr(&["setfattr", "-n", "user.color", "-v", "blue", target]).0);
    let (ok, value) = xattr(&["getfattr", "--only-values", "-n", "user.color", target]);
    assert!(ok);
    assert_eq!(value, "blue");
    let (_, listing) = xattr(&["getfattr", "-d", target]);
    assert!(listing.contains("user.color"), "{listing}");
    // On disk, user attributes are sealed: neither the name nor the value shows.
    let backing = env.cipher_path("c/two");
    let (ok, stored) = xattr(&[
        "getfattr",
        "-d",
        "-e",
        "text",
        backing.to_str().expect("utf-8"),
    ]);
    assert!(ok);
    assert!(stored.contains("user."), "{stored}");
    assert!(
        !stored.contains("color") && !stored.contains("blue"),
        "{stored}"
    );
    let long = format!("user.{}", "n".repeat(172));
    assert!(
        !xattr(&["setfattr", "-n", &long, "-v", "x", target]).0,
        "too long a name"
    );
    let longest = format!("user.{}", "n".repeat(171));
    assert!(xattr(&["setfattr", "-n", &longest, "-v", "x", target]).0);
    assert!(xattr(&["setfattr", "-x", &longest, target]).0);
    assert!(xattr(&["setfattr", "-x", "user.color", target]).0);
    assert!(!xattr(&["getfattr", "-n", "user.color", target]).0);

    // O_EXCL, O_TRUNC, rmdir, FIFOs, statfs, and the hidden configuration.
    let err = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p("c/two"))
        .expect_err("O_EXCL");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p("c/two"))
        .expect("O_TRUNC");
    assert_eq!(fs::metadata(p("c/two")).expect("stat").len(), 0);
    assert_eq!(
        fs::metadata(env.cipher_path("c/two")).expect("stat").len(),
        0,
        "an empty file is 0 bytes on disk"
    );
    assert_eq!(
        fs::remove_dir(p("a"))
            .expect_err("not empty")
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    fs::remove_dir(p("a/b")).expect("rmdir");
    let status = std::process::Command::new("mkfifo")
        .arg(p("fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::metadata(p("fifo")).expect("stat").file_type()
    ));
    let out = std::process::Command::new("df")
        .arg(&env.plain)
        .output()
        .expect("df");
    assert!(out.status.success(), "statfs through the mount");
    let names: Vec<String> = fs::read_dir(&env.plain)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "kmsfs.conf"), "{names:?}");
    assert!(!p("kmsfs.conf").exists());
    // With encrypted names, "kmsfs.conf" is a name like any other: the configuration, which
    // the mount never shows, is untouched.
    let conf = fs::read(env.cipher.join("kmsfs.conf")).expect("conf");
    fs::write(p("kmsfs.conf"), b"x").expect("an ordinary name");
    assert_eq!(read_all(&p("kmsfs.conf")), b"x");
    assert_eq!(fs::read(env.cipher.join("kmsfs.conf")).expect("conf"), conf);
}

#[test]
fn with_plaintext_names_the_configuration_cannot_be_reached_through_the_mount() {
    let env = Env::new();
    env.init_with(&["--plaintext-names"]);
    let _mount = env.mount();
    fs::write(env.plain.join("visible"), b"v").expect("write");
    assert!(
        env.cipher.join("visible").exists(),
        "names are kept as they are"
    );
    let names: Vec<String> = fs::read_dir(&env.plain)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["visible"]);
    assert!(!env.plain.join("kmsfs.conf").exists());
    assert!(
        fs::write(env.plain.join("kmsfs.conf"), b"x").is_err(),
        "the configuration cannot be replaced through the mount"
    );
}

/// A rename through the mount never makes an open file point elsewhere, and re-encrypts nothing.
#[test]
fn open_files_follow_renames_and_nothing_is_re_encrypted() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let data = pattern(10_000, 5);
    fs::write(env.plain.join("doc"), &data).expect("write");
    let before = read_all(&env.cipher_path("doc"));
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.plain.join("doc"))
        .expect("open");
    fs::create_dir(env.plain.join("sub")).expect("mkdir");
    fs::rename(env.plain.join("doc"), env.plain.join("sub/moved")).expect("rename");
    fs::write(env.plain.join("doc"), b"a different file").expect("new file at the old name");
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .expect("read through the old handle");
    assert_eq!(buf, data);
    assert_eq!(
        read_all(&env.cipher_path("sub/moved")),
        before,
        "rename changed no cipher byte"
    );
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.write_all(b"HELLO").expect("write through the old handle");
    drop(f);
    assert_eq!(&read_all(&env.plain.join("sub/moved"))[..5], b"HELLO");
    assert_eq!(read_all(&env.plain.join("doc")), b"a different file");
    fs::hard_link(env.plain.join("sub/moved"), env.plain.join("linked")).expect("link");
    assert_eq!(
        read_all(&env.cipher_path("linked")),
        read_all(&env.cipher_path("sub/moved"))
    );
}

#[test]
fn two_writers_to_different_blocks_leave_a_consistent_file() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let path = env.plain.join("shared");
    let blocks = 64usize;
    fs::write(&path, vec![0u8; blocks * 4096]).expect("write");
    let file = std::sync::Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open"),
    );
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let file = file.clone();
            let second = OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("second handle");
            std::thread::spawn(move || {
                for round in 0..20 {
                    for b in (t..blocks).step_by(2) {
                        let data = vec![(b + round) as u8; 4096];
                        // Thread 0 writes through the shared handle, thread 1 through its own.
                        let target = if t == 0 { &*file } else { &second };
                        target
                            .write_all_at(&data, (b * 4096) as u64)
                            .expect("write");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let content = read_all(&path);
    assert_eq!(content.len(), blocks * 4096);
    for b in 0..blocks {
        assert!(
            content[b * 4096..(b + 1) * 4096]
                .iter()
                .all(|&x| x == (b + 19) as u8),
            "block {b}"
        );
    }
}

#[test]
fn sparse_files_stay_sparse_and_read_as_zeros() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let path = env.plain.join("sparse");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create");
    f.write_all_at(b"start", 0).expect("write");
    f.set_len(256 << 20).expect("grow to 256 MiB");
    f.write_all_at(b"middle", 100 << 20)
        .expect("write in the middle");
    drop(f);
    let cipher = fs::metadata(env.cipher_path("sparse")).expect("stat");
    assert_eq!(cipher.len(), expected_cipher_size(256 << 20));
    assert!(
        cipher.blocks() * 512 < 1 << 20,
        "{} bytes allocated for a sparse 256 MiB file",
        cipher.blocks() * 512
    );
    let f = File::open(&path).expect("open");
    let mut buf = vec![0u8; 8192];
    for offset in [4096u64, 50 << 20, (256 << 20) - 8192] {
        f.read_exact_at(&mut buf, offset).expect("read a hole");
        assert!(buf.iter().all(|&b| b == 0), "hole at {offset}");
    }
    let mut head = [0u8; 5];
    f.read_exact_at(&mut head, 0).expect("read");
    assert_eq!(&head, b"start");
    let mut mid = [0u8; 6];
    f.read_exact_at(&mut mid, 100 << 20).expect("read");
    assert_eq!(&mid, b"middle");
}

#[test]
fn fallocate_modes_work_as_on_the_backing_filesystem_and_collapse_is_refused() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let path = env.plain.join("alloc");
    fs::write(&path, b"abc").expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new("fallocate")
            .args(args)
            .arg(&path)
            .output()
            .expect("fallocate")
    };
    assert!(run(&["-l", "20000"]).status.success());
    let content = read_all(&path);
    assert_eq!(content.len(), 20000);
    assert_eq!(&content[..3], b"abc");
    assert!(content[3..].iter().all(|&b| b == 0));
    // Keep size: blocks allocated, size unchanged.
    assert!(run(&["-n", "-o", "0", "-l", "90000"]).status.success());
    assert_eq!(fs::metadata(&path).expect("stat").len(), 20000);
    // Punch a hole and zero a range inside data: those bytes read as zeros, the rest stays.
    let data = common::pattern(64 * 1024, 7);
    fs::write(&path, &data).expect("write");
    assert!(run(&["-p", "-o", "5000", "-l", "20000"]).status.success());
    assert!(run(&["-z", "-o", "40000", "-l", "30000"]).status.success());
    let mut expected = data.clone();
    expected[5000..25000].fill(0);
    expected[40000..].fill(0);
    expected.resize(70000, 0);
    assert!(read_all(&path) == expected, "punched and zeroed ranges");
    // Collapsing would move sealed blocks: refused, the file unchanged.
    let out = run(&["-c", "-o", "0", "-l", "4096"]);
    assert!(!out.status.success(), "collapse range is not supported");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(read_all(&path) == expected);
}

#[test]
fn a_wrong_passphrase_fails_mount_with_one_sentence_and_mounts_nothing() {
    let env = Env::new();
    env.init();
    let wrong = env.dir.path().join("wrong");
    fs::write(&wrong, "not the passphrase\n").expect("write");
    let out = env.run(&[
        "mount",
        Env::s(&env.cipher),
        Env::s(&env.plain),
        "--passphrase-file",
        Env::s(&wrong),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one sentence: {stderr}"
    );
    assert!(stderr.contains("passphrase"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!common::is_mounted(&env.plain));
}

/// The daemon holds a descriptor per inode only while the inode is in use: with an open-file
/// limit of 256 it can't raise, a tree of 600 files and 10 directories still works (created,
/// listed with attributes, read back, renamed), its idle inodes reopened by file handle.
#[test]
fn a_tree_larger_than_the_descriptor_limit_works() {
    let env = Env::new();
    env.init();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=64:256").arg(common::kmsfs_bin());
    let out = cmd
        .args(env.mount_args())
        .env("XDG_STATE_HOME", env.dir.path().join("state-home"))
        .env("XDG_CONFIG_HOME", env.dir.path().join("config-home"))
        .output()
        .expect("run prlimit");
    let _guard = common::MountGuard::adopt(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in 0..10 {
        fs::create_dir(env.plain.join(format!("d{d}"))).expect("mkdir");
        for f in 0..60 {
            fs::write(env.plain.join(format!("d{d}/f{f}")), pattern(100, f)).expect("write");
        }
    }
    let mut listed = 0;
    for d in 0..10 {
        for entry in fs::read_dir(env.plain.join(format!("d{d}"))).expect("readdir") {
            let meta = entry.expect("entry").metadata().expect("metadata");
            assert_eq!(meta.len(), 100);
            listed += 1;
        }
    }
    assert_eq!(listed, 600);
    for d in 0..10 {
        for f in 0..60u64 {
            assert_eq!(
                read_all(&env.plain.join(format!("d{d}/f{f}"))),
                pattern(100, f)
            );
        }
    }
    fs::rename(env.plain.join("d0/f0"), env.plain.join("d9/moved")).expect("rename");
    assert_eq!(read_all(&env.plain.join("d9/moved")), pattern(100, 0));
}

/// The bdi knob of the mount at `mountpoint`.
fn bdi_knob(mountpoint: &Path) -> String {
    let dev = common::mount_device(mountpoint).expect("the mount is in mountinfo");
    format!("/sys/class/bdi/{dev}/max_ratio")
}

/// The value of the mount's bdi knob.
fn bdi_max_ratio(mountpoint: &Path) -> String {
    fs::read_to_string(bdi_knob(mountpoint))
        .expect("bdi max_ratio")
        .trim()
        .to_string()
}

/// As root, the mount may hold 20% of the dirty-page allowance (FUSE's default is 1%), or what
/// `--dirty-percent` says. Where /sys is read-only (some containers), the daemon says in its
/// log that the share stays at 1%, and the mount works.
#[test]
fn the_mount_takes_its_dirty_page_share() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let ratio = bdi_max_ratio(&env.plain);
    // Opening the knob for writing changes nothing; it fails where /sys is read-only.
    let writable = OpenOptions::new()
        .write(true)
        .open(bdi_knob(&env.plain))
        .is_ok();
    if !writable {
        let log = env.log_text();
        assert!(
            log.contains("dirty-page share left at the kernel's 1%"),
            "the share stayed at 1% without a word: {log}"
        );
        fs::write(env.plain.join("f"), b"works").expect("write");
        return;
    }
    assert_eq!(ratio, "20");
    mount.unmount();
    let _mount = env.mount_with(&["--dirty-percent", "5"]);
    assert_eq!(bdi_max_ratio(&env.plain), "5");
}

/// Names in the cipher directory besides `kmsfs.conf` and its directory id, sorted.
fn cipher_names(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(&env.cipher)
        .expect("list the cipher directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kmsfs.conf" && n != "kmsfs.dirid")
        .collect();
    names.sort();
    names
}

/// Opens an unnamed file in `dir` (`O_TMPFILE`).
fn open_unnamed(dir: &Path) -> File {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .unwrap_or_else(|e| panic!("O_TMPFILE in {}: {e}", dir.display()))
}

#[test]
fn an_unnamed_file_keeps_its_content_once_linked_and_leaves_nothing_when_not() {
    use std::os::fd::AsRawFd;
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let data = pattern(300_001, 11);
    let mut kept = open_unnamed(&env.plain);
    kept.write_all(&data).expect("write the unnamed file");
    let mut head = [0u8; 4096];
    kept.read_exact_at(&mut head, 0).expect("read it back");
    assert_eq!(&head[..], &data[..4096]);
    assert_eq!(kept.metadata().expect("fstat").nlink(), 0);
    assert!(fs::read_dir(&env.plain).expect("list").next().is_none());
    let mut dropped = open_unnamed(&env.plain);
    dropped.write_all(b"never named").expect("write");
    // Give the first one a name: linkat of its descriptor, as `O_TMPFILE` users do.
    let proc_path =
        std::ffi::CString::new(format!("/proc/self/fd/{}", kept.as_raw_fd())).expect("path");
    let name = std::ffi::CString::new(env.plain.join("kept").into_os_string().into_encoded_bytes())
        .expect("name");
    // SAFETY: two NUL-terminated paths that live across the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    assert_eq!(linked, 0, "linkat: {}", std::io::Error::last_os_error());
    kept.write_all(b"tail").expect("write after the link");
    drop(kept);
    drop(dropped);
    let mut expected = data.clone();
    expected.extend_from_slice(b"tail");
    assert_eq!(read_all(&env.plain.join("kept")), expected);
    let kept_cipher = env.cipher_path("kept");
    mount.unmount();
    let kept_name = kept_cipher.file_name().expect("name").to_string_lossy();
    assert_eq!(
        cipher_names(&env),
        [kept_name],
        "only the linked file is left"
    );
    assert_eq!(
        fs::metadata(&kept_cipher).expect("stat").len(),
        expected_cipher_size(expected.len() as u64)
    );
    let _mount = env.mount();
    assert_eq!(read_all(&env.plain.join("kept")), expected, "after remount");
    let check = env.fsck();
    assert!(
        check.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}
