//! The `kmsfs` command.

fn main() -> std::process::ExitCode {
    kmsfs::cli::main()
}
