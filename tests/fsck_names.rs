//! `kmsfs fsck` with encrypted names: a tree written through a mount, damaged at rest the ways
//! a hand or a sync tool can (a changed name, a name moved to another directory, a lost or
//! swapped long-name side file, swapped directory ids, a changed block, a changed symlink target,
//! xattr name or xattr value) and a crash can (a side file left without its name). fsck names
//! each by its plaintext directory and cipher path, each damaged file, link or xattr by both
//! paths, and `--repair` deletes the orphan and nothing else.

mod common;

use common::{Env, pattern};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const CIPHER_BLOCK: u64 = 4124;

/// The extended attribute that holds the copy of a directory's id, the one the mount reads.
const DIR_ID_COPY: &[u8] = b"user.kmsfs.dirid";

/// A 200-byte name: its cipher name is long, kept in a side file.
fn long(seed: char) -> String {
    std::iter::repeat_n(seed, 200).collect()
}

fn side_file(short: &Path) -> PathBuf {
    let mut side = short.as_os_str().to_os_string();
    side.push(".name");
    PathBuf::from(side)
}

fn swap(a: &Path, b: &Path) {
    let parked = a.with_extension("parked");
    fs::rename(a, &parked).expect("swap");
    fs::rename(b, a).expect("swap");
    fs::rename(&parked, b).expect("swap");
}

/// Flips a byte inside block `index` of a cipher file.
fn flip_block(path: &Path, index: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let at = 512 + index * CIPHER_BLOCK + 40;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).expect("read");
    f.write_all_at(&[byte[0] ^ 0x20], at).expect("flip");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every entry of the cipher directory, recursively.
fn cipher_entries(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).expect("lstat").is_dir() {
            cipher_entries(&path, out);
        }
    }
}

/// Writes the test tree through a mount; returns the cipher path of every plaintext path.
fn write_tree(env: &Env) -> HashMap<PathBuf, PathBuf> {
    let mount = env.mount();
    let p = |rel: &str| env.plain.join(rel);
    for dir in [
        "docs".to_string(),
        "docs/deep".into(),
        "docs/deep/nested".into(),
        "photos".into(),
        "left".into(),
        "right".into(),
        format!("docs/{}", long('d')),
    ] {
        fs::create_dir(p(&dir)).expect("mkdir");
    }
    let files: Vec<(String, Vec<u8>)> = vec![
        ("docs/report.txt".into(), pattern(3 * 4096 + 10, 1)),
        ("docs/flipped".into(), b"flipped".to_vec()),
        ("docs/moved".into(), b"moved".to_vec()),
        (format!("docs/{}", long('a')), b"side file lost".to_vec()),
        (format!("docs/{}", long('o')), b"to be orphaned".to_vec()),
        (format!("docs/deep/{}", long('b')), b"b".to_vec()),
        (format!("docs/deep/{}", long('c')), b"c".to_vec()),
        ("docs/deep/nested/n.txt".into(), b"nested".to_vec()),
        (format!("docs/{}/inner", long('d')), b"inner".to_vec()),
        ("photos/a.jpg".into(), pattern(5000, 2)),
        ("left/l1".into(), pattern(100, 3)),
        ("left/l2".into(), b"l2".to_vec()),
        ("right/r1".into(), b"r1".to_vec()),
        ("top".into(), b"top".to_vec()),
    ];
    for (rel, data) in &files {
        fs::write(p(rel), data).expect("write");
    }
    let map = env.cipher_map();
    mount.unmount();
    map
}

