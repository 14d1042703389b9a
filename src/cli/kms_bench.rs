//! `kmsfs kms bench`: loads a KMS with N concurrent signed requests of one operation for S
//! seconds and reports the rate, latency percentiles and errors by kind.
//!
//! Workers are tasks on a small tokio runtime sharing one async HTTP client (one connection
//! per worker), so the client costs little and the numbers describe the server. Each request
//! is sent once: a failure is counted, never retried. With several endpoints (servers of one
//! zone), worker N sends to endpoint N modulo their number, so the zone's servers share the
//! load; there is no failover during the run.

use super::exit::Exit;
use super::{CliError, CliResult, secret};
use crate::kms::remote::endpoints::EndpointList;
use crate::kms::remote::http;
use crate::kms::sign::Credentials;
use crate::kms::wire::{CreateKeyRequest, KeyStatus};
use crate::kms::{KeyService, KmsError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The name of the key the benchmark makes (or reuses) when `--key` is not given.
pub const BENCH_KEY_NAME: &str = "kmsfs-bench";

/// Arguments of `kmsfs kms bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The KMS endpoint, e.g. http://127.0.0.1:8400/v2, or several servers of one zone
    /// (URL1,URL2,...) that share the load (credentials from EXOSCALE_API_KEY and
    /// EXOSCALE_API_SECRET).
    #[arg(long, value_name = "URL[,URL...]")]
    kms: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10, value_name = "S")]
    seconds: u64,
    /// The operation to repeat.
    #[arg(long, value_enum, default_value_t = BenchOp::Decrypt)]
    op: BenchOp,
    /// The key to use (default: a key named kmsfs-bench, made if absent).
    #[arg(long, value_name = "ID")]
    key: Option<Uuid>,
    /// Print the numbers as JSON.
    #[arg(long)]
    json: bool,
}

/// The operations the benchmark can repeat.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchOp {
    /// Decrypt one 32-byte ciphertext (what an uncached file open costs).
    Decrypt,
    /// Generate an AES-256 data key (what a new file costs).
    GenerateDataKey,
    /// Encrypt 32 bytes.
    Encrypt,
}

impl BenchOp {
    fn name(self) -> &'static str {
        match self {
            BenchOp::Decrypt => "decrypt",
            BenchOp::GenerateDataKey => "generate-data-key",
            BenchOp::Encrypt => "encrypt",
        }
    }
}

/// The encryption context every benchmark request carries.
const CONTEXT: &[u8] = b"kmsfs-bench";

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

/// Runs the benchmark; exit code 1 when any request failed.
pub fn run(args: BenchArgs) -> CliResult<ExitCode> {
    super::init_stderr_logging("warn");
    if args.concurrency == 0 || args.seconds == 0 {
        return Err(CliError::usage(
            "--concurrency and --seconds must be at least 1",
        ));
    }
    let endpoints = secret::endpoints_of(&args.kms)?;
    let credentials = http::credentials_from_env()?;
    // Set-up with the blocking client, dropped before the runtime starts.
    let (key, body) = {
        let kms = secret::open_remote(endpoints.clone())?;
        let key = bench_key(&kms, args.key)?;
        (key, request_body(&kms, key, args.op)?)
    };
    let route = format!("/kms-key/{key}/{}", args.op.name());
    let urls = endpoints.iter().map(|e| e.url(&route)).collect();
    let tallies = load(&args, &credentials, urls, body)?;
    let report = Report::new(&args, &endpoints, key, tallies);
    report.print(args.json);
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Problems.code())
    })
}

/// The `--key`, else the enabled key named kmsfs-bench, made when absent.
fn bench_key(kms: &dyn KeyService, chosen: Option<Uuid>) -> CliResult<Uuid> {
    let key = match chosen {
        Some(id) => kms.get_key(id)?,
        None => match kms
            .list_keys()?
            .into_iter()
            .find(|k| k.name == BENCH_KEY_NAME)
        {
            Some(key) => key,
            None => kms.create_key(&CreateKeyRequest {
                name: BENCH_KEY_NAME.into(),
                description: Some("made by kmsfs kms bench".into()),
                usage: None,
                multi_zone: false,
            })?,
        },
    };
    if key.status != KeyStatus::Enabled {
        return Err(CliError::with(
            Exit::KmsRefused,
            format!(
                "the benchmark key {} is {}; enable it or pass --key ID",
                key.id,
                key.status.as_str()
            ),
        ));
    }
    Ok(key.id)
}

