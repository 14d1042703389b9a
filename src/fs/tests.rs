//! The filesystem without a mount: `CryptFs` driven directly, over a temporary cipher
//! directory and an embedded KMS with a cheap KDF.

use super::*;
use crate::cache::DekCache;
use crate::kms::embedded::{self};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

pub(super) const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

fn setup() -> (tempfile::TempDir, CryptFs) {
    setup_with(CryptFs::new)
}

pub(super) fn setup_with(
    make: impl FnOnce(&std::path::Path, KeyPath) -> FsResult<CryptFs>,
) -> (tempfile::TempDir, CryptFs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kms = embedded::for_tests(dir.path());
    let key = embedded::test_key(&kms, "k");
    let cipher = dir.path().join("cipher");
    std::fs::create_dir(&cipher).expect("mkdir");
    let keys = KeyPath::new(
        Arc::new(kms),
        DekCache::new(16, Duration::from_secs(60)),
        [7; 16],
        key,
    );
    let fs = make(&cipher, keys).expect("fs");
    (dir, fs)
}

fn create(fs: &CryptFs, name: &str) -> (u64, u64) {
    let (attr, fh) = fs
        .create(ROOT_INO, OsStr::new(name), 0o644, 0o022, libc::O_RDWR, ME)
        .expect("create");
    (attr.ino, fh)
}

#[test]
fn write_read_truncate_without_a_mount() {
    let (_dir, fs) = setup();
    let (ino, fh) = create(&fs, "a");
    assert_eq!(fs.getattr(ino).expect("attr").size, 0);
    assert_eq!(fs.read(fh, 0, 100).expect("read empty"), b"");
    fs.write(fh, 5000, b"xyz").expect("write past the end");
    assert_eq!(fs.getattr(ino).expect("attr").size, 5003);
    let data = fs.read(fh, 0, 10_000).expect("read");
    assert_eq!(data.len(), 5003);
    assert!(data[..5000].iter().all(|&b| b == 0));
    assert_eq!(&data[5000..], b"xyz");
    fs.setattr(
        ino,
        SetAttr {
            size: Some(4097),
            ..SetAttr::default()
        },
        Some(fh),
        ME,
    )
    .expect("shrink");
    assert_eq!(fs.read(fh, 4090, 100).expect("read").len(), 7);
    fs.setattr(
        ino,
        SetAttr {
            size: Some(0),
            ..SetAttr::default()
        },
        None,
        ME,
    )
    .expect("empty");
    assert_eq!(fs.getattr(ino).expect("attr").size, 0);
    fs.write(fh, 0, b"again")
        .expect("write after emptying makes a new header");
    assert_eq!(fs.read(fh, 0, 100).expect("read"), b"again");
    fs.release(fh);
}

#[test]
fn handles_of_one_file_share_its_key() {
    let (_dir, fs) = setup();
    let (ino, fh1) = create(&fs, "shared");
    let fh2 = fs
        .open(ino, libc::O_RDWR)
        .expect("second handle before any write");
    fs.write(fh1, 0, b"first").expect("write 1");
    fs.write(fh2, 5, b"second")
        .expect("write 2 uses the same DEK");
    assert_eq!(fs.read(fh1, 0, 100).expect("read"), b"firstsecond");
    fs.release(fh1);
    fs.release(fh2);
}

#[test]
fn namespace_errors_are_errnos() {
    let (_dir, fs) = setup();
    assert_eq!(
        fs.lookup(ROOT_INO, OsStr::new("missing")),
        Err(FsError(libc::ENOENT))
    );
    assert_eq!(
        fs.lookup(ROOT_INO, OsStr::new("kmsfs.conf")),
        Err(FsError(libc::ENOENT))
    );
    assert_eq!(
        fs.mkdir(ROOT_INO, OsStr::new("kmsfs.conf"), 0o755, 0, ME)
            .map(|a| a.ino),
        Err(FsError(libc::EPERM))
    );
    let (_, fh) = create(&fs, "f");
    assert_eq!(
        fs.create(
            ROOT_INO,
            OsStr::new("f"),
            0o644,
            0,
            libc::O_RDWR | libc::O_EXCL,
            ME
        )
        .map(|(a, _)| a.ino),
        Err(FsError(libc::EEXIST))
    );
    assert_eq!(fs.read(9999, 0, 1), Err(FsError(libc::EBADF)));
    assert_eq!(
        fs.fallocate(fh, 0, 4096, libc::FALLOC_FL_COLLAPSE_RANGE, ME),
        Err(FsError(libc::EOPNOTSUPP))
    );
    let dir = fs
        .mkdir(ROOT_INO, OsStr::new("d"), 0o755, 0, ME)
        .expect("mkdir");
    assert_eq!(fs.open(dir.ino, libc::O_RDONLY), Err(FsError(libc::EINVAL)));
    assert_eq!(
        fs.rmdir(ROOT_INO, OsStr::new("f")),
        Err(FsError(libc::ENOTDIR))
    );
}

