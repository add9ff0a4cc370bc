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

/// Sets the process gauges and, when given, the pool gauges.
pub fn sample(pool: Option<PoolStats>) {
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!(m::PROCESS_RESIDENT_MEMORY_BYTES).set(rss as f64);
    }
    if let Some(fds) = open_fds() {
        metrics::gauge!(m::PROCESS_OPEN_FDS).set(fds as f64);
    }
    if let Some(p) = pool {
        metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(p.idle));
        metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "in_use")
            .set(f64::from(p.size.saturating_sub(p.idle)));
        metrics::gauge!(m::DB_POOL_MAX_CONNECTIONS).set(f64::from(p.max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(resident_memory_bytes().unwrap() > 1024 * 1024);
        assert!(open_fds().unwrap() >= 3);
    }
}
