//! The walk's check of symlink targets and `user.` extended attributes, over trees made by
//! `CryptFs` itself (no mount), then changed at rest in the cipher directory: a target's bytes,
//! an attribute's stored name, its value, a value copied under another name.

use super::tests::World;
use super::*;
use crate::format::NameError;
use crate::fs::ROOT_INO;
use crate::fs::tests::ME;
use crate::sys;
use std::ffi::CString;

/// The first character of `text` changed (within the base64url alphabet).
fn flip_first(text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    out[0] = if out[0] == b'A' { b'B' } else { b'A' };
    out
}

fn cpath(path: &Path) -> CString {
    sys::cstr(path.as_os_str()).expect("a path without NUL")
}

/// The sealed `user.` attributes of the cipher node at `path` as stored: (name, value).
fn stored_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0; 65536];
    let n = sys::listxattr(&cpath(path), &mut list, true).expect("listxattr");
    list[..n]
        .split(|&b| b == 0)
        .filter(|name| name.starts_with(b"user.") && *name != b"user.kmsfs.dirid")
        .map(|name| {
            let mut value = vec![0; 65536];
            let c = CString::new(name).expect("no NUL");
            let len = sys::getxattr(&cpath(path), &c, &mut value, true).expect("getxattr");
            value.truncate(len);
            (name.to_vec(), value)
        })
        .collect()
}

fn set_stored(path: &Path, name: &[u8], value: &[u8]) {
    let name = CString::new(name).expect("no NUL");
    sys::setxattr(&cpath(path), &name, value, 0, true).expect("setxattr");
}

fn remove_stored(path: &Path, name: &[u8]) {
    let name = CString::new(name).expect("no NUL");
    sys::removexattr(&cpath(path), &name, true).expect("removexattr");
}

fn setxattr(w: &World, ino: u64, name: &str, value: &[u8]) {
    w.fs.setxattr(ino, OsStr::new(name), value, 0, ME)
        .expect("setxattr");
}

fn symlink(w: &World, parent: u64, name: &str, target: &str) -> u64 {
    w.fs.symlink(parent, OsStr::new(name), OsStr::new(target), ME)
        .expect("symlink")
        .ino
}

/// The one sealed damage of `tree`.
fn only_sealed(tree: &Tree) -> &SealedDamage {
    assert_eq!(tree.sealed_damage.len(), 1, "{:#?}", tree.sealed_damage);
    &tree.sealed_damage[0]
}

/// A tree with a symlink in the root and one in `docs`, and attributes on the root, on
/// `docs` and on `docs/file`.
struct Sample {
    w: World,
    docs: u64,
    file: u64,
    link: u64,
}

fn sample() -> Sample {
    let w = World::new();
    let docs = w.mkdir(ROOT_INO, "docs");
    let file = w.file(docs, "file");
    symlink(&w, ROOT_INO, "top-link", "docs/file");
    let link = symlink(&w, docs, "link", "../elsewhere/target");
    setxattr(&w, ROOT_INO, "user.root-note", b"at the root");
    setxattr(&w, docs, "user.dir-note", b"on a directory");
    setxattr(&w, file, "user.color", b"blue");
    setxattr(&w, file, "user.empty", b"");
    Sample {
        w,
        docs,
        file,
        link,
    }
}

#[test]
fn a_sound_tree_reads_every_target_and_attribute_and_not_the_directory_ids_copy() {
    let s = sample();
    let tree = s.w.walk();
    assert!(tree.sealed_damage.is_empty(), "{:#?}", tree.sealed_damage);
    assert!(tree.bad_names.is_empty(), "{:#?}", tree.bad_names);
    // Every directory has a copy of its id in user.kmsfs.dirid: not one of the user's.
    assert_eq!((tree.targets, tree.xattrs), (2, 4));
    assert!(
        stored_xattrs(&s.w.cipher(s.file))
            .iter()
            .all(|(name, _)| !name.ends_with(b"color")),
        "names are stored encrypted"
    );
}

#[test]
fn a_changed_symlink_target_is_named_by_both_paths() {
    let s = sample();
    let link = s.w.cipher(s.link);
    let target = std::fs::read_link(&link).expect("readlink");
    std::fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink(
        OsStr::from_bytes(&flip_first(target.as_os_str().as_bytes())),
        &link,
    )
    .expect("symlink");
    let tree = s.w.walk();
    let damage = only_sealed(&tree);
    assert_eq!(damage.cipher, link);
    assert_eq!(damage.plain, PlainPath::Known("/docs/link".into()));
    assert!(
        matches!(damage.fault, SealedFault::Target(NameError::Auth)),
        "{:?}",
        damage.fault
    );
    assert_eq!(
        damage.to_string(),
        format!(
            "{} (plaintext /docs/link): symlink target does not decrypt: authentication failed",
            link.display()
        )
    );
    assert_eq!(tree.targets, 2);
    // A target that is no cipher text at all.
    std::fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink("/etc/passwd", &link).expect("symlink");
    let tree = s.w.walk();
    assert!(
        matches!(
            only_sealed(&tree).fault,
            SealedFault::Target(NameError::NotBase64)
        ),
        "{:?}",
        only_sealed(&tree).fault
    );
}

