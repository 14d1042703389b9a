//! The `kmsfs` command line: clap definitions and dispatch. Each command is a thin call into
//! the rooms; every failure becomes one plain sentence on stderr and an exit code of
//! [`exit::Exit`].

mod control;
mod daemon;
mod exit;
mod fs_key;
mod fsck;
mod generated;
mod init;
mod inspect;
mod install;
mod key;
mod kms;
mod kms_bench;
mod kms_serve;
mod logging;
mod mount;
pub mod mount_helper;
mod mounts;
mod observe;
mod passwd;
mod rewrap;
mod secret;
mod status;
mod unmount;

use clap::{Args, Parser, Subcommand};
use exit::Exit;
use std::path::PathBuf;
use std::process::ExitCode;

/// A command's failure: one sentence for the user, and the exit code.
#[derive(Debug)]
pub struct CliError {
    message: String,
    exit: Exit,
}

impl CliError {
    /// A failure of no particular class (exit code 1).
    pub fn new(message: impl Into<String>) -> Self {
        CliError::with(Exit::Problems, message)
    }

    /// A failure with the exit code of `exit`.
    pub fn with(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            exit,
        }
    }

    /// A damaged `kmsfs.conf` (exit code 8).
    pub fn config(message: impl Into<String>) -> Self {
        CliError::with(Exit::Config, message)
    }

    /// A wrong value on the command line (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::with(Exit::Usage, message)
    }

    /// An operating system error while `doing` something to `path` (exit code 6).
    pub fn io(doing: &str, path: &std::path::Path, e: &std::io::Error) -> Self {
        CliError::with(Exit::Io, format!("cannot {doing} {}: {e}", path.display()))
    }

    /// A KMS failure told with some context: `message`, with the KMS error's exit code.
    pub fn kms(error: &crate::kms::KmsError, message: impl Into<String>) -> Self {
        CliError::with(Exit::of_kms(error), message)
    }
}

impl From<crate::kms::KmsError> for CliError {
    fn from(e: crate::kms::KmsError) -> Self {
        CliError::kms(&e, e.to_string())
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::with(Exit::of_config(&e), e.to_string())
    }
}

impl From<crate::kms::remote::RemoteError> for CliError {
    fn from(e: crate::kms::remote::RemoteError) -> Self {
        CliError::with(Exit::of_remote(&e), e.to_string())
    }
}

impl From<crate::server::ServerError> for CliError {
    fn from(e: crate::server::ServerError) -> Self {
        CliError::with(Exit::of_server(&e), e.to_string())
    }
}

type CliResult<T = ()> = Result<T, CliError>;

#[derive(Parser)]
#[command(
    name = "kmsfs",
    version = version_text(),
    about = "An encrypted FUSE filesystem with envelope encryption backed by a KMS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `kmsfs --version` prints after the name: the version, the git commit it was built from
/// ("unknown" outside a git checkout), and the format versions it reads and writes.
fn version_text() -> String {
    use crate::format::HeaderVersion;
    format!(
        "{} (commit {})\n\
         cipher directory (kmsfs.conf): reads versions 1 to {conf}, writes {conf}\n\
         file header: reads versions 1 to {header}, writes {header}\n\
         keystore file: version {keystore}; keyring: version {keyring}",
        env!("CARGO_PKG_VERSION"),
        env!("KMSFS_GIT_COMMIT"),
        conf = crate::config::FORMAT_VERSION,
        header = HeaderVersion::NEWEST.number(),
        keystore = crate::kms::embedded::KEYSTORE_VERSION,
        keyring = crate::kms::keyring::KEYRING_VERSION,
    )
}

