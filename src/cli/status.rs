//! `kmsfs status [MOUNTPOINT]`: every live kmsfs mount of the mount table (type `fuse.kmsfs`;
//! see [`super::mounts`]), each as its daemon tells it through its control socket
//! ([`super::control`]); a daemon that does not answer in time is shown as such, never waited
//! for.

use super::control::{self, Request};
use super::observe::{KmsUsed, MountStatus};
use super::{CliError, CliResult};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `kmsfs status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Only the mount at MOUNTPOINT.
    mountpoint: Option<PathBuf>,
    /// Print JSON ({"mounts": [...]}; see docs/CLI.md for the fields).
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each daemon's answer.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    timeout: u64,
}

/// One mount as `kmsfs status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Shown {
    mountpoint: PathBuf,
    cipherdir: Option<PathBuf>,
    /// True when the daemon answered.
    answering: bool,
    /// Why it did not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    /// What it said, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<MountStatus>,
}

/// Shows the mounts as `args` say.
pub fn run(args: &StatusArgs) -> CliResult<ExitCode> {
    let table = super::mounts::mounts();
    let wanted = match &args.mountpoint {
        Some(path) => Some(mount_point_named(path, &table)?),
        None => None,
    };
    let mounts: Vec<_> = table
        .into_iter()
        .filter(|m| m.cipherdir().is_some())
        .filter(|m| wanted.as_ref().is_none_or(|w| *w == m.mountpoint))
        .collect();
    if let (Some(path), true) = (&wanted, mounts.is_empty()) {
        return Err(CliError::new(format!(
            "no kmsfs mount is at {}",
            path.display()
        )));
    }
    let timeout = Duration::from_secs(args.timeout.max(1));
    let shown: Vec<Shown> = mounts
        .into_iter()
        .map(|m| {
            let answer = ask_daemon(&m, timeout);
            let (status, problem) = match answer {
                Ok(status) => (Some(status), None),
                Err(e) => (None, Some(e.to_string())),
            };
            Shown {
                cipherdir: m.cipherdir(),
                mountpoint: m.mountpoint,
                answering: status.is_some(),
                problem,
                status,
            }
        })
        .collect();
    let silent = shown.iter().any(|s| !s.answering);
    let text = if args.json {
        let out = serde_json::json!({ "mounts": shown });
        serde_json::to_string_pretty(&out).expect("BUG: the status serializes") + "\n"
    } else if shown.is_empty() {
        "No kmsfs mount is live.\n".to_string()
    } else {
        shown.iter().map(text_of).collect::<Vec<_>>().join("\n")
    };
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    // Asked about one mount whose daemon does not answer: that is a failure.
    if wanted.is_some() && silent {
        return Ok(ExitCode::from(super::exit::Exit::Problems.code()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the daemon of mount `m` for its status: at the first of its possible sockets that
/// exists (see [`control::socket_candidates`]).
fn ask_daemon(
    m: &super::mounts::MountEntry,
    timeout: Duration,
) -> Result<MountStatus, control::ControlError> {
    let candidates = control::socket_candidates(&m.mountpoint, m.user_id);
    let socket = candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or(&candidates[0]);
    let value = control::ask(socket, &Request::Status, timeout)?;
    serde_json::from_value::<MountStatus>(value.clone()).map_err(|_| {
        control::ControlError::BadAnswer(
            value["error"]
                .as_str()
                .unwrap_or("unexpected fields")
                .to_string(),
        )
    })
}

/// The mount point `path` names: itself when the mount table lists it as given (absolute),
/// so that a mount whose daemon is stopped or gone is never touched; else its canonical form.
fn mount_point_named(path: &Path, table: &[super::mounts::MountEntry]) -> CliResult<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| CliError::io("resolve", path, &e))?;
    if table.iter().any(|m| m.mountpoint == absolute) {
        return Ok(absolute);
    }
    std::fs::canonicalize(path).map_err(|e| CliError::io("resolve", path, &e))
}

/// `seconds` as `1d 2h 3m 4s` (leading zero units left out).
fn duration_text(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    let parts = [(d, "d"), (h, "h"), (m, "m")];
    let mut text: String = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .map(|(n, unit)| format!("{n}{unit} "))
        .collect();
    text.push_str(&format!("{s}s"));
    text
}

fn text_of(one: &Shown) -> String {
    let mut out = format!("{}\n", one.mountpoint.display());
    let row = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("  {label:<14}{value}\n"));
    };
    if let Some(dir) = &one.cipherdir {
        row(&mut out, "cipher dir", dir.display().to_string());
    }
    let Some(s) = &one.status else {
        row(
            &mut out,
            "daemon",
            format!(
                "does not answer: {}",
                one.problem.as_deref().unwrap_or("no answer")
            ),
        );
        return out;
    };
    row(
        &mut out,
        "daemon",
        format!("pid {}, up {}", s.pid, duration_text(s.uptime_seconds)),
    );
    row(
        &mut out,
        "KMS",
        match &s.kms {
            KmsUsed::Embedded { keystore } => format!("embedded, keystore {}", keystore.display()),
            KmsUsed::Remote { url } => format!("remote, {url}"),
        },
    );
    row(
        &mut out,
        "key",
        match (&s.key_version, &s.key_status) {
            (Some(v), Some(st)) => format!("{}, version {v} ({st})", s.key_id),
            _ => format!("{} (version not known yet)", s.key_id),
        },
    );
    row(&mut out, "open files", s.open_files.to_string());
    let mut busiest: Vec<(&String, &u64)> = s.requests.by_operation.iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let ops: Vec<String> = busiest
        .iter()
        .take(6)
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    row(
        &mut out,
        "requests",
        if ops.is_empty() {
            "0 served".to_string()
        } else {
            format!("{} served ({})", s.requests.total, ops.join(", "))
        },
    );
    let c = &s.dek_cache;
    row(
        &mut out,
        "DEK cache",
        format!(
            "{} hits, {} misses, {} evictions, {} expirations; {} held",
            c.stats.hits, c.stats.misses, c.stats.evictions, c.stats.expirations, c.entries
        ),
    );
    let calls: Vec<String> = s
        .kms_calls
        .iter()
        .map(|k| {
            let mean_ms = if k.latency.count == 0 {
                0.0
            } else {
                k.latency.sum_seconds * 1000.0 / k.latency.count as f64
            };
            format!(
                "{} {} ({} failed, mean {mean_ms:.3} ms)",
                k.operation, k.calls, k.errors
            )
        })
        .collect();
    row(
        &mut out,
        "KMS calls",
        if calls.is_empty() {
            "none".to_string()
        } else {
            calls.join(", ")
        },
    );
    let errors = match &s.errors.last {
        None if s.errors.eio == 0 => "none".to_string(),
        None => format!("{} EIO", s.errors.eio),
        Some(last) => {
            let mut at = String::new();
            if let Some(path) = &last.path {
                at.push_str(&format!(" (file {path}"));
                if let Some(block) = &last.block {
                    at.push_str(&format!(", block {block}"));
                }
                at.push(')');
            }
            format!(
                "{} EIO, {} logged; last {}: {}{at}",
                s.errors.eio, s.errors.logged, last.at, last.message
            )
        }
    };
    row(&mut out, "errors", errors);
    if let Some(addr) = s.metrics_listen {
        row(&mut out, "metrics", format!("http://{addr}/metrics"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_from_the_largest_unit() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(59), "59s");
        assert_eq!(duration_text(3600), "1h 0m 0s");
        assert_eq!(duration_text(90061), "1d 1h 1m 1s");
    }

    #[test]
    fn a_silent_daemon_is_one_sentence() {
        let shown = Shown {
            mountpoint: PathBuf::from("/mnt/x"),
            cipherdir: Some(PathBuf::from("/c")),
            answering: false,
            problem: Some("no daemon answers on its control socket (gone)".into()),
            status: None,
        };
        let text = text_of(&shown);
        assert!(text.starts_with("/mnt/x\n"), "{text}");
        assert!(
            text.contains("does not answer: no daemon answers on its control socket (gone)"),
            "{text}"
        );
        let json = serde_json::to_value(&shown).expect("json");
        assert_eq!(json["answering"], false);
        assert!(json.get("status").is_none());
    }
}
