//! `kmsfs mount` and `kmsfs unmount`: start-up checks in the foreground, then the daemon.
//!
//! Every start-up error (no cipher directory, wrong passphrase, missing keystore or key, mount
//! point missing or busy) is found before anything is mounted. Without `--foreground` the
//! process forks once checks pass; the parent exits 0 only when the child reports the mount
//! live, and prints the child's error otherwise. A remote KMS is contacted only after the
//! known-endpoint check, and its connections (and I/O thread) are released before the fork:
//! the daemon reconnects on its first request.

use super::daemon::{
    announce_ready, daemon, daemon_answer, default_log_path, open_log, pid_file_path,
    report_failure,
};
use super::exit::Exit;
use super::secret;
use super::{CliError, CliResult};
use crate::cache::DekCache;
use crate::config::CipherConfig;
use crate::format::NameCipher;
use crate::fs::fuse::{FuseAdapter, Negotiation};
use crate::fs::keys::KeyPath;
use crate::fs::{CryptFs, MIN_SEAL_BUDGET, SealBudget};
use crate::fuse::Access;
use crate::fuse::ring::{self, Rings};
use crate::kms::{KeyService, wire::KeyStatus};
use crate::sys;
use clap::Args;
use fuser::{Config, MountOption, SessionACL};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `kmsfs mount`.
#[derive(Args)]
pub struct MountArgs {
    /// The cipher directory.
    cipherdir: PathBuf,
    /// Where the plaintext view appears.
    mountpoint: PathBuf,
    /// Read the passphrase from FILE (else $KMSFS_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The embedded keystore, when it is not where kmsfs.conf says (a moved or copied directory).
    #[arg(long, value_name = "PATH")]
    keystore: Option<PathBuf>,
    /// Stay in the foreground, logging to stderr; Ctrl-C unmounts.
    #[arg(long, short = 'f')]
    foreground: bool,
    /// FUSE mount options, comma-separated (allow_other, allow_root, ro, default_permissions,
    /// noexec, nosuid, nodev, noatime, ...).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Most unwrapped DEKs kept in memory.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    cache_entries: usize,
    /// Seconds an unwrapped DEK stays cached (a disabled key stops opening files after this).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    cache_ttl: u64,
    /// Request threads.
    #[arg(long, default_value_t = 4, value_name = "N")]
    threads: usize,
    /// Serve requests through FUSE over io_uring (Linux 6.14+, enabled by root in
    /// /sys/module/fuse/parameters/enable_uring); falls back to /dev/fuse with a warning.
    #[arg(long)]
    io_uring: bool,
    /// Share of the system's dirty-page allowance the mount may use, in percent (needs root;
    /// the kernel's default for FUSE is 1, which throttles small random writes).
    #[arg(long, default_value_t = 20, value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    dirty_percent: u8,
    /// The daemon's log file (default: $XDG_STATE_HOME/kmsfs/NAME-FSID.log).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Trust this remote KMS endpoint (or these, URL1,URL2,...) for the directory: it must be
    /// what kmsfs.conf names, and becomes the recorded one (needed when the record is missing
    /// or differs).
    #[arg(long, value_name = "URL[,URL...]")]
    kms: Option<String>,
    /// Blocks one content key may seal before its file is re-keyed (for tests that want to see
    /// re-keys; at least 32768, at most the default 2^31).
    #[arg(long, value_name = "BLOCKS", hide = true)]
    seal_budget: Option<u64>,
    #[command(flatten)]
    pub(super) observe: super::observe::ObserveArgs,
}

