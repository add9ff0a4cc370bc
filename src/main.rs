//! The `digital-employee` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: a request allocates a few hundred small
/// short-lived objects, and glibc's malloc spends a fifth of the gateway's CPU on them
/// (see bench/README.md). The `system-allocator` feature keeps the system allocator,
/// for heap profilers that intercept malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = digital_employee::cli::Cli::parse();
    digital_employee::cli::run(cli)
}