/// Where the embedded keystore is and how to open it.
#[derive(Args, Clone, Default)]
struct KeystoreArgs {
    /// The embedded keystore (default: $XDG_DATA_HOME/kmsfs/keystore).
    #[arg(long, value_name = "PATH", global = true)]
    keystore: Option<PathBuf>,
    /// Read the passphrase from FILE (else $KMSFS_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE", global = true)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a cipher directory (and the keystore and KMS key it needs).
    Init {
        /// The new cipher directory (empty or absent).
        cipherdir: PathBuf,
        #[command(flatten)]
        keystore: KeystoreArgs,
        /// Wrap the directory's DEKs with this existing KMS key instead of a new one.
        #[arg(long, value_name = "ID")]
        key: Option<uuid::Uuid>,
        /// Use the remote KMS at URL (e.g. http://127.0.0.1:8400/v2), or at several servers of
        /// one zone (URL1,URL2,...), with the credentials of EXOSCALE_API_KEY and
        /// EXOSCALE_API_SECRET, instead of the embedded keystore.
        #[arg(long, value_name = "URL[,URL...]")]
        kms: Option<String>,
        /// Keep file, directory and symlink names (and symlink targets) in the clear in the
        /// cipher directory, as format version 1 did. By default they are encrypted.
        #[arg(long)]
        plaintext_names: bool,
    },
    /// Mount a cipher directory; returns once the mount is live.
    Mount(mount::MountArgs),
    /// Unmount; the daemon flushes and exits.
    Unmount {
        /// The mount point (or the cipher directory mounted there).
        mountpoint: PathBuf,
        /// Detach now even if files are open (the mount goes away when they close).
        #[arg(long)]
        lazy: bool,
    },
    /// Show every live kmsfs mount (or the one at MOUNTPOINT), as its daemon tells it.
    Status(status::StatusArgs),
    /// Manage KMS keys.
    Key(key::KeyArgs),
    /// Change the passphrase of an embedded keystore (nothing is re-encrypted).
    Passwd(passwd::PasswdArgs),
    /// The KMS server (Exoscale API v2 compatible), its organizations, and a load generator.
    #[command(subcommand)]
    Kms(kms::KmsCommand),
    /// Re-wrap every file's DEK under the newest key material (after `kmsfs key rotate`);
    /// rewrites headers only.
    Rewrap(rewrap::RewrapArgs),
    /// Show a cipher file's header as JSON (no KMS call).
    Inspect {
        /// A file inside a cipher directory.
        cipherfile: PathBuf,
    },
    /// Authenticate every header and block of a cipher directory; with --repair, cut files
    /// that end in a torn block back to their last authentic block.
    Fsck(fsck::FsckArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (kmsfs.1, kmsfs-mount.1, ...) into a directory.
    Man {
        /// The directory (made if absent), e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// Install the mount helpers (mount.fuse.kmsfs and mount.kmsfs, for mount(8) and fstab),
    /// the shell completions and the manual pages.
    InstallHelpers(install::InstallArgs),
}

/// Runs the command line and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init {
            cipherdir,
            keystore,
            key,
            kms,
            plaintext_names,
        } => init::run(&cipherdir, &keystore, key, kms.as_deref(), plaintext_names),
        Command::Mount(args) => mount::run(args),
        Command::Unmount { mountpoint, lazy } => unmount::unmount(&mountpoint, lazy),
        Command::Status(args) => status::run(&args),
        Command::Key(args) => key::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Kms(command) => kms::run(command),
        Command::Rewrap(args) => rewrap::run(args),
        Command::Inspect { cipherfile } => inspect::run(&cipherfile),
        Command::Completions { shell } => generated::completions(shell),
        Command::Man { dir } => generated::man(&dir),
        Command::InstallHelpers(args) => install::run(args),
        Command::Fsck(args) => fsck::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kmsfs: {}", e.message);
            ExitCode::from(e.exit.code())
        }
    }
}

/// Logging to stderr for foreground commands (`KMSFS_LOG` sets the filter, default `warn`).
fn init_stderr_logging(default: &'static str) {
    logging::init_stderr(logging::LogFormat::Text, default, None);
}
