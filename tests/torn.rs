//! Files cut short the way a daemon killed in the middle of a large write leaves them: at a page
//! boundary inside the last block, or 1 to 28 bytes past the last complete block (a torn tail).
//! Every complete block reads, the end reads EIO, fsck names the file, and `fsck --repair` cuts
//! it back to its last authentic block and re-seals that block as the last. Also files cut at a
//! block boundary and blocks added after the end, which version 2 headers catch.

mod common;

use common::{Env, pattern};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

const BLOCK: u64 = 4096;
const CIPHER_BLOCK: u64 = 4124;
const PAGE: u64 = 4096;
/// The original file: 48 full blocks and a short one.
const PLAIN_LEN: usize = 200_000;
const SEED: u64 = 47;

/// Where a cut of the cipher file leaves it: the complete blocks before the cut, and whether
/// the rest is a torn tail (1 to 28 bytes) or a block that fails authentication.
#[derive(Debug, Clone, Copy)]
struct Cut {
    cipher_len: u64,
    complete_blocks: u64,
    torn_tail: bool,
}

impl Cut {
    fn at(cipher_len: u64) -> Cut {
        let body = cipher_len - 512;
        let rest = body % CIPHER_BLOCK;
        assert!(
            rest != 0,
            "{cipher_len} is a block boundary: nothing is cut short"
        );
        Cut {
            cipher_len,
            complete_blocks: body / CIPHER_BLOCK,
            torn_tail: rest <= 28,
        }
    }

    /// Plaintext bytes of the complete, authentic blocks.
    fn good_len(&self) -> usize {
        (self.complete_blocks * BLOCK) as usize
    }

    /// What `stat` shows: the complete blocks of a torn file; of a failed last block, the size
    /// it claims.
    fn stat_size(&self) -> u64 {
        let rest = (self.cipher_len - 512) % CIPHER_BLOCK;
        if self.torn_tail {
            self.complete_blocks * BLOCK
        } else {
            self.complete_blocks * BLOCK + rest - 28
        }
    }
}

/// The cuts: every page boundary in the last 64 KiB of the cipher file (the last block of a
/// page boundary cut fails authentication), and sizes no plaintext size maps to (torn tails),
/// including a file whose only remnant of block 0 is torn.
fn cuts(cipher_len: u64) -> Vec<Cut> {
    let mut cuts: Vec<Cut> = ((cipher_len - 64 * 1024).div_ceil(PAGE)..)
        .map(|page| page * PAGE)
        .take_while(|&at| at < cipher_len)
        .map(Cut::at)
        .collect();
    for (block, torn) in [(48, 1), (48, 28), (47, 13), (30, 2), (1, 28), (0, 5)] {
        cuts.push(Cut::at(512 + block * CIPHER_BLOCK + torn));
    }
    cuts
}

fn read_range(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Cipher files by inode number (the mount shows backing inode numbers), whatever their names.
fn cipher_files_by_inode(cipher: &Path) -> HashMap<u64, PathBuf> {
    let mut found = HashMap::new();
    let mut stack = vec![cipher.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read cipher dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                found.insert(meta.ino(), entry.path());
            }
        }
    }
    found
}

