//! A disk image kept on a kmsfs mount, used as a volume: a 2 GiB sparse image attached with
//! `losetup`, `mkfs.ext4`, a tree of files written through it, `fstrim` punching holes down to
//! the cipher file (its allocated size drops), and `fsck.ext4 -f` clean after a remount of
//! kmsfs, with every remaining file intact.

mod common;

use common::{Env, pattern};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command and insists on success; returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over an image file; detached on drop.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(image: &Path) -> LoopDevice {
        let device = run("losetup", &["-f", "--show", Env::s(image)]);
        LoopDevice(device.trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// An ext4 filesystem mounted from a loop device; unmounted on drop.
struct VolumeMount(PathBuf);

impl VolumeMount {
    fn mount(device: &LoopDevice, at: &Path, options: &str) -> VolumeMount {
        std::fs::create_dir_all(at).expect("mkdir volume mount point");
        run("mount", &["-o", options, &device.0, Env::s(at)]);
        VolumeMount(at.to_path_buf())
    }
}

impl Drop for VolumeMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

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
        run("mkfs.ext4", &["-q", "-F", &device.0]);
        let mounted = VolumeMount::mount(&device, &volume, "rw");
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
        .args(["-f", "-n", &device.0])
        .output()
        .expect("run fsck.ext4");
    assert!(
        fsck.status.success(),
        "fsck.ext4 -f found damage: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let _mounted = VolumeMount::mount(&device, &volume, "ro");
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
