//! `kmsfs fsck`: authenticate every header and block and, with encrypted names, read back
//! every name, symlink target and `user.` extended attribute; one line per damaged file, per
//! name, target or attribute that does not read and per orphaned side file. With `--repair`,
//! cut the damage at the end of a file (what a write cut short by a crash leaves) back to its
//! last authentic block, delete orphaned side files and make a directory's `kmsfs.dirid` link
//! again from the copy of its id the mount reads, on an unmounted directory only; names,
//! targets and attributes that do not read are left as they are.

use super::exit::Exit;
use super::secret;
use super::{CliError, CliResult, fs_key, mounts};
use crate::cache::DekCache;
use crate::config::CipherConfig;
use crate::fs::keys::{KeyError, KeyPath};
use crate::fs::{
    FileCheck, PlainPath, Repair, SealedDamage, SealedFault, TailCut, Tree, TreeFile, check_file,
    remove_orphan, repair_file, walk_tree,
};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `kmsfs fsck`.
#[derive(Args)]
pub struct FsckArgs {
    /// The cipher directory (or its mount point).
    cipherdir: PathBuf,
    /// Cut each file that ends in a torn or unauthentic block back to its last authentic
    /// block (never a block before the last: damage there is reported, not cut), delete
    /// long-name side files whose name is gone, and make a directory's kmsfs.dirid link that
    /// disagrees with the copy of its id (user.kmsfs.dirid, which the mount reads) again from
    /// the copy. The directory must not be mounted.
    #[arg(long)]
    repair: bool,
    /// Read the passphrase from FILE (else $KMSFS_PASSPHRASE, else a prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// The embedded keystore, when it is not where kmsfs.conf says (a directory moved or
    /// copied with its keystore).
    #[arg(long, value_name = "PATH")]
    keystore: Option<PathBuf>,
    /// Trust this remote KMS endpoint (or these, URL1,URL2,...) for the directory: it must be
    /// what kmsfs.conf names.
    #[arg(long, value_name = "URL[,URL...]")]
    kms: Option<String>,
    /// Print one JSON report on stdout (every finding, and the counts) instead of lines.
    #[arg(long)]
    json: bool,
}

/// What the run found, for the summary and the exit code.
#[derive(Default)]
struct Tally {
    files: u64,
    damaged: u64,
    repaired: u64,
    left_damaged: u64,
    unreadable: u64,
    orphans_deleted: u64,
}

