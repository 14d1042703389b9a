//! `mount.fuse.kmsfs` and `mount.kmsfs`: the helper mount(8) runs for `mount -t fuse.kmsfs`
//! and for fstab lines of that type, as `mount.fuse.kmsfs SPEC DIR [-sfnv] [-N NS] [-o OPTS]
//! [-t TYPE]` (mount(8), "External helpers"). The binary is `kmsfs` itself, installed under
//! those names by `kmsfs install-helpers`; `main.rs` dispatches on the name it was run as.
//!
//! The options become the arguments of `kmsfs mount`, which then runs as usual (it returns once
//! the mount is live): kmsfs's own options (`passfile=`, `kms=`, `cache_ttl=`, ...) become its
//! flags, the kernel's and FUSE's go on to `-o`, and mount(8)'s own (`nofail`, `_netdev`,
//! `noauto`, `x-systemd.*`, `comment=`, ...) are dropped, as helpers do.

use super::exit::Exit;
use super::mount::{self, MountArgs};
use super::{CliError, CliResult};
use clap::{Args, FromArgMatches};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The names the helper is installed as (in /sbin, where mount(8) looks).
pub const HELPER_NAMES: [&str; 2] = ["mount.fuse.kmsfs", "mount.kmsfs"];

/// mount(8)'s exit code for bad usage.
const EXIT_USAGE: u8 = 1;
/// mount(8)'s exit code for a failed mount.
const EXIT_MOUNT_FAILURE: u8 = 32;

/// True when the program was run under one of [`HELPER_NAMES`].
pub fn is_helper(argv0: &Path) -> bool {
    argv0
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| HELPER_NAMES.contains(&name))
}

/// Runs the helper with `args` (without the program name); returns mount(8)'s exit codes: 0,
/// 1 for bad usage, 32 for a failed mount, each failure with one sentence on stderr.
pub fn main(program: &str, args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {}", e.message);
            ExitCode::from(match e.exit {
                Exit::Usage => EXIT_USAGE,
                _ => EXIT_MOUNT_FAILURE,
            })
        }
    }
}

