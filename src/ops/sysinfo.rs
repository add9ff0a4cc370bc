//! Host resource readings for the health checker, straight from `/proc` and `statvfs`.
//!
//! Inside a container `/proc/stat`, `/proc/meminfo` and `/proc/loadavg` describe the
//! host (or the VM), not the container's cgroup limits; the operator runbook says so.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// Busy share of all CPUs over `window`, in percent (two samples of `/proc/stat`).
pub async fn cpu_percent(window: Duration) -> anyhow::Result<f64> {
    let (idle0, total0) = cpu_times()?;
    tokio::time::sleep(window).await;
    let (idle1, total1) = cpu_times()?;
    let total = total1.saturating_sub(total0);
    if total == 0 {
        return Ok(0.0);
    }
    let idle = idle1.saturating_sub(idle0);
    Ok(100.0 * (total.saturating_sub(idle)) as f64 / total as f64)
}

/// `(idle + iowait, total)` jiffies from the aggregate `cpu` line of `/proc/stat`.
fn cpu_times() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_cpu_line(&text).context("no cpu line in /proc/stat")
}

fn parse_cpu_line(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    // already counted in user, so only the first eight fields are summed.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((idle, total))
}

/// Memory as `(total_bytes, available_bytes)` from `/proc/meminfo`.
pub fn memory() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    parse_meminfo(&text).context("MemTotal/MemAvailable missing from /proc/meminfo")
}

fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> anyhow::Result<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => anyhow::bail!("unexpected /proc/loadavg: {text:?}"),
    }
}

/// Filesystem usage of the file system holding `path`.
#[derive(Clone, Copy, Debug)]
pub struct DiskUsage {
    pub total_bytes: u64,
    /// Available to unprivileged users (what `df` shows as "Avail").
    pub free_bytes: u64,
    /// Used share as `df` computes it: used / (used + available), in percent.
    pub used_percent: f64,
}

pub fn disk_usage(path: &Path) -> anyhow::Result<DiskUsage> {
    let s =
        nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    let frsize = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    let bfree = s.blocks_free() as u64;
    let bavail = s.blocks_available() as u64;
    let used = blocks.saturating_sub(bfree);
    let denom = used + bavail;
    let used_percent = if denom == 0 {
        0.0
    } else {
        100.0 * used as f64 / denom as f64
    };
    Ok(DiskUsage {
        total_bytes: blocks * frsize,
        free_bytes: bavail * frsize,
        used_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_and_meminfo() {
        let stat = "cpu  100 5 50 800 40 0 5 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_cpu_line(stat), Some((840, 1000)));
        let mem = "MemTotal:       16000 kB\nMemFree:  100 kB\nMemAvailable:   4000 kB\n";
        assert_eq!(parse_meminfo(mem), Some((16000 * 1024, 4000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn reads_this_host() {
        let (total, avail) = memory().unwrap();
        assert!(total > 0 && avail <= total);
        assert!(load_average().unwrap()[0] >= 0.0);
        let d = disk_usage(Path::new("/")).unwrap();
        assert!(d.total_bytes > 0 && d.free_bytes <= d.total_bytes);
        assert!((0.0..=100.0).contains(&d.used_percent));
    }
}
