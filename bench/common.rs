//! What the benchmark programs share: a scratch database (a SQLite file, or a schema of
//! its own on PostgreSQL), the app's settings for a bench, and an employee on the
//! in-process sandbox. Included by each program with `#[path = "common.rs"] mod common;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use digital_employee::config::Config;
use digital_employee::store::{self, DynStore, EmployeeFields};
use sqlx::Connection;

/// The admin key every bench's app accepts.
pub const KEY: &str = "bench-admin-key-0123456789";

/// A database for one run, removed by [`ScratchDb::remove`].
pub struct ScratchDb {
    pub url: String,
    /// `(server URL, schema)` on PostgreSQL.
    schema: Option<(String, String)>,
    dir: PathBuf,
}

impl ScratchDb {
    /// `db` is `sqlite` or a `postgres://` URL.
    pub async fn new(db: &str) -> ScratchDb {
        let dir = std::env::temp_dir().join(format!("de-bench-{}", uuid::Uuid::now_v7().simple()));
        if db == "sqlite" {
            std::fs::create_dir_all(&dir).unwrap();
            return ScratchDb {
                url: format!("sqlite://{}/bench.db", dir.display()),
                schema: None,
                dir,
            };
        }
        let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let mut c = sqlx::PgConnection::connect(db).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut c)
            .await
            .unwrap();
        let sep = if db.contains('?') { '&' } else { '?' };
        ScratchDb {
            url: format!("{db}{sep}options=-c%20search_path%3D{schema}"),
            schema: Some((db.to_string(), schema)),
            dir,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.schema.is_some()
    }

    /// A small store on it with every migration applied (for the fill).
    pub async fn store(&self) -> DynStore {
        let s = store::connect(&store::ConnectOptions {
            url: self.url.clone(),
            max_connections: 4,
        })
        .await
        .unwrap();
        s.migrate().await.unwrap();
        s
    }

    /// Loopback on free ports, [`KEY`], no rate limit, warnings only; `extra` on top.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = [
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("PROMETHEUS_METRICS_PORT", "0"),
            ("API_KEY_WHITELIST", KEY),
            ("RATE_LIMIT_REQUESTS", "1000000000"),
            ("DATABASE_URL", &self.url),
            ("LOG_LEVEL", "warn"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from_lookup(|k| vars.get(k).cloned()).unwrap()
    }

    pub async fn remove(self) {
        if let Some((server, schema)) = &self.schema {
            let mut c = sqlx::PgConnection::connect(server).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut c)
                .await
                .unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An employee on the in-process sandbox vendor, no tools, five steps.
pub fn employee(name: &str) -> EmployeeFields {
    EmployeeFields {
        name: name.into(),
        role: "benchmark".into(),
        instructions: String::new(),
        model_policy: vec!["sandbox/sandbox-1".into()],
        allowed_tools: vec![],
        max_steps: 5,
        token_budget: 100_000,
        temperature: 0.0,
        redact_prompts: false,
        approval_tools: vec![],
        output_schema: None,
        input_timeout_seconds: 86_400,
    }
}
