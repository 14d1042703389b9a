//! The audit log: one JSON line per API call in `DIR/audit.log` (time, organization, API key,
//! operation, key id, result), written by a thread of its own that drains a queue every 200 ms
//! and at shutdown. Never plaintext, ciphertext or key material: a
//! record has no field that could hold them.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

const DRAIN_EVERY: Duration = Duration::from_millis(200);

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

struct Shared {
    queue: Mutex<Vec<AuditRecord>>,
    file: Mutex<std::fs::File>,
}

impl Shared {
    /// Writes every queued record to the file.
    fn drain(&self) {
        let records =
            std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        if records.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(records.len() * 160);
        for record in &records {
            if serde_json::to_writer(&mut out, record).is_ok() {
                out.push(b'\n');
            }
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = file.write_all(&out) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
}

/// The sending side of the audit log; cheap to use from any thread: a record is pushed on a
/// queue (no wake-up, no I/O), which a writer thread drains every 200 ms.
pub(crate) struct AuditLog {
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            file: Mutex::new(file),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("kmsfs-audit".into())
            .spawn(move || {
                // Ends when the log is dropped.
                while let Some(shared) = weak.upgrade() {
                    shared.drain();
                    drop(shared);
                    std::thread::sleep(DRAIN_EVERY);
                }
            })?;
        Ok(AuditLog { shared })
    }

    /// Queues one record.
    pub(crate) fn record(&self, record: AuditRecord) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// Records queued and not written yet.
    pub(crate) fn queued(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Writes every queued record to the file and syncs it (at shutdown).
    pub(crate) fn flush(&self) {
        self.shared.drain();
        let _ = self
            .shared
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sync_data();
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shared.drain();
    }
}
