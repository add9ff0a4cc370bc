//! `digital-employee keys create|list|revoke`: manage stored API keys from the operator's
//! shell, straight against the database (the same effect as `/v1/keys`).

use anyhow::{Context, bail};
use uuid::Uuid;

use crate::auth::{Scope, keys};
use crate::config::Config;
use crate::store::{self, DynStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// Tenant id or name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// read, write or admin.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// Requests per rate-limit window for this key (default RATE_LIMIT_REQUESTS).
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List the keys of a tenant (never their secrets).
    List {
        /// Tenant id or name.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Revoke a key by id or prefix; refused from the next request on.
    Revoke {
        /// Tenant id or name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The key's id, or its 12-hex-digit prefix.
        key: String,
    },
}

pub fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(&s.to_ascii_lowercase()).ok_or_else(|| "expected read, write or admin".into())
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let result = match args.action {
        Action::Create {
            tenant,
            scope,
            name,
            rate_limit,
        } => create(&store, &tenant, scope, &name, rate_limit).await,
        Action::List { tenant } => list(&store, &tenant).await,
        Action::Revoke { tenant, key } => revoke(&store, &tenant, &key).await,
    };
    store.close().await;
    result
}

async fn create(
    store: &DynStore,
    tenant: &str,
    scope: Scope,
    name: &str,
    rate_limit: Option<u32>,
) -> anyhow::Result<()> {
    let tenant = resolve_tenant(store, tenant).await?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        bail!("--name must be 1-100 characters");
    }
    let rate_limit = rate_limit
        .map(|n| {
            i32::try_from(n)
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
        })
        .map(|n| n.context("--rate-limit must be between 1 and 1000000"))
        .transpose()?;
    let issued = keys::issue(store, tenant, name, scope, rate_limit)
        .await
        .context("creating the key")?;
    eprintln!(
        "Created {} key {} ({}) for tenant {tenant}. It is shown only this once:",
        scope.as_str(),
        issued.record.id,
        issued.record.prefix
    );
    // The key alone on stdout, so `KEY=$(digital-employee keys create …)` works.
    println!("{}", issued.secret);
    Ok(())
}

async fn list(store: &DynStore, tenant: &str) -> anyhow::Result<()> {
    let tenant = resolve_tenant(store, tenant).await?;
    println!(
        "{:<36}  {:<12}  {:<5}  {:<20}  {:<20}  name",
        "id", "prefix", "scope", "last used", "revoked"
    );
    let mut before = None;
    loop {
        let page = store.list_api_keys(tenant, before, 100).await?;
        for k in &page.items {
            let scope = k
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .max()
                .map(Scope::as_str)
                .unwrap_or("-");
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<36}  {:<12}  {:<5}  {:<20}  {:<20}  {}",
                k.id,
                k.prefix,
                scope,
                at(k.last_used_at),
                at(k.revoked_at),
                k.name
            );
        }
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => return Ok(()),
        }
    }
}

async fn revoke(store: &DynStore, tenant: &str, key: &str) -> anyhow::Result<()> {
    let tenant = resolve_tenant(store, tenant).await?;
    let id = match Uuid::parse_str(key) {
        Ok(id) => id,
        Err(_) => find_by_prefix(store, tenant, key).await?,
    };
    let rec = match store.revoke_api_key(tenant, id).await {
        Err(store::StoreError::NotFound) => bail!("no key {key} in tenant {tenant}"),
        other => other?,
    };
    println!("revoked key {} ({})", rec.id, rec.prefix);
    Ok(())
}

async fn find_by_prefix(store: &DynStore, tenant: Uuid, prefix: &str) -> anyhow::Result<Uuid> {
    let mut before = None;
    loop {
        let page = store.list_api_keys(tenant, before, 100).await?;
        if let Some(k) = page.items.iter().find(|k| k.prefix == prefix) {
            return Ok(k.id);
        }
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => bail!("no key with id or prefix {prefix} in tenant {tenant}"),
        }
    }
}

/// A tenant id, or the name of an existing tenant.
pub async fn resolve_tenant(store: &DynStore, tenant: &str) -> anyhow::Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(tenant) {
        return match store.get_tenant(id).await {
            Ok(t) => Ok(t.id),
            Err(store::StoreError::NotFound) => bail!("no tenant with id {id}"),
            Err(e) => Err(e.into()),
        };
    }
    let mut before = None;
    loop {
        let page = store.list_tenants(before, 100).await?;
        if let Some(t) = page.items.iter().find(|t| t.name == tenant) {
            return Ok(t.id);
        }
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => bail!(
                "no tenant named {tenant:?}; create it with `digital-employee tenants create {tenant}`"
            ),
        }
    }
}

/// Opens the database and checks its schema is current.
pub async fn open_store(config: &Config) -> anyhow::Result<DynStore> {
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
    let status = store
        .schema_status()
        .await
        .context("reading the schema version")?;
    if !status.is_current() {
        store.close().await;
        bail!("the database schema is not current; run `digital-employee migrate` first");
    }
    Ok(store)
}
