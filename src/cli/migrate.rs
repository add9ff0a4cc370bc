//! `digital-employee migrate [apply|status]`: the explicit schema step for PostgreSQL
//! (and available for SQLite, which `serve` also migrates on its own).

use anyhow::Context;

use crate::config::Config;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
}

#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Action {
    /// Apply pending migrations (the default).
    Apply,
    /// Show applied and pending migrations; exit 1 when some are pending.
    Status,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let store = store::connect(&store::ConnectOptions {
        url: config.database_url.expose().to_string(),
        max_connections: 2,
    })
    .await
    .with_context(|| {
        format!(
            "cannot open the database at {}",
            config.database_url.redacted()
        )
    })?;
    let result = match args.action.unwrap_or(Action::Apply) {
        Action::Apply => {
            let applied = store.migrate().await.context("applying migrations")?;
            if applied.is_empty() {
                println!("database {} is up to date", config.database_url.redacted());
            } else {
                println!(
                    "applied migrations {applied:?} to {}",
                    config.database_url.redacted()
                );
            }
            Ok(())
        }
        Action::Status => {
            let s = store
                .schema_status()
                .await
                .context("reading migration status")?;
            println!("database: {}", config.database_url.redacted());
            println!("backend:  {:?}", s.backend);
            println!("applied:  {:?}", s.applied);
            println!("pending:  {:?}", s.pending);
            if !s.unknown.is_empty() {
                println!("unknown:  {:?} (applied by a newer binary)", s.unknown);
            }
            if s.is_current() {
                println!("status:   current");
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{} pending migration(s); run `digital-employee migrate`",
                    s.pending.len()
                ))
            }
        }
    };
    store.close().await;
    result
}
