//! The walk over trees made by `CryptFs` itself (no mount), then damaged at rest the ways a
//! hand, a sync tool or a crash can.

use super::*;
use crate::format::{FsKey, NameError, long_name};
use crate::fs::tests::{ME, setup_with};
use crate::fs::{CryptFs, ROOT_INO};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

const DIR_ID: &str = crate::format::DIR_ID_FILE;

/// Replaces the id link of cipher directory `dir` (whatever it is) by a link to `target`.
fn set_id_link(dir: &Path, target: &str) {
    let _ = std::fs::remove_file(dir.join(DIR_ID));
    std::os::unix::fs::symlink(target, dir.join(DIR_ID)).expect("symlink");
}

/// A plaintext name whose cipher name is long (a side file keeps it): 200 bytes.
fn long(seed: char) -> String {
    std::iter::repeat_n(seed, 200).collect()
}

/// A cipher directory with encrypted names, written by `CryptFs`, and the name cipher to read
/// it.
pub(super) struct World {
    _dir: tempfile::TempDir,
    pub(super) fs: CryptFs,
    names: NameCipher,
}

impl World {
    pub(super) fn new() -> World {
        let key = FsKey::random();
        let (dir, fs) = setup_with(|cipher, keys| {
            CryptFs::new(cipher, keys).map(|fs| fs.with_encrypted_names(NameCipher::new(&key)))
        });
        World {
            _dir: dir,
            fs,
            names: NameCipher::new(&key),
        }
    }

    pub(super) fn root(&self) -> &Path {
        self.fs.cipher_dir()
    }

    pub(super) fn mkdir(&self, parent: u64, name: &str) -> u64 {
        self.fs
            .mkdir(parent, OsStr::new(name), 0o755, 0, ME)
            .expect("mkdir")
            .ino
    }

    pub(super) fn file(&self, parent: u64, name: &str) -> u64 {
        self.fs
            .mknod(parent, OsStr::new(name), libc::S_IFREG | 0o644, 0, 0, ME)
            .expect("mknod")
            .ino
    }