/// Mounts as `args` say.
pub fn run(args: MountArgs) -> CliResult<ExitCode> {
    // The daemon sets up its own logging after the fork; in the foreground it goes to stderr.
    if args.foreground {
        let mount = std::fs::canonicalize(&args.mountpoint)
            .unwrap_or_else(|_| args.mountpoint.clone())
            .display()
            .to_string();
        super::logging::init_stderr(args.observe.log_format, "info", Some(mount));
    }
    let config = secret::with_keystore(
        CipherConfig::load(&args.cipherdir)?,
        args.keystore.as_deref(),
    )?;
    let cipherdir = std::fs::canonicalize(&args.cipherdir)
        .map_err(|e| CliError::io("resolve", &args.cipherdir, &e))?;
    let fuse_config = fuse_config(&args, &cipherdir)?;
    let mountpoint = check_mountpoint(&args.mountpoint, allows_nonempty(&args.options))?;
    // Held for as long as this process (after the fork: the daemon) lives.
    let _lock = lock_cipherdir(&cipherdir, &args.cipherdir)?;
    let fs_id = config.fs_id().map_err(CliError::config)?;
    let kms = secret::open_kms_named(
        &args.cipherdir,
        &config,
        args.passphrase_file.as_deref(),
        args.kms.as_deref(),
    )?;
    let key = kms.get_key(config.key_id)?;
    let names = super::fs_key::name_cipher(kms.as_ref(), &config)?;
    // A remote client runs an I/O thread; fork only copies the calling thread.
    kms.release_connections();
    if key.status != KeyStatus::Enabled {
        return Err(CliError::with(
            Exit::KmsRefused,
            format!(
                "the directory's key {} is {}; new files could not be written",
                key.id,
                key.status.as_str()
            ),
        ));
    }
    let tuning = Tuning::of(&args, &config)?;
    let log_path = match &args.log {
        Some(path) => path.clone(),
        None => default_log_path(&cipherdir, &config.fs_id),
    };
    if args.foreground {
        let keys = KeyPath::new(kms, cache(&args), fs_id, config.key_id);
        serve(
            &cipherdir,
            &mountpoint,
            keys,
            names,
            &fuse_config,
            tuning,
            None,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let log = open_log(&log_path)?;
    let (mut ready_rx, ready_tx) =
        std::io::pipe().map_err(|e| CliError::new(format!("cannot create a pipe: {e}")))?;
    match sys::fork().map_err(|e| CliError::new(format!("cannot start the daemon: {e}")))? {
        sys::Forked::Parent(pid) => {
            drop(ready_tx);
            let mut answer = String::new();
            let _ = ready_rx.read_to_string(&mut answer);
            daemon_answer(&answer, &log_path)?;
            println!(
                "Mounted {} at {} (daemon pid {pid}, log {}). Unmount with: kmsfs unmount {}",
                cipherdir.display(),
                mountpoint.display(),
                log_path.display(),
                mountpoint.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        sys::Forked::Child => {
            drop(ready_rx);
            let code = daemon(
                &cipherdir,
                &mountpoint,
                kms,
                &args,
                fs_id,
                config.key_id,
                names,
                &fuse_config,
                tuning,
                log,
                ready_tx,
            );
            std::process::exit(code);
        }
    }
}

pub(super) fn cache(args: &MountArgs) -> DekCache {
    DekCache::new(args.cache_entries, Duration::from_secs(args.cache_ttl))
}

/// What is set on a mount once it is live.
pub(super) struct Tuning {
    /// Share of the dirty-page allowance, in percent.
    dirty_percent: u8,
    /// Access-time attributes to set and clear (see [`access_time_attr`]).
    access_time: Option<(u64, u64)>,
    /// A lowered seal budget per content key.
    seal_budget: Option<SealBudget>,
    /// The control socket, metrics and log format.
    observe: super::observe::Observe,
    /// Serve through FUSE over io_uring when the kernel allows it.
    io_uring: bool,
}

impl Tuning {
    fn of(args: &MountArgs, config: &CipherConfig) -> CliResult<Self> {
        let seal_budget = match args.seal_budget {
            None => None,
            Some(blocks) => Some(SealBudget::lowered(blocks).ok_or_else(|| {
                CliError::usage(format!(
                    "--seal-budget {blocks} is outside {MIN_SEAL_BUDGET}..={}",
                    1u64 << 31
                ))
            })?),
        };
        Ok(Tuning {
            dirty_percent: args.dirty_percent,
            access_time: access_time_attr(&args.options),
            seal_budget,
            observe: super::observe::Observe::new(&args.observe, config),
            io_uring: args.io_uring,
        })
    }
}

/// Mounts, sets `tuning` on the mount, and serves until unmounted.
/// `ready` hears "ready" once the mount is live, or the error (see [`report_failure`]).
pub(super) fn serve(
    cipherdir: &Path,
    mountpoint: &Path,
    keys: KeyPath,
    names: Option<NameCipher>,
    fuse_config: &Config,
    tuning: Tuning,
    mut ready: Option<std::io::PipeWriter>,
) -> CliResult {
    if let Err(e) = sys::disable_core_dumps() {
        tracing::warn!("cannot turn core dumps off: {e}");
    }
    match sys::raise_open_file_limit() {
        Ok(limit) => tracing::info!(
            limit,
            "open-file limit: past half of it, descriptors of idle inodes are closed and reopened by file handle when needed"
        ),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let signals = match sys::block_termination_signals() {
        Ok(set) => set,
        Err(e) => {
            let error = CliError::new(format!("cannot block signals: {e}"));
            return Err(report_failure(&mut ready, error));
        }
    };
    let kms = keys.kms();
    // Data keys made ahead pay only where each costs a round trip; the embedded KMS makes one
    // in microseconds, and its new files then take a rotated key's new version at once.
    let keys = if kms.is_remote() {
        keys.with_pool(DEK_POOL_SIZE, DEK_POOL_THREADS)
    } else {
        keys
    };
    let fs = match CryptFs::new(cipherdir, keys) {
        Ok(fs) => {
            let fs = match tuning.seal_budget {
                Some(budget) => fs.with_seal_budget(budget),
                None => fs,
            };
            Arc::new(match names {
                Some(cipher) => fs.with_encrypted_names(cipher),
                None => fs,
            })
        }
        Err(e) => {
            let error = CliError::with(
                Exit::Io,
                format!("cannot open {}: {e}", cipherdir.display()),
            );
            return Err(report_failure(&mut ready, error));
        }
    };
    let started = Instant::now();
    // The rings are made before INIT: FUSE over io_uring is asked only when they exist.
    let threads = fuse_config.n_threads.unwrap_or(1);
    let rings = tuning.io_uring.then(|| Rings::prepare(threads));
    let offered = Arc::new(AtomicBool::new(false));
    let negotiation = Negotiation {
        permissions_checked: fuse_config
            .mount_options
            .contains(&MountOption::DefaultPermissions),
        io_uring: matches!(rings, Some(Ok(_))).then(|| offered.clone()),
    };
    spawn_housekeeping(kms);
    // fuser mounts and runs the INIT handshake; the requests after it are served by our own
    // transport (`crate::fuse`).
    let session = match fuser::Session::new(negotiation, mountpoint, fuse_config) {
        Ok(session) => session,
        Err(e) => {
            // fuser says InvalidInput for options that do not go together (auto_unmount
            // without allow_other or allow_root, ro with rw): the command line is wrong.
            let exit = match e.kind() {
                std::io::ErrorKind::InvalidInput => Exit::Usage,
                _ => Exit::Io,
            };
            let error = CliError::with(
                exit,
                format!("cannot mount at {}: {e}", mountpoint.display()),
            );
            return Err(report_failure(&mut ready, error));
        }
    };
    let pid_file = pid_file_path(mountpoint);
    let _ = std::fs::create_dir_all(pid_file.parent().unwrap_or(Path::new("/")));
    let _ = std::fs::write(&pid_file, std::process::id().to_string());
    if tuning.dirty_percent != 1 {
        set_dirty_share(mountpoint, tuning.dirty_percent);
    }
    if let Some((set, clear)) = tuning.access_time
        && let Err(e) = sys::mount_setattr(mountpoint, set, clear)
    {
        let error = CliError::with(
            Exit::Io,
            format!("cannot apply the access-time options to the mount: {e}"),
        );
        let _ = sys::umount_lazy(mountpoint);
        return Err(report_failure(&mut ready, error));
    }
    let adapter = Arc::new(FuseAdapter::new(fs.clone()));
    let observer = match tuning
        .observe
        .start(&fs, adapter.requests(), cipherdir, mountpoint)
    {
        Ok(observer) => observer,
        Err(sentence) => {
            let _ = sys::umount_lazy(mountpoint);
            return Err(report_failure(
                &mut ready,
                CliError::with(Exit::Io, sentence),
            ));
        }
    };
    tracing::info!(cipherdir = %cipherdir.display(), mountpoint = %mountpoint.display(), "mounted");
    announce_ready(ready, cipherdir, mountpoint);
    let unmount_at = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        let sig = sys::wait_for_signal(&signals);
        tracing::info!(signal = sig, "signal received: unmounting");
        sys::systemd::notify_stopping();
        if let Err(e) = sys::umount_lazy(&unmount_at) {
            tracing::warn!("unmount failed: {e}; trying fusermount3");
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&unmount_at)
                .status();
        }
    });
    let access = match fuse_config.acl {
        SessionACL::RootAndOwner => Access::OwnerAndRoot {
            owner: sys::effective_uid(),
        },
        SessionACL::All | SessionACL::Owner => Access::All,
    };
    let rings = rings.and_then(|r| ring::choose(r, offered.load(Ordering::Relaxed)));
    let device = mount_device(mountpoint);
    let result = crate::fuse::serve(session.as_fd(), threads, adapter, access, rings);
    end_session(session, mountpoint, device.as_deref());
    drop(observer);
    let stats = fs.keys().cache().stats();
    tracing::info!(
        hits = stats.hits,
        misses = stats.misses,
        evictions = stats.evictions,
        expirations = stats.expirations,
        uptime_s = started.elapsed().as_secs(),
        "unmounted; DEK cache counters"
    );
    fs.keys().cache().clear();
    let _ = std::fs::remove_file(&pid_file);
    match result {
        Ok(()) => {
            tracing::info!("session ended; daemon exits");
            Ok(())
        }
        Err(e) => Err(CliError::new(format!(
            "the FUSE session ended with an error: {e}"
        ))),
    }
}

/// Ends the FUSE session once serving stopped. The usual end is an unmount (`kmsfs unmount`,
/// umount(8), the signal thread): the kernel has taken the mount away already, and fuser's
/// own unmount on drop would try again, fail with EINVAL and log a warning, or, if another
/// filesystem was mounted there meanwhile, unmount that one. So the session is dropped (and
/// unmounts) only while our mount, `device` at `mountpoint`, is still in the mount table;
/// otherwise it is forgotten: the daemon is about to exit, which closes the descriptor.
fn end_session<F: fuser::Filesystem>(
    session: fuser::Session<F>,
    mountpoint: &Path,
    device: Option<&str>,
) {
    let still_mounted = device.is_some_and(|device| {
        super::mounts::mounts()
            .iter()
            .any(|m| m.device == device && m.mountpoint == mountpoint)
    });
    if still_mounted {
        drop(session);
    } else {
        std::mem::forget(session);
    }
}

/// DEKs the daemon makes ahead for new files with a remote KMS (see `fs::keys`): enough for a
/// burst of creates while the next ones are made.
const DEK_POOL_SIZE: usize = 64;

/// Threads making them: a remote KMS's round trips overlap.
const DEK_POOL_THREADS: usize = 4;

/// How often the daemon runs the KMS backend's housekeeping (automatic rotations).
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(3600);

/// Runs the backend's housekeeping now and then every hour, for as long as the daemon lives.
fn spawn_housekeeping(kms: Arc<dyn KeyService>) {
    std::thread::spawn(move || {
        loop {
            match kms.housekeeping() {
                Ok(Some(line)) => tracing::info!("{line}"),
                Ok(None) => {}
                Err(e) => tracing::warn!("KMS housekeeping failed: {e}"),
            }
            std::thread::sleep(HOUSEKEEPING_PERIOD);
        }
    });
}

/// True when the mount options say `nonempty`: mount over a directory that has entries.
fn allows_nonempty(options: &[String]) -> bool {
    options
        .iter()
        .flat_map(|o| o.split(','))
        .any(|o| o == "nonempty")
}

/// Takes the cipher directory's mount lock: an exclusive `flock` of the directory itself, held
/// by the daemon for as long as it serves (the kernel drops it when the daemon exits, also when
/// it is killed). Two daemons over one directory, each with its own caches, could corrupt it.
///
/// A daemon whose mount is already gone may hold the lock a moment longer: its threads end
/// after its main thread (which `kmsfs unmount` waits for) and after the mount. So while no
/// mount of the directory is in the mount table, the lock is waited for, up to
/// [`LOCK_WAIT`]; with one, the refusal is immediate.
fn lock_cipherdir(cipherdir: &Path, named: &Path) -> CliResult<std::fs::File> {
    let dir = std::fs::File::open(cipherdir).map_err(|e| CliError::io("open", named, &e))?;
    let started = Instant::now();
    loop {
        match dir.try_lock() {
            Ok(()) => return Ok(dir),
            Err(std::fs::TryLockError::Error(e)) => return Err(CliError::io("lock", named, &e)),
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        let mounted = super::mounts::mounts()
            .into_iter()
            .find(|m| m.cipherdir().as_deref() == Some(cipherdir));
        if let Some(mount) = mounted {
            return Err(CliError::new(format!(
                "{} is already mounted at {}: one cipher directory is served by one daemon at a time",
                named.display(),
                mount.mountpoint.display()
            )));
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(CliError::new(format!(
                "{} is still served by a daemon whose mount is gone (detached with `umount -l` while files were open?): one cipher directory is served by one daemon at a time",
                named.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a mount waits for the lock of a daemon that is exiting (see [`lock_cipherdir`]).
const LOCK_WAIT: Duration = Duration::from_secs(10);

fn check_mountpoint(path: &Path, nonempty: bool) -> CliResult<PathBuf> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        CliError::new(format!(
            "the mount point {} cannot be used: {e}",
            path.display()
        ))
    })?;
    if !canonical.is_dir() {
        return Err(CliError::new(format!(
            "the mount point {} is not a directory",
            path.display()
        )));
    }
    if is_mounted(&canonical) {
        return Err(CliError::new(format!(
            "the mount point {} is busy: something is already mounted there",
            path.display()
        )));
    }
    if !nonempty {
        let mut entries =
            std::fs::read_dir(&canonical).map_err(|e| CliError::io("read", path, &e))?;
        if entries.next().is_some() {
            return Err(CliError::new(format!(
                "invalid mount point {}: the directory is not empty, and the mount would hide its files; empty it, or mount with -o nonempty",
                path.display()
            )));
        }
    }
    Ok(canonical)
}

/// True when a filesystem is mounted at `path` (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    mount_device(path).is_some()
}

/// The `major:minor` device of the filesystem mounted at `path` (per /proc/self/mountinfo;
/// the last one mounted there).
fn mount_device(path: &Path) -> Option<String> {
    super::mounts::mounts()
        .into_iter()
        .filter(|m| m.mountpoint == path)
        .map(|m| m.device)
        .next_back()
}

/// Lets the mount hold `percent` of the system's dirty-page allowance (the kernel gives a FUSE
/// mount 1% and throttles writers past it). Needs root; best effort.
fn set_dirty_share(mountpoint: &Path, percent: u8) {
    let Some(dev) = mount_device(mountpoint) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/max_ratio");
    match std::fs::write(&knob, percent.to_string()) {
        Ok(()) => tracing::info!(percent, "dirty-page share of the mount set ({knob})"),
        Err(e) => tracing::info!("dirty-page share left at the kernel's 1% ({knob}: {e})"),
    }
}

fn fuse_config(args: &MountArgs, cipherdir: &Path) -> CliResult<Config> {
    let mut config = Config::default();
    config.n_threads = Some(args.threads.max(1));
    config.clone_fd = true;
    config.mount_options = vec![
        MountOption::FSName(cipherdir.display().to_string()),
        // A kernel option, not `MountOption::Subtype`, which fuser passes only to fusermount3:
        // the mount table then says `fuse.kmsfs`.
        MountOption::CUSTOM("subtype=kmsfs".into()),
    ];
    let mut permissions_checked = false;
    for option in args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let parsed = match option {
            "allow_other" => {
                config.acl = SessionACL::All;
                continue;
            }
            "allow_root" => {
                config.acl = SessionACL::RootAndOwner;
                continue;
            }
            "default_permissions" => {
                permissions_checked = true;
                MountOption::DefaultPermissions
            }
            "ro" => MountOption::RO,
            "rw" => MountOption::RW,
            "dev" => MountOption::Dev,
            "nodev" => MountOption::NoDev,
            "suid" => MountOption::Suid,
            "nosuid" => MountOption::NoSuid,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            // Applied to the mount once it is live (see `access_time_attr`).
            "relatime" | "strictatime" | "nodiratime" | "diratime" => continue,
            // The kernel keeps a FUSE mount's times in memory and sends them with the next
            // change anyway (writeback cache): nothing to map.
            "lazytime" | "nolazytime" => continue,
            // Checked before mounting (see `check_mountpoint`): the kernel does not mind.
            "nonempty" => continue,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            "dirsync" => MountOption::DirSync,
            "auto_unmount" => MountOption::AutoUnmount,
            other => {
                return Err(CliError::usage(format!(
                    "unknown mount option {other:?} (known: allow_other, allow_root, default_permissions, ro, rw, dev, nodev, suid, nosuid, exec, noexec, atime, noatime, relatime, strictatime, nodiratime, diratime, lazytime, nolazytime, nonempty, sync, async, dirsync, auto_unmount)"
                )));
            }
        };
        config.mount_options.push(parsed);
    }
    // Other users reach files only under the kernel's permission checks: the daemon runs with
    // its own rights, which are not theirs.
    if config.acl != SessionACL::Owner && !permissions_checked {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    Ok(config)
}

/// `MOUNT_ATTR_*` values of mount_setattr(2).
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// The access-time attributes the options ask for, as (set, clear) for mount_setattr(2): the
/// mount(2) call fuser makes knows only `noatime`. The last of `relatime`/`strictatime`/
/// `noatime`/`atime` wins, as with mount(8); `None` when none of them needs applying.
fn access_time_attr(options: &[String]) -> Option<(u64, u64)> {
    let (mut set, mut clear) = (0, 0);
    let mut any = false;
    for option in options.iter().flat_map(|o| o.split(',')) {
        match option {
            "relatime" | "atime" => {
                (set, clear) = (set & !MOUNT_ATTR_ATIME_MASK, clear | MOUNT_ATTR_ATIME_MASK);
            }
            "strictatime" => {
                set = (set & !MOUNT_ATTR_ATIME_MASK) | MOUNT_ATTR_STRICTATIME;
                clear |= MOUNT_ATTR_ATIME_MASK;
            }
            "noatime" => {
                set = (set & !MOUNT_ATTR_ATIME_MASK) | MOUNT_ATTR_NOATIME;
                clear |= MOUNT_ATTR_ATIME_MASK;
            }
            "nodiratime" => set |= MOUNT_ATTR_NODIRATIME,
            "diratime" => {
                set &= !MOUNT_ATTR_NODIRATIME;
                clear |= MOUNT_ATTR_NODIRATIME;
            }
            _ => continue,
        }
        any |= option != "atime" && option != "noatime";
    }
    any.then_some((set, clear))
}