#[test]
fn inodes_follow_files_across_renames_and_are_forgotten() {
    let (_dir, fs) = setup();
    let (ino, fh) = create(&fs, "before");
    fs.write(fh, 0, b"content").expect("write");
    let d = fs
        .mkdir(ROOT_INO, OsStr::new("d"), 0o755, 0, ME)
        .expect("mkdir");
    fs.rename(
        ROOT_INO,
        OsStr::new("before"),
        d.ino,
        OsStr::new("after"),
        0,
    )
    .expect("rename");
    assert_eq!(
        fs.lookup(d.ino, OsStr::new("after")).expect("lookup").ino,
        ino
    );
    assert_eq!(
        fs.read(fh, 0, 100).expect("read through the old handle"),
        b"content"
    );
    let count = fs.inode_count();
    fs.forget(ino, 2);
    assert_eq!(fs.inode_count(), count - 1);
    fs.release(fh);
}

#[test]
fn aligned_writes_sealed_ahead_keep_every_block_whole() {
    let (_dir, fs) = setup();
    let (_ino, fh) = create(&fs, "a");
    // A short last block, then an aligned write past it: the short block is re-sealed whole.
    fs.write(fh, 0, &[1u8; 4100]).expect("write");
    fs.write(fh, 3 * 4096, &[2u8; 8192])
        .expect("aligned write past the end");
    let mut expected = vec![1u8; 4100];
    expected.resize(3 * 4096, 0);
    expected.extend_from_slice(&[2u8; 8192]);
    assert_eq!(fs.read(fh, 0, 1 << 20).expect("read"), expected);
    // An aligned write over existing blocks, and one over the (now whole) last block.
    fs.write(fh, 4096, &[3u8; 4096]).expect("aligned overwrite");
    expected[4096..8192].fill(3);
    fs.write(fh, 4 * 4096, &[4u8; 4096])
        .expect("aligned overwrite of the last block");
    expected[4 * 4096..].fill(4);
    assert_eq!(fs.read(fh, 0, 1 << 20).expect("read"), expected);
    // Reads that start and end inside blocks.
    assert_eq!(
        fs.read(fh, 4000, 5000).expect("read"),
        expected[4000..9000].to_vec()
    );
    fs.release(fh);
}

#[test]
fn idle_inodes_give_their_descriptors_back_and_reopen_by_handle() {
    let budget = 64;
    let (_dir, fs) =
        setup_with(|cipher, keys| CryptFs::with_descriptor_budget(cipher, keys, budget));
    // 10 directories of 40 files, each looked up and kept (the kernel would hold them all).
    let mut files = Vec::new();
    for d in 0..10u64 {
        let dir = fs
            .mkdir(ROOT_INO, OsStr::new(&format!("d{d}")), 0o755, 0o022, ME)
            .expect("mkdir");
        for f in 0..40u64 {
            let name = format!("f{f}");
            let (attr, fh) = fs
                .create(dir.ino, OsStr::new(&name), 0o644, 0o022, libc::O_RDWR, ME)
                .expect("create");
            fs.write(fh, 0, format!("{d}/{f}").as_bytes())
                .expect("write");
            fs.release(fh);
            files.push((dir.ino, name, attr.ino, format!("{d}/{f}")));
        }
    }
    assert!(fs.inode_count() > 400);
    let open = fs.inode_descriptors();
    // Lookups sweep when past the budget, down to three quarters of it.
    assert!(
        open <= budget + 1,
        "{open} descriptors open, budget {budget}"
    );
    // Every inode still works, whether its descriptor is open or was closed.
    for (dir, name, ino, content) in &files {
        assert_eq!(
            fs.getattr(*ino).expect("getattr").size,
            content.len() as u64
        );
        let fh = fs.open(*ino, libc::O_RDONLY).expect("open");
        assert_eq!(fs.read(fh, 0, 100).expect("read"), content.as_bytes());
        fs.release(fh);
        let again = fs.lookup(*dir, OsStr::new(name)).expect("lookup");
        assert_eq!(again.ino, *ino, "a lookup finds the same node");
        fs.forget(*ino, 1);
    }
    // An open file, unlinked, still answers getattr (it keeps its descriptor).
    let (dir, name, ino, content) = &files[1];
    let fh = fs.open(*ino, libc::O_RDONLY).expect("open");
    fs.unlink(*dir, OsStr::new(name)).expect("unlink");
    // Reopening hundreds of inodes makes sweeps close descriptors again.
    for (_, _, other, _) in &files[2..] {
        fs.getattr(*other).expect("getattr");
    }
    assert_eq!(
        fs.getattr(*ino)
            .expect("getattr of the unlinked file")
            .nlink,
        0
    );
    assert_eq!(fs.read(fh, 0, 100).expect("read"), content.as_bytes());
    fs.release(fh);
    // A renamed inode with a closed descriptor reopens as itself, under its new name.
    let (dir, name, ino, content) = &files[0];
    fs.rename(*dir, OsStr::new(name), ROOT_INO, OsStr::new("moved"), 0)
        .expect("rename");
    for (dir, name, _, _) in &files[2..200] {
        fs.lookup(*dir, OsStr::new(name)).expect("lookup");
    }
    let fh = fs.open(*ino, libc::O_RDONLY).expect("open after rename");
    assert_eq!(fs.read(fh, 0, 100).expect("read"), content.as_bytes());
    fs.release(fh);
    assert_eq!(
        fs.lookup(ROOT_INO, OsStr::new("moved"))
            .expect("lookup")
            .ino,
        *ino
    );
}

