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

/// The resident memory of process `pid`, bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    quiz_node::metrics::resident_bytes(&pid.to_string())
}

/// User + system CPU time of process `pid`, seconds.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    quiz_node::metrics::cpu_seconds(&pid.to_string())
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
