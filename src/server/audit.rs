//! The audit log: one JSON line per API call in `DIR/audit.log` (time, organization, API key,
//! operation, key id, result), written by a thread of its own through a buffer that is flushed
//! at least every second and at shutdown. Never plaintext, ciphertext or key material: a
//! record has no field that could hold them.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One audit line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditRecord {
    /// When the call finished.
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) time: OffsetDateTime,
    /// The caller's organization.
    pub(crate) org: Uuid,
    /// The caller's API key.
    #[serde(rename = "api-key")]
    pub(crate) api_key: String,
    /// The operation id of the spec (`encrypt`, `rotate-kms-key`, ...).
    pub(crate) operation: &'static str,
    /// The key the call named, when it named a valid one.
    #[serde(rename = "key-id", skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<Uuid>,
    /// `success` or the problem title.
    pub(crate) result: String,
}

enum Message {
    Record(Box<AuditRecord>),
    Flush(mpsc::SyncSender<()>),
}

/// The sending side of the audit log; cheap to use from any thread.
pub(crate) struct AuditLog {
    sender: mpsc::Sender<Message>,
}

impl AuditLog {
    /// Opens (appends to) `path` and starts the writer thread.
    ///
    /// # Errors
    /// The operating system's error when the file cannot be opened.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("kmsfs-audit".into())
            .spawn(move || write_loop(file, receiver))?;
        Ok(AuditLog { sender })
    }

    /// Queues one record.
    pub(crate) fn record(&self, record: AuditRecord) {
        let _ = self.sender.send(Message::Record(Box::new(record)));
    }

    /// Writes every queued record to the file and waits until it is done (at shutdown).
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }
}

fn write_loop(file: std::fs::File, receiver: mpsc::Receiver<Message>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut flushed = Instant::now();
    let flush = |out: &mut std::io::BufWriter<std::fs::File>| {
        if let Err(e) = out.flush() {
            tracing::error!("cannot write the audit log: {e}");
        }
    };
    loop {
        match receiver.recv_timeout(FLUSH_EVERY) {
            Ok(Message::Record(record)) => {
                if let Ok(mut line) = serde_json::to_vec(&record) {
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line) {
                        tracing::error!("cannot write the audit log: {e}");
                    }
                }
                if flushed.elapsed() >= FLUSH_EVERY {
                    flush(&mut out);
                    flushed = Instant::now();
                }
            }
            Ok(Message::Flush(done)) => {
                flush(&mut out);
                let _ = out.get_ref().sync_data();
                flushed = Instant::now();
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                flush(&mut out);
                flushed = Instant::now();
            }
            Err(RecvTimeoutError::Disconnected) => {
                flush(&mut out);
                return;
            }
        }
    }
}