    /// The cipher path of the node with inode number `ino`.
    pub(super) fn cipher(&self, ino: u64) -> PathBuf {
        fn find(dir: &Path, ino: u64) -> Option<PathBuf> {
            for entry in std::fs::read_dir(dir).expect("list") {
                let path = entry.expect("entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("lstat");
                if meta.ino() == ino {
                    return Some(path);
                }
                if meta.is_dir()
                    && let Some(found) = find(&path, ino)
                {
                    return Some(found);
                }
            }
            None
        }
        find(self.root(), ino).expect("a cipher entry with that inode")
    }

    /// Gives the cipher directory `dir` the id `id`, in its link and in its copy (the whole
    /// id, as a hand moving both would).
    fn set_id(&self, dir: &Path, id: &DirId) {
        set_id_link(dir, &crate::format::dir_id_target(id));
        let path = crate::sys::cstr(dir.as_os_str()).expect("path");
        crate::sys::setxattr(&path, c"user.kmsfs.dirid", id, 0, false).expect("set the copy");
    }

    /// The id the mount reads for cipher directory `dir`: its copy.
    fn id(&self, dir: &Path) -> DirId {
        let path = crate::sys::cstr(dir.as_os_str()).expect("path");
        let mut id = [0u8; 16];
        let n = crate::sys::getxattr(&path, c"user.kmsfs.dirid", &mut id, false).expect("copy");
        assert_eq!(n, 16);
        id
    }

    pub(super) fn walk(&self) -> Tree {
        walk_tree(self.root(), Some(&self.names)).expect("walk")
    }

    fn ino(&self, name: &str) -> u64 {
        self.fs
            .lookup(ROOT_INO, OsStr::new(name))
            .expect("lookup")
            .ino
    }
}

/// The files of `tree` as plaintext path → cipher path.
fn files(tree: &Tree) -> BTreeMap<String, PathBuf> {
    tree.files
        .iter()
        .map(|f| {
            let plain = match &f.plain {
                PlainPath::Known(p) => p.display().to_string(),
                other => format!("{other:?}"),
            };
            (plain, f.cipher.clone())
        })
        .collect()
}

/// The one bad name of `tree`.
fn only_bad(tree: &Tree) -> &BadName {
    assert_eq!(tree.bad_names.len(), 1, "{:#?}", tree.bad_names);
    &tree.bad_names[0]
}

fn side_file(short: &Path) -> PathBuf {
    let mut side = short.as_os_str().to_os_string();
    side.push(crate::format::LONG_SIDE_SUFFIX);
    PathBuf::from(side)
}

#[test]
fn every_name_of_a_sound_tree_reads_short_and_long_at_every_depth() {
    let w = World::new();
    let docs = w.mkdir(ROOT_INO, "docs");
    let deep = w.mkdir(docs, &long('d'));
    let report = w.file(docs, "report.txt");
    let long_file = w.file(deep, &long('f'));
    let top = w.file(ROOT_INO, "top");
    w.fs.symlink(
        ROOT_INO,
        OsStr::new("link"),
        OsStr::new("docs/report.txt"),
        ME,
    )
    .expect("symlink");
    let tree = w.walk();
    assert!(tree.bad_names.is_empty(), "{:#?}", tree.bad_names);
    assert!(tree.orphans.is_empty());
    let expected: BTreeMap<String, PathBuf> = [
        (
            format!("/docs/{}/{}", long('d'), long('f')),
            w.cipher(long_file),
        ),
        ("/docs/report.txt".into(), w.cipher(report)),
        ("/top".into(), w.cipher(top)),
    ]
    .into_iter()
    .collect();
    assert_eq!(files(&tree), expected);
    // Names: docs, link, top; report.txt and the long directory; the long file.
    assert_eq!((tree.names, tree.unreadable_names), (6, 0));
    assert!(
        w.cipher(long_file)
            .to_string_lossy()
            .contains("kmsfs.long."),
        "the long names are long on disk"
    );
    let shown = tree
        .files
        .iter()
        .find(|f| f.cipher == w.cipher(top))
        .expect("top")
        .to_string();
    assert_eq!(
        shown,
        format!("{} (plaintext /top)", w.cipher(top).display())
    );
}

#[test]
fn plaintext_names_list_the_files_where_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    for file in [
        "kmsfs.conf",
        ".kmsfs.conf.tmp",
        "x",
        "a/b/y",
        "a/kmsfs.conf",
    ] {
        std::fs::write(root.join(file), b"").expect("write");
    }
    let tree = walk_tree(root, None).expect("walk");
    let listed: Vec<(PathBuf, PlainPath)> = tree
        .files
        .into_iter()
        .map(|f| (f.cipher.strip_prefix(root).expect("under").into(), f.plain))
        .collect();
    assert_eq!(
        listed,
        [
            (PathBuf::from("a/b/y"), PlainPath::AsStored),
            ("a/kmsfs.conf".into(), PlainPath::AsStored),
            ("x".into(), PlainPath::AsStored),
        ]
    );
    assert!(tree.bad_names.is_empty() && tree.names == 0);
    assert_eq!(
        cipher_files(root).expect("files"),
        [
            root.join("a/b/y"),
            root.join("a/kmsfs.conf"),
            root.join("x")
        ]
    );
}

#[test]
fn a_name_with_a_changed_character_is_named_with_its_directory() {
    let w = World::new();
    let docs = w.mkdir(ROOT_INO, "docs");
    let flipped = w.file(docs, "flipped");
    let kept = w.file(docs, "kept");
    let path = w.cipher(flipped);
    let mut name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let first = name.remove(0);
    name.insert(0, if first == 'A' { 'B' } else { 'A' });
    std::fs::rename(&path, path.with_file_name(&name)).expect("flip");
    let tree = w.walk();
    let bad = only_bad(&tree);
    assert_eq!(bad.cipher, path.with_file_name(&name));
    assert_eq!(bad.dir.as_deref(), Some(Path::new("/docs")));
    assert!(
        matches!(
            bad.fault,
            NameDamage::Name(NameFault::Cipher(NameError::Auth))
        ),
        "{:?}",
        bad.fault
    );
    assert_eq!(
        bad.to_string(),
        format!(
            "{}: name in /docs: does not decrypt: authentication failed",
            bad.cipher.display()
        )
    );
    assert_eq!((tree.names, tree.unreadable_names), (3, 1));
    let files = files(&tree);
    assert_eq!(files["/docs/kept"], w.cipher(kept));
    assert_eq!(files["Unreadable"], path.with_file_name(&name));
}

