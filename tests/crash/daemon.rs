//! The rounds of mount daemon crashes: mount, write, kill, check, repair, and their tally.

use super::*;

/// What the rounds of one kind saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) rounds: usize,
    /// Kills while a daemon thread was inside a write-side system call.
    pub(crate) kills_in_write: usize,
    /// Those system calls, counted over the kills.
    pub(crate) calls_at_kill: BTreeMap<&'static str, usize>,
    /// Kills (on the slow volume) while a write extending a file had done part of its bytes.
    pub(crate) kills_in_partly_done_writes: usize,
    /// Rounds after which some block was torn.
    pub(crate) rounds_with_torn_blocks: usize,
    pub(crate) torn_blocks: usize,
    /// Fsynced bytes that did not come back, outside blocks torn by the kill (must be 0).
    pub(crate) fsynced_bytes_lost: u64,
    /// Fsynced bytes in blocks torn by the kill (unreadable after it: a later write was
    /// rewriting their block).
    pub(crate) fsynced_bytes_in_torn_blocks: u64,
    /// Bytes that read back as a value the file never held there (must be 0).
    pub(crate) wrong_bytes: u64,
    /// Files fsck named after a kill, by what it said of them.
    pub(crate) fsck_verdicts: BTreeMap<&'static str, usize>,
    /// Blocks inside a file torn by the kill, which `fsck --repair` leaves (it cuts damage at
    /// the end only); the test writes them whole, which mends them.
    pub(crate) inner_torn_blocks_left_by_repair: usize,
    /// Rounds whose `fsck --repair` (and, for blocks inside a file, a write) left the
    /// directory clean.
    pub(crate) repairs_clean: usize,
    pub(crate) remount_failures: usize,
    pub(crate) fsyncs_acknowledged: usize,
}

/// The round machinery of the mount daemon's crashes.
pub(crate) struct MountCrashes<'a> {
    pub(crate) env: &'a Env,
    pub(crate) models: Models,
    pub(crate) rng: Rng,
    pub(crate) seed: u64,
    pub(crate) throttle: Option<&'a Throttle>,
    /// When to kill, in milliseconds after the writers start.
    pub(crate) kill_after: std::ops::Range<u64>,
    pub(crate) large_max: u64,
    pub(crate) tally: Tally,
}

