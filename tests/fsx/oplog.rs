//! The last operations of a run, kept to be printed when a check fails.

use std::collections::VecDeque;
use std::fmt::Write;

/// How many operations a failure report shows.
const KEEP: usize = 20;

/// A ring of the last [`KEEP`] operations, each one line.
#[derive(Default)]
pub struct OpLog {
    lines: VecDeque<(u64, String)>,
}

impl OpLog {
    /// Records operation number `no`.
    pub fn push(&mut self, no: u64, line: String) {
        if self.lines.len() == KEEP {
            self.lines.pop_front();
        }
        self.lines.push_back((no, line));
    }

    /// The kept operations, oldest first, one per line.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (no, line) in &self.lines {
            let _ = writeln!(out, "  {no:>7} {line}");
        }
        out
    }
}

/// Where two byte strings first differ, with both sides around it, or `None` when they are
/// equal. `base` is the file offset of their first byte.
pub fn first_difference(base: u64, expected: &[u8], found: &[u8]) -> Option<String> {
    if expected == found {
        return None;
    }
    let at = expected
        .iter()
        .zip(found)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(found.len()));
    let window = |bytes: &[u8]| {
        let from = at.saturating_sub(8).min(bytes.len());
        let to = (at + 8).min(bytes.len());
        bytes[from..to]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let byte = |bytes: &[u8]| match bytes.get(at) {
        Some(b) => format!("{b:#04x}"),
        None => "end of data".to_string(),
    };
    Some(format!(
        "first difference at offset {off} ({off:#x}): expected {e}, found {f} \
         (lengths: expected {el}, found {fl})\n  expected from {from:#x}: {ew}\n  found    from {from:#x}: {fw}",
        off = base + at as u64,
        e = byte(expected),
        f = byte(found),
        el = expected.len(),
        fl = found.len(),
        from = base + at.saturating_sub(8) as u64,
        ew = window(expected),
        fw = window(found),
    ))
}
