//! The control socket of a mount: a Unix socket per mount point, owner-only (0600 in a 0700
//! directory: `/run/kmsfs` for root, `$XDG_RUNTIME_DIR/kmsfs` for others), through which
//! `kmsfs status` asks the daemon how it is doing. One JSON line asks (`{"op":"status"}`), one
//! JSON line answers, then the connection closes.
//!
//! The socket is named after the mount point, so that the daemon of a mount is found from the
//! mount table. A socket left by a killed daemon answers nothing (connection refused): the next
//! daemon of that mount point replaces it, and `kmsfs status` says the mount does not answer.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest request or answer line read.
const MAX_LINE: u64 = 1 << 20;

/// How long the daemon waits for a client's request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The directory of this user's control sockets.
pub fn socket_dir() -> PathBuf {
    if crate::sys::effective_uid() == 0 {
        return PathBuf::from("/run/kmsfs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("kmsfs"),
        _ => crate::config::state_home().join("kmsfs").join("run"),
    }
}

/// The name of the control socket of the daemon serving `mountpoint` (a canonical path).
fn socket_name(mountpoint: &Path) -> String {
    let digest = crate::crypto::sha256(mountpoint.as_os_str().as_encoded_bytes());
    format!("{}.sock", crate::format::hex(&digest[..8]))
}

/// The control socket of this user's daemon serving `mountpoint` (a canonical path).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    socket_dir().join(socket_name(mountpoint))
}

/// Where the daemon of a mount made by user `owner` may listen, for this user: its own
/// directory first; for root, also the owner's runtime directory (`/run/user/UID/kmsfs`).
pub fn socket_candidates(mountpoint: &Path, owner: Option<u32>) -> Vec<PathBuf> {
    let mut paths = vec![socket_path(mountpoint)];
    if let Some(uid) = owner.filter(|uid| *uid != 0 && crate::sys::effective_uid() == 0) {
        paths.push(PathBuf::from(format!("/run/user/{uid}/kmsfs")).join(socket_name(mountpoint)));
    }
    paths
}

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The mount's status.
    Status,
}

/// Why a control socket could not be set up or asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The directory or socket could not be made.
    #[error("cannot set up the control socket {path}: {source}")]
    Setup {
        /// The path.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// Another live daemon answers on the socket.
    #[error("another daemon already answers on the control socket {0}")]
    Taken(PathBuf),
    /// The directory is not this user's alone.
    #[error("the control socket directory {0} must belong to this user and be mode 0700")]
    Unsafe(PathBuf),
    /// Nothing listens there (no socket, or one left by a daemon that was killed).
    #[error("no daemon answers on its control socket ({0})")]
    NoDaemon(String),
    /// The daemon did not answer in time.
    #[error("its daemon did not answer within {0} s")]
    Timeout(u64),
    /// The answer was not what the protocol says.
    #[error("its daemon gave an answer that cannot be read: {0}")]
    BadAnswer(String),
}

/// Makes `dir` (mode 0700) if absent; refuses one that others could use.
fn private_dir(dir: &Path) -> Result<(), ControlError> {
    let setup = |source| ControlError::Setup {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(setup)?;
    let meta = std::fs::symlink_metadata(dir).map_err(setup)?;
    if !meta.is_dir() || meta.uid() != crate::sys::effective_uid() {
        return Err(ControlError::Unsafe(dir.to_path_buf()));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(setup)?;
    }
    Ok(())
}

/// Binds the control socket of `mountpoint`, replacing one left by a daemon that is gone.
pub fn bind(mountpoint: &Path) -> Result<(UnixListener, PathBuf), ControlError> {
    let path = socket_path(mountpoint);
    private_dir(&socket_dir())?;
    let setup = |source| ControlError::Setup {
        path: path.clone(),
        source,
    };
    if std::fs::symlink_metadata(&path).is_ok() {
        match UnixStream::connect(&path) {
            Ok(_) => return Err(ControlError::Taken(path)),
            Err(_) => {
                tracing::info!(socket = %path.display(), "replacing a control socket no daemon answers on");
                std::fs::remove_file(&path).map_err(setup)?;
            }
        }
    }
    let listener = UnixListener::bind(&path).map_err(setup)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(setup)?;
    Ok((listener, path))
}

/// Answers requests on `listener` with `answer` until the process ends; each connection is
/// served in turn, a slow client for at most [`REQUEST_TIMEOUT`].
pub fn serve(
    listener: UnixListener,
    answer: impl Fn(Request) -> serde_json::Value + Send + 'static,
) {
    std::thread::Builder::new()
        .name("kmsfs-control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Err(e) = serve_one(stream, &answer) {
                    tracing::debug!("control connection: {e}");
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!("cannot start the control socket's thread: {e}"));
}

fn serve_one(
    stream: UnixStream,
    answer: &impl Fn(Request) -> serde_json::Value,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => answer(request),
        Err(e) => serde_json::json!({ "error": format!("not a request: {e}") }),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// Asks the daemon on `socket` for `request`, waiting at most `timeout` for the answer.
pub fn ask(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        ControlError::NoDaemon(match e.kind() {
            std::io::ErrorKind::NotFound => format!("{} does not exist", socket.display()),
            std::io::ErrorKind::ConnectionRefused => {
                format!("{} is left by a daemon that is gone", socket.display())
            }
            _ => format!("{}: {e}", socket.display()),
        })
    })?;
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ControlError::Timeout(timeout.as_secs().max(1))
        }
        _ => ControlError::BadAnswer(e.to_string()),
    };
    stream.set_read_timeout(Some(timeout)).map_err(timed_out)?;
    stream.set_write_timeout(Some(timeout)).map_err(timed_out)?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(timed_out)?;
    let mut answer = String::new();
    BufReader::new((&stream).take(MAX_LINE))
        .read_line(&mut answer)
        .map_err(timed_out)?;
    if answer.is_empty() {
        return Err(ControlError::BadAnswer("the connection closed".into()));
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_one_tagged_json_line() {
        let text = serde_json::to_string(&Request::Status).expect("serializes");
        assert_eq!(text, r#"{"op":"status"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn sockets_are_named_after_the_mount_point() {
        let a = socket_path(Path::new("/mnt/a"));
        let b = socket_path(Path::new("/mnt/b"));
        assert_ne!(a, b);
        assert_eq!(a, socket_path(Path::new("/mnt/a")));
        assert_eq!(a.parent(), Some(socket_dir().as_path()));
        assert!(a.to_string_lossy().ends_with(".sock"));
        let candidates = socket_candidates(Path::new("/mnt/a"), Some(1000));
        assert_eq!(candidates[0], a);
        if crate::sys::effective_uid() == 0 {
            let other = Path::new("/run/user/1000/kmsfs").join(a.file_name().expect("name"));
            assert_eq!(candidates, vec![a.clone(), other]);
        } else {
            assert_eq!(candidates, vec![a.clone()]);
        }
        assert_eq!(socket_candidates(Path::new("/mnt/a"), Some(0)), vec![a]);
    }
}
