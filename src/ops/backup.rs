//! Backups and restores behind `digital-employee backup` and `restore`.
//!
//! - **SQLite**: `VACUUM INTO` a temporary file next to the target. It reads inside one
//!   transaction, so the copy is consistent and the server keeps serving (WAL readers
//!   never block the writer). Verified with `PRAGMA integrity_check`.
//! - **PostgreSQL**: `pg_dump --format=custom` (one snapshot), verified with
//!   `pg_restore --list`. The password travels in `PGPASSWORD`, never on a command line.
//!   The whole database named by `DATABASE_URL` is dumped.
//!
//! A backup is written as `.partial`, verified, then renamed, so a `db_backup_*` file
//! is always complete. Names are `db_backup_YYYYmmdd_HHMMSS.{sqlite3,dump}` (UTC).
//!
//! Restore checks the file (format, integrity) before touching anything, then:
//! PostgreSQL — `pg_restore --clean --if-exists --no-owner --single-transaction` into the
//! configured database (all or nothing); SQLite — refuses while any process holds the
//! database open (an exclusive-lock probe; a running server always holds it), copies
//! the backup to a temporary file in the same directory and renames it over the
//! database, so a crash leaves either the old or the new file, never a mix. Both end
//! by checking that the restored schema is current for this binary.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::{ConnectOptions, Connection};

use crate::config::Config;
use crate::store;

pub const BACKUP_PREFIX: &str = "db_backup_";
pub const SQLITE_EXT: &str = "sqlite3";
pub const PG_EXT: &str = "dump";
pub const BACKUP_LOG: &str = "backup.log";

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub output_dir: PathBuf,
    /// Delete `db_backup_*` files older than this many days; 0 keeps all.
    pub retention_days: u32,
    /// Upload to `s3://BUCKET/backups/` with the `aws` CLI when set.
    pub s3_bucket: Option<String>,
}

impl BackupOptions {
    pub fn from_config(config: &Config) -> Self {
        BackupOptions {
            output_dir: config.backup_dir.clone(),
            retention_days: config.retention_days,
            s3_bucket: config.aws_s3_bucket.clone(),
        }
    }
}

/// What a backup produced.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub file: PathBuf,
    pub backend: &'static str,
    pub size_bytes: u64,
    pub verified: bool,
    pub duration_seconds: f64,
    pub deleted: Vec<PathBuf>,
    pub uploaded_to: Option<String>,
}

/// Backs up the configured database into `opts.output_dir`; appends the outcome to
/// `backup.log` there, success or failure.
pub async fn backup(config: &Config, opts: &BackupOptions) -> anyhow::Result<BackupReport> {
    std::fs::create_dir_all(&opts.output_dir)
        .with_context(|| format!("cannot create {}", opts.output_dir.display()))?;
    let result = backup_inner(config, opts).await;
    let line = match &result {
        Ok(r) => format!(
            "OK {} {} bytes, verified{}{}",
            r.file.display(),
            r.size_bytes,
            if r.deleted.is_empty() {
                String::new()
            } else {
                format!(", deleted {} old backup(s)", r.deleted.len())
            },
            r.uploaded_to
                .as_ref()
                .map(|u| format!(", uploaded to {u}"))
                .unwrap_or_default()
        ),
        Err(e) => format!("FAILED {e:#}"),
    };
    if let Err(e) = append_log(&opts.output_dir, &line) {
        // The backup itself stands; say the log could not be written.
        eprintln!("warning: cannot append to {BACKUP_LOG}: {e:#}");
    }
    result
}

async fn backup_inner(config: &Config, opts: &BackupOptions) -> anyhow::Result<BackupReport> {
    let started = std::time::Instant::now();
    let postgres = config.database_url.is_postgres();
    let ext = if postgres { PG_EXT } else { SQLITE_EXT };
    let file = unique_name(&opts.output_dir, ext);
    let partial = file.with_extension(format!("{ext}.partial"));
    let _ = std::fs::remove_file(&partial);

    let made = if postgres {
        pg_dump(config.database_url.expose(), &partial).await
    } else {
        sqlite_vacuum_into(config.database_url.expose(), &partial).await
    };
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let verified = if postgres {
        verify_pg_dump(&partial).await
    } else {
        verify_sqlite(&partial).await
    };
    if let Err(e) = verified {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context("the new backup failed verification and was removed"));
    }
    sync_file(&partial)?;
    std::fs::rename(&partial, &file)
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    sync_dir(&opts.output_dir);
    let size_bytes = std::fs::metadata(&file)?.len();

    let deleted = if opts.retention_days > 0 {
        remove_older_than(
            &opts.output_dir,
            Duration::from_secs(u64::from(opts.retention_days) * 86_400),
            &file,
        )?
    } else {
        Vec::new()
    };
    let uploaded_to = match &opts.s3_bucket {
        Some(bucket) => Some(upload_s3(&file, bucket).await?),
        None => None,
    };
    Ok(BackupReport {
        file,
        backend: if postgres { "postgres" } else { "sqlite" },
        size_bytes,
        verified: true,
        duration_seconds: started.elapsed().as_secs_f64(),
        deleted,
        uploaded_to,
    })
}

