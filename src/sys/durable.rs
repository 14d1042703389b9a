//! Atomic, durable file writes, the one place that knows how: the bytes go to a temporary file
//! beside the target, which is fsynced, renamed (or, for a file that must not exist yet, moved
//! without replacing) onto the target's name, and then the directory is fsynced. A crash at any
//! moment leaves the old file or the new one, never a mix, and a write that returned survives a
//! power cut. A failed write removes its temporary file and leaves the old file as it was.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::{Builder, NamedTempFile, TempPath};

/// Where the temporary file of a write lives until it takes the target's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staging<'a> {
    /// A fresh random name beside the target (`.NAME.XXXXXXXX.tmp`, mode 0600): concurrent
    /// writers never meet.
    Unique,
    /// This file name beside the target, replaced if a crash left it behind: for a file whose
    /// temporary name others must know (a cipher directory's `kmsfs.conf`, whose temporary file
    /// the mount hides). Created with mode 0600; a symlink there is refused, never followed.
    Named(&'a str),
}

/// The directory that holds `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Replaces the file at `path` (or creates it) with `bytes`, atomically and durably.
pub fn replace(path: &Path, bytes: &[u8], staging: Staging<'_>) -> io::Result<()> {
    let temp = stage(path, bytes, staging)?;
    // On failure the temporary file comes back inside the error and is removed when dropped.
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(path)
}

/// Creates the file at `path` with `bytes`, atomically and durably, only if nothing is there
/// yet (`renameat2(RENAME_NOREPLACE)`, or a hard link where the filesystem lacks it).
/// `Ok(false)` when a file existed; it is left as it was.
pub fn create_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let temp = stage(path, bytes, Staging::Unique)?;
    match temp.persist_noclobber(path) {
        Ok(_) => sync_dir(path).map(|()| true),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// Writes `bytes` to a temporary file beside `path` and fsyncs it.
fn stage(path: &Path, bytes: &[u8], staging: Staging<'_>) -> io::Result<NamedTempFile> {
    let dir = parent_dir(path);
    let mut temp = match staging {
        Staging::Unique => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Builder::new()
                .prefix(&format!(".{name}."))
                .suffix(".tmp")
                .permissions(Permissions::from_mode(0o600))
                .tempfile_in(&dir)?
        }
        Staging::Named(name) => {
            let tmp = dir.join(name);
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            NamedTempFile::from_parts(file, TempPath::try_from_path(tmp)?)
        }
    };
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    Ok(temp)
}

/// Fsyncs the directory that holds `path`, so that its new name survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replace_writes_a_private_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        replace(&path, b"one", Staging::Unique).expect("creates");
        replace(&path, b"two", Staging::Named(".f.tmp")).expect("replaces");
        assert_eq!(std::fs::read(&path).expect("reads"), b"two");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").mode() & 0o777,
            0o600
        );
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_named_temporary_file_left_by_a_crash_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(dir.path().join(".f.tmp"), b"stale and longer").expect("stale");
        replace(&path, b"new", Staging::Named(".f.tmp")).expect("replaces");
        assert_eq!(std::fs::read(&path).expect("reads"), b"new");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn create_new_refuses_to_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(create_new(&path, b"one").expect("creates"));
        assert!(!create_new(&path, b"two").expect("answers"));
        assert_eq!(std::fs::read(&path).expect("reads"), b"one");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("f");
        for staging in [Staging::Unique, Staging::Named(".f.tmp")] {
            let err = replace(&path, b"x", staging).expect_err("no directory");
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        }
        let err = create_new(&path, b"x").expect_err("no directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_rename_that_fails_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty directory at the target's name: rename(2) refuses to replace it.
        let path = dir.path().join("f");
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join("old"), b"old").expect("old");
        for staging in [Staging::Unique, Staging::Named(".f.tmp")] {
            replace(&path, b"new", staging).expect_err("a directory is in the way");
            assert_eq!(std::fs::read(path.join("old")).expect("reads"), b"old");
            assert_eq!(names(dir.path()), ["f"], "no temporary file is left behind");
        }
    }

    #[test]
    fn a_write_that_cannot_stage_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        replace(&path, b"old", Staging::Unique).expect("creates");
        // A directory where the temporary file must go: it cannot be opened for writing.
        std::fs::create_dir(dir.path().join(".f.tmp")).expect("mkdir");
        replace(&path, b"new", Staging::Named(".f.tmp")).expect_err("cannot stage");
        assert_eq!(std::fs::read(&path).expect("reads"), b"old");
        assert_eq!(names(dir.path()), [".f.tmp", "f"]);
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_refused_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"untouched").expect("write");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(".f.tmp")).expect("symlink");
        let err = replace(&path, b"new", Staging::Named(".f.tmp")).expect_err("a symlink");
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        assert_eq!(std::fs::read(&elsewhere).expect("reads"), b"untouched");
        assert!(!path.exists());
    }
}
