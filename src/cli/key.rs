//! `kmsfs key ...`: KMS key management against the embedded keystore, a cipher directory's
//! KMS (`--cipherdir`), or a remote KMS (`--kms URL`).

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
    /// Use the KMS configured for this cipher directory.
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
    /// List keys.
    List,
    /// Show one key.
    Show {
        /// Key id.
        id: Uuid,
    },
    /// Rotate a key now (at most 10 manual rotations per key).
    Rotate {
        /// Key id.
        id: Uuid,
    },
    /// Enable a key.
    Enable {
        /// Key id.
        id: Uuid,
    },
    /// Disable a key (files it wraps stop opening once cached DEKs expire).
    Disable {
        /// Key id.
        id: Uuid,
    },
    /// Turn automatic rotation on.
    EnableRotation {
        /// Key id.
        id: Uuid,
        /// Days between rotations (90 to 2560).
        #[arg(long)]
        period: Option<i64>,
    },
    /// Turn automatic rotation off.
    DisableRotation {
        /// Key id.
        id: Uuid,
    },
    /// Schedule the key's destruction.
    ScheduleDeletion {
        /// Key id.
        id: Uuid,
        /// Days until deletion (7 to 30).
        #[arg(long)]
        days: Option<i64>,
    },
    /// Cancel a scheduled deletion (the key becomes disabled).
    CancelDeletion {
        /// Key id.
        id: Uuid,
    },
    /// List a key's rotations.
    Rotations {
        /// Key id.
        id: Uuid,
    },
}

fn open(args: &KeyArgs) -> CliResult<Arc<dyn KeyService>> {
    if let Some(dir) = &args.cipherdir {
        let config = CipherConfig::load(dir)?;
        let pass = args.keystore.passphrase_file.as_deref();
        return secret::open_kms_named(dir, &config, pass, args.kms.as_deref());
    }
    if let Some(url) = &args.kms {
        if args.keystore.keystore.is_some() {
            return Err(CliError::usage(
                "--keystore and --kms exclude each other: name one KMS",
            ));
        }
        let endpoints = secret::endpoints_of(url)?;
        return Ok(Arc::new(secret::open_remote(endpoints)?));
    }
    let path = secret::keystore_path(&args.keystore);
    Ok(Arc::new(secret::open_embedded(
        &path,
        args.keystore.passphrase_file.as_deref(),
    )?))
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
    let kms = open(&args)?;
    let json = args.json;
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
        KeyCommand::List => {
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
        KeyCommand::Show { id } => {
            let key = kms.get_key(*id)?;
            if json {
                print_json(&key)
            } else {
                print_key(&key)
            }
        }
        KeyCommand::Rotate { id } => rotation(kms.rotate_key(*id)?),
        KeyCommand::Enable { id } => print_applied("enabled", *id, kms.enable_key(*id)?, json),
        KeyCommand::Disable { id } => print_applied("disabled", *id, kms.disable_key(*id)?, json),
        KeyCommand::EnableRotation { id, period } => rotation(kms.enable_rotation(*id, *period)?),
        KeyCommand::DisableRotation { id } => rotation(kms.disable_rotation(*id)?),
        KeyCommand::ScheduleDeletion { id, days } => {
            let at = kms.schedule_deletion(*id, *days)?;
            if json {
                print_json(&wire::ScheduleDeletionResponse { delete_at: at });
            } else {
                println!("key {id} will be deleted at {}", ts(&at));
            }
        }
        KeyCommand::CancelDeletion { id } => {
            print_applied("restored (disabled)", *id, kms.cancel_deletion(*id)?, json)
        }
        KeyCommand::Rotations { id } => {
            let rotations = kms.list_rotations(*id)?;
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
