//! `kmsfs rewrap`: re-wrap every file's DEK under the newest material of its key (or another
//! key), rewriting only 512-byte headers. Safe on a mounted directory, safe to kill and rerun.

use super::secret;
use super::{CliError, CliResult};
use crate::config::CipherConfig;
use crate::fs::keys::KeyError;
use crate::fs::{RewrapOutcome, RewrapTarget, cipher_files, rewrap_file};
use crate::kms::KeyService;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use uuid::Uuid;

/// Arguments of `kmsfs rewrap`.
#[derive(Args)]
pub struct RewrapArgs {
    /// The cipher directory (mounted or not).
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
    /// The remote KMS endpoint, when it is not (yet) the one recorded for this directory.
    #[arg(long, value_name = "URL")]
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
pub fn run(args: RewrapArgs) -> CliResult<ExitCode> {
    super::init_stderr_logging("warn");
    let config = CipherConfig::load(&args.cipherdir)?;
    let kms = secret::open_kms_named(
        &args.cipherdir,
        &config,
        args.passphrase_file.as_deref(),
        args.kms.as_deref(),
    )?;
    let fs_id = config.fs_id().map_err(CliError::new)?;
    if let Some(key) = args.to_key {
        kms.get_key(key)?;
    }
    let files = cipher_files(&args.cipherdir)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", args.cipherdir.display())))?;
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
    // The name key too (directories with encrypted names): re-wrapped under the newest
    // material, in place in kmsfs.conf.
    if !args.dry_run
        && let Some(fs_key) = super::fs_key::rewrap(kms.as_ref(), &config, args.to_key)?
    {
        let key_id = fs_key.key_id;
        let mut config = config.clone();
        config.fs_key = Some(fs_key);
        config.save(&args.cipherdir)?;
        println!("rewrap: the name key is re-wrapped under key {key_id}");
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
        ExitCode::from(1)
    })
}

fn progress_bar(total: u64) -> Option<ProgressBar> {
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
