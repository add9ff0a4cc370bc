//! Where data lives: the database URL (whole, or PostgreSQL by parts), its pool size,
//! Redis, and where backups go; and [`DatabaseUrl`], which never prints a password.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::parse::parse;
use super::{ConfigError, Secret};

/// A database URL whose password is redacted when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    /// Wraps a URL as written, password included.
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }
    /// The URL itself, password included; for connecting, never for printing.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
    /// True for `postgres://` and `postgresql://` URLs.
    pub fn is_postgres(&self) -> bool {
        let u = self.expose();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }
    /// The URL with any `user:password@` password replaced, safe to print.
    pub fn redacted(&self) -> String {
        redact_url_password(self.expose())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// The password of `scheme://user:password@host…`, as written and percent-decoded.
pub(super) fn url_password(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://") else {
        return Vec::new();
    };
    let rest = &url[scheme_end + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return Vec::new();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return Vec::new();
    };
    let raw = &userinfo[colon + 1..];
    if raw.is_empty() {
        return Vec::new();
    }
    let mut out = vec![raw.to_string()];
    let decoded: String =
        form_urlencoded::parse(format!("p={}", raw.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
    if !decoded.is_empty() && decoded != raw {
        out.push(decoded);
    }
    out
}

/// Replaces the password of `scheme://user:password@host…` with `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// The storage settings; [`Config`](super::Config) keeps them as top-level fields.
pub(super) struct DatabaseSettings {
    pub(super) data_dir: PathBuf,
    pub(super) database_url: DatabaseUrl,
    pub(super) db_max_connections: u32,
    pub(super) redis_url: Option<DatabaseUrl>,
    pub(super) backup_dir: PathBuf,
    pub(super) retention_days: u32,
    pub(super) aws_s3_bucket: Option<String>,
}

impl DatabaseSettings {
    /// `DATA_DIR`, `DATABASE_URL` (or `DB_*`), `DB_MAX_CONNECTIONS`, `REDIS_URL` (or
    /// `REDIS_HOST`/`REDIS_PORT`), `BACKUP_DIR`, `RETENTION_DAYS` and `AWS_S3_BUCKET`.
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database_url = database_url(get, &data_dir)?;
        let default_connections = if database_url.is_postgres() {
            POSTGRES_CONNECTIONS
        } else {
            sqlite_readers(super::cpus())
        };
        let db_max_connections: u32 = parse(
            get,
            "DB_MAX_CONNECTIONS",
            &default_connections.to_string(),
            "a positive number of connections",
        )?;
        if db_max_connections == 0 {
            return Err(ConfigError {
                var: "DB_MAX_CONNECTIONS",
                value: "0".into(),
                expected: "a positive number of connections",
            });
        }
        let redis_url = redis_url(get)?;
        let backup_dir = PathBuf::from(get("BACKUP_DIR").unwrap_or_else(|| "./backups".into()));
        let retention_days = parse(
            get,
            "RETENTION_DAYS",
            "7",
            "a non-negative whole number of days (0 keeps every backup)",
        )?;
        Ok(Self {
            data_dir,
            database_url,
            db_max_connections,
            redis_url,
            backup_dir,
            retention_days,
            aws_s3_bucket: get("AWS_S3_BUCKET"),
        })
    }
}

/// `DB_MAX_CONNECTIONS` on PostgreSQL when unset.
const POSTGRES_CONNECTIONS: u32 = 16;

/// `DB_MAX_CONNECTIONS` on SQLite when unset: twice the CPUs, from 4 to 16. SQLite's
/// readers run in this process, one thread each, so readers beyond the cores add no
/// throughput; each keeps a page cache of its own (up to 512 KiB) that fills as the
/// database grows, so sixteen readers on two cores held about 9 MiB more than four and
/// took minutes to reach it.
fn sqlite_readers(cpus: usize) -> u32 {
    u32::try_from(cpus.saturating_mul(2)).map_or(16, |n| n.clamp(4, 16))
}

/// `DATABASE_URL`; else PostgreSQL from `DB_HOST` and the other `DB_*` parts; else the
/// SQLite file in `data_dir`.
fn database_url(
    get: &impl Fn(&str) -> Option<String>,
    data_dir: &Path,
) -> Result<DatabaseUrl, ConfigError> {
    if let Some(url) = get("DATABASE_URL") {
        let ok = url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://");
        if !ok {
            return Err(ConfigError {
                var: "DATABASE_URL",
                value: redact_url_password(&url),
                expected: "a sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB URL",
            });
        }
        return Ok(DatabaseUrl::new(url));
    }
    if let Some(host) = get("DB_HOST") {
        let port: u16 = parse(get, "DB_PORT", "5432", "a TCP port number (0-65535)")?;
        let name = get("DB_NAME").unwrap_or_else(|| "digital_employee".into());
        let user = get("DB_USER").unwrap_or_else(|| "user".into());
        let password = get("DB_PASSWORD").unwrap_or_default();
        let auth = if password.is_empty() {
            pct(&user)
        } else {
            format!("{}:{}", pct(&user), pct(&password))
        };
        return Ok(DatabaseUrl::new(format!(
            "postgres://{auth}@{host}:{port}/{}",
            pct(&name)
        )));
    }
    let path = data_dir.join("digital-employee.db");
    Ok(DatabaseUrl::new(format!("sqlite://{}", path.display())))
}

/// `REDIS_URL`; else `redis://REDIS_HOST:REDIS_PORT/0`; else none.
fn redis_url(get: &impl Fn(&str) -> Option<String>) -> Result<Option<DatabaseUrl>, ConfigError> {
    match (get("REDIS_URL"), get("REDIS_HOST")) {
        (Some(url), _) => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError {
                    var: "REDIS_URL",
                    value: redact_url_password(&url),
                    expected: "a redis:// or rediss:// URL",
                });
            }
            Ok(Some(DatabaseUrl::new(url)))
        }
        (None, Some(host)) => {
            let port: u16 = parse(get, "REDIS_PORT", "6379", "a TCP port number")?;
            Ok(Some(DatabaseUrl::new(format!("redis://{host}:{port}/0"))))
        }
        (None, None) => Ok(None),
    }
}

