//! Durable storage behind one trait, with a SQLite and a PostgreSQL implementation.
//!
//! The store knows rows, not HTTP: it never validates business rules beyond what the
//! schema enforces (uniqueness, optimistic versions) and imports nothing of the domain
//! layers above it. Every query is scoped by tenant.

mod budgets;
mod mcp;
mod models;
pub mod postgres;
mod responses;
mod sessions;
pub mod sqlite;
mod tasks;
pub mod timestamp;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use budgets::*;
pub use mcp::*;
pub use models::*;
pub use responses::*;
pub use sessions::*;
pub use tasks::*;
pub use webhooks::*;

/// What can go wrong in the store, in terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the row (for instance an employee name in a tenant).
    #[error("already exists: {0}")]
    Duplicate(&'static str),
    /// The row changed since the caller read it.
    #[error("version conflict")]
    VersionConflict,
    #[error("database schema is not current: {0}")]
    SchemaOutdated(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The embedded database engine refused a write (its own message).
    #[error("database error: {0}")]
    Engine(String),
}

impl StoreError {
    /// True when the database itself could not be reached or answered with an I/O fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Histogram `{kind}`: writes per group commit — on PostgreSQL per statement (`submit`,
/// `finish`; ADR 0018), on SQLite per transaction of the writer thread (`writer`).
pub const WRITE_BATCH_SIZE: &str = "db_write_batch_size";

/// Which backend a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Migration state of a database against the migrations built into this binary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SchemaStatus {
    pub backend: Backend,
    /// Versions applied in the database, ascending.
    pub applied: Vec<i64>,
    /// Versions this binary ships that the database has not applied.
    pub pending: Vec<i64>,
    /// Versions applied in the database that this binary does not know (a newer binary ran).
    pub unknown: Vec<i64>,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Connection pool occupancy, for the pool gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `main` (the `DB_MAX_CONNECTIONS` pool), `hot` (PostgreSQL's task-path
    /// statements), `reports` (PostgreSQL's usage reports), `writer` (SQLite's one write
    /// connection besides the task writer thread).
    pub pool: &'static str,
    /// Connections open now (idle + in use).
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolStats {
    /// The occupancy of `pool` now, named `name`.
    pub fn of<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) -> Self {
        PoolStats {
            pool: name,
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        }
    }
}

/// A page of rows plus the cursor of the next page, if any.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<Uuid>,
}

/// Storage operations. Implementations must behave identically; the conformance
/// suite in `tests/store_conformance.rs` runs against both.
#[async_trait]
pub trait Store:
    TaskStore
    + WebhookStore
    + McpStore
    + BudgetStore
    + ResponseStore
    + SessionStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// One round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    async fn schema_status(&self) -> StoreResult<SchemaStatus>;
    /// Applies pending migrations; returns the versions applied now.
    async fn migrate(&self) -> StoreResult<Vec<i64>>;
    /// Closes the pool (waits for connections to be returned).
    async fn close(&self);
    /// Occupancy of each connection pool; empty for stores without one.
    fn pool_stats(&self) -> Vec<PoolStats> {
        Vec::new()
    }

    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant>;
    async fn get_tenant(&self, id: Uuid) -> StoreResult<Tenant>;
    /// All tenants, newest first (the default tenant, id 1, sorts last). For the
    /// operator's admin only; tenant-scoped callers use `get_tenant` on their own id.
    async fn list_tenants(&self, before: Option<Uuid>, limit: u32) -> StoreResult<Page<Tenant>>;

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord>;
    /// Inserts `key` only when its tenant has no key at all, atomically across replicas
    /// (the bootstrap admin key: several replicas starting together mint one). `None`
    /// when the tenant already has a key.
    async fn insert_first_api_key(&self, key: &NewApiKey) -> StoreResult<Option<ApiKeyRecord>>;
    /// The non-revoked key with this public prefix.
    async fn find_api_key(&self, prefix: &str) -> StoreResult<ApiKeyRecord>;
    async fn count_api_keys(&self, tenant: Uuid) -> StoreResult<i64>;
    /// Keys of a tenant that are not revoked.
    async fn count_active_api_keys(&self, tenant: Uuid) -> StoreResult<i64>;
    /// Keys of a tenant (revoked ones included), newest first.
    async fn list_api_keys(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<ApiKeyRecord>>;
    async fn get_api_key(&self, tenant: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord>;
    /// Sets `revoked_at` (once; revoking again keeps the first time) and returns the key.
    async fn revoke_api_key(&self, tenant: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord>;
    /// Records `last_used_at` for a batch of `(tenant, key id, time)`; a time older than the
    /// stored one is ignored.
    async fn touch_api_keys(&self, used: &[(Uuid, Uuid, DateTime<Utc>)]) -> StoreResult<()>;

    /// Fails with `Duplicate("employee name")` when the name is taken in the tenant.
    async fn create_employee(&self, tenant: Uuid, fields: &EmployeeFields)
    -> StoreResult<Employee>;
    async fn get_employee(&self, tenant: Uuid, id: Uuid) -> StoreResult<Employee>;
    /// Newest first; `before` is the id of the last row of the previous page.
    async fn list_employees(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Employee>>;
    /// Replaces the fields when the stored version is still `version`; bumps the version.
    async fn update_employee(
        &self,
        tenant: Uuid,
        id: Uuid,
        version: i64,
        fields: &EmployeeFields,
    ) -> StoreResult<Employee>;
    /// Deletes; when `version` is given the stored version must match.
    async fn delete_employee(
        &self,
        tenant: Uuid,
        id: Uuid,
        version: Option<i64>,
    ) -> StoreResult<()>;

    /// Inserts a batch of AI call records in one transaction.
    async fn insert_ai_calls(&self, calls: &[AiCallRecord]) -> StoreResult<()>;
    /// The tenant's AI calls, oldest first; optionally only those of one task.
    async fn list_ai_calls(
        &self,
        tenant: Uuid,
        task: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AiCallRecord>>;
    /// Sums of the tenant's AI calls with `from <= created_at < to`, one group per
    /// `group_by` key, sorted by key with the `None` group (no employee) last.
    ///
    /// Whole UTC days are read from the daily rollup kept with the calls (`usage_daily`),
    /// the whole hours of the partial days at either end from the hourly one
    /// (`usage_hourly`), the whole minutes of the partial hours at the ends of those from
    /// the minute one (`usage_minutely`) and only the partial minutes at the very ends
    /// from `ai_calls`, all in one statement; so a month costs about as much as a day,
    /// however many calls it holds. When `to` is not in the past, its day (or hour, or
    /// minute) has no later calls yet and is read whole from a rollup too.
    async fn usage_report(
        &self,
        tenant: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: UsageGroupBy,
    ) -> StoreResult<Vec<UsageGroup>> {
        let spans = usage_spans(from, to, now());
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        let slots = usage_slots(&spans, from);
        let mut groups = self.usage_of_slots(tenant, &slots, group_by).await?;
        sort_usage(&mut groups);
        Ok(groups)
    }
    /// Sums per key over the seven ranges of `slots`, each read from its source in
    /// [`USAGE_SLOT_SOURCES`] (an empty range reads nothing), in one statement
    /// ([`usage_statements`]); one group per key, unsorted.
    async fn usage_of_slots(
        &self,
        tenant: Uuid,
        slots: &UsageSlots,
        group_by: UsageGroupBy,
    ) -> StoreResult<Vec<UsageGroup>>;
}

/// A rollup of `ai_calls` kept with the calls: sums per tenant, unit (UTC), employee,
/// provider and model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollup {
    /// `usage_daily` (UTC days).
    Day,
    /// `usage_hourly`.
    Hour,
    /// `usage_minutely`.
    Minute,
}

impl Rollup {
    /// The rollup's table and the column of its unit's start.
    pub fn table(self) -> (&'static str, &'static str) {
        match self {
            Rollup::Day => ("usage_daily", "day"),
            Rollup::Hour => ("usage_hourly", "hour"),
            Rollup::Minute => ("usage_minutely", "minute"),
        }
    }

    fn seconds(self) -> i64 {
        match self {
            Rollup::Day => 86_400,
            Rollup::Hour => 3600,
            Rollup::Minute => 60,
        }
    }

    fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let secs = t.timestamp().div_euclid(self.seconds()) * self.seconds();
        DateTime::from_timestamp(secs, 0).unwrap_or(t)
    }

    fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let f = self.floor(t);
        if f == t {
            f
        } else {
            f + chrono::Duration::seconds(self.seconds())
        }
    }
}

/// The last time a bound of a usage report may take (the API refuses later ones).
const LATEST_TIME: DateTime<Utc> = match DateTime::from_timestamp(253_402_300_799, 999_999_000) {
    Some(t) => t,
    None => DateTime::<Utc>::MAX_UTC,
};

/// Where a usage report reads one part of its range from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UsageSpan {
    /// Raw `ai_calls` rows in `[a, b)`.
    Calls(DateTime<Utc>, DateTime<Utc>),
    /// Rows of a rollup for the whole units in `[a, b)`.
    Rollup(Rollup, DateTime<Utc>, DateTime<Utc>),
}

/// Splits `[from, to)` into whole UTC days (read from the daily rollup), the whole hours
/// of the partial days at its ends (from the hourly rollup), the whole minutes of the
/// partial hours at the ends of those (from the minute rollup) and the partial minutes at
/// its very ends (from `ai_calls`). A `to` at or after `now` reaches past every call
/// recorded so far, so its day (or hour, or minute) counts as whole.
pub(crate) fn usage_spans(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<UsageSpan> {
    let mut spans = Vec::with_capacity(7);
    split_span(
        from,
        to,
        to >= now,
        &[Rollup::Day, Rollup::Hour, Rollup::Minute],
        &mut spans,
    );
    spans
}

/// `[from, to)` as whole units of the first rollup and, at either end, what is left split
/// by the finer ones; `open_end`: no call is recorded after `to` yet.
fn split_span(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    open_end: bool,
    rollups: &[Rollup],
    out: &mut Vec<UsageSpan>,
) {
    if from >= to {
        return;
    }
    let Some((&unit, finer)) = rollups.split_first() else {
        out.push(UsageSpan::Calls(from, to));
        return;
    };
    let first = unit.ceil(from);
    // An open end's unit is read whole, but never past the last storable time: SQLite
    // keeps times as four-digit-year text, so year 10000 would sort before every call.
    let last = if open_end {
        unit.ceil(to).min(LATEST_TIME.max(to))
    } else {
        unit.floor(to)
    };
    if first >= last {
        return split_span(from, to, open_end, finer, out);
    }
    split_span(from, first, false, finer, out);
    out.push(UsageSpan::Rollup(unit, first, last));
    split_span(last, to, open_end, finer, out);
}

/// The `[from, to)` ranges of a usage report, one per source of
/// [`USAGE_SLOT_SOURCES`]; an unused one is empty (`from == to`).
pub type UsageSlots = [(DateTime<Utc>, DateTime<Utc>); 7];

/// Where each range of [`UsageSlots`] is read from (`None`: `ai_calls`): the finer sources
/// at the start of a report's range, the coarsest in the middle, the finer ones again at
/// its end.
pub const USAGE_SLOT_SOURCES: [Option<Rollup>; 7] = [
    None,
    Some(Rollup::Minute),
    Some(Rollup::Hour),
    Some(Rollup::Day),
    Some(Rollup::Hour),
    Some(Rollup::Minute),
    None,
];

/// Places the spans of [`usage_spans`] in the slots of one statement. Spans get coarser
/// up to the coarsest one and finer after it, each source at most once on either side,
/// so each span has a slot of its own.
pub(crate) fn usage_slots(spans: &[UsageSpan], from: DateTime<Utc>) -> UsageSlots {
    let rank = |s: &UsageSpan| match s {
        UsageSpan::Calls(..) => 0,
        UsageSpan::Rollup(Rollup::Minute, ..) => 1,
        UsageSpan::Rollup(Rollup::Hour, ..) => 2,
        UsageSpan::Rollup(Rollup::Day, ..) => 3,
    };
    let middle = spans
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| rank(s))
        .map_or(0, |(i, _)| i);
    let mut slots = [(from, from); 7];
    for (i, s) in spans.iter().enumerate() {
        let r = rank(s);
        let slot = if i <= middle { r } else { 6 - r };
        let (UsageSpan::Calls(a, b) | UsageSpan::Rollup(_, a, b)) = *s;
        if let Some(x) = slots.get_mut(slot) {
            *x = (a, b);
        }
    }
    slots
}

/// How one backend spells the parts of a usage report's statement.
pub(crate) struct UsageDialect {
    /// The key of a group read from `ai_calls`.
    pub calls_key: fn(UsageGroupBy) -> String,
    /// The key of a group read from a rollup whose unit column is the second argument.
    pub rollup_key: fn(UsageGroupBy, &str) -> String,
    /// `requests, successes, errors, cache_hits` of one `ai_calls` row, named so.
    pub call_counts: &'static str,
    /// The placeholder sigil before a parameter's number (`$` or `?`).
    pub sigil: char,
    /// What follows each `SUM(..)` (PostgreSQL sums bigints as numeric: cast back, an
    /// overflow errors, never wraps).
    pub sum_cast: &'static str,
}

/// The statements of a usage report, one per [`UsageGroupBy`] in the order of
/// [`usage_statement_index`]: the rows of each slot of [`USAGE_SLOT_SOURCES`] (parameter
/// 1 the tenant, 2 and 3 the first slot's range, ...), a call counting as one request,
/// joined by `UNION ALL` and summed per key by one aggregate (one plan node to build and
/// run, not one per slot).
pub(crate) fn usage_statements(d: &UsageDialect) -> [String; 4] {
    USAGE_GROUP_BYS.map(|g| {
        let parts: Vec<String> = USAGE_SLOT_SOURCES
            .iter()
            .enumerate()
            .map(|(i, source)| {
                let (a, b) = (2 + 2 * i, 3 + 2 * i);
                let (key, counts, table, at) = match source {
                    None => ((d.calls_key)(g), d.call_counts, "ai_calls", "created_at"),
                    Some(r) => {
                        let (table, unit) = r.table();
                        (
                            (d.rollup_key)(g, unit),
                            "requests, successes, errors, cache_hits",
                            table,
                            unit,
                        )
                    }
                };
                let p = d.sigil;
                format!(
                    "SELECT {key} AS key, {counts}, input_tokens, output_tokens, \
                     cached_tokens, cache_write_tokens, reasoning_tokens, cost_nanos \
                     FROM {table} WHERE tenant_id = {p}1 AND {at} >= {p}{a} AND {at} < {p}{b}"
                )
            })
            .collect();
        let sums = [
            "requests",
            "successes",
            "errors",
            "cache_hits",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_nanos",
        ]
        .map(|c| format!("SUM({c}){} AS {c}", d.sum_cast))
        .join(", ");
        format!(
            "SELECT key, {sums} FROM ({}) AS p GROUP BY key",
            parts.join(" UNION ALL ")
        )
    })
}

const USAGE_GROUP_BYS: [UsageGroupBy; 4] = [
    UsageGroupBy::Employee,
    UsageGroupBy::Model,
    UsageGroupBy::Day,
    UsageGroupBy::Provider,
];

/// The place of `group_by`'s statement in [`usage_statements`].
pub(crate) fn usage_statement_index(group_by: UsageGroupBy) -> usize {
    match group_by {
        UsageGroupBy::Employee => 0,
        UsageGroupBy::Model => 1,
        UsageGroupBy::Day => 2,
        UsageGroupBy::Provider => 3,
    }
}

pub type DynStore = Arc<dyn Store>;

/// Options for opening a store.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub url: String,
    pub max_connections: u32,
}

