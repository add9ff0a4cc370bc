//! `digital-employee smoke --url U --api-key K`: an end-to-end check of a deployed
//! instance; exit 0 only when every step passed. Used by the blue-green deploy script.

use std::time::Duration;

use crate::config::Config;
use crate::ops::smoke;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the instance (default: http://127.0.0.1:$PORT).
    #[arg(long)]
    pub url: Option<String>,
    /// An API key with the write scope.
    #[arg(long)]
    pub api_key: String,
    /// Seconds each request may take.
    #[arg(long, default_value_t = 10.0, value_parser = super::health_check::positive_secs)]
    pub timeout: f64,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let opts = smoke::Options {
        url: args
            .url
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", config.port)),
        api_key: args.api_key,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    println!("smoke test of {}", opts.url);
    let mut print = |s: &smoke::Step| {
        let mark = if s.ok { "ok  " } else { "FAIL" };
        match &s.detail {
            Some(d) => println!("{mark} {:<24} {:>8.3}s  {d}", s.name, s.seconds),
            None => println!("{mark} {:<24} {:>8.3}s", s.name, s.seconds),
        }
    };
    let report = smoke::run(&opts, &mut print).await?;
    if report.passed {
        println!("smoke test passed ({} steps)", report.steps.len());
        Ok(())
    } else {
        anyhow::bail!("smoke test failed")
    }
}
