//! Why the server could not start or keep its state: [`ServerError`].

use crate::kms::{FileError, KmsError};
use std::path::{Path, PathBuf};

/// Why the server could not start or keep its state.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The operating system refused a read or write of the state.
    #[error(transparent)]
    Io(#[from] FileError),
    /// A state file is not of its kind, or is damaged.
    #[error("{what} {} is damaged ({why})", path.display())]
    Damaged {
        /// "the org file", "the root key", ...
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The passphrase does not open the data directory.
    #[error("wrong passphrase for the data directory {}", dir.display())]
    WrongPassphrase {
        /// The data directory.
        dir: PathBuf,
    },
    /// The state holds something that cannot be served (an organization of another zone, a
    /// file sealed the other way); the sentence says what.
    #[error("{0}")]
    Inconsistent(String),
    /// A keyring in the state breaks a rule or cannot be written.
    #[error(transparent)]
    Keyring(#[from] KmsError),
    /// The etcd store cannot be reached or used; the sentence says why.
    #[error("{0}")]
    Store(String),
    /// A setting or input is wrong; the sentence names it.
    #[error("{0}")]
    Invalid(String),
    /// Another server holds the data directory; the sentence names it and that server.
    #[error("{0}")]
    InUse(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file cannot be read or used.
    #[error("{what}: {source}")]
    Tls {
        /// What failed, naming the file.
        what: String,
        /// The TLS or PEM error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client for the peers cannot be made.
    #[error("cannot build the peer HTTP client: {0}")]
    PeerClient(#[source] reqwest::Error),
    /// A background task of the server died.
    #[error("{doing} failed: {source}")]
    Task {
        /// What the task was doing.
        doing: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Serving stopped on an I/O error.
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl ServerError {
    /// An operating system error while `doing` something to `path`.
    pub(crate) fn io(doing: &'static str, path: &Path, source: std::io::Error) -> Self {
        ServerError::Io(FileError::new(doing, path, source))
    }
}
