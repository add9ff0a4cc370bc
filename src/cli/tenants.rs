//! `digital-employee tenants create|list`: manage tenants from the operator's shell,
//! straight against the database (the same effect as `/v1/tenants`).

use anyhow::bail;

use super::keys::open_store;
use crate::auth::{TENANT_NAME_RULE, check_tenant_name};
use crate::config::Config;
use crate::store::{DynStore, StoreError};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create a tenant and print its id.
    Create {
        /// Unique name: letters, digits, '-', '_' or '.'.
        name: String,
    },
    /// List every tenant, newest first.
    List,
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let result = match args.action {
        Action::Create { name } => create(&store, &name).await,
        Action::List => list(&store).await,
    };
    store.close().await;
    result
}

async fn create(store: &DynStore, name: &str) -> anyhow::Result<()> {
    if !check_tenant_name(name) {
        bail!("the tenant name {TENANT_NAME_RULE}");
    }
    let t = match store.create_tenant(name).await {
        Err(StoreError::Duplicate(_)) => bail!("a tenant named {name:?} already exists"),
        other => other?,
    };
    eprintln!(
        "Created tenant {name}; create its first key with `digital-employee keys create --tenant {name} --scope admin --name …`"
    );
    // The id alone on stdout, so `ID=$(digital-employee tenants create acme)` works.
    println!("{}", t.id);
    Ok(())
}

async fn list(store: &DynStore) -> anyhow::Result<()> {
    println!("{:<36}  {:<20}  name", "id", "created");
    let mut before = None;
    loop {
        let page = store.list_tenants(before, 100).await?;
        for t in &page.items {
            println!(
                "{:<36}  {:<20}  {}",
                t.id,
                t.created_at.format("%Y-%m-%d %H:%M:%S"),
                t.name
            );
        }
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => return Ok(()),
        }
    }
}
