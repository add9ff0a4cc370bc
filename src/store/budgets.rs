//! Spend limits: the rows of `budgets` and the holds that reserve a call's maximum cost
//! against them (ADR 0013).
//!
//! A budget belongs to a tenant and limits the spend of the whole tenant, of one API key
//! or of one employee over a UTC day, a UTC month, or for ever. Reserving is atomic
//! against every budget that applies to a call: either every one of them has room for
//! the call's maximum cost and each gets a hold, or none is touched and the first one
//! without room is returned. Settling replaces a call's holds by its real cost; a hold
//! that is never settled (its process died) expires and is reclaimed.

use async_trait::async_trait;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use uuid::Uuid;

use super::{HasId, Page, StoreResult};

/// Whose spend a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    Tenant,
    Key,
    Employee,
}

impl BudgetScope {
    pub const ALL: [BudgetScope; 3] = [Self::Tenant, Self::Key, Self::Employee];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Key => "key",
            Self::Employee => "employee",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Over which window a budget's spend is counted: a UTC day, a UTC month, or for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
    None,
}

impl BudgetPeriod {
    pub const ALL: [BudgetPeriod; 3] = [Self::Day, Self::Month, Self::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Start of the window holding `now`; `stored` (the budget's creation) for `none`.
    pub fn window_start(self, now: DateTime<Utc>, stored: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Day => day_start(now),
            Self::Month => month_start(now),
            Self::None => stored,
        }
    }

    /// When the window starting at `start` ends; `None` for a budget that never resets.
    pub fn window_end(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Day => Some(start + chrono::Duration::days(1)),
            Self::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()
            }
            Self::None => None,
        }
    }
}

/// 00:00 UTC of `now`'s day.
pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// 00:00 UTC of the first day of `now`'s month.
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// One budget as stored. `spent_nanos` counts the window starting at `window_start`,
/// which may be a past window: read it through [`Budget::spent_at`].
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scope: BudgetScope,
    /// The key or employee; `None` for a tenant budget.
    pub subject_id: Option<Uuid>,
    pub period: BudgetPeriod,
    pub limit_nanos: i64,
    pub spent_nanos: i64,
    pub reserved_nanos: i64,
    pub window_start: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Budget {
    /// The window holding `now`.
    pub fn current_window(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.period.window_start(now, self.window_start)
    }

    /// Spend settled in the window holding `now` (0 once the stored window has passed).
    pub fn spent_at(&self, now: DateTime<Utc>) -> i64 {
        if self.window_start < self.current_window(now) {
            0
        } else {
            self.spent_nanos
        }
    }

    /// When the window holding `now` ends and the spend starts again from 0.
    pub fn resets_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.period.window_end(self.current_window(now))
    }

    /// Whether a call reserving `amount` fits: nothing is left once spend and holds
    /// reach the limit (a zero budget refuses every call, even an unpriced one), and
    /// the call's maximum cost must fit in what is left.
    pub fn admits(&self, now: DateTime<Utc>, amount: i64) -> bool {
        let used = self.spent_at(now).saturating_add(self.reserved_nanos);
        used < self.limit_nanos && used.saturating_add(amount) <= self.limit_nanos
    }
}

impl HasId for Budget {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A budget to create.
#[derive(Clone, Debug)]
pub struct NewBudget {
    pub id: Uuid,
    pub scope: BudgetScope,
    pub subject_id: Option<Uuid>,
    pub period: BudgetPeriod,
    pub limit_nanos: i64,
    pub now: DateTime<Utc>,
}

/// A reservation of `amount_nanos` for one call, against every budget of `tenant` that
/// applies to it: the tenant's, `key`'s and `employee`'s.
#[derive(Clone, Debug)]
pub struct HoldRequest {
    /// The call's hold id (one hold row per budget shares it).
    pub hold_id: Uuid,
    pub tenant: Uuid,
    pub key: Option<Uuid>,
    pub employee: Option<Uuid>,
    pub amount_nanos: i64,
    pub now: DateTime<Utc>,
    /// When an unsettled hold may be reclaimed.
    pub expires_at: DateTime<Utc>,
}

/// What a reservation did.
#[derive(Clone, Debug, PartialEq)]
pub enum Reserved {
    /// Every applicable budget had room; these budgets hold the amount (empty: none
    /// applies).
    Held(Vec<Uuid>),
    /// This budget has no room; nothing was reserved anywhere.
    Refused(Budget),
}

/// Spend per scope over every tenant's budgets, for the gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetGauge {
    pub scope: BudgetScope,
    /// Spend in the current windows, summed.
    pub spent_nanos: i64,
    /// The highest (spent + reserved) / limit among the scope's budgets.
    pub max_ratio: f64,
    pub budgets: i64,
}