#[test]
fn a_file_without_xattrs_is_remembered_until_one_is_set() {
    let (_dir, fs) = setup();
    let (ino, fh) = create(&fs, "tool");
    fs.release(fh);
    let cap = OsStr::new("security.capability");
    let acl = OsStr::new("system.posix_acl_access");
    for name in [cap, acl, cap] {
        assert_eq!(fs.getxattr(ino, name, 64), Err(FsError(libc::ENODATA)));
    }
    assert_eq!(fs.listxattr(ino, 0).expect("list"), b"");
    // A version 2 capability set (effective flag): cap_net_bind_service (bit 10) permitted.
    let mut value = vec![0x01, 0x00, 0x00, 0x02];
    value.extend_from_slice(&0x400u32.to_le_bytes());
    value.extend_from_slice(&[0; 12]);
    fs.setxattr(ino, cap, &value, 0, ME)
        .expect("setcap (needs root)");
    assert_eq!(fs.getxattr(ino, cap, 64).expect("the capability"), value);
    assert_eq!(fs.getxattr(ino, acl, 64), Err(FsError(libc::ENODATA)));
    assert_eq!(
        fs.listxattr(ino, 0).expect("list").len(),
        "security.capability\0".len()
    );
    fs.setxattr(ino, OsStr::new("user.a"), b"1", 0, ME)
        .expect("user.a");
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.a"), 8).expect("user.a"),
        b"1"
    );
    fs.removexattr(ino, cap).expect("remove");
    assert_eq!(fs.getxattr(ino, cap, 64), Err(FsError(libc::ENODATA)));
    assert_eq!(
        fs.getxattr(ino, OsStr::new("user.a"), 8)
            .expect("user.a kept"),
        b"1"
    );
}

#[test]
fn a_reused_inode_number_gets_a_new_generation() {
    use std::os::unix::fs::MetadataExt;
    let budget = 16;
    let (dir, fs) =
        setup_with(|cipher, keys| CryptFs::with_descriptor_budget(cipher, keys, budget));
    let cipher = dir.path().join("cipher");
    let (victim, fh) = create(&fs, "victim");
    let victim_generation = fs.getattr(victim).expect("getattr").generation;
    fs.write(fh, 0, b"old").expect("write");
    fs.release(fh);
    let victim_backing = std::fs::metadata(cipher.join("victim"))
        .expect("stat")
        .ino();
    // Enough other inodes that the victim's descriptor is closed (it is idle).
    for i in 0..3 * budget {
        let (_, fh) = create(&fs, &format!("filler{i}"));
        fs.release(fh);
    }
    assert!(fs.inode_descriptors() <= budget + 1);
    // Removed behind the mount's back while the kernel still holds the node (a removal through
    // the mount keeps the inode allocated: see the next test); ext4 then hands the freed inode
    // number to one of the next new files.
    std::fs::remove_file(cipher.join("victim")).expect("remove behind the mount's back");
    let mut reused = false;
    for i in 0..200 {
        let name = format!("new{i}");
        let (ino, fh) = create(&fs, &name);
        fs.write(fh, 0, b"new").expect("write");
        fs.release(fh);
        if std::fs::metadata(cipher.join(&name)).expect("stat").ino() == victim_backing {
            // The node id is the inode number; the generation tells the kernel it is another
            // file, so it retires its old node.
            assert_eq!(ino, victim, "the node id is the backing inode number");
            let attr = fs.getattr(ino).expect("getattr");
            assert_ne!(attr.generation, victim_generation, "a new generation");
            assert_eq!(attr.size, 3);
            let fh = fs.open(ino, libc::O_RDONLY).expect("open");
            assert_eq!(fs.read(fh, 0, 10).expect("read"), b"new");
            fs.release(fh);
            reused = true;
            break;
        }
    }
    assert!(
        reused,
        "ext4 did not reuse the inode number within 200 files"
    );
}

