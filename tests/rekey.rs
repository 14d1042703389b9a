//! The nonce budget on a real mount: with the seal budget lowered (a test-only mount option),
//! a file rewritten past it moves to its content key's next epoch and re-seals its blocks,
//! online, while two writers keep writing it; nothing written is lost, and the directory
//! mounts again and checks clean.

mod common;

use common::{Env, Rng, pattern};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

const BUDGET: &str = "32768";
const SIZE: usize = 4 << 20;
const HALF: usize = SIZE / 2;
const ROUNDS: usize = 90;

/// One writer: rewrites its half of the file in chunks of random sizes (aligned or not), a
/// round at a time, with an fsync after each round so that every round reaches the daemon.
/// Returns the half as it wrote it last.
fn writer(path: &Path, half: usize, seed: u64) -> Vec<u8> {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    let mut rng = Rng(seed);
    let mut model = Vec::new();
    for round in 0..ROUNDS {
        model = pattern(HALF, seed * 1000 + round as u64);
        let mut at = 0;
        while at < HALF {
            let len = if rng.below(2) == 0 {
                256 << 10
            } else {
                1 + rng.below(300_000) as usize
            };
            let end = (at + len).min(HALF);
            file.write_all_at(&model[at..end], (half * HALF + at) as u64)
                .expect("write");
            at = end;
        }
        file.sync_data().expect("fsync");
    }
    model
}

fn inspect(env: &Env, plain: &Path) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["inspect", Env::s(plain)])).expect("inspect prints JSON")
}

#[test]
fn a_file_rewritten_past_its_seal_budget_is_rekeyed_under_live_writers() {
    let env = Env::new();
    env.init();
    let mount = env.mount_with(&["--seal-budget", BUDGET]);
    let path = Arc::new(env.plain.join("database"));
    fs::write(&*path, pattern(SIZE, 1)).expect("create");
    let first = inspect(&env, &path);
    assert_eq!(first["content-key-epoch"], 0, "{first}");
    assert_eq!(first["re-keying"], false);

    let writers: Vec<_> = (0..2)
        .map(|half| {
            let path = path.clone();
            std::thread::spawn(move || writer(&path, half, 7 + half as u64))
        })
        .collect();
    let halves: Vec<Vec<u8>> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    let expected = [halves[0].as_slice(), halves[1].as_slice()].concat();
    assert!(fs::read(&*path).expect("read") == expected, "content");

    // 2 writers x 90 rounds x 512 blocks = 92,160 blocks sealed, each request counting one
    // more: with 32,768 per key (re-keyed within 4,096 of it) that is at least three re-keys.
    let shown = inspect(&env, &path);
    eprintln!("after the writers: {shown}");
    let epoch = shown["content-key-epoch"].as_u64().expect("epoch");
    assert!(epoch >= 3, "{shown}");
    assert_eq!(shown["re-keying"], false, "{shown}");
    assert!(
        shown["seals-reserved"].as_u64().expect("seals") <= 32768,
        "{shown}"
    );
    let log = env.log_text();
    let rekeys = log.lines().filter(|l| l.contains("re-keyed")).count() as u64;
    assert_eq!(rekeys, epoch, "one log line per re-key\n{log}");
    mount.unmount();

    // Every block is under the last epoch's key: the file reads after a remount (no cache) and
    // fsck finds every block sound.
    let out = env.fsck();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _mount = env.mount();
    assert!(fs::read(&*path).expect("read") == expected, "after remount");
}

#[test]
fn a_seal_budget_below_the_minimum_is_refused_with_one_sentence() {
    let env = Env::new();
    env.init();
    let mut args = env.mount_args();
    args.extend_from_slice(&["--seal-budget", "1000"]);
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--seal-budget 1000 is outside 32768..="),
        "{stderr}"
    );
    assert!(!common::is_mounted(&env.plain));
}
