//! `digital-employee serve`: the API and metrics listeners until SIGTERM or Ctrl-C.

use crate::app::{App, shutdown_signal};
use crate::config::Config;
use crate::telemetry;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, config: Config) -> anyhow::Result<()> {
    // The redactor first: the logger applies it to every line from the first one on.
    crate::auth::redact::install(&config.redact_extra_patterns, config.secret_values());
    let tracing_on = telemetry::traces::Tracing::start(&config.tracing)?;
    let (tracer_guard, tracer) = match tracing_on {
        Some((guard, tracer)) => (Some(guard), Some(tracer)),
        None => (None, None),
    };
    telemetry::logging::init_with_traces(&config.log_level, tracer);
    if let Some(endpoint) = &config.tracing.endpoint {
        tracing::info!(
            endpoint = %crate::config::redact_url_password(endpoint),
            service = %config.tracing.service_name,
            "exporting traces"
        );
        if matches!(config.log_level.as_str(), "warn" | "error" | "off") {
            tracing::warn!(
                "LOG_LEVEL is coarser than info: the spans are at info, so no trace is exported"
            );
        }
    }
    tracing::info!(
        app_env = ?config.app_env,
        database = %config.database_url.redacted(),
        version = env!("CARGO_PKG_VERSION"),
        "starting"
    );
    let shutdown = shutdown_signal();
    let config_data_dir = config.data_dir.clone();
    let mut app = App::build(config).await?;
    if let Some(key) = app.take_bootstrap_key() {
        // Shown once, on stderr and in a file only this user can read; never logged: only
        // its hash is stored.
        let saved = match save_bootstrap_key(&config_data_dir, &key) {
            Ok(path) => format!(
                "It is also in {} (readable by this user only).\n",
                path.display()
            ),
            Err(e) => format!("It could not be written to the data directory: {e}.\n"),
        };
        eprintln!(
            "\nNo API_KEY_WHITELIST is set, so an admin API key was created for the default tenant.\n\
             Store it now:\n\n    {key}\n\n{saved}\
             Send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`.\n"
        );
    }
    tracing::info!(
        api = %app.api_addr()?,
        metrics = %app.metrics_addr()?,
        "listening"
    );
    let result = app.run(shutdown).await;
    if let Some(guard) = tracer_guard {
        guard.shutdown().await;
    }
    result
}

/// File name of the bootstrap admin key under `DATA_DIR`.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-admin-key";

/// Writes the bootstrap key to `DATA_DIR/bootstrap-admin-key`, mode 0600 (owner only).
fn save_bootstrap_key(dir: &std::path::Path, key: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(BOOTSTRAP_KEY_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    #[cfg(unix)]
    {
        // An older file keeps its mode on open: set it again.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(file, "{key}")?;
    Ok(path)
}
