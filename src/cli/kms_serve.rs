//! `kmsfs kms serve`, `kmsfs kms org create|import` and `kmsfs kms migrate`: thin calls into
//! [`crate::server`].

use super::{CliError, CliResult, secret};
use crate::crypto::SecretBytes;
use crate::server::{self, EtcdTarget, FrontLimits, OrgCredentials, ServeOptions, TlsFiles};
use clap::{Args, Subcommand};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kmsfs kms serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The zone this server is (e.g. ch-gva-2).
    #[arg(long)]
    zone: String,
    /// Address to listen on (127.0.0.1:0 picks a free port; the URL is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8400")]
    listen: String,
    /// The data directory (organizations, keys, root key, audit log; with --store etcd://...
    /// only the audit log, and the root key without --passphrase-file).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seal the state under a passphrase read from FILE instead of DIR/root.key.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Another zone's server to replicate multi-zone keys with, as ZONE=URL (URL ending in
    /// /v2); repeat for every other zone. Needs --peer-secret-file.
    #[arg(long = "peer", value_name = "ZONE=URL", value_parser = parse_peer)]
    peers: Vec<(String, String)>,
    /// The secret every zone server shares (the same file everywhere, at least 16 bytes): it
    /// authenticates peers, seals key material between zones and derives the Default
    /// Organization Key.
    #[arg(long, value_name = "FILE")]
    peer_secret_file: Option<PathBuf>,
    /// The most client connections open at once; over it a connection gets 503. Default:
    /// 16384, or less when the open-file limit (raised to its hard limit) allows less.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// The most connections open at once from one client address; over it a new connection
    /// is closed at once.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_PER_CLIENT as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_client: u32,
    /// The longest a request head, a request body, a TLS handshake or an idle keep-alive
    /// connection may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = server::DEFAULT_REQUEST_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_timeout: u64,
    /// Serve metrics in the Prometheus text format at http://ADDR/metrics (unauthenticated;
    /// off by default).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Log lines as text (the default) or one JSON object a line.
    #[arg(long, value_enum, default_value_t = super::logging::LogFormat::Text, value_name = "FORMAT")]
    log_format: super::logging::LogFormat,
}

/// Where a zone's state is: the data directory (default) or etcd.
#[derive(Args)]
pub struct StoreArgs {
    /// Keep the zone's state in etcd, shared by every server of the zone:
    /// etcd://HOST:PORT[,HOST:PORT...].
    #[arg(long = "store", value_name = "etcd://HOST:PORT,...")]
    store: Option<String>,
    /// The zone's key prefix in etcd (give each zone its own when zones share a cluster).
    #[arg(long, value_name = "PREFIX", default_value = server::DEFAULT_ETCD_PREFIX)]
    etcd_prefix: String,
}

impl StoreArgs {
    /// The etcd store asked for, if any.
    fn etcd(&self) -> CliResult<Option<EtcdTarget>> {
        Ok(match &self.store {
            None => None,
            Some(url) => Some(EtcdTarget::parse(url, &self.etcd_prefix)?),
        })
    }
}

/// A runtime for the admin commands' etcd client (entered by the caller while it works).
fn admin_runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

/// Parses `ZONE=URL`.
fn parse_peer(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((zone, url)) if !zone.trim().is_empty() && url.ends_with("/v2") => {
            Ok((zone.trim().to_string(), url.to_string()))
        }
        _ => Err(format!("{text:?} is not ZONE=URL with a URL ending in /v2")),
    }
}

/// Reads the peer secret file.
fn peer_secret(file: Option<&Path>) -> CliResult<Option<server::PeerSecret>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(file).map_err(|e| CliError::io("read the peer secret file", file, &e))?,
    );
    Ok(Some(server::PeerSecret::from_file_bytes(&bytes)?))
}

/// Subcommands of `kmsfs kms org`.
#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an organization with an API key; prints {"org","name","api-key","api-secret"}.
    /// Works while a server runs on the same data directory.
    Create {
        /// The organization's name.
        name: String,
        #[command(flatten)]
        state: OrgStateArgs,
        /// Print `export EXOSCALE_API_KEY=... EXOSCALE_API_SECRET=...` for `eval` instead.
        #[arg(long)]
        env: bool,
    },
    /// Install an organization and API key printed by `org create` (JSON on stdin), e.g. in
    /// another zone's data directory.
    Import {
        #[command(flatten)]
        state: OrgStateArgs,
    },
}

