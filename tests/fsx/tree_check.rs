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
/// every symlink target one of the tool's names. Returns a summary of the tree and the
/// problems found, each naming the inode (`[ino E:N]`, E being the remounts so far: inode
/// numbers are only unique within one mount).
pub fn check_tree(name: &str, root: &Path, epoch: u64) -> (Summary, Vec<String>) {
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
                if meta.len() != bytes.len() as u64 {
                    // The size the kernel shows and what it reads disagree.
                    problems.push(format!(
                        "{} {} nlink {}: stat says {} bytes, a read gives {}",
                        rel.display(),
                        ino_tag(epoch, meta.ino()),
                        meta.nlink(),
                        meta.len(),
                        bytes.len()
                    ));
                    continue;
                }
                match stamp::verify(&bytes) {
                    Ok(stamp) => format!("file {mode:o} nlink {} {stamp:?}", meta.nlink()),
                    Err(e) => {
                        problems.push(format!(
                            "{} {} nlink {}: {e}",
                            rel.display(),
                            ino_tag(epoch, meta.ino()),
                            meta.nlink()
                        ));
                        continue;
                    }
                }
            };
            summary.insert(rel, what);
        }
    }
    (summary, problems)
}

/// The operations of every thread on the files `problems` name: lines naming one of their ids
/// (`id: N,`) or inodes (`[ino E:N]`), then also every inode those operations name, each
/// operation with all its lines.
pub fn history_of(problems: &[String], history: &[Vec<(u64, String)>]) -> String {
    let mut keys = Vec::new();
    for problem in problems {
        keys.extend(tokens(problem));
    }
    keys.sort();
    keys.dedup();
    let matching = |keys: &[String]| {
        let mut ops = std::collections::BTreeSet::new();
        for (tid, lines) in history.iter().enumerate() {
            for (no, line) in lines {
                if keys.iter().any(|k| line.contains(k.as_str())) {
                    ops.insert((*no, tid));
                }
            }
        }
        ops
    };
    // The inodes of the operations on those ids, which name the rest of the file's history.
    for (no, tid) in matching(&keys) {
        for (_, line) in history[tid].iter().filter(|(n, _)| *n == no) {
            keys.extend(tokens(line).into_iter().filter(|t| t.starts_with("[ino")));
        }
    }
    keys.retain(|k| k != "[ino ?]");
    keys.sort();
    keys.dedup();
    let mut out = format!("operations on {keys:?}:\n");
    // Threads run side by side: the same op number is about the same moment in each.
    for (no, tid) in matching(&keys) {
        for (_, line) in history[tid].iter().filter(|(n, _)| *n == no) {
            out.push_str(&format!("  thread {tid} op {no:>6}: {line}\n"));
        }
    }
    out
}

/// The `id: N,` and `[ino E:N]` tokens of a line.
fn tokens(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (prefix, end) in [("id: ", ","), ("[ino ", "]")] {
        for (at, _) in line.match_indices(prefix) {
            let rest = &line[at..];
            if let Some(to) = rest.find(end) {
                found.push(rest[..to + end.len()].to_string());
            }
        }
    }
    found
}

/// The entries that differ between two summaries of one tree, each naming which side it is.
pub fn changes(before: &Summary, after: &Summary) -> Vec<String> {
    let side = |one: &Summary, other: &Summary, label: &str| {
        one.iter()
            .filter(|(path, what)| other.get(*path) != Some(what))
            .map(|(path, what)| format!("{}: {what} {label}", path.display()))
            .collect::<Vec<_>>()
    };
    let mut changed = side(before, after, "before");
    changed.extend(side(after, before, "after"));
    changed
}

/// The tag of inode number `ino` after `epoch` remounts in history lines and problems.
pub fn ino_tag(epoch: u64, ino: u64) -> String {
    format!("[ino {epoch}:{ino}]")
}
