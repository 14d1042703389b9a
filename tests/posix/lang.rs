//! The scenario language: a scenario is a name, who runs it, and a script of steps separated
//! by `;`. `@root`, `@me`, `@me+g` and `@other` switch the actor; each run of steps by one
//! actor is a phase, run in its own process. Steps before the first switch are `@me`'s.
//! The setup is what comes before the step `tick`, or else the leading `@root` phases: it runs
//! before every entry's times are set to an old value and recorded, and the rest after a
//! clock tick, so the final state can tell which times the rest changed.
//!
//! Actors: `@root` is uid 0; `@me` is the run's user (root in the root run, 65534 in the user
//! run), with no supplementary group; `@me+g` is the same user with supplementary group
//! [`GROUP`]; `@other` is 65533:65533.
//!
//! Steps (`#N` after a verb picks descriptor or directory slot N, default 0; modes are octal;
//! `{out}` is a fresh directory on another filesystem, `{N}` is N letters `a`, `{}` is empty):
//!
//! | step | system call |
//! | --- | --- |
//! | `umask 022` | umask |
//! | `open#N PATH FLAGS [MODE]` | open; FLAGS: `r w rw creat excl trunc append nofollow directory tmpfile path`, comma-separated |
//! | `close#N` | close |
//! | `touch PATH...`, `touchn PREFIX N` | open O_CREAT 0666 and close, of each PATH or of PREFIX0 to PREFIX(N-1) |
//! | `mkdir PATH MODE`, `mkfifo PATH MODE` | mkdir, mkfifo |
//! | `mknod PATH reg,fifo,sock,chr MODE` | mknod (chr is 1:3) |
//! | `bind PATH` | a Unix socket bound to PATH |
//! | `symlink TARGET PATH`, `link OLD NEW`, `linkf OLD NEW` | symlink, linkat (linkf: AT_SYMLINK_FOLLOW) |
//! | `linkfd#N NEW` | linkat of /proc/self/fd/FD with AT_SYMLINK_FOLLOW |
//! | `unlink PATH`, `rmdir PATH` | unlink, rmdir |
//! | `rename OLD NEW [noreplace,exchange]` | renameat2 |
//! | `chmod PATH MODE`, `lchmod PATH MODE`, `fchmod#N MODE` | fchmodat (lchmod: AT_SYMLINK_NOFOLLOW), fchmod |
//! | `chown PATH U G`, `lchown PATH U G`, `fchown#N U G` | fchownat, fchown; ids: `me other root g -1` or a number |
//! | `utimes PATH A M`, `lutimes PATH A M`, `futimes#N A M` | utimensat (lutimes: AT_SYMLINK_NOFOLLOW), futimens; times: `now omit` or seconds |
//! | `truncate PATH LEN`, `ftruncate#N LEN` | truncate, ftruncate |
//! | `fallocate#N MODE OFF LEN` | fallocate; MODE: `0 keep punch zero zerokeep` |
//! | `write#N TEXT`, `pwrite#N OFF TEXT`, `fill#N OFF LEN` | write, pwrite (fill: LEN bytes `x`) |
//! | `read#N LEN`, `pread#N OFF LEN` | read, pread |
//! | `lseek#N OFF set,cur,end,data,hole` | lseek |
//! | `holes#N` | SEEK_DATA/SEEK_HOLE walk: what POSIX guarantees, regions rounded to 64 KiB |
//! | `copyrange FROM TO LEN` | copy_file_range between slots FROM and TO |
//! | `stat PATH`, `lstat PATH`, `fstat#N`, `blocks PATH` | stat, lstat, fstat; blocks: st_blocks |
//! | `access PATH MODE` | faccessat; MODE: `f` or letters of `rwx` |
//! | `readlink PATH` | readlink |
//! | `xset PATH NAME VALUE [create,replace]`, `xget PATH NAME [SIZE]`, `xlist PATH`, `xrm PATH NAME` | setxattr, getxattr, listxattr, removexattr; an `l` before them: the l* call |
//! | `aclset PATH access,default SPEC`, `aclget PATH access,default` | setxattr/getxattr of `system.posix_acl_*`; SPEC: `u::rw-,u:other:r--,g::r--,m::rw-,o::---` |
//! | `opendir#N PATH`, `readdir#N COUNT`, `telldir#N`, `seekdir#N`, `rewinddir#N`, `readrest#N`, `closedir#N` | the directory stream calls; readrest reads to the end and says which names were missed or seen twice |
//! | `names PATH` | the sorted names of a fresh listing |
//! | `inos PATH` | every entry's d_ino equals its st_ino, also when re-read after seekdir |
//! | `dropcaches [PATH...]` | writes 2 to /proc/sys/vm/drop_caches (the kernel forgets unused dentries and inodes); says which times of each PATH moved across it. Scenarios with it run alone |

use super::acl::AclEntry;

