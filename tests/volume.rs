//! A disk image kept on a kmsfs mount, used as a volume: a 2 GiB sparse image attached with
//! `losetup`, `mkfs.ext4`, a tree of files written through it, `fstrim` punching holes down to
//! the cipher file (its allocated size drops), and `fsck.ext4 -f` clean after a remount of
//! kmsfs, with every remaining file intact.

mod common;

use common::volume::{LoopDevice, LoopVolume};
use common::{Env, pattern, run};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

const FILES: usize = 240;

fn file_len(i: usize) -> usize {
    // From a few bytes to ~300 KiB, so files span many volume blocks and partial ones.
    (i * 7919) % (300 * 1024) + 17
}

#[test]
fn a_disk_image_on_the_mount_works_as_a_volume_and_fstrim_frees_space() {
    let env = Env::new();
    env.init();
    let image = env.plain.join("disk.img");
    let volume = env.dir.path().join("volume");
    let guard = env.mount();
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(2 << 30))
        .expect("create a 2 GiB sparse image");
    let cipher_image = env.cipher_path("disk.img");
    {
        let device = LoopDevice::attach(&image);
        run("mkfs.ext4", &["-q", "-F", &device.device]);
        let mounted = LoopVolume::mount(device, &volume, "rw");
        for i in 0..FILES {
            let dir = volume.join(format!("d{}", i % 12));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join(format!("f{i}")), pattern(file_len(i), i as u64))
                .expect("write a file on the volume");
        }
        run("sync", &[]);
        let full = allocated(&cipher_image);
        // Half of the files go; fstrim hands their blocks back as discards, which the loop
        // driver turns into hole punches on the image, and kmsfs into holes in the cipher file.
        for i in (0..FILES).step_by(2) {
            std::fs::remove_file(volume.join(format!("d{}/f{i}", i % 12))).expect("rm");
        }
        run("sync", &[]);
        let trimmed = run("fstrim", &["-v", Env::s(&volume)]);
        run("sync", &[]);
        let after = allocated(&cipher_image);
        let freed: u64 = (0..FILES).step_by(2).map(|i| file_len(i) as u64).sum();
        println!(
            "cipher image allocated: {full} bytes after the writes, {after} after fstrim ({trimmed}); files removed: {freed} bytes"
        );
        assert!(
            after + freed / 2 < full,
            "fstrim must free at least half of the removed files' bytes in the cipher file: {full} -> {after}, {freed} removed"
        );
        drop(mounted);
    }
    guard.unmount();
    // A fresh mount: the image checks clean and every remaining file reads back intact.
    let _guard = env.mount();
    let device = LoopDevice::attach(&image);
    let fsck = Command::new("fsck.ext4")
        .args(["-f", "-n", &device.device])
        .output()
        .expect("run fsck.ext4");
    assert!(
        fsck.status.success(),
        "fsck.ext4 -f found damage: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let _mounted = LoopVolume::mount(device, &volume, "ro");
    for i in 0..FILES {
        let path = volume.join(format!("d{}/f{i}", i % 12));
        if i % 2 == 0 {
            assert!(!path.exists(), "{} was removed", path.display());
        } else {
            let data = std::fs::read(&path).expect("read a file back");
            assert!(
                data == pattern(file_len(i), i as u64),
                "{} differs",
                path.display()
            );
        }
    }
}
