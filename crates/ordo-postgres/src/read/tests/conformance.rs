//! The read-store contract's suite on PostgreSQL: each case in a schema of its own,
//! dropped (with the generations made beside it) when the case ends.

mod store {
    use crate::PgReadStore;
    use crate::testdb::{self, SchemaGuard};

    ordo_domain::read_store_conformance!(guarded async {
        let (url, schema) = testdb::fresh_url().await;
        let store = PgReadStore::connect(&url)
            .await
            .expect("connect to the test server");
        (store, SchemaGuard(schema))
    });
}

mod provider {
    use crate::PgReadStores;
    use crate::testdb::{self, SchemaGuard};

    ordo_domain::read_store_provider_conformance!(guarded async {
        let (url, schema) = testdb::fresh_url().await;
        let provider = PgReadStores::connect(&url)
            .await
            .expect("connect to the test server");
        (provider, SchemaGuard(schema))
    });
}

mod fencing {
    use std::sync::Arc;

    use ordo_es::LeaseStore;

    use crate::testdb::{self, SchemaGuard};
    use crate::{PgLeases, PgReadStore};

    ordo_domain::read_store_fencing_conformance!(async {
        let (url, schema) = testdb::fresh_url().await;
        let store = PgReadStore::connect(&url)
            .await
            .expect("connect to the test server");
        let leases = PgLeases::connect(&url)
            .await
            .expect("the lease tables beside the read models");
        (
            store,
            Arc::new(leases) as Arc<dyn LeaseStore>,
            SchemaGuard(schema),
        )
    });
}
