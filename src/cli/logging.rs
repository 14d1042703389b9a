//! Logging of every command and daemon: text (the default) or one JSON object a line
//! (`--log-format json`), filtered by `KMSFS_LOG`; in the mount daemon every JSON line names its
//! mount, and the last error logged is kept for `kmsfs status` ([`last_error`]).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (as always).
    #[default]
    Text,
    /// One JSON object a line (tracing-subscriber's JSON format).
    Json,
}

/// Where log lines go and how they look.
pub struct LogSetup {
    /// The format.
    pub format: LogFormat,
    /// The filter when `KMSFS_LOG` is unset (`info`, `warn`).
    pub default_filter: &'static str,
    /// The writer.
    pub writer: BoxMakeWriter,
    /// Colours (a terminal).
    pub ansi: bool,
    /// The mount point every line names (the mount daemon), if any.
    pub mount: Option<String>,
}

/// Installs the process's logging (once; later calls change nothing).
pub fn init(setup: LogSetup) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMSFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(setup.default_filter));
    let lines = match setup.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(setup.ansi)
            .with_writer(setup.writer)
            .boxed(),
        LogFormat::Json => {
            let mount = setup
                .mount
                .map(|m| serde_json::to_string(&m).expect("BUG: a string serializes to JSON"));
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(NamingMount {
                    inner: tracing_subscriber::fmt::format().json(),
                    mount,
                })
                .with_writer(setup.writer)
                .boxed()
        }
    };
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(ErrorTap)
        .try_init();
}

/// Logging to stderr for foreground commands, in `format`.
pub fn init_stderr(format: LogFormat, default_filter: &'static str, mount: Option<String>) {
    init(LogSetup {
        format,
        default_filter,
        writer: BoxMakeWriter::new(std::io::stderr),
        ansi: format == LogFormat::Text,
        mount,
    });
}

/// tracing-subscriber's JSON line with a `"mount"` member first, when there is a mount.
struct NamingMount<F> {
    inner: F,
    /// The mount point as a JSON string.
    mount: Option<String>,
}

impl<S, N, F> FormatEvent<S, N> for NamingMount<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(mount) = &self.mount else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"mount\":{mount},{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The last error the process logged: when, what, and the file and block it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LoggedError {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The log line's message.
    pub message: String,
    /// The backing file it names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The block it names (a number, or `header`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
}

static LAST_ERROR: Mutex<Option<LoggedError>> = Mutex::new(None);
static ERRORS_LOGGED: AtomicU64 = AtomicU64::new(0);

/// The last error logged by this process, if any (whatever `KMSFS_LOG` lets through).
pub fn last_error() -> Option<LoggedError> {
    LAST_ERROR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The errors logged by this process so far.
pub fn errors_logged() -> u64 {
    ERRORS_LOGGED.load(Ordering::Relaxed)
}

/// Keeps the last ERROR event (see [`last_error`]).
struct ErrorTap;

impl<S: Subscriber> Layer<S> for ErrorTap {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let mut fields = ErrorFields::default();
        event.record(&mut fields);
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        ERRORS_LOGGED.fetch_add(1, Ordering::Relaxed);
        *LAST_ERROR.lock().unwrap_or_else(PoisonError::into_inner) = Some(LoggedError {
            at,
            message: fields.message,
            path: fields.path,
            block: fields.block,
        });
    }
}

#[derive(Default)]
struct ErrorFields {
    message: String,
    path: Option<String>,
    block: Option<String>,
}

impl Visit for ErrorFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.keep(field, text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.keep(field, value.to_string());
    }
}

impl ErrorFields {
    fn keep(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = text,
            "path" => self.path = Some(text),
            "block" => self.block = Some(text),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_event_is_kept_with_its_path_and_block() {
        let subscriber = tracing_subscriber::registry().with(ErrorTap);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(path = "/c/a", block = 3u64, "not kept: a warning");
            tracing::error!(path = "/c/f", block = 7u64, "block authentication failed");
        });
        let kept = last_error().expect("kept");
        assert_eq!(kept.message, "block authentication failed");
        assert_eq!(kept.path.as_deref(), Some("/c/f"));
        assert_eq!(kept.block.as_deref(), Some("7"));
        assert!(errors_logged() >= 1);
    }

    #[test]
    fn json_lines_name_the_mount_first() {
        let lines = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(NamingMount {
                inner: tracing_subscriber::fmt::format().json(),
                mount: Some("\"/mnt/a \\\"b\\\"\"".into()),
            })
            .with_writer(move || SinkWriter(sink.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "hello");
        });
        let text = String::from_utf8(lines.lock().expect("lock").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["mount"], "/mnt/a \"b\"");
        assert_eq!(line["fields"]["message"], "hello");
        assert_eq!(line["fields"]["answer"], 42);
        assert_eq!(line["level"], "INFO");
    }

    struct SinkWriter(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SinkWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
