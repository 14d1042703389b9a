//! Encrypted names (the default for new cipher directories): no plaintext name or symlink
//! target anywhere in the cipher directory, every namespace operation on short and long names,
//! and damaged names hidden rather than shown as garbage.

mod common;

use common::{Env, pattern};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A name of exactly `len` bytes, made of `seed`-dependent characters; multi-byte UTF-8 when
/// `utf8`.
fn name_of(len: usize, seed: usize, utf8: bool) -> String {
    let mut name = String::new();
    let alphabet: Vec<char> = if utf8 {
        "éßøπж漢字".chars().collect()
    } else {
        "abcdefghijklmnopqrstuvwxyz0123456789-_".chars().collect()
    };
    let mut i = seed;
    while name.len() < len {
        let c = alphabet[i % alphabet.len()];
        if name.len() + c.len_utf8() > len {
            // Pad the last bytes with ASCII so the length is exact.
            name.push('x');
        } else {
            name.push(c);
        }
        i += 7;
    }
    name
}

/// Every name and symlink target in the cipher directory, as raw bytes.
fn cipher_tree_bytes(dir: &Path, out: &mut Vec<u8>) {
    for entry in fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        out.extend_from_slice(entry.file_name().as_bytes());
        out.push(b'\n');
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.file_type().is_symlink() {
            out.extend_from_slice(
                fs::read_link(&path)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes(),
            );
            out.push(b'\n');
        } else if meta.is_file() {
            // Long names' side files hold cipher names; content of files is covered elsewhere.
            if entry.file_name().as_bytes().ends_with(b".name") {
                out.extend_from_slice(&fs::read(&path).expect("read side file"));
            }
        } else if meta.is_dir() {
            cipher_tree_bytes(&path, out);
        }
    }
}