/// Checks (and with `--repair`, repairs) the directory. Exit 0 when no damage is left (none
/// found, or all of it cut by the repair), 1 otherwise. Orphaned side files are harmless: they
/// are reported (and deleted by a repair), not counted as damage.
pub fn run(mut args: FsckArgs) -> CliResult<ExitCode> {
    args.cipherdir = secret::cipherdir_of(&args.cipherdir);
    super::init_stderr_logging("error");
    let config = secret::with_keystore(
        CipherConfig::load(&args.cipherdir)?,
        args.keystore.as_deref(),
    )?;
    if args.repair {
        refuse_if_mounted(&args.cipherdir)?;
    }
    let kms = secret::open_kms_named(
        &args.cipherdir,
        &config,
        args.passphrase_file.as_deref(),
        args.kms.as_deref(),
    )?;
    let fs_id = config.fs_id().map_err(CliError::config)?;
    let names = fs_key::name_cipher(kms.as_ref(), &config)?;
    let keys = KeyPath::new(kms, DekCache::new(0, Duration::ZERO), fs_id, config.key_id);
    let tree = walk_tree(&args.cipherdir, names.as_ref())
        .map_err(|e| CliError::io("read", &args.cipherdir, &e))?;
    let mut out = Report::new(args.json);
    let mut names_left = 0u64;
    for bad in &tree.bad_names {
        out.say(Kind::UnreadableName, &bad.cipher, None, bad);
        let repaired = if args.repair {
            bad.repair_id_link()
        } else {
            None
        };
        match repaired {
            Some(Ok(())) => out.say(
                Kind::Repaired,
                &bad.cipher,
                None,
                format_args!(
                    "{}: repaired: kmsfs.dirid made again from the copy of the id the mount reads",
                    bad.cipher.display()
                ),
            ),
            Some(Err(e)) => {
                names_left += 1;
                let line = format!("{}: not repaired: {e}", bad.cipher.display());
                out.say(Kind::NotRepaired, &bad.cipher, None, line);
            }
            None => names_left += 1,
        }
    }
    for damage in &tree.sealed_damage {
        let plain = plain_of(&damage.plain);
        out.say(Kind::UnreadableSealed, &damage.cipher, plain, damage);
        if args.repair {
            out.say(Kind::NotRepaired, &damage.cipher, plain, left_alone(damage));
        }
    }
    let mut tally = Tally::default();
    for orphan in &tree.orphans {
        let what = format!("{}: orphaned long-name side file", orphan.display());
        if !args.repair {
            out.say(
                Kind::Orphan,
                orphan,
                None,
                format_args!("{what}; safe to delete"),
            );
            continue;
        }
        match remove_orphan(orphan) {
            Ok(()) => {
                tally.orphans_deleted += 1;
                out.say(
                    Kind::Repaired,
                    orphan,
                    None,
                    format_args!("{what}; deleted"),
                );
            }
            Err(e) => out.say(
                Kind::NotRepaired,
                orphan,
                None,
                format_args!("{what}; not deleted: {e}"),
            ),
        }
    }
    out.start_progress(tree.files.len() as u64);
    for file in &tree.files {
        out.advance();
        tally.files += 1;
        let result = if args.repair {
            repair_file(&file.cipher, &keys)
                .map(|repair| report_repair(&mut out, file, &repair, &mut tally))
        } else {
            check_file(&file.cipher, &keys)
                .map(|found| report_check(&mut out, file, &found, &mut tally))
        };
        match result {
            Ok(()) => {}
            // One unreadable file does not stop the check of the others.
            Err(KeyError::Io(e)) => {
                tally.unreadable += 1;
                let line = format!("{file}: cannot be read: {e}");
                out.say(
                    Kind::UnreadableFile,
                    &file.cipher,
                    plain_of(&file.plain),
                    line,
                );
            }
            Err(e) => {
                let message = format!("cannot check {}: {e}", file.cipher.display());
                return Err(match &e {
                    KeyError::Kms(kms) => CliError::kms(kms, message),
                    _ => CliError::new(message),
                });
            }
        }
    }
    let left = if args.repair {
        tally.left_damaged
    } else {
        tally.damaged
    };
    let clean =
        left == 0 && tally.unreadable == 0 && names_left == 0 && tree.sealed_damage.is_empty();
    let summary = summary(&tally, &tree, names.is_some(), args.repair);
    out.finish(&args, &tally, &tree, clean, &summary);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Problems.code())
    })
}

/// What a line of the report is about; its JSON name is stable (docs/FSCK.md lists them).
#[derive(Clone, Copy)]
enum Kind {
    /// A file whose header or blocks do not authenticate.
    DamagedFile,
    /// A file that cannot be read at all (the operating system's error).
    UnreadableFile,
    /// A name that does not read back, or a directory whose names cannot be read.
    UnreadableName,
    /// A symlink target or extended attribute that does not read back.
    UnreadableSealed,
    /// A long-name side file whose name is gone.
    Orphan,
    /// Something `--repair` mended (a cut file end, a re-sealed block, an id link, a deleted
    /// side file).
    Repaired,
    /// Damage `--repair` left as it is.
    NotRepaired,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::DamagedFile => "damaged-file",
            Kind::UnreadableFile => "unreadable-file",
            Kind::UnreadableName => "unreadable-name",
            Kind::UnreadableSealed => "unreadable-target-or-xattr",
            Kind::Orphan => "orphaned-side-file",
            Kind::Repaired => "repaired",
            Kind::NotRepaired => "not-repaired",
        }
    }
}

/// Where the findings go: one line each on stdout as they come, or, with `--json`, into one
/// JSON document printed at the end. A progress bar on stderr while files are checked, on a
/// terminal only.
struct Report {
    findings: Option<Vec<serde_json::Value>>,
    progress: Option<indicatif::ProgressBar>,
}

impl Report {
    fn new(json: bool) -> Self {
        Report {
            findings: json.then(Vec::new),
            progress: None,
        }
    }

    fn start_progress(&mut self, files: u64) {
        self.progress = super::rewrap::progress_bar(files);
    }

    fn advance(&self) {
        if let Some(bar) = &self.progress {
            bar.inc(1);
        }
    }

    /// One finding: `line` is its text, about the cipher path `path` (plaintext path `plain`,
    /// when known).
    fn say(&mut self, kind: Kind, path: &Path, plain: Option<&Path>, line: impl std::fmt::Display) {
        let line = line.to_string();
        match &mut self.findings {
            Some(findings) => findings.push(serde_json::json!({
                "kind": kind.name(),
                "path": path.display().to_string(),
                "plain-path": plain.map(|p| p.display().to_string()),
                "message": line,
            })),
            None => match &self.progress {
                Some(bar) => bar.suspend(|| println!("{line}")),
                None => println!("{line}"),
            },
        }
    }

