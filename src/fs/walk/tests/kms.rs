//! fsck's walk and check over a KMS that refuses, cannot open, or cannot be reached for one
//! file's key: the file is named by its cipher and plaintext paths, the others are checked.

use super::*;
use crate::format::{FormatError, FsKey};
use crate::fs::keys::{KeyError, KeyPath};
use crate::fs::tests_kms::{KmsWorld, unwrap_of, write_file};
use crate::fs::{CryptFs, Damage, FileCheck, ROOT_INO, check_file, repair_file};
use crate::kms::KeyService;
use crate::kms::Refusal;
use crate::kms::testing::{Fault, Op};
use std::time::Duration;

/// One file's check: its plaintext path and what the check found.
type FileResult = (String, Result<FileCheck, KeyError>);

/// A tree with encrypted names, `/a`, `/b` and `/d/c`, and the name cipher to walk it.
struct Checked {
    world: KmsWorld,
    names: NameCipher,
}

impl Checked {
    fn new() -> Checked {
        let world = KmsWorld::new();
        let key = FsKey::random();
        let fs = CryptFs::new(&world.cipher_dir(), world.keys(16, Duration::from_secs(60)))
            .expect("fs")
            .with_encrypted_names(NameCipher::new(&key));
        write_file(&fs, ROOT_INO, "a", b"first");
        write_file(&fs, ROOT_INO, "b", b"second");
        let d = fs
            .mkdir(ROOT_INO, OsStr::new("d"), 0o755, 0, crate::fs::tests::ME)
            .expect("mkdir")
            .ino;
        write_file(&fs, d, "c", b"third");
        Checked {
            world,
            names: NameCipher::new(&key),
        }
    }

    fn walk(&self) -> Tree {
        walk_tree(&self.world.cipher_dir(), Some(&self.names)).expect("walk")
    }

    /// The tree file whose plaintext path is `plain`.
    fn file(&self, plain: &str) -> TreeFile {
        let wanted = PlainPath::Known(PathBuf::from(plain));
        let tree = self.walk();
        tree.files
            .into_iter()
            .find(|file| file.plain == wanted)
            .expect("a file with that plaintext path")
    }

    /// The key path fsck uses: no DEK cache.
    fn keys(&self) -> KeyPath {
        self.world.keys(0, Duration::ZERO)
    }

    /// Checks every file as `kmsfs fsck` does: the result of each, by plaintext path, and a
    /// report line per damaged file.
    fn check_all(&self) -> (Vec<FileResult>, Vec<String>) {
        let keys = self.keys();
        let mut results = Vec::new();
        let mut report = Vec::new();
        for file in self.walk().files {
            let found = check_file(&file.cipher, &keys);
            if let Ok(FileCheck::Damaged(damage)) = &found {
                report.push(format!("{file}: {damage}"));
            }
            let PlainPath::Known(plain) = &file.plain else {
                panic!("every name reads: {file}");
            };
            results.push((plain.display().to_string(), found));
        }
        (results, report)
    }
}

/// What each file's check came to, by plaintext path, in a word.
fn outcomes(results: &[FileResult]) -> Vec<(&str, &'static str)> {
    let word = |found: &Result<FileCheck, KeyError>| match found {
        Ok(FileCheck::Clean) => "clean",
        Ok(FileCheck::Damaged(Damage::HeaderKey(_))) => "key refused",
        Ok(FileCheck::Damaged(Damage::Header(FormatError::HeaderAuth))) => "header fails",
        Ok(FileCheck::Damaged(_)) => "other damage",
        Err(KeyError::Kms(_)) => "kms error",
        Err(_) => "other error",
    };
    results
        .iter()
        .map(|(p, found)| (p.as_str(), word(found)))
        .collect()
}

#[test]
fn a_sound_tree_checks_clean_with_one_unwrap_per_file() {
    let checked = Checked::new();
    let (results, report) = checked.check_all();
    assert_eq!(
        outcomes(&results),
        [("/a", "clean"), ("/b", "clean"), ("/d/c", "clean")]
    );
    assert!(report.is_empty());
    assert_eq!(checked.world.kms.calls(Op::Decrypt), 3);
}

