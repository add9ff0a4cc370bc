//! `digital-employee health-check`: concurrent checks of the app, database, Redis, AI
//! providers, system resources and disk; JSON or a table; exit 1 when anything is
//! unhealthy. `--only app --url …` is the container `HEALTHCHECK`.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::ops::health::{self, CheckKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the instance (default: http://127.0.0.1:$PORT).
    #[arg(long)]
    pub url: Option<String>,
    /// Checks to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<CheckKind>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Seconds each check may take.
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    pub timeout: f64,
    /// CPU busy percent at or above which the system check fails.
    #[arg(long, default_value_t = 80.0, value_parser = percent)]
    pub cpu_threshold: f64,
    /// Memory used percent at or above which the system check fails.
    #[arg(long, default_value_t = 80.0, value_parser = percent)]
    pub memory_threshold: f64,
    /// Disk used percent at or above which the disk check fails.
    #[arg(long, default_value_t = 85.0, value_parser = percent)]
    pub disk_threshold: f64,
    /// PostgreSQL connections in use (percent of max_connections) at or above which the
    /// database check fails.
    #[arg(long, default_value_t = 80.0, value_parser = percent)]
    pub db_connections_threshold: f64,
    /// File system to check (default: DATA_DIR if it exists, else /).
    #[arg(long)]
    pub disk_path: Option<PathBuf>,
    /// OpenAI-compatible base URL probed when OPENAI_API_KEY is set (default: OPENAI_BASE_URL).
    #[arg(long)]
    pub openai_base_url: Option<String>,
    /// Anthropic API base probed when CLAUDE_API_KEY is set (default: ANTHROPIC_BASE_URL + /v1).
    #[arg(long)]
    pub anthropic_base_url: Option<String>,
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 100".into())
    }
}

pub(crate) fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v > 0.0 && v <= 3600.0 {
        Ok(v)
    } else {
        Err("must be a number of seconds above 0 (at most 3600)".into())
    }
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let mut opts = health::Options::new(
        args.url
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.port)),
    );
    if !args.only.is_empty() {
        opts.only = args.only;
    }
    opts.timeout = Duration::from_secs_f64(args.timeout);
    opts.cpu_threshold = args.cpu_threshold;
    opts.memory_threshold = args.memory_threshold;
    opts.disk_threshold = args.disk_threshold;
    opts.db_connections_threshold = args.db_connections_threshold;
    opts.disk_path = args.disk_path;
    opts.openai_base_url = args
        .openai_base_url
        .unwrap_or_else(|| config.ai.openai_base_url.clone());
    opts.anthropic_base_url = args
        .anthropic_base_url
        .unwrap_or_else(|| format!("{}/v1", config.ai.anthropic_base_url.trim_end_matches('/')));

    let report = health::run(&config, &opts).await;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print!("{}", report.to_table()),
    }
    if report.is_healthy() {
        Ok(())
    } else {
        let failing: Vec<&str> = report
            .checks
            .iter()
            .filter(|(_, v)| v.get("healthy") != Some(&serde_json::Value::Bool(true)))
            .map(|(k, _)| k.as_str())
            .collect();
        anyhow::bail!("unhealthy: {}", failing.join(", "))
    }
}