#[test]
fn fsck_names_every_damaged_name_and_file_and_repair_deletes_only_the_orphan() {
    let env = Env::new();
    env.init();
    let cipher = write_tree(&env);
    let c = |rel: &str| cipher[Path::new(rel)].clone();
    let clean = env.fsck();
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));

    // A changed character in a short name.
    let flipped = c("docs/flipped");
    let mut name = flipped
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let first = name.remove(0);
    name.insert(0, if first == 'A' { 'B' } else { 'A' });
    let flipped = flipped.with_file_name(&name);
    fs::rename(c("docs/flipped"), &flipped).expect("flip");
    // A name moved into another directory.
    let moved = c("photos").join(c("docs/moved").file_name().expect("name"));
    fs::rename(c("docs/moved"), &moved).expect("move");
    // A long name's side file deleted; two long names' side files swapped.
    let lost_side = c(&format!("docs/{}", long('a')));
    fs::remove_file(side_file(&lost_side)).expect("rm side file");
    let (b, cc) = (
        c(&format!("docs/deep/{}", long('b'))),
        c(&format!("docs/deep/{}", long('c'))),
    );
    swap(&side_file(&b), &side_file(&cc));
    // Two directories' ids swapped: the links and the copies.
    swap(
        &c("left").join("kmsfs.dirid"),
        &c("right").join("kmsfs.dirid"),
    );
    let (left_id, right_id) = (
        get_xattr(&c("left"), DIR_ID_COPY).expect("copy"),
        get_xattr(&c("right"), DIR_ID_COPY).expect("copy"),
    );
    set_xattr(&c("left"), DIR_ID_COPY, &right_id);
    set_xattr(&c("right"), DIR_ID_COPY, &left_id);
    let names_only = env.fsck();
    assert_eq!(
        names_only.status.code(),
        Some(1),
        "names alone are damage: {}",
        stdout(&names_only)
    );
    // A block of a file in a directory whose names do not read changed.
    flip_block(&c("left/l1"), 0);
    // A block of a file changed.
    flip_block(&c("docs/report.txt"), 1);
    // A crash between the unlink of a long name and that of its side file.
    let orphaned = c(&format!("docs/{}", long('o')));
    fs::remove_file(&orphaned).expect("rm");

    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    let short = |p: &Path| p.file_name().expect("name").to_string_lossy().into_owned();
    let expected = [
        format!(
            "{}: name in /docs: does not decrypt: authentication failed",
            flipped.display()
        ),
        format!(
            "{}: name in /photos: moved here from /docs, where it reads \"moved\"",
            moved.display()
        ),
        format!(
            "{}: name in /docs: its side file is missing",
            lost_side.display()
        ),
        format!(
            "{}: name in /docs/deep: its side file holds the cipher name of {}",
            b.display(),
            short(&cc)
        ),
        format!(
            "{}: name in /docs/deep: its side file holds the cipher name of {}",
            cc.display(),
            short(&b)
        ),
        format!(
            "{}: directory /left: its kmsfs.dirid and that of /right are swapped; its 2 names \
             cannot be read (they decrypt with the id in the other's)",
            c("left").display()
        ),
        format!(
            "{}: directory /right: its kmsfs.dirid and that of /left are swapped; its one \
             name cannot be read (they decrypt with the id in the other's)",
            c("right").display()
        ),
        format!(
            "{}: orphaned long-name side file; safe to delete",
            side_file(&orphaned).display()
        ),
        format!(
            "{} (plaintext /docs/report.txt): block 1 fails authentication",
            c("docs/report.txt").display()
        ),
        format!(
            "{} (plaintext path unreadable): block 0 fails authentication",
            c("left/l1").display()
        ),
    ];
    for line in &expected {
        assert!(
            report.lines().any(|l| l == line),
            "fsck does not say\n{line}\nin\n{report}"
        );
    }
    assert_eq!(
        report.lines().count(),
        expected.len(),
        "nothing else:\n{report}"
    );
    // The 21 names of the clean tree less the orphaned one; unreadable: the flipped, the
    // moved, the one without its side file, the two with swapped ones, the three in left and
    // right.
    let summary = stderr(&out);
    assert!(
        summary.contains(
            "fsck: 13 files checked, 2 damaged; 20 names checked, 8 unreadable; 1 orphaned side \
             file"
        ),
        "{summary}"
    );

    // A repair deletes the orphan, and nothing else.
    let mut before = Vec::new();
    cipher_entries(&env.cipher, &mut before);
    let out = env.fsck_with(&["--repair"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "damage is left: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).lines().any(|l| l
            == format!(
                "{}: orphaned long-name side file; deleted",
                side_file(&orphaned).display()
            )),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("1 orphaned side file, 1 deleted"));
    let mut after = Vec::new();
    cipher_entries(&env.cipher, &mut after);
    before.retain(|p| *p != side_file(&orphaned));
    assert_eq!(after, before, "only the orphan is gone");
    let out = env.fsck();
    assert!(
        !stdout(&out).contains("orphaned"),
        "no orphan left: {}",
        stdout(&out)
    );
}

