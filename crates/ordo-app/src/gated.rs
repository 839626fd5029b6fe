//! The read models behind a bounded queue (see [`ordo_es::admission`]).
//!
//! Queries are what a burst of clients multiplies: each one waits for a connection of
//! the read store's pool (SQLite's readers, PostgreSQL's pool). [`gate_queries`]
//! hands out every generation's store behind one shared [`Admission`], so that the
//! queries in flight or waiting, over every generation, never exceed its limit; the
//! next is answered [`ReadStoreError::Overloaded`] at once. The projection's own calls
//! (checkpoint, views, commits, parking, resets, bulk mode) pass straight through: one
//! writer per projection is not a queue, and turning it away would only add lag.

use std::sync::Arc;

use async_trait::async_trait;

use ordo_domain::read_store::{ReadStoreError, ReadStoreProvider};
use ordo_es::Admission;

use crate::hooks::{Held, HookedStores, Query, ReadStoreHooks};

/// Every generation of `inner` with its queries behind `admission`.
pub fn gate_queries(inner: Arc<dyn ReadStoreProvider>, admission: Arc<Admission>) -> HookedStores {
    HookedStores::all(inner, Arc::new(QueryGate(admission)))
}

/// Lets a query in when the admission has room, and holds its pass while it runs.
#[derive(Debug)]
struct QueryGate(Arc<Admission>);

#[async_trait]
impl ReadStoreHooks for QueryGate {
    async fn before_query(&self, _query: Query) -> Result<Held, ReadStoreError> {
        let pass = self.0.enter().map_err(ReadStoreError::Overloaded)?;
        Ok(Held::new(pass))
    }
}
