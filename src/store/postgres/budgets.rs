//! [`BudgetStore`] on PostgreSQL. A reservation is one statement: it locks the budgets
//! that apply to the call in id order (so concurrent reservations never deadlock),
//! checks every one of them against the call's maximum cost, and only when all have
//! room adds the amount to each and inserts the holds. Replicas share the rows, so the
//! check holds across replicas.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::PgStore;
use crate::store::*;

macro_rules! cols {
    () => {
        "id, tenant_id, scope, subject_id, period, limit_nanos, spent_nanos, reserved_nanos, \
         window_start, created_at, updated_at"
    };
}

/// The window a budget row `b` is in at the time whose day and month starts are the
/// parameters `$d` / `$m` (written out in each statement: SQL text must be literal).
macro_rules! current {
    ($d:literal, $m:literal) => {
        concat!(
            "(CASE b.period WHEN 'day' THEN ",
            $d,
            "::timestamptz WHEN 'month' THEN ",
            $m,
            "::timestamptz ELSE b.window_start END)"
        )
    };
}

fn budget_row(r: &PgRow) -> StoreResult<Budget> {
    let scope: String = r.try_get("scope")?;
    let period: String = r.try_get("period")?;
    Ok(Budget {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        scope: BudgetScope::parse(&scope)
            .ok_or_else(|| StoreError::Corrupt(format!("budget scope {scope:?}")))?,
        subject_id: r.try_get("subject_id")?,
        period: BudgetPeriod::parse(&period)
            .ok_or_else(|| StoreError::Corrupt(format!("budget period {period:?}")))?,
        limit_nanos: r.try_get("limit_nanos")?,
        spent_nanos: r.try_get("spent_nanos")?,
        reserved_nanos: r.try_get("reserved_nanos")?,
        window_start: r.try_get("window_start")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Whether `e` is a deadlock or serialization failure, after which the statement may
/// simply run again (settlements and reclaims lock rows in id order, so this is a
/// safety net, not a path taken in normal operation).
fn retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40P01") | Some("40001")))
}

#[async_trait]
impl BudgetStore for PgStore {
    async fn create_budget(&self, tenant: Uuid, b: &NewBudget) -> StoreResult<Budget> {
        let window = b.period.window_start(b.now, b.now);
        let row = sqlx::query(concat!(
            "INSERT INTO budgets (id, tenant_id, scope, subject_id, period, limit_nanos, \
             spent_nanos, reserved_nanos, window_start, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7, $8, $8) RETURNING ",
            cols!(),
            ""
        ))
        .bind(b.id)
        .bind(tenant)
        .bind(b.scope.as_str())
        .bind(b.subject_id)
        .bind(b.period.as_str())
        .bind(b.limit_nanos)
        .bind(window)
        .bind(b.now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_unique(e, "budget"))?;
        budget_row(&row)
    }

    async fn get_budget(&self, tenant: Uuid, id: Uuid) -> StoreResult<Budget> {
        let row = sqlx::query(concat!(
            "SELECT ",
            cols!(),
            " FROM budgets WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
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
            " FROM budgets WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
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
            "UPDATE budgets SET limit_nanos = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 RETURNING ",
            cols!(),
            ""
        ))
        .bind(limit_nanos)
        .bind(now)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        budget_row(&row)
    }

    async fn delete_budget(&self, tenant: Uuid, id: Uuid) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM budgets WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn has_budgets(&self, tenant: Uuid) -> StoreResult<bool> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM budgets WHERE tenant_id = $1)")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<bool, _>(0)?)
    }

    async fn reserve_budget(&self, r: &HoldRequest) -> StoreResult<Reserved> {
        // `cand` locks the applicable budgets in id order and reads their newest
        // versions; `blocked` is the first without room; only when there is none do
        // `upd` and `ins` reserve on every one of them.
        let sql = concat!(
            "WITH cand AS ( \
                 SELECT b.id, b.spent_nanos, b.reserved_nanos, b.limit_nanos, b.window_start, \
                        ",
            current!("$5", "$6"),
            " AS cur \
                 FROM budgets b WHERE b.tenant_id = $1 AND (b.scope = 'tenant' \
                     OR (b.scope = 'key' AND b.subject_id = $2) \
                     OR (b.scope = 'employee' AND b.subject_id = $3)) \
                 ORDER BY b.id FOR UPDATE), \
             eff AS ( \
                 SELECT id, cur, reserved_nanos, limit_nanos, \
                        CASE WHEN window_start < cur THEN 0 ELSE spent_nanos END AS spent \
                 FROM cand), \
             blocked AS ( \
                 SELECT id FROM eff WHERE spent + reserved_nanos >= limit_nanos \
                     OR spent + reserved_nanos + $4 > limit_nanos ORDER BY id LIMIT 1), \
             upd AS ( \
                 UPDATE budgets b SET reserved_nanos = b.reserved_nanos + $4, \
                        spent_nanos = e.spent, window_start = e.cur \
                 FROM eff e WHERE b.id = e.id AND NOT EXISTS (SELECT 1 FROM blocked) \
                 RETURNING b.id), \
             ins AS ( \
                 INSERT INTO budget_holds (id, budget_id, amount_nanos, expires_at) \
                 SELECT $7, id, $4, $8 FROM upd RETURNING budget_id) \
             SELECT false AS blocked, budget_id AS id FROM ins \
             UNION ALL SELECT true, id FROM blocked",
        );
        let mut tries = 0;
        let rows = loop {
            let res = sqlx::query(sql)
                .bind(r.tenant)
                .bind(r.key)
                .bind(r.employee)
                .bind(r.amount_nanos)
                .bind(day_start(r.now))
                .bind(month_start(r.now))
                .bind(r.hold_id)
                .bind(r.expires_at)
                .fetch_all(&self.pool)
                .await;
            match res {
                Err(e) if retryable(&e) && tries < 5 => tries += 1,
                other => break other?,
            }
        };
        let mut held = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            if row.try_get::<bool, _>("blocked")? {
                return match self.get_budget(r.tenant, id).await {
                    Ok(b) => Ok(Reserved::Refused(b)),
                    // Deleted in between: nothing was reserved; the caller may try again.
                    Err(StoreError::NotFound) => Box::pin(self.reserve_budget(r)).await,
                    Err(e) => Err(e),
                };
            }
            held.push(id);
        }
        Ok(Reserved::Held(held))
    }

    async fn settle_budget(
        &self,
        hold_id: Uuid,
        budgets: &[Uuid],
        cost_nanos: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        if budgets.is_empty() {
            return Ok(());
        }
        let sql = concat!(
            "WITH h AS (DELETE FROM budget_holds WHERE id = $1 \
                        RETURNING budget_id, amount_nanos), \
             l AS (SELECT id FROM budgets WHERE id = ANY($2) ORDER BY id FOR UPDATE) \
             UPDATE budgets b SET \
                 spent_nanos = (CASE WHEN b.window_start < ",
            current!("$4", "$5"),
            " THEN 0 \
                                ELSE b.spent_nanos END) + $3, \
                 window_start = ",
            current!("$4", "$5"),
            ", \
                 reserved_nanos = GREATEST(b.reserved_nanos - COALESCE( \
                     (SELECT sum(h.amount_nanos) FROM h WHERE h.budget_id = b.id), 0), 0) \
             WHERE b.id IN (SELECT id FROM l)",
        );
        let mut tries = 0;
        loop {
            let res = sqlx::query(sql)
                .bind(hold_id)
                .bind(budgets)
                .bind(cost_nanos)
                .bind(day_start(now))
                .bind(month_start(now))
                .execute(&self.pool)
                .await;
            match res {
                Err(e) if retryable(&e) && tries < 5 => tries += 1,
                other => {
                    other?;
                    return Ok(());
                }
            }
        }
    }

    async fn reclaim_budget_holds(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let sql = "WITH h AS (DELETE FROM budget_holds WHERE expires_at <= $1 \
                              RETURNING budget_id, amount_nanos), \
                   s AS (SELECT budget_id, sum(amount_nanos) AS amount FROM h GROUP BY budget_id), \
                   l AS (SELECT id FROM budgets WHERE id IN (SELECT budget_id FROM s) \
                         ORDER BY id FOR UPDATE) \
                   UPDATE budgets b SET reserved_nanos = GREATEST(b.reserved_nanos - s.amount, 0) \
                   FROM s WHERE b.id = s.budget_id AND b.id IN (SELECT id FROM l)";
        let mut tries = 0;
        loop {
            match sqlx::query(sql).bind(now).execute(&self.pool).await {
                Err(e) if retryable(&e) && tries < 5 => tries += 1,
                other => return Ok(other?.rows_affected()),
            }
        }
    }

    async fn budget_gauges(&self, now: DateTime<Utc>) -> StoreResult<Vec<BudgetGauge>> {
        let rows = sqlx::query(concat!("SELECT ", cols!(), " FROM budgets"))
            .fetch_all(&self.pool)
            .await?;
        let budgets = rows
            .iter()
            .map(budget_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(gauges(&budgets, now))
    }
}
