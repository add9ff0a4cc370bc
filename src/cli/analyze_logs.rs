//! `digital-employee analyze-logs`: statistics of the server's JSON log (plain, gzip or
//! stdin), streamed in bounded memory.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::ops::logs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Log file of JSON lines; `.gz` is read transparently; `-` reads stdin.
    #[arg(long)]
    pub log_file: PathBuf,
    /// Only the last N hours (counted back from now); 0 reads everything.
    #[arg(long, default_value_t = 24.0, value_parser = non_negative)]
    pub hours: f64,
    /// Write the report here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Seconds above which a request counts as slow.
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    pub slow_threshold: f64,
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a non-negative number".into())
    }
}

pub async fn run(args: Args, _config: Config) -> anyhow::Result<()> {
    let opts = logs::Options {
        hours: args.hours,
        slow_threshold: args.slow_threshold,
        now: chrono::Utc::now(),
    };
    let path = args.log_file.clone();
    // Reading is blocking I/O; keep it off the async workers.
    let report = tokio::task::spawn_blocking(move || logs::analyze_path(&path, opts))
        .await
        .context("joining the analyzer")??;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Table => report.to_table(),
    };
    match args.output {
        Some(out) => std::fs::write(&out, text)
            .with_context(|| format!("writing the report to {}", out.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
