//! What one `ordo serve` process does (`--role`): the API, the projections, or both.
//!
//! Several processes of each role may share one PostgreSQL (events and read models), or
//! one Redis or Redis Cluster for the events with PostgreSQL for the read models. The
//! embedded SQLite stores belong to one process, which therefore does both.

use std::fmt;

use anyhow::bail;

use crate::config::{StoreArgs, redact};

/// The role of an `ordo serve` process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The whole HTTP API and the projections.
    #[default]
    All,
    /// The whole HTTP API (commands and queries), no projection: queries and consistency
    /// tokens are answered from the read models the projector processes keep.
    Api,
    /// The projections, and only /health, /ready and /metrics.
    Projector,
}

impl Role {
    /// Whether this process runs the projections.
    pub fn runs_projections(self) -> bool {
        matches!(self, Role::All | Role::Projector)
    }

    /// Whether this process serves the API (commands, queries, event stream, admin,
    /// pages) beside the operations endpoints.
    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    /// Refuses a role other than `all` on an embedded store: the SQLite files are one
    /// process's (the read models are locked by it), so there is nothing to share.
    pub fn check_stores(self, stores: &StoreArgs) -> anyhow::Result<()> {
        if self == Role::All {
            return Ok(());
        }
        let events = stores.event_store_url();
        let reads = stores.read_store_url();
        let embedded: Vec<String> = [("event store", &events), ("read store", &reads)]
            .into_iter()
            .filter(|(_, url)| crate::sqlite_path(url).is_some())
            .map(|(store, url)| format!("the {store} {}", redact(url)))
            .collect();
        if embedded.is_empty() {
            return Ok(());
        }
        bail!(
            "--role {self} needs stores that several processes share, and {} {} embedded \
             (SQLite), which only one process may use: run a single `ordo serve` with \
             --role all (the default) on it, or put the events in PostgreSQL or Redis and \
             the read models in PostgreSQL (--event-store, --read-store) to run api and \
             projector processes apart",
            embedded.join(" and "),
            if embedded.len() > 1 { "are" } else { "is" }
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Projector => "projector",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(events: Option<&str>, reads: Option<&str>) -> StoreArgs {
        let mut args = StoreArgs::embedded("./data");
        args.event_store = events.map(str::to_string);
        args.read_store = reads.map(str::to_string);
        args
    }

    #[test]
    fn every_role_runs_on_shared_stores_and_only_all_on_embedded_ones() {
        let pg = Some("postgres://u:secret@h/db");
        let redis = Some("redis://h:6379");
        for role in [Role::All, Role::Api, Role::Projector] {
            assert!(role.check_stores(&stores(pg, pg)).is_ok(), "{role}");
            assert!(role.check_stores(&stores(redis, pg)).is_ok(), "{role}");
        }
        assert!(Role::All.check_stores(&stores(None, None)).is_ok());
        let refused = Role::Api
            .check_stores(&stores(None, None))
            .expect_err("embedded stores");
        let message = format!("{refused:#}");
        assert!(message.contains("--role api"), "{message}");
        assert!(
            message.contains("event store sqlite://./data/events.db and the read store"),
            "{message}"
        );
        assert!(message.contains("--role all"), "{message}");
        let refused = Role::Projector
            .check_stores(&stores(pg, None))
            .expect_err("embedded read store");
        let message = format!("{refused:#}");
        assert!(message.contains("the read store sqlite://"), "{message}");
    }

    #[test]
    fn only_all_does_both() {
        assert!(Role::All.runs_projections() && Role::All.serves_api());
        assert!(!Role::Api.runs_projections() && Role::Api.serves_api());
        assert!(Role::Projector.runs_projections() && !Role::Projector.serves_api());
    }
}
