//! `digital-employee serve`: the API and metrics listeners until SIGTERM or Ctrl-C.

use crate::app::{App, shutdown_signal};
use crate::config::Config;
use crate::telemetry;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: Config) -> anyhow::Result<()> {
    // The redactor first: the logger applies it to every line from the first one on.
    crate::auth::redact::install(&config.redact_extra_patterns, config.secret_values());
    telemetry::logging::init(&config.log_level);
    tracing::info!(
        app_env = ?config.app_env,
        database = %config.database_url.redacted(),
        version = env!("CARGO_PKG_VERSION"),
        "starting"
    );
    let shutdown = shutdown_signal();
    let mut app = App::build(config).await?;
    if let Some(key) = app.take_bootstrap_key() {
        // Shown once, on stderr, never logged: only its hash is stored.
        eprintln!(
            "\nNo API_KEY_WHITELIST is set, so an admin API key was created for the default tenant.\n\
             It is shown only this once; store it now:\n\n    {key}\n\n\
             Send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`.\n"
        );
    }
    tracing::info!(
        api = %app.api_addr()?,
        metrics = %app.metrics_addr()?,
        "listening"
    );
    app.run(shutdown).await
}
