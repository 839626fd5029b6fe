//! The read-store contract's suite on PostgreSQL: each case in a schema of its own,
//! dropped (with the generations made beside it) when the case ends.

use crate::testdb;

/// Drops the schema family `base` when dropped.
pub(super) struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let base = std::mem::take(&mut self.0);
        // Off the test's runtime, which is inside an async function here.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(testdb::drop_schema_family(&base));
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the test schema");
        }
    }
}

mod store {
    use super::Schema;
    use crate::{PgReadStore, testdb};

    ordo_domain::read_store_conformance!(guarded async {
        let (url, schema) = testdb::fresh_url().await;
        let store = PgReadStore::connect(&url)
            .await
            .expect("connect to the test server");
        (store, Schema(schema))
    });
}

mod provider {
    use super::Schema;
    use crate::{PgReadStores, testdb};

    ordo_domain::read_store_provider_conformance!(guarded async {
        let (url, schema) = testdb::fresh_url().await;
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        (provider, Schema(schema))
    });
}
