//! `kmsfs fsck` with encrypted names: a tree written through a mount, damaged at rest the ways
//! a hand or a sync tool can (a changed name, a name moved to another directory, a lost or
//! swapped long-name side file, swapped directory ids, a changed block) and a crash can (a side
//! file left without its name). fsck names each by its plaintext directory and cipher path,
//! each damaged file by both paths, and `--repair` deletes the orphan and nothing else.

mod common;

use common::{Env, pattern};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const CIPHER_BLOCK: u64 = 4124;

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
    // Two directories' ids swapped.
    swap(
        &c("left").join("kmsfs.dirid"),
        &c("right").join("kmsfs.dirid"),
    );
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
