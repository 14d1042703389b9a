//! The `kmsfs` command; run as `mount.fuse.kmsfs` or `mount.kmsfs` (links to it made by
//! `kmsfs install-helpers`), the mount helper mount(8) calls.

use kmsfs::cli::mount_helper;
use std::path::Path;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    if mount_helper::is_helper(Path::new(&program)) {
        let name = Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return mount_helper::main(&name, args.collect());
    }
    kmsfs::cli::main()
}
