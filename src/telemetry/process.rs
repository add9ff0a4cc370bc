//! Process and database-pool gauges, sampled periodically by `App::run`.
//!
//! Read from `/proc/self` (Linux); on other systems the process gauges are simply not
//! set. Values are at most one sampling interval old.

use super::metrics as m;
use crate::store::PoolStats;

/// Resident set size in bytes, from `VmRSS` of `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open file descriptors: the entries of `/proc/self/fd`.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// cgroup v2, then v1: the memory limit of the container the process runs in.
const CGROUP_MEMORY_LIMIT_FILES: &[&str] = &[
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
];

/// cgroup v1 reports "no limit" as a huge number (close to `i64::MAX`, rounded down to a
/// page); anything at or above this is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The cgroup memory limit in bytes; `None` when there is no cgroup file or no limit.
pub fn memory_limit_bytes() -> Option<u64> {
    CGROUP_MEMORY_LIMIT_FILES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| parse_memory_limit(&text))
}

/// Parses `memory.max` / `memory.limit_in_bytes`: `max` (v2) or the v1 sentinel mean no
/// limit.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v > 0 && v < V1_UNLIMITED).then_some(v)
}

/// Sets the process gauges and the gauges of each given pool.
pub fn sample(pools: &[PoolStats]) {
    if let Some(limit) = memory_limit_bytes() {
        metrics::gauge!(m::MEMORY_LIMIT_BYTES).set(limit as f64);
    }
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!(m::PROCESS_RESIDENT_MEMORY_BYTES).set(rss as f64);
    }
    if let Some(fds) = open_fds() {
        metrics::gauge!(m::PROCESS_OPEN_FDS).set(fds as f64);
    }
    for p in pools {
        metrics::gauge!(m::DB_POOL_CONNECTIONS, "pool" => p.pool, "state" => "idle")
            .set(f64::from(p.idle));
        metrics::gauge!(m::DB_POOL_CONNECTIONS, "pool" => p.pool, "state" => "in_use")
            .set(f64::from(p.size.saturating_sub(p.idle)));
        metrics::gauge!(m::DB_POOL_MAX_CONNECTIONS, "pool" => p.pool).set(f64::from(p.max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_parse_and_unlimited_is_absent() {
        assert_eq!(parse_memory_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit(""), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(resident_memory_bytes().unwrap() > 1024 * 1024);
        assert!(open_fds().unwrap() >= 3);
    }
}