/// A node removed through the mount while the kernel still holds it (no FORGET yet) keeps its
/// backing inode, even when its descriptor had been closed for being idle: it still answers
/// `getattr` (with no link left), and no new file takes its inode number, which is its node id.
#[test]
fn a_node_removed_through_the_mount_keeps_its_inode_until_forgotten() {
    use std::os::unix::fs::MetadataExt;
    let budget = 16;
    let (dir, fs) =
        setup_with(|cipher, keys| CryptFs::with_descriptor_budget(cipher, keys, budget));
    let cipher = dir.path().join("cipher");
    let mut victims = Vec::new();
    for name in ["by-unlink", "by-rename", "by-rmdir"] {
        let ino = if name == "by-rmdir" {
            fs.mkdir(ROOT_INO, OsStr::new(name), 0o755, 0o022, ME)
                .expect("mkdir")
                .ino
        } else {
            let (ino, fh) = create(&fs, name);
            fs.write(fh, 0, b"old").expect("write");
            fs.release(fh);
            ino
        };
        let backing = std::fs::symlink_metadata(cipher.join(name))
            .expect("stat")
            .ino();
        victims.push((name, ino, backing));
    }
    let (_, fh) = create(&fs, "replacement");
    fs.release(fh);
    // Enough other inodes that the victims' descriptors are closed (they are idle).
    for i in 0..3 * budget {
        let (_, fh) = create(&fs, &format!("filler{i}"));
        fs.release(fh);
    }
    assert!(fs.inode_descriptors() <= budget + 1);
    fs.unlink(ROOT_INO, OsStr::new("by-unlink"))
        .expect("unlink");
    fs.rename(
        ROOT_INO,
        OsStr::new("replacement"),
        ROOT_INO,
        OsStr::new("by-rename"),
        0,
    )
    .expect("rename over");
    fs.rmdir(ROOT_INO, OsStr::new("by-rmdir")).expect("rmdir");
    for (name, ino, _) in &victims {
        let attr = fs
            .getattr(*ino)
            .unwrap_or_else(|e| panic!("getattr of {name}, removed but held: {e:?}"));
        assert_eq!((attr.ino, attr.nlink), (*ino, 0), "{name}");
    }
    for i in 0..200 {
        let name = format!("new{i}");
        let (_, fh) = create(&fs, &name);
        fs.release(fh);
        let backing = std::fs::metadata(cipher.join(&name)).expect("stat").ino();
        assert!(
            victims.iter().all(|(_, _, held)| *held != backing),
            "{name} took the inode number of a node the kernel still holds"
        );
    }
    // Once forgotten, the inodes go.
    for (_, ino, _) in &victims {
        fs.forget(*ino, 1);
    }
    assert!(fs.inode_descriptors() <= budget + 1);
}

#[test]
fn punched_and_zeroed_ranges_read_as_zeros_and_free_whole_blocks() {
    let (dir, fs) = setup();
    let (_, fh) = create(&fs, "image");
    let size = 64 * 4096 + 100;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
    fs.write(fh, 0, &data).expect("write");
    fs.fsync(fh, false).expect("fsync");
    let backing = dir.path().join("cipher/image");
    let blocks_before = std::fs::metadata(&backing).expect("stat").blocks();
    let mut model = data.clone();
    // A punch from the middle of block 1 to the middle of block 40: two partial blocks
    // rewritten, 38 whole ones freed.
    let (from, to) = (4096 + 10, 40 * 4096 + 7);
    fs.fallocate(fh, from, to - from, PUNCH, ME).expect("punch");
    model[from as usize..to as usize].fill(0);
    // Zeroing the tail, the short last block included, and past the end without KEEP_SIZE.
    let from = 60 * 4096 + 3;
    fs.fallocate(fh, from, size - from + 5000, libc::FALLOC_FL_ZERO_RANGE, ME)
        .expect("zero range");
    model[from as usize..].fill(0);
    model.resize(size as usize + 5000, 0);
    let read = fs.read(fh, 0, model.len() as u32 + 10).expect("read");
    assert_eq!(read.len(), model.len());
    assert!(read == model, "content after punch and zero range");
    assert_eq!(
        fs.getattr(fs_ino(&fs, "image")).expect("getattr").size,
        model.len() as u64
    );
    let blocks_after = std::fs::metadata(&backing).expect("stat").blocks();
    // 38 cipher blocks punched: at least 34 whole 4 KiB backing blocks freed, even after
    // the zeroed tail was allocated.
    assert!(
        blocks_after + 34 * 8 <= blocks_before,
        "backing blocks freed: {blocks_before} -> {blocks_after}"
    );
    // Every block still authenticates or is a hole: a fresh read through a new handle agrees.
    let fh2 = fs.open(fs_ino(&fs, "image"), libc::O_RDONLY).expect("open");
    assert!(fs.read(fh2, 0, model.len() as u32).expect("read") == model);
    // Holes are where the zeros are: data at 0, a hole from block 2 (block 1 was rewritten
    // with zeros at its end only), data again at the partial block 40.
    assert_eq!(fs.seek(fh2, 0, libc::SEEK_DATA), Ok(0));
    assert_eq!(fs.seek(fh2, 0, libc::SEEK_HOLE), Ok(2 * 4096));
    assert_eq!(fs.seek(fh2, 2 * 4096, libc::SEEK_DATA), Ok(40 * 4096));
    assert_eq!(
        fs.seek(fh2, model.len() as u64, libc::SEEK_DATA),
        Err(FsError(libc::ENXIO))
    );
    fs.release(fh2);
    fs.release(fh);
}

const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

fn fs_ino(fs: &CryptFs, name: &str) -> u64 {
    fs.lookup(ROOT_INO, OsStr::new(name)).expect("lookup").ino
}

