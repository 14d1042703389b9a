//! The parser of the scenario language (see `lang.rs` for the language itself).

use super::acl;
use super::lang::{Actor, Id, Op, Phase, Script, Step, Time};

/// Parses a script.
pub fn parse(script: &str) -> Result<Script, String> {
    let mut phases: Vec<Phase> = Vec::new();
    let mut actor = Actor::Me;
    let mut tick = None;
    for raw in script.split(';') {
        let mut text = raw.trim();
        if let Some(rest) = text.strip_prefix('@') {
            let (tag, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            actor = match tag {
                "root" => Actor::Root,
                "me" => Actor::Me,
                "me+g" => Actor::MeInGroup,
                "other" => Actor::Other,
                t => return Err(format!("unknown actor `@{t}`")),
            };
            text = tail.trim();
        }
        if text.is_empty() {
            continue;
        }
        if text == "tick" {
            if tick.replace(phases.len()).is_some() {
                return Err("two ticks".into());
            }
            continue;
        }
        let op = parse_op(text).map_err(|e| format!("step `{text}`: {e}"))?;
        let step = Step {
            text: text.to_string(),
            op,
        };
        let after_tick = tick == Some(phases.len());
        match phases.last_mut() {
            Some(p) if p.actor == actor && !after_tick => p.steps.push(step),
            _ => phases.push(Phase {
                actor,
                steps: vec![step],
            }),
        }
    }
    let setup =
        tick.unwrap_or_else(|| phases.iter().take_while(|p| p.actor == Actor::Root).count());
    Ok(Script { phases, setup })
}

fn octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|_| format!("bad octal mode `{s}`"))
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number `{s}`"))
}

fn open_flags(s: &str) -> Result<i32, String> {
    let mut flags = 0;
    for f in s.split(',') {
        flags |= match f {
            "r" => libc::O_RDONLY,
            "w" => libc::O_WRONLY,
            "rw" => libc::O_RDWR,
            "creat" => libc::O_CREAT,
            "excl" => libc::O_EXCL,
            "trunc" => libc::O_TRUNC,
            "append" => libc::O_APPEND,
            "nofollow" => libc::O_NOFOLLOW,
            "directory" => libc::O_DIRECTORY,
            "tmpfile" => libc::O_TMPFILE,
            "path" => libc::O_PATH,
            _ => return Err(format!("unknown open flag `{f}`")),
        };
    }
    Ok(flags)
}