impl MountCrashes<'_> {
    pub(crate) fn run(&mut self, rounds: usize, extra: BTreeMap<String, FileModel>) {
        lock(&self.models).extend(extra);
        for round in 0..rounds {
            let mut findings = Vec::new();
            let mount = CrashMount::mount(self.env);
            if let Some(throttle) = self.throttle {
                throttle.add(mount.pid);
            }
            if round == 0 {
                fs::create_dir_all(self.env.plain.join("small")).expect("mkdir small");
            }
            self.check_after_repair(&mut findings);
            self.crash(&mount, round, &mut findings);
            mount.lazy_unmount();
            self.check_after_crash(&mut findings);
            self.fsck_and_repair(&mut findings);
            self.tally.rounds += 1;
            assert!(
                findings.is_empty(),
                "round {round} (seed {}): {findings:#?}\n{:#?}\ndaemon log:\n{}",
                self.seed,
                self.tally,
                self.env.log_text()
            );
        }
        let _mount =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.env.mount())) {
                Ok(mount) => mount,
                Err(_) => {
                    self.tally.remount_failures += 1;
                    panic!("the repaired directory does not mount: {:#?}", self.tally);
                }
            };
        let mut findings = Vec::new();
        self.check_after_repair(&mut findings);
        assert!(findings.is_empty(), "after the last repair: {findings:#?}");
    }

    /// Runs the writers, kills the daemon at a random moment, and waits for the writers.
    pub(crate) fn crash(&mut self, mount: &CrashMount, round: usize, findings: &mut Vec<String>) {
        let writer = Writer {
            plain: self.env.plain.clone(),
            models: self.models.clone(),
            killed: Arc::new(AtomicBool::new(false)),
            fsyncs: Arc::default(),
            large_max: self.large_max,
        };
        let threads: Vec<_> = SHAPES
            .iter()
            .enumerate()
            .map(|(id, &shape)| {
                let (writer, seed) = (writer.clone(), self.rng.next());
                std::thread::spawn(move || writer.run(shape, id, round, seed))
            })
            .collect();
        let span = self.kill_after.end - self.kill_after.start;
        let delay = self.kill_after.start + self.rng.below(span);
        let kill = crash::ArmedKill::arm(mount.pid);
        std::thread::sleep(Duration::from_millis(delay));
        if self.throttle.is_some() {
            // On the slow volume, wait (up to 3 s) for a write that has done part of its
            // bytes, so that the kill cuts it short.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if crash::in_partly_done_write(mount.pid) {
                    self.tally.kills_in_partly_done_writes += 1;
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        writer.killed.store(true, Ordering::SeqCst);
        let calls = mount.kill_daemon(kill);
        if !calls.is_empty() {
            self.tally.kills_in_write += 1;
        }
        for call in calls {
            *self.tally.calls_at_kill.entry(call).or_default() += 1;
        }
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(finding)) => findings.push(finding),
                Err(_) => findings.push("a writer panicked".into()),
            }
        }
        self.tally.fsyncs_acknowledged += writer.fsyncs.load(Ordering::SeqCst);
    }

    /// Mounts again and reads every file back against its model.
    pub(crate) fn check_after_crash(&mut self, findings: &mut Vec<String>) {
        let mount = self.env.mount();
        let on_mount = files_on(&self.env.plain);
        let mut models = lock(&self.models);
        let mut torn_now = 0;
        models.retain(|name, model| {
            let present = on_mount.contains(name);
            if !present && model.created {
                findings.push(format!("{name}: created, but gone after the kill"));
            }
            present
        });
        for name in on_mount.iter().filter(|n| !models.contains_key(*n)) {
            findings.push(format!("{name}: on the mount, but no writer made it"));
        }
        for (name, model) in models.iter_mut() {
            let read = match read_back(&self.env.plain.join(name)) {
                Ok(read) => read,
                Err(e) => {
                    findings.push(format!("{name}: cannot be read: {e}"));
                    continue;
                }
            };
            let len = read.bytes.len() as u64;
            if len < model.durable.len() as u64 {
                findings.push(format!(
                    "{name}: {len} bytes, fewer than the {} fsynced",
                    model.durable.len()
                ));
            }
            if len > model.latest_len() {
                findings.push(format!(
                    "{name}: {len} bytes, more than the {} ever written",
                    model.latest_len()
                ));
            }
            let touched = model.touched();
            for block in &read.failed {
                if !touched.contains(block) {
                    findings.push(format!(
                        "{name}: block {block} reads EIO, but no write touched it since its fsync"
                    ));
                }
            }
            torn_now += read.failed.len();
            self.tally.fsynced_bytes_in_torn_blocks += read
                .failed
                .iter()
                .map(|&b| {
                    let durable = model.durable.len() as u64;
                    (durable.min((b + 1) * BLOCK)).saturating_sub(b * BLOCK)
                })
                .sum::<u64>();
            model.torn.extend(read.failed.iter().copied());
            let wrong = wrong_bytes(model, &read);
            if wrong > 0 {
                self.tally.wrong_bytes += wrong;
                findings.push(format!("{name}: {wrong} bytes read back wrong"));
            }
        }
        drop(models);
        self.tally.torn_blocks += torn_now;
        mount.unmount();
    }

    /// fsck names only touched blocks; `--repair` leaves the directory clean.
    pub(crate) fn fsck_and_repair(&mut self, findings: &mut Vec<String>) {
        let out = self.env.fsck();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (files, others) = crash::parse_fsck(&stdout);
        findings.extend(
            others
                .iter()
                .map(|line| format!("fsck after a kill says: {line}")),
        );
        let expected_code = if files.is_empty() { 0 } else { 1 };
        if out.status.code() != Some(expected_code) {
            findings.push(format!("fsck exits {:?}: {stdout}", out.status.code()));
        }
        let mut models = lock(&self.models);
        let mut torn_round = false;
        for FsckFile {
            plain,
            blocks,
            line,
        } in &files
        {
            let name = plain.trim_start_matches('/');
            let Some(model) = models.get_mut(name) else {
                findings.push(format!("fsck names a file no writer made: {line}"));
                continue;
            };
            let verdict = if line.contains("torn tail") {
                "torn tail"
            } else if line.contains("ends the file but is not sealed") {
                "ends in a block not sealed as the last"
            } else {
                "a block fails authentication"
            };
            *self.tally.fsck_verdicts.entry(verdict).or_default() += 1;
            let touched = model.touched();
            for block in blocks {
                if !touched.contains(block) {
                    findings.push(format!(
                        "fsck names block {block}, which no write touched since the fsync: {line}"
                    ));
                }
            }
            model.torn.extend(blocks.iter().copied());
            torn_round = true;
        }
        if torn_round || models.values().any(|m| !m.torn.is_empty()) {
            self.tally.rounds_with_torn_blocks += 1;
        }
        drop(models);
        let repair = self.env.fsck_with(&["--repair"]);
        let repaired = String::from_utf8_lossy(&repair.stdout).into_owned();
        let left: Vec<&str> = repaired
            .lines()
            .filter(|l| l.contains("not repaired"))
            .collect();
        if repair.status.code() != Some(if left.is_empty() { 0 } else { 1 }) {
            findings.push(format!(
                "fsck --repair exits {:?}: {repaired}",
                repair.status.code()
            ));
        }
        let mut again = self.env.fsck();
        if !left.is_empty() {
            // A block inside the file torn by the kill: the repair only cuts damage at the end,
            // and says so. It must be a block being written at the kill; a write covering it
            // whole mends it, as it would for a user.
            let report = String::from_utf8_lossy(&again.stdout).into_owned();
            let (files, others) = crash::parse_fsck(&report);
            findings.extend(others.iter().map(|l| format!("left by the repair: {l}")));
            let to_mend: Vec<(String, u64)> = files
                .iter()
                .flat_map(|f| {
                    let name = f.plain.trim_start_matches('/').to_string();
                    f.blocks.iter().map(move |&block| (name.clone(), block))
                })
                .collect();
            self.tally.inner_torn_blocks_left_by_repair += to_mend.len();
            self.mend_by_writing(&to_mend, findings);
            again = self.env.fsck();
        }
        if again.status.code() == Some(0) {
            self.tally.repairs_clean += 1;
        } else {
            findings.push(format!(
                "fsck after the repair: {}",
                String::from_utf8_lossy(&again.stdout)
            ));
        }
    }

    /// Writes each of `blocks` (file, block) whole through a mount, with the bytes the file
    /// would hold once every write issued is applied, and fsyncs.
    pub(crate) fn mend_by_writing(&mut self, blocks: &[(String, u64)], findings: &mut Vec<String>) {
        let mount = self.env.mount();
        let mut models = lock(&self.models);
        for (name, block) in blocks {
            let Some(model) = models.get_mut(name) else {
                findings.push(format!("the repair leaves {name}, which no writer made"));
                continue;
            };
            if !model.torn.contains(block) {
                findings.push(format!(
                    "the repair leaves block {block} of {name}, which was not torn by the kill"
                ));
                continue;
            }
            let path = self.env.plain.join(name);
            let result = OpenOptions::new().write(true).open(&path).and_then(|file| {
                let len = file.metadata()?.len();
                let from = block * BLOCK;
                let to = ((block + 1) * BLOCK).min(len);
                let mut bytes = model.latest();
                bytes.resize(to.max(bytes.len() as u64) as usize, 0);
                let data = bytes[from as usize..to as usize].to_vec();
                model.pending.push((from, data.clone()));
                file.write_all_at(&data, from)?;
                file.sync_all()
            });
            if let Err(e) = result {
                findings.push(format!("{name}: writing block {block} whole fails: {e}"));
            }
        }
        drop(models);
        mount.unmount();
    }

    /// Every file reads whole after the repair, as long as its fsynced size at least (but for
    /// blocks torn by the kill), every byte as fsynced or as a later write left it; what it
    /// holds now is its fsynced state from here on.
    pub(crate) fn check_after_repair(&mut self, findings: &mut Vec<String>) {
        let mut models = lock(&self.models);
        for (name, model) in models.iter_mut() {
            let read = match read_back(&self.env.plain.join(name)) {
                Ok(read) if read.failed.is_empty() => read,
                Ok(read) => {
                    findings.push(format!(
                        "{name}: blocks {:?} read EIO after the repair",
                        read.failed
                    ));
                    continue;
                }
                Err(e) => {
                    findings.push(format!("{name}: cannot be read after the repair: {e}"));
                    continue;
                }
            };
            // Fsynced bytes the repair cut off (a later write may have changed those that stay:
            // the wrong-bytes check holds those to the model).
            let lost = (read.bytes.len() as u64..model.durable.len() as u64)
                .filter(|pos| !model.torn.contains(&(pos / BLOCK)))
                .count() as u64;
            let wrong = wrong_bytes(model, &read);
            self.tally.fsynced_bytes_lost += lost;
            self.tally.wrong_bytes += wrong;
            if lost > 0 || wrong > 0 {
                findings.push(format!(
                    "{name}: after the repair, {lost} fsynced bytes lost outside torn blocks {:?}, {wrong} bytes wrong",
                    model.torn
                ));
            }
            model.durable = read.bytes;
            model.pending.clear();
            model.created = true;
            model.torn.clear();
        }
    }
}
