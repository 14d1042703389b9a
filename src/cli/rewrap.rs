//! `kmsfs rewrap`: re-wrap every file's DEK under the newest material of its key (or another
//! key), rewriting only 512-byte headers. Safe on a mounted directory, safe to kill and rerun.

use super::exit::Exit;
use super::{CliError, CliResult, mounts, secret};
use crate::config::CipherConfig;
use crate::fs::keys::KeyError;
use crate::fs::{RewrapOutcome, RewrapTarget, cipher_files, rewrap_file};
use crate::kms::KeyService;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use uuid::Uuid;

/// Arguments of `kmsfs rewrap`.
#[derive(Args)]
pub struct RewrapArgs {
    /// The cipher directory, mounted or not (or its mount point).
    cipherdir: PathBuf,
    /// Wrap every DEK under this key instead of each file's own key.
    #[arg(long, value_name = "ID")]
    to_key: Option<Uuid>,
    /// Files re-wrapped in parallel.
    #[arg(long, default_value_t = 4, value_name = "N")]
    jobs: usize,
    /// Only count what would be re-wrapped.
    #[arg(long)]
    dry_run: bool,
    /// Read the passphrase from FILE (else $KMSFS_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The remote KMS endpoint (or endpoints, URL1,URL2,...), when it is not (yet) the one
    /// recorded for this directory.
    #[arg(long, value_name = "URL[,URL...]")]
    kms: Option<String>,
}

#[derive(Default)]
struct Tally {
    empty: AtomicU64,
    current: AtomicU64,
    rewrapped: AtomicU64,
    content_bytes: AtomicU64,
    failed: Mutex<Vec<(PathBuf, String)>>,
}

/// Runs `kmsfs rewrap`.
pub fn run(mut args: RewrapArgs) -> CliResult<ExitCode> {
    args.cipherdir = secret::cipherdir_of(&args.cipherdir);
    super::init_stderr_logging("warn");
    let config = CipherConfig::load(&args.cipherdir)?;
    let kms = secret::open_kms_named(
        &args.cipherdir,
        &config,
        args.passphrase_file.as_deref(),
        args.kms.as_deref(),
    )?;
    let fs_id = config.fs_id().map_err(CliError::config)?;
    if let Some(key) = args.to_key {
        kms.get_key(key)?;
    }
    let files =
        cipher_files(&args.cipherdir).map_err(|e| CliError::io("read", &args.cipherdir, &e))?;
    let started = Instant::now();
    let newest = NewestVersions::new(kms.as_ref());
    let newest_version = |key: Uuid| newest.get(key);
    let target = RewrapTarget {
        kms: kms.as_ref(),
        fs_id,
        to_key: args.to_key,
        newest_version: &newest_version,
        dry_run: args.dry_run,
    };
    let progress = progress_bar(files.len() as u64);
    let tally = Tally::default();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                while let Some(path) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let size = std::fs::metadata(path).map_or(0, |m| m.len());
                    match rewrap_file(path, &target) {
                        Ok(outcome) => {
                            let counter = match outcome {
                                RewrapOutcome::Empty => &tally.empty,
                                RewrapOutcome::Current => &tally.current,
                                RewrapOutcome::Rewrapped | RewrapOutcome::WouldRewrap => {
                                    &tally.rewrapped
                                }
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            tally
                                .content_bytes
                                .fetch_add(size.saturating_sub(512), Ordering::Relaxed);
                        }
                        Err(e) => tally
                            .failed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((path.clone(), e.to_string())),
                    }
                    if let Some(bar) = &progress {
                        bar.inc(1);
                    }
                }
            });
        }
    });
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let failed = tally
        .failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if args.dry_run {
        if let Some(to_key) = args.to_key.filter(|&to| to != config.key_id) {
            println!("rewrap: kmsfs.conf's key-id would move to {to_key}");
        }
    } else {
        update_conf(
            &args.cipherdir,
            &config,
            kms.as_ref(),
            args.to_key,
            failed.len(),
        )?;
    }
    for (path, reason) in &failed {
        eprintln!("{}: {reason}", path.display());
    }
    println!(
        "rewrap: {} files seen, {} empty, {} already current, {} {}, {} failed; {} bytes of content left untouched ({:.1} s)",
        files.len(),
        tally.empty.into_inner(),
        tally.current.into_inner(),
        tally.rewrapped.into_inner(),
        if args.dry_run {
            "to rewrap"
        } else {
            "rewrapped"
        },
        failed.len(),
        tally.content_bytes.into_inner(),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Problems.code())
    })
}

/// After the headers: re-wraps the name key (directories with encrypted names) under the
/// newest material of `to_key` or its own key and, with `to_key` and no header left behind
/// (`failed` is 0), moves `key-id` (the key new files get) to `to_key`; then writes
/// `kmsfs.conf` once, atomically. A key-id left in place is said, with why.
fn update_conf(
    cipherdir: &Path,
    config: &CipherConfig,
    kms: &dyn KeyService,
    to_key: Option<Uuid>,
    failed: usize,
) -> CliResult {
    let mut updated = config.clone();
    let fs_key = super::fs_key::rewrap(kms, config, to_key)?;
    if let Some(fs_key) = &fs_key {
        updated.fs_key = Some(fs_key.clone());
    }
    let moves_to = to_key.filter(|&to| to != config.key_id);
    if let Some(to) = moves_to
        && failed == 0
    {
        updated.key_id = to;
    }
    if updated != *config {
        updated.save(cipherdir)?;
    }
    if let Some(fs_key) = fs_key {
        println!(
            "rewrap: the name key is re-wrapped under key {}",
            fs_key.key_id
        );
    }
    let Some(to) = moves_to else {
        return Ok(());
    };
    if failed > 0 {
        println!(
            "rewrap: kmsfs.conf's key-id stays {}: not every file is under {to} yet ({failed} failed); run rewrap --to-key {to} again",
            config.key_id
        );
        return Ok(());
    }
    println!(
        "rewrap: kmsfs.conf's key-id moved from {} to {to}: new files get key {to}",
        config.key_id
    );
    let canonical = std::fs::canonicalize(cipherdir).unwrap_or_else(|_| cipherdir.to_path_buf());
    if let Some(mountpoint) = super::fsck::kmsfs_mount_of(&mounts::mounts(), &canonical) {
        println!(
            "rewrap: the mount at {mountpoint} still gives new files key {}: remount it, then run rewrap --to-key {to} again",
            config.key_id
        );
    }
    Ok(())
}

pub(super) fn progress_bar(total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} files, {per_sec}, {eta} left")
    {
        bar.set_style(style);
    }
    Some(bar)
}

/// The newest material version of each key, asked of the KMS once per key.
struct NewestVersions<'a> {
    kms: &'a dyn KeyService,
    known: Mutex<HashMap<Uuid, u32>>,
}

impl<'a> NewestVersions<'a> {
    fn new(kms: &'a dyn KeyService) -> Self {
        NewestVersions {
            kms,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: Uuid) -> Result<u32, KeyError> {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&version) = known.get(&key) {
            return Ok(version);
        }
        let version = self.kms.get_key(key)?.material.version;
        known.insert(key, version);
        Ok(version)
    }
}
