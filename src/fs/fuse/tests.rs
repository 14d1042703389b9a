//! The adapter driven without a kernel: every request opens one span named after its
//! operation, entered while it is served, whose fields are ids and never a name or data.

use super::*;
use crate::fs::tests::setup_with;
use crate::fuse::abi::InHeader;
use crate::fuse::{Channel, NewNode, SetattrArgs};
use std::ffi::OsStr;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as opened: its name and its fields as text.
#[derive(Debug, Clone)]
struct Opened {
    name: &'static str,
    fields: Vec<(&'static str, String)>,
}

/// Records every span opened, and the names of the spans entered.
#[derive(Default)]
struct Spans {
    opened: Mutex<Vec<(Id, Opened)>>,
    entered: Mutex<Vec<&'static str>>,
}

struct Fields<'a>(&'a mut Vec<(&'static str, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

struct Recorder(Arc<Spans>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        let opened = Opened {
            name: attrs.metadata().name(),
            fields,
        };
        self.0
            .opened
            .lock()
            .expect("lock")
            .push((id.clone(), opened));
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            self.0.entered.lock().expect("lock").push(span.name());
        }
    }
}

const SECRET: &str = "a-plaintext-name-never-logged";

fn header(nodeid: u64) -> InHeader {
    InHeader {
        len: 0,
        opcode: 0,
        unique: 1,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 0,
        total_extlen: 0,
    }
}

/// One request of every operation the adapter serves, with the span name and the id fields
/// each must open (`node` is the request's node id, 7; `fh` 9).
fn every_operation<'a>(
    name: &'a OsStr,
) -> Vec<(Operation<'a>, &'static str, &'static [&'static str])> {
    let node = NewNode {
        mode: libc::S_IFREG | 0o644,
        umask: 0o022,
    };
    let dir = NewNode {
        mode: libc::S_IFDIR | 0o755,
        umask: 0o022,
    };
    let value = SECRET.as_bytes();
    vec![
        (Operation::Lookup { name }, "lookup", &["parent"]),
        (Operation::Getattr, "getattr", &["ino"]),
        (
            Operation::Setattr(SetattrArgs {
                fh: Some(9),
                ..SetattrArgs::default()
            }),
            "setattr",
            &["ino", "fh"],
        ),
        (Operation::Readlink, "readlink", &["ino"]),
        (
            Operation::Symlink { name, target: name },
            "symlink",
            &["parent"],
        ),
        (
            Operation::Mknod {
                name,
                node: NewNode {
                    mode: libc::S_IFIFO | 0o644,
                    umask: 0,
                },
                rdev: 0,
            },
            "mknod",
            &["parent"],
        ),
        (Operation::Mkdir { name, node: dir }, "mkdir", &["parent"]),
        (Operation::Unlink { name }, "unlink", &["parent"]),
        (Operation::Rmdir { name }, "rmdir", &["parent"]),
        (
            Operation::Rename {
                name,
                new_parent: 7,
                new_name: name,
                flags: 0,
            },
            "rename",
            &["parent", "new_parent"],
        ),
        (
            Operation::Link {
                target: 7,
                new_name: name,
            },
            "link",
            &["ino", "new_parent"],
        ),
        (
            Operation::Open {
                flags: libc::O_RDONLY,
            },
            "open",
            &["ino"],
        ),
        (
            Operation::Read {
                fh: 9,
                offset: 0,
                size: 10,
            },
            "read",
            &["ino", "fh"],
        ),
        (
            Operation::Write {
                fh: 9,
                offset: 0,
                data: value,
                write_flags: 0,
            },
            "write",
            &["ino", "fh"],
        ),
        (Operation::Statfs, "statfs", &["ino"]),
        (Operation::Release { fh: 9 }, "release", &["ino", "fh"]),
        (Operation::Flush, "flush", &["ino"]),
        (
            Operation::Fsync {
                fh: 9,
                datasync: false,
            },
            "fsync",
            &["ino", "fh"],
        ),
        (
            Operation::Setxattr {
                name,
                value,
                flags: 0,
            },
            "setxattr",
            &["ino"],
        ),
        (Operation::Getxattr { name, size: 0 }, "getxattr", &["ino"]),
        (Operation::Listxattr { size: 0 }, "listxattr", &["ino"]),
        (Operation::Removexattr { name }, "removexattr", &["ino"]),
        (Operation::Opendir, "opendir", &["ino"]),
        (
            Operation::Readdir {
                fh: 9,
                offset: 0,
                size: 4096,
            },
            "readdir",
            &["ino", "fh"],
        ),
        (
            Operation::Readdirplus {
                fh: 9,
                offset: 0,
                size: 4096,
            },
            "readdirplus",
            &["ino", "fh"],
        ),
        (
            Operation::Releasedir { fh: 9 },
            "releasedir",
            &["ino", "fh"],
        ),
        (Operation::Fsyncdir, "fsyncdir", &["ino"]),
        (Operation::Access { mask: libc::R_OK }, "access", &["ino"]),
        (
            Operation::Create {
                name,
                node,
                flags: libc::O_RDWR,
            },
            "create",
            &["parent"],
        ),
        (
            Operation::Tmpfile {
                node,
                flags: libc::O_RDWR,
            },
            "tmpfile",
            &["parent"],
        ),
        (
            Operation::Fallocate {
                fh: 9,
                offset: 0,
                length: 1,
                mode: 0,
            },
            "fallocate",
            &["ino", "fh"],
        ),
        (
            Operation::Lseek {
                fh: 9,
                offset: 0,
                whence: libc::SEEK_DATA,
            },
            "lseek",
            &["ino", "fh"],
        ),
        (
            Operation::CopyFileRange {
                fh_in: 9,
                offset_in: 0,
                fh_out: 9,
                offset_out: 0,
                len: 1,
                wide: true,
            },
            "copy_file_range",
            &["ino", "fh", "fh_out"],
        ),
        (Operation::Destroy, "destroy", &[]),
        (Operation::Interrupt, "interrupt", &[]),
        (Operation::Unsupported(26), "unsupported", &["opcode"]),
    ]
}

