//! `kmsfs kms bench` (being built).

use super::{CliError, CliResult};
use clap::Args;
use std::process::ExitCode;

/// Arguments of `kmsfs kms bench`.
#[derive(Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub fn run(_args: BenchArgs) -> CliResult<ExitCode> {
    Err(CliError::new("kmsfs kms bench is not built yet"))
}
