//! Capacity benches: how many phones, quizzes and answers per second a cluster holds on this
//! machine, measured from outside by real sockets, with the floor the machine allows measured
//! in the same invocation.
//!
//! - [`connections`]: idle joined phones over every edge; node memory and CPU per phone.
//! - [`big_quiz`]: one quiz, N phones answering at R per second; ack and leaderboard
//!   latencies, fan-out, bytes, errors and closes.
//! - [`join_storm`]: N phones into one quiz as fast as they can.
//! - [`failover`]: the owner of a big quiz SIGKILLed mid-question; time to the first ack and
//!   until every phone is acked again; every ack in the log once.
//!
//! The shape of a run: [`cluster`] starts the cluster (or attaches to one), [`fleet`] starts
//! the load processes ([`phones`] is their code, [`wire`] what they say), the scenario drives
//! the quiz through a host connection, [`floor`] measures the same work done the simplest
//! way, and [`figures`] and [`report`] turn it all into the Markdown report and its plots.

pub mod big_quiz;
pub mod cluster;
pub mod connections;
pub mod failover;
pub mod figures;
pub mod fleet;
pub mod floor;
pub mod floor_server;
pub mod join_storm;
pub mod phones;
pub mod plot;
pub mod report;
mod setup;
pub mod wire;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex held briefly; a poisoned one still holds usable data here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The resident memory of process `pid`, bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// User + system CPU time of process `pid`, seconds (`/proc/PID/stat`).
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let pid = std::process::id();
        assert!(rss_of(pid).unwrap() > 1024 * 1024);
        assert!(cpu_seconds_of(pid).unwrap() >= 0.0);
        assert!(rss_of(u32::MAX).is_none());
    }
}
