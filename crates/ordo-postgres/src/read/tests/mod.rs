//! PostgreSQL's own read-store tests: bulk mode's index handling, migrations and the
//! query plans. What every read store must do is the conformance suite's
//! ([`conformance`]).

use std::sync::Arc;

use ordo_domain::conformance::{Projector, Step, cancelled, created};
use time::macros::datetime;

use super::bulk::bulk_state;
use super::*;
use crate::testdb;

/// A read store in a fresh schema, a projector over it, and the schema name.
struct Fixture {
    store: Arc<PgReadStore>,
    projector: Projector,
    schema: String,
}

impl Fixture {
    async fn new() -> Self {
        let (url, schema) = testdb::fresh_url().await;
        let store = Arc::new(
            PgReadStore::connect(&url)
                .await
                .expect("connect to the test server"),
        );
        Fixture {
            projector: Projector::new(store.clone()),
            store,
            schema,
        }
    }

    /// Projects `steps` as one batch.
    async fn project(&mut self, steps: Vec<Step>) {
        self.projector.project(steps).await;
    }

    async fn done(self) {
        drop(self.projector);
        drop(self.store);
        testdb::drop_schema(&self.schema).await;
    }
}

fn query() -> ListQuery {
    ListQuery::default()
}

mod bulk;
mod conformance;
mod migrations;
mod queries;