/// Where the organizations of the `kms org` and `kms migrate` commands are kept, and how they
/// are sealed.
#[derive(Args)]
pub struct OrgStateArgs {
    /// The server's data directory.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// The passphrase file, if the data directory is sealed with one.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// Arguments of `kmsfs kms migrate`: the file store to copy (`--data`) and where to
/// (`--store etcd://...`).
#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    state: OrgStateArgs,
}

fn passphrase(file: Option<&Path>) -> CliResult<Option<SecretBytes>> {
    file.map(|f| secret::passphrase(Some(f), false)).transpose()
}

/// Serves the KMS until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs) -> CliResult<ExitCode> {
    super::logging::init_stderr(args.log_format, "info", None);
    let options = ServeOptions {
        zone: args.zone.clone(),
        listen: args.listen,
        data: args.data,
        etcd: args.store.etcd()?,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        },
        passphrase: passphrase(args.passphrase_file.as_deref())?,
        peers: args.peers,
        peer_secret: peer_secret(args.peer_secret_file.as_deref())?,
        front: FrontLimits {
            max_connections: args.max_connections.map(|n| n as usize),
            max_connections_per_client: Some(args.max_connections_per_client as usize),
            request_timeout: std::time::Duration::from_secs(args.request_timeout),
        },
        metrics_listen: args.metrics_listen,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    let zone = args.zone;
    // The handlers are in place before READY=1 is sent: a SIGTERM right after it stops the
    // server gracefully instead of killing it.
    let shutdown = {
        let _context = runtime.enter();
        shutdown_signal()
    };
    runtime.block_on(server::serve(
        options,
        |url| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "kmsfs kms: listening on {url} (zone {zone})");
            let _ = out.flush();
            crate::sys::systemd::notify_ready(&format!("listening on {url} (zone {zone})"));
        },
        shutdown,
    ))?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes at the first SIGTERM or SIGINT; the handlers are installed at the call (inside
/// the runtime's context), not at the first poll.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move { wait_for_shutdown(signals).await }
}

async fn wait_for_shutdown(
    signals: (
        std::io::Result<tokio::signal::unix::Signal>,
        std::io::Result<tokio::signal::unix::Signal>,
    ),
) {
    match signals {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
    crate::sys::systemd::notify_stopping();
}

/// Runs an org command.
pub fn org(command: OrgCommand) -> CliResult<ExitCode> {
    match command {
        OrgCommand::Create { name, state, env } => {
            let pass = passphrase(state.passphrase_file.as_deref())?;
            let etcd = state.store.etcd()?;
            let runtime = admin_runtime()?;
            let _entered = runtime.enter();
            let made = server::create_org_at(&state.data, etcd.as_ref(), &name, pass.as_ref())?;
            if env {
                // The key is EXO + hex, the secret base64url: nothing a quote must escape.
                let secret = zeroize::Zeroizing::new(
                    String::from_utf8_lossy(made.credentials.secret.expose_secret()).into_owned(),
                );
                println!(
                    "export EXOSCALE_API_KEY='{}' EXOSCALE_API_SECRET='{}'",
                    made.credentials.key,
                    secret.as_str()
                );
            } else {
                println!("{}", made.to_json().as_str());
            }
        }
        OrgCommand::Import { state } => {
            let pass = passphrase(state.passphrase_file.as_deref())?;
            let mut input = zeroize::Zeroizing::new(Vec::new());
            std::io::stdin()
                .take(1 << 20)
                .read_to_end(&mut input)
                .map_err(|e| CliError::io("read", std::path::Path::new("stdin"), &e))?;
            let org = OrgCredentials::from_json(&input)?;
            let etcd = state.store.etcd()?;
            let runtime = admin_runtime()?;
            let _entered = runtime.enter();
            server::import_org_at(&state.data, etcd.as_ref(), &org, pass.as_ref())?;
            eprintln!("kmsfs: organization {} ({}) installed", org.org, org.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a file store into an empty etcd prefix.
pub fn migrate(args: MigrateArgs) -> CliResult<ExitCode> {
    let Some(etcd) = args.state.store.etcd()? else {
        return Err(CliError::new(
            "say where to: --store etcd://HOST:PORT[,HOST:PORT...]".to_string(),
        ));
    };
    let pass = passphrase(args.state.passphrase_file.as_deref())?;
    let runtime = admin_runtime()?;
    let _entered = runtime.enter();
    let moved = server::migrate(&args.state.data, &etcd, pass.as_ref())?;
    eprintln!(
        "kmsfs: {moved} organizations copied from {} to {} {}",
        args.state.data.display(),
        etcd.endpoints.join(","),
        etcd.prefix
    );
    Ok(ExitCode::SUCCESS)
}