    /// Ends the report: the summary line on stderr, or the JSON document on stdout.
    fn finish(self, args: &FsckArgs, tally: &Tally, tree: &Tree, clean: bool, summary: &str) {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
        let Some(findings) = self.findings else {
            eprintln!("{summary}");
            return;
        };
        let report = serde_json::json!({
            "cipherdir": args.cipherdir.display().to_string(),
            "repair": args.repair,
            "clean": clean,
            "files": tally.files,
            "damaged-files": tally.damaged,
            "unreadable-files": tally.unreadable,
            "repaired-files": tally.repaired,
            "still-damaged-files": tally.left_damaged,
            "names": tree.names,
            "unreadable-names": tree.unreadable_names,
            "symlink-targets": tree.targets,
            "xattrs": tree.xattrs,
            "unreadable-targets-and-xattrs": tree.sealed_damage.len(),
            "orphaned-side-files": tree.orphans.len(),
            "orphaned-side-files-deleted": tally.orphans_deleted,
            "findings": findings,
            "summary": summary,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("BUG: JSON value serializes")
        );
    }
}

/// The plaintext path of a node, when a mount shows it by a known path.
fn plain_of(plain: &PlainPath) -> Option<&Path> {
    match plain {
        PlainPath::Known(path) => Some(path),
        PlainPath::AsStored | PlainPath::Unreadable => None,
    }
}

/// "fsck: 1204 files checked, 1 damaged; 1310 names checked, 2 unreadable; 3 symlink targets
/// and 12 extended attributes checked, 1 unreadable; 1 orphaned side file". Targets and
/// attributes are counted when there are some.
fn summary(tally: &Tally, tree: &Tree, encrypted_names: bool, repair: bool) -> String {
    let mut summary = format!(
        "fsck: {} files checked, {} damaged",
        tally.files, tally.damaged
    );
    if repair {
        summary += &format!(
            ", {} repaired, {} still damaged",
            tally.repaired, tally.left_damaged
        );
    }
    if tally.unreadable > 0 {
        summary += &format!(", {} unreadable", tally.unreadable);
    }
    if encrypted_names {
        summary += &format!(
            "; {} names checked, {} unreadable",
            tree.names, tree.unreadable_names
        );
        if tree.targets + tree.xattrs > 0 {
            summary += &format!(
                "; {} symlink target{} and {} extended attribute{} checked, {} unreadable",
                tree.targets,
                if tree.targets == 1 { "" } else { "s" },
                tree.xattrs,
                if tree.xattrs == 1 { "" } else { "s" },
                tree.sealed_damage.len()
            );
        }
    }
    if !tree.orphans.is_empty() {
        let plural = if tree.orphans.len() == 1 { "" } else { "s" };
        summary += &format!("; {} orphaned side file{plural}", tree.orphans.len());
        if repair {
            summary += &format!(", {} deleted", tally.orphans_deleted);
        }
    }
    summary
}

fn report_check(out: &mut Report, file: &TreeFile, found: &FileCheck, tally: &mut Tally) {
    if let FileCheck::Damaged(damage) = found {
        tally.damaged += 1;
        let line = format!("{file}: {damage}");
        out.say(Kind::DamagedFile, &file.cipher, plain_of(&file.plain), line);
    }
}

fn report_repair(out: &mut Report, file: &TreeFile, repair: &Repair, tally: &mut Tally) {
    report_check(out, file, &repair.found, tally);
    let plain = plain_of(&file.plain);
    if let Some(cut) = &repair.cut {
        let line = format!("{file}: repaired: {}", describe_cut(cut));
        out.say(Kind::Repaired, &file.cipher, plain, line);
    }
    if let Some(block) = repair.resealed {
        let line = format!("{file}: repaired: block {block} re-sealed as the file's last block");
        out.say(Kind::Repaired, &file.cipher, plain, line);
    }
    match &repair.left {
        Some(left) => {
            tally.left_damaged += 1;
            let line = format!(
                "{file}: not repaired: {left} (a repair only cuts damage at the end of a file)"
            );
            out.say(Kind::NotRepaired, &file.cipher, plain, line);
        }
        None if repair.found != FileCheck::Clean => tally.repaired += 1,
        None => {}
    }
}

/// The line saying that a repair leaves `damage` as it is, and how to be rid of it. Removing an attribute
/// or a link is no repair: it loses what it held for good, and damage there is tampering or a
/// wrong key rather than a crash (a crash cannot tear a target or an attribute, each written in
/// one call), so it is left for a person to judge.
fn left_alone(damage: &SealedDamage) -> String {
    let how = match &damage.fault {
        SealedFault::Target(_) => "remove or replace the link through a mount".to_string(),
        SealedFault::XattrName { stored, .. } => format!(
            "a mount does not list it; remove it in the cipher directory with setfattr -x {}",
            stored.to_string_lossy()
        ),
        SealedFault::XattrValue { plain, .. } => format!(
            "remove it through a mount with setfattr -x {}",
            plain.to_string_lossy()
        ),
        SealedFault::Unreadable { .. } => "check the cipher directory's permissions".to_string(),
    };
    format!(
        "{}: not repaired: a repair leaves symlink targets and extended attributes as they are; {how}",
        damage.location()
    )
}

/// "cut from 200,000 to 196,288 bytes on disk; plaintext 196,608 → 192,512 bytes (4,096 lost)".
fn describe_cut(cut: &TailCut) -> String {
    let lost = cut.old_plain_size - cut.new_plain_size;
    format!(
        "cut from {} to {} bytes on disk; plaintext {} to {} bytes ({lost} lost{})",
        cut.old_cipher_size,
        cut.new_cipher_size,
        cut.old_plain_size,
        cut.new_plain_size,
        if lost == 0 {
            ": the cut bytes held no readable plaintext"
        } else {
            ", unreadable before the cut"
        }
    )
}

/// Refuses when `cipherdir` is the source of a live kmsfs mount: the daemon caches what it
/// read and wrote, and would not see the cut.
fn refuse_if_mounted(cipherdir: &Path) -> CliResult<()> {
    let canonical =
        std::fs::canonicalize(cipherdir).map_err(|e| CliError::io("resolve", cipherdir, &e))?;
    match kmsfs_mount_of(&mounts::mounts(), &canonical) {
        Some(mountpoint) => Err(CliError::new(format!(
            "{} is mounted at {}: unmount it before fsck --repair",
            cipherdir.display(),
            mountpoint
        ))),
        None => Ok(()),
    }
}

/// The mount point of the kmsfs mount of `cipherdir` (canonical) among `mounts` (its source
/// is `kmsfs:CIPHERDIR`, as `kmsfs mount` names it), if there is one.
pub(super) fn kmsfs_mount_of(mounts: &[mounts::MountEntry], cipherdir: &Path) -> Option<String> {
    mounts
        .iter()
        .find(|m| m.cipherdir().as_deref() == Some(cipherdir))
        .map(|m| m.mountpoint.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::super::mounts::{parse, unescape};
    use super::*;

    const INFO: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
60 22 0:52 / /srv/plain\\040view rw,nosuid,nodev,relatime shared:1 - fuse.kmsfs kmsfs:/srv/cipher\\040dir rw,user_id=0
61 22 0:53 / /mnt/other rw - fuse.kmsfs kmsfs:/srv/other rw,user_id=0
62 22 0:54 / /mnt/fake rw - ext4 kmsfs:/srv/ext rw
";

    #[test]
    fn a_mounted_cipher_directory_is_found_by_its_source() {
        assert_eq!(
            kmsfs_mount_of(&parse(INFO), Path::new("/srv/cipher dir")).as_deref(),
            Some("/srv/plain view")
        );
        assert_eq!(
            kmsfs_mount_of(&parse(INFO), Path::new("/srv/other")).as_deref(),
            Some("/mnt/other")
        );
    }

    #[test]
    fn other_directories_and_filesystems_are_not_mounts_of_it() {
        for dir in ["/srv/cipher", "/srv/cipher dir/sub", "/srv/ext", "/proc"] {
            assert_eq!(kmsfs_mount_of(&parse(INFO), Path::new(dir)), None, "{dir}");
        }
        assert_eq!(kmsfs_mount_of(&parse(""), Path::new("/srv/other")), None);
        assert_eq!(
            kmsfs_mount_of(&parse("garbage\n - \n"), Path::new("/srv/other")),
            None
        );
    }

    #[test]
    fn escapes_are_undone_and_a_lone_backslash_kept() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("trailing\\"), "trailing\\");
        assert_eq!(unescape("\\09x"), "\\09x");
    }
}
