//! # ordo-testkit: what ordo's tests share
//!
//! Used only as a dev-dependency. Each helper lives here once:
//!
//! - [`eventually`]: a bounded wait for a condition, instead of a hand-written polling loop
//!   (the house rule: no sleeps as synchronisation, no timed assertions).
//! - [`free_port`] and [`wait_for_port`]: loopback ports for servers a test starts itself.
//! - [`PrivatePostgres`] and [`start_redis`] (`servers.rs`): private PostgreSQL and Redis
//!   servers a test may crash and restart, killed when their handle drops.
//! - [`recorded_fixture`]: events in their old stored shapes, from the evolution fixtures.
//! - [`error_chain`]: an error with its sources, for assertions on what a message says.
//!
//! Not to be confused with `ordo_es::testkit`, the given/when/then kit for aggregates.

mod fixtures;
mod servers;
mod wait;

pub use fixtures::recorded_fixture;
pub use servers::{KillOnDrop, PrivatePostgres, free_port, start_redis, wait_for_port};
pub use wait::eventually;

/// `error` and its sources, outermost first, joined by `": "`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("could not connect")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_names_every_cause_outermost_first() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&error), "could not connect: connection refused");
    }
}
