//! The `digital-employee` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = digital_employee::cli::Cli::parse();
    digital_employee::cli::run(cli)
}
