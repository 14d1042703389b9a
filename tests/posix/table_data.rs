//! The scenario table, part three: extended attributes, POSIX ACLs, and file data (O_TMPFILE,
//! SEEK_DATA/SEEK_HOLE, copy_file_range, fallocate, sizes and times).

use super::lang::{
    CTIME_AT_WRITEBACK, OPEN_IS_A_READ, SEALED_XATTR_OVERHEAD, Scenario, both, root, user,
};

/// Extended attributes on every file type, and their errors.
#[rustfmt::skip] // one scenario per line
pub fn xattrs() -> Vec<Scenario> {
    let types = [
        ("file", "touch x"),
        ("dir", "mkdir x 0755"),
        ("fifo", "mkfifo x 0644"),
        ("socket", "bind x"),
        ("symlink", "touch t; symlink t x"),
    ];
    let mut list = Vec::new();
    for (kind, make) in types {
        let cycle = |ns: &str| {
            format!(
                "{make}; tick; lxset x {ns}.k v1; lxget x {ns}.k; lxset x {ns}.k v2 replace; lxlist x; \
                 lxrm x {ns}.k; lxget x {ns}.k"
            )
        };
        list.push(both(format!("xattr/{kind}/user"), cycle("user")));
        list.push(root(format!("xattr/{kind}/trusted"), cycle("trusted")));
        list.push(root(format!("xattr/{kind}/security"), cycle("security")));
    }
    list.extend([
        user("xattr/trusted-unprivileged", "touch f; xset f trusted.k v; xlist f"),
        both("xattr/set-follows-the-symlink", "touch t; symlink t l; tick; xset l user.k v; xget t user.k; xlist l; lxlist l"),
        both("xattr/create-existing", "touch f; xset f user.k v; xset f user.k w create; xget f user.k"),
        both("xattr/replace-missing", "touch f; xset f user.k v replace"),
        both("xattr/get-missing", "touch f; xget f user.k; xrm f user.k"),
        both("xattr/buffer-too-small", "touch f; xset f user.k value; xget f user.k 2; xget f user.k 0"),
        both("xattr/large-value", "touch f; xset f user.big {3900}; xget f user.big"),
        both("xattr/value-filling-a-block", "touch f; xset f user.big {4000}; xget f user.big").intended(SEALED_XATTR_OVERHEAD),
        both("xattr/empty-value", "touch f; xset f user.e {}; xget f user.e; xlist f"),
        both("xattr/unknown-namespace", "touch f; xset f foo.bar v"),
        both("xattr/non-owner-without-write", "@root touch f; xset f user.k v; @me xset f user.k w; xget f user.k; xrm f user.k"),
        both("xattr/non-owner-with-write", "@root touch f; chmod f 0666; @me xset f user.k w; xget f user.k"),
        both("xattr/sticky-dir-non-owner", "@root mkdir t 0777; chmod t 01777; @me xset t user.k v"),
        both("xattr/many-names", "touch f; tick; xset f user.a 1; xset f user.b 2; xset f user.c 3; xrm f user.b; xlist f"),
    ]);
    list
}