#[test]
fn files_cut_inside_their_last_block_read_up_to_it_and_repair_to_it() {
    let env = Env::new();
    env.init();
    let original = pattern(PLAIN_LEN, SEED);
    let cipher_len = common::expected_cipher_size(PLAIN_LEN as u64);
    let cuts = cuts(cipher_len);
    assert!(cuts.len() > 20, "{} cuts", cuts.len());
    assert!(cuts.iter().any(|c| !c.torn_tail) && cuts.iter().any(|c| c.torn_tail));

    // One copy per cut, written through the mount; cut at rest, after the unmount.
    let mount = env.mount();
    let mut inodes = Vec::new();
    for n in 0..cuts.len() {
        let path = env.plain.join(format!("cut-{n}"));
        fs::write(&path, &original).expect("write");
        inodes.push(fs::metadata(&path).expect("stat").ino());
    }
    fs::write(env.plain.join("intact"), &original).expect("write");
    mount.unmount();
    let by_inode = cipher_files_by_inode(&env.cipher);
    let cipher_path = |n: usize| by_inode[&inodes[n]].clone();
    for (n, cut) in cuts.iter().enumerate() {
        let f = OpenOptions::new()
            .write(true)
            .open(cipher_path(n))
            .expect("open cipher file");
        assert_eq!(f.metadata().expect("stat").len(), cipher_len);
        f.set_len(cut.cipher_len).expect("cut");
    }

    let mount = env.mount();
    for (n, cut) in cuts.iter().enumerate() {
        let plain = env.plain.join(format!("cut-{n}"));
        let what = format!("cut-{n} at {} ({cut:?})", cut.cipher_len);
        assert_eq!(
            fs::metadata(&plain).expect("stat").len(),
            cut.stat_size(),
            "{what}"
        );
        let good = read_range(&plain, 0, cut.good_len())
            .unwrap_or_else(|e| panic!("{what}: the complete blocks read as {e}"));
        assert!(good == original[..cut.good_len()], "{what}: wrong bytes");
        let tail = read_range(&plain, cut.good_len() as u64, 1);
        assert_eq!(
            tail.expect_err("the tail reads").raw_os_error(),
            Some(libc::EIO),
            "{what}"
        );
        assert_eq!(
            fs::read(&plain).expect_err("a whole read").raw_os_error(),
            Some(libc::EIO),
            "{what}: a reader of the whole file learns it is cut short"
        );
    }
    assert_eq!(fs::read(env.plain.join("intact")).expect("read"), original);
    // Log lines name the backing path and the block: one per open that reached the damage
    // (three opens above; the kernel's retries within one open are not logged again).
    let log = env.log_text();
    for (n, cut) in cuts.iter().enumerate() {
        let name = cipher_path(n).to_str().expect("utf-8").to_string();
        let block = format!("block={}", cut.complete_blocks);
        let lines = log
            .lines()
            .filter(|l| l.contains(&format!("{name} ")) && l.contains(&block))
            .count();
        assert!((1..=3).contains(&lines), "cut-{n}: {cut:?}: {lines}\n{log}");
    }
    // A repair of a mounted directory is refused, and cuts nothing.
    let refused = env.fsck_with(&["--repair"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is mounted at"), "{stderr}");
    assert_eq!(
        fs::metadata(cipher_path(0)).expect("stat").len(),
        cuts[0].cipher_len
    );
    mount.unmount();

    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1), "fsck exits 1 on damage");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for (n, cut) in cuts.iter().enumerate() {
        let line = report
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "{} (plaintext /cut-{n}): ",
                    cipher_path(n).display()
                ))
            })
            .unwrap_or_else(|| panic!("fsck does not name cut-{n}:\n{report}"));
        let expected = if cut.torn_tail {
            format!("torn tail: block {} is torn", cut.complete_blocks)
        } else {
            format!("block {} fails authentication", cut.complete_blocks)
        };
        assert!(line.contains(&expected), "cut-{n}: {line}");
    }
    assert_eq!(report.lines().count(), cuts.len(), "{report}");

    let repair = env.fsck_with(&["--repair"]);
    let repaired = String::from_utf8_lossy(&repair.stdout).into_owned();
    assert_eq!(repair.status.code(), Some(0), "{repaired}");
    for (n, cut) in cuts.iter().enumerate() {
        let kept = 512 + cut.complete_blocks * CIPHER_BLOCK;
        let expected = format!(
            "{} (plaintext /cut-{n}): repaired: cut from {} to {kept} bytes on disk",
            cipher_path(n).display(),
            cut.cipher_len
        );
        assert!(
            repaired.lines().any(|l| l.starts_with(&expected)),
            "cut-{n}: {expected}\n{repaired}"
        );
        if cut.complete_blocks > 0 {
            // The block the file now ends with was an inner one: sealed again as the last.
            let resealed = format!(
                "{} (plaintext /cut-{n}): repaired: block {} re-sealed as the file's last block",
                cipher_path(n).display(),
                cut.complete_blocks - 1
            );
            assert!(
                repaired.lines().any(|l| l == resealed),
                "cut-{n}: {resealed}\n{repaired}"
            );
        }
        assert_eq!(fs::metadata(cipher_path(n)).expect("stat").len(), kept);
    }
    let out = env.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let _mount = env.mount();
    for (n, cut) in cuts.iter().enumerate() {
        let plain = env.plain.join(format!("cut-{n}"));
        assert!(
            fs::read(&plain).expect("a repaired file reads whole") == original[..cut.good_len()],
            "cut-{n}"
        );
    }
}

#[test]
fn appending_to_a_file_with_a_torn_tail_cuts_the_tail_first() {
    let env = Env::new();
    env.init();
    let original = pattern(3 * BLOCK as usize + 500, 5);
    let mount = env.mount();
    let path = env.plain.join("log");
    fs::write(&path, &original).expect("write");
    let ino = fs::metadata(&path).expect("stat").ino();
    mount.unmount();
    let cipher_file = cipher_files_by_inode(&env.cipher)[&ino].clone();
    let f = OpenOptions::new()
        .write(true)
        .open(&cipher_file)
        .expect("open");
    f.set_len(512 + 3 * CIPHER_BLOCK + 20).expect("tear");
    drop(f);

    let _mount = env.mount();
    assert_eq!(fs::metadata(&path).expect("stat").len(), 3 * BLOCK);
    let mut log = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open to append");
    std::io::Write::write_all(&mut log, b"after the crash").expect("append");
    drop(log);
    let mut expected = original[..3 * BLOCK as usize].to_vec();
    expected.extend_from_slice(b"after the crash");
    assert_eq!(fs::read(&path).expect("read"), expected);
    assert_eq!(
        fs::metadata(&cipher_file).expect("stat").len(),
        common::expected_cipher_size(expected.len() as u64)
    );
    let text = env.log_text();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("torn tail cut before a write"))
            .count(),
        1,
        "{text}"
    );
}

