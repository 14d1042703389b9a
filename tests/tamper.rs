//! Tampering with the cipher directory: every damaged range reads as EIO (never wrong bytes),
//! the rest of the filesystem keeps working, and fsck names each damaged file.

mod common;

use common::{Env, pattern};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

const BLOCK: u64 = 4096;
const CIPHER_BLOCK: u64 = 4124;

fn block_at(index: u64) -> u64 {
    512 + index * CIPHER_BLOCK
}

fn rewrite(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open cipher file");
    f.write_all_at(bytes, offset).expect("tamper");
    f.sync_all().expect("sync");
}

fn read_range(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn assert_eio(path: &Path, offset: u64, len: usize, what: &str) {
    match read_range(path, offset, len) {
        Ok(_) => panic!("{what}: read of the damaged range succeeded"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}"),
    }
}

#[test]
fn tampered_blocks_and_headers_read_as_eio_and_fsck_names_them() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    let size = 5 * BLOCK as usize;
    let names = [
        "flip",
        "swap",
        "foreign-block",
        "foreign-header",
        "header-byte",
        "intact",
        "other",
    ];
    for (i, name) in names.iter().enumerate() {
        fs::write(env.plain.join(name), pattern(size, i as u64)).expect("write");
    }
    // Damage at rest: the kernel keeps a file's pages cached across opens, and pages written
    // through the mount are authentic; what the mount must catch is what it reads from disk.
    fs::write(env.plain.join("new-after-tamper"), b"").expect("name it now");
    let cipher = env.cipher_map();
    mount.unmount();
    let c = |name: &str| cipher[Path::new(name)].clone();
    let p = |name: &str| env.plain.join(name);
    let read_cipher = |name: &str, off: u64, len: u64| {
        read_range(&c(name), off, len as usize).expect("read cipher")
    };

    // 1. A flipped bit in block 2.
    let mut byte = read_cipher("flip", block_at(2) + 100, 1);
    byte[0] ^= 0x01;
    rewrite(&c("flip"), block_at(2) + 100, &byte);
    // 2. Blocks 1 and 3 swapped.
    let (b1, b3) = (
        read_cipher("swap", block_at(1), CIPHER_BLOCK),
        read_cipher("swap", block_at(3), CIPHER_BLOCK),
    );
    rewrite(&c("swap"), block_at(1), &b3);
    rewrite(&c("swap"), block_at(3), &b1);
    // 3. Block 1 copied from another file at the same position.
    rewrite(
        &c("foreign-block"),
        block_at(1),
        &read_cipher("other", block_at(1), CIPHER_BLOCK),
    );
    // 4. The header copied from another file.
    rewrite(&c("foreign-header"), 0, &read_cipher("other", 0, 512));
    // 5. One flipped header byte (inside the wrapped DEK).
    let mut byte = read_cipher("header-byte", 60, 1);
    byte[0] ^= 0x40;
    rewrite(&c("header-byte"), 60, &byte);

    let mount = env.mount();
    for (name, block) in [("flip", 2), ("swap", 1), ("swap", 3), ("foreign-block", 1)] {
        assert_eio(
            &p(name),
            block * BLOCK,
            BLOCK as usize,
            &format!("{name} block {block}"),
        );
        assert_eio(
            &p(name),
            block * BLOCK + 10,
            5,
            &format!("{name} block {block}, partial"),
        );
    }
    for (name, good) in [
        ("flip", [0u64, 1, 3, 4]),
        ("swap", [0, 2, 4, 4]),
        ("foreign-block", [0, 2, 3, 4]),
    ] {
        let expected = pattern(
            size,
            names.iter().position(|n| *n == name).expect("name") as u64,
        );
        for block in good {
            let got = read_range(&p(name), block * BLOCK, BLOCK as usize)
                .unwrap_or_else(|e| panic!("{name} block {block} is intact but reads as {e}"));
            assert!(
                got == expected[(block * BLOCK) as usize..((block + 1) * BLOCK) as usize],
                "{name} block {block}"
            );
        }
    }
    for name in ["foreign-header", "header-byte"] {
        for offset in [0, 2 * BLOCK, 4 * BLOCK] {
            assert_eio(&p(name), offset, 100, &format!("{name} at {offset}"));
        }
    }
    // The rest keeps working: intact files read, new files write.
    assert_eq!(
        fs::read(p("intact")).expect("intact file"),
        pattern(size, 5)
    );
    fs::write(p("new-after-tamper"), b"still works").expect("write");
    assert_eq!(
        fs::read(p("new-after-tamper")).expect("read"),
        b"still works"
    );

    // One log line per failure, naming the file and the block.
    let log = env.log_text();
    let flip_path = c("flip");
    assert!(
        log.lines()
            .any(|l| l.contains(flip_path.to_str().expect("utf-8")) && l.contains("block=2")),
        "log lacks the flip/block 2 line:\n{log}"
    );
    // A header moved from another file names the other file's id: its blocks do not open.
    assert!(
        log.lines()
            .any(|l| l.contains(c("foreign-header").to_str().expect("utf-8"))),
        "log:\n{log}"
    );
    assert!(
        log.lines().any(|l| {
            l.contains(c("header-byte").to_str().expect("utf-8")) && l.contains("header rejected")
        }),
        "log:\n{log}"
    );
    mount.unmount();

    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1), "fsck exits 1 on damage");
    let report = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        report
            .lines()
            .find(|l| l.starts_with(c(name).to_str().expect("utf-8")))
            .unwrap_or_else(|| panic!("fsck does not name {name}:\n{report}"))
            .to_string()
    };
    assert!(line("flip").contains("block 2"), "{report}");
    assert!(line("swap").contains("blocks 1, 3"), "{report}");
    assert!(line("foreign-block").contains("block 1"), "{report}");
    assert!(
        line("foreign-header").contains("block") || line("foreign-header").contains("header"),
        "{report}"
    );
    assert!(line("header-byte").contains("header"), "{report}");
    assert_eq!(
        report.lines().count(),
        5,
        "exactly the five damaged files:\n{report}"
    );
    for name in ["intact", "other", "new-after-tamper"] {
        assert!(
            !report.contains(c(name).to_str().expect("utf-8")),
            "{name} is not damaged:\n{report}"
        );
    }
}