#[test]
fn a_clean_tree_exits_zero_with_a_count_line_and_so_does_an_orphan() {
    let env = Env::new();
    env.init();
    let cipher = write_tree(&env);
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "", "a clean tree has nothing to report");
    // Names: 5 in the root, 7 in docs, 3 in docs/deep, 1 each in nested, the long directory
    // and photos, 2 in left, 1 in right.
    assert_eq!(
        stderr(&out).trim_end(),
        "fsck: 14 files checked, 0 damaged; 21 names checked, 0 unreadable"
    );
    // A side file left without its name by a crash is harmless: reported, exit 0.
    let orphaned = cipher[Path::new(&format!("docs/{}", long('o')))].clone();
    fs::remove_file(&orphaned).expect("rm");
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: orphaned long-name side file; safe to delete\n",
            side_file(&orphaned).display()
        )
    );
    assert_eq!(
        stderr(&out).trim_end(),
        "fsck: 13 files checked, 0 damaged; 20 names checked, 0 unreadable; 1 orphaned side file"
    );
}

#[test]
fn plaintext_names_keep_one_path_per_line() {
    let env = Env::new();
    env.init_with(&["--plaintext-names"]);
    let mount = env.mount();
    fs::create_dir(env.plain.join("dir")).expect("mkdir");
    fs::write(env.plain.join("dir/file"), pattern(9000, 4)).expect("write");
    mount.unmount();
    let file = env.cipher.join("dir/file");
    flip_block(&file, 2);
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!("{}: block 2 fails authentication\n", file.display())
    );
    assert_eq!(stderr(&out).trim_end(), "fsck: 1 files checked, 1 damaged");
}

/// `path`'s extended attribute `name`, without following a symlink.
fn get_xattr(path: &Path, name: &[u8]) -> std::io::Result<Vec<u8>> {
    let path = kmsfs::sys::cstr(path.as_os_str())?;
    let name = std::ffi::CString::new(name).expect("no NUL");
    let mut value = vec![0u8; 65536];
    let len = kmsfs::sys::getxattr(&path, &name, &mut value, true)?;
    value.truncate(len);
    Ok(value)
}

fn set_xattr(path: &Path, name: &[u8], value: &[u8]) {
    let path = kmsfs::sys::cstr(path.as_os_str()).expect("path");
    let name = std::ffi::CString::new(name).expect("no NUL");
    kmsfs::sys::setxattr(&path, &name, value, 0, true).expect("setxattr");
}

/// The `user.` names of `path`'s extended attributes, as listed, but the directory id's copy.
fn user_xattrs(path: &Path) -> Vec<Vec<u8>> {
    let cpath = kmsfs::sys::cstr(path.as_os_str()).expect("path");
    let mut list = vec![0u8; 65536];
    let len = kmsfs::sys::listxattr(&cpath, &mut list, true).expect("listxattr");
    list[..len]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user.") && *n != DIR_ID_COPY)
        .map(<[u8]>::to_vec)
        .collect()
}

/// `text` with its byte at `at` changed, within the base64url alphabet.
fn flip_char(text: &[u8], at: usize) -> Vec<u8> {
    let mut out = text.to_vec();
    out[at] = if out[at] == b'A' { b'B' } else { b'A' };
    out
}

