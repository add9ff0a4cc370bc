//! `digital-employee token --tenant T --scope read --ttl 1h`: mints an HS256 JWT with
//! `JWT_SECRET_KEY` and prints it on stdout.

use anyhow::Context;
use uuid::Uuid;

use super::keys::{open_store, parse_scope, resolve_tenant};
use crate::auth::Scope;
use crate::auth::jwt::{self, JwtKeys};
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tenant id (no database needed) or name (looked up in the database).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// read, write or admin.
    #[arg(long, value_parser = parse_scope)]
    pub scope: Scope,
    /// Lifetime: seconds, or with a unit: 90s, 15m, 1h, 7d (at most 30d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: std::time::Duration,
    /// Subject: who the token is for; also its rate-limit identity.
    #[arg(long, default_value = "cli")]
    pub sub: String,
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    jwt::parse_ttl(s)
        .filter(|d| !d.is_zero() && *d <= jwt::MAX_TTL)
        .ok_or_else(|| "expected a lifetime such as 3600, 15m, 1h or 7d (at most 30d)".into())
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let keys = JwtKeys::with_options(&jwt::JwtOptions::from_config(&config)).context(
        "JWT_SECRET_KEY is not set; the server needs the same secret to accept the token",
    )?;
    let tenant = match Uuid::parse_str(&args.tenant) {
        Ok(id) => id,
        Err(_) => {
            let store = open_store(&config).await?;
            let id = resolve_tenant(&store, &args.tenant).await;
            store.close().await;
            id?
        }
    };
    if args.sub.trim().is_empty() {
        anyhow::bail!("--sub must not be empty");
    }
    let token = keys
        .mint(args.sub.trim(), tenant, args.scope, args.ttl)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{token}");
    Ok(())
}
