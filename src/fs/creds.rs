//! What the kernel would decide about a caller where the rule needs more than the uid and gid
//! a FUSE request carries: its supplementary groups and its `CAP_FSETID`, read from
//! `/proc/PID/status`. The daemon acts on the backing files as root, so the rules that depend on
//! who asks (set-group-id kept or cleared) are applied here, as the kernel applies them to a
//! local filesystem.

use super::attr::Caller;

/// `CAP_FSETID`'s bit in `CapEff`.
const CAP_FSETID: u32 = 4;

/// The caller's groups and capability, as far as the rules below need them.
struct Credentials {
    /// Filesystem gid and supplementary groups.
    groups: Vec<u32>,
    /// Holds `CAP_FSETID`.
    fsetid: bool,
}

impl Credentials {
    /// Read from `/proc/PID/status`; when the process is gone or unknown, only what the
    /// request says (root is taken as capable).
    fn of(caller: Caller) -> Credentials {
        let fallback = || Credentials {
            groups: vec![caller.gid],
            fsetid: caller.uid == 0,
        };
        if caller.pid == 0 {
            return fallback();
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", caller.pid)) else {
            return fallback();
        };
        let mut creds = Credentials {
            groups: vec![caller.gid],
            fsetid: false,
        };
        for line in status.lines() {
            if let Some(groups) = line.strip_prefix("Groups:") {
                creds.groups.extend(
                    groups
                        .split_whitespace()
                        .filter_map(|g| g.parse::<u32>().ok()),
                );
            } else if let Some(caps) = line.strip_prefix("CapEff:") {
                creds.fsetid = u64::from_str_radix(caps.trim(), 16)
                    .is_ok_and(|bits| bits & (1 << CAP_FSETID) != 0);
            }
        }
        creds
    }

    /// `in_group_or_capable()`: member of group `gid`, or holds `CAP_FSETID`.
    fn in_group_or_capable(&self, gid: u32) -> bool {
        self.fsetid || self.groups.contains(&gid)
    }
}

/// Whether `caller` may keep the set-group-id bit of a file of group `gid` when it changes the
/// file's access ACL (the kernel's rule for `chmod` and `setfacl`).
pub fn may_keep_sgid(caller: Caller, gid: u32) -> bool {
    Credentials::of(caller).in_group_or_capable(gid)
}

/// The mode a regular file of mode `mode` and group `gid` must get after `caller` modified its
/// content (write, truncate, fallocate), or `None` to keep it: set-user-id always goes, and
/// set-group-id when group-executable or when the caller is outside the group; nothing changes
/// for a caller with `CAP_FSETID` (the kernel's `setattr_should_drop_suidgid`).
pub fn mode_after_modification(caller: Caller, mode: u32, gid: u32) -> Option<u32> {
    if mode & libc::S_IFMT != libc::S_IFREG || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return None;
    }
    let creds = Credentials::of(caller);
    if creds.fsetid {
        return None;
    }
    let mut kill = mode & libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !creds.in_group_or_capable(gid)) {
        kill |= libc::S_ISGID;
    }
    (kill != 0).then_some(mode & 0o7777 & !kill)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Caller {
        Caller {
            uid: std::fs::metadata("/proc/self")
                .map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m)),
            gid: 12345,
            pid: std::process::id(),
        }
    }

    #[test]
    fn groups_and_capabilities_come_from_proc() {
        let creds = Credentials::of(me());
        assert!(creds.groups.contains(&12345));
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let root = status
            .lines()
            .any(|l| l.starts_with("CapEff:") && !l.ends_with("0000000000000000"));
        assert_eq!(creds.fsetid, root);
    }

    #[test]
    fn an_unknown_process_is_judged_by_its_ids() {
        let gone = Caller {
            uid: 1000,
            gid: 1000,
            pid: 0,
        };
        assert!(!may_keep_sgid(gone, 50));
        assert!(may_keep_sgid(gone, 1000));
        let mode = libc::S_IFREG | libc::S_ISUID | libc::S_ISGID | 0o755;
        assert_eq!(mode_after_modification(gone, mode, 1000), Some(0o755));
        let mode = libc::S_IFREG | libc::S_ISGID | 0o745;
        assert_eq!(mode_after_modification(gone, mode, 1000), None);
        assert_eq!(mode_after_modification(gone, mode, 50), Some(0o745));
        let dir = libc::S_IFDIR | libc::S_ISGID | 0o775;
        assert_eq!(mode_after_modification(gone, dir, 50), None);
    }
}
