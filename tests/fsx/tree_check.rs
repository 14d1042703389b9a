//! What the tree of the fsstress tool must look like: names, types, symlink targets, xattr
//! values, and every file self-consistent.

use super::super::stamp;
use super::stripes;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Checks that every component of `rel` is one of the tool's names.
pub(super) fn check_name(rel: &Path) -> Result<(), String> {
    if stripes::is_shared(rel) {
        return Ok(());
    }
    for part in rel.iter() {
        let part = part.to_str().unwrap_or("");
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let ok = part.strip_prefix('d').is_some_and(digits)
            || part.strip_prefix('s').is_some_and(digits)
            || part
                .strip_prefix('t')
                .and_then(|s| s.split_once("_f"))
                .is_some_and(|(k, n)| digits(k) && digits(n));
        if !ok {
            return Err(format!(
                "{}: {part:?} is no name the tool makes",
                rel.display()
            ));
        }
    }
    Ok(())
}

pub(super) fn check_target(target: &Path) -> Result<(), String> {
    check_name(target).map_err(|e| format!("symlink target {e}"))
}

/// Checks that the type of `rel` is the one its name says.
pub(super) fn check_type(rel: &Path, meta: &fs::Metadata) -> Result<(), String> {
    let first = rel
        .file_name()
        .and_then(|n| n.as_encoded_bytes().first().copied());
    let ft = meta.file_type();
    let ok = match first {
        _ if stripes::is_shared(rel) => ft.is_file(),
        Some(b'd') => ft.is_dir(),
        Some(b's') => ft.is_symlink(),
        Some(b't') => ft.is_file(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{} has type {ft:?}", rel.display()))
    }
}

/// An xattr value that checks itself: 8 bytes of hash of the rest.
pub(super) fn xattr_value(seed: u64, len: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..len)
        .map(|i| stamp::mix(seed ^ i as u64) as u8)
        .collect();
    let mut value = hash(&body).to_le_bytes().to_vec();
    value.extend_from_slice(&body);
    value
}

pub(super) fn check_xattr_value(value: &[u8]) -> Result<(), String> {
    if value.len() > 8 && value[..8] == hash(&value[8..]).to_le_bytes() {
        Ok(())
    } else {
        Err(format!("xattr value {value:02x?} does not check"))
    }
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What the tree holds: every path with its type, mode and content (stamp) or target.
pub type Summary = BTreeMap<PathBuf, String>;

/// Walks the tree under `root` (no thread running): every name is the tool's, every type the
/// one its name says, every file self-consistent, every stripe of the shared files whole,
/// every symlink target one of the tool's names. Returns a summary of the tree, or panics with every problem found.
pub fn verify_tree(name: &str, root: &Path) -> Summary {
    let mut summary = Summary::new();
    let mut problems = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(root.join(&dir))
            .unwrap_or_else(|e| panic!("{name}: readdir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("{name}: readdir {}: {e}", dir.display()));
            let rel = dir.join(entry.file_name());
            let meta = fs::symlink_metadata(entry.path())
                .unwrap_or_else(|e| panic!("{name}: lstat {}: {e}", rel.display()));
            if let Err(e) = check_name(&rel).and_then(|()| check_type(&rel, &meta)) {
                problems.push(e);
                continue;
            }
            let mode = meta.mode() & 0o7777;
            let what = if meta.is_dir() {
                stack.push(rel.clone());
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(entry.path())
                    .unwrap_or_else(|e| panic!("{name}: readlink {}: {e}", rel.display()));
                if let Err(e) = check_target(&target) {
                    problems.push(format!("{}: {e}", rel.display()));
                }
                format!("symlink -> {}", target.display())
            } else if stripes::is_shared(&rel) {
                match stripes::verify(&entry.path()) {
                    Ok(generations) => format!("shared file, stripe generations {generations:?}"),
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                }
            } else {
                let bytes = fs::read(entry.path())
                    .unwrap_or_else(|e| panic!("{name}: read {}: {e}", rel.display()));
                match stamp::verify(&bytes) {
                    Ok(stamp) => format!("file {mode:o} nlink {} {stamp:?}", meta.nlink()),
                    Err(e) => {
                        problems.push(format!("{}: {e}", rel.display()));
                        continue;
                    }
                }
            };
            summary.insert(rel, what);
        }
    }
    assert!(
        problems.is_empty(),
        "{name}: {} problem(s) in the tree:\n{}",
        problems.len(),
        problems.join("\n")
    );
    summary
}