#[test]
fn fsck_names_a_changed_symlink_target_xattr_name_and_value_and_repair_leaves_them() {
    let env = Env::new();
    env.init();
    let cipher = {
        let _mount = env.mount();
        let p = |rel: &str| env.plain.join(rel);
        fs::create_dir(p("docs")).expect("mkdir");
        for name in ["docs/a", "docs/b", "docs/c"] {
            fs::write(p(name), name).expect("write");
        }
        std::os::unix::fs::symlink("a", p("docs/link")).expect("symlink");
        std::os::unix::fs::symlink("docs/c", p("top-link")).expect("symlink");
        set_xattr(&p("docs/a"), b"user.color", b"blue");
        set_xattr(&p("docs/b"), b"user.note", b"checked by ops");
        set_xattr(&p("docs"), b"user.project", b"kmsfs");
        env.cipher_map()
    };
    let c = |rel: &str| cipher[Path::new(rel)].clone();
    let clean = env.fsck();
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert_eq!(stdout(&clean), "");
    assert_eq!(
        stderr(&clean).trim_end(),
        "fsck: 3 files checked, 0 damaged; 6 names checked, 0 unreadable; 2 symlink targets and \
         3 extended attributes checked, 0 unreadable"
    );

    // A changed character in a symlink's cipher target.
    let link = c("docs/link");
    let target = fs::read_link(&link).expect("readlink");
    fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(&flip_char(target.as_os_str().as_bytes(), 3)),
        &link,
    )
    .expect("symlink");
    // A changed character in an xattr's stored name (the value kept).
    let a = c("docs/a");
    let [stored] = &user_xattrs(&a)[..] else {
        panic!("one xattr on docs/a");
    };
    let value = get_xattr(&a, stored).expect("value");
    let changed_name = flip_char(stored, 8);
    set_xattr(&a, &changed_name, &value);
    let path = kmsfs::sys::cstr(a.as_os_str()).expect("path");
    let old = std::ffi::CString::new(stored.clone()).expect("no NUL");
    kmsfs::sys::removexattr(&path, &old, true).expect("removexattr");
    // A changed byte in an xattr's value.
    let b = c("docs/b");
    let [note] = &user_xattrs(&b)[..] else {
        panic!("one xattr on docs/b");
    };
    let mut value = get_xattr(&b, note).expect("value");
    value[20] ^= 0x01;
    set_xattr(&b, note, &value);

    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let expected = [
        format!(
            "{} (plaintext /docs/a): extended attribute stored as {:?}: name does not decrypt: \
             authentication failed",
            a.display(),
            String::from_utf8_lossy(&changed_name)
        ),
        format!(
            "{} (plaintext /docs/b): extended attribute \"user.note\": value does not decrypt: \
             authentication failed",
            b.display()
        ),
        format!(
            "{} (plaintext /docs/link): symlink target does not decrypt: authentication failed",
            link.display()
        ),
    ];
    assert_eq!(stdout(&out), expected.join("\n") + "\n");
    assert_eq!(
        stderr(&out).trim_end(),
        "fsck: 3 files checked, 0 damaged; 6 names checked, 0 unreadable; 2 symlink targets and \
         3 extended attributes checked, 3 unreadable"
    );

    // A repair says so, changes nothing, and leaves the exit status 1.
    let stored_xattrs = |path: &Path| -> Vec<(Vec<u8>, Vec<u8>)> {
        user_xattrs(path)
            .into_iter()
            .map(|name| {
                let value = get_xattr(path, &name).expect("value");
                (name, value)
            })
            .collect()
    };
    let before = [stored_xattrs(&a), stored_xattrs(&b)];
    let out = env.fsck_with(&["--repair"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 6, "{report}");
    for (i, line) in expected.iter().enumerate() {
        assert_eq!(lines[2 * i], line);
        let (paths, _) = line.split_once(": ").expect("paths");
        assert!(
            lines[2 * i + 1].starts_with(&format!(
                "{paths}: not repaired: a repair leaves symlink targets and extended attributes \
                 as they are; "
            )),
            "{report}"
        );
    }
    assert!(lines[3].ends_with("remove it through a mount with setfattr -x user.note"));
    assert_eq!(
        [stored_xattrs(&a), stored_xattrs(&b)],
        before,
        "the repair changed an xattr"
    );
    assert_eq!(
        fs::read_link(&link)
            .expect("readlink")
            .as_os_str()
            .as_bytes(),
        flip_char(target.as_os_str().as_bytes(), 3)
    );

    // Through a mount: the link reads EIO, the bad name is not listed, the bad value reads EIO.
    let mount = env.mount();
    let err = fs::read_link(env.plain.join("docs/link")).expect_err("a changed target");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        user_xattrs(&env.plain.join("docs/a")),
        Vec::<Vec<u8>>::new()
    );
    let err = get_xattr(&env.plain.join("docs/b"), b"user.note").expect_err("a changed value");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        fs::read_link(env.plain.join("top-link")).expect("the other link"),
        Path::new("docs/c")
    );

    // What FSCK.md says gets rid of each: the link and the value through the mount, the name
    // (which the mount does not list) by its stored name in the cipher directory.
    fs::remove_file(env.plain.join("docs/link")).expect("rm the link through the mount");
    let note = kmsfs::sys::cstr(env.plain.join("docs/b").as_os_str()).expect("path");
    kmsfs::sys::removexattr(&note, c"user.note", true).expect("setfattr -x through the mount");
    mount.unmount();
    let changed = std::ffi::CString::new(changed_name).expect("no NUL");
    kmsfs::sys::removexattr(&path, &changed, true).expect("setfattr -x in the cipher directory");
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        "fsck: 3 files checked, 0 damaged; 5 names checked, 0 unreadable; 1 symlink target and \
         1 extended attribute checked, 0 unreadable"
    );
}

