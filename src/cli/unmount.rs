//! `kmsfs unmount`: unmounts, then waits for the daemon (found by its pid file) to exit.

use super::daemon::pid_file_path;
use super::mount::is_mounted;
use super::{CliError, CliResult};
use crate::sys;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Unmounts `mountpoint` (or the mount of the cipher directory `mountpoint`) and waits (up to
/// 30 s) for its daemon to exit.
pub fn unmount(mountpoint: &Path, lazy: bool) -> CliResult<ExitCode> {
    let mut canonical =
        std::fs::canonicalize(mountpoint).map_err(|e| CliError::io("resolve", mountpoint, &e))?;
    // A cipher directory names its mount.
    if !is_mounted(&canonical)
        && let Some(mount) = super::mounts::mounts()
            .into_iter()
            .rfind(|m| m.cipherdir().as_deref() == Some(canonical.as_path()))
    {
        canonical = mount.mountpoint;
    }
    if !is_mounted(&canonical) {
        return Err(CliError::new(format!(
            "nothing is mounted at {}",
            mountpoint.display()
        )));
    }
    let pid = std::fs::read_to_string(pid_file_path(&canonical))
        .ok()
        .and_then(|s| s.trim().parse::<libc::pid_t>().ok());
    let mut command = std::process::Command::new("fusermount3");
    command.arg("-u");
    if lazy {
        command.arg("-z");
    }
    let unmounted = match command.arg(&canonical).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("busy") {
                return Err(CliError::new(format!(
                    "{} is busy: files are open there; close them, or use --lazy",
                    mountpoint.display()
                )));
            }
            false
        }
        Err(_) => false,
    };
    if !unmounted {
        // No fusermount3, or it refused: as root, unmount directly.
        let result = if lazy {
            sys::umount_lazy(&canonical)
        } else {
            std::process::Command::new("umount")
                .arg(&canonical)
                .status()
                .map_err(std::io::Error::other)
                .and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("umount failed"))
                    }
                })
        };
        result.map_err(|e| CliError::io("unmount", mountpoint, &e))?;
    }
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sys::process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if sys::process_alive(pid) {
            return Err(CliError::new(format!(
                "unmounted {}, but its daemon (pid {pid}) is still running after 30 s",
                mountpoint.display()
            )));
        }
    }
    Ok(ExitCode::SUCCESS)
}