#[test]
fn a_listing_from_offset_zero_sees_the_directory_as_it_is_now() {
    let (_dir, fs) = setup();
    for name in ["a", "b", "c"] {
        let (_, fh) = create(&fs, name);
        fs.release(fh);
    }
    let dh = fs.opendir(ROOT_INO).expect("opendir");
    let list = |fs: &CryptFs, from: u64| {
        let mut seen = Vec::new();
        fs.readdir(dh, from, |e, next| {
            seen.push((e.name.to_string_lossy().into_owned(), e.ino, next));
            false
        })
        .expect("readdir");
        seen
    };
    let first = list(&fs, 0);
    let names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(
        names.contains(&"a") && !names.contains(&"kmsfs.conf"),
        "{names:?}"
    );
    // Each entry's inode number is the one lookup gives.
    for (name, ino, _) in &first {
        if name != "." && name != ".." {
            assert_eq!(*ino, fs_ino(&fs, name), "{name}");
        }
    }
    // Changed after opendir: a new listing sees it, and a saved position still works.
    let (_, fh) = create(&fs, "d");
    fs.release(fh);
    fs.unlink(ROOT_INO, OsStr::new("a")).expect("unlink");
    let again: Vec<String> = list(&fs, 0).into_iter().map(|(n, _, _)| n).collect();
    assert!(again.contains(&"d".to_string()) && !again.contains(&"a".to_string()));
    let (_, _, after_first) = &first[0];
    let rest = list(&fs, *after_first);
    assert_eq!(
        rest.len() + 1,
        again.len(),
        "resuming after the first entry"
    );
    fs.releasedir(dh);
}

#[test]
fn new_nodes_take_the_callers_umask_only() {
    let (dir, fs) = setup();
    let cipher = dir.path().join("cipher");
    let mode = |name: &str| {
        std::fs::symlink_metadata(cipher.join(name))
            .expect("stat")
            .mode()
    };
    let (_, fh) = fs
        .create(ROOT_INO, OsStr::new("f0"), 0o666, 0, libc::O_RDWR, ME)
        .expect("create");
    fs.release(fh);
    fs.mkdir(ROOT_INO, OsStr::new("d0"), 0o777, 0, ME)
        .expect("mkdir");
    fs.mkdir(ROOT_INO, OsStr::new("d27"), 0o777, 0o027, ME)
        .expect("mkdir");
    fs.mknod(
        ROOT_INO,
        OsStr::new("p"),
        libc::S_IFIFO | 0o777,
        0o002,
        0,
        ME,
    )
    .expect("mknod");
    assert_eq!(mode("f0") & 0o7777, 0o666);
    assert_eq!(mode("d0") & 0o7777, 0o777);
    assert_eq!(mode("d27") & 0o7777, 0o750);
    assert_eq!(mode("p") & 0o7777, 0o775);
}

#[test]
fn a_forgotten_node_is_found_again_by_its_number_and_a_removed_one_is_stale() {
    use std::os::unix::fs::MetadataExt;
    let (dir, fs) = setup();
    let (ino, fh) = create(&fs, "kept");
    fs.write(fh, 0, b"by number").expect("write");
    fs.release(fh);
    // The node id is the backing inode number.
    let backing = std::fs::metadata(dir.path().join("cipher/kept")).expect("stat");
    assert_eq!(ino, backing.ino());
    let generation = fs.getattr(ino).expect("getattr").generation;
    // The kernel forgets it (as after a remount), then asks for it by id: a lookup of ".".
    let count = fs.inode_count();
    fs.forget(ino, 2);
    assert_eq!(fs.inode_count(), count - 1);
    let found = fs.lookup(ino, OsStr::new(".")).expect("found by number");
    assert_eq!(
        (found.ino, found.generation, found.size),
        (ino, generation, 9)
    );
    let fh = fs.open(ino, libc::O_RDONLY).expect("open");
    assert_eq!(fs.read(fh, 0, 100).expect("read"), b"by number");
    fs.release(fh);
    // Removed and forgotten: stale, never another file.
    fs.unlink(ROOT_INO, OsStr::new("kept")).expect("unlink");
    fs.forget(ino, 1);
    assert_eq!(
        fs.lookup(ino, OsStr::new(".")).map(|a| a.ino),
        Err(FsError(libc::ESTALE))
    );
}

