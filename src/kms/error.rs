//! What can go wrong with a KMS, by any backend: [`KmsError`] says what happened (a refusal of a
//! key rule, an invalid ciphertext, refused credentials, a rate limit, a KMS out of reach, an
//! answer that cannot be read, a keystore that cannot be used) and, through [`KmsError::retry`],
//! whether sending the request again makes sense. That one rule drives the remote client's
//! retry loop. [`Refusal`] names the spec's error titles, which are the wire contract.

use std::path::PathBuf;

/// An error title of the API, exactly as the spec spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// "Key Not Found"
    KeyNotFound,
    /// "Key is Disabled"
    KeyDisabled,
    /// "Key is Pending Deletion"
    KeyPendingDeletion,
    /// "Not on Default"
    NotOnDefault,
    /// "Not on Replica"
    NotOnReplica,
    /// "Not on a Replica" (the spelling the spec uses for `rotate`)
    NotOnAReplica,
    /// "Manual Rotation Limit"
    ManualRotationLimit,
    /// "Conflict"
    Conflict,
    /// "Name Conflict"
    NameConflict,
    /// "Bad Request"
    BadRequest,
    /// "Invalid Usage"
    InvalidUsage,
    /// "Invalid Origin"
    InvalidOrigin,
    /// "Not Multizone"
    NotMultizone,
    /// "Not Pending Deletion"
    NotPendingDeletion,
    /// "Invalid Argument"
    InvalidArgument,
}

impl Refusal {
    /// The problem document title.
    pub fn title(self) -> &'static str {
        match self {
            Refusal::KeyNotFound => "Key Not Found",
            Refusal::KeyDisabled => "Key is Disabled",
            Refusal::KeyPendingDeletion => "Key is Pending Deletion",
            Refusal::NotOnDefault => "Not on Default",
            Refusal::NotOnReplica => "Not on Replica",
            Refusal::NotOnAReplica => "Not on a Replica",
            Refusal::ManualRotationLimit => "Manual Rotation Limit",
            Refusal::Conflict => "Conflict",
            Refusal::NameConflict => "Name Conflict",
            Refusal::BadRequest => "Bad Request",
            Refusal::InvalidUsage => "Invalid Usage",
            Refusal::InvalidOrigin => "Invalid Origin",
            Refusal::NotMultizone => "Not Multizone",
            Refusal::NotPendingDeletion => "Not Pending Deletion",
            Refusal::InvalidArgument => "Invalid Argument",
        }
    }

    /// The refusal with this title, if it is one of ours.
    pub fn from_title(title: &str) -> Option<Self> {
        ALL_REFUSALS.iter().copied().find(|r| r.title() == title)
    }

    /// True when the refusal says the key is missing or not usable now (not found, disabled,
    /// pending deletion), as opposed to a request the KMS finds wrong.
    pub fn is_about_the_key(self) -> bool {
        matches!(
            self,
            Refusal::KeyNotFound | Refusal::KeyDisabled | Refusal::KeyPendingDeletion
        )
    }
}

const ALL_REFUSALS: [Refusal; 15] = [
    Refusal::KeyNotFound,
    Refusal::KeyDisabled,
    Refusal::KeyPendingDeletion,
    Refusal::NotOnDefault,
    Refusal::NotOnReplica,
    Refusal::NotOnAReplica,
    Refusal::ManualRotationLimit,
    Refusal::Conflict,
    Refusal::NameConflict,
    Refusal::BadRequest,
    Refusal::InvalidUsage,
    Refusal::InvalidOrigin,
    Refusal::NotMultizone,
    Refusal::NotPendingDeletion,
    Refusal::InvalidArgument,
];

/// Whether a failed request may be sent again, by [`KmsError::retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No: the KMS judged the request, or waiting cannot fix what is wrong.
    No,
    /// Yes, where doing the request twice is harmless: it may have reached the KMS.
    IfRepeatable,
    /// Yes: the request cannot have reached the KMS (the connection itself failed).
    Yes,
}

impl Retry {
    /// Whether to send the request again, for a request that is `harmless_twice` (reads,
    /// cryptography, set-to-state changes) or not (create, rotate).
    pub fn allows(self, harmless_twice: bool) -> bool {
        match self {
            Retry::No => false,
            Retry::IfRepeatable => harmless_twice,
            Retry::Yes => true,
        }
    }
}

