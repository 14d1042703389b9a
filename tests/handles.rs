//! Inode numbers and file handles through a real mount: one number per file whether read by
//! `stat` or `readdir`, the same after a remount, and `name_to_handle_at` handles that open the
//! same file after a remount (what an NFS export of the mount needs).

mod common;

use common::Env;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;

/// `struct file_handle` with room for any handle.
#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; 128],
}

fn name_to_handle(path: &Path) -> Handle {
    let cpath = CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut handle = Handle {
        bytes: 128,
        kind: 0,
        data: [0; 128],
    };
    let mut mount_id = 0;
    // SAFETY: a valid path and a `struct file_handle` with `bytes` bytes of room.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            cpath.as_ptr(),
            (&mut handle as *mut Handle).cast(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at: {}",
        std::io::Error::last_os_error()
    );
    handle
}

fn open_by_handle(mount: &Path, handle: &mut Handle) -> std::io::Result<OwnedFd> {
    let dir = std::fs::File::open(mount)?;
    // SAFETY: an open directory of the mount and a handle the kernel filled in.
    let fd = unsafe {
        libc::open_by_handle_at(
            dir.as_raw_fd(),
            (handle as *mut Handle).cast(),
            libc::O_RDONLY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn listed_inodes(dir: &Path) -> Vec<(String, u64)> {
    let mut list: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), e.ino())
        })
        .collect();
    list.sort();
    list
}

#[test]
fn one_inode_number_per_file_from_stat_and_readdir_and_across_remounts() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let plain = env.plain.clone();
    std::fs::create_dir(plain.join("dir")).expect("mkdir");
    std::fs::write(plain.join("dir/file"), b"content").expect("write");
    std::os::unix::fs::symlink("file", plain.join("dir/link")).expect("symlink");
    std::fs::hard_link(plain.join("dir/file"), plain.join("hard")).expect("link");
    let listed = listed_inodes(&plain.join("dir"));
    for (name, ino) in &listed {
        let st = std::fs::symlink_metadata(plain.join("dir").join(name)).expect("stat");
        assert_eq!(st.ino(), *ino, "{name}: stat and readdir disagree");
    }
    assert_eq!(
        std::fs::metadata(plain.join("hard")).expect("stat").ino(),
        std::fs::metadata(plain.join("dir/file"))
            .expect("stat")
            .ino(),
        "hard links share one number"
    );
    mount.unmount();
    let _mount = env.mount();
    assert_eq!(
        listed_inodes(&plain.join("dir")),
        listed,
        "the same numbers after a remount"
    );
}

#[test]
fn file_handles_open_the_same_file_after_a_remount() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let plain = env.plain.clone();
    std::fs::create_dir_all(plain.join("a/b")).expect("mkdir");
    std::fs::write(plain.join("a/b/file"), b"through a handle").expect("write");
    let mut file_handle = name_to_handle(&plain.join("a/b/file"));
    let mut dir_handle = name_to_handle(&plain.join("a/b"));
    // The handle works while mounted, and again after a remount, when the daemon has never
    // heard of the node: it finds it by its number.
    let fd = open_by_handle(&plain, &mut file_handle).expect("open by handle");
    assert_eq!(
        std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("read"),
        b"through a handle"
    );
    drop(fd);
    mount.unmount();
    let mount = env.mount();
    let fd = open_by_handle(&plain, &mut file_handle).expect("open by handle after remount");
    assert_eq!(
        std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("read"),
        b"through a handle"
    );
    drop(fd);
    let dir = open_by_handle(&plain, &mut dir_handle).expect("a directory by handle");
    let st = std::fs::metadata(format!("/proc/self/fd/{}", dir.as_raw_fd())).expect("stat");
    assert!(st.is_dir());
    drop(dir);
    // A removed file's handle is stale, never another file.
    std::fs::remove_file(plain.join("a/b/file")).expect("rm");
    mount.unmount();
    let _mount = env.mount();
    for i in 0..20 {
        std::fs::write(plain.join(format!("a/new{i}")), b"other").expect("write");
    }
    match open_by_handle(&plain, &mut file_handle) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
        Ok(fd) => panic!(
            "a removed file's handle opened {:?}",
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        ),
    }
}
