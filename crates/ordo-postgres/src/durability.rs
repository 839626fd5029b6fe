//! The start-up durability check: does a commit the event store acknowledges survive a
//! crash of the PostgreSQL server?
//!
//! An append is acknowledged once its transaction commits. With `synchronous_commit = off`
//! the commit returns before its WAL record is flushed, so a server crash can lose the
//! last acknowledged appends (up to three `wal_writer_delay`s of them); with `fsync = off`
//! a crash can corrupt the cluster itself. Both can be set per database, per role or per
//! connection (`options=-c synchronous_commit=off` in the URL), so the check asks a
//! connection of the store's own pool, which has the settings its appends run under.
//! [`PgEventStore::connect`](crate::PgEventStore::connect) logs each finding with
//! `tracing::warn!`, as the Redis store does for its persistence settings.

use deadpool_postgres::Pool;

/// The findings for the settings a connection of `pool` runs with: one sentence each,
/// naming the setting to change. A failed check is a finding too.
pub(crate) async fn warnings(pool: &Pool) -> Vec<String> {
    let settings = async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        let mut values = Vec::new();
        for name in ["synchronous_commit", "fsync"] {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map_err(|e| e.to_string())?;
            values.push(row.try_get::<_, String>(0).map_err(|e| e.to_string())?);
        }
        Ok::<_, String>(values)
    };
    match settings.await {
        Ok(values) => assess(&values[0], &values[1]),
        Err(error) => vec![format!(
            "PostgreSQL: could not check the durability settings ({error}); make sure \
             synchronous_commit is not off and fsync is on, or acknowledged events may be lost"
        )],
    }
}

/// What the settings risk. `local`, `remote_write`, `remote_apply` and `on` all flush
/// the commit on this server before it returns; only `off` does not.
pub(crate) fn assess(synchronous_commit: &str, fsync: &str) -> Vec<String> {
    let mut findings = Vec::new();
    if synchronous_commit.eq_ignore_ascii_case("off") {
        findings.push(
            "PostgreSQL runs with synchronous_commit = off: a server crash can lose the last \
             appends ordo has already acknowledged; set it to on (for the database, the role or \
             in the URL's options) for the event store"
                .to_string(),
        );
    }
    if fsync.eq_ignore_ascii_case("off") {
        findings.push(
            "PostgreSQL runs with fsync = off: a crash of the machine can lose acknowledged \
             appends and corrupt the database; turn fsync on"
                .to_string(),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ConnectOptions;
    use crate::testdb;

    #[test]
    fn only_settings_that_do_not_flush_the_commit_are_findings() {
        for durable in ["on", "local", "remote_write", "remote_apply", "ON"] {
            assert!(assess(durable, "on").is_empty(), "{durable}");
        }
        let off = assess("off", "on");
        assert_eq!(off.len(), 1);
        assert!(off[0].contains("synchronous_commit = off"), "{off:?}");
        let no_fsync = assess("on", "off");
        assert_eq!(no_fsync.len(), 1);
        assert!(no_fsync[0].contains("fsync = off"), "{no_fsync:?}");
        assert_eq!(assess("off", "off").len(), 2);
    }

    fn pool_for(url: &str) -> Pool {
        ConnectOptions::parse(url)
            .expect("test URL")
            .pool()
            .expect("pool")
    }

    #[tokio::test]
    async fn the_check_sees_the_settings_of_the_stores_own_connections() {
        let url = testdb::server_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        // The setting as a connection option, for ordo's connections alone: the check
        // must see it either way, whatever the server's own configuration says. (fsync
        // cannot be set per connection; the server's value is not asserted here.)
        let with =
            |value: &str| format!("{url}{separator}options=-c%20synchronous_commit%3D{value}");
        let durable = warnings(&pool_for(&with("on"))).await;
        assert!(
            !durable.iter().any(|f| f.contains("synchronous_commit")),
            "{durable:?}"
        );
        let findings = warnings(&pool_for(&with("off"))).await;
        assert!(
            findings
                .iter()
                .any(|f| f.contains("synchronous_commit = off")),
            "{findings:?}"
        );
    }

    #[tokio::test]
    async fn a_check_that_cannot_connect_is_a_finding_not_an_error() {
        let findings = warnings(&pool_for(
            "postgres://postgres@127.0.0.1:1/test?connect_timeout=1",
        ))
        .await;
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].contains("could not check"), "{findings:?}");
    }
}
