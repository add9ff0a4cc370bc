//! `digital-employee config`: the effective configuration, secrets redacted.

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, config: Config) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&config)?);
    Ok(())
}
