//! `digital-employee usage`: the AI usage report of `GET /v1/usage`, read straight from
//! the database (the same store query), as a table, CSV or JSON.

use std::fmt::Write as _;

use anyhow::Context;

use crate::api::usage::{GroupBy, UsageReport, UsageSums, window};
use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start, included: RFC 3339 or YYYY-MM-DD (00:00 UTC). Default: 30 days before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// End, excluded: RFC 3339, or YYYY-MM-DD meaning the end of that UTC day. Default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// employee, model, day (UTC) or provider.
    #[arg(long, value_enum, default_value = "day")]
    pub group_by: GroupByArg,
    /// Tenant id or name.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// `--group-by` values (clap's mirror of the API's `group_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupByArg {
    Employee,
    Model,
    Day,
    Provider,
}

impl From<GroupByArg> for GroupBy {
    fn from(g: GroupByArg) -> Self {
        match g {
            GroupByArg::Employee => GroupBy::Employee,
            GroupByArg::Model => GroupBy::Model,
            GroupByArg::Day => GroupBy::Day,
            GroupByArg::Provider => GroupBy::Provider,
        }
    }
}

pub async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let (from, to) = window(args.from.as_deref(), args.to.as_deref(), chrono::Utc::now())
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let group_by = GroupBy::from(args.group_by);
    let store = super::keys::open_store(&config).await?;
    let result = async {
        let tenant = super::keys::resolve_tenant(&store, &args.tenant).await?;
        store
            .usage_report(tenant, from, to, group_by.into())
            .await
            .context("reading usage")
    }
    .await;
    store.close().await;
    let report = UsageReport::new(from, to, group_by, result?);
    let out = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Csv => csv(&report),
        Format::Table => table(&report),
    };
    print!("{out}");
    Ok(())
}

/// Name of the key column for a grouping.
fn key_name(g: GroupBy) -> &'static str {
    match g {
        GroupBy::Employee => "employee_id",
        GroupBy::Model => "model",
        GroupBy::Day => "day",
        GroupBy::Provider => "provider",
    }
}

const COLUMNS: [&str; 12] = [
    "requests",
    "successes",
    "errors",
    "cache_hits",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_nanos",
];

fn cells(s: &UsageSums) -> [String; 12] {
    [
        s.requests.to_string(),
        s.successes.to_string(),
        s.errors.to_string(),
        s.cache_hits.to_string(),
        format!("{:.4}", s.error_rate),
        s.input_tokens.to_string(),
        s.output_tokens.to_string(),
        s.cached_tokens.to_string(),
        s.cache_write_tokens.to_string(),
        s.reasoning_tokens.to_string(),
        crate::ai::pricing::usd_text(s.cost_nanos),
        s.cost_nanos.to_string(),
    ]
}

/// RFC 4180 field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A header row, then one row per group; the key of calls without an employee is empty.
/// No totals row, so the file sums cleanly in a spreadsheet.
pub fn csv(r: &UsageReport) -> String {
    let mut out = String::new();
    out.push_str(key_name(r.group_by));
    for c in COLUMNS {
        out.push(',');
        out.push_str(c);
    }
    out.push('\n');
    for g in &r.groups {
        out.push_str(&csv_field(g.key.as_deref().unwrap_or("")));
        for c in cells(&g.sums) {
            out.push(',');
            out.push_str(&c);
        }
        out.push('\n');
    }
    out
}

/// Aligned columns with a totals line; the key of calls without an employee is `(none)`.
pub fn table(r: &UsageReport) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![key_name(r.group_by).to_string()];
    header.extend(COLUMNS.iter().map(|c| c.to_string()));
    rows.push(header);
    for g in &r.groups {
        let mut row = vec![g.key.clone().unwrap_or_else(|| "(none)".into())];
        row.extend(cells(&g.sums));
        rows.push(row);
    }
    let mut total = vec!["TOTAL".to_string()];
    total.extend(cells(&r.totals));
    rows.push(total);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "AI usage {} .. {} (to excluded), by {}\n",
        r.from.to_rfc3339(),
        r.to.to_rfc3339(),
        key_name(r.group_by)
    );
    let last = rows.len() - 1;
    for (n, row) in rows.iter().enumerate() {
        if n == last {
            let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(out, "{}", "-".repeat(rule));
        }
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UsageGroup;

    fn report() -> UsageReport {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        UsageReport::new(
            at("2025-03-01T00:00:00Z"),
            at("2025-03-02T00:00:00Z"),
            GroupBy::Model,
            vec![
                UsageGroup {
                    key: Some("gpt,\"4\"".into()),
                    requests: 2,
                    successes: 1,
                    errors: 1,
                    input_tokens: 5,
                    cost_nanos: 1_000_000_001,
                    ..Default::default()
                },
                UsageGroup {
                    key: None,
                    requests: 1,
                    successes: 1,
                    cost_nanos: 7,
                    ..Default::default()
                },
            ],
        )
    }

    #[test]
    fn csv_has_a_header_and_quotes_fields() {
        let text = csv(&report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "model,requests,successes,errors,cache_hits,error_rate,input_tokens,output_tokens,\
             cached_tokens,cache_write_tokens,reasoning_tokens,cost_usd,cost_nanos"
        );
        assert_eq!(
            lines[1],
            "\"gpt,\"\"4\"\"\",2,1,1,0,0.5000,5,0,0,0,0,1.000000001,1000000001"
        );
        assert_eq!(lines[2], ",1,1,0,0,0.0000,0,0,0,0,0,0.000000007,7");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn table_has_totals() {
        let text = table(&report());
        assert!(text.contains("(none)"), "{text}");
        let total = text.lines().last().unwrap();
        assert!(total.starts_with("TOTAL"), "{text}");
        assert!(total.contains("1.000000008"), "{text}");
        assert!(total.ends_with("1000000008"), "{text}");
    }
}