#[test]
fn a_changed_attribute_name_is_reported_as_stored_and_its_value_not_tried() {
    let s = sample();
    let file = s.w.cipher(s.file);
    let (name, value) = stored_xattrs(&file)
        .into_iter()
        .find(|(_, value)| value.len() == 16 + 16 + 4)
        .expect("user.color, 4 bytes sealed");
    remove_stored(&file, &name);
    let changed = [b"user.".as_slice(), &flip_first(&name[5..])].concat();
    set_stored(&file, &changed, &value);
    let tree = s.w.walk();
    let damage = only_sealed(&tree);
    assert_eq!(
        (&damage.cipher, &damage.plain),
        (&file, &PlainPath::Known("/docs/file".into()))
    );
    match &damage.fault {
        SealedFault::XattrName { stored, fault } => {
            assert_eq!(stored.as_bytes(), changed);
            assert_eq!(*fault, NameError::Auth);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        damage.to_string(),
        format!(
            "{} (plaintext /docs/file): extended attribute stored as {:?}: name does not \
             decrypt: authentication failed",
            file.display(),
            String::from_utf8_lossy(&changed)
        )
    );
    assert_eq!(tree.xattrs, 4);
}

#[test]
fn a_changed_value_and_a_value_copied_under_another_name_do_not_open() {
    let s = sample();
    let docs = s.w.cipher(s.docs);
    let [(name, value)] = &stored_xattrs(&docs)[..] else {
        panic!("one attribute on docs");
    };
    let mut changed = value.clone();
    *changed.last_mut().expect("a sealed value is not empty") ^= 1;
    set_stored(&docs, name, &changed);
    let tree = s.w.walk();
    let damage = only_sealed(&tree);
    assert_eq!(
        (&damage.cipher, &damage.plain),
        (&docs, &PlainPath::Known("/docs".into()))
    );
    assert_eq!(
        damage.to_string(),
        format!(
            "{} (plaintext /docs): extended attribute \"user.dir-note\": value does not \
             decrypt: authentication failed",
            docs.display()
        )
    );
    set_stored(&docs, name, value);
    assert!(s.w.walk().sealed_damage.is_empty(), "put back, it opens");

    // The root's value copied under the file's user.color: bound to its own name.
    let root = s.w.root().to_path_buf();
    let file = s.w.cipher(s.file);
    let root_value = &stored_xattrs(&root)[0].1;
    let color = stored_xattrs(&file)
        .into_iter()
        .find(|(_, value)| value.len() == 16 + 16 + 4)
        .expect("user.color")
        .0;
    set_stored(&file, &color, root_value);
    let tree = s.w.walk();
    let damage = only_sealed(&tree);
    assert_eq!(damage.plain, PlainPath::Known("/docs/file".into()));
    assert!(
        matches!(&damage.fault, SealedFault::XattrValue { plain, fault: NameError::Auth }
            if plain.as_os_str() == "user.color"),
        "{:?}",
        damage.fault
    );
    // Too short to hold a nonce and a tag.
    set_stored(&root, &stored_xattrs(&root)[0].0, b"short");
    let tree = s.w.walk();
    assert_eq!(tree.sealed_damage.len(), 2, "{:#?}", tree.sealed_damage);
    let first = &tree.sealed_damage[0];
    assert_eq!(
        first.plain,
        PlainPath::Known("/".into()),
        "the root sorts first"
    );
    assert!(
        matches!(
            first.fault,
            SealedFault::XattrValue {
                fault: NameError::TooShort { .. },
                ..
            }
        ),
        "{:?}",
        first.fault
    );
}

#[test]
fn damage_under_a_name_that_does_not_read_has_no_plaintext_path() {
    let s = sample();
    let docs = s.w.cipher(s.docs);
    let renamed = docs.with_file_name(OsStr::from_bytes(&flip_first(
        docs.file_name().expect("name").as_bytes(),
    )));
    let link = s.w.cipher(s.link);
    std::fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink("garbage", &link).expect("symlink");
    std::fs::rename(&docs, &renamed).expect("rename");
    let tree = s.w.walk();
    let damage = only_sealed(&tree);
    assert_eq!(damage.cipher, renamed.join(link.file_name().expect("name")));
    assert_eq!(damage.plain, PlainPath::Unreadable);
    assert!(
        damage
            .to_string()
            .contains("(plaintext path unreadable): symlink target does not decrypt"),
        "{damage}"
    );
}

#[test]
fn plaintext_names_check_no_target_or_attribute() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("not a cipher text", dir.path().join("link")).expect("symlink");
    std::fs::write(dir.path().join("file"), b"").expect("write");
    set_stored(&dir.path().join("file"), b"user.plain", b"not sealed");
    let tree = walk_tree(dir.path(), None).expect("walk");
    assert!(tree.sealed_damage.is_empty());
    assert_eq!((tree.targets, tree.xattrs), (0, 0));
}
