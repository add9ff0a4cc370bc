//! `digital-employee sandbox`: the deterministic fake AI vendor as a real HTTP server
//! (OpenAI `/v1/chat/completions` and Anthropic `/v1/messages`), for tests, benchmarks
//! and the testing environment.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::ai::sandbox::{SandboxEngine, SandboxSetup};
use crate::config::Config;
use crate::telemetry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port to listen on (0 picks a free one; the chosen address is logged).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// JSON file with `seed`, `faults` and `scripts` (the body of POST /__sandbox/setup).
    #[arg(long)]
    pub setup: Option<PathBuf>,
    /// Require this API key (Bearer or x-api-key); otherwise any key is accepted.
    #[arg(long)]
    pub require_key: Option<String>,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    telemetry::logging::init(&config.log_level);
    let setup = match &args.setup {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str::<SandboxSetup>(&text)
                .with_context(|| format!("{} is not a sandbox setup", path.display()))?
        }
        None => SandboxSetup::default(),
    };
    let engine = Arc::new(SandboxEngine::new(setup));
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "sandbox vendor listening");
    // Like the API listener: no Nagle delay on small responses.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        crate::ai::sandbox_server::router(engine, args.require_key),
    )
    .with_graceful_shutdown(crate::app::shutdown_signal())
    .await?;
    Ok(())
}
