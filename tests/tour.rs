//! The README's tour, run literally, as a new user would: every `sh` block of its "30-second
//! tour" section, command by command, in one shell (so `export`, `eval` and `&` behave as in a
//! terminal), with a fresh HOME, the passphrase in `$KMSFS_PASSPHRASE` as the README says, and
//! the built `kmsfs` first on PATH. Every command must exit 0.
//!
//! The shell runs in a network namespace of its own, so the KMS server the tour starts on
//! 127.0.0.1:8400 meets no other process's port. Guards kill the shell's process group (the
//! server started with `&` is in it) and unmount what the tour mounted, even when it fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The tour's command lines: every line of the `sh` blocks between "## 30-second tour" and the
/// next section, continuation lines joined.
fn tour_commands(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("30-second tour"))
        .expect("README.md has a \"30-second tour\" section");
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim_start_matches('`').trim() == "sh";
            continue;
        }
        if !in_block || (pending.is_empty() && line.trim().is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// A process the test started, killed with its whole process group on drop.
struct GroupGuard(Child);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let pgid = self.0.id().to_string();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unmounts (lazily) whatever is still mounted at the paths, on drop.
struct UnmountGuard(Vec<PathBuf>);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        for path in &self.0 {
            if common::is_mounted(path) {
                common::crash::lazy_unmount(path);
            }
        }
    }
}

/// A shell that runs one command at a time and reports its exit status.
struct Shell {
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    _group: GroupGuard,
}

const MARK: &str = "__kmsfs_tour_status__";

impl Shell {
    /// Runs `command` in the shell (stdin from /dev/null); its output and exit status.
    fn run(&mut self, command: &str) -> (String, i32) {
        writeln!(
            self.stdin,
            "{{ {command}\n}} </dev/null; echo \"{MARK} $?\""
        )
        .expect("write to the shell");
        self.stdin.flush().expect("flush");
        let mut output = String::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("read the shell");
            assert!(
                n > 0,
                "the shell ended during {command:?}; output so far: {output}"
            );
            if let Some(status) = line.trim_end().strip_prefix(&format!("{MARK} ")) {
                return (output, status.parse().expect("a status"));
            }
            output.push_str(&line);
        }
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let commands = tour_commands(&readme);
    assert!(
        commands.len() >= 10 && commands.iter().any(|c| c.starts_with("kmsfs kms serve")),
        "the tour blocks were not found: {commands:?}"
    );

    let home = tempfile::Builder::new()
        .prefix("kmsfs-tour-")
        .tempdir()
        .expect("tempdir");
    let _unmount = UnmountGuard(vec![home.path().join("secret"), home.path().join("remote")]);
    // A network namespace of the test's own, held by a process that only sleeps.
    let holder = Command::new("unshare")
        .args(["--net", "sleep", "3600"])
        .process_group(0)
        .spawn()
        .expect("unshare --net (util-linux)");
    let holder = GroupGuard(holder);
    let netns = format!("/proc/{}/ns/net", holder.0.id());
    // unshare has exec'd sleep once the namespace link differs from ours.
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_link(&netns).is_ok_and(|ns| ns != ours) {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare --net made no namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let up = Command::new("nsenter")
        .args([&format!("--net={netns}"), "ip", "link", "set", "lo", "up"])
        .status()
        .expect("nsenter ip link");
    assert!(up.success(), "cannot bring up lo in the test's namespace");

    let bin_dir = Path::new(common::kmsfs_bin())
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let stderr_path = home.path().join("tour-stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new("nsenter");
    child
        .args([&format!("--net={netns}"), "bash", "--noprofile", "--norc"])
        .current_dir(home.path())
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", path)
        .env("KMSFS_PASSPHRASE", "a tour passphrase")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0);
    let mut child = child.spawn().expect("start bash");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut shell = Shell {
        stdin,
        stdout,
        _group: GroupGuard(child),
    };
    // Mounts are found by path; make sure `kmsfs` is the one under test.
    let (which, _) = shell.run("command -v kmsfs");
    assert_eq!(Path::new(which.trim()), Path::new(common::kmsfs_bin()));

    let mut transcript = String::new();
    for command in &commands {
        let (output, status) = shell.run(command);
        transcript.push_str(&format!("$ {command}\n{output}"));
        assert_eq!(
            status,
            0,
            "{command:?} exited {status}.\n--- transcript ---\n{transcript}\n--- stderr ---\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
    }
    // What the tour says happened did: the file went in through the mount, the key rotated,
    // and both mounts are gone.
    assert!(
        transcript.contains("\"key-material-version\": 1"),
        "{transcript}"
    );
    assert!(
        transcript.contains("\"manual-count\": 1") || transcript.contains("manual rotations 1"),
        "{transcript}"
    );
    assert!(!common::is_mounted(&home.path().join("secret")));
    assert!(!common::is_mounted(&home.path().join("remote")));
    let listed: Vec<_> = std::fs::read_dir(home.path().join("secret.enc"))
        .expect("list the cipher directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        listed.iter().all(|n| n != "hello.txt") && listed.len() >= 2,
        "hello.txt is stored under an encrypted name: {listed:?}"
    );
    println!("{transcript}");
    drop(holder);
}

#[test]
fn tour_blocks_are_read_line_by_line() {
    let readme = "intro\n\n## 30-second tour\n\ntext\n\n```sh\nmkdir ~/a   # note\n\nkmsfs x \\\n  --y\n```\n\n```text\nnot run\n```\n\n## Next\n\n```sh\nnot the tour\n```\n";
    assert_eq!(
        tour_commands(readme),
        vec![
            "mkdir ~/a   # note".to_string(),
            "kmsfs x   --y".to_string()
        ]
    );
}