/// The gauges of `budgets` at `now`: one entry per scope, also for a scope without
/// budgets (so its series reads 0 rather than vanishing).
pub fn gauges(budgets: &[Budget], now: DateTime<Utc>) -> Vec<BudgetGauge> {
    BudgetScope::ALL
        .into_iter()
        .map(|scope| {
            let mine = budgets.iter().filter(|b| b.scope == scope);
            let mut g = BudgetGauge {
                scope,
                spent_nanos: 0,
                max_ratio: 0.0,
                budgets: 0,
            };
            for b in mine {
                let spent = b.spent_at(now);
                g.budgets += 1;
                g.spent_nanos = g.spent_nanos.saturating_add(spent);
                let used = spent.saturating_add(b.reserved_nanos) as f64;
                let ratio = if b.limit_nanos > 0 {
                    used / b.limit_nanos as f64
                } else {
                    // A zero budget is always exhausted.
                    1.0
                };
                g.max_ratio = g.max_ratio.max(ratio);
            }
            g
        })
        .collect()
}

#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Fails with `Duplicate("budget")` when the tenant already has a budget of this
    /// scope, subject and period.
    async fn create_budget(&self, tenant: Uuid, b: &NewBudget) -> StoreResult<Budget>;
    async fn get_budget(&self, tenant: Uuid, id: Uuid) -> StoreResult<Budget>;
    /// Newest first.
    async fn list_budgets(
        &self,
        tenant: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<Budget>>;
    /// Sets the limit; spend and holds are kept.
    async fn set_budget_limit(
        &self,
        tenant: Uuid,
        id: Uuid,
        limit_nanos: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<Budget>;
    async fn delete_budget(&self, tenant: Uuid, id: Uuid) -> StoreResult<()>;
    /// Whether the tenant has any budget (the cheap test before a reservation).
    async fn has_budgets(&self, tenant: Uuid) -> StoreResult<bool>;
    /// Reserves atomically against every applicable budget, or against none.
    async fn reserve_budget(&self, r: &HoldRequest) -> StoreResult<Reserved>;
    /// Ends hold `hold_id` on `budgets`: its amount leaves `reserved_nanos` (unless the
    /// hold was already reclaimed) and `cost_nanos` is added to the spend of the window
    /// holding `now`. A cost of 0 releases the hold.
    async fn settle_budget(
        &self,
        hold_id: Uuid,
        budgets: &[Uuid],
        cost_nanos: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Ends every hold that expired before `now` without charging it; returns how many
    /// budgets got reservations back.
    async fn reclaim_budget_holds(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Spend and fullest ratio per scope, over every tenant.
    async fn budget_gauges(&self, now: DateTime<Utc>) -> StoreResult<Vec<BudgetGauge>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_start_and_end_in_utc() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(
            BudgetPeriod::Day.window_start(now, now),
            at("2026-12-31T00:00:00Z")
        );
        assert_eq!(
            BudgetPeriod::Month.window_end(month_start(now)),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            BudgetPeriod::Day.window_end(day_start(now)),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(BudgetPeriod::None.window_end(now), None);
    }

    #[test]
    fn a_past_window_reads_as_nothing_spent_and_zero_admits_nothing() {
        let b = Budget {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            scope: BudgetScope::Tenant,
            subject_id: None,
            period: BudgetPeriod::Day,
            limit_nanos: 100,
            spent_nanos: 100,
            reserved_nanos: 0,
            window_start: at("2026-01-01T00:00:00Z"),
            created_at: at("2026-01-01T00:00:00Z"),
            updated_at: at("2026-01-01T00:00:00Z"),
        };
        assert!(!b.admits(at("2026-01-01T12:00:00Z"), 0));
        assert!(b.admits(at("2026-01-02T00:00:00Z"), 100));
        assert!(!b.admits(at("2026-01-02T00:00:00Z"), 101));
        let zero = Budget {
            limit_nanos: 0,
            spent_nanos: 0,
            ..b
        };
        assert!(!zero.admits(at("2026-01-01T12:00:00Z"), 0));
    }
}