#[test]
fn fsck_of_a_clean_directory_exits_zero_and_a_corrupt_size_is_reported() {
    let env = Env::new();
    env.init();
    let mount = env.mount();
    fs::write(env.plain.join("a"), pattern(9000, 1)).expect("write");
    fs::write(env.plain.join("empty"), b"").expect("write");
    fs::create_dir(env.plain.join("d")).expect("mkdir");
    fs::write(env.plain.join("d/b"), pattern(1, 2)).expect("write");
    let a_cipher = env.cipher_path("a");
    let b_cipher = env.cipher_path("d/b");
    mount.unmount();
    let out = env.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 files checked, 0 damaged"));
    // A truncated last block: 20 of its bytes left make a size no plaintext maps to (a torn
    // tail); the two complete blocks before it still read.
    let f = OpenOptions::new()
        .write(true)
        .open(&a_cipher)
        .expect("open");
    let len = f.metadata().expect("stat").len();
    f.set_len(len - (9000 - 8192 + 28 - 20)).expect("truncate");
    drop(f);
    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("torn tail: block 2 is torn: 20 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _mount = env.mount();
    assert_eq!(fs::metadata(env.plain.join("a")).expect("stat").len(), 8192);
    assert_eq!(
        read_range(&env.plain.join("a"), 0, 8192).expect("complete blocks"),
        pattern(9000, 1)[..8192]
    );
    assert_eq!(
        fs::read(env.plain.join("a"))
            .expect_err("the torn tail")
            .raw_os_error(),
        Some(libc::EIO)
    );
    // A partial header (fewer than 512 bytes) is a corrupt size: nothing reads.
    OpenOptions::new()
        .write(true)
        .open(&b_cipher)
        .expect("open")
        .set_len(300)
        .expect("truncate");
    drop(_mount);
    let out = env.fsck();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("size: ciphertext size 300"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A change to bytes of a header.
enum Change {
    /// One byte, with these bits flipped.
    Xor(u8),
    /// These bytes written instead.
    Set(Vec<u8>),
}

/// Waits until no process holds `cipher` open but through an `O_PATH` descriptor (the daemon
/// keeps one per inode): the daemon then has no open handle of the file, and its next open
/// reads the header again. The release of a closed file reaches the daemon asynchronously.
fn wait_until_no_handle(cipher: &Path) {
    const O_PATH: u32 = 0o10_000_000;
    let held = || {
        let Ok(procs) = fs::read_dir("/proc") else {
            return false;
        };
        procs.flatten().any(|proc| {
            let Ok(fds) = fs::read_dir(proc.path().join("fd")) else {
                return false;
            };
            fds.flatten().any(|fd| {
                let flags = fs::read_to_string(proc.path().join("fdinfo").join(fd.file_name()))
                    .ok()
                    .and_then(|info| {
                        let line = info.lines().find(|l| l.starts_with("flags:"))?;
                        u32::from_str_radix(line["flags:".len()..].trim(), 8).ok()
                    });
                fs::read_link(fd.path()).is_ok_and(|target| target == cipher)
                    && flags.is_some_and(|f| f & O_PATH == 0)
            })
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while held() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still open",
            cipher.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_changed_v2_header_field_reads_as_eio_with_the_dek_cached_or_not_and_fsck_names_it() {
    let env = Env::new();
    env.init();
    let other_key = env.create_key("other");
    let mount = env.mount();
    let size = 3 * BLOCK as usize + 100;
    // One file per change of one header field: (file, offset, change, what fsck says).
    let auth = "header: header authentication failed";
    let other_key_bytes = uuid::Uuid::parse_str(&other_key)
        .expect("uuid")
        .as_bytes()
        .to_vec();
    let changes: Vec<(&str, u64, Change, &str)> = vec![
        ("magic", 0, Change::Xor(0x01), "header: not a kmsfs file"),
        (
            "version-3",
            6,
            Change::Set(vec![0, 3]),
            "header: unsupported header version 3",
        ),
        // Version 1 has no keying: bytes 480..496 become padding, which must be zero.
        (
            "version-1",
            6,
            Change::Set(vec![0, 1]),
            "header: header padding is not zero",
        ),
        (
            "flags",
            9,
            Change::Xor(0x01),
            "header: header field flags must be zero",
        ),
        (
            "reserved",
            10,
            Change::Xor(0x80),
            "header: header field reserved must be zero",
        ),
        ("file-id", 20, Change::Xor(0x01), auth),
        (
            "key-id",
            28,
            Change::Xor(0x01),
            "header: the KMS refuses key",
        ),
        ("key-id-other-key", 28, Change::Set(other_key_bytes), auth),
        ("wrapped-len", 44, Change::Xor(0x01), auth),
        ("wrapped-dek", 60, Change::Xor(0x40), auth),
        (
            "padding",
            300,
            Change::Xor(0x01),
            "header: header padding is not zero",
        ),
        ("epoch", 483, Change::Xor(0x01), auth),
        ("seals", 495, Change::Xor(0x01), auth),
        ("tag", 500, Change::Xor(0x01), auth),
    ];
    let mut names: Vec<&str> = changes.iter().map(|c| c.0).collect();
    names.push("intact");
    for (i, name) in names.iter().enumerate() {
        fs::write(env.plain.join(name), pattern(size, i as u64)).expect("write");
    }
    // Each file's DEK is in the daemon's cache from its create; read back once.
    for (i, name) in names.iter().enumerate() {
        assert!(fs::read(env.plain.join(name)).expect("read") == pattern(size, i as u64));
    }
    let cipher = env.cipher_map();
    let c = |name: &str| cipher[Path::new(name)].clone();
    let p = |name: &str| env.plain.join(name);
    for (name, offset, change, _) in &changes {
        let path = c(name);
        let header = read_range(&path, 0, 512).expect("header");
        assert_eq!(&header[..8], b"KMSFS\0\0\x02", "{name}: a version 2 header");
        wait_until_no_handle(&path);
        let new = match change {
            Change::Xor(bit) => vec![header[*offset as usize] ^ bit],
            Change::Set(bytes) => bytes.clone(),
        };
        assert_ne!(
            header[*offset as usize..*offset as usize + new.len()],
            new[..]
        );
        rewrite(&path, *offset, &new);
    }

    // With the DEK cached, the mount still live: the open reads the header again and fails.
    for (name, ..) in &changes {
        assert_eio(&p(name), 0, 100, &format!("{name}, DEK cached"));
    }
    assert!(fs::read(p("intact")).expect("intact") == pattern(size, changes.len() as u64));
    let log = env.log_text();
    let lines = |log: &str, name: &str| {
        let path = c(name);
        log.lines()
            .filter(|l| l.contains(path.to_str().expect("utf-8")))
            .filter(|l| l.contains("header rejected"))
            .count()
    };
    for (name, ..) in &changes {
        assert_eq!(lines(&log, name), 1, "{name}: one log line:\n{log}");
    }
    mount.unmount();
    // Every changed header that parses missed the cache, and nothing else did (one that does
    // not parse is refused before the lookup).
    let parsing = changes
        .iter()
        .filter(|(.., says)| *says == auth || says.contains("the KMS refuses"))
        .count();
    let log = env.log_text();
    let counters = log
        .lines()
        .find(|l| l.contains("DEK cache counters"))
        .unwrap_or_else(|| panic!("no cache counters at unmount:\n{log}"));
    assert!(
        counters.contains(&format!("misses={parsing} ")),
        "{counters}"
    );

    let out = env.fsck();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "fsck exits 1 on damage: {report}"
    );
    for (name, _, _, says) in &changes {
        let prefix = format!("{} (plaintext /{name}): ", c(name).display());
        let line = report
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("fsck does not name {name}:\n{report}"));
        assert!(line.contains(says), "{name}: {line}");
    }
    assert_eq!(report.lines().count(), changes.len(), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "{} files checked, {} damaged",
            names.len(),
            changes.len()
        )),
        "fsck goes on past each damaged file: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not cached: a fresh mount.
    let _mount = env.mount();
    for (name, ..) in &changes {
        assert_eio(&p(name), 0, 100, &format!("{name}, fresh mount"));
    }
    assert!(fs::read(p("intact")).expect("intact") == pattern(size, changes.len() as u64));
    let log = env.log_text();
    for (name, ..) in &changes {
        assert_eq!(lines(&log, name), 2, "{name}: one more log line:\n{log}");
    }
}
