//! The read models' tables: the schema steps that make them, one migration each, and the
//! names of the search index's tables.

pub(super) const SCHEMA: &[&str] = &[
    // 1: read models.
    "CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        status TEXT,
        customer_email TEXT,
        customer_name TEXT,
        total_cents INTEGER,
        created_at INTEGER,
        search_text TEXT,
        doc TEXT
    );
    CREATE INDEX orders_by_created ON orders (created_at, order_id) WHERE deleted = 0;
    CREATE INDEX orders_by_status ON orders (status, created_at, order_id) WHERE deleted = 0;
    CREATE INDEX orders_by_customer ON orders (customer_email, created_at, order_id) WHERE deleted = 0;
    CREATE INDEX orders_by_total ON orders (total_cents, order_id) WHERE deleted = 0;
    CREATE VIRTUAL TABLE orders_search USING fts5 (search_text, content = '', contentless_delete = 1, tokenize = 'trigram');
    CREATE TABLE customers (
        customer_email TEXT PRIMARY KEY,
        customer_name TEXT NOT NULL,
        order_count INTEGER NOT NULL,
        total_cents INTEGER NOT NULL
    );
    CREATE INDEX customers_by_spent ON customers (total_cents DESC, customer_email);
    CREATE TABLE summary (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        status_counts TEXT NOT NULL,
        revenue_cents TEXT NOT NULL,
        last_updated INTEGER
    );
    CREATE TABLE checkpoints (
        projection TEXT PRIMARY KEY,
        checkpoint TEXT NOT NULL
    );",
    // 2: poison events set aside by projections.
    "CREATE TABLE parked_events (
        projection TEXT NOT NULL,
        position TEXT NOT NULL,
        event_id TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        error TEXT NOT NULL,
        parked_at INTEGER NOT NULL,
        PRIMARY KEY (projection, event_id)
    );",
    // 3: the search index without positions (detail = none): a third faster to build
    // and to maintain, and smaller. It only narrows the candidates (every trigram of the
    // term is in the order's text); `instr` on `orders.search_text` decides.
    "DROP TABLE orders_search;
    CREATE VIRTUAL TABLE orders_search USING fts5 (search_text, content = '', contentless_delete = 1, tokenize = 'trigram', detail = none);
    INSERT INTO orders_search (rowid, search_text)
        SELECT rowid, search_text FROM orders NOT INDEXED WHERE deleted = 0 ORDER BY rowid;",
    // 4: a second search index for the orders stored by live batches; `orders_search`
    // keeps those indexed in bulk (see `SEARCH_INDEXES`).
    "CREATE VIRTUAL TABLE orders_search_live USING fts5 (search_text, content = '', contentless_delete = 1, tokenize = 'trigram', detail = none);",
    // 5: orders and revenue per UTC day of createdAt, filled from the orders already
    // stored. `day` counts days since 1970-01-01; the floor division keeps an order's
    // microseconds whole (SQLite's date functions round to milliseconds).
    "CREATE TABLE daily_orders (
        day INTEGER PRIMARY KEY,
        orders INTEGER NOT NULL,
        revenue_cents INTEGER NOT NULL
    );
    INSERT INTO daily_orders (day, orders, revenue_cents)
        SELECT day, count(*), sum(CASE WHEN status <> 'cancelled' THEN total_cents ELSE 0 END)
        FROM (SELECT (created_at - ((created_at % 86400000000) + 86400000000) % 86400000000) / 86400000000 AS day,
                     status, total_cents
              FROM orders NOT INDEXED WHERE deleted = 0)
        GROUP BY day;",
];

/// The search index is two FTS5 tables, searched together, each order in one of them:
/// `orders_search` holds the orders indexed in bulk (`finish_bulk`, or the migration that
/// built it), `orders_search_live` those that live batches stored since. FTS5 keeps an
/// index as segments on levels and merges the segments of a level together, and a new
/// segment joins any lower level that holds one as large: in one table, the few large
/// segments of a bulk load drew every live batch's small one to them, and now and then a
/// live commit merged the whole index at once (1.1 s at 300,000 orders, seconds at
/// 1,000,000; see docs/benchmarks-history.md). The live table only ever holds segments of
/// live batches, which FTS5 merges in step with their size; the bulk table only gets
/// deletions.
pub(super) const SEARCH_INDEXES: [&str; 2] = ["orders_search", "orders_search_live"];