/// Opens the store the URL names. Does not migrate.
pub async fn connect(opts: &ConnectOptions) -> StoreResult<DynStore> {
    if opts.url.starts_with("postgres://") || opts.url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(opts).await?))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::connect(opts).await?))
    }
}

/// Compares applied migration versions with the ones this binary ships.
pub(crate) fn schema_status_from(
    backend: Backend,
    migrator: &sqlx::migrate::Migrator,
    mut applied: Vec<i64>,
) -> SchemaStatus {
    applied.sort_unstable();
    let known: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    let pending = known
        .iter()
        .copied()
        .filter(|v| !applied.contains(v))
        .collect();
    let unknown = applied
        .iter()
        .copied()
        .filter(|v| !known.contains(v))
        .collect();
    SchemaStatus {
        backend,
        applied,
        pending,
        unknown,
    }
}

/// Maps a unique-constraint violation to `Duplicate(what)`, anything else to `Database`.
pub(crate) fn map_unique(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(what),
        _ => StoreError::Database(err),
    }
}

/// The one order of usage groups on every backend (database collations differ): by key
/// bytes, the `None` group last.
pub(crate) fn sort_usage(groups: &mut [UsageGroup]) {
    groups.sort_by(|a, b| match (&a.key, &b.key) {
        (Some(x), Some(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// Trims the extra look-ahead row and derives the next cursor.
pub(crate) fn page<T: HasId>(items: &mut Vec<T>, limit: u32) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(HasId::id)
    } else {
        None
    };
    Page {
        items: std::mem::take(items),
        next_cursor,
    }
}

/// Rows that paginate by their time-ordered id.
pub(crate) trait HasId {
    fn id(&self) -> Uuid;
}

impl HasId for Employee {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl HasId for Tenant {
    fn id(&self) -> Uuid {
        self.id
    }
}

impl HasId for ApiKeyRecord {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// Adds one call to a group's sums, as the report's SQL counts it.
pub(crate) fn add_call(g: &mut UsageGroup, c: &AiCallRecord) {
    let status = c.status.as_str();
    g.absorb(&UsageGroup {
        key: None,
        requests: 1,
        successes: i64::from(status == "ok"),
        errors: i64::from(status == "error"),
        cache_hits: i64::from(status == "cache_hit"),
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cached_tokens: c.cached_tokens,
        cache_write_tokens: c.cache_write_tokens,
        reasoning_tokens: c.reasoning_tokens,
        cost_nanos: c.cost_nanos,
    });
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    use Rollup::{Day, Hour, Minute};

    fn days(a: &str, b: &str) -> UsageSpan {
        UsageSpan::Rollup(Day, t(a), t(b))
    }

    fn hours(a: &str, b: &str) -> UsageSpan {
        UsageSpan::Rollup(Hour, t(a), t(b))
    }

    fn minutes(a: &str, b: &str) -> UsageSpan {
        UsageSpan::Rollup(Minute, t(a), t(b))
    }

    fn calls(a: &str, b: &str) -> UsageSpan {
        UsageSpan::Calls(t(a), t(b))
    }

    #[test]
    fn partial_hours_come_from_minutes_and_partial_minutes_from_the_calls() {
        let now = t("2026-03-10T12:00:00Z");
        assert_eq!(
            usage_spans(t("2026-03-01T10:15:20Z"), t("2026-03-02T08:30:05Z"), now),
            vec![
                calls("2026-03-01T10:15:20Z", "2026-03-01T10:16:00Z"),
                minutes("2026-03-01T10:16:00Z", "2026-03-01T11:00:00Z"),
                hours("2026-03-01T11:00:00Z", "2026-03-02T08:00:00Z"),
                minutes("2026-03-02T08:00:00Z", "2026-03-02T08:30:00Z"),
                calls("2026-03-02T08:30:00Z", "2026-03-02T08:30:05Z"),
            ]
        );
        // Ends on a minute need no calls.
        assert_eq!(
            usage_spans(t("2026-03-01T10:15:00Z"), t("2026-03-02T08:30:00Z"), now),
            vec![
                minutes("2026-03-01T10:15:00Z", "2026-03-01T11:00:00Z"),
                hours("2026-03-01T11:00:00Z", "2026-03-02T08:00:00Z"),
                minutes("2026-03-02T08:00:00Z", "2026-03-02T08:30:00Z"),
            ]
        );
    }

    #[test]
    fn whole_days_need_nothing_finer_and_partial_days_take_hours() {
        let now = t("2026-03-10T12:00:00Z");
        assert_eq!(
            usage_spans(t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z"), now),
            vec![days("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z")]
        );
        assert_eq!(
            usage_spans(t("2026-03-01T05:00:00Z"), t("2026-03-03T07:00:00Z"), now),
            vec![
                hours("2026-03-01T05:00:00Z", "2026-03-02T00:00:00Z"),
                days("2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"),
                hours("2026-03-03T00:00:00Z", "2026-03-03T07:00:00Z"),
            ]
        );
    }

    #[test]
    fn the_default_month_reads_a_few_rows_of_each_rollup() {
        // `to` = now, `from` 30 days before, neither on a second.
        let now = t("2026-03-10T12:20:00.5Z");
        assert_eq!(
            usage_spans(t("2026-02-08T12:20:00.5Z"), now, now),
            vec![
                calls("2026-02-08T12:20:00.5Z", "2026-02-08T12:21:00Z"),
                minutes("2026-02-08T12:21:00Z", "2026-02-08T13:00:00Z"),
                hours("2026-02-08T13:00:00Z", "2026-02-09T00:00:00Z"),
                days("2026-02-09T00:00:00Z", "2026-03-11T00:00:00Z"),
            ]
        );
    }

    #[test]
    fn a_range_without_a_whole_hour_reads_minutes_and_calls() {
        let now = t("2026-03-10T12:00:00Z");
        assert_eq!(
            usage_spans(t("2026-03-01T10:15:00Z"), t("2026-03-01T10:45:30Z"), now),
            vec![
                minutes("2026-03-01T10:15:00Z", "2026-03-01T10:45:00Z"),
                calls("2026-03-01T10:45:00Z", "2026-03-01T10:45:30Z"),
            ]
        );
        // Across one hour boundary with no whole hour between: minutes across it.
        assert_eq!(
            usage_spans(t("2026-03-01T10:15:10Z"), t("2026-03-01T11:45:00Z"), now),
            vec![
                calls("2026-03-01T10:15:10Z", "2026-03-01T10:16:00Z"),
                minutes("2026-03-01T10:16:00Z", "2026-03-01T11:45:00Z"),
            ]
        );
        // Inside one minute, or across one minute boundary: the calls alone.
        let (a, b) = (t("2026-03-01T10:15:10Z"), t("2026-03-01T10:15:50Z"));
        assert_eq!(usage_spans(a, b, now), vec![UsageSpan::Calls(a, b)]);
        let (a, b) = (t("2026-03-01T10:15:10Z"), t("2026-03-01T10:16:50Z"));
        assert_eq!(usage_spans(a, b, now), vec![UsageSpan::Calls(a, b)]);
        assert!(usage_spans(b, a, now).is_empty());
        assert!(usage_spans(a, a, now).is_empty());
    }

    #[test]
    fn an_end_not_in_the_past_takes_its_day_or_hour_whole() {
        let now = t("2026-03-10T12:20:00Z");
        assert_eq!(
            usage_spans(t("2026-03-10T00:00:00Z"), t("2026-03-10T12:20:01Z"), now),
            vec![days("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z")]
        );
        assert_eq!(
            usage_spans(t("2026-03-10T03:00:00Z"), t("2026-03-10T12:20:01Z"), now),
            vec![hours("2026-03-10T03:00:00Z", "2026-03-10T13:00:00Z")]
        );
        // Inside the current hour: its minutes up to the current one, whole.
        assert_eq!(
            usage_spans(t("2026-03-10T12:05:30Z"), t("2026-03-10T12:20:01Z"), now),
            vec![
                calls("2026-03-10T12:05:30Z", "2026-03-10T12:06:00Z"),
                minutes("2026-03-10T12:06:00Z", "2026-03-10T12:21:00Z"),
            ]
        );
        // An end in the past keeps its partial hour exact.
        assert_eq!(
            usage_spans(t("2026-03-10T00:00:00Z"), t("2026-03-10T12:19:10Z"), now),
            vec![
                hours("2026-03-10T00:00:00Z", "2026-03-10T12:00:00Z"),
                minutes("2026-03-10T12:00:00Z", "2026-03-10T12:19:00Z"),
                calls("2026-03-10T12:19:00Z", "2026-03-10T12:19:10Z"),
            ]
        );
    }

    #[test]
    fn an_open_end_at_the_last_time_stays_in_year_9999() {
        let now = t("2026-03-10T12:20:00Z");
        let end = t("9999-12-31T23:59:59.999999Z");
        assert_eq!(LATEST_TIME, end);
        assert_eq!(
            usage_spans(t("2026-03-01T00:00:00Z"), end, now),
            vec![UsageSpan::Rollup(Day, t("2026-03-01T00:00:00Z"), end)]
        );
    }

    #[test]
    fn each_span_gets_its_own_slot_in_source_order() {
        let now = t("2026-03-10T12:20:00.5Z");
        let from = t("2026-02-08T12:20:00.5Z");
        let spans = usage_spans(from, t("2026-03-09T05:30:10Z"), now);
        assert_eq!(spans.len(), 7);
        let slots = usage_slots(&spans, from);
        for (i, (slot, span)) in slots.iter().zip(&spans).enumerate() {
            let (UsageSpan::Calls(a, b) | UsageSpan::Rollup(_, a, b)) = *span;
            assert_eq!(*slot, (a, b), "slot {i}");
            let source = match span {
                UsageSpan::Calls(..) => None,
                UsageSpan::Rollup(r, ..) => Some(*r),
            };
            assert_eq!(USAGE_SLOT_SOURCES[i], source, "slot {i}");
        }
        // Inside one day: hours in the middle, the day slot and the other hour slot empty.
        let from = t("2026-03-01T10:15:20Z");
        let spans = usage_spans(from, t("2026-03-01T20:30:05Z"), now);
        let slots = usage_slots(&spans, from);
        assert_eq!(
            slots,
            [
                (from, t("2026-03-01T10:16:00Z")),
                (t("2026-03-01T10:16:00Z"), t("2026-03-01T11:00:00Z")),
                (t("2026-03-01T11:00:00Z"), t("2026-03-01T20:00:00Z")),
                (from, from),
                (from, from),
                (t("2026-03-01T20:00:00Z"), t("2026-03-01T20:30:00Z")),
                (t("2026-03-01T20:30:00Z"), t("2026-03-01T20:30:05Z")),
            ]
        );
        // Inside one minute: the calls alone.
        let (a, b) = (t("2026-03-01T10:15:10Z"), t("2026-03-01T10:15:50Z"));
        let slots = usage_slots(&usage_spans(a, b, now), a);
        assert_eq!(slots[0], (a, b));
        assert!(slots[1..].iter().all(|(x, y)| x == y));
    }

    #[test]
    fn groups_sort_by_key_bytes_with_none_last() {
        let g = |key: Option<&str>, n: i64| UsageGroup {
            key: key.map(str::to_string),
            requests: n,
            ..UsageGroup::default()
        };
        let mut groups = vec![
            g(None, 1),
            g(Some("b"), 2),
            g(Some("B"), 3),
            g(Some("a"), 4),
        ];
        sort_usage(&mut groups);
        assert_eq!(
            groups,
            vec![
                g(Some("B"), 3),
                g(Some("a"), 4),
                g(Some("b"), 2),
                g(None, 1)
            ]
        );
    }

    #[test]
    fn usage_statements_name_each_slot_range_once_in_order() {
        let d = UsageDialect {
            calls_key: |_| "k".into(),
            rollup_key: |_, unit| unit.into(),
            call_counts: "1 AS requests, 0 AS successes, 0 AS errors, 0 AS cache_hits",
            sigil: '$',
            sum_cast: "",
        };
        for (g, sql) in USAGE_GROUP_BYS.iter().zip(usage_statements(&d)) {
            assert_eq!(USAGE_GROUP_BYS[usage_statement_index(*g)], *g);
            assert!(!sql.contains("$16"), "{sql}");
            for (i, source) in USAGE_SLOT_SOURCES.iter().enumerate() {
                let table = source.map_or("ai_calls", |r| r.table().0);
                let at = source.map_or("created_at", |r| r.table().1);
                let part = format!(
                    "FROM {table} WHERE tenant_id = $1 AND {at} >= ${} AND {at} < ${}",
                    2 + 2 * i,
                    3 + 2 * i
                );
                assert!(sql.contains(&part), "{part} in {sql}");
            }
        }
    }
}