/// Why a KMS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The KMS refused by one of its rules (a 400 problem document on the wire): the key is
    /// missing, disabled or pending deletion, a name conflicts, the manual rotation limit is
    /// reached, the request is wrong, ...
    #[error("{}: {detail}", refusal.title())]
    Refused {
        /// The rule's title.
        refusal: Refusal,
        /// What exactly was refused.
        detail: String,
    },
    /// Decryption failed: wrong key, wrong context, or a damaged ciphertext. Deliberately opaque.
    #[error("the ciphertext is invalid for this key and encryption context")]
    InvalidCiphertext,
    /// The request's credentials were refused (401, 403).
    #[error("the KMS refused the credentials: {detail}")]
    Unauthorized {
        /// The KMS's title and detail.
        detail: String,
    },
    /// The KMS limits the rate or number of requests (429); a later try may pass.
    #[error("the KMS limits requests: {detail}")]
    Limited {
        /// The KMS's title and detail.
        detail: String,
    },
    /// The KMS could not be reached, or did not answer in time.
    #[error("the KMS is unreachable: {what}")]
    Unreachable {
        /// The request, the tries and the cause in a few words.
        what: String,
        /// False when the connection itself failed, so the request cannot have reached the KMS.
        sent: bool,
        /// The transport error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The KMS (or a proxy in front of it) answered that it is in trouble (500, 502, 503, 504):
    /// the request was not judged.
    #[error("the KMS is unavailable: it answered {status} {title}: {detail}")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// The problem title, or the status in words.
        title: String,
        /// The problem detail.
        detail: String,
    },
    /// The KMS answered with an error this client does not know.
    #[error("the KMS answered {status} {title}: {detail}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The problem title, or the status in words.
        title: String,
        /// The problem detail.
        detail: String,
    },
    /// The KMS answered, but not what the operation returns (not JSON of the expected shape,
    /// a field that is not base64, a data key of the wrong size).
    #[error("the KMS answered {operation} with {what}")]
    Malformed {
        /// The operation asked.
        operation: &'static str,
        /// What is wrong with the answer.
        what: String,
        /// The parse error, if one.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The HTTP client could not be set up (e.g. no TLS backend).
    #[error("the KMS client cannot be set up: {0}")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The embedded keystore (or a persisted keyring) cannot be opened, read or written.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

impl KmsError {
    /// A refusal with a detail sentence.
    pub fn refused(refusal: Refusal, detail: impl Into<String>) -> Self {
        KmsError::Refused {
            refusal,
            detail: detail.into(),
        }
    }

    /// Whether the same request may succeed if sent again: the one rule the remote client's
    /// retry loop follows. Answers that judged the request are final; trouble in transport or
    /// on the KMS's side, and rate limits, are not.
    pub fn retry(&self) -> Retry {
        match self {
            KmsError::Unreachable { sent: false, .. } => Retry::Yes,
            KmsError::Unreachable { sent: true, .. }
            | KmsError::Unavailable { .. }
            | KmsError::Limited { .. } => Retry::IfRepeatable,
            KmsError::Refused { .. }
            | KmsError::InvalidCiphertext
            | KmsError::Unauthorized { .. }
            | KmsError::Unexpected { .. }
            | KmsError::Malformed { .. }
            | KmsError::Client(_)
            | KmsError::Keystore(_) => Retry::No,
        }
    }

    /// Whether another server of the same zone may answer where this one failed: true for
    /// trouble on the way or at the server (no connection, no answer in time, 5xx), false for
    /// every answer that judged the request or limits its sender (4xx: the zone's answer).
    /// A remote client with several endpoints moves on only when this and [`KmsError::retry`]
    /// both allow it.
    pub fn is_server_trouble(&self) -> bool {
        matches!(
            self,
            KmsError::Unreachable { .. } | KmsError::Unavailable { .. }
        )
    }

    /// This failure, the last of a call's tries, saying what the tries were (`tries`, e.g. "2
    /// endpoints tried, 3 attempts in 0.4 s, 1 request sent") and where the last went
    /// (`last`). Its kind, and so its retry rule and exit code, stay; answers that judged the
    /// request are returned as they are.
    pub fn after_tries(self, tries: &str, last: &str) -> Self {
        match self {
            KmsError::Unreachable { what, sent, source } => KmsError::Unreachable {
                what: format!("{tries}; the last, {what}"),
                sent,
                source,
            },
            KmsError::Unavailable {
                status,
                title,
                detail,
            } => KmsError::Unavailable {
                status,
                title,
                detail: format!("{detail} ({tries}; the last to {last})"),
            },
            KmsError::Limited { detail } => KmsError::Limited {
                detail: format!("{detail} ({tries}; the last to {last})"),
            },
            judged => judged,
        }
    }

    /// True when a retry may succeed (for a request that is harmless to repeat).
    pub fn is_retryable(&self) -> bool {
        self.retry() != Retry::No
    }

    /// The refusal, if this is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            KmsError::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// Why the embedded keystore, or a keyring's persisted form, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// No keystore file at the path.
    #[error("there is no keystore at {}; create one with `kmsfs init`", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The passphrase does not open the keystore.
    #[error("wrong passphrase for the keystore {}", path.display())]
    WrongPassphrase {
        /// The keystore.
        path: PathBuf,
    },
    /// The passphrase is empty.
    #[error("the passphrase for the keystore {} is empty", path.display())]
    EmptyPassphrase {
        /// The keystore.
        path: PathBuf,
    },
    /// A keystore already exists where one was to be created.
    #[error("a keystore already exists at {}", path.display())]
    Exists {
        /// The keystore.
        path: PathBuf,
    },
    /// The key derivation costs are out of range.
    #[error("the key derivation costs for {} are out of range", path.display())]
    Costs {
        /// The keystore.
        path: PathBuf,
    },
    /// The file is not a kmsfs keystore, or it is damaged.
    #[error("the keystore {} is damaged ({why})", path.display())]
    Damaged {
        /// The keystore.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The operating system refused a read or write.
    #[error(transparent)]
    Io(#[from] FileError),
    /// A persisted keyring or key record is not of its shape, or breaks a rule.
    #[error("the keyring is invalid: {why}")]
    Invalid {
        /// The first problem found.
        why: String,
        /// The JSON error, if the shape is wrong.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A keyring or key record could not be written as JSON.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// "the keyring" or "key".
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// What is to be sealed is larger than its file allows.
    #[error("{what} is too large")]
    TooLarge {
        /// What.
        what: &'static str,
    },
}

impl KeystoreError {
    /// An operating system error while `doing` something to `path`.
    pub fn io(doing: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeystoreError::Io(FileError::new(doing, path, source))
    }
}

/// An operating system error on a named file or directory: what was being done, where, and the
/// system's error. Shared by the keystore and the KMS server's state.
#[derive(Debug, thiserror::Error)]
#[error("cannot {doing} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done ("read the keystore", "create").
    pub doing: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// `source` while `doing` something to `path`.
    pub fn new(doing: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FileError {
            doing,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable(sent: bool) -> KmsError {
        KmsError::Unreachable {
            what: "GET x failed".into(),
            sent,
            source: "connection refused".into(),
        }
    }

    fn answer(status: u16) -> (u16, String, String) {
        (status, "T".to_string(), "d".to_string())
    }

    #[test]
    fn only_trouble_on_the_way_is_retried() {
        let (status, title, detail) = answer(503);
        let cases = [
            (unreachable(false), Retry::Yes),
            (unreachable(true), Retry::IfRepeatable),
            (
                KmsError::Unavailable {
                    status,
                    title: title.clone(),
                    detail: detail.clone(),
                },
                Retry::IfRepeatable,
            ),
            (
                KmsError::Limited { detail: "d".into() },
                Retry::IfRepeatable,
            ),
            (KmsError::refused(Refusal::KeyNotFound, "k"), Retry::No),
            (KmsError::refused(Refusal::KeyDisabled, "k"), Retry::No),
            (KmsError::refused(Refusal::Conflict, "k"), Retry::No),
            (KmsError::InvalidCiphertext, Retry::No),
            (KmsError::Unauthorized { detail: "d".into() }, Retry::No),
            (
                KmsError::Unexpected {
                    status: 418,
                    title,
                    detail,
                },
                Retry::No,
            ),
            (
                KmsError::Malformed {
                    operation: "decrypt",
                    what: "no plaintext".into(),
                    source: None,
                },
                Retry::No,
            ),
            (
                KmsError::Keystore(KeystoreError::WrongPassphrase { path: "/k".into() }),
                Retry::No,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.retry(), expected, "{error}");
            assert_eq!(error.is_retryable(), expected != Retry::No, "{error}");
        }
        assert!(Retry::Yes.allows(false) && Retry::IfRepeatable.allows(true));
        assert!(!Retry::IfRepeatable.allows(false) && !Retry::No.allows(true));
    }

    #[test]
    fn errors_keep_their_cause() {
        use std::error::Error;
        let e = unreachable(false);
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("connection refused")
        );
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = KmsError::from(KeystoreError::io("read the keystore", "/k", io));
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            cause.map(std::io::Error::kind),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        assert!(
            e.to_string().starts_with("cannot read the keystore /k: "),
            "{e}"
        );
    }

    #[test]
    fn refusal_titles_are_the_spec_s() {
        for refusal in ALL_REFUSALS {
            assert_eq!(Refusal::from_title(refusal.title()), Some(refusal));
        }
        assert_eq!(
            Refusal::KeyPendingDeletion.title(),
            "Key is Pending Deletion"
        );
        assert_eq!(Refusal::from_title("key not found"), None);
        assert!(Refusal::KeyDisabled.is_about_the_key());
        assert!(!Refusal::BadRequest.is_about_the_key());
    }
}
