//! The mount daemon's side of `kmsfs mount`: the process that serves the mount after the fork,
//! its log file, its pid file, and the one line it sends the waiting parent through a pipe
//! (`ready`, or `error CODE SENTENCE`).

use super::exit::Exit;
use super::mount::{MountArgs, Tuning, cache, serve};
use super::{CliError, CliResult};
use crate::config::state_home;
use crate::format::NameCipher;
use crate::fs::keys::KeyPath;
use crate::kms::KeyService;
use crate::sys;
use fuser::Config;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[allow(clippy::too_many_arguments)]
pub(super) fn daemon(
    cipherdir: &Path,
    mountpoint: &Path,
    kms: Arc<dyn KeyService>,
    args: &MountArgs,
    fs_id: crate::format::FsId,
    key_id: uuid::Uuid,
    names: Option<NameCipher>,
    fuse_config: &Config,
    tuning: Tuning,
    log: std::fs::File,
    ready: std::io::PipeWriter,
) -> i32 {
    let _ = sys::setsid();
    if let Err(e) = sys::redirect_stdio(&log) {
        let error = CliError::with(
            Exit::Io,
            format!("cannot redirect the daemon's output to its log: {e}"),
        );
        return i32::from(report_failure(&mut Some(ready), error).exit.code());
    }
    super::logging::init(super::logging::LogSetup {
        format: args.observe.log_format,
        default_filter: "info",
        writer: tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(log)),
        ansi: false,
        mount: Some(mountpoint.display().to_string()),
    });
    let keys = KeyPath::new(kms, cache(args), fs_id, key_id);
    match serve(
        cipherdir,
        mountpoint,
        keys,
        names,
        fuse_config,
        tuning,
        Some(ready),
    ) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{}", e.message);
            i32::from(e.exit.code())
        }
    }
}

/// Says the mount is live: "ready" to the parent waiting on `ready`, if any, and `READY=1` to
/// the service manager, if any (`kmsfs mount --foreground` in a `Type=notify` unit).
pub(super) fn announce_ready(
    ready: Option<std::io::PipeWriter>,
    cipherdir: &Path,
    mountpoint: &Path,
) {
    if let Some(mut pipe) = ready {
        let _ = writeln!(pipe, "ready");
    }
    sys::systemd::notify_ready(&format!(
        "mounted {} at {}",
        cipherdir.display(),
        mountpoint.display()
    ));
}

/// Tells the parent waiting on `ready`, if any, that the start failed: `error CODE SENTENCE`
/// (see [`daemon_answer`]). Gives `error` back.
pub(super) fn report_failure(ready: &mut Option<std::io::PipeWriter>, error: CliError) -> CliError {
    if let Some(pipe) = ready.as_mut() {
        let _ = writeln!(pipe, "error {} {}", error.exit.code(), error.message);
    }
    error
}

/// The parent's reading of what the daemon said through the pipe: `ready` once the mount is
/// live; `error CODE SENTENCE` when it failed, which becomes the same error, exit code
/// included, as in the foreground; nothing (or anything else) when the daemon died first.
pub(super) fn daemon_answer(answer: &str, log_path: &Path) -> CliResult {
    if answer.starts_with("ready") {
        return Ok(());
    }
    let Some(failure) = answer.strip_prefix("error ") else {
        return Err(CliError::new(format!(
            "the daemon exited before the mount was live; see {}",
            log_path.display()
        )));
    };
    let coded = failure.split_once(' ').and_then(|(code, sentence)| {
        let exit = Exit::of_code(code.parse().ok()?)?;
        Some((exit, sentence))
    });
    let (exit, sentence) = coded.unwrap_or((Exit::Problems, failure));
    Err(CliError::with(exit, sentence.trim_end()))
}

pub(super) fn default_log_path(cipherdir: &Path, fs_id: &str) -> PathBuf {
    let name = cipherdir
        .file_name()
        .map_or_else(|| "kmsfs".into(), |n| n.to_string_lossy().into_owned());
    state_home()
        .join("kmsfs")
        .join(format!("{name}-{}.log", &fs_id[..fs_id.len().min(8)]))
}

pub(super) fn open_log(path: &Path) -> CliResult<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::io("create the log directory", dir, &e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| CliError::io("open the log file", path, &e))
}

/// Where the daemon serving `mountpoint` records its pid.
pub(super) fn pid_file_path(mountpoint: &Path) -> PathBuf {
    let digest = crate::crypto::sha256(mountpoint.as_os_str().as_encoded_bytes());
    state_home()
        .join("kmsfs")
        .join("run")
        .join(format!("{}.pid", crate::format::hex(&digest[..8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Result<(), (u8, String)> {
        daemon_answer(text, Path::new("/log")).map_err(|e| (e.exit.code(), e.message))
    }

    #[test]
    fn the_daemons_error_comes_back_with_its_exit_code() {
        assert_eq!(answer("ready\n"), Ok(()));
        assert_eq!(
            answer("error 2 cannot mount at /p: auto_unmount requires acl != Owner\n"),
            Err((
                2,
                "cannot mount at /p: auto_unmount requires acl != Owner".into()
            ))
        );
        assert_eq!(
            answer("error 3 cannot open /c: gone"),
            Err((3, "cannot open /c: gone".into()))
        );
    }

    #[test]
    fn an_answer_without_a_known_code_is_a_plain_failure() {
        let died = "the daemon exited before the mount was live; see /log".to_string();
        assert_eq!(answer(""), Err((1, died.clone())));
        assert_eq!(answer("garbage"), Err((1, died)));
        assert_eq!(
            answer("error 99 a code no exit has"),
            Err((1, "99 a code no exit has".into()))
        );
        assert_eq!(
            answer("error cannot block signals"),
            Err((1, "cannot block signals".into()))
        );
        assert_eq!(answer("error 7"), Err((1, "7".into())));
    }
}