fn run(args: Vec<OsString>) -> CliResult {
    let call = HelperCall::parse(args)?;
    let mount_argv = call.mount_argv()?;
    if call.verbose {
        eprintln!(
            "kmsfs {}",
            mount_argv
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let command = MountArgs::augment_args(clap::Command::new("mount").no_binary_name(true));
    let matches = command
        .try_get_matches_from(&mount_argv)
        .map_err(|e| CliError::usage(clap_sentence(&e)))?;
    let args = MountArgs::from_arg_matches(&matches).map_err(|e| CliError::usage(e.to_string()))?;
    if call.fake {
        return Ok(());
    }
    mount::run(args).map(drop)
}

/// The first line of a clap error, without its "error: " prefix.
fn clap_sentence(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// What mount(8) asked: the source, the mount point, the options and the flags.
#[derive(Debug, Default, PartialEq)]
struct HelperCall {
    spec: OsString,
    dir: OsString,
    options: Vec<String>,
    /// `-s`: ignore options the helper does not know.
    sloppy: bool,
    /// `-f`: check everything but do not mount.
    fake: bool,
    /// `-v`: say what is run.
    verbose: bool,
}

impl HelperCall {
    fn parse(args: Vec<OsString>) -> CliResult<Self> {
        let mut call = HelperCall::default();
        let mut positional = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(text) = arg.to_str() else {
                positional.push(arg);
                continue;
            };
            match text {
                "-o" => {
                    let value = args.next().ok_or_else(|| missing_value("-o"))?;
                    call.options.extend(split_options(&value.to_string_lossy()));
                }
                "-t" => {
                    args.next().ok_or_else(|| missing_value("-t"))?;
                }
                "-N" | "--namespace" => {
                    return Err(CliError::usage(
                        "mounting in another mount namespace (-N) is not supported; run the mount inside it",
                    ));
                }
                _ if text.starts_with("-o") && text.len() > 2 => {
                    call.options.extend(split_options(&text[2..]));
                }
                _ if text.starts_with('-') && text.len() > 1 => {
                    for flag in text[1..].chars() {
                        match flag {
                            's' => call.sloppy = true,
                            'f' => call.fake = true,
                            'v' => call.verbose = true,
                            // No /etc/mtab to write, and nothing to do for read-write: the
                            // options carry rw/ro.
                            'n' | 'w' => {}
                            'r' => call.options.push("ro".into()),
                            _ => {
                                return Err(CliError::usage(format!(
                                    "unknown flag -{flag} (mount(8) passes -s, -f, -n, -v, -o and -t)"
                                )));
                            }
                        }
                    }
                }
                _ => positional.push(arg),
            }
        }
        let mut positional = positional.into_iter();
        match (positional.next(), positional.next(), positional.next()) {
            (Some(spec), Some(dir), None) => {
                call.spec = spec;
                call.dir = dir;
                Ok(call)
            }
            _ => Err(CliError::usage(
                "usage: mount.fuse.kmsfs CIPHERDIR MOUNTPOINT [-o OPTIONS]",
            )),
        }
    }

    /// The arguments of `kmsfs mount` (after `mount`) this call means.
    fn mount_argv(&self) -> CliResult<Vec<OsString>> {
        // `kmsfs#/srv/cipher` is how `-t fuse` lines name the program and the source.
        let spec = self.spec.to_string_lossy();
        let spec = match spec.strip_prefix("kmsfs#") {
            Some(path) => OsString::from(path),
            None => self.spec.clone(),
        };
        let mut argv: Vec<OsString> = vec![spec, self.dir.clone()];
        let mut fuse = Vec::new();
        for option in &self.options {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (option.as_str(), None),
            };
            match classify(name, value) {
                Mapped::Flag(flag) => {
                    let value = value.ok_or_else(|| {
                        CliError::usage(format!("the option {name} needs a value ({name}=...)"))
                    })?;
                    argv.push(flag.into());
                    argv.push(if flag == "--passphrase-file" {
                        credential_or_path(value)?.into_os_string()
                    } else {
                        value.into()
                    });
                }
                Mapped::Switch(flag) => argv.push(flag.into()),
                Mapped::Fuse => fuse.push(option.clone()),
                Mapped::Dropped => {}
                Mapped::Unknown if self.sloppy => {
                    eprintln!("mount.fuse.kmsfs: ignoring the unknown option {option:?} (-s)");
                }
                Mapped::Unknown => {
                    return Err(CliError::usage(format!(
                        "unknown option {option:?}: kmsfs knows passfile=, keystore=, kms=, cache_ttl=, cache_entries=, threads=, dirty_percent=, log=, io_uring, the FUSE options of kmsfs mount -o and mount(8)'s generic ones"
                    )));
                }
            }
        }
        if !fuse.is_empty() {
            argv.push("-o".into());
            argv.push(fuse.join(",").into());
        }
        Ok(argv)
    }
}

/// What becomes of one option.
#[derive(Debug, PartialEq)]
enum Mapped {
    /// A flag of `kmsfs mount` taking the option's value.
    Flag(&'static str),
    /// A flag of `kmsfs mount` that takes no value.
    Switch(&'static str),
    /// A kernel or FUSE option, passed on with `-o`.
    Fuse,
    /// mount(8)'s own, or one that means nothing here: dropped silently.
    Dropped,
    /// None of these.
    Unknown,
}

fn classify(name: &str, value: Option<&str>) -> Mapped {
    match (name, value) {
        ("passfile" | "passphrase_file", _) => Mapped::Flag("--passphrase-file"),
        ("keystore", _) => Mapped::Flag("--keystore"),
        ("kms", _) => Mapped::Flag("--kms"),
        ("cache_ttl", _) => Mapped::Flag("--cache-ttl"),
        ("cache_entries", _) => Mapped::Flag("--cache-entries"),
        ("threads", _) => Mapped::Flag("--threads"),
        ("dirty_percent", _) => Mapped::Flag("--dirty-percent"),
        ("log", _) => Mapped::Flag("--log"),
        ("io_uring", None) => Mapped::Switch("--io-uring"),
        (
            "allow_other"
            | "allow_root"
            | "default_permissions"
            | "auto_unmount"
            | "nonempty"
            | "ro"
            | "rw"
            | "dev"
            | "nodev"
            | "suid"
            | "nosuid"
            | "exec"
            | "noexec"
            | "atime"
            | "noatime"
            | "relatime"
            | "strictatime"
            | "nodiratime"
            | "diratime"
            | "lazytime"
            | "nolazytime"
            | "sync"
            | "async"
            | "dirsync",
            None,
        ) => Mapped::Fuse,
        // mount(8)'s own options (it acts on them before calling the helper, or they concern
        // the fstab line), and `norelatime`/`nostrictatime`, which ask for the kernel's default.
        (
            "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser" | "users"
            | "owner" | "group" | "silent" | "loud" | "mand" | "nomand" | "iversion" | "noiversion"
            | "remount" | "bind" | "norelatime" | "nostrictatime",
            None,
        ) => Mapped::Dropped,
        // fsname and subtype are set by kmsfs (the cipher directory, kmsfs).
        ("comment" | "fsname" | "subtype" | "helper", Some(_)) => Mapped::Dropped,
        _ if name.starts_with("x-") || name.starts_with("X-") => Mapped::Dropped,
        _ => Mapped::Unknown,
    }
}

/// The options of one `-o` argument.
fn split_options(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect()
}

/// A passphrase file named by `passfile=`: an absolute path as is; a relative name in the
/// systemd credentials directory when there is one (`LoadCredential=NAME:...`), else relative
/// to the working directory.
fn credential_or_path(value: &str) -> CliResult<PathBuf> {
    let path = Path::new(value);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if let Some(credential) = crate::sys::systemd::credential_path(value)
        && credential.exists()
    {
        return Ok(credential);
    }
    Ok(path.to_path_buf())
}

fn missing_value(flag: &str) -> CliError {
    CliError::usage(format!("{flag} needs a value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn argv(args: &[&str]) -> Vec<String> {
        HelperCall::parse(os(args))
            .and_then(|c| c.mount_argv())
            .map_err(|e| e.message)
            .expect("helper call")
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn refused(args: &[&str]) -> (u8, String) {
        let e = HelperCall::parse(os(args))
            .and_then(|c| c.mount_argv())
            .expect_err("refused");
        (e.exit.code(), e.message)
    }

    #[test]
    fn an_fstab_line_becomes_kmsfs_mount_flags_and_fuse_options() {
        assert_eq!(
            argv(&[
                "/srv/cipher",
                "/srv/plain",
                "-o",
                "rw,passfile=/etc/kmsfs/pass,allow_other,nofail,_netdev,cache_ttl=60,threads=2,io_uring,dirty_percent=5,noatime,x-systemd.requires=network-online.target,comment=x,kms=http://k/v2,defaults,noauto,user,users",
            ]),
            [
                "/srv/cipher",
                "/srv/plain",
                "--passphrase-file",
                "/etc/kmsfs/pass",
                "--cache-ttl",
                "60",
                "--threads",
                "2",
                "--io-uring",
                "--dirty-percent",
                "5",
                "--kms",
                "http://k/v2",
                "-o",
                "rw,allow_other,noatime",
            ]
        );
    }

    #[test]
    fn flags_types_and_attached_options_are_read_as_mount_passes_them() {
        let call = HelperCall::parse(os(&[
            "kmsfs#/c",
            "/p",
            "-snv",
            "-t",
            "fuse.kmsfs",
            "-oro,keystore=/k",
            "-o",
            "nosuid",
        ]))
        .expect("parse");
        assert!(call.sloppy && call.verbose && !call.fake);
        assert_eq!(call.options, ["ro", "keystore=/k", "nosuid"]);
        let argv: Vec<_> = call.mount_argv().expect("argv");
        assert_eq!(
            argv,
            os(&["/c", "/p", "--keystore", "/k", "-o", "ro,nosuid"])
        );
    }

    #[test]
    fn without_options_only_the_paths_are_passed() {
        assert_eq!(argv(&["/c", "/p"]), ["/c", "/p"]);
        assert_eq!(argv(&["/c", "/p", "-o", "defaults"]), ["/c", "/p"]);
    }

    #[test]
    fn sloppy_drops_unknown_options_and_otherwise_they_are_refused() {
        assert_eq!(
            argv(&["/c", "/p", "-s", "-o", "bogus,ro"]),
            ["/c", "/p", "-o", "ro"]
        );
        let (code, message) = refused(&["/c", "/p", "-o", "bogus"]);
        assert_eq!(code, Exit::Usage.code());
        assert!(message.contains("\"bogus\""), "{message}");
    }

    #[test]
    fn bad_calls_get_one_sentence() {
        assert!(refused(&["/c"]).1.starts_with("usage:"));
        assert!(refused(&["/c", "/p", "/q"]).1.starts_with("usage:"));
        assert_eq!(refused(&["/c", "/p", "-o"]).1, "-o needs a value");
        assert!(
            refused(&["/c", "/p", "-N", "/proc/1/ns/mnt"])
                .1
                .contains("-N")
        );
        assert!(refused(&["/c", "/p", "-x"]).1.contains("-x"));
        assert!(
            refused(&["/c", "/p", "-o", "passfile"])
                .1
                .contains("passfile=")
        );
        assert!(refused(&["/c", "/p", "-o", "ro=1"]).1.contains("ro=1"));
    }

    #[test]
    fn only_the_helper_names_dispatch() {
        assert!(is_helper(Path::new("/sbin/mount.fuse.kmsfs")));
        assert!(is_helper(Path::new("mount.kmsfs")));
        assert!(!is_helper(Path::new("/usr/local/bin/kmsfs")));
        assert!(!is_helper(Path::new("/sbin/mount.fuse3")));
    }

    #[test]
    fn a_relative_passfile_is_looked_up_among_the_credentials() {
        // Without a credentials directory a relative name stays relative.
        if std::env::var_os(crate::sys::systemd::CREDENTIALS_DIRECTORY_ENV).is_none() {
            assert_eq!(
                credential_or_path("pass").expect("path"),
                PathBuf::from("pass")
            );
        }
        assert_eq!(
            credential_or_path("/etc/kmsfs/pass").expect("path"),
            PathBuf::from("/etc/kmsfs/pass")
        );
    }
}
