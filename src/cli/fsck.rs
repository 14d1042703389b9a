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
    FileCheck, Repair, SealedDamage, SealedFault, TailCut, Tree, TreeFile, check_file,
    remove_orphan, repair_file, walk_tree,
};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `kmsfs fsck`.
#[derive(Args)]
pub struct FsckArgs {
    /// The cipher directory.
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
pub fn run(args: FsckArgs) -> CliResult<ExitCode> {
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
    let mut names_left = 0u64;
    for bad in &tree.bad_names {
        println!("{bad}");
        let repaired = if args.repair {
            bad.repair_id_link()
        } else {
            None
        };
        match repaired {
            Some(Ok(())) => println!(
                "{}: repaired: kmsfs.dirid made again from the copy of the id the mount reads",
                bad.cipher.display()
            ),
            Some(Err(e)) => {
                names_left += 1;
                println!("{}: not repaired: {e}", bad.cipher.display());
            }
            None => names_left += 1,
        }
    }
    for damage in &tree.sealed_damage {
        println!("{damage}");
        if args.repair {
            report_left_alone(damage);
        }
    }
    let mut tally = Tally::default();
    for orphan in &tree.orphans {
        let what = format!("{}: orphaned long-name side file", orphan.display());
        if !args.repair {
            println!("{what}; safe to delete");
            continue;
        }
        match remove_orphan(orphan) {
            Ok(()) => {
                tally.orphans_deleted += 1;
                println!("{what}; deleted");
            }
            Err(e) => println!("{what}; not deleted: {e}"),
        }
    }
    for file in &tree.files {
        tally.files += 1;
        let result = if args.repair {
            repair_file(&file.cipher, &keys).map(|repair| report_repair(file, &repair, &mut tally))
        } else {
            check_file(&file.cipher, &keys).map(|found| report_check(file, &found, &mut tally))
        };
        match result {
            Ok(()) => {}
            // One unreadable file does not stop the check of the others.
            Err(KeyError::Io(e)) => {
                tally.unreadable += 1;
                println!("{file}: cannot be read: {e}");
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
    eprintln!("{}", summary(&tally, &tree, names.is_some(), args.repair));
    let left = if args.repair {
        tally.left_damaged
    } else {
        tally.damaged
    };
    Ok(
        if left == 0 && tally.unreadable == 0 && names_left == 0 && tree.sealed_damage.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(Exit::Problems.code())
        },
    )
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

fn report_check(file: &TreeFile, found: &FileCheck, tally: &mut Tally) {
    if let FileCheck::Damaged(damage) = found {
        tally.damaged += 1;
        println!("{file}: {damage}");
    }
}

fn report_repair(file: &TreeFile, repair: &Repair, tally: &mut Tally) {
    report_check(file, &repair.found, tally);
    if let Some(cut) = &repair.cut {
        println!("{file}: repaired: {}", describe_cut(cut));
    }
    if let Some(block) = repair.resealed {
        println!("{file}: repaired: block {block} re-sealed as the file's last block");
    }
    match &repair.left {
        Some(left) => {
            tally.left_damaged += 1;
            println!(
                "{file}: not repaired: {left} (a repair only cuts damage at the end of a file)"
            );
        }
        None if repair.found != FileCheck::Clean => tally.repaired += 1,
        None => {}
    }
}

/// Says that a repair leaves `damage` as it is, and how to be rid of it. Removing an attribute
/// or a link is no repair: it loses what it held for good, and damage there is tampering or a
/// wrong key rather than a crash (a crash cannot tear a target or an attribute, each written in
/// one call), so it is left for a person to judge.
fn report_left_alone(damage: &SealedDamage) {
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
    println!(
        "{}: not repaired: a repair leaves symlink targets and extended attributes as they are; {how}",
        damage.location()
    );
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
