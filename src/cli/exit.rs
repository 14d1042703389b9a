//! The exit codes of `kmsfs`, all in one place, and which error gets which. They are stable:
//! scripts may test them (`docs/CLI.md` lists them for users).

use crate::config::ConfigError;
use crate::kms::remote::RemoteError;
use crate::kms::{KeystoreError, KmsError};
use crate::server::ServerError;

/// What a `kmsfs` exit code says. The first five (0 to 4) are the ones most scripts need;
/// the others tell the remaining kinds of failure apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok,
    /// 1: the command ran and reports problems (fsck found damage, some files were not
    /// rewrapped, benchmark requests failed), or it failed for a reason none of the codes
    /// below names.
    Problems,
    /// 2: the command line is wrong (clap's own code, also for values it cannot check).
    Usage,
    /// 3: the KMS cannot be reached, is in trouble, or limits requests; a later try may work.
    KmsUnavailable,
    /// 4: authentication failed: a wrong (or empty) passphrase for the keystore, or KMS
    /// credentials that are refused or missing.
    Authentication,
    /// 5: the keystore (or the KMS server's state) does not open for another reason than the
    /// passphrase: none there, damaged.
    Keystore,
    /// 6: a local file or directory cannot be read or written.
    Io,
    /// 7: the KMS refused: the key is missing, disabled or pending deletion, or another of
    /// its rules says no.
    KmsRefused,
    /// 8: not a cipher directory, or its `kmsfs.conf` is damaged or names an endpoint not
    /// trusted for it.
    Config,
    /// 9: the KMS answered something kmsfs cannot use.
    KmsAnswer,
    /// 10: a wrapped key does not open under its KMS key and context: the key or the data
    /// was changed or damaged.
    Damaged,
}

