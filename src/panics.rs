//! Caught panics: the message of a panic payload, and the test fault injection that raises one
//! on purpose (`RESTORECTL_TEST_PANIC`).
//!
//! A panic is a bug. Two places catch them so a bug cannot leave a daemon that looks healthy
//! while part of it is dead (docs/daemon.md "Failures"): the daemon's task supervisor
//! (`daemon::tasks`, a panicking task stops the daemon) and the run engine (`exec::engine`, a
//! panic while executing a run fails that run). Both are tested against the real binary, which
//! needs a way to make a panic happen: [`inject`].
//!
//! `RESTORECTL_TEST_PANIC=task:NAME` panics the daemon task `NAME` (`scheduler`, `reconcile`,
//! `requests`, `executor`, `http`, `metrics`, `heartbeat`, `watchdog`, `reload`, `watcher`) when
//! it starts; `RESTORECTL_TEST_PANIC=run:JOB` panics every execution of a run of job `JOB` once
//! its steps exist. It is read once per process and meant for tests only: never set it in
//! production.

use std::any::Any;
use std::sync::OnceLock;

/// The environment variable of the test fault injection.
pub const TEST_PANIC_ENV: &str = "RESTORECTL_TEST_PANIC";

/// The text of a panic payload (`panic!` with a literal or a formatted message), else a
/// placeholder.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Panics when `RESTORECTL_TEST_PANIC` is `KIND:NAME` (test fault injection; see the module doc).
pub fn inject(kind: &str, name: &str) {
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var(TEST_PANIC_ENV).ok());
    if let Some(target) = target
        && target.split_once(':') == Some((kind, name))
    {
        panic!("{TEST_PANIC_ENV}={target}: injected panic (test fault injection)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_both_payload_kinds() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(message(&*literal), "plain");
        let formatted = std::panic::catch_unwind(|| panic!("formatted {}", 7)).unwrap_err();
        assert_eq!(message(&*formatted), "formatted 7");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(message(&*other), "(a panic without a message)");
    }
}