/// The cipher file of `name` in the mount, by inode number.
fn cipher_of(env: &Env, inode: u64) -> PathBuf {
    cipher_files_by_inode(&env.cipher)[&inode].clone()
}

#[test]
fn a_file_cut_at_a_block_boundary_or_grown_by_another_copys_block_is_caught() {
    let env = Env::new();
    env.init();
    let original = pattern(5 * BLOCK as usize + 10, 9);
    let mount = env.mount();
    let mut inodes = HashMap::new();
    for name in ["cut-1", "cut-3", "cut-5", "added"] {
        let path = env.plain.join(name);
        fs::write(&path, &original).expect("write");
        inodes.insert(name, fs::metadata(&path).expect("stat").ino());
    }
    mount.unmount();
    // Cut at block boundaries: 1, 3 and 5 blocks kept.
    for keep in [1u64, 3, 5] {
        let f = OpenOptions::new()
            .write(true)
            .open(cipher_of(&env, inodes[format!("cut-{keep}").as_str()]))
            .expect("open");
        f.set_len(512 + keep * CIPHER_BLOCK).expect("cut");
    }
    // "added": an older copy of the cipher file kept 5 blocks and 10 bytes; the file is then
    // cut to 5 blocks through the mount, and the old copy's last block added after its end.
    let added = cipher_of(&env, inodes["added"]);
    let old_last = read_range(&added, 512 + 5 * CIPHER_BLOCK, 10 + 28).expect("old last block");
    let mount = env.mount();
    let f = OpenOptions::new()
        .write(true)
        .open(env.plain.join("added"))
        .expect("open");
    f.set_len(5 * BLOCK).expect("truncate through the mount");
    drop(f);
    mount.unmount();
    OpenOptions::new()
        .append(true)
        .open(&added)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &old_last))
        .expect("add the old copy's block");

    let mount = env.mount();
    for keep in [1u64, 3, 5] {
        let plain = env.plain.join(format!("cut-{keep}"));
        let good = ((keep - 1) * BLOCK) as usize;
        assert_eq!(fs::metadata(&plain).expect("stat").len(), keep * BLOCK);
        assert!(read_range(&plain, 0, good).expect("inner blocks") == original[..good]);
        assert_eq!(
            read_range(&plain, good as u64, 1)
                .expect_err("the block that ends the file")
                .raw_os_error(),
            Some(libc::EIO),
            "cut-{keep}"
        );
    }
    let plain = env.plain.join("added");
    assert_eq!(
        fs::metadata(&plain).expect("stat").len(),
        5 * BLOCK + 10,
        "the added block counts in the size"
    );
    assert_eq!(
        read_range(&plain, 4 * BLOCK, 1)
            .expect_err("the old last block, no longer last")
            .raw_os_error(),
        Some(libc::EIO)
    );
    assert!(
        read_range(&plain, 0, 4 * BLOCK as usize).expect("blocks 0..4")
            == original[..4 * BLOCK as usize]
    );
    let log = env.log_text();
    assert!(
        log.contains("block 4 is sealed as the last block but more follow it"),
        "{log}"
    );
    mount.unmount();

    let out = env.fsck();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |name: &str| {
        let prefix = format!(
            "{} (plaintext /{name}): ",
            cipher_of(&env, inodes[name]).display()
        );
        report
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("fsck does not name {name}:\n{report}"))
            .to_string()
    };
    for keep in [1u64, 3, 5] {
        assert!(
            line(&format!("cut-{keep}")).ends_with(&format!(
                "block {} ends the file but is not sealed as its last block: the file was cut short",
                keep - 1
            )),
            "{report}"
        );
    }
    assert!(
        line("added").ends_with(
            "block 4 is sealed as the last block but more follow it: blocks were added after the file's end"
        ),
        "{report}"
    );

    // The repair re-seals the cut files' ends and leaves the added block alone.
    let repair = env.fsck_with(&["--repair"]);
    let repaired = String::from_utf8_lossy(&repair.stdout).into_owned();
    assert_eq!(repair.status.code(), Some(1), "{repaired}");
    assert!(
        repaired.contains("(plaintext /added): not repaired"),
        "{repaired}"
    );
    let _mount = env.mount();
    for keep in [1u64, 3, 5] {
        let n = (keep * BLOCK) as usize;
        assert!(
            fs::read(env.plain.join(format!("cut-{keep}"))).expect("repaired") == original[..n],
            "cut-{keep}"
        );
    }
    assert_eq!(
        fs::read(env.plain.join("added"))
            .expect_err("still damaged")
            .raw_os_error(),
        Some(libc::EIO)
    );
}
