//! Facts about the machine a report was measured on, and CPU use over a window: this
//! process's (router, node and load generator together) and the whole machine's (which also
//! holds PostgreSQL, the Redis servers and whatever else runs there). Linux `/proc` only;
//! elsewhere the figures are left out rather than guessed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the report says about the machine.
#[derive(Clone, Debug)]
pub struct MachineFacts {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub memory_gib: Option<f64>,
    pub kernel: Option<String>,
    /// `/proc/loadavg`'s three load averages when the bench started.
    pub load_average: Option<String>,
    /// UTC, ISO 8601, when the bench started.
    pub started_utc: String,
}

impl MachineFacts {
    pub fn collect() -> MachineFacts {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        MachineFacts {
            cpus: cpus(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned()),
            memory_gib: read("/proc/meminfo").and_then(|m| {
                let kib: f64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(kib / (1024.0 * 1024.0))
            }),
            kernel: read("/proc/sys/kernel/osrelease").map(|k| k.trim().to_owned()),
            load_average: read("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
            started_utc: utc_now(),
        }
    }
}

/// CPU counters at one instant; two of them give the use in between.
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    /// This process's user + system time, seconds (threads that have exited included).
    process_s: Option<f64>,
    /// The machine's busy and total jiffies (all CPUs).
    machine: Option<(u64, u64)>,
}

/// CPU use over a window, in percent of the whole machine (all CPUs = 100 %).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuUse {
    pub process_pct: Option<f64>,
    pub machine_pct: Option<f64>,
}

impl CpuSnapshot {
    pub fn now() -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            process_s: process_cpu_s(),
            machine: machine_jiffies(),
        }
    }

    /// CPU use from `earlier` to this snapshot.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        let process_pct = match (self.process_s, earlier.process_s) {
            (Some(now), Some(then)) if wall > 0.0 => {
                Some(100.0 * (now - then) / (wall * cpus() as f64))
            }
            _ => None,
        };
        let machine_pct = match (self.machine, earlier.machine) {
            (Some((busy, total)), Some((busy0, total0))) if total > total0 => {
                Some(100.0 * busy.saturating_sub(busy0) as f64 / (total - total0) as f64)
            }
            _ => None,
        };
        CpuUse {
            process_pct,
            machine_pct,
        }
    }
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    read("/proc/self/limits")?
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `git describe --always --dirty` of the current folder's repository, if git is there.
pub fn source_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// utime + stime of this process from `/proc/self/stat`, in seconds.
fn process_cpu_s() -> Option<f64> {
    let stat = read("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// `USER_HZ`, the unit of `/proc` CPU times: 100 on Linux in practice, asked of `getconf`
/// in case this machine differs.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// (busy, total) jiffies over all CPUs from the first line of `/proc/stat`; idle and iowait
/// count as not busy.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = read("/proc/stat")?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user].
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Unix seconds as an ISO 8601 UTC time (days to a civil date: H. Hinnant's algorithm).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn reads_cpu_counters_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let before = CpuSnapshot::now();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = CpuSnapshot::now().since(&before);
        assert!(used.process_pct.is_some_and(|p| p >= 0.0));
        assert!(used.machine_pct.is_some_and(|p| (0.0..=100.0).contains(&p)));
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