/// Supplementary group of `@me+g`, and the `g` of chown and ACL entries.
pub const GROUP: u32 = 65532;
/// The unprivileged user of user runs.
pub const USER: u32 = 65534;
/// `@other`.
pub const OTHER: u32 = 65533;

/// Who a scenario runs as (its `@me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Root,
    User,
    Both,
}

/// Why opening a file to read moves its access time through kmsfs: reads the kernel serves from
/// its page cache never reach the daemon, so kmsfs counts opening to read as the read.
pub const OPEN_IS_A_READ: &str = "kmsfs counts opening a file to read as reading it: reads served from the kernel's page cache never reach the daemon";

/// Why ctime moves when the kernel forgets an inode after a write, truncate or chmod.
pub const CTIME_AT_WRITEBACK: &str = "with the writeback cache the kernel stamps a regular file's ctime itself (at write, truncate, chmod), the backing file gets its own stamp moments later when the daemon applies the change or writes the kernel's times back; stat shows the backing file's once the kernel forgets the inode, and ctime cannot be set";

/// Why the largest user xattr value is smaller than on the backing filesystem.
pub const SEALED_XATTR_OVERHEAD: &str = "a sealed user xattr takes 32 bytes more than its value (nonce and tag) and a longer name, so on ext4, which keeps all of a file's xattrs in one 4 KiB block, the largest value is about 100 bytes smaller";

/// Why a directory's size differs: any scenario, any directory.
pub const DIR_SIZE_OF_CIPHER_NAMES: &str = "encrypted names are longer than the names they hide, so a directory holding many of them takes more blocks of the backing filesystem";

/// One entry of the table.
pub struct Scenario {
    pub name: String,
    pub who: Who,
    pub script: String,
    /// Why kmsfs differs on purpose, when it does: the scenario's mismatches are reported, but
    /// do not fail the test.
    pub intended: Option<&'static str>,
    /// Why kmsfs's access time differs here on purpose, when it does: mismatches in nothing
    /// but whether atime changed are reported as intended; any other mismatch still fails.
    pub atime_differs: Option<&'static str>,
}

impl Scenario {
    /// Marks the scenario's access-time outcome as an intended difference, for `why`.
    pub fn atime_differs(mut self, why: &'static str) -> Scenario {
        self.atime_differs = Some(why);
        self
    }

    /// Marks the scenario as an intended difference, for `why`.
    pub fn intended(mut self, why: &'static str) -> Scenario {
        self.intended = Some(why);
        self
    }

    /// The runs: `("root", uid 0)` and/or `("user", uid 65534)`.
    pub fn runs(&self) -> Vec<Run> {
        match self.who {
            Who::Root => vec![Run::ROOT],
            Who::User => vec![Run::USER],
            Who::Both => vec![Run::ROOT, Run::USER],
        }
    }
}

fn scenario(who: Who, name: impl Into<String>, script: impl Into<String>) -> Scenario {
    Scenario {
        name: name.into(),
        who,
        script: script.into(),
        intended: None,
        atime_differs: None,
    }
}

/// A scenario run as root and as the unprivileged user.
pub fn both(name: impl Into<String>, script: impl Into<String>) -> Scenario {
    scenario(Who::Both, name, script)
}

/// A scenario run as root only.
pub fn root(name: impl Into<String>, script: impl Into<String>) -> Scenario {
    scenario(Who::Root, name, script)
}

/// A scenario run as the unprivileged user only.
pub fn user(name: impl Into<String>, script: impl Into<String>) -> Scenario {
    scenario(Who::User, name, script)
}

/// One run of a scenario: who `@me` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub name: &'static str,
    pub me: u32,
}

impl Run {
    pub const ROOT: Run = Run {
        name: "root",
        me: 0,
    };
    pub const USER: Run = Run {
        name: "user",
        me: USER,
    };

    /// The run called `name`.
    pub fn named(name: &str) -> Option<Run> {
        [Run::ROOT, Run::USER].into_iter().find(|r| r.name == name)
    }
}

/// Who runs a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Root,
    Me,
    MeInGroup,
    Other,
}