#[test]
fn a_file_whose_key_the_kms_refuses_is_named_and_the_others_are_checked() {
    let checked = Checked::new();
    let refused = checked.file("/b");
    let kms = &checked.world.kms;
    kms.fail_when(unwrap_of(&refused.cipher), Fault::KeyDisabled);
    let (results, report) = checked.check_all();
    assert_eq!(kms.calls(Op::Decrypt), 3, "the files after it were checked");
    assert_eq!(
        outcomes(&results),
        [("/a", "clean"), ("/b", "key refused"), ("/d/c", "clean")]
    );
    let Ok(FileCheck::Damaged(Damage::HeaderKey(refusal))) = &results[1].1 else {
        unreachable!("checked just above");
    };
    assert_eq!(
        (refusal.refusal, refusal.key_id),
        (Refusal::KeyDisabled, checked.world.key)
    );
    let [line] = &report[..] else {
        panic!("one report line: {report:?}");
    };
    let cipher = refused.cipher.display().to_string();
    assert!(
        line.starts_with(&format!("{cipher} (plaintext /b): header: ")),
        "{line}"
    );
    assert!(line.contains(&checked.world.key.to_string()), "{line}");
}

#[test]
fn a_wrapped_key_the_kms_cannot_open_is_header_damage_of_that_file() {
    let checked = Checked::new();
    let damaged = checked.file("/d/c");
    let kms = &checked.world.kms;
    kms.fail_when(unwrap_of(&damaged.cipher), Fault::InvalidCiphertext);
    let (results, report) = checked.check_all();
    assert_eq!(
        outcomes(&results),
        [("/a", "clean"), ("/b", "clean"), ("/d/c", "header fails")]
    );
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(report[0].contains("(plaintext /d/c)"), "{report:?}");
}

#[test]
fn a_repair_leaves_a_file_whose_key_is_refused_as_it_is() {
    let checked = Checked::new();
    let refused = checked.file("/a");
    checked
        .world
        .kms
        .fail_when(unwrap_of(&refused.cipher), Fault::KeyNotFound);
    let before = std::fs::read(&refused.cipher).expect("read");
    let repair = repair_file(&refused.cipher, &checked.keys()).expect("repair runs");
    assert!(matches!(
        repair.found,
        FileCheck::Damaged(Damage::HeaderKey(_))
    ));
    assert_eq!((repair.cut, repair.resealed), (None, None));
    assert!(matches!(repair.left, Some(Damage::HeaderKey(_))));
    assert_eq!(std::fs::read(&refused.cipher).expect("read"), before);
}

#[test]
fn a_kms_out_of_reach_for_one_file_is_an_error_of_that_file_not_damage() {
    let checked = Checked::new();
    let unreachable = checked.file("/b");
    checked
        .world
        .kms
        .fail_when(unwrap_of(&unreachable.cipher), Fault::Unavailable);
    let (results, report) = checked.check_all();
    assert_eq!(
        outcomes(&results),
        [("/a", "clean"), ("/b", "kms error"), ("/d/c", "clean")]
    );
    assert!(report.is_empty(), "no damage claimed: {report:?}");
}

#[test]
fn a_disabled_key_makes_every_file_damage_named_with_the_key() {
    let checked = Checked::new();
    let key = checked.world.key;
    checked.world.kms.inner().disable_key(key).expect("disable");
    let (results, report) = checked.check_all();
    assert_eq!(
        outcomes(&results),
        [
            ("/a", "key refused"),
            ("/b", "key refused"),
            ("/d/c", "key refused")
        ]
    );
    for (_, found) in &results {
        let Ok(FileCheck::Damaged(Damage::HeaderKey(refusal))) = found else {
            unreachable!("checked just above");
        };
        assert_eq!(
            (refusal.key_id, refusal.refusal),
            (key, Refusal::KeyDisabled)
        );
    }
    assert_eq!(report.len(), 3);
    for (line, plain) in report.iter().zip(["/a", "/b", "/d/c"]) {
        assert!(
            line.contains(&format!("(plaintext {plain}): header: ")),
            "{line}"
        );
    }
}
