//! [`Answer`]: a request's [`Reply`] that counts the EIO answers of the mount on its way out,
//! so that no reply site has to remember to.

use crate::fs::stats::RequestCounters;
use crate::fuse::{Channel, DirEntries, Entry, NodeAttr, Reply, StatfsOut};
use std::time::Duration;

/// The reply to one request, counted in `counters` when it is EIO.
pub(super) struct Answer<'a> {
    reply: Reply<'a>,
    counters: &'a RequestCounters,
}

impl<'a> Answer<'a> {
    pub(super) fn new(reply: Reply<'a>, counters: &'a RequestCounters) -> Self {
        Answer { reply, counters }
    }

    pub(super) fn channel(&self) -> &'a Channel {
        self.reply.channel()
    }

    pub(super) fn error(self, errno: i32) {
        if errno == libc::EIO {
            self.counters.count_eio();
        }
        self.reply.error(errno);
    }

    pub(super) fn ok(self) {
        self.reply.ok();
    }

    pub(super) fn entry(self, entry: &Entry) {
        self.reply.entry(entry);
    }

    pub(super) fn attr(self, attr: &NodeAttr, ttl: Duration) {
        self.reply.attr(attr, ttl);
    }

    pub(super) fn opened(self, fh: u64, open_flags: u32) {
        self.reply.opened(fh, open_flags);
    }

    pub(super) fn created(self, entry: &Entry, fh: u64, open_flags: u32) {
        self.reply.created(entry, fh, open_flags);
    }

    pub(super) fn data(self, data: &[u8]) {
        self.reply.data(data);
    }

    pub(super) fn written(self, n: u32) {
        self.reply.written(n);
    }

    pub(super) fn copied(self, n: u64) {
        self.reply.copied(n);
    }

    pub(super) fn statfs(self, s: &StatfsOut) {
        self.reply.statfs(s);
    }

    pub(super) fn xattr_size(self, n: u32) {
        self.reply.xattr_size(n);
    }

    pub(super) fn offset(self, offset: i64) {
        self.reply.offset(offset);
    }

    pub(super) fn dir(self, entries: DirEntries) {
        self.reply.dir(entries);
    }
}
