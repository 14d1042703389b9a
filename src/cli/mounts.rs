//! The mount table (`/proc/self/mountinfo`): which kmsfs mounts are live, and of which cipher
//! directories. A kmsfs mount's type is `fuse.kmsfs` and its source the cipher directory
//! (`kmsfs:CIPHERDIR` before, still read).

use std::path::PathBuf;

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub device: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its type (`fuse.kmsfs` for ours).
    pub fstype: String,
    /// Its source (the cipher directory for ours).
    pub source: String,
    /// The user who mounted it (a FUSE mount's `user_id=` option), if the table says.
    pub user_id: Option<u32>,
}

impl MountEntry {
    /// The cipher directory of a kmsfs mount.
    pub fn cipherdir(&self) -> Option<PathBuf> {
        if self.fstype != "fuse.kmsfs" {
            return None;
        }
        let source = self.source.strip_prefix("kmsfs:").unwrap_or(&self.source);
        Some(PathBuf::from(source))
    }
}

/// The entries of mountinfo text `info`; lines that do not parse are skipped.
pub fn parse(info: &str) -> Vec<MountEntry> {
    info.lines()
        .filter_map(|line| {
            // "ID PARENT DEV ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS"
            let (mount, fs) = line.split_once(" - ")?;
            let mut mount = mount.split(' ');
            let device = mount.nth(2)?.to_string();
            let mountpoint = PathBuf::from(unescape(mount.nth(1)?));
            let mut fs = fs.split(' ');
            let fstype = fs.next()?.to_string();
            let source = unescape(fs.next()?);
            let user_id = fs.next().and_then(|options| {
                options
                    .split(',')
                    .find_map(|o| o.strip_prefix("user_id=")?.parse().ok())
            });
            Some(MountEntry {
                device,
                mountpoint,
                fstype,
                source,
                user_id,
            })
        })
        .collect()
}

/// The live mounts of this process's mount namespace (none when the table cannot be read).
pub fn mounts() -> Vec<MountEntry> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
97 22 0:52 / /home/me/my\\040files rw,nosuid,nodev,relatime shared:60 - fuse.kmsfs kmsfs:/srv/cipher\\040dir rw,user_id=0,group_id=0
98 22 0:53 / /mnt/other rw - fuse.sshfs me@host:/ rw
99 22 0:54 / /srv/plain rw - fuse.kmsfs /srv/cipher rw
garbage line
";

    #[test]
    fn a_kmsfs_mount_names_its_cipher_directory_with_escapes_undone() {
        let entries = parse(INFO);
        assert_eq!(entries.len(), 4, "the garbage line is skipped");
        let ours = &entries[1];
        assert_eq!(ours.device, "0:52");
        assert_eq!(ours.mountpoint, PathBuf::from("/home/me/my files"));
        assert_eq!(ours.cipherdir(), Some(PathBuf::from("/srv/cipher dir")));
        assert_eq!(ours.user_id, Some(0));
        assert_eq!(entries[0].user_id, None);
        assert_eq!(entries[0].cipherdir(), None);
        assert_eq!(entries[2].cipherdir(), None);
        assert_eq!(entries[3].cipherdir(), Some(PathBuf::from("/srv/cipher")));
    }

    #[test]
    fn a_backslash_not_followed_by_three_octal_digits_stays() {
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("a\\13"), "a\\13");
        assert_eq!(unescape("\\134x"), "\\x");
    }
}
