//! Crash points for the chaos suite: places where a node can be made to abort on purpose, to
//! prove that a crash exactly there loses and double-counts nothing.
//!
//! - `answers_committed`: a batch of answers is in the answer log, and not one of them has
//!   been acknowledged yet.
//! - `quiz_claimed`: this node has claimed a quiz at a new epoch, and not loaded it yet.
//!
//! They exist only in builds with the `failpoints` feature (the chaos tool turns it on; a
//! node built on its own, `cargo build -p quiz-node`, has none), and can be armed only on a
//! node started with `QUIZ_FAILPOINTS_ADMIN=1`: then `POST /admin/failpoints/{name}` on its
//! admin port with a [`fail`] action as the body (`return` aborts at the next pass,
//! `2*off->return` at the third, `off` disarms).

/// Set to anything to let the admin port arm crash points (in builds that have them).
pub const ADMIN_ENV: &str = "QUIZ_FAILPOINTS_ADMIN";

/// Aborts the process here if the crash point `name` is armed.
#[cfg(feature = "failpoints")]
pub(crate) fn crash(name: &'static str) {
    fail::fail_point!(name, |_| {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort()
    });
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn crash(_name: &'static str) {}

/// Whether the admin port may arm crash points.
pub(crate) fn armable() -> bool {
    cfg!(feature = "failpoints") && std::env::var_os(ADMIN_ENV).is_some()
}

/// Arms (or with `off`, disarms) crash point `name`.
#[cfg(feature = "failpoints")]
pub(crate) fn arm(name: &str, actions: &str) -> Result<(), String> {
    if !["answers_committed", "quiz_claimed"].contains(&name) {
        return Err(format!("no crash point {name}"));
    }
    fail::cfg(name, actions)
}

#[cfg(not(feature = "failpoints"))]
pub(crate) fn arm(_name: &str, _actions: &str) -> Result<(), String> {
    Err("this build has no crash points".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_crash_points_can_be_armed() {
        assert!(arm("no_such_point", "return").is_err());
        if cfg!(feature = "failpoints") {
            assert_eq!(arm("quiz_claimed", "off"), Ok(()));
        } else {
            assert!(
                arm("quiz_claimed", "off").is_err(),
                "a build without crash points"
            );
        }
    }
}