#[test]
fn a_tree_of_names_from_1_to_255_bytes_leaves_no_plaintext_name_and_survives_a_remount() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let mut expected: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut targets: BTreeMap<PathBuf, String> = BTreeMap::new();
    let dirs: Vec<PathBuf> = (0..8)
        .map(|d| PathBuf::from(name_of(20 + d * 30, d, d % 2 == 1)))
        .collect();
    for dir in &dirs {
        fs::create_dir(env.plain.join(dir)).expect("mkdir");
    }
    for i in 0..1000usize {
        let len = 1 + (i * 97) % 255;
        let name = name_of(len.max(8), i, i % 3 == 0);
        assert_eq!(name.len(), len.max(8));
        let rel = dirs[i % dirs.len()].join(&name);
        if i % 10 == 9 {
            let target = format!(
                "../{}/target-{i}-{}",
                dirs[0].display(),
                name_of(12, i, false)
            );
            std::os::unix::fs::symlink(&target, env.plain.join(&rel)).expect("symlink");
            targets.insert(rel, target);
        } else {
            let data = pattern(i % 300, i as u64);
            fs::write(env.plain.join(&rel), &data).expect("write");
            expected.insert(rel, data);
        }
    }
    // The longest names work, in both alphabets.
    for utf8 in [false, true] {
        let rel = dirs[1].join(name_of(255, 3, utf8));
        fs::write(env.plain.join(&rel), b"longest").expect("255-byte name");
        expected.insert(rel, b"longest".to_vec());
    }
    let too_long = env.plain.join(name_of(256, 1, false));
    assert_eq!(
        fs::write(&too_long, b"x")
            .expect_err("256 bytes")
            .raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    mount.unmount();

    let mut on_disk = Vec::new();
    cipher_tree_bytes(&env.cipher, &mut on_disk);
    let on_disk = String::from_utf8_lossy(&on_disk);
    for rel in expected.keys().chain(targets.keys()) {
        let name = rel.file_name().expect("name").to_string_lossy();
        // Names of 4 bytes or fewer could appear by chance inside base64 text.
        if name.len() > 4 {
            assert!(!on_disk.contains(&*name), "plaintext name {name:?} on disk");
        }
    }
    for dir in &dirs {
        assert!(
            !on_disk.contains(&*dir.to_string_lossy()),
            "directory name on disk"
        );
    }
    for target in targets.values() {
        assert!(
            !on_disk.contains("target-"),
            "plaintext symlink target {target:?} on disk"
        );
    }

    let _mount = env.mount();
    for (rel, data) in &expected {
        assert_eq!(
            &fs::read(env.plain.join(rel)).expect("read"),
            data,
            "{}",
            rel.display()
        );
    }
    for (rel, target) in &targets {
        assert_eq!(
            fs::read_link(env.plain.join(rel))
                .expect("readlink")
                .to_string_lossy(),
            *target
        );
        assert_eq!(
            fs::symlink_metadata(env.plain.join(rel))
                .expect("lstat")
                .len(),
            target.len() as u64,
            "a symlink's size is its target's length"
        );
    }
    let listed: usize = dirs
        .iter()
        .map(|d| fs::read_dir(env.plain.join(d)).expect("list").count())
        .sum();
    assert_eq!(
        listed,
        expected.len() + targets.len(),
        "every name is listed, nothing else"
    );
    let out = env.fsck();
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn renames_links_and_removal_work_on_long_and_short_names_alike() {
    let env = Env::new();
    env.init();
    let _mount = env.mount();
    let p = |s: &str| env.plain.join(s);
    let long_a = name_of(255, 1, true);
    let long_b = name_of(230, 2, false);
    fs::create_dir(p("d1")).expect("mkdir");
    fs::create_dir(p(&format!("d1/{long_b}"))).expect("mkdir with a long name");
    fs::write(p(&format!("d1/{long_a}")), b"a").expect("write");
    fs::write(p("short"), b"s").expect("write");
    // Across directories, long to short and back, over an existing name.
    fs::rename(p(&format!("d1/{long_a}")), p("moved")).expect("long to short");
    fs::rename(p("moved"), p(&format!("d1/{long_b}/{long_a}"))).expect("short to long");
    fs::rename(p("short"), p(&format!("d1/{long_b}/{long_a}"))).expect("over a long name");
    assert_eq!(
        fs::read(p(&format!("d1/{long_b}/{long_a}"))).expect("read"),
        b"s"
    );
    // Hard links under long names.
    fs::hard_link(p(&format!("d1/{long_b}/{long_a}")), p(&long_b)).expect("link");
    assert_eq!(fs::metadata(p(&long_b)).expect("stat").nlink(), 2);
    // RENAME_EXCHANGE of a long and a short name.
    fs::write(p("x"), b"x").expect("write");
    let cs = |path: &Path| kmsfs::sys::cstr(path.as_os_str()).expect("cstr");
    let root = fs::File::open(&env.plain).expect("open root");
    let dir = std::os::fd::AsFd::as_fd(&root);
    kmsfs::sys::renameat2(
        dir,
        &cs(Path::new("x")),
        dir,
        &cs(Path::new(&long_b)),
        libc::RENAME_EXCHANGE,
    )
    .expect("exchange");
    assert_eq!(fs::read(p(&long_b)).expect("read"), b"x");
    assert_eq!(fs::read(p("x")).expect("read"), b"s");
    // A directory over an empty directory, and removal.
    fs::create_dir(p("empty")).expect("mkdir");
    fs::create_dir(p("full")).expect("mkdir");
    fs::write(p("full/f"), b"f").expect("write");
    assert_eq!(
        fs::rename(p("empty"), p("full"))
            .expect_err("not empty")
            .raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    fs::remove_file(p("full/f")).expect("rm");
    fs::rename(p("empty"), p("full")).expect("over an empty directory");
    assert!(!p("empty").exists());
    fs::remove_dir(p("full")).expect("rmdir");
    fs::remove_file(p(&format!("d1/{long_b}/{long_a}"))).expect("rm long");
    fs::remove_dir(p(&format!("d1/{long_b}"))).expect("rmdir long");
    fs::remove_dir(p("d1")).expect("rmdir");
    fs::remove_file(p(&long_b)).expect("rm");
    fs::remove_file(p("x")).expect("rm");
    assert_eq!(fs::read_dir(&env.plain).expect("list").count(), 0);
    // Nothing is left behind: no side file, no directory.
    let left: Vec<String> = fs::read_dir(&env.cipher)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "kmsfs.conf" && n != "kmsfs.dirid")
        .collect();
    assert!(left.is_empty(), "left in the cipher directory: {left:?}");
}

#[test]
fn a_damaged_or_moved_cipher_name_is_not_listed() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::create_dir(env.plain.join("a")).expect("mkdir");
    fs::create_dir(env.plain.join("b")).expect("mkdir");
    for name in ["flipped", "moved", "kept"] {
        fs::write(env.plain.join("a").join(name), name).expect("write");
    }
    let cipher = env.cipher_map();
    mount.unmount();
    // One cipher name with a changed character; one moved into another directory, where its
    // directory id does not match.
    let flipped = &cipher[Path::new("a/flipped")];
    let mut name = flipped
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let last = name.pop().expect("a character");
    name.push(if last == 'A' { 'B' } else { 'A' });
    fs::rename(flipped, flipped.with_file_name(&name)).expect("flip");
    let moved = &cipher[Path::new("a/moved")];
    fs::rename(
        moved,
        cipher[Path::new("b")].join(moved.file_name().expect("name")),
    )
    .expect("move");
    let _mount = env.mount();
    let list = |d: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(env.plain.join(d))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(list("a"), ["kept"]);
    assert!(list("b").is_empty());
    assert_eq!(fs::read(env.plain.join("a/kept")).expect("read"), b"kept");
    let log = env.log_text();
    assert!(
        log.contains("does not decrypt"),
        "one log line names the directory:\n{log}"
    );
}

#[test]
fn plaintext_names_keep_the_tree_as_it_is() {
    let env = Env::new();
    env.init_with(&["--plaintext-names"]);
    let _mount = env.mount();
    fs::create_dir(env.plain.join("dir")).expect("mkdir");
    fs::write(env.plain.join("dir/file"), b"content").expect("write");
    std::os::unix::fs::symlink("dir/file", env.plain.join("link")).expect("symlink");
    assert!(env.cipher.join("dir/file").is_file());
    assert_eq!(
        fs::read_link(env.cipher.join("link")).expect("readlink"),
        Path::new("dir/file")
    );
    assert!(!env.cipher.join("kmsfs.dirid").exists());
}