/// Has `adapter` serve every one of `operations` on node 7, replying on `channel`, then a
/// FORGET of node 7.
fn serve_every(
    adapter: &FuseAdapter,
    channel: &Channel,
    operations: &[(Operation<'_>, &'static str, &'static [&'static str])],
) {
    for (op, _, _) in operations {
        let request = Request {
            header: header(7),
            op: op.clone(),
        };
        adapter.handle(&request, Reply::new(channel, 1));
    }
    adapter.forget(7, 1);
}

#[test]
fn every_request_is_served_inside_a_span_of_its_operation_with_ids_only() {
    let (dir, fs) = setup_with(CryptFs::new);
    let adapter = FuseAdapter::new(Arc::new(fs));
    // Replies go to a plain file instead of the FUSE device.
    let device = std::fs::File::create(dir.path().join("replies")).expect("replies");
    let channel = Channel::new(device);
    let spans = Arc::new(Spans::default());
    let subscriber = tracing_subscriber::registry().with(Recorder(Arc::clone(&spans)));
    let name = OsStr::new(SECRET);
    let operations = every_operation(name);
    tracing::subscriber::with_default(subscriber, || {
        serve_every(&adapter, &channel, &operations);
    });

    let opened = spans.opened.lock().expect("lock").clone();
    let entered = spans.entered.lock().expect("lock").clone();
    let mut expected: Vec<_> = operations
        .iter()
        .map(|(_, span, fields)| (*span, *fields))
        .collect();
    expected.push(("forget", &["ino"]));
    let names: Vec<_> = opened.iter().map(|(_, o)| o.name).collect();
    let wanted: Vec<_> = expected.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names, wanted,
        "one span per request, in order, named after its operation"
    );
    assert_eq!(
        entered, wanted,
        "each span is entered while its request is served"
    );
    for ((_, span), (name, fields)) in opened.iter().zip(&expected) {
        let keys: Vec<_> = span.fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, *fields, "{name}: {span:?}");
        for (key, value) in &span.fields {
            if matches!(*key, "ino" | "parent" | "new_parent") {
                assert_eq!(value, "7", "{name}: {key}");
            }
            if matches!(*key, "fh" | "fh_out") {
                assert_eq!(value, "9", "{name}: {key}");
            }
            assert!(!value.contains(SECRET), "{name} logs a name: {span:?}");
        }
    }
}

#[test]
fn requests_are_counted_under_the_name_of_their_span() {
    let name = OsStr::new(SECRET);
    let operations = every_operation(name);
    for (op, span, _) in &operations {
        assert_eq!(OPERATIONS[operation_index(op)], *span);
    }
    let (dir, fs) = setup_with(CryptFs::new);
    let adapter = FuseAdapter::new(Arc::new(fs));
    let device = std::fs::File::create(dir.path().join("replies")).expect("replies");
    let channel = Channel::new(device);
    serve_every(&adapter, &channel, &operations);
    let counted = adapter.requests().snapshot();
    assert_eq!(counted.total, operations.len() as u64 + 1);
    let forgets = operations.iter().filter(|(_, s, _)| *s == "forget").count() as u64 + 1;
    assert_eq!(counted.by_operation.get("forget"), Some(&forgets));
    assert_eq!(counted.by_operation.get("getattr"), Some(&1));
}