impl Actor {
    /// uid, gid and supplementary groups of the actor in `run`.
    pub fn ids(self, run: Run) -> (u32, u32, Vec<u32>) {
        match self {
            Actor::Root => (0, 0, vec![]),
            Actor::Me => (run.me, run.me, vec![]),
            Actor::MeInGroup => (run.me, run.me, vec![GROUP]),
            Actor::Other => (OTHER, OTHER, vec![]),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Actor::Root => "@root",
            Actor::Me => "@me",
            Actor::MeInGroup => "@me+g",
            Actor::Other => "@other",
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

/// A user or group id of a step, resolved in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    Me,
    Other,
    Root,
    Group,
    Keep,
    Num(u32),
}

impl Id {
    /// Parses `me`, `other`, `root`, `g`, `-1` or a number.
    pub fn parse(s: &str) -> Result<Id, String> {
        Ok(match s {
            "me" => Id::Me,
            "other" => Id::Other,
            "root" => Id::Root,
            "g" => Id::Group,
            "-1" => Id::Keep,
            n => Id::Num(n.parse().map_err(|_| format!("bad id `{n}`"))?),
        })
    }

    /// The number in `run`.
    pub fn resolve(self, run: Run) -> u32 {
        match self {
            Id::Me => run.me,
            Id::Other => OTHER,
            Id::Root => 0,
            Id::Group => GROUP,
            Id::Keep => u32::MAX,
            Id::Num(n) => n,
        }
    }
}

/// A time of utimensat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    Now,
    Omit,
    At(i64),
}

impl Time {
    /// Parses `now`, `omit` or seconds.
    pub fn parse(s: &str) -> Result<Time, String> {
        Ok(match s {
            "now" => Time::Now,
            "omit" => Time::Omit,
            n => Time::At(n.parse().map_err(|_| format!("bad time `{n}`"))?),
        })
    }
}

/// What a step does (paths may hold `{out}` and `{N}`, expanded when run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Umask(u32),
    Open {
        slot: usize,
        path: String,
        flags: i32,
        mode: u32,
    },
    Close {
        slot: usize,
    },
    Touch {
        paths: Vec<String>,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Mknod {
        path: String,
        mode: u32,
        dev: u64,
    },
    Mkfifo {
        path: String,
        mode: u32,
    },
    Bind {
        path: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Link {
        old: String,
        new: String,
        follow: bool,
    },
    LinkFd {
        slot: usize,
        new: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Rename {
        old: String,
        new: String,
        flags: u32,
    },
    Chmod {
        path: String,
        mode: u32,
        nofollow: bool,
    },
    Fchmod {
        slot: usize,
        mode: u32,
    },
    Chown {
        path: String,
        uid: Id,
        gid: Id,
        nofollow: bool,
    },
    Fchown {
        slot: usize,
        uid: Id,
        gid: Id,
    },
    Utimes {
        path: Option<String>,
        slot: usize,
        atime: Time,
        mtime: Time,
        nofollow: bool,
    },
    Truncate {
        path: String,
        len: i64,
    },
    Ftruncate {
        slot: usize,
        len: i64,
    },
    Fallocate {
        slot: usize,
        mode: i32,
        off: i64,
        len: i64,
    },
    Write {
        slot: usize,
        off: Option<i64>,
        data: Vec<u8>,
    },
    Read {
        slot: usize,
        off: Option<i64>,
        len: usize,
    },
    Lseek {
        slot: usize,
        off: i64,
        whence: i32,
    },
    Holes {
        slot: usize,
    },
    CopyRange {
        from: usize,
        to: usize,
        len: usize,
    },
    Stat {
        path: Option<String>,
        slot: usize,
        nofollow: bool,
    },
    Blocks {
        path: String,
    },
    Access {
        path: String,
        mode: i32,
    },
    Readlink {
        path: String,
    },
    XSet {
        path: String,
        nofollow: bool,
        name: String,
        value: String,
        flags: i32,
    },
    XGet {
        path: String,
        nofollow: bool,
        name: String,
        size: usize,
    },
    XList {
        path: String,
        nofollow: bool,
    },
    XRm {
        path: String,
        nofollow: bool,
        name: String,
    },
    AclSet {
        path: String,
        default: bool,
        entries: Vec<AclEntry>,
    },
    AclGet {
        path: String,
        default: bool,
    },
    Opendir {
        slot: usize,
        path: String,
    },
    Readdir {
        slot: usize,
        count: usize,
    },
    Telldir {
        slot: usize,
    },
    Seekdir {
        slot: usize,
    },
    Rewinddir {
        slot: usize,
    },
    ReadRest {
        slot: usize,
    },
    Closedir {
        slot: usize,
    },
    Names {
        path: String,
    },
    Inos {
        path: String,
    },
    DropCaches {
        paths: Vec<String>,
    },
}

/// One step: its text (for reports) and what it does.
#[derive(Debug, Clone)]
pub struct Step {
    pub text: String,
    pub op: Op,
}

/// A parsed script: its phases, and how many of them are the setup.
#[derive(Debug, Clone)]
pub struct Script {
    pub phases: Vec<Phase>,
    pub setup: usize,
}

/// A run of steps by one actor.
#[derive(Debug, Clone)]
pub struct Phase {
    pub actor: Actor,
    pub steps: Vec<Step>,
}

/// Expands `{out}`, `{N}` (N letters `a`) and `{}` (nothing) in a path or value.
pub fn expand(s: &str, out: &str) -> String {
    let mut result = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        result.push_str(&rest[..start]);
        let key = &rest[start + 1..start + len];
        match key {
            "out" => result.push_str(out),
            n => result.push_str(&"a".repeat(n.parse().unwrap_or(0))),
        }
        rest = &rest[start + len + 1..];
    }
    result.push_str(rest);
    result
}
