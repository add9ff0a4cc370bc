//! [`BudgetStore`] on SQLite. Reservations, settlements and reclaims run on the writer
//! thread: one job reads the budgets that apply, decides and writes, and no other write
//! can run in between, so a reservation is atomic against every applicable budget.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use sqlx::Row;
use uuid::Uuid;

use super::writer::engine;
use super::{SqliteStore, parse_id, parse_ts, ts};
use crate::store::*;

macro_rules! cols {
    () => {
        "id, tenant_id, scope, subject_id, period, limit_nanos, spent_nanos, reserved_nanos, \
         window_start, created_at, updated_at"
    };
}

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("budget {what} {v:?}"))
}

/// The budget of a row read through sqlx.
fn budget_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<Budget> {
    let scope: String = r.try_get("scope")?;
    let period: String = r.try_get("period")?;
    let subject: Option<String> = r.try_get("subject_id")?;
    Ok(Budget {
        id: parse_id(r.try_get("id")?)?,
        tenant_id: parse_id(r.try_get("tenant_id")?)?,
        scope: BudgetScope::parse(&scope).ok_or_else(|| corrupt("scope", &scope))?,
        subject_id: subject.as_deref().map(parse_id).transpose()?,
        period: BudgetPeriod::parse(&period).ok_or_else(|| corrupt("period", &period))?,
        limit_nanos: r.try_get("limit_nanos")?,
        spent_nanos: r.try_get("spent_nanos")?,
        reserved_nanos: r.try_get("reserved_nanos")?,
        window_start: parse_ts(r.try_get("window_start")?)?,
        created_at: parse_ts(r.try_get("created_at")?)?,
        updated_at: parse_ts(r.try_get("updated_at")?)?,
    })
}

/// The budget of a row read on the writer thread (columns in [`COLS`] order).
fn budget_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<[Option<String>; 11]> {
    let mut out: [Option<String>; 11] = Default::default();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => None,
            rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
            v => Some(v.as_str()?.to_string()),
        };
    }
    Ok(out)
}

fn budget_from_raw(v: [Option<String>; 11]) -> StoreResult<Budget> {
    let text = |i: usize| -> StoreResult<&str> {
        v[i].as_deref()
            .ok_or_else(|| corrupt("column", &i.to_string()))
    };
    let int = |i: usize| -> StoreResult<i64> {
        let s = text(i)?;
        s.parse().map_err(|_| corrupt("amount", s))
    };
    Ok(Budget {
        id: parse_id(text(0)?)?,
        tenant_id: parse_id(text(1)?)?,
        scope: BudgetScope::parse(text(2)?)
            .ok_or_else(|| corrupt("scope", &v[2].clone().unwrap_or_default()))?,
        subject_id: v[3].as_deref().map(parse_id).transpose()?,
        period: BudgetPeriod::parse(text(4)?)
            .ok_or_else(|| corrupt("period", &v[4].clone().unwrap_or_default()))?,
        limit_nanos: int(5)?,
        spent_nanos: int(6)?,
        reserved_nanos: int(7)?,
        window_start: parse_ts(text(8)?)?,
        created_at: parse_ts(text(9)?)?,
        updated_at: parse_ts(text(10)?)?,
    })
}

/// Moves `b`'s window to the one holding `now` (spend from 0 when it changed) and adds
/// `spend` and `reserve` (either may be negative for `reserve`).
fn bump(
    conn: &rusqlite::Connection,
    b: &Budget,
    now: DateTime<Utc>,
    spend: i64,
    reserve: i64,
) -> StoreResult<()> {
    let window = b.current_window(now);
    conn.prepare_cached(
        "UPDATE budgets SET spent_nanos = ?1, window_start = ?2, \
         reserved_nanos = MAX(reserved_nanos + ?3, 0) WHERE id = ?4",
    )
    .and_then(|mut st| {
        st.execute(rusqlite::params![
            b.spent_at(now).saturating_add(spend),
            ts(&window),
            reserve,
            b.id.to_string()
        ])
    })
    .map_err(engine)?;
    Ok(())
}

