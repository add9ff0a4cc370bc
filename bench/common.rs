//! Set-up shared by the benchmark programs (`#[path]`-included by each).

use digital_employee::store::{self, DEFAULT_TENANT_ID, DynStore, EmployeeFields};

/// The admin key of every benchmark replica.
pub const KEY: &str = "bench-admin-key-0123456789";

/// The database of one run: a SQLite file in `dir` for `sqlite`, else a fresh schema of
/// the PostgreSQL database `db` (its URL selects the schema).
pub async fn database(db: &str, dir: &std::path::Path) -> String {
    if db == "sqlite" {
        std::fs::create_dir_all(dir).unwrap();
        return format!("sqlite://{}/bench.db", dir.display());
    }
    use sqlx::Connection;
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let mut c = sqlx::PgConnection::connect(db).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut c)
        .await
        .unwrap();
    let sep = if db.contains('?') { '&' } else { '?' };
    format!("{db}{sep}options=-c%20search_path%3D{schema}")
}

/// Migrates `url` and creates the employee `bench`: the in-process sandbox vendor, one
/// model call a task, no tools.
pub async fn migrate_with_employee(url: &str) -> DynStore {
    let s = store::connect(&store::ConnectOptions {
        url: url.to_string(),
        max_connections: 4,
    })
    .await
    .unwrap();
    s.migrate().await.unwrap();
    s.create_employee(
        DEFAULT_TENANT_ID,
        &EmployeeFields {
            name: "bench".into(),
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
        },
    )
    .await
    .unwrap();
    s
}