/// POSIX ACLs set as `system.posix_acl_*` xattrs: mode kept in step, enforcement, default
/// ACL inheritance.
#[rustfmt::skip] // one scenario per line
pub fn acls() -> Vec<Scenario> {
    let ext = "u::rw-,u:other:r--,g::r--,m::rw-,o::---";
    let own = "open f w,creat 0600; write secret; close";
    let dflt = "mkdir d 0755; aclset d default u::rwx,u:other:rwx,g::r-x,m::rwx,o::---";
    vec![
        both("acl/extended-sets-group-bits-from-mask", format!("touch f; tick; aclset f access {ext}; stat f; aclget f access")),
        both("acl/minimal-acl-is-just-the-mode", "touch f; tick; aclset f access u::rwx,g::r-x,o::---; stat f; aclget f access"),
        both("acl/chmod-updates-the-mask", format!("touch f; aclset f access {ext}; chmod f 0604; aclget f access; stat f")),
        both("acl/named-user-may-read", format!("{own}; aclset f access u::rw-,u:other:r--,g::---,m::r--,o::---; @other open f r; read 10; close; open f w")),
        both("acl/named-user-may-write", format!("{own}; aclset f access u::rw-,u:other:rw-,g::---,m::rw-,o::---; @other open f w; write x; close")),
        both("acl/mask-limits-named-user", format!("{own}; aclset f access u::rw-,u:other:rw-,g::---,m::---,o::---; @other open f r; access f r")),
        both("acl/named-group", "@root open f w,creat 0600; write secret; close; aclset f access u::rw-,g::---,g:g:r--,m::r--,o::---; @me+g open f r; read 10; close; @me open f r"),
        both("acl/named-user-search-dir", "@root mkdir d 0700; touch d/f; aclset d access u::rwx,u:other:--x,g::---,m::--x,o::---; @other stat d/f; opendir d"),
        both("acl/default-inherited-by-file", format!("{dflt}; tick; touch d/f; stat d/f; aclget d/f access; aclget d/f default")),
        both("acl/default-inherited-by-dir", format!("{dflt}; mkdir d/s 0777; stat d/s; aclget d/s access; aclget d/s default")),
        both("acl/default-ignores-umask", format!("{dflt}; umask 077; open d/f w,creat 0666; close; stat d/f")),
        both("acl/default-inherited-by-fifo", format!("{dflt}; mkfifo d/p 0666; stat d/p; aclget d/p access")),
        both("acl/default-minimal", "mkdir d 0755; aclset d default u::rwx,g::---,o::---; touch d/f; mkdir d/s 0777; stat d/f; stat d/s; aclget d/s default"),
        both("acl/default-enforced-for-inherited-file", format!("{dflt}; chmod . 0777; open d/f w,creat 0660; write mine; close; @other open d/f r; read 10")),
        both("acl/default-on-a-file", "touch f; aclset f default u::rwx,g::---,o::---"),
        both("acl/set-by-non-owner", format!("@root touch f; @me aclset f access {ext}; stat f")),
        both("acl/invalid-named-entry-without-mask", "touch f; aclset f access u::rw-,u:other:r--,g::r--,o::---"),
        both("acl/set-clears-sgid-of-non-member-owner", "@root touch f; chown f me g; chmod f 02755; @me aclset f access u::rwx,g::rwx,o::rwx; stat f"),
        both("acl/set-keeps-sgid-of-member-owner", "@root touch f; chown f me g; chmod f 02755; @me+g aclset f access u::rwx,g::rwx,o::rwx; stat f"),
        both("acl/remove", format!("touch f; aclset f access {ext}; xrm f system.posix_acl_access; stat f; aclget f access")),
    ]
}

