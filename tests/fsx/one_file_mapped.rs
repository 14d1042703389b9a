//! The mapped operations of fsx: reads and writes through a shared mapping of the file, as
//! fsx does them (a write past the end of file extends it by `ftruncate` first), and the check
//! that the rest of the last page past the end of file reads as zeros.

use super::super::sys::Mapping;
use super::{Fsx, Kind, range};

impl Fsx<'_> {
    /// A mapped read of a range inside the file, then (as fsx's `check_eofpage`) the rest of
    /// the last page past the end of file, which must read as zeros.
    pub(super) fn map_read(&mut self, before: u64) {
        if before == 0 {
            self.record(Kind::MapRead, "(empty file: nothing to map)".into(), before);
            return;
        }
        let off = self.pick_off() % before;
        let len = self.pick_len(off).min(before - off);
        self.record(Kind::MapRead, range(off, len), before);
        let start = off / self.page * self.page;
        let map_end = self.map_end(off + len);
        let map = self.ok(
            "mmap for reading",
            Mapping::new(self.file(), start, (map_end - start) as usize, false),
        );
        let bytes = map.bytes();
        let from = (off - start) as usize;
        self.compare(
            "mapped read",
            off,
            self.model_range(off, len),
            &bytes[from..from + len as usize],
        );
        self.check_eof_page(&map, start);
    }

    /// A mapped write; a range past the end of file is first made part of it by `ftruncate`
    /// (a mapping cannot extend a file).
    pub(super) fn map_write(&mut self, before: u64) {
        let off = self.pick_off();
        let len = self.pick_len(off);
        let data = self.random_bytes(len);
        let extend = off + len > before;
        self.write_model(off, &data);
        let note = if extend { " (ftruncate first)" } else { "" };
        let sync = if self.rng.below(4) == 0 {
            libc::MS_ASYNC
        } else {
            libc::MS_SYNC
        };
        self.record(Kind::MapWrite, format!("{}{note}", range(off, len)), before);
        if extend {
            self.ok(
                "ftruncate before a mapped write",
                self.file().set_len(off + len),
            );
        }
        let start = off / self.page * self.page;
        let map_end = self.map_end(off + len);
        let mut map = self.ok(
            "mmap for writing",
            Mapping::new(self.file(), start, (map_end - start) as usize, true),
        );
        let from = (off - start) as usize;
        map.bytes_mut()[from..from + len as usize].copy_from_slice(&data);
        self.ok("msync", map.sync(sync));
        self.check_eof_page(&map, start);
    }

    /// The end of a mapping that covers a range ending at `end`: the end of the file's last
    /// page when the range reaches into it, so the bytes past the end of file get checked.
    fn map_end(&self, end: u64) -> u64 {
        let size = self.size();
        let last_page = (size - 1) / self.page * self.page;
        if end > last_page {
            size.div_ceil(self.page) * self.page
        } else {
            end
        }
    }

    fn check_eof_page(&self, map: &Mapping, start: u64) {
        let size = self.size();
        let mapped_end = start + map.bytes().len() as u64;
        if mapped_end > size {
            let tail = &map.bytes()[(size - start) as usize..];
            let zeros = vec![0u8; tail.len()];
            self.compare("the mapped page past the end of file", size, &zeros, tail);
        }
    }
}