/// `db_backup_YYYYmmdd_HHMMSS.ext`, with `_2`, `_3`… if that second is taken.
fn unique_name(dir: &Path, ext: &str) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string();
    let mut candidate = dir.join(format!("{BACKUP_PREFIX}{stamp}.{ext}"));
    let mut n = 2;
    while candidate.exists() {
        candidate = dir.join(format!("{BACKUP_PREFIX}{stamp}_{n}.{ext}"));
        n += 1;
    }
    candidate
}

fn append_log(dir: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(BACKUP_LOG))?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    f.write_all(format!("{now} {line}\n").as_bytes())?;
    Ok(())
}

/// Completed backups (`db_backup_*.sqlite3` / `.dump`) in `dir`, oldest first.
pub fn list_backups(dir: &Path) -> anyhow::Result<Vec<(PathBuf, SystemTime, u64)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_backup = name.starts_with(BACKUP_PREFIX)
            && (name.ends_with(&format!(".{SQLITE_EXT}")) || name.ends_with(&format!(".{PG_EXT}")));
        if !is_backup {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() {
            out.push((entry.path(), meta.modified()?, meta.len()));
        }
    }
    out.sort_by_key(|(p, t, _)| (*t, p.clone()));
    Ok(out)
}

fn remove_older_than(dir: &Path, age: Duration, keep: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut deleted = Vec::new();
    for (path, modified, _) in list_backups(dir)? {
        if path != keep && modified < cutoff {
            std::fs::remove_file(&path)
                .with_context(|| format!("deleting old backup {}", path.display()))?;
            deleted.push(path);
        }
    }
    Ok(deleted)
}

fn sync_file(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))
}

/// Best effort: makes a rename durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
    Ok(options.get_filename().to_path_buf())
}

async fn sqlite_vacuum_into(url: &str, target: &Path) -> anyhow::Result<()> {
    let path = sqlite_path(url)?;
    if !path.exists() {
        bail!("the database file {} does not exist", path.display());
    }
    let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let target_text = target
        .to_str()
        .context("the backup path is not valid UTF-8")?
        .replace('\'', "''");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM INTO '{target_text}'")))
        .execute(&mut conn)
        .await
        .with_context(|| format!("VACUUM INTO {}", target.display()))?;
    let _ = conn.close().await;
    Ok(())
}

/// Opens a SQLite file read-only and runs `PRAGMA integrity_check`.
pub async fn verify_sqlite(path: &Path) -> anyhow::Result<()> {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .with_context(|| format!("integrity check of {}", path.display()))?;
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        .fetch_one(&mut conn)
        .await?;
    let _ = conn.close().await;
    if rows.len() != 1 || rows[0] != "ok" {
        bail!(
            "{} is corrupt: {}",
            path.display(),
            rows.into_iter().take(5).collect::<Vec<_>>().join("; ")
        );
    }
    if tables == 0 {
        bail!("{} holds no tables", path.display());
    }
    Ok(())
}

/// Finds a PostgreSQL client tool: the one `PATH` resolves (it answers `--version`),
/// else the newest `/usr/lib/postgresql/*/bin/NAME`.
pub fn find_pg_tool(name: &str) -> anyhow::Result<PathBuf> {
    if answers_version(Path::new(name)) {
        return Ok(PathBuf::from(name));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).with_context(|| {
        format!(
            "{name} not found on PATH or under /usr/lib/postgresql/*/bin; \
             install the PostgreSQL client tools (Debian: postgresql-client)"
        )
    })
}