#[test]
fn an_unnamed_file_is_encrypted_and_named_by_a_link() {
    let (dir, fs) = setup();
    let (attr, fh) = fs
        .tmpfile(ROOT_INO, libc::S_IFREG | 0o600, 0o022, libc::O_RDWR, ME)
        .expect("tmpfile");
    assert_eq!(attr.nlink, 0);
    assert_eq!(attr.perm, 0o600);
    fs.write(fh, 0, b"secret words").expect("write");
    let listed = std::fs::read_dir(dir.path().join("cipher"))
        .expect("list")
        .count();
    assert_eq!(listed, 0, "an unnamed file has no name on disk either");
    let linked = fs
        .link(attr.ino, ROOT_INO, OsStr::new("named"))
        .expect("link");
    assert_eq!((linked.ino, linked.nlink), (attr.ino, 1));
    fs.release(fh);
    let on_disk = std::fs::read(dir.path().join("cipher/named")).expect("read cipher file");
    assert!(!on_disk.windows(6).any(|w| w == b"secret"));
    let fh = fs.open(attr.ino, libc::O_RDONLY).expect("open");
    assert_eq!(fs.read(fh, 0, 100).expect("read"), b"secret words");
    fs.release(fh);
    let (excl, fh) = fs
        .tmpfile(
            ROOT_INO,
            libc::S_IFREG | 0o600,
            0,
            libc::O_RDWR | libc::O_EXCL,
            ME,
        )
        .expect("tmpfile O_EXCL");
    assert_eq!(
        fs.link(excl.ino, ROOT_INO, OsStr::new("never")),
        Err(FsError(libc::ENOENT)),
        "O_EXCL: never linkable"
    );
    fs.release(fh);
}

/// Cuts the backing file of `name` to `cipher_len` bytes, as a crash in a write may.
fn tear(dir: &tempfile::TempDir, name: &str, cipher_len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("cipher").join(name))
        .expect("open backing file");
    file.set_len(cipher_len).expect("tear");
}

#[test]
fn a_torn_file_opens_for_direct_reads_shows_its_complete_blocks_and_ends_in_eio() {
    let (dir, fs) = setup();
    let (ino, fh) = create(&fs, "t");
    let data: Vec<u8> = (0..3 * 4096 + 700).map(|i| (i % 251) as u8).collect();
    fs.write(fh, 0, &data).expect("write");
    fs.release(fh);
    tear(&dir, "t", crate::format::block_cipher_offset(3) + 17);
    assert_eq!(
        fs.getattr(ino).expect("attr").size,
        3 * 4096,
        "the torn block left out"
    );
    let opened = fs.open_file(ino, libc::O_RDONLY).expect("open");
    assert!(
        opened.torn,
        "the kernel must be told to send reads at the end"
    );
    assert_eq!(
        fs.read(opened.fh, 0, 1 << 20).expect("read"),
        data[..3 * 4096]
    );
    assert_eq!(fs.read(opened.fh, 3 * 4096, 4096), Err(FsError(libc::EIO)));
    fs.release(opened.fh);
    let sound = create(&fs, "sound");
    fs.write(sound.1, 0, b"fine").expect("write");
    fs.release(sound.1);
    let opened = fs.open_file(sound.0, libc::O_RDONLY).expect("open");
    assert!(!opened.torn);
    fs.release(opened.fh);
}

#[test]
fn a_write_to_a_torn_file_cuts_the_tail_first() {
    let (dir, fs) = setup();
    let (ino, fh) = create(&fs, "log");
    let data: Vec<u8> = (0..2 * 4096 + 10).map(|i| (i % 253) as u8).collect();
    fs.write(fh, 0, &data).expect("write");
    fs.release(fh);
    let backing = dir.path().join("cipher/log");
    for (i, change) in ["append", "truncate up", "aligned write past a hole"]
        .into_iter()
        .enumerate()
    {
        tear(
            &dir,
            "log",
            crate::format::block_cipher_offset(2) + 1 + i as u64,
        );
        let fh = fs.open(ino, libc::O_RDWR).expect("open");
        let mut expected = data[..2 * 4096].to_vec();
        match change {
            "append" => {
                fs.write(fh, 2 * 4096, b"appended").expect("append");
                expected.extend_from_slice(b"appended");
            }
            "truncate up" => {
                fs.setattr(
                    ino,
                    SetAttr {
                        size: Some(3 * 4096 + 5),
                        ..SetAttr::default()
                    },
                    Some(fh),
                    ME,
                )
                .expect("truncate");
                expected.resize(3 * 4096 + 5, 0);
            }
            _ => {
                fs.write(fh, 4 * 4096, &[7u8; 4096]).expect("write");
                expected.resize(4 * 4096, 0);
                expected.extend_from_slice(&[7u8; 4096]);
            }
        }
        assert_eq!(fs.read(fh, 0, 1 << 20).expect("read"), expected, "{change}");
        assert_eq!(
            check_file(&backing, &fs.keys).expect("check"),
            FileCheck::Clean,
            "{change}: no torn byte left inside the file"
        );
        fs.release(fh);
        // Back to the original content for the next change.
        let fh = fs.open(ino, libc::O_RDWR | libc::O_TRUNC).expect("open");
        fs.write(fh, 0, &data).expect("write");
        fs.release(fh);
    }
}

