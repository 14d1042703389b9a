//! What is generated from the command line's own definition: shell completions
//! (`kmsfs completions SHELL`) and manual pages (`kmsfs man DIR`), one page for the command and
//! one for every subcommand, named as git names its pages (`kmsfs.1`, `kmsfs-mount.1`,
//! `kmsfs-kms-serve.1`).

use super::{CliError, CliResult};
use clap::CommandFactory;
use std::path::Path;
use std::process::ExitCode;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> CliResult<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(shell, &mut command, "kmsfs", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Writes the manual pages into directory `dir` (made if absent) and prints their paths.
pub fn man(dir: &Path) -> CliResult<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::io("create", dir, &e))?;
    let mut command = super::Cli::command();
    command.build();
    write_pages(&command, "kmsfs", dir)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `command`, called `name`, and those of its subcommands.
fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> CliResult {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.to_string()))
        .render(&mut page)
        .map_err(|e| CliError::io("render the manual page", &path, &e))?;
    std::fs::write(&path, page).map_err(|e| CliError::io("write", &path, &e))?;
    println!("{}", path.display());
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
