//! The command line: one file per subcommand.

pub mod analyze_logs;
pub mod backup;
pub mod config;
pub mod health_check;
pub mod keys;
pub mod migrate;
pub mod restore;
pub mod sandbox;
pub mod serve;
pub mod smoke;
pub mod tenants;
pub mod token;
pub mod usage;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "digital-employee",
    version,
    about = "Run AI digital employees: durable tasks, the LLM/tool loop, vendor fallback, accounting.",
    long_about = "Run AI digital employees: durable tasks, the LLM/tool loop, vendor fallback, \
                  accounting.\n\nConfiguration comes from the environment; `digital-employee config` \
                  prints the effective values (secrets redacted)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (PORT, default 8000) and metrics (PROMETHEUS_METRICS_PORT, default 9000).
    Serve(serve::Args),
    /// Apply database migrations, or show their status.
    Migrate(migrate::Args),
    /// Print the effective configuration, secrets redacted.
    Config(config::Args),
    /// Run the deterministic fake AI vendor (OpenAI and Anthropic wire formats).
    Sandbox(sandbox::Args),
    /// Create, list or revoke stored API keys.
    Keys(keys::Args),
    /// Create or list tenants.
    Tenants(tenants::Args),
    /// Mint a JWT (HS256, JWT_SECRET_KEY) for a tenant and scope.
    Token(token::Args),
    /// Check the app, database, Redis, AI providers, system and disk; exit 1 if unhealthy.
    HealthCheck(health_check::Args),
    /// Summarise the server's JSON log: requests, errors, latency percentiles, tokens.
    AnalyzeLogs(analyze_logs::Args),
    /// Back up the database (verified, timestamped, with retention clean-up).
    Backup(backup::Args),
    /// Restore a backup over the configured database.
    Restore(restore::Args),
    /// End-to-end smoke test of a running instance.
    Smoke(smoke::Args),
    /// AI usage and cost by employee, model, day or provider (table, CSV or JSON).
    Usage(usage::Args),
}

/// Runs a parsed command; the exit code is 0 on success, 1 on failure.
pub fn run(cli: Cli) -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args, config).await,
            Command::Migrate(args) => migrate::run(args, config).await,
            Command::Config(args) => config::run(args, config),
            Command::Sandbox(args) => sandbox::run(args, config).await,
            Command::Keys(args) => keys::run(args, config).await,
            Command::Tenants(args) => tenants::run(args, config).await,
            Command::Token(args) => token::run(args, config).await,
            Command::HealthCheck(args) => health_check::run(args, config).await,
            Command::AnalyzeLogs(args) => analyze_logs::run(args, config).await,
            Command::Backup(args) => backup::run(args, config).await,
            Command::Restore(args) => restore::run(args, config).await,
            Command::Smoke(args) => smoke::run(args, config).await,
            Command::Usage(args) => usage::run(args, config).await,
        }
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "command failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // What the runtime's tasks log as they are dropped, then the lines still buffered
    // (see telemetry::log_sink).
    drop(runtime);
    crate::telemetry::log_sink::flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