fn parse_op(text: &str) -> Result<Op, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (verb, slot) = match words[0].split_once('#') {
        Some((v, n)) => (v, num::<usize>(n)?),
        None => (words[0], 0),
    };
    let a = &words[1..];
    let arg = |i: usize| -> Result<&str, String> {
        a.get(i)
            .copied()
            .ok_or_else(|| format!("`{verb}` wants more arguments"))
    };
    let s = |i: usize| arg(i).map(str::to_string);
    let (nofollow, base) = match verb.strip_prefix('l') {
        Some(b @ ("xset" | "xget" | "xlist" | "xrm" | "chmod" | "chown" | "utimes" | "stat")) => {
            (true, b)
        }
        _ => (false, verb),
    };
    let op = match base {
        "umask" => Op::Umask(octal(arg(0)?)?),
        "open" => Op::Open {
            slot,
            path: s(0)?,
            flags: open_flags(arg(1)?)?,
            mode: a.get(2).map(|m| octal(m)).transpose()?.unwrap_or(0),
        },
        "close" => Op::Close { slot },
        "touch" if !a.is_empty() => Op::Touch {
            paths: a.iter().map(|p| p.to_string()).collect(),
        },
        "touchn" => Op::Touch {
            paths: (0..num::<usize>(arg(1)?)?)
                .map(|i| format!("{}{i}", arg(0).unwrap_or_default()))
                .collect(),
        },
        "mkdir" => Op::Mkdir {
            path: s(0)?,
            mode: octal(arg(1)?)?,
        },
        "mkfifo" => Op::Mkfifo {
            path: s(0)?,
            mode: octal(arg(1)?)?,
        },
        "mknod" => {
            let (kind, dev) = match arg(1)? {
                "reg" => (libc::S_IFREG, 0),
                "fifo" => (libc::S_IFIFO, 0),
                "sock" => (libc::S_IFSOCK, 0),
                "chr" => (libc::S_IFCHR, libc::makedev(1, 3)),
                k => return Err(format!("unknown node kind `{k}`")),
            };
            Op::Mknod {
                path: s(0)?,
                mode: kind | octal(arg(2)?)?,
                dev,
            }
        }
        "bind" => Op::Bind { path: s(0)? },
        "symlink" => Op::Symlink {
            target: s(0)?,
            path: s(1)?,
        },
        "link" | "linkf" => Op::Link {
            old: s(0)?,
            new: s(1)?,
            follow: base == "linkf",
        },
        "linkfd" => Op::LinkFd { slot, new: s(0)? },
        "unlink" => Op::Unlink { path: s(0)? },
        "rmdir" => Op::Rmdir { path: s(0)? },
        "rename" => Op::Rename {
            old: s(0)?,
            new: s(1)?,
            flags: match a.get(2).copied() {
                None => 0,
                Some("noreplace") => libc::RENAME_NOREPLACE,
                Some("exchange") => libc::RENAME_EXCHANGE,
                Some(f) => return Err(format!("unknown rename flag `{f}`")),
            },
        },
        "chmod" => Op::Chmod {
            path: s(0)?,
            mode: octal(arg(1)?)?,
            nofollow,
        },
        "fchmod" => Op::Fchmod {
            slot,
            mode: octal(arg(0)?)?,
        },
        "chown" => Op::Chown {
            path: s(0)?,
            uid: Id::parse(arg(1)?)?,
            gid: Id::parse(arg(2)?)?,
            nofollow,
        },
        "fchown" => Op::Fchown {
            slot,
            uid: Id::parse(arg(0)?)?,
            gid: Id::parse(arg(1)?)?,
        },
        "utimes" => Op::Utimes {
            path: Some(s(0)?),
            slot,
            atime: Time::parse(arg(1)?)?,
            mtime: Time::parse(arg(2)?)?,
            nofollow,
        },
        "futimes" => Op::Utimes {
            path: None,
            slot,
            atime: Time::parse(arg(0)?)?,
            mtime: Time::parse(arg(1)?)?,
            nofollow: false,
        },
        "truncate" => Op::Truncate {
            path: s(0)?,
            len: num(arg(1)?)?,
        },
        "ftruncate" => Op::Ftruncate {
            slot,
            len: num(arg(0)?)?,
        },
        "fallocate" => Op::Fallocate {
            slot,
            mode: match arg(0)? {
                "0" => 0,
                "keep" => libc::FALLOC_FL_KEEP_SIZE,
                "punch" => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                "zero" => libc::FALLOC_FL_ZERO_RANGE,
                "zerokeep" => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                m => return Err(format!("unknown fallocate mode `{m}`")),
            },
            off: num(arg(1)?)?,
            len: num(arg(2)?)?,
        },
        "write" => Op::Write {
            slot,
            off: None,
            data: arg(0)?.as_bytes().to_vec(),
        },
        "pwrite" => Op::Write {
            slot,
            off: Some(num(arg(0)?)?),
            data: arg(1)?.as_bytes().to_vec(),
        },
        "fill" => Op::Write {
            slot,
            off: Some(num(arg(0)?)?),
            data: vec![b'x'; num(arg(1)?)?],
        },
        "read" => Op::Read {
            slot,
            off: None,
            len: num(arg(0)?)?,
        },
        "pread" => Op::Read {
            slot,
            off: Some(num(arg(0)?)?),
            len: num(arg(1)?)?,
        },
        "lseek" => Op::Lseek {
            slot,
            off: num(arg(0)?)?,
            whence: match arg(1)? {
                "set" => libc::SEEK_SET,
                "cur" => libc::SEEK_CUR,
                "end" => libc::SEEK_END,
                "data" => libc::SEEK_DATA,
                "hole" => libc::SEEK_HOLE,
                w => return Err(format!("unknown whence `{w}`")),
            },
        },
        "holes" => Op::Holes { slot },
        "copyrange" => Op::CopyRange {
            from: num(arg(0)?)?,
            to: num(arg(1)?)?,
            len: num(arg(2)?)?,
        },
        "stat" => Op::Stat {
            path: Some(s(0)?),
            slot,
            nofollow,
        },
        "fstat" => Op::Stat {
            path: None,
            slot,
            nofollow: false,
        },
        "blocks" => Op::Blocks { path: s(0)? },
        "access" => Op::Access {
            path: s(0)?,
            mode: arg(1)?.chars().try_fold(0, |m, c| match c {
                'f' => Ok(m | libc::F_OK),
                'r' => Ok(m | libc::R_OK),
                'w' => Ok(m | libc::W_OK),
                'x' => Ok(m | libc::X_OK),
                _ => Err(format!("bad access mode `{c}`")),
            })?,
        },
        "readlink" => Op::Readlink { path: s(0)? },
        "xset" => Op::XSet {
            path: s(0)?,
            nofollow,
            name: s(1)?,
            value: s(2)?,
            flags: match a.get(3).copied() {
                None => 0,
                Some("create") => libc::XATTR_CREATE,
                Some("replace") => libc::XATTR_REPLACE,
                Some(f) => return Err(format!("unknown xattr flag `{f}`")),
            },
        },
        "xget" => Op::XGet {
            path: s(0)?,
            nofollow,
            name: s(1)?,
            size: a.get(2).map(|n| num(n)).transpose()?.unwrap_or(65536),
        },
        "xlist" => Op::XList {
            path: s(0)?,
            nofollow,
        },
        "xrm" => Op::XRm {
            path: s(0)?,
            nofollow,
            name: s(1)?,
        },
        "aclset" | "aclget" => {
            let default = match arg(1)? {
                "access" => false,
                "default" => true,
                k => return Err(format!("unknown ACL kind `{k}`")),
            };
            if base == "aclset" {
                Op::AclSet {
                    path: s(0)?,
                    default,
                    entries: acl::parse_spec(arg(2)?)?,
                }
            } else {
                Op::AclGet {
                    path: s(0)?,
                    default,
                }
            }
        }
        "opendir" => Op::Opendir { slot, path: s(0)? },
        "readdir" => Op::Readdir {
            slot,
            count: num(arg(0)?)?,
        },
        "telldir" => Op::Telldir { slot },
        "seekdir" => Op::Seekdir { slot },
        "rewinddir" => Op::Rewinddir { slot },
        "readrest" => Op::ReadRest { slot },
        "closedir" => Op::Closedir { slot },
        "names" => Op::Names { path: s(0)? },
        "inos" => Op::Inos { path: s(0)? },
        "dropcaches" => Op::DropCaches {
            paths: a.iter().map(|p| p.to_string()).collect(),
        },
        v => return Err(format!("unknown verb `{v}`")),
    };
    Ok(op)
}
