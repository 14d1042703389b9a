//! `kmsfs kms ...`: the KMS server, its organizations, and the benchmark client.

use super::CliResult;
use super::{kms_bench, kms_serve};
use clap::Subcommand;
use std::process::ExitCode;

/// Subcommands of `kmsfs kms`.
#[derive(Subcommand)]
pub enum KmsCommand {
    /// Serve the KMS part of the Exoscale API v2 over HTTP(S).
    Serve(kms_serve::ServeArgs),
    /// Manage the server's organizations and credentials.
    #[command(subcommand)]
    Org(kms_serve::OrgCommand),
    /// Copy a server's file store (--data DIR) into an empty etcd prefix (--store etcd://...).
    Migrate(kms_serve::MigrateArgs),
    /// Load a KMS with many concurrent requests and report rates and latencies.
    Bench(kms_bench::BenchArgs),
}

/// Runs a `kmsfs kms` command.
pub fn run(command: KmsCommand) -> CliResult<ExitCode> {
    match command {
        KmsCommand::Serve(args) => kms_serve::serve(args),
        KmsCommand::Org(command) => kms_serve::org(command),
        KmsCommand::Migrate(args) => kms_serve::migrate(args),
        KmsCommand::Bench(args) => kms_bench::run(args),
    }
}
