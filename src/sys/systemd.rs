//! What a service manager hands a daemon, in systemd's conventions: the readiness socket
//! (`$NOTIFY_SOCKET`, sd_notify(3)) the daemons tell when they are ready and when they stop, and
//! the credentials directory (`$CREDENTIALS_DIRECTORY`, filled by `LoadCredential=`) secrets
//! are read from. Without a service manager both are absent and every call here does nothing.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// The environment variable naming the service manager's notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// The environment variable naming the directory of the unit's credentials.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Tells the service manager the daemon is ready (`READY=1`), with a status line.
pub fn notify_ready(status: &str) {
    send_or_log(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// Tells the service manager the daemon is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    send_or_log("STOPPING=1");
}

fn send_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the socket `$NOTIFY_SOCKET`
/// names: a path, or an abstract name written `@name`. True when it was sent, false when
/// the variable is unset (no service manager is listening).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV).filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let addr = socket_addr(&socket)?;
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// The address of a `$NOTIFY_SOCKET` value.
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(socket),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET_ENV}={} is neither a socket path nor an @abstract name",
                socket.to_string_lossy()
            ),
        )),
    }
}

/// A status text on one line (the protocol separates assignments with newlines).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The file of the credential `name` the service manager passed (`LoadCredential=name:...`),
/// when there is one: `$CREDENTIALS_DIRECTORY/name`.
pub fn credential(name: &str) -> Option<PathBuf> {
    credential_path(name).filter(|path| path.is_file())
}

/// `$CREDENTIALS_DIRECTORY/name` whether or not it exists; `None` without a credentials
/// directory or for a name that is not a plain file name.
pub fn credential_path(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(CREDENTIALS_DIRECTORY_ENV).filter(|d| !d.is_empty())?;
    let plain = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
    plain.then(|| PathBuf::from(dir).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_a_path_or_an_abstract_name() {
        let path = socket_addr(OsStr::new("/run/systemd/notify")).expect("path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = socket_addr(OsStr::new("@kmsfs/notify")).expect("abstract");
        assert_eq!(abstract_name.as_abstract_name(), Some(&b"kmsfs/notify"[..]));
        assert!(socket_addr(OsStr::new("vsock:2:1234")).is_err());
        assert!(socket_addr(OsStr::new("relative/path")).is_err());
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(
            one_line("listening on\nhttp://x\r"),
            "listening on http://x "
        );
    }

    #[test]
    fn the_message_arrives_on_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        let addr = socket_addr(path.as_os_str()).expect("addr");
        UnixDatagram::unbound()
            .expect("socket")
            .send_to_addr(b"READY=1\nSTATUS=x", &addr)
            .expect("send");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");
    }
}
