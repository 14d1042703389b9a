//! Build script: records the git commit the binary is built from (`KMSFS_GIT_COMMIT`, shown by
//! `kmsfs --version`). Outside a git checkout, or without git, the commit is "unknown": the
//! build never fails for want of git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Tells cargo to build again when `path` changes; a path that does not exist is left out (cargo
/// would build again every time).
fn watch(path: &str) {
    if std::path::Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KMSFS_GIT_COMMIT={commit}");
    // Build again when HEAD moves: HEAD itself (a branch switch), the branch's ref, and
    // packed-refs (where a ref goes after `git gc`).
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watch(&head);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        watch(&path);
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watch(&packed);
    }
    println!("cargo:rerun-if-changed=build.rs");
}
