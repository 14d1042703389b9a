//! `kmsfs kms serve` and `kmsfs kms org create|import`: thin calls into [`crate::server`].

use super::{CliError, CliResult, secret};
use crate::crypto::SecretBytes;
use crate::server::{self, FrontLimits, OrgCredentials, ServeOptions, TlsFiles};
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
    /// The data directory (organizations, keys, root key, audit log).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
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
        /// The server's data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The passphrase file, if the data directory is sealed with one.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Install an organization and API key printed by `org create` (JSON on stdin), e.g. in
    /// another zone's data directory.
    Import {
        /// The server's data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The passphrase file, if the data directory is sealed with one.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

fn passphrase(file: Option<&Path>) -> CliResult<Option<SecretBytes>> {
    file.map(|f| secret::passphrase(Some(f), false)).transpose()
}

/// Serves the KMS until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs) -> CliResult<ExitCode> {
    super::init_stderr_logging("info");
    let options = ServeOptions {
        zone: args.zone.clone(),
        listen: args.listen,
        data: args.data,
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
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    let zone = args.zone;
    runtime.block_on(server::serve(
        options,
        |url| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "kmsfs kms: listening on {url} (zone {zone})");
            let _ = out.flush();
        },
        shutdown_signal(),
    ))?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
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
}

/// Runs an org command.
pub fn org(command: OrgCommand) -> CliResult<ExitCode> {
    match command {
        OrgCommand::Create {
            name,
            data,
            passphrase_file,
        } => {
            let pass = passphrase(passphrase_file.as_deref())?;
            let made = server::create_org(&data, &name, pass.as_ref())?;
            println!("{}", made.to_json().as_str());
        }
        OrgCommand::Import {
            data,
            passphrase_file,
        } => {
            let pass = passphrase(passphrase_file.as_deref())?;
            let mut input = zeroize::Zeroizing::new(Vec::new());
            std::io::stdin()
                .take(1 << 20)
                .read_to_end(&mut input)
                .map_err(|e| CliError::io("read", std::path::Path::new("stdin"), &e))?;
            let org = OrgCredentials::from_json(&input)?;
            server::import_org(&data, &org, pass.as_ref())?;
            eprintln!("kmsfs: organization {} ({}) installed", org.org, org.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