/// File data: O_TMPFILE, holes, copy_file_range, fallocate, sizes and times.
#[rustfmt::skip] // one scenario per line
pub fn data() -> Vec<Scenario> {
    let ten_k = "open f rw,creat 0644; fill 0 10000";
    vec![
        both("tmpfile/write-then-link", "open . rw,tmpfile 0600; write hello; fstat; linkfd t; fstat; close; stat t; open t r; read 10; close"),
        both("tmpfile/excl-cannot-be-linked", "open . rw,tmpfile,excl 0600; write x; linkfd t; close; names ."),
        both("tmpfile/not-in-the-listing", "open . rw,tmpfile 0600; names .; close"),
        both("tmpfile/on-a-file", "touch f; open f rw,tmpfile 0600"),
        both("tmpfile/read-only", "open . r,tmpfile 0600"),
        both("tmpfile/unwritable-dir", "@root mkdir d 0755; @me open d rw,tmpfile 0600"),
        both("seek/sparse-file", "open f rw,creat 0644; pwrite 0 head; pwrite 1048576 middle; ftruncate 3145728; holes; close"),
        both("seek/empty-file", "open f rw,creat 0644; lseek 0 data; lseek 0 hole; close"),
        both("seek/dense-file", format!("{ten_k}; holes; lseek 0 hole; lseek 9999 data; lseek 10000 data; lseek 10000 hole; lseek 20000 hole; close")),
        both("seek/only-a-hole", "open f rw,creat 0644; ftruncate 1048576; holes; lseek 0 data; close"),
        both("seek/punched-hole", "open f rw,creat 0644; fill 0 1048576; fallocate punch 131072 524288; holes; close"),
        both("copy/whole-file", "open f w,creat 0644; write hello-world; close; touch g; tick; open f r; open#1 g rw; copyrange 0 1 100; copyrange 0 1 100; pread#1 0 100; fstat#1; close; close#1"),
        both("copy/within-a-file", "open f rw,creat 0644; write 0123456789; lseek 0 set; open#1 f rw; lseek#1 20 set; copyrange 0 1 5; pread 0 40; close; close#1"),
        both("copy/overlapping-in-a-file", "open f rw,creat 0644; write 0123456789; lseek 0 set; open#1 f rw; lseek#1 2 set; copyrange 0 1 5; close; close#1"),
        both("copy/to-an-append-descriptor", "open f rw,creat 0644; write abc; lseek 0 set; open#1 g w,creat,append 0644; copyrange 0 1 3; close; close#1"),
        both("copy/from-a-write-only-descriptor", "open f w,creat 0644; write abc; open#1 g w,creat 0644; copyrange 0 1 3; close; close#1"),
        both("copy/to-a-read-only-descriptor", "open f rw,creat 0644; write abc; lseek 0 set; touch g; open#1 g r; copyrange 0 1 3; close; close#1"),
        both("copy/from-a-directory", "mkdir d 0755; open d r; open#1 g w,creat 0644; copyrange 0 1 3; close; close#1"),
        both("copy/out-of-the-tree", "open f rw,creat 0644; write abc; lseek 0 set; open#1 {out}/g w,creat 0644; copyrange 0 1 3; close; close#1"),
        both("fallocate/extends", "open f w,creat 0644; write abc; close; tick; open f rw; fallocate 0 0 10000; fstat; pread 0 8; close"),
        both("fallocate/keep-size", "open f w,creat 0644; write abc; close; tick; open f rw; fallocate keep 0 100000; fstat; close").atime_differs(OPEN_IS_A_READ),
        both("fallocate/punch-hole", "open f w,creat 0644; fill 0 20000; close; tick; open f rw; fallocate punch 4096 8192; pread 4090 12; fstat; close"),
        both("fallocate/zero-range", "open f rw,creat 0644; fill 0 20000; fallocate zero 100 200; pread 95 10; pread 295 10; fstat; close"),
        both("fallocate/zero-range-past-eof", "open f rw,creat 0644; fill 0 100; fallocate zero 50 200; fstat; close"),
        both("fallocate/zero-range-keep-size", "open f rw,creat 0644; fill 0 100; fallocate zerokeep 50 200; fstat; close"),
        both("fallocate/read-only-descriptor", "touch f; open f r; fallocate 0 0 100; close"),
        both("data/truncate-grow-and-shrink", "open f rw,creat 0644; write hello; ftruncate 10000; fstat; ftruncate 3; pread 0 10; fstat; close"),
        both("data/truncate-by-path", "open f w,creat 0644; write hello; close; tick; truncate f 2; stat f; truncate f 8192; stat f"),
        both("data/append", "open f w,creat,append 0644; write aa; pwrite 0 bb; close; open f r; read 10; close"),
        both("data/open-trunc", "open f w,creat 0644; write hello; close; tick; open f w,trunc; fstat; close"),
        both("data/write-past-eof-leaves-zeros", "open f rw,creat 0644; pwrite 10000 x; pread 9995 10; fstat; close"),
        both("data/read-past-eof", "open f rw,creat 0644; write abc; pread 100 10; read 10; close"),
        both("data/write-changes-mtime-and-ctime", "@root open f w,creat 0644; write old; close; chown f me me; @me open f w; write new; close"),
        both("data/open-for-reading-keeps-atime", "@root open f w,creat 0644; write old; close; chown f me me; @me open f r; close").atime_differs(OPEN_IS_A_READ),
        both("data/open-for-writing-keeps-atime", "@root open f w,creat 0644; write old; close; chown f me me; @me open f w; close"),
        both("data/fstat-keeps-atime", "@root open f w,creat 0644; write old; close; chown f me me; @me open f r; fstat; close").atime_differs(OPEN_IS_A_READ),
        both("data/read-of-cached-pages-changes-atime", "open f w,creat 0644; write fresh; close; tick; open f r; read 10; close"),
        both("data/read-after-write-changes-atime", "touch f; tick; open f rw; write fresh; pread 0 5; close"),
        both("cache/times-after-write-survive-a-cache-drop", "touch f; tick; open f w; write x; close; @root dropcaches f").intended(CTIME_AT_WRITEBACK),
        both("cache/times-after-utimes-survive-a-cache-drop", "touch f; tick; utimes f 5000 6000; @root dropcaches f"),
        both("cache/times-after-chmod-survive-a-cache-drop", "touch f; tick; chmod f 0600; @root dropcaches f").intended(CTIME_AT_WRITEBACK),
        both("cache/times-after-truncate-survive-a-cache-drop", "touch f; tick; truncate f 100; @root dropcaches f").intended(CTIME_AT_WRITEBACK),
        both("cache/dir-times-after-create-survive-a-cache-drop", "mkdir d 0755; tick; touch d/x; @root dropcaches d d/x"),
        both("data/read-changes-atime", "@root open f w,creat 0644; write old; close; chown f me me; @me open f r; read 10; close"),
        both("data/chmod-changes-ctime-only", "touch f; tick; chmod f 0600"),
        both("data/utimes-now-on-dir", "mkdir d 0755; tick; utimes d now now"),
        both("data/unlink-changes-dir-times", "touch f; mkdir d 0755; touch d/g; tick; unlink d/g"),
        both("data/rename-changes-ctime", "mkdir d 0755; touch d/f; tick; rename d/f d/g"),
        both("data/st-blocks", "open f w,creat 0644; fill 0 4096; close; blocks f")
            .intended("st_blocks counts the cipher file: a 512-byte header and a 28-byte tag per 4 KiB block"),
    ]
}
