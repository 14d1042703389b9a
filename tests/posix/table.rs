//! The scenario table, part one: creation modes under umasks, chmod/chown/utimensat on every
//! file type, setuid/setgid clearing and setgid directories. See `lang.rs` for the language.
//!
//! Every scenario runs in a fresh directory owned by `@me` (mode 0755), under umask 022 unless
//! a step says otherwise, in ext4 and in kmsfs; the answers and the final state must agree.
//! Known kmsfs bugs are NOT marked: their scenarios expect ext4's behaviour and fail until fixed.

use super::lang::{OPEN_IS_A_READ, Scenario, both, root, user};

/// Every scenario, in report order.
pub fn all() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(creation());
    all.extend(attributes());
    all.extend(setid());
    all.extend(setgid_dirs());
    all.extend(super::table_names::renames_and_links());
    all.extend(super::table_names::directories());
    all.extend(super::table_names::sticky());
    all.extend(super::table_names::errors());
    all.extend(super::table_data::xattrs());
    all.extend(super::table_data::acls());
    all.extend(super::table_data::data());
    all
}

/// New nodes of every kind and creation mode, under umasks 000, 022, 077 and 027.
#[rustfmt::skip] // one scenario per line
fn creation() -> Vec<Scenario> {
    let kinds = [
        ("open-0666", "open f w,creat 0666; close"),
        ("open-0777", "open f w,creat 0777; close"),
        ("open-04777", "open f w,creat 04777; close"),
        ("open-02777", "open f w,creat 02777; close"),
        ("open-01777", "open f w,creat 01777; close"),
        ("open-excl-0640", "open f rw,creat,excl 0640; fstat; close"),
        ("mkdir-0777", "mkdir d 0777; stat d"),
        ("mkdir-01777", "mkdir d 01777"),
        ("mkdir-02777", "mkdir d 02777"),
        ("mkfifo-0666", "mkfifo p 0666"),
        ("mknod-reg-0666", "mknod f reg 0666"),
        ("mknod-fifo-0777", "mknod p fifo 0777"),
        ("mknod-sock-0777", "mknod s sock 0777"),
        ("bound-socket", "bind s; lstat s"),
        ("symlink", "symlink target l; lstat l"),
        ("tmpfile-0666", "open . w,tmpfile 0666; linkfd t; close"),
    ];
    let mut list = Vec::new();
    for umask in ["000", "022", "077", "027"] {
        for (kind, script) in kinds {
            let sc = both(
                format!("create/umask{umask}/{kind}"),
                format!("umask {umask}; {script}"),
            );
            list.push(sc);
        }
    }
    list.push(root("create/mknod-char-device", "mknod c chr 0644; lstat c"));
    list.push(user(
        "create/mknod-char-device-unprivileged",
        "mknod c chr 0644",
    ));
    list
}

/// chmod, chown and utimensat on every file type, through the name and on the link itself.
#[rustfmt::skip] // one scenario per line
fn attributes() -> Vec<Scenario> {
    let types = [
        ("file", "open x w,creat 0644; close"),
        ("dir", "mkdir x 0755"),
        ("fifo", "mkfifo x 0644"),
        ("socket", "bind x"),
        ("symlink", "touch t; symlink t x"),
        ("dangling-symlink", "symlink nowhere x"),
    ];
    let ops = [
        ("chmod-0600", "chmod x 0600; lstat x"),
        ("chmod-07777", "chmod x 07777; lstat x"),
        ("lchmod-0600", "lchmod x 0600; lstat x"),
        ("chown-other", "chown x other other; lstat x"),
        ("lchown-other", "lchown x other other; lstat x"),
        ("utimes-explicit", "utimes x 5000 6000"),
        ("utimes-now-now", "utimes x now now"),
        ("lutimes-explicit", "lutimes x 5000 6000"),
        ("lutimes-now-omit", "lutimes x now omit"),
        ("lutimes-omit-omit", "lutimes x omit omit"),
    ];
    let mut list = Vec::new();
    for (kind, make) in types {
        for (op, script) in ops {
            list.push(both(format!("attr/{kind}/{op}"), format!("{make}; tick; {script}")));
        }
        list.push(both(
            format!("attr/{kind}/lchown-to-own-group"),
            format!("{make}; tick; @me+g lchown x -1 g; lstat x"),
        ));
    }
    let others_file = "@root touch f; chown f other other";
    list.extend([
        both("attr/utimes-now-by-non-owner-writer", format!("{others_file}; chmod f 0666; @me utimes f now now")),
        both("attr/utimes-now-by-non-owner-reader", format!("{others_file}; chmod f 0644; @me utimes f now now")),
        both("attr/utimes-explicit-by-non-owner", format!("{others_file}; chmod f 0666; @me utimes f 5000 5000")),
        both("attr/utimes-now-omit-by-non-owner", format!("{others_file}; chmod f 0666; @me utimes f now omit")),
        both("attr/futimes-explicit-and-omit", "touch f; tick; open f w; futimes 5000 omit; close"),
        both("attr/chmod-by-non-owner", format!("{others_file}; @me chmod f 0777; stat f")),
        both("attr/fchmod", "touch f; tick; open f w; fchmod 0400; fstat; close"),
        both("attr/fchown-to-own-group", "touch f; tick; @me+g open f r; fchown -1 g; fstat; close").atime_differs(OPEN_IS_A_READ),
        both("attr/chown-to-foreign-group", "touch f; tick; chown f -1 g; stat f"),
        both("attr/chown-to-self-keeps-owner", "touch f; tick; chown f me -1; stat f"),
        both("attr/chown-noop-by-non-owner", format!("{others_file}; @me chown f -1 -1; stat f")),
        both("attr/chown-dir-to-own-group", "mkdir d 0755; tick; @me+g chown d -1 g; stat d"),
    ]);
    list
}

