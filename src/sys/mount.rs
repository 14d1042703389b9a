//! Mounts: detaching one, changing its attributes, and cloning the FUSE device it is served on.

use super::{cstr, cvt, open_path};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// `umount2(2)` with `MNT_DETACH`.
pub fn umount_lazy(path: &Path) -> io::Result<()> {
    let path = cstr(path.as_os_str())?;
    // SAFETY: NUL-terminated path.
    cvt(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// `mount_setattr(2)` of the mount at `path` alone: sets the mount attributes `set` and clears
/// `clear` (`MOUNT_ATTR_*`; the access-time mode is one field: clear `MOUNT_ATTR__ATIME` to set
/// it).
pub fn mount_setattr(path: &Path, set: u64, clear: u64) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let path = cstr(path.as_os_str())?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: NUL-terminated path and a `struct mount_attr` of the size passed.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as libc::c_int
    })
    .map(drop)
}

/// `FUSE_DEV_IOC_CLONE` (`_IOR(229, 0, uint32_t)`).
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

/// A new descriptor of the FUSE connection `device` serves: `/dev/fuse` opened again and bound
/// to it (`FUSE_DEV_IOC_CLONE`), so that each request thread reads and answers on its own queue.
pub fn clone_fuse_device(device: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let clone = open_path(c"/dev/fuse", libc::O_RDWR, 0)?;
    let mut source =
        u32::try_from(device.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the descriptor to clone) from the pointer,
    // which points to a live u32 for the duration of the call.
    cvt(unsafe { libc::ioctl(clone.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut source) })?;
    Ok(clone)
}