#[test]
fn check_and_repair_name_the_torn_block_and_cut_only_the_tail() {
    let (dir, fs) = setup();
    let (_, fh) = create(&fs, "r");
    let data: Vec<u8> = (0..5 * 4096).map(|i| (i % 241) as u8).collect();
    fs.write(fh, 0, &data).expect("write");
    fs.release(fh);
    let backing = dir.path().join("cipher/r");
    tear(&dir, "r", crate::format::block_cipher_offset(4) + 9);
    let found = check_file(&backing, &fs.keys).expect("check");
    assert_eq!(
        found.to_string_or_clean(),
        "torn tail: block 4 is torn: 9 bytes, fewer than a block holds"
    );
    let repair = repair_file(&backing, &fs.keys).expect("repair");
    assert_eq!(repair.found, found);
    assert_eq!(repair.left, None);
    let cut = repair.cut.expect("cut");
    assert_eq!(
        (cut.old_cipher_size, cut.new_cipher_size),
        (
            crate::format::block_cipher_offset(4) + 9,
            crate::format::block_cipher_offset(4)
        )
    );
    assert_eq!(
        check_file(&backing, &fs.keys).expect("check"),
        FileCheck::Clean
    );
    let again = repair_file(&backing, &fs.keys).expect("repair");
    assert_eq!(
        (again.found, again.cut, again.left),
        (FileCheck::Clean, None, None)
    );
}

impl FileCheck {
    fn to_string_or_clean(&self) -> String {
        match self {
            FileCheck::Clean => "clean".into(),
            FileCheck::Damaged(damage) => damage.to_string(),
        }
    }
}

/// The environment variable that makes [`as_user_child`] run: set only by the test that starts
/// this test binary again under `setpriv`.
const AS_USER_CHILD: &str = "KMSFS_FS_TEST_AS_USER";

/// The user the filesystem runs as in the child test.
const NOT_ROOT: u32 = 65534;

/// What a daemon that is not root does for `mkdir -m 0555`: it makes a backing directory it
/// cannot write into, and must still give it an id. Runs only as the child of the test below.
#[test]
fn as_user_child() {
    if std::env::var_os(AS_USER_CHILD).is_none() {
        return;
    }
    assert_eq!(
        std::fs::metadata("/proc/self").expect("self").uid(),
        NOT_ROOT
    );
    let key = crate::format::FsKey::random();
    let (dir, fs) = setup_with(|cipher, keys| {
        CryptFs::new(cipher, keys)
            .map(|fs| fs.with_encrypted_names(crate::format::NameCipher::new(&key)))
    });
    let caller = Caller {
        uid: NOT_ROOT,
        gid: NOT_ROOT,
        pid: 0,
    };
    let made = fs
        .mkdir(ROOT_INO, OsStr::new("ro"), 0o555, 0o022, caller)
        .expect("mkdir -m 0555");
    assert_eq!(made.perm, 0o555, "the mode asked for, in the end");
    let backing = std::fs::read_dir(dir.path().join("cipher"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| p.is_dir())
        .expect("the new backing directory");
    assert_eq!(
        std::fs::metadata(&backing).expect("stat").mode() & 0o7777,
        0o555
    );
    assert_eq!(
        std::fs::read_link(backing.join("kmsfs.dirid"))
            .expect("its id link")
            .as_os_str()
            .len(),
        22
    );
    // It lists (its id known).
    let ro = made.ino;
    let fh = fs.opendir(ro).expect("opendir");
    let mut names = Vec::new();
    fs.readdir(fh, 0, |e, _| {
        names.push(e.name.clone());
        false
    })
    .expect("readdir");
    assert_eq!(names, [".", ".."]);
    println!("ran as user {NOT_ROOT}");
}

#[test]
fn a_daemon_that_is_not_root_gives_a_new_read_only_directory_its_id() {
    if !is_root() {
        // The child needs root to be started as another user.
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={NOT_ROOT}"),
            &format!("--regid={NOT_ROOT}"),
            "--clear-groups",
        ])
        .arg(&exe)
        .args(["--exact", "fs::tests::as_user_child", "--nocapture"])
        .env(AS_USER_CHILD, "1")
        .env("TMPDIR", std::env::temp_dir())
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ran as user {NOT_ROOT}")),
        "the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_directory_id_file_name_for_system_calls_is_the_format_s() {
    assert_eq!(
        naming::DIR_ID_FILE_C.to_bytes(),
        crate::format::DIR_ID_FILE.as_bytes()
    );
}

/// How the directory of [`rmdir_of_a_directory_that_is_not_empty_keeps_its_id`] keeps its id.
#[derive(Debug, Clone, Copy, PartialEq)]
enum IdKept {
    /// Link and copy, the id read by the mount (the fast path of `rmdir`).
    Copied,
    /// The copy removed behind the mount's back after it read the id: the link comes back from
    /// the id it read.
    CopyLostWhileKnown,
    /// The link alone, on a node whose id the mount has not read: listed before the link goes.
    LinkOnly,
}

