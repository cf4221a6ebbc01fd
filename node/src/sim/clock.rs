//! The simulation's clock: engine milliseconds that follow tokio's clock (paused in the
//! simulation, so they move only when every task waits), set for the current thread.

use std::cell::Cell;

use crate::Millis;

thread_local! {
    static START: Cell<Option<(Millis, tokio::time::Instant)>> = const { Cell::new(None) };
}

/// The simulated time, if this thread runs a simulation.
pub(crate) fn now_ms() -> Option<Millis> {
    START
        .with(Cell::get)
        .map(|(ms, at)| ms + at.elapsed().as_millis() as Millis)
}

/// Until dropped, `now_ms` on this thread is `start_ms` plus tokio's time since now.
pub(crate) struct Installed;

pub(crate) fn install(start_ms: Millis) -> Installed {
    START.with(|s| s.set(Some((start_ms, tokio::time::Instant::now()))));
    Installed
}

impl Drop for Installed {
    fn drop(&mut self) {
        START.with(|s| s.set(None));
    }
}