#[test]
fn a_name_moved_from_another_directory_says_where_it_reads() {
    let w = World::new();
    let a = w.mkdir(ROOT_INO, "a");
    let b = w.mkdir(ROOT_INO, "b");
    let moved = w.file(a, "moved");
    w.file(a, "stays");
    w.file(b, "here");
    let from = w.cipher(moved);
    let to = w.cipher(b).join(from.file_name().expect("name"));
    std::fs::rename(&from, &to).expect("move");
    let tree = w.walk();
    let bad = only_bad(&tree);
    assert_eq!(bad.cipher, to);
    assert_eq!(bad.dir.as_deref(), Some(Path::new("/b")));
    match &bad.fault {
        NameDamage::MovedFrom { from, plain } => {
            assert_eq!(from.plain.as_deref(), Some(Path::new("/a")));
            assert_eq!(from.cipher, w.cipher(a));
            assert_eq!(plain, "moved");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        bad.to_string()
            .contains("moved here from /a, where it reads \"moved\"")
    );
}

#[test]
fn a_long_name_without_its_side_file_or_with_another_names_is_reported() {
    let w = World::new();
    let docs = w.mkdir(ROOT_INO, "docs");
    let lost = w.file(docs, &long('a'));
    let one = w.file(docs, &long('b'));
    let two = w.file(docs, &long('c'));
    std::fs::remove_file(side_file(&w.cipher(lost))).expect("delete a side file");
    let (one, two) = (w.cipher(one), w.cipher(two));
    let parked = w.root().join("parked");
    std::fs::rename(side_file(&one), &parked).expect("swap");
    std::fs::rename(side_file(&two), side_file(&one)).expect("swap");
    std::fs::rename(&parked, side_file(&two)).expect("swap");
    let tree = w.walk();
    let faults: Vec<(PathBuf, String)> = tree
        .bad_names
        .iter()
        .map(|b| (b.cipher.clone(), b.fault.to_string()))
        .collect();
    let short = |p: &Path| p.file_name().expect("name").to_string_lossy().into_owned();
    let mut expected = vec![
        (w.cipher(lost), "its side file is missing".to_string()),
        (
            one.clone(),
            format!("its side file holds the cipher name of {}", short(&two)),
        ),
        (
            two.clone(),
            format!("its side file holds the cipher name of {}", short(&one)),
        ),
    ];
    expected.sort();
    assert_eq!(faults, expected);
    assert!(
        tree.bad_names
            .iter()
            .all(|b| b.dir.as_deref() == Some(Path::new("/docs")))
    );
    assert_eq!(tree.unreadable_names, 3);
    assert!(
        tree.orphans.is_empty(),
        "a side file of a name is no orphan"
    );
    // A side file that holds no long name at all.
    std::fs::write(side_file(&one), b"short").expect("overwrite");
    let tree = w.walk();
    let one_fault = tree
        .bad_names
        .iter()
        .find(|b| b.cipher == one)
        .expect("one");
    assert!(matches!(
        one_fault.fault,
        NameDamage::Name(NameFault::SideFileNotAName)
    ));
}

#[test]
fn a_directory_without_its_id_or_with_a_damaged_one_loses_its_names_not_its_subtree() {
    let w = World::new();
    let gone = w.mkdir(ROOT_INO, "gone");
    let sub = w.mkdir(gone, "sub");
    let under = w.file(sub, "deep");
    w.file(gone, "f");
    let short = w.mkdir(ROOT_INO, "short");
    w.file(short, "g");
    w.mkdir(ROOT_INO, "empty");
    std::fs::remove_file(w.cipher(gone).join(DIR_ID)).expect("rm id");
    std::fs::remove_file(w.cipher(w.ino("empty")).join(DIR_ID)).expect("rm id");
    set_id_link(&w.cipher(short), "abc");
    // While each directory keeps the copy of its id in an xattr, no name is lost; the links
    // that disagree with their copies are damage of their directories all the same.
    let tree = w.walk();
    assert_eq!(
        tree.unreadable_names, 0,
        "the copies stand in for the links"
    );
    let faults: Vec<(PathBuf, String)> = tree
        .bad_names
        .iter()
        .map(|b| (b.cipher.clone(), b.fault.to_string()))
        .collect();
    let read_with_copy =
        "; its names read with the copy in user.kmsfs.dirid, as the mount reads them";
    assert_eq!(
        faults,
        [
            (
                w.cipher(w.ino("empty")),
                format!("its kmsfs.dirid is missing{read_with_copy}")
            ),
            (
                w.cipher(gone),
                format!("its kmsfs.dirid is missing{read_with_copy}")
            ),
            (
                w.cipher(short),
                format!(
                    "its kmsfs.dirid is damaged: directory id link target is not 22 characters \
                     of unpadded base64url (3 bytes){read_with_copy}"
                )
            ),
        ]
    );
    // Without the copies (a copy of the cipher directory that dropped xattrs), the names go.
    for dir in [gone, short, w.ino("empty")] {
        let path = crate::sys::cstr(w.cipher(dir).as_os_str()).expect("path");
        crate::sys::removexattr(&path, c"user.kmsfs.dirid", false).expect("drop the copy");
    }
    let tree = w.walk();
    let faults: Vec<String> = tree.bad_names.iter().map(ToString::to_string).collect();
    assert_eq!(
        faults,
        [
            format!(
                "{}: directory /gone: has entries but no kmsfs.dirid; its 2 names cannot be read",
                w.cipher(gone).display()
            ),
            format!(
                "{}: directory /short: its kmsfs.dirid is damaged: directory id link target is \
                 not 22 characters of unpadded base64url (3 bytes); its one name cannot be read",
                w.cipher(short).display()
            ),
        ],
        "an empty directory without an id is sound: the mount gives it one"
    );
    // Under the lost directory, names still read, but no plaintext path reaches them.
    assert!(tree.files.contains(&TreeFile {
        cipher: w.cipher(under),
        plain: PlainPath::Unreadable
    }));
    assert_eq!(tree.files.len(), 3);
    assert!(tree.files.iter().all(|f| f.plain == PlainPath::Unreadable));
    assert_eq!(tree.unreadable_names, 3);
    // A bad name down there is named without a plaintext directory.
    let deep = w.cipher(under);
    std::fs::rename(&deep, deep.with_file_name("garbage")).expect("rename");
    let tree = w.walk();
    let bad = tree
        .bad_names
        .iter()
        .find(|b| b.cipher == deep.with_file_name("garbage"))
        .expect("named");
    assert_eq!(bad.dir, None);
    assert!(
        bad.to_string()
            .contains("name in a directory under an unreadable name: does not decrypt"),
        "{bad}"
    );
}

#[test]
fn swapped_directory_ids_name_each_other() {
    let w = World::new();
    let a = w.mkdir(ROOT_INO, "a");
    let b = w.mkdir(ROOT_INO, "b");
    let c = w.mkdir(ROOT_INO, "c");
    for (dir, name) in [(a, "a1"), (a, "a2"), (b, "b1"), (c, "c1")] {
        w.file(dir, name);
    }
    let (a, b) = (w.cipher(a), w.cipher(b));
    let (a_id, b_id) = (w.id(&a), w.id(&b));
    w.set_id(&a, &b_id);
    w.set_id(&b, &a_id);
    let tree = w.walk();
    let faults: Vec<String> = tree.bad_names.iter().map(ToString::to_string).collect();
    assert_eq!(
        faults,
        [
            format!(
                "{}: directory /a: its kmsfs.dirid and that of /b are swapped; its 2 names \
                 cannot be read (they decrypt with the id in the other's)",
                a.display()
            ),
            format!(
                "{}: directory /b: its kmsfs.dirid and that of /a are swapped; its one name \
                 cannot be read (they decrypt with the id in the other's)",
                b.display()
            ),
        ]
    );
    assert_eq!(tree.unreadable_names, 3);
    assert_eq!(
        files(&tree).keys().filter(|k| k.starts_with("/c/")).count(),
        1
    );
}

#[test]
fn a_copied_or_replaced_directory_id_is_told_apart_from_moved_names() {
    let w = World::new();
    let a = w.mkdir(ROOT_INO, "a");
    let b = w.mkdir(ROOT_INO, "b");
    let c = w.mkdir(ROOT_INO, "c");
    for (dir, name) in [(a, "a1"), (b, "b1"), (b, "b2"), (c, "c1"), (c, "c2")] {
        w.file(dir, name);
    }
    let (a, b, c) = (w.cipher(a), w.cipher(b), w.cipher(c));
    w.set_id(&b, &w.id(&a));
    w.set_id(&c, &[9; 16]);
    let tree = w.walk();
    let faults: Vec<(PathBuf, String)> = tree
        .bad_names
        .iter()
        .map(|b| (b.cipher.clone(), b.fault.to_string()))
        .collect();
    assert_eq!(
        faults,
        [
            (
                b.clone(),
                "its kmsfs.dirid is a copy of that of /a; its 2 names cannot be read".into()
            ),
            (
                c.clone(),
                "its kmsfs.dirid is damaged or not its own: no name decrypts with it; its 2 \
                 names cannot be read"
                    .into()
            ),
        ]
    );
    assert!(files(&tree).contains_key("/a/a1"), "the original reads");
}

#[test]
fn a_side_file_whose_name_is_gone_is_an_orphan_and_only_it_is_removed() {
    let w = World::new();
    let docs = w.mkdir(ROOT_INO, "docs");
    let gone = w.cipher(w.file(docs, &long('o')));
    let kept = w.cipher(w.file(docs, &long('k')));
    std::fs::remove_file(&gone).expect("the crash between the two unlinks");
    let tree = w.walk();
    assert!(tree.bad_names.is_empty(), "{:#?}", tree.bad_names);
    assert_eq!(tree.orphans, [side_file(&gone)]);
    assert_eq!((tree.names, tree.unreadable_names), (2, 0));
    // Neither a side file whose name exists, nor anything else, is an orphan to remove.
    let refused = remove_orphan(&side_file(&kept)).expect_err("its name exists");
    assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
    let refused = remove_orphan(&kept).expect_err("no side file");
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
    let refused = remove_orphan(&w.cipher(docs).join(DIR_ID)).expect_err("no side file");
    assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
    remove_orphan(&side_file(&gone)).expect("remove");
    assert!(!side_file(&gone).exists() && side_file(&kept).exists() && kept.exists());
    assert!(w.walk().orphans.is_empty());
    assert_eq!(
        long_name(
            &String::from_utf8(std::fs::read(side_file(&kept)).expect("read")).expect("utf-8")
        )
        .as_deref(),
        kept.file_name().and_then(OsStr::to_str),
        "the kept side file is its name's"
    );
}

#[test]
fn the_filesystems_own_files_are_names_only_where_they_belong() {
    let w = World::new();
    let docs = w.mkdir(ROOT_INO, "docs");
    w.file(docs, "real");
    // kmsfs.conf and its temporary file are the root's own; elsewhere they are stray names.
    std::fs::write(w.root().join("kmsfs.conf"), b"{}").expect("write");
    std::fs::write(w.root().join(".kmsfs.conf.tmp"), b"{}").expect("write");
    let stray = w.cipher(docs).join("kmsfs.conf");
    std::fs::write(&stray, b"{}").expect("write");
    let tree = w.walk();
    let bad = only_bad(&tree);
    assert_eq!(bad.cipher, stray);
    assert!(
        matches!(
            bad.fault,
            NameDamage::Name(NameFault::Cipher(NameError::NotBase64))
        ),
        "{:?}",
        bad.fault
    );
    assert_eq!(tree.files.len(), 2);
}

#[test]
fn an_id_link_that_disagrees_with_its_copy_is_damage_the_repair_makes_again() {
    let w = World::new();
    let [other, missing, file, damaged, sound] = ["other", "missing", "file", "damaged", "sound"]
        .map(|name| {
            let dir = w.mkdir(ROOT_INO, name);
            w.file(dir, "inside");
            w.cipher(dir)
        });
    set_id_link(&other, &crate::format::dir_id_target(&[7; 16]));
    std::fs::remove_file(missing.join(DIR_ID)).expect("rm");
    // The unreleased layout: 16 raw bytes in a regular file.
    std::fs::remove_file(file.join(DIR_ID)).expect("rm");
    std::fs::write(file.join(DIR_ID), w.id(&file)).expect("a regular file");
    // Stray bits in the last character: not canonical, though it decodes.
    let mut target = crate::format::dir_id_target(&w.id(&damaged));
    target.pop();
    target.push('B');
    set_id_link(&damaged, &target);
    let tree = w.walk();
    assert_eq!((tree.names, tree.unreadable_names), (10, 0));
    let faults: Vec<(PathBuf, String)> = tree
        .bad_names
        .iter()
        .map(|b| (b.cipher.clone(), b.to_string()))
        .collect();
    let line = |dir: &Path, plain: &str, what: &str| {
        (
            dir.to_path_buf(),
            format!(
                "{}: directory /{plain}: {what}; its names read with the copy in \
                 user.kmsfs.dirid, as the mount reads them",
                dir.display(),
            ),
        )
    };
    assert_eq!(
        faults,
        [
            line(
                &damaged,
                "damaged",
                "its kmsfs.dirid is damaged: directory id link target is not 22 characters of \
                 unpadded base64url (22 bytes)"
            ),
            line(
                &file,
                "file",
                "its kmsfs.dirid is a regular file, not a symlink (an unreleased layout)"
            ),
            line(&missing, "missing", "its kmsfs.dirid is missing"),
            line(
                &other,
                "other",
                "its kmsfs.dirid holds another id than its copy"
            ),
        ]
    );
    assert!(files(&tree).contains_key("/other/inside"), "names read");
    for bad in &tree.bad_names {
        bad.repair_id_link()
            .expect("an id link fault")
            .expect("repaired");
    }
    assert!(w.walk().bad_names.is_empty());
    for dir in [other, missing, file, damaged, sound] {
        let target = std::fs::read_link(dir.join(DIR_ID)).expect("a link");
        assert_eq!(
            crate::format::parse_dir_id_target(target.as_os_str().as_bytes()),
            Ok(w.id(&dir)),
            "{}",
            dir.display()
        );
    }
}

#[test]
fn only_an_id_link_fault_is_repaired_and_only_from_a_copy() {
    let w = World::new();
    let dir = w.mkdir(ROOT_INO, "d");
    w.file(dir, "inside");
    let cipher = w.cipher(dir);
    let inside = cipher.join(
        std::fs::read_dir(&cipher)
            .expect("list")
            .find_map(|e| {
                let name = e.expect("entry").file_name();
                (name != DIR_ID).then_some(name)
            })
            .expect("the entry"),
    );
    std::fs::rename(&inside, inside.with_file_name("garbage")).expect("rename");
    let tree = w.walk();
    let bad = only_bad(&tree);
    assert!(
        bad.repair_id_link().is_none(),
        "a bad name is left as it is"
    );
    assert!(inside.with_file_name("garbage").exists());
    // A link fault whose copy went before the repair ran: nothing to make the link from.
    std::fs::rename(inside.with_file_name("garbage"), &inside).expect("rename back");
    std::fs::remove_file(cipher.join(DIR_ID)).expect("rm");
    let tree = w.walk();
    let bad = only_bad(&tree);
    assert!(matches!(
        bad.fault,
        NameDamage::IdLink(IdLinkFault::Missing)
    ));
    let path = crate::sys::cstr(cipher.as_os_str()).expect("path");
    crate::sys::removexattr(&path, c"user.kmsfs.dirid", false).expect("drop the copy");
    let refused = bad
        .repair_id_link()
        .expect("an id link fault")
        .expect_err("no copy");
    assert_eq!(refused.kind(), io::ErrorKind::NotFound);
    assert!(!cipher.join(DIR_ID).exists(), "nothing made");
}
