//! The scenario table, part two: the namespace. Renames and hard links, directory streams
//! while the directory changes, sticky directories, and the error cases of name lookups.

use super::lang::{OPEN_IS_A_READ, Scenario, both, root, user};

/// rename(2) and renameat2(2) edge cases, and hard link counts.
#[rustfmt::skip] // one scenario per line
pub fn renames_and_links() -> Vec<Scenario> {
    let ab = "open a w,creat 0644; write aaa; close; open b w,creat 0600; write bb; close";
    vec![
        both("rename/over-a-file", format!("{ab}; tick; rename a b; stat b; open b r; read 10; close; names .")),
        both("rename/dir-over-empty-dir", "mkdir a 0755; mkdir b 0700; tick; rename a b; stat b; stat ."),
        both("rename/dir-over-non-empty-dir", "mkdir a 0755; mkdir b 0755; mkdir b/c 0755; rename a b"),
        both("rename/file-over-dir", "touch a; mkdir b 0755; rename a b"),
        both("rename/dir-over-file", "mkdir a 0755; touch b; rename a b"),
        both("rename/dir-into-own-subdir", "mkdir a 0755; mkdir a/b 0755; rename a a/b/c"),
        both("rename/dir-onto-own-subdir", "mkdir a 0755; mkdir a/b 0755; rename a a/b"),
        both("rename/noreplace-onto-existing", format!("{ab}; rename a b noreplace")),
        both("rename/noreplace-onto-free-name", format!("{ab}; rename a c noreplace; names .")),
        both("rename/noreplace-to-itself", "touch a; rename a a noreplace"),
        both("rename/exchange-files", format!("{ab}; tick; rename a b exchange; open a r; read 10; close; stat b")),
        both("rename/exchange-file-and-dir", "touch a; mkdir b 0700; tick; rename a b exchange; lstat a; lstat b"),
        both("rename/exchange-with-missing", "touch a; rename a b exchange"),
        both("rename/exchange-across-dirs-fixes-nlink", "mkdir p 0755; mkdir q 0755; mkdir p/d 0755; touch q/f; tick; rename p/d q/f exchange; stat p; stat q; stat q/f/.."),
        both("rename/to-itself", "touch a; tick; rename a a; stat a"),
        both("rename/onto-own-hard-link", "touch a; link a b; tick; rename a b; names .; stat a"),
        both("rename/across-dirs", "mkdir p 0755; mkdir q 0755; touch p/f; tick; rename p/f q/f; names p; names q"),
        both("rename/dir-across-dirs-fixes-nlink", "mkdir p 0755; mkdir q 0755; mkdir p/d 0755; tick; rename p/d q/d; stat p; stat q; stat q/d/.."),
        both("rename/a-symlink", "symlink target a; tick; rename a b; readlink b; lstat b"),
        both("rename/file-onto-symlink", "touch a; symlink a l; rename a l; lstat l"),
        both("rename/file-with-trailing-slash", "touch a; rename a b/"),
        both("rename/dot", "mkdir d 0755; rename d/. e"),
        both("rename/open-file-replaced", format!("{ab}; open#1 b r; rename a b; read#1 10; fstat#1; close#1")),
        both("rename/out-of-the-tree-exdev", "touch a; rename a {out}/a"),
        both("rename/dir-out-of-the-tree-exdev", "mkdir d 0755; rename d {out}/d"),
        both("rename/from-unwritable-dir", "@root mkdir ro 0755; touch ro/f; @me rename ro/f g"),
        both("rename/unwritable-dir-to-new-parent", "@root mkdir p 0777; mkdir p/d 0755; mkdir q 0777; @me rename p/d q/d"),
        both("rename/unwritable-dir-same-parent", "@root mkdir p 0777; mkdir p/d 0755; @me rename p/d p/e"),
        both("link/counts", "touch f; tick; link f g; link f h; stat f; unlink g; stat f; stat h"),
        both("link/a-directory", "mkdir d 0755; link d e"),
        both("link/onto-existing-name", "touch f; touch g; link f g"),
        both("link/the-symlink-itself", "touch t; symlink t l; tick; link l l2; lstat l2; stat t"),
        both("link/through-the-symlink", "touch t; symlink t l; tick; linkf l l2; lstat l2; stat t"),
        both("link/protected-hardlinks", "@root touch f; chmod f 0600; @me link f g"),
        both("link/protected-hardlinks-readable-writable", "@root touch f; chmod f 0666; @me link f g; stat g"),
        both("link/dir-nlink-counts-subdirs", "mkdir d 0755; mkdir d/a 0755; mkdir d/b 0755; touch d/f; tick; stat d; rmdir d/a; stat d"),
        both("link/unlinked-open-file", "open f rw,creat 0644; write abc; unlink f; fstat; pread 0 10; close"),
        both("link/across-dirs", "mkdir p 0755; touch f; tick; link f p/f; stat p/f; stat f"),
        both("link/into-unwritable-dir", "@root mkdir ro 0755; @me touch f; link f ro/f"),
        both("link/write-through-the-other-name", "touch f; link f g; tick; open g w; write xyz; close; stat f"),
        both("link/out-of-the-tree-exdev", "touch f; link f {out}/f"),
        both("link/rename-one-name-keeps-count", "touch f; link f g; tick; rename g h; stat f; stat h"),
    ]
}