#[test]
fn rmdir_of_a_directory_that_is_not_empty_keeps_its_id() {
    let key = crate::format::FsKey::random();
    let (dir, fs) = setup_with(|cipher, keys| {
        CryptFs::new(cipher, keys)
            .map(|fs| fs.with_encrypted_names(crate::format::NameCipher::new(&key)))
    });
    let has_copy = |backing: &std::path::Path| {
        let path = crate::sys::cstr(backing.as_os_str()).expect("path");
        crate::sys::getxattr(&path, naming::DIR_ID_XATTR, &mut [0; 17], false).is_ok()
    };
    for kept in [IdKept::Copied, IdKept::CopyLostWhileKnown, IdKept::LinkOnly] {
        let name = OsString::from(format!("{kept:?}"));
        let name = name.as_os_str();
        let made = fs.mkdir(ROOT_INO, name, 0o755, 0, ME).expect("mkdir");
        fs.mknod(
            made.ino,
            OsStr::new("inside"),
            libc::S_IFREG | 0o644,
            0,
            0,
            ME,
        )
        .expect("mknod");
        let backing = std::fs::read_dir(dir.path().join("cipher"))
            .expect("list")
            .map(|e| e.expect("entry").path())
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == made.ino))
            .expect("the backing directory");
        let link = backing.join(crate::format::DIR_ID_FILE);
        let id = std::fs::read_link(&link).expect("its id link");
        if kept != IdKept::Copied {
            let path = crate::sys::cstr(backing.as_os_str()).expect("path");
            crate::sys::removexattr(&path, naming::DIR_ID_XATTR, false).expect("drop the copy");
        }
        if kept == IdKept::LinkOnly {
            // The mount forgets the node; the next lookup makes a new one, id unread.
            fs.forget(made.ino, 1);
            assert!(fs.inodes.get(made.ino).is_err(), "forgotten");
            let again = fs.lookup(ROOT_INO, name).expect("lookup");
            assert!(
                fs.inodes
                    .get(again.ino)
                    .expect("node")
                    .dir_id
                    .get()
                    .is_none()
            );
        }
        let refused = fs.rmdir(ROOT_INO, name).expect_err("not empty");
        assert_eq!(refused.0, libc::ENOTEMPTY, "{kept:?}");
        assert_eq!(
            std::fs::read_link(&link).expect("the link back"),
            id,
            "{kept:?}"
        );
        assert_eq!(
            has_copy(&backing),
            kept == IdKept::Copied,
            "{kept:?}: no copy is made by a refusal"
        );
        let ino = fs.lookup(ROOT_INO, name).expect("lookup").ino;
        fs.unlink(ino, OsStr::new("inside")).expect("rm");
        fs.rmdir(ROOT_INO, name).expect("rmdir");
        assert!(!backing.exists(), "{kept:?}");
    }
}

/// Flips one byte of block `index`'s ciphertext in the backing file of `name`.
fn damage_block(dir: &tempfile::TempDir, name: &str, index: u64) {
    let path = dir.path().join("cipher").join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open backing file");
    let at = crate::format::block_cipher_offset(index) + 20;
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).expect("read");
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x40], at).expect("flip");
}

#[test]
fn a_file_grows_past_a_damaged_last_block_which_stays_eio() {
    for last_len in [904u64, 4096] {
        for change in ["append", "truncate up", "aligned write past a hole"] {
            let (dir, fs) = setup();
            let (ino, fh) = create(&fs, "log");
            let data: Vec<u8> = (0..4096 + last_len).map(|i| (i % 251) as u8).collect();
            fs.write(fh, 0, &data).expect("write");
            fs.release(fh);
            // What a daemon killed while rewriting the last block in place leaves.
            damage_block(&dir, "log", 1);
            let fh = fs.open(ino, libc::O_RDWR).expect("open");
            let what = format!("{change}, last block of {last_len} bytes");
            let grown = match change {
                "append" => fs.write(fh, data.len() as u64, b"appended").map(drop),
                "truncate up" => fs
                    .setattr(
                        ino,
                        SetAttr {
                            size: Some(4 * 4096 + 5),
                            ..SetAttr::default()
                        },
                        Some(fh),
                        ME,
                    )
                    .map(drop),
                _ => fs.write(fh, 4 * 4096, &[7u8; 4096]).map(drop),
            };
            if change == "append" && last_len < 4096 {
                // The append lands in the damaged block itself, whose other bytes are lost.
                assert_eq!(grown, Err(FsError(libc::EIO)), "{what}");
                assert_eq!(fs.getattr(ino).expect("attr").size, data.len() as u64);
                fs.release(fh);
                continue;
            }
            assert_eq!(grown, Ok(()), "{what}: the file grows past the damage");
            assert_eq!(
                fs.read(fh, 0, 4096).expect("the block before"),
                data[..4096],
                "{what}"
            );
            assert_eq!(
                fs.read(fh, 4096, 10),
                Err(FsError(libc::EIO)),
                "{what}: the damaged block still reads EIO, never other bytes"
            );
            let (after, expected): (u64, &[u8]) = match change {
                "append" => (data.len() as u64, b"appended"),
                "truncate up" => (4 * 4096, &[0u8; 5]),
                _ => (4 * 4096, &[7u8; 4096]),
            };
            assert_eq!(
                fs.read(fh, after, 1 << 20).expect("what was added"),
                expected,
                "{what}"
            );
            fs.release(fh);
            let backing = dir.path().join("cipher/log");
            match check_file(&backing, &fs.keys).expect("check") {
                FileCheck::Damaged(crate::fs::check::Damage::Blocks(blocks)) => {
                    assert_eq!(blocks.failed, [1], "{what}: fsck names the block")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