#[test]
fn a_directory_id_lost_in_a_crash_comes_back_from_its_copy() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::create_dir(env.plain.join("d")).expect("mkdir");
    fs::write(env.plain.join("d/inside"), b"x").expect("write");
    let cipher_dir = env.cipher_path("d");
    mount.unmount();
    // What a crash after mkdir can leave: the id link never written.
    let id_link = cipher_dir.join("kmsfs.dirid");
    let id = fs::read_link(&id_link).expect("id");
    assert_eq!(id.as_os_str().len(), 22, "16 bytes in unpadded base64url");
    fs::remove_file(&id_link).expect("lose it");
    let _mount = env.mount();
    let names: Vec<String> = fs::read_dir(env.plain.join("d"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["inside"]);
    assert_eq!(
        fs::read_link(&id_link).expect("id again"),
        id,
        "made again from the copy"
    );
}

/// The names listed in mount directory `dir`.
fn listed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `setfattr ARGS` (package attr) and insists on success.
fn setfattr(args: &[&str], path: &Path) {
    let status = std::process::Command::new("setfattr")
        .args(args)
        .arg(path)
        .status()
        .expect("run setfattr (package attr)");
    assert!(status.success(), "setfattr {args:?} {}", path.display());
}

/// True when backing directory `dir` has the copy of its id.
fn has_id_copy(dir: &Path) -> bool {
    std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "user.kmsfs.dirid"])
        .arg(dir)
        .output()
        .expect("run getfattr (package attr)")
        .status
        .success()
}

#[test]
fn a_directory_copied_without_extended_attributes_reads_its_id_link() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::create_dir(env.plain.join("d")).expect("mkdir");
    fs::write(env.plain.join("d/inside"), b"x").expect("write");
    let cipher_dir = env.cipher_path("d");
    mount.unmount();
    assert!(has_id_copy(&cipher_dir), "mkdir keeps a copy");
    // What `cp -r` or a sync tool that drops extended attributes leaves.
    setfattr(&["-x", "user.kmsfs.dirid"], &cipher_dir);
    let _mount = env.mount();
    assert_eq!(listed(&env.plain.join("d")), ["inside"]);
    assert_eq!(fs::read(env.plain.join("d/inside")).expect("read"), b"x");
    fs::write(env.plain.join("d/more"), b"y").expect("a new name in it");
    assert_eq!(listed(&env.plain.join("d")), ["inside", "more"]);
    assert!(
        !has_id_copy(&cipher_dir),
        "reading a directory writes nothing to it"
    );
}

#[test]
fn with_its_copy_a_directory_id_link_is_not_read_and_a_lost_one_comes_back() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    for dir in ["d", "e", "f"] {
        fs::create_dir(env.plain.join(dir)).expect("mkdir");
        fs::write(env.plain.join(dir).join("inside"), b"x").expect("write");
    }
    let (d, e, f) = (
        env.cipher_path("d"),
        env.cipher_path("e"),
        env.cipher_path("f"),
    );
    mount.unmount();
    let id = fs::read_link(d.join("kmsfs.dirid")).expect("id");
    // Another id of the right length: the mount reads the copy, in the directory's own inode.
    let other = "WlpaWlpaWlpaWlpaWlpaWg";
    fs::remove_file(d.join("kmsfs.dirid")).expect("rm id");
    std::os::unix::fs::symlink(other, d.join("kmsfs.dirid")).expect("another id");
    // Lost: made again from the copy.
    fs::remove_file(e.join("kmsfs.dirid")).expect("rm id");
    // A regular file (the unreleased layout): replaced by the link, from the copy.
    let f_id = fs::read_link(f.join("kmsfs.dirid")).expect("id");
    fs::remove_file(f.join("kmsfs.dirid")).expect("rm id");
    fs::write(f.join("kmsfs.dirid"), [0x5a; 16]).expect("a regular file");
    let _mount = env.mount();
    assert_eq!(listed(&env.plain.join("d")), ["inside"]);
    assert_eq!(listed(&env.plain.join("e")), ["inside"]);
    assert_eq!(listed(&env.plain.join("f")), ["inside"]);
    assert_eq!(
        fs::read_link(d.join("kmsfs.dirid"))
            .expect("id")
            .as_os_str(),
        other,
        "a whole link is not read, so not rewritten"
    );
    let e_id = fs::read_link(e.join("kmsfs.dirid")).expect("id link again");
    assert_eq!(e_id.as_os_str().len(), 22, "made again from the copy");
    assert_ne!(e_id, id);
    assert_eq!(
        fs::read_link(f.join("kmsfs.dirid")).expect("a link now"),
        f_id
    );
    // rmdir removes the id link (it is not read for that either).
    fs::remove_file(env.plain.join("d/inside")).expect("rm");
    fs::remove_dir(env.plain.join("d")).expect("rmdir");
    assert!(!d.exists());
}