/// Setuid and setgid bits: cleared by writes, truncation, fallocate and chown, as Linux does.
#[rustfmt::skip] // one scenario per line
fn setid() -> Vec<Scenario> {
    // A world-writable 06777 file of another user, in the shared group.
    let f = "@root touch f; chown f other g; chmod f 06777";
    // The same file owned by @me.
    let mine = "@root touch f; chown f me g; chmod f 06777";
    vec![
        both("setid/write-by-non-owner", format!("{f}; @me open f w; write abc; close; stat f")),
        both("setid/write-by-group-member", format!("{f}; @me+g open f w; write abc; close; stat f")),
        both("setid/write-by-owner", format!("{mine}; @me open f w; write abc; close; stat f")),
        both("setid/pwrite-by-owner", format!("{mine}; @me open f rw; pwrite 100 abc; close; stat f")).atime_differs(OPEN_IS_A_READ),
        both("setid/truncate", format!("{f}; @me truncate f 1; stat f")),
        both("setid/ftruncate", format!("{f}; @me open f w; ftruncate 2; close; stat f")),
        both("setid/open-trunc", format!("{f}; @root open f w; write abc; close; @me open f w,trunc; close; stat f")),
        both("setid/fallocate-by-non-member", format!("{f}; @me open f w; fallocate 0 0 8192; close; stat f")),
        both("setid/fallocate-by-group-member", format!("{f}; @me+g open f w; fallocate 0 0 8192; close; stat f")),
        both("setid/sgid-without-group-exec-survives-write", "@root touch f; chown f other g; chmod f 02666; @me open f w; write abc; close; stat f"),
        both("setid/sgid-without-group-exec-truncate", "@root touch f; chown f other g; chmod f 02666; @me truncate f 1; stat f"),
        both("setid/sgid-without-group-exec-ftruncate", "@root touch f; chown f other g; chmod f 02666; @me open f w; ftruncate 1; close; stat f"),
        both("setid/sgid-without-group-exec-fallocate", "@root touch f; chown f other g; chmod f 02666; @me open f w; fallocate 0 0 8192; close; stat f"),
        both("setid/sgid-without-group-exec-fallocate-by-member", "@root touch f; chown f other g; chmod f 02666; @me+g open f w; fallocate 0 0 8192; close; stat f"),
        both("setid/sgid-without-group-exec-write-by-member", "@root touch f; chown f other g; chmod f 02666; @me+g open f w; write abc; close; stat f"),
        root("setid/chown-by-root-clears", format!("{f}; chown f root root; stat f")),
        root("setid/chown-by-root-keeps-sgid-without-group-exec", "touch f; chmod f 06666; chown f other g; stat f"),
        both("setid/chmod-sgid-by-non-member", "@root touch f; chown f me g; @me chmod f 02755; stat f"),
        both("setid/chmod-sgid-by-member", "@root touch f; chown f me g; @me+g chmod f 02755; stat f"),
        both("setid/chown-group-by-owner-clears", format!("{mine}; chmod f 06755; @me+g chown f -1 me; stat f")),
        both("setid/copy-file-range-into", format!("{f}; @me open#1 f w; open src w,creat 0644; write data; close; open src r; copyrange 0 1 4; close#1; stat f")),
        both("setid/write-to-dir-sgid-bit-untouched", "mkdir d 02755; touch d/f; stat d"),
    ]
}

/// Directories with S_ISGID give new nodes their group, and new directories the bit.
#[rustfmt::skip] // one scenario per line
fn setgid_dirs() -> Vec<Scenario> {
    let sg = "@root mkdir sg 0777; chown sg root g; chmod sg 02777";
    vec![
        both("setgid-dir/file-gets-group", format!("{sg}; @me open sg/f w,creat 0666; close; stat sg/f")),
        both("setgid-dir/subdir-gets-group-and-bit", format!("{sg}; @me mkdir sg/d 0755; stat sg/d")),
        both("setgid-dir/subdir-keeps-group-write", format!("{sg}; @me umask 002; mkdir sg/d 0775; stat sg/d")),
        both("setgid-dir/nested-subdirs", format!("{sg}; @me mkdir sg/a 0777; mkdir sg/a/b 0777; stat sg/a/b")),
        both("setgid-dir/file-02777-by-non-member", format!("{sg}; @me open sg/f w,creat 02777; close; stat sg/f")),
        both("setgid-dir/file-02777-by-member", format!("{sg}; @me+g open sg/f w,creat 02777; close; stat sg/f")),
        both("setgid-dir/fifo-and-socket", format!("{sg}; @me mkfifo sg/p 0644; bind sg/s")),
        both("setgid-dir/symlink", format!("{sg}; @me symlink t sg/l; lstat sg/l")),
        both("setgid-dir/tmpfile", format!("{sg}; @me open sg rw,tmpfile 0640; linkfd sg/t; close")),
        both("setgid-dir/rename-in-keeps-group", format!("{sg}; @me touch f; rename f sg/f; stat sg/f")),
        both("setgid-dir/link-in-keeps-group", format!("{sg}; @me touch f; link f sg/f; stat sg/f")),
        both("setgid-dir/chmod-by-non-member-drops-bit", "@root mkdir d 0755; chown d me g; @me chmod d 02775; stat d"),
    ]
}