/// Every exit, in the order of their codes.
const ALL: [Exit; 11] = [
    Exit::Ok,
    Exit::Problems,
    Exit::Usage,
    Exit::KmsUnavailable,
    Exit::Authentication,
    Exit::Keystore,
    Exit::Io,
    Exit::KmsRefused,
    Exit::Config,
    Exit::KmsAnswer,
    Exit::Damaged,
];

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problems => 1,
            Exit::Usage => 2,
            Exit::KmsUnavailable => 3,
            Exit::Authentication => 4,
            Exit::Keystore => 5,
            Exit::Io => 6,
            Exit::KmsRefused => 7,
            Exit::Config => 8,
            Exit::KmsAnswer => 9,
            Exit::Damaged => 10,
        }
    }

    /// The exit of `code`, for a code that crossed a process boundary (the mount daemon tells
    /// its parent); `None` for a number no exit has.
    pub fn of_code(code: u8) -> Option<Self> {
        ALL.into_iter().find(|exit| exit.code() == code)
    }

    /// The code of a KMS failure.
    pub fn of_kms(error: &KmsError) -> Self {
        match error {
            KmsError::Refused { .. } => Exit::KmsRefused,
            KmsError::InvalidCiphertext => Exit::Damaged,
            KmsError::Unauthorized { .. } => Exit::Authentication,
            KmsError::Limited { .. }
            | KmsError::Unreachable { .. }
            | KmsError::Unavailable { .. } => Exit::KmsUnavailable,
            KmsError::Unexpected { .. } | KmsError::Malformed { .. } | KmsError::Client(_) => {
                Exit::KmsAnswer
            }
            KmsError::Keystore(e) => Exit::of_keystore(e),
        }
    }

    /// The code of a keystore failure: I/O trouble is I/O, a passphrase that does not open it
    /// is authentication, everything else the keystore's.
    pub fn of_keystore(error: &KeystoreError) -> Self {
        match error {
            KeystoreError::Io(_) => Exit::Io,
            KeystoreError::WrongPassphrase { .. } | KeystoreError::EmptyPassphrase { .. } => {
                Exit::Authentication
            }
            KeystoreError::Missing { .. }
            | KeystoreError::Exists { .. }
            | KeystoreError::Costs { .. }
            | KeystoreError::Damaged { .. }
            | KeystoreError::Invalid { .. }
            | KeystoreError::Serialize { .. }
            | KeystoreError::TooLarge { .. } => Exit::Keystore,
        }
    }

    /// The code of a failure to set up the remote KMS client.
    pub fn of_remote(error: &RemoteError) -> Self {
        match error {
            RemoteError::MissingCredentials => Exit::Authentication,
            RemoteError::BadEndpoint(_)
            | RemoteError::EmptyInList(_)
            | RemoteError::Repeated(_)
            | RemoteError::NotApiBase(_)
            | RemoteError::OtherApi { .. } => Exit::Usage,
        }
    }

    /// The code of a cipher directory's configuration problem.
    pub fn of_config(error: &ConfigError) -> Self {
        match error {
            ConfigError::Io { .. } => Exit::Io,
            _ => Exit::Config,
        }
    }

    /// The code of a KMS server failure.
    pub fn of_server(error: &ServerError) -> Self {
        match error {
            ServerError::Io(_) | ServerError::Listen { .. } | ServerError::Tls { .. } => Exit::Io,
            ServerError::WrongPassphrase { .. } => Exit::Authentication,
            ServerError::Damaged { .. } | ServerError::Inconsistent(_) => Exit::Keystore,
            ServerError::Keyring(e) => Exit::of_kms(e),
            ServerError::Invalid(_) => Exit::Usage,
            // As a cipher directory mounted already.
            ServerError::InUse(_) => Exit::Problems,
            ServerError::Store(_) => Exit::KmsUnavailable,
            ServerError::PeerClient(_) | ServerError::Task { .. } | ServerError::Serve(_) => {
                Exit::Problems
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::Refusal;

    #[test]
    fn codes_are_distinct_and_stable() {
        let codes: Vec<u8> = ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, (0..=10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_code_reads_back_as_its_exit_and_no_other_number_does() {
        for exit in ALL {
            assert_eq!(Exit::of_code(exit.code()), Some(exit));
        }
        for stray in [11, 42, 255] {
            assert_eq!(Exit::of_code(stray), None);
        }
    }

    #[test]
    fn kms_errors_get_their_codes() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let cases = [
            (KmsError::refused(Refusal::KeyNotFound, "k"), 7),
            (KmsError::refused(Refusal::KeyDisabled, "k"), 7),
            (KmsError::refused(Refusal::KeyPendingDeletion, "k"), 7),
            (KmsError::InvalidCiphertext, 10),
            (KmsError::Unauthorized { detail: "d".into() }, 4),
            (KmsError::Limited { detail: "d".into() }, 3),
            (
                KmsError::Unreachable {
                    what: "w".into(),
                    sent: false,
                    source: "refused".into(),
                },
                3,
            ),
            (
                KmsError::Unavailable {
                    status: 503,
                    title: "t".into(),
                    detail: "d".into(),
                },
                3,
            ),
            (
                KmsError::Unexpected {
                    status: 418,
                    title: "t".into(),
                    detail: "d".into(),
                },
                9,
            ),
            (
                KmsError::Malformed {
                    operation: "decrypt",
                    what: "w".into(),
                    source: None,
                },
                9,
            ),
            (
                KeystoreError::WrongPassphrase { path: "/k".into() }.into(),
                4,
            ),
            (KeystoreError::Missing { path: "/k".into() }.into(), 5),
            (KeystoreError::io("read", "/k", io()).into(), 6),
        ];
        for (error, code) in cases {
            assert_eq!(Exit::of_kms(&error).code(), code, "{error}");
        }
    }

    #[test]
    fn set_up_and_server_errors_get_their_codes() {
        assert_eq!(Exit::of_remote(&RemoteError::MissingCredentials).code(), 4);
        assert_eq!(
            Exit::of_remote(&RemoteError::BadEndpoint("x".into())).code(),
            2
        );
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let cases = [
            (
                ServerError::Listen {
                    addr: "a".into(),
                    source: io,
                },
                6,
            ),
            (ServerError::WrongPassphrase { dir: "/d".into() }, 4),
            (
                ServerError::Keyring(KmsError::refused(Refusal::NameConflict, "n")),
                7,
            ),
            (
                ServerError::Invalid("--peer needs --peer-secret-file".into()),
                2,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Exit::of_server(&error).code(), code, "{error}");
        }
    }
}