/// Directory streams: rewinddir shows the current set, telldir positions survive changes,
/// d_ino matches st_ino.
#[rustfmt::skip] // one scenario per line
pub fn directories() -> Vec<Scenario> {
    let d = "mkdir d 0755; touchn d/e 12";
    vec![
        both("readdir/rewind-shows-new-names", format!("{d}; opendir d; readdir 3; touch d/n1 d/n2 d/n3; rewinddir; readrest; closedir")),
        both("readdir/rewind-drops-removed-names", format!("{d}; opendir d; readdir 3; unlink d/e1; unlink d/e7; rewinddir; readrest; closedir")),
        both("readdir/rewind-after-rename", format!("{d}; opendir d; readdir 3; rename d/e2 d/renamed; rewinddir; readrest; closedir")),
        both("readdir/continue-after-adds", format!("{d}; opendir d; readdir 4; touch d/n1 d/n2; readrest; closedir")),
        both("readdir/continue-after-removes", format!("{d}; opendir d; readdir 4; unlink d/e3; unlink d/e9; readrest; closedir")),
        both("readdir/seekdir-rereads-from-the-mark", format!("{d}; opendir d; readdir 4; telldir; readdir 5; seekdir; readrest; closedir")),
        both("readdir/seekdir-after-adds", format!("{d}; opendir d; readdir 4; telldir; readdir 3; touch d/n1 d/n2 d/n3 d/n4; seekdir; readrest; closedir")),
        both("readdir/seekdir-after-removes", format!("{d}; opendir d; readdir 4; telldir; readdir 3; unlink d/e0; unlink d/e5; unlink d/e11; seekdir; readrest; closedir")),
        both("readdir/seekdir-in-a-large-dir", "mkdir d 0755; touchn d/n 300; opendir d; readdir 150; telldir; readdir 40; touchn d/m 20; seekdir; readrest; rewinddir; readrest; closedir"),
        both("readdir/two-streams", format!("{d}; opendir#1 d; opendir#2 d; readdir#1 5; readdir#2 7; touch d/x; rewinddir#1; readrest#1; readrest#2; closedir#1; closedir#2")),
        both("readdir/empty-dir", "mkdir d 0755; opendir d; readrest; names d"),
        both("readdir/inos-of-every-type", "mkdir d 0755; touch d/f; mkdir d/sub 0755; symlink x d/l; mkfifo d/p 0644; bind d/s; link d/f d/h; inos d; inos ."),
        both("readdir/inos-after-rename-and-link", "touch a; rename a b; link b c; mkdir d 0755; rename d e; inos .; inos e"),
        both("readdir/inos-of-entries-the-kernel-forgot", "mkdir d 0755; touchn d/e 300; mkdir d/sub 0755; @root dropcaches; @me inos d; opendir d; readdir 100; telldir; readdir 100; seekdir; readrest; closedir"),
        both("readdir/names-after-mutations", "touchn x 5; unlink x1; rename x2 y; mkdir z 0755; rmdir z; names ."),
        both("readdir/opendir-a-file", "touch f; opendir f"),
        both("readdir/opendir-without-read-permission", "@root mkdir d 0711; touch d/f; @me opendir d; stat d/f"),
    ]
}

/// Directories with the sticky bit: only the owner of a file or of the directory (or root)
/// may remove or rename a name.
#[rustfmt::skip] // one scenario per line
pub fn sticky() -> Vec<Scenario> {
    let t = "@root mkdir t 0777; chmod t 01777; @other touch t/f; mkdir t/d 0755; chmod t/f 0666";
    vec![
        both("sticky/unlink-other-users-file", format!("{t}; @me unlink t/f")),
        both("sticky/rename-other-users-file", format!("{t}; @me rename t/f t/g")),
        both("sticky/rename-onto-other-users-file", format!("{t}; @me touch t/mine; rename t/mine t/f")),
        both("sticky/rmdir-other-users-dir", format!("{t}; @me rmdir t/d")),
        both("sticky/own-file", format!("{t}; @me touch t/m; rename t/m t/n; unlink t/n")),
        both("sticky/dir-owner-may-unlink", "@root mkdir t 01777; chown t me me; chmod t 01777; @other touch t/f; @me unlink t/f"),
        both("sticky/write-other-users-file-allowed", format!("{t}; @me open t/f w; write x; close")),
    ]
}