/// Percent-encodes a URL userinfo or path component.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cfg;

    #[test]
    fn db_parts_build_a_postgres_url() {
        let c = cfg(&[
            ("DB_HOST", "postgresql-service"),
            ("DB_USER", "app"),
            ("DB_PASSWORD", "p@ss/word"),
        ])
        .unwrap();
        assert!(c.database_url.is_postgres());
        assert_eq!(
            c.database_url.expose(),
            "postgres://app:p%40ss%2Fword@postgresql-service:5432/digital_employee"
        );
        assert!(!format!("{c:?}").contains("p%40ss"));
    }

    #[test]
    fn the_default_pool_size_depends_on_the_backend() {
        let pg = cfg(&[("DATABASE_URL", "postgres://u@h/db")]).unwrap();
        assert_eq!(pg.db_max_connections, POSTGRES_CONNECTIONS);
        let lite = cfg(&[("DATABASE_URL", "sqlite://./x.db")]).unwrap();
        assert_eq!(
            lite.db_max_connections,
            sqlite_readers(crate::config::cpus())
        );
        let set = cfg(&[
            ("DATABASE_URL", "sqlite://./x.db"),
            ("DB_MAX_CONNECTIONS", "9"),
        ]);
        assert_eq!(set.unwrap().db_max_connections, 9);
        assert_eq!(
            [1, 2, 3, 4, 8, 64, usize::MAX].map(sqlite_readers),
            [4, 4, 6, 8, 16, 16, 16]
        );
    }

    #[test]
    fn url_redaction_keeps_urls_without_password() {
        assert_eq!(redact_url_password("sqlite://./x.db"), "sqlite://./x.db");
        assert_eq!(
            redact_url_password("postgres://u@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(
            redact_url_password("postgres://u:p@h:5/db?x=1"),
            "postgres://u:***@h:5/db?x=1"
        );
    }
}