#[test]
fn an_id_link_that_disagrees_with_its_copy_is_damage_and_repair_makes_it_again() {
    let env = Env::new();
    env.init();
    let cipher = write_tree(&env);
    let c = |rel: &str| cipher[Path::new(rel)].clone();
    let link = |rel: &str| c(rel).join("kmsfs.dirid");
    let target = |rel: &str| fs::read_link(link(rel)).expect("a link");
    let (left, right, photos) = (target("left"), target("right"), target("photos"));
    // The links of left and right swapped, their copies not; the link of photos lost; that of
    // docs/deep a regular file (the unreleased layout).
    swap(&link("left"), &link("right"));
    fs::remove_file(link("photos")).expect("rm");
    fs::remove_file(link("docs/deep")).expect("rm");
    fs::write(link("docs/deep"), [0x5a; 16]).expect("a regular file");
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let read = "its names read with the copy in user.kmsfs.dirid, as the mount reads them";
    let expected = [
        format!(
            "{}: directory /docs/deep: its kmsfs.dirid is a regular file, not a symlink (an \
             unreleased layout); {read}",
            c("docs/deep").display()
        ),
        format!(
            "{}: directory /left: its kmsfs.dirid holds another id than its copy; {read}",
            c("left").display()
        ),
        format!(
            "{}: directory /photos: its kmsfs.dirid is missing; {read}",
            c("photos").display()
        ),
        format!(
            "{}: directory /right: its kmsfs.dirid holds another id than its copy; {read}",
            c("right").display()
        ),
    ];
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), expected);
    assert!(
        stderr(&out).contains("; 21 names checked, 0 unreadable"),
        "no name lost: {}",
        stderr(&out)
    );
    // The mount reads every name meanwhile (with the copies).
    {
        let _mount = env.mount();
        for rel in [
            "left/l2",
            "right/r1",
            "photos/a.jpg",
            "docs/deep/nested/n.txt",
        ] {
            assert!(env.plain.join(rel).exists(), "{rel}");
        }
    }
    // The mount made the lost link and the regular file links again, not the swapped ones.
    assert_eq!(target("photos"), photos);
    assert_eq!(target("left"), right);
    let out = env.fsck_with(&["--repair"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for dir in ["left", "right"] {
        let repaired = format!(
            "{}: repaired: kmsfs.dirid made again from the copy of the id the mount reads",
            c(dir).display()
        );
        assert!(
            stdout(&out).lines().any(|l| l == repaired),
            "{repaired}\nin\n{}",
            stdout(&out)
        );
    }
    assert_eq!((target("left"), target("right")), (left, right));
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "");
}