/// The JSON body every request of the run sends.
fn request_body(kms: &dyn KeyService, key: Uuid, op: BenchOp) -> CliResult<Vec<u8>> {
    let context = B64.encode(CONTEXT);
    let body = match op {
        BenchOp::Decrypt => {
            let plain: [u8; 32] = crate::crypto::random_array();
            let ciphertext = kms.encrypt(key, &plain, Some(CONTEXT))?;
            serde_json::json!({"ciphertext": B64.encode(ciphertext), "encryption-context": context})
        }
        BenchOp::GenerateDataKey => {
            serde_json::json!({"key-spec": "AES-256", "encryption-context": context})
        }
        BenchOp::Encrypt => {
            let plain: [u8; 32] = crate::crypto::random_array();
            serde_json::json!({"plaintext": B64.encode(plain), "encryption-context": context})
        }
    };
    Ok(body.to_string().into_bytes())
}

/// Runs the workers and returns their tallies.
fn load(
    args: &BenchArgs,
    credentials: &Credentials,
    urls: Vec<reqwest::Url>,
    body: Vec<u8>,
) -> CliResult<Vec<Tally>> {
    http::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the benchmark runtime: {e}")))?;
    let client = reqwest::Client::builder()
        .connect_timeout(http::CONNECT_TIMEOUT)
        .timeout(http::ATTEMPT_TIMEOUT)
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| CliError::new(format!("cannot set up HTTP: {e}")))?;
    let servers = urls.len();
    let shared = Arc::new((client, credentials.clone(), urls, body));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    runtime.block_on(async move {
        let workers: Vec<_> = (0..args.concurrency)
            .map(|n| tokio::spawn(worker(shared.clone(), n % servers, deadline)))
            .collect();
        let mut tallies = Vec::with_capacity(workers.len());
        for worker in workers {
            tallies.push(worker.await.unwrap_or_default());
        }
        Ok(tallies)
    })
}

async fn worker(
    shared: Arc<(reqwest::Client, Credentials, Vec<reqwest::Url>, Vec<u8>)>,
    server: usize,
    deadline: Instant,
) -> Tally {
    let (client, credentials, urls, body) = &*shared;
    let url = &urls[server];
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = client
            .post(url.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                http::authorization(credentials, "POST", url, body),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(_) if (200..300).contains(&status) => Ok(()),
                    Ok(bytes) => Err(error_kind(&http::error_from_answer(status, &bytes))),
                    Err(e) => Err(format!("transport: {}", http::transport_cause(&e))),
                }
            }
            Err(e) => Err(format!("transport: {}", http::transport_cause(&e))),
        };
        match outcome {
            Ok(()) => {
                let micros = started.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Err(kind) => {
                *tally.errors.entry(kind).or_default() += 1;
                // A failing server answers fast: do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

/// A short label that groups errors of one kind.
fn error_kind(error: &KmsError) -> String {
    match error {
        KmsError::Refused { refusal, .. } => format!("400 {}", refusal.title()),
        KmsError::InvalidCiphertext => "400 invalid ciphertext".into(),
        KmsError::Unauthorized { .. } => "403 Forbidden".into(),
        KmsError::Limited { .. } => "429 limited".into(),
        KmsError::Unavailable { status, title, .. }
        | KmsError::Unexpected { status, title, .. } => {
            format!("{status} {title}")
        }
        other => other.to_string(),
    }
}

/// The numbers of a run.
#[derive(serde::Serialize)]
struct Report {
    op: &'static str,
    endpoint: String,
    key: Uuid,
    concurrency: usize,
    seconds: u64,
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    ops_per_second: f64,
    latency_ms: Latency,
}

#[derive(serde::Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Report {
    fn new(args: &BenchArgs, endpoints: &EndpointList, key: Uuid, tallies: Vec<Tally>) -> Self {
        let mut latencies = Vec::new();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for tally in tallies {
            latencies.extend(tally.latencies_us);
            for (kind, n) in tally.errors {
                *errors.entry(kind).or_default() += n;
            }
        }
        latencies.sort_unstable();
        let ms = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let index = ((latencies.len() - 1) as f64 * q).round() as usize;
            f64::from(latencies[index]) / 1000.0
        };
        let ok = latencies.len() as u64;
        Report {
            op: args.op.name(),
            endpoint: endpoints.to_string(),
            key,
            concurrency: args.concurrency,
            seconds: args.seconds,
            ok,
            failed: errors.values().sum(),
            ops_per_second: ok as f64 / args.seconds as f64,
            latency_ms: Latency {
                p50: ms(0.50),
                p99: ms(0.99),
                max: ms(1.0),
            },
            errors,
        }
    }

    fn print(&self, json: bool) {
        if json {
            let text = serde_json::to_string_pretty(self).expect("BUG: report serializes");
            println!("{text}");
            return;
        }
        println!(
            "kms bench: {} on {} (key {}), concurrency {}, {} s",
            self.op, self.endpoint, self.key, self.concurrency, self.seconds
        );
        println!("  requests:  {} ok, {} failed", self.ok, self.failed);
        println!("  rate:      {:.0} ops/s", self.ops_per_second);
        let l = &self.latency_ms;
        println!(
            "  latency:   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50, l.p99, l.max
        );
        for (kind, n) in &self.errors {
            println!("  error:     {n} x {kind}");
        }
    }
}