fn read_budget(conn: &rusqlite::Connection, id: &str) -> StoreResult<Option<Budget>> {
    let raw = conn
        .prepare_cached(concat!("SELECT ", cols!(), " FROM budgets WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], budget_raw).optional())
        .map_err(engine)?;
    raw.map(budget_from_raw).transpose()
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn create_budget(&self, tenant: Uuid, b: &NewBudget) -> StoreResult<Budget> {
        let window = b.period.window_start(b.now, b.now);
        let row = sqlx::query(concat!(
            "INSERT INTO budgets (id, tenant_id, scope, subject_id, period, limit_nanos, \
             spent_nanos, reserved_nanos, window_start, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?) RETURNING ",
            cols!(),
            ""
        ))
        .bind(b.id.to_string())
        .bind(tenant.to_string())
        .bind(b.scope.as_str())
        .bind(b.subject_id.map(|s| s.to_string()))
        .bind(b.period.as_str())
        .bind(b.limit_nanos)
        .bind(ts(&window))
        .bind(ts(&b.now))
        .bind(ts(&b.now))
        .fetch_one(&mut *self.w().await?)
        .await
        .map_err(|e| map_unique(e, "budget"))?;
        budget_row(&row)
    }

    async fn get_budget(&self, tenant: Uuid, id: Uuid) -> StoreResult<Budget> {
        let row = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM budgets WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        budget_row(&row)
    }

    async fn list_budgets(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Budget>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM budgets WHERE tenant_id = ? AND (? IS NULL OR id < ?) \
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut items = rows
            .iter()
            .map(budget_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page(&mut items, limit))
    }

    async fn set_budget_limit(
        &self,
        tenant: Uuid,
        id: Uuid,
        limit_nanos: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Budget> {
        let row = sqlx::query(concat!(
            "UPDATE budgets SET limit_nanos = ?, updated_at = ? \
             WHERE tenant_id = ? AND id = ? RETURNING ",
            cols!(),
            ""
        ))
        .bind(limit_nanos)
        .bind(ts(&now))
        .bind(tenant.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *self.w().await?)
        .await?
        .ok_or(StoreError::NotFound)?;
        budget_row(&row)
    }

    async fn delete_budget(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM budgets WHERE tenant_id = ? AND id = ?")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut *self.w().await?)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn has_budgets(&self, tenant: Uuid) -> StoreResult<bool> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM budgets WHERE tenant_id = ?)")
            .bind(tenant.to_string())
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>(0)? != 0)
    }

    async fn reserve_budget(&self, r: &HoldRequest) -> StoreResult<Reserved> {
        let r = r.clone();
        self.hot
            .run(move |conn| {
                let raws = conn
                    .prepare_cached(concat!(
                        "SELECT ",
                        cols!(),
                        " FROM budgets WHERE tenant_id = ?1 AND \
                         (scope = 'tenant' OR (scope = 'key' AND subject_id = ?2) \
                          OR (scope = 'employee' AND subject_id = ?3)) ORDER BY id"
                    ))
                    .and_then(|mut st| {
                        st.query_map(
                            rusqlite::params![
                                r.tenant.to_string(),
                                r.key.map(|k| k.to_string()),
                                r.employee.map(|e| e.to_string())
                            ],
                            budget_raw,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(engine)?;
                let budgets = raws
                    .into_iter()
                    .map(budget_from_raw)
                    .collect::<StoreResult<Vec<_>>>()?;
                if let Some(full) = budgets.iter().find(|b| !b.admits(r.now, r.amount_nanos)) {
                    return Ok(Reserved::Refused(full.clone()));
                }
                let mut held = Vec::with_capacity(budgets.len());
                for b in &budgets {
                    bump(conn, b, r.now, 0, r.amount_nanos)?;
                    conn.prepare_cached(
                        "INSERT INTO budget_holds (id, budget_id, amount_nanos, expires_at) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut st| {
                        st.execute(rusqlite::params![
                            r.hold_id.to_string(),
                            b.id.to_string(),
                            r.amount_nanos,
                            ts(&r.expires_at)
                        ])
                    })
                    .map_err(engine)?;
                    held.push(b.id);
                }
                Ok(Reserved::Held(held))
            })
            .await
    }

    async fn settle_budget(
        &self,
        hold_id: Uuid,
        budgets: &[Uuid],
        cost_nanos: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let budgets = budgets.to_vec();
        self.hot
            .run(move |conn| {
                for id in &budgets {
                    let id = id.to_string();
                    let held: Option<i64> = conn
                        .prepare_cached(
                            "DELETE FROM budget_holds WHERE id = ?1 AND budget_id = ?2 \
                             RETURNING amount_nanos",
                        )
                        .and_then(|mut st| {
                            st.query_row([hold_id.to_string(), id.clone()], |r| r.get(0))
                                .optional()
                        })
                        .map_err(engine)?;
                    if let Some(b) = read_budget(conn, &id)? {
                        bump(conn, &b, now, cost_nanos, -held.unwrap_or(0))?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn reclaim_budget_holds(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.hot
            .run(move |conn| {
                let expired: Vec<(String, i64)> = conn
                    .prepare_cached(
                        "DELETE FROM budget_holds WHERE expires_at <= ?1 \
                         RETURNING budget_id, amount_nanos",
                    )
                    .and_then(|mut st| {
                        st.query_map([ts(&now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(engine)?;
                for (budget, amount) in &expired {
                    conn.prepare_cached(
                        "UPDATE budgets SET reserved_nanos = MAX(reserved_nanos - ?1, 0) \
                         WHERE id = ?2",
                    )
                    .and_then(|mut st| st.execute(rusqlite::params![amount, budget]))
                    .map_err(engine)?;
                }
                let budgets: std::collections::HashSet<&String> =
                    expired.iter().map(|(b, _)| b).collect();
                Ok(budgets.len() as u64)
            })
            .await
    }

    async fn budget_gauges(&self, now: DateTime<Utc>) -> StoreResult<Vec<BudgetGauge>> {
        let rows = sqlx::query(concat!("SELECT ", cols!(), " FROM budgets"))
            .fetch_all(self.pool())
            .await?;
        let budgets = rows
            .iter()
            .map(budget_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(gauges(&budgets, now))
    }
}
