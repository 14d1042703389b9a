//! `kmsfs install-helpers`: puts what makes kmsfs a citizen of the system in the places the
//! system looks: the mount helpers mount(8) runs for `fuse.kmsfs` (links to this binary in
//! `/sbin`), the shell completions where bash-completion, zsh and fish find them, and the
//! manual pages under `/usr/local/share/man/man1`. Running it again replaces what it put there.

use super::{CliError, CliResult, mount_helper};
use crate::sys::durable::{self, Staging};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kmsfs install-helpers`.
#[derive(Args)]
pub struct InstallArgs {
    /// Install under DIR instead of / (DIR/sbin, DIR/usr/local/share/...), e.g. for a package
    /// or a test.
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,
}

/// Where each thing goes, under the prefix.
const SBIN: &str = "sbin";
const BASH_COMPLETIONS: &str = "usr/local/share/bash-completion/completions/kmsfs";
const ZSH_COMPLETIONS: &str = "usr/local/share/zsh/site-functions/_kmsfs";
const FISH_COMPLETIONS: &str = "usr/local/share/fish/vendor_completions.d/kmsfs.fish";
const MAN_PAGES: &str = "usr/local/share/man/man1";

/// Installs as `args` say and prints what went where.
pub fn run(args: InstallArgs) -> CliResult<ExitCode> {
    let prefix = match args.prefix {
        Some(prefix) => prefix,
        None if crate::sys::effective_uid() == 0 => PathBuf::from("/"),
        None => {
            return Err(CliError::usage(
                "installing into / needs root: run it as root, or give --prefix DIR",
            ));
        }
    };
    let binary = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| CliError::new(format!("cannot find this program's own file: {e}")))?;
    let sbin = prefix.join(SBIN);
    create_dir(&sbin)?;
    for name in mount_helper::HELPER_NAMES {
        let link = sbin.join(name);
        replace_symlink(&binary, &link)?;
        say(format_args!(
            "mount helper: {} -> {}",
            link.display(),
            binary.display()
        ));
    }
    for (shell, place) in [
        (Shell::Bash, BASH_COMPLETIONS),
        (Shell::Zsh, ZSH_COMPLETIONS),
        (Shell::Fish, FISH_COMPLETIONS),
    ] {
        let path = prefix.join(place);
        write_public(&path, &completion_script(shell))?;
        say(format_args!("{shell} completions: {}", path.display()));
    }
    let man = prefix.join(MAN_PAGES);
    say(format_args!("manual pages:"));
    super::generated::man(&man)?;
    Ok(ExitCode::SUCCESS)
}

/// One line on stdout; a closed stdout (`| head`) does not stop the installation.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// The completion script of `shell`.
fn completion_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "kmsfs", &mut script);
    script
}

fn create_dir(dir: &Path) -> CliResult {
    std::fs::create_dir_all(dir).map_err(|e| CliError::io("create", dir, &e))
}

/// Writes `bytes` to `path` atomically, readable by everyone (mode 0644).
fn write_public(path: &Path, bytes: &[u8]) -> CliResult {
    create_dir(&durable::parent_dir(path))?;
    durable::replace(path, bytes, Staging::Unique).map_err(|e| CliError::io("write", path, &e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| CliError::io("set the permissions of", path, &e))
}

/// Makes `link` a symlink to `target`, replacing whatever link or file was there in one rename.
fn replace_symlink(target: &Path, link: &Path) -> CliResult {
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staged = durable::parent_dir(link).join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged)
        .map_err(|e| CliError::io("create the link", &staged, &e))?;
    std::fs::rename(&staged, link).map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        CliError::io("install the link", link, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_replaced_and_a_file_in_the_way_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("mount.kmsfs");
        std::fs::write(&link, "an old copy").expect("write");
        replace_symlink(Path::new("/first"), &link).expect("replace a file");
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("/first")
        );
        replace_symlink(Path::new("/second"), &link).expect("replace a link");
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("/second")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["mount.kmsfs"], "no staged link is left");
    }

    #[test]
    fn every_completion_script_names_the_command() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion_script(shell)).expect("utf-8");
            assert!(script.contains("install-helpers"), "{shell}");
        }
    }
}
