//! Directory streams of a phase: opendir, readdir, telldir, seekdir, rewinddir, and what
//! POSIX promises about them while the directory changes. Answers are sets (which names were
//! missed, which came twice), never orders, which differ between filesystems.

use super::run::err;
use super::sys::{self, Dir, c};
use std::collections::{BTreeSet, HashMap};

/// An open directory stream and what it has shown since the last opendir, rewinddir or
/// seekdir.
struct Stream {
    dir: Dir,
    path: String,
    /// The names a fresh listing showed at the last opendir or rewinddir.
    base: BTreeSet<String>,
    /// Names returned since then (without `.` and `..`).
    returned: Vec<String>,
    /// The telldir position, and how many names had been returned at it.
    mark: Option<(i64, usize)>,
    /// Entries whose d_ino differed from their st_ino.
    bad_ino: BTreeSet<String>,
}

impl Stream {
    /// Reads up to `count` names (not counting `.` and `..`), noting each and any wrong d_ino;
    /// returns how many came.
    fn take(&mut self, count: usize) -> Result<usize, i32> {
        let mut n = 0;
        while n < count {
            let Some(e) = self.dir.read()? else { break };
            if wrong_ino(&self.path, &e.name, e.ino) {
                self.bad_ino.insert(e.name.clone());
            }
            if e.name != "." && e.name != ".." {
                self.returned.push(e.name);
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The open streams of a phase, by slot.
#[derive(Default)]
pub struct Streams(HashMap<usize, Stream>);

/// A fresh listing of `path` without `.` and `..`.
fn listing(path: &str) -> Result<BTreeSet<String>, i32> {
    let mut dir = Dir::open(&c(path))?;
    let mut names = BTreeSet::new();
    while let Some(e) = dir.read()? {
        if e.name != "." && e.name != ".." {
            names.insert(e.name);
        }
    }
    Ok(names)
}

/// Whether a d_ino read from `dir` differs from the entry's st_ino (an entry gone since it was
/// read does not count).
fn wrong_ino(dir: &str, name: &str, d_ino: u64) -> bool {
    sys::stat(
        -1,
        Some(&c(&format!("{dir}/{name}"))),
        libc::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_ino != d_ino)
}

/// The sorted names of a fresh listing of `path`.
pub fn names(path: &str) -> String {
    match listing(path) {
        Ok(names) => format!("ok [{}]", names.into_iter().collect::<Vec<_>>().join(",")),
        Err(e) => err(e),
    }
}

impl Streams {
    /// Opens a stream on `path` in `slot`.
    pub fn opendir(&mut self, slot: usize, path: &str) -> String {
        let dir = match Dir::open(&c(path)) {
            Ok(d) => d,
            Err(e) => return err(e),
        };
        let stream = Stream {
            dir,
            path: path.to_string(),
            base: listing(path).unwrap_or_default(),
            returned: Vec::new(),
            mark: None,
            bad_ino: BTreeSet::new(),
        };
        self.0.insert(slot, stream);
        "ok".into()
    }

    /// Reads up to `count` names (not counting `.` and `..`); answers how many came.
    pub fn readdir(&mut self, slot: usize, count: usize) -> String {
        let Some(s) = self.0.get_mut(&slot) else {
            return err(libc::EBADF);
        };
        match s.take(count) {
            Ok(n) => format!("ok {n}"),
            Err(e) => err(e),
        }
    }

    /// Reads to the end; answers which names that were there all along were never returned,
    /// which came twice, which were never there, and which had a wrong d_ino.
    pub fn readrest(&mut self, slot: usize) -> String {
        let Some(s) = self.0.get_mut(&slot) else {
            return err(libc::EBADF);
        };
        if let Err(e) = s.take(usize::MAX) {
            return err(e);
        }
        let now = listing(&s.path).unwrap_or_default();
        let returned: BTreeSet<&String> = s.returned.iter().collect();
        let missing: Vec<&str> = s
            .base
            .intersection(&now)
            .filter(|n| !returned.contains(n))
            .map(String::as_str)
            .collect();
        let mut dups: Vec<&str> = returned
            .iter()
            .filter(|n| s.returned.iter().filter(|r| r == *n).count() > 1)
            .map(|n| n.as_str())
            .collect();
        dups.dedup();
        let alien: Vec<&str> = returned
            .iter()
            .filter(|n| !s.base.contains(**n) && !now.contains(**n))
            .map(|n| n.as_str())
            .collect();
        let bad: Vec<&str> = s.bad_ino.iter().map(String::as_str).collect();
        format!(
            "ok missing=[{}] twice=[{}] never-there=[{}] d_ino!=st_ino=[{}]",
            missing.join(","),
            dups.join(","),
            alien.join(","),
            bad.join(",")
        )
    }

    /// Remembers the position, and how many names had come at it.
    pub fn telldir(&mut self, slot: usize) -> String {
        match self.0.get_mut(&slot) {
            Some(s) => {
                s.mark = Some((s.dir.tell(), s.returned.len()));
                "ok".into()
            }
            None => err(libc::EBADF),
        }
    }

    /// Goes back to the remembered position: the names read after it may come again.
    pub fn seekdir(&mut self, slot: usize) -> String {
        match self.0.get_mut(&slot) {
            Some(Stream {
                dir,
                returned,
                mark: Some((pos, seen)),
                ..
            }) => {
                dir.seek(*pos);
                returned.truncate(*seen);
                "ok".into()
            }
            _ => err(libc::EBADF),
        }
    }

    /// Starts again: from now on the stream must show the directory as it is now.
    pub fn rewinddir(&mut self, slot: usize) -> String {
        match self.0.get_mut(&slot) {
            Some(s) => {
                s.dir.rewind();
                s.returned.clear();
                s.base = listing(&s.path).unwrap_or_default();
                "ok".into()
            }
            None => err(libc::EBADF),
        }
    }

    /// Closes the stream.
    pub fn closedir(&mut self, slot: usize) -> String {
        match self.0.remove(&slot) {
            Some(_) => "ok".into(),
            None => err(libc::EBADF),
        }
    }
}

/// Checks that every entry's d_ino equals its st_ino, on a first read and on a re-read after
/// seekdir to the position telldir gave before it; names the first few that do not.
pub fn inos(path: &str) -> String {
    let mut dir = match Dir::open(&c(path)) {
        Ok(d) => d,
        Err(e) => return err(e),
    };
    let mut seen = Vec::new();
    loop {
        let pos = dir.tell();
        match dir.read() {
            Ok(Some(e)) => seen.push((pos, e)),
            Ok(None) => break,
            Err(e) => return err(e),
        }
    }
    let mut wrong = BTreeSet::new();
    let mut reread = BTreeSet::new();
    for (pos, e) in seen.iter().rev() {
        if wrong_ino(path, &e.name, e.ino) {
            wrong.insert(e.name.as_str());
        }
        dir.seek(*pos);
        match dir.read() {
            Ok(Some(again)) if again.name == e.name && again.ino == e.ino => {}
            _ => {
                reread.insert(e.name.as_str());
            }
        }
    }
    let few = |set: &BTreeSet<&str>| {
        let names: Vec<&str> = set.iter().take(4).copied().collect();
        let more = if set.len() > 4 { ",..." } else { "" };
        format!("{} [{}{more}]", set.len(), names.join(","))
    };
    format!(
        "ok entries={} d_ino!=st_ino={} other-after-seekdir={}",
        seen.len(),
        few(&wrong),
        few(&reread)
    )
}
