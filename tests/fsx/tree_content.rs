//! The data operations of the fsstress tool: whole rewrites, appends and truncates of a
//! thread's own files, each leaving the file self-consistent (see [`super::super::stamp`]).

use super::super::stamp::{self, STAMP_LEN, Stamp};
use super::{OpResult, Trouble, Worker, os};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

impl Worker<'_> {
    /// Creates one of this thread's files (O_EXCL) with a fresh content.
    pub(super) fn create(&mut self) -> OpResult {
        let rel = self.own_file();
        let stamp = self.fresh_stamp(None);
        self.record(format!("create {} {stamp:?}", rel.display()));
        let file = os(
            "open O_CREAT|O_EXCL",
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(self.path(&rel)),
        )?;
        self.record_ino(&file)?;
        self.write_content(&file, &stamp, 0)
    }

    fn fresh_stamp(&mut self, old: Option<Stamp>) -> Stamp {
        let len = self.pick_len();
        let (id, generation) = match old {
            Some(old) => (old.id, old.generation + 1),
            None => (self.new_id(), 0),
        };
        Stamp {
            id,
            generation,
            stream_len: len,
            size: len,
        }
    }

    /// Opens one of this thread's files read-write and checks what it holds.
    fn open_own(&mut self, what: &str) -> Result<(File, Option<Stamp>), Trouble> {
        let rel = self.own_file();
        self.record(format!("{what} {}", rel.display()));
        let file = os(
            "open O_RDWR",
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(&rel)),
        )?;
        self.record_ino(&file)?;
        let mut bytes = Vec::new();
        os("read", (&file).read_to_end(&mut bytes))?;
        let old = stamp::verify(&bytes).map_err(Trouble::Content)?;
        self.record(format!("  holds {old:?}"));
        Ok((file, old))
    }

    /// Records the inode of an open file, which tags the lines of the operation after it.
    fn record_ino(&mut self, file: &File) -> OpResult {
        let ino = os("fstat", file.metadata())?.ino();
        self.record(format!("  {}", super::ino_tag(self.epoch, ino)));
        Ok(())
    }

    /// Writes a whole new content over one of this thread's files, sometimes through O_TRUNC,
    /// sometimes followed by fsync or fdatasync.
    pub(super) fn rewrite(&mut self) -> OpResult {
        if self.rng.below(4) == 0 {
            let rel = self.own_file();
            let stamp = self.fresh_stamp(None);
            self.record(format!("rewrite {} with O_TRUNC {stamp:?}", rel.display()));
            let file = os(
                "open O_TRUNC",
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(self.path(&rel)),
            )?;
            self.record_ino(&file)?;
            return self.write_content(&file, &stamp, 0);
        }
        let (file, old) = self.open_own("rewrite")?;
        let old_size = old.map_or(0, |s| s.size);
        let stamp = self.fresh_stamp(old);
        self.record(format!("  as {stamp:?}"));
        self.write_content(&file, &stamp, old_size)?;
        match self.rng.below(4) {
            0 => os("fsync", file.sync_all()),
            1 => os("fdatasync", file.sync_data()),
            _ => Ok(()),
        }
    }

    /// Writes `stamp`'s content in chunks of random sizes, front to back or back to front, and
    /// cuts a longer old content (of `old_size` bytes) before or after.
    fn write_content(&mut self, file: &File, stamp: &Stamp, old_size: u64) -> OpResult {
        let content = stamp.content();
        let cut_first = self.rng.below(2) == 0;
        if old_size > stamp.size && cut_first {
            os("ftruncate", file.set_len(stamp.size))?;
        }
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < content.len() {
            let len = match self.rng.below(3) {
                0 => 1 + self.rng.below(4096),
                1 => 4096,
                _ => 1 + self.rng.below(64 * 1024),
            } as usize;
            let end = (at + len).min(content.len());
            chunks.push(at..end);
            at = end;
        }
        let reverse = self.rng.below(3) == 0;
        if reverse {
            chunks.reverse();
        }
        self.record(format!(
            "  {} chunks{}, {}",
            chunks.len(),
            if reverse { " back to front" } else { "" },
            match (old_size > stamp.size, cut_first) {
                (false, _) => "no cut",
                (true, true) => "cut first",
                (true, false) => "cut last",
            }
        ));
        for chunk in chunks {
            os(
                "pwrite",
                file.write_all_at(&content[chunk.clone()], chunk.start as u64),
            )?;
        }
        if old_size > stamp.size && !cut_first {
            os("ftruncate", file.set_len(stamp.size))?;
        }
        Ok(())
    }

    /// Appends to one of this thread's files through an O_APPEND descriptor, then updates the
    /// stamp; a file with zeros past its stream is cut back to the stream first.
    pub(super) fn append(&mut self) -> OpResult {
        let (file, old) = self.open_own("append")?;
        // The same inode, whatever was renamed onto its name meanwhile.
        let appender = os(
            "open O_APPEND",
            OpenOptions::new()
                .append(true)
                .open(format!("/proc/self/fd/{}", file.as_raw_fd())),
        )?;
        let Some(old) = old else {
            let stamp = self.fresh_stamp(None);
            self.record(format!("  empty: append {stamp:?}"));
            return os("append", (&appender).write_all(&stamp.content()));
        };
        if old.size > old.stream_len {
            os("ftruncate", file.set_len(old.stream_len))?;
        }
        let more = 1 + self.rng.below(3 * 4096);
        let new = Stamp {
            stream_len: old.stream_len + more,
            size: old.stream_len + more,
            ..old
        };
        self.record(format!("  {more} bytes: {new:?}"));
        os(
            "append",
            (&appender).write_all(&old.stream(old.stream_len, new.stream_len)),
        )?;
        os("pwrite of the stamp", file.write_all_at(&new.encode(), 0))
    }

    /// Truncates one of this thread's files up or down (or to 0) and updates the stamp.
    pub(super) fn truncate(&mut self) -> OpResult {
        let (file, old) = self.open_own("truncate")?;
        let Some(old) = old else {
            return Ok(());
        };
        let size = match self.rng.below(8) {
            0 => 0,
            1..=3 => STAMP_LEN + self.rng.below(old.size),
            _ => STAMP_LEN + self.rng.below(2 * old.size + 8192),
        };
        self.record(format!("  to {size}"));
        os("ftruncate", file.set_len(size))?;
        if size > 0 {
            let new = Stamp {
                stream_len: old.stream_len.min(size),
                size,
                ..old
            };
            os("pwrite of the stamp", file.write_all_at(&new.encode(), 0))?;
        }
        Ok(())
    }
}
