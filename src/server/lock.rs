//! The data directory's lock: one `kmsfs kms serve` per `--data` directory. Two servers on one
//! directory would each keep their own copy of the state in memory and overwrite each other's
//! acknowledged writes, so the second one refuses to start.
//!
//! The lock is an exclusive `flock` (the standard library's [`File::try_lock`], as the embedded
//! keystore's write lock) on `DIR/serve.lock`, held for the server's life and released by the
//! kernel when the process ends, however it ends. The file holds the holder's pid, for the
//! refusal's sentence only. `kmsfs kms org create` does not take it: it only adds a file, which
//! the running server picks up.

use super::ServerError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "serve.lock";

/// The held lock of a data directory; released on drop (and by the kernel at exit).
#[derive(Debug)]
pub(crate) struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes the lock of `dir` (created, mode 0700, if absent), or says which server holds it.
    ///
    /// # Errors
    /// [`ServerError::InUse`] with one sentence naming the directory (and the other server's
    /// pid when the lock file tells it) when another server holds the lock; [`ServerError::Io`]
    /// when the directory or the lock file cannot be made.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, ServerError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ServerError::io("create the data directory", dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ServerError::io("open the lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(dir, &mut file)),
            Err(TryLockError::Error(e)) => return Err(ServerError::io("lock", &path, e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| ServerError::io("write the lock file", &path, e))?;
        Ok(DataLock { _file: file })
    }
}

/// The refusal: the directory, and the holder's pid if its lock file says one.
fn in_use(dir: &Path, file: &mut File) -> ServerError {
    let mut text = String::new();
    let holder = match Read::by_ref(file).take(32).read_to_string(&mut text) {
        Ok(_) => text.trim().parse::<u32>().ok(),
        Err(_) => None,
    };
    let dir = display_dir(dir);
    ServerError::InUse(match holder {
        Some(pid) => format!(
            "the data directory {dir} is in use by another kmsfs kms serve (pid {pid}); \
             stop it or choose another --data"
        ),
        None => format!(
            "the data directory {dir} is in use by another kmsfs kms serve; \
             stop it or choose another --data"
        ),
    })
}

/// The directory as the user will recognise it (absolute when it can be made so).
fn display_dir(dir: &Path) -> String {
    let full: PathBuf = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    full.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let first = DataLock::acquire(&data).expect("the first lock");
        let refused = DataLock::acquire(&data).expect_err("a second lock");
        let sentence = refused.to_string();
        assert!(
            sentence.contains("is in use by another kmsfs kms serve"),
            "{sentence}"
        );
        assert!(
            sentence.contains(&format!("(pid {})", std::process::id())),
            "{sentence}"
        );
        drop(first);
        DataLock::acquire(&data).expect("the lock is free again once dropped");
    }
}