fn answers_version(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Splits the password out of a `postgres://user:password@…` URL so it can travel in
/// `PGPASSWORD` instead of a command line anyone can read in `ps`.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &authority[..at];
    match userinfo.split_once(':') {
        Some((user, password)) => (
            format!("{}://{user}{}", &url[..scheme_end], &rest[at..]),
            Some(super::health::pct_decode(password)),
        ),
        None => (url.to_string(), None),
    }
}

/// Runs a PostgreSQL tool with the URL's password in the environment; returns stdout.
async fn run_pg_tool(tool: &str, args: Vec<String>, url: &str) -> anyhow::Result<String> {
    let program = find_pg_tool(tool)?;
    let (url_no_pw, password) = split_password(url);
    let mut cmd = Command::new(&program);
    cmd.args(&args)
        .arg(format!("--dbname={url_no_pw}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    run_command(cmd, tool).await
}

async fn run_command(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let what = what.to_string();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .context("joining the tool's task")?
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn pg_dump(url: &str, target: &Path) -> anyhow::Result<()> {
    run_pg_tool(
        "pg_dump",
        vec![
            "--format=custom".into(),
            "--no-password".into(),
            format!("--file={}", target.display()),
        ],
        url,
    )
    .await
    .map(|_| ())
}

/// `pg_restore --list` reads the whole table of contents: it fails on a truncated or
/// foreign file.
pub async fn verify_pg_dump(path: &Path) -> anyhow::Result<()> {
    let program = find_pg_tool("pg_restore")?;
    let mut cmd = Command::new(program);
    cmd.arg("--list")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let listing = run_command(cmd, "pg_restore --list").await?;
    if !listing.lines().any(|l| l.contains(" TABLE ")) {
        bail!("{} lists no tables", path.display());
    }
    Ok(())
}

async fn upload_s3(file: &Path, bucket: &str) -> anyhow::Result<String> {
    if !answers_version(Path::new("aws")) {
        bail!(
            "AWS_S3_BUCKET is set but the aws CLI is not on PATH; install it or unset \
             AWS_S3_BUCKET (the local backup was kept)"
        );
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bucket = bucket.trim_start_matches("s3://").trim_end_matches('/');
    let dest = format!("s3://{bucket}/backups/{name}");
    let mut cmd = Command::new("aws");
    cmd.args(["s3", "cp", "--only-show-errors"])
        .arg(file)
        .arg(&dest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_command(cmd, "aws s3 cp")
        .await
        .context("uploading to S3 (the local backup was kept)")?;
    Ok(dest)
}

/// What a backup file is, read from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupFormat {
    Sqlite,
    PgCustom,
}

pub fn detect_format(path: &Path) -> anyhow::Result<BackupFormat> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("the backup file {} does not exist", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    if meta.len() == 0 {
        bail!("{} is empty", path.display());
    }
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path)?;
    let n = f.read(&mut head)?;
    let head = &head[..n];
    if head.starts_with(b"SQLite format 3\0") {
        Ok(BackupFormat::Sqlite)
    } else if head.starts_with(b"PGDMP") {
        Ok(BackupFormat::PgCustom)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        bail!(
            "{} is gzip-compressed; decompress it first (gunzip) and restore the result",
            path.display()
        )
    } else {
        bail!(
            "{} is neither a SQLite database nor a pg_dump custom-format archive",
            path.display()
        )
    }
}

/// A checked restore, ready to run once the operator confirmed.
#[derive(Clone, Debug, Serialize)]
pub struct RestorePlan {
    pub file: PathBuf,
    pub format: BackupFormat,
    /// The database that will be overwritten (password redacted).
    pub target: String,
}

/// Checks the file and that it matches the configured backend; touches nothing.
pub async fn plan_restore(config: &Config, file: &Path) -> anyhow::Result<RestorePlan> {
    let format = detect_format(file)?;
    match (format, config.database_url.is_postgres()) {
        (BackupFormat::Sqlite, true) => bail!(
            "{} is a SQLite backup but DATABASE_URL is PostgreSQL",
            file.display()
        ),
        (BackupFormat::PgCustom, false) => bail!(
            "{} is a PostgreSQL dump but DATABASE_URL is SQLite",
            file.display()
        ),
        _ => {}
    }
    match format {
        BackupFormat::Sqlite => verify_sqlite(file).await?,
        BackupFormat::PgCustom => verify_pg_dump(file).await?,
    }
    Ok(RestorePlan {
        file: file.to_path_buf(),
        format,
        target: config.database_url.redacted(),
    })
}

/// Restores a planned backup over the configured database and checks the schema.
pub async fn restore(config: &Config, plan: &RestorePlan) -> anyhow::Result<store::SchemaStatus> {
    let url = config.database_url.expose();
    match plan.format {
        BackupFormat::PgCustom => {
            run_pg_tool(
                "pg_restore",
                vec![
                    "--clean".into(),
                    "--if-exists".into(),
                    "--no-owner".into(),
                    "--single-transaction".into(),
                    "--exit-on-error".into(),
                    "--no-password".into(),
                    plan.file.display().to_string(),
                ],
                url,
            )
            .await?;
        }
        BackupFormat::Sqlite => restore_sqlite(url, &plan.file).await?,
    }
    let store = store::connect(&store::ConnectOptions {
        url: url.to_string(),
        max_connections: 1,
    })
    .await
    .context("opening the restored database")?;
    let status = store.schema_status().await;
    store.close().await;
    let status = status.context("reading the restored schema version")?;
    if !status.unknown.is_empty() {
        bail!(
            "restored, but the backup has migrations {:?} this binary does not know; \
             run the newer digital-employee that made it",
            status.unknown
        );
    }
    if !status.is_current() {
        bail!(
            "restored, but the schema is behind this binary (pending migrations {:?}); \
             run `digital-employee migrate`",
            status.pending
        );
    }
    Ok(status)
}

async fn restore_sqlite(url: &str, backup: &Path) -> anyhow::Result<()> {
    let target = sqlite_path(url)?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if target.exists() {
        ensure_sqlite_unused(&target).await?;
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "database".into());
    let tmp = dir.join(format!(".{name}.restore-{}", uuid::Uuid::now_v7().simple()));
    std::fs::copy(backup, &tmp)
        .with_context(|| format!("copying {} to {}", backup.display(), tmp.display()))?;
    let checked = async {
        sync_file(&tmp)?;
        verify_sqlite(&tmp).await
    }
    .await;
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The probe closed the last connection, which checkpoints and removes the WAL; any
    // leftover `-wal`/`-shm` belongs to the old file and must not be applied to the new.
    for suffix in ["-wal", "-shm"] {
        let mut p = target.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("moving the restored file over {}", target.display()))?;
    sync_dir(&dir);
    Ok(())
}

/// Refuses when another connection holds the database: an exclusive lock cannot be had
/// while a server (whose pool keeps connections open) is running.
async fn ensure_sqlite_unused(path: &Path) -> anyhow::Result<()> {
    let opened = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::ZERO)
        .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive)
        .connect()
        .await;
    let in_use = || {
        anyhow::anyhow!(
            "{} is in use (is the server running?); stop it before restoring",
            path.display()
        )
    };
    let mut conn = opened.map_err(|_| in_use())?;
    let locked = sqlx::raw_sql("BEGIN EXCLUSIVE; SELECT count(*) FROM sqlite_master; COMMIT;")
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    locked.map(|_| ()).map_err(|_| in_use())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5432/db?sslmode=disable"),
            (
                "postgres://u@h:5432/db?sslmode=disable".to_string(),
                Some("p@ss".to_string())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
    }

    #[test]
    fn formats_are_recognised_and_junk_is_refused() {
        let dir = std::env::temp_dir().join(format!("de-bk-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = detect_format(&dir.join("nope.dump")).unwrap_err();
        assert!(format!("{missing:#}").contains("does not exist"));
        let junk = dir.join("junk.dump");
        std::fs::write(&junk, b"hello world, not a backup").unwrap();
        assert!(format!("{:#}", detect_format(&junk).unwrap_err()).contains("neither"));
        let gz = dir.join("old.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(format!("{:#}", detect_format(&gz).unwrap_err()).contains("gunzip"));
        let pg = dir.join("x.dump");
        std::fs::write(&pg, b"PGDMP\x01\x0e").unwrap();
        assert_eq!(detect_format(&pg).unwrap(), BackupFormat::PgCustom);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_deletes_only_old_backups() {
        let dir = std::env::temp_dir().join(format!("de-bk-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = dir.join("db_backup_20200101_000000.sqlite3");
        let new = dir.join("db_backup_20990101_000000.dump");
        let other = dir.join("notes.txt");
        for p in [&old, &new, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(10 * 86_400))
            .unwrap();
        let deleted = remove_older_than(&dir, Duration::from_secs(7 * 86_400), &new).unwrap();
        assert_eq!(deleted, vec![old.clone()]);
        assert!(!old.exists() && new.exists() && other.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