/// Errors of name lookups and of operations on the wrong kind of node.
#[rustfmt::skip] // one scenario per line
pub fn errors() -> Vec<Scenario> {
    let ro = "@root mkdir ro 0755; touch ro/f; chmod ro/f 0600";
    vec![
        both("error/name-255-is-fine", "open {255} w,creat 0644; close; stat {255}"),
        both("error/enametoolong-open", "open {256} w,creat 0644"),
        both("error/enametoolong-mkdir", "mkdir {256} 0755"),
        both("error/enametoolong-symlink", "symlink target {256}"),
        both("error/enametoolong-rename", "touch a; rename a {256}"),
        both("error/enametoolong-link", "touch a; link a {256}"),
        both("error/enametoolong-mknod", "mknod {256} fifo 0644"),
        both("error/enametoolong-stat", "stat {256}"),
        both("error/eloop-symlink-loop", "symlink a b; symlink b a; open a r; stat a; lstat a"),
        both("error/eloop-self-loop", "symlink l l; stat l; lstat l; readlink l"),
        both("error/eloop-o-nofollow", "touch t; symlink t l; open l r,nofollow"),
        both("error/o-path-nofollow-opens-the-link", "touch t; symlink t l; open l path,nofollow; fstat; close"),
        both("error/enotempty", "mkdir d 0755; touch d/f; rmdir d"),
        both("error/eisdir-open-for-write", "mkdir d 0755; open d w; open d rw; open d r; close"),
        both("error/eisdir-unlink-a-dir", "mkdir d 0755; unlink d"),
        both("error/eisdir-truncate-a-dir", "mkdir d 0755; truncate d 0"),
        both("error/enotdir-path-through-a-file", "touch f; open f/x r; mkdir f/x 0755; stat f/x"),
        both("error/enotdir-rmdir-a-file", "touch f; rmdir f"),
        both("error/enotdir-o-directory", "touch f; open f r,directory"),
        both("error/enotdir-trailing-slash", "touch f; open f/ r; stat f/"),
        both("error/eexist-mkdir", "mkdir d 0755; mkdir d 0755; touch f; mkdir f 0755"),
        both("error/eexist-o-excl", "touch f; open f w,creat,excl 0644"),
        both("error/eexist-symlink-and-mknod", "touch f; symlink x f; mknod f fifo 0644; mkfifo f 0644; bind f"),
        both("error/eexist-o-excl-dangling-symlink", "symlink nowhere l; open l w,creat,excl 0644; lstat l"),
        both("error/creat-through-dangling-symlink", "symlink nowhere l; open l w,creat 0600; close; stat nowhere"),
        both("error/eacces-read", format!("{ro}; @me open ro/f r; open ro/f w; access ro/f r")).atime_differs(OPEN_IS_A_READ),
        both("error/eacces-create-in-unwritable-dir", format!("{ro}; @me touch ro/g; mkdir ro/d 0755; symlink x ro/l")),
        both("error/eacces-unlink-in-unwritable-dir", format!("{ro}; @me unlink ro/f")),
        both("error/eacces-search", "@root mkdir d 0754; touch d/f; @me stat d/f; opendir d"),
        both("error/access-modes", "open f w,creat 0640; close; access f r; access f w; access f x; access f f; access f rwx"),
        both("error/access-as-non-owner", "@root open f w,creat 0604; close; @me access f r; access f w; access f x"),
        both("error/enoent", "open missing r; unlink missing; rmdir missing; stat missing/x; rename missing x; link missing x"),
        both("error/rmdir-dot-and-dotdot", "mkdir d 0755; rmdir d/.; rmdir d/.."),
        both("error/mkdir-trailing-slash", "mkdir d/ 0755; stat d"),
        both("error/ebadf-write-read-only", "touch f; open f r; write x; close"),
        both("error/ftruncate-read-only", "touch f; open f r; ftruncate 0; close"),
        both("error/truncate-negative", "touch f; truncate f -1"),
        both("error/open-a-socket", "bind s; open s r"),
        both("error/readlink-a-file", "touch f; readlink f"),
        both("error/unlink-dot", "unlink ."),
        root("error/rmdir-the-tree-root-busy-or-not", "mkdir d 0755; rmdir d"),
        user("error/chown-to-root", "touch f; chown f root -1"),
    ]
}
