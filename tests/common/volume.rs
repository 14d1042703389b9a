//! Block devices for tests: a loop device over an image file, and an ext4 filesystem mounted
//! from one; each undone on drop (unmounted, lazily when busy, then detached), even when the
//! test fails.

use super::{Env, is_mounted, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over an image file; detached on drop.
pub struct LoopDevice {
    /// The device (`/dev/loopN`).
    pub device: String,
    /// Its `MAJ:MIN`.
    pub dev: String,
}

impl LoopDevice {
    /// Attaches `image` to a free loop device.
    pub fn attach(image: &Path) -> LoopDevice {
        let device = run("losetup", &["-f", "--show", Env::s(image)])
            .trim()
            .to_string();
        // Made first, so that a failure below still detaches it.
        let mut attached = LoopDevice {
            device,
            dev: String::new(),
        };
        let name = attached.device.trim_start_matches("/dev/");
        attached.dev = std::fs::read_to_string(format!("/sys/block/{name}/dev"))
            .expect("the loop device's MAJ:MIN")
            .trim()
            .to_string();
        attached
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).output();
    }
}

/// A filesystem mounted from a loop device at a directory; unmounted, then detached, on drop.
pub struct LoopVolume {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The device under it (detached after the unmount: fields drop in order).
    pub loop_device: LoopDevice,
}

impl LoopVolume {
    /// Makes a sparse `size`-byte image at `image`, attaches it, formats it as ext4 and mounts
    /// it at `at` with mount `options`.
    pub fn new(image: &Path, size: u64, at: &Path, options: &str) -> LoopVolume {
        std::fs::File::create(image)
            .and_then(|f| f.set_len(size))
            .expect("create the volume image");
        let device = LoopDevice::attach(image);
        run("mkfs.ext4", &["-q", "-F", &device.device]);
        LoopVolume::mount(device, at, options)
    }

    /// Mounts the filesystem on `device` at `at` with mount `options`.
    pub fn mount(device: LoopDevice, at: &Path, options: &str) -> LoopVolume {
        std::fs::create_dir_all(at).expect("mkdir the volume's mount point");
        run("mount", &["-o", options, &device.device, Env::s(at)]);
        LoopVolume {
            mountpoint: at.to_path_buf(),
            loop_device: device,
        }
    }
}

impl Drop for LoopVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).output();
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .output();
        }
    }
}
