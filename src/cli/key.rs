//! `kmsfs key ...`: KMS key management against the embedded keystore, a cipher directory's
//! KMS (`--cipherdir`, or a directory or mount point given where a key id goes), or a remote
//! KMS (`--kms URL`).

use super::secret;
use super::{CliError, CliResult, KeystoreArgs};
use crate::config::CipherConfig;
use crate::kms::wire::{self, CreateKeyRequest};
use crate::kms::{KeyService, KmsKey};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use uuid::Uuid;

/// Arguments of `kmsfs key`.
#[derive(Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
    #[command(flatten)]
    keystore: KeystoreArgs,
    /// Use the KMS of this cipher directory (or of the directory mounted here).
    #[arg(long, value_name = "DIR", global = true)]
    cipherdir: Option<PathBuf>,
    /// Use the remote KMS at URL, or at several servers of one zone (URL1,URL2,...), with the
    /// credentials of EXOSCALE_API_KEY and EXOSCALE_API_SECRET; with --cipherdir, trust the
    /// URLs for that directory (they must be the ones its kmsfs.conf names).
    #[arg(long, value_name = "URL[,URL...]", global = true)]
    kms: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key.
    Create {
        /// Its name (unique).
        name: String,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// Make it a multi-zone key.
        #[arg(long)]
        multi_zone: bool,
    },
    /// List keys (of the default keystore, or of the KMS DIR uses).
    List {
        /// A cipher directory or its mount point: list the keys of its KMS.
        dir: Option<PathBuf>,
    },
    /// Show one key.
    Show {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
    /// Rotate a key now (at most 10 manual rotations per key).
    Rotate {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
    /// Enable a key.
    Enable {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
    /// Disable a key (files it wraps stop opening once cached DEKs expire).
    Disable {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
    /// Turn automatic rotation on.
    EnableRotation {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
        /// Days between rotations (90 to 2560).
        #[arg(long)]
        period: Option<i64>,
    },
    /// Turn automatic rotation off.
    DisableRotation {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
    /// Schedule the key's destruction.
    ScheduleDeletion {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
        /// Days until deletion (7 to 30).
        #[arg(long)]
        days: Option<i64>,
    },
    /// Cancel a scheduled deletion (the key becomes disabled).
    CancelDeletion {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
    /// List a key's rotations.
    Rotations {
        /// Key id, or a cipher directory or its mount point (its key, in its KMS).
        #[arg(value_name = "ID|DIR")]
        id: KeyRef,
    },
}

/// Which key a command means: an id, or the key of a cipher directory (or mount point).
#[derive(Clone, Debug)]
pub enum KeyRef {
    /// A key id.
    Id(Uuid),
    /// The key of this cipher directory or mount point.
    Dir(PathBuf),
}

impl std::str::FromStr for KeyRef {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match Uuid::parse_str(text) {
            Ok(id) => KeyRef::Id(id),
            Err(_) => KeyRef::Dir(PathBuf::from(text)),
        })
    }
}

impl KeyCommand {
    /// The key the command names, if it names one.
    fn key_ref(&self) -> Option<&KeyRef> {
        match self {
            KeyCommand::Create { .. } | KeyCommand::List { .. } => None,
            KeyCommand::Show { id }
            | KeyCommand::Rotate { id }
            | KeyCommand::Enable { id }
            | KeyCommand::Disable { id }
            | KeyCommand::EnableRotation { id, .. }
            | KeyCommand::DisableRotation { id }
            | KeyCommand::ScheduleDeletion { id, .. }
            | KeyCommand::CancelDeletion { id }
            | KeyCommand::Rotations { id } => Some(id),
        }
    }

    /// The cipher directory the command's own argument names (`list DIR`, a directory for
    /// an id).
    fn dir(&self) -> Option<&PathBuf> {
        match (self, self.key_ref()) {
            (KeyCommand::List { dir }, _) => dir.as_ref(),
            (_, Some(KeyRef::Dir(dir))) => Some(dir),
            _ => None,
        }
    }
}

/// The KMS the arguments name, and the cipher directory's configuration when they name one:
/// `--cipherdir DIR` or a directory argument (a mount point counts as its directory), else
/// `--kms URL`, else `--keystore PATH`, else the default keystore.
fn open(args: &KeyArgs) -> CliResult<(Arc<dyn KeyService>, Option<CipherConfig>)> {
    let named = match (&args.cipherdir, args.command.dir()) {
        (Some(a), Some(b)) if secret::cipherdir_of(a) != secret::cipherdir_of(b) => {
            return Err(CliError::usage(format!(
                "--cipherdir {} and {} name two directories: name one",
                a.display(),
                b.display()
            )));
        }
        (Some(dir), _) | (None, Some(dir)) => Some(dir),
        (None, None) => None,
    };
    if let Some(named) = named {
        if !named.exists() {
            return Err(CliError::usage(format!(
                "{} is neither a key id (a UUID) nor a cipher directory or mount point",
                named.display()
            )));
        }
        let dir = secret::cipherdir_of(named);
        let config =
            secret::with_keystore(CipherConfig::load(&dir)?, args.keystore.keystore.as_deref())?;
        let pass = args.keystore.passphrase_file.as_deref();
        let kms = secret::open_kms_named(&dir, &config, pass, args.kms.as_deref())?;
        return Ok((kms, Some(config)));
    }
    if let Some(url) = &args.kms {
        if args.keystore.keystore.is_some() {
            return Err(CliError::usage(
                "--keystore and --kms exclude each other: name one KMS",
            ));
        }
        let endpoints = secret::endpoints_of(url)?;
        return Ok((Arc::new(secret::open_remote(endpoints)?), None));
    }
    let path = secret::keystore_path(&args.keystore);
    if args.keystore.keystore.is_none() && !path.exists() {
        return Err(no_default_keystore(&path));
    }
    let kms = secret::open_embedded(&path, args.keystore.passphrase_file.as_deref())?;
    Ok((Arc::new(kms), None))
}

/// The error for a missing default keystore: where else the keys may be (the live mounts'
/// directories first), not advice to make a new one.
fn no_default_keystore(path: &std::path::Path) -> CliError {
    let mounted: Vec<String> = super::mounts::mounts()
        .into_iter()
        .filter(|m| m.cipherdir().is_some())
        .map(|m| m.mountpoint.display().to_string())
        .collect();
    let hint = if mounted.is_empty() {
        "; name a cipher directory (`kmsfs key list DIR`) or a keystore (--keystore PATH), or create one with `kmsfs init`".to_string()
    } else {
        format!(
            "; for the keys of a mounted directory, name it or its mount point (`kmsfs key list DIR`; mounted now: {})",
            mounted.join(", ")
        )
    };
    CliError::with(
        super::exit::Exit::Keystore,
        format!(
            "there is no keystore at {} (the default){hint}",
            path.display()
        ),
    )
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("BUG: wire types serialize")
    );
}

fn print_key(key: &KmsKey) {
    println!("id:            {}", key.id);
    println!("name:          {}", key.name);
    if let Some(d) = &key.description {
        println!("description:   {d}");
    }
    println!(
        "status:        {} since {}",
        key.status.as_str(),
        ts(&key.status_since)
    );
    println!(
        "material:      version {} made {}{}",
        key.material.version,
        ts(&key.material.created_at),
        if key.material.automatic {
            " (automatic)"
        } else {
            ""
        }
    );
    let rotation = &key.rotation;
    if rotation.automatic {
        println!(
            "rotation:      every {} days, next {}; {} of 10 manual rotations used",
            rotation.rotation_period,
            ts(&rotation.next_at),
            rotation.manual_count
        );
    } else {
        println!(
            "rotation:      manual only; {} of 10 manual rotations used",
            rotation.manual_count
        );
    }
    println!(
        "multi-zone:    {} (origin {})",
        key.multi_zone, key.origin_zone
    );
    if let Some(at) = &key.delete_at {
        println!("delete-at:     {}", ts(at));
    }
    println!(
        "revision:      {} at {}",
        key.revision.seq,
        ts(&key.revision.at)
    );
}

fn ts(t: &time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn print_applied(what: &str, id: Uuid, applied: wire::Applied, json: bool) {
    if json {
        print_json(&wire::SuccessResponse { status: applied });
    } else if applied == wire::Applied::AlreadyApplied {
        println!("key {id} was already {what}");
    } else {
        println!("key {id} {what}");
    }
}

/// Runs a `kmsfs key` command.
pub fn run(args: KeyArgs) -> CliResult<ExitCode> {
    super::init_stderr_logging("warn");
    let (kms, config) = open(&args)?;
    let json = args.json;
    // The key a command names: its id, or the directory's key (a directory argument is what
    // `open` loaded the configuration of).
    let id = match (args.command.key_ref(), &config) {
        (Some(KeyRef::Id(id)), _) => *id,
        (Some(KeyRef::Dir(_)), Some(config)) => config.key_id,
        // `create` and `list` name no key.
        (Some(KeyRef::Dir(_)), None) | (None, _) => Uuid::nil(),
    };
    let rotation = |config: wire::RotationConfig| {
        if json {
            print_json(&wire::RotationResponse { rotation: config });
        } else {
            println!(
                "rotation: automatic {}, every {} days, next {}, manual rotations {}",
                if config.automatic { "on" } else { "off" },
                config.rotation_period,
                ts(&config.next_at),
                config.manual_count
            );
        }
    };
    match &args.command {
        KeyCommand::Create {
            name,
            description,
            multi_zone,
        } => {
            let key = kms.create_key(&CreateKeyRequest {
                name: name.clone(),
                description: description.clone(),
                usage: None,
                multi_zone: *multi_zone,
            })?;
            if json {
                print_json(&key)
            } else {
                print_key(&key)
            }
        }
        KeyCommand::List { .. } => {
            let keys = kms.list_keys()?;
            if json {
                print_json(&wire::KeyList { kms_keys: keys });
            } else {
                println!(
                    "{:<36}  {:<16}  {:<8}  {:>7}  NAME",
                    "ID", "STATUS", "VERSION", "ROTATES"
                );
                for key in keys {
                    let rotates = if key.rotation.automatic {
                        format!("{}d", key.rotation.rotation_period)
                    } else {
                        "off".into()
                    };
                    println!(
                        "{:<36}  {:<16}  {:>8}  {:>7}  {}",
                        key.id,
                        key.status.as_str(),
                        key.material.version,
                        rotates,
                        key.name
                    );
                }
            }
        }
        KeyCommand::Show { .. } => {
            let key = kms.get_key(id)?;
            if json {
                print_json(&key)
            } else {
                print_key(&key)
            }
        }
        KeyCommand::Rotate { .. } => rotation(kms.rotate_key(id)?),
        KeyCommand::Enable { .. } => print_applied("enabled", id, kms.enable_key(id)?, json),
        KeyCommand::Disable { .. } => print_applied("disabled", id, kms.disable_key(id)?, json),
        KeyCommand::EnableRotation { period, .. } => rotation(kms.enable_rotation(id, *period)?),
        KeyCommand::DisableRotation { .. } => rotation(kms.disable_rotation(id)?),
        KeyCommand::ScheduleDeletion { days, .. } => {
            let at = kms.schedule_deletion(id, *days)?;
            if json {
                print_json(&wire::ScheduleDeletionResponse { delete_at: at });
            } else {
                println!("key {id} will be deleted at {}", ts(&at));
            }
        }
        KeyCommand::CancelDeletion { .. } => {
            print_applied("restored (disabled)", id, kms.cancel_deletion(id)?, json)
        }
        KeyCommand::Rotations { .. } => {
            let rotations = kms.list_rotations(id)?;
            if json {
                print_json(&wire::RotationList { rotations });
            } else {
                for r in rotations {
                    println!(
                        "version {:>3}  {}  {}",
                        r.version,
                        ts(&r.rotated_at),
                        if r.automatic { "automatic" } else { "manual" }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
