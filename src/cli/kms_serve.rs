//! `kmsfs kms serve` and `kmsfs kms org ...` (being built).

use super::{CliError, CliResult};
use clap::{Args, Subcommand};
use std::process::ExitCode;

/// Arguments of `kmsfs kms serve`.
#[derive(Args)]
pub struct ServeArgs {}

/// Subcommands of `kmsfs kms org`.
#[derive(Subcommand)]
pub enum OrgCommand {}

/// Serves the KMS.
pub fn serve(_args: ServeArgs) -> CliResult<ExitCode> {
    Err(CliError::new("kmsfs kms serve is not built yet"))
}

/// Runs an org command.
pub fn org(command: OrgCommand) -> CliResult<ExitCode> {
    match command {}
}
