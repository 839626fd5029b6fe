//! The read models' tables: the migrations that make them, and the statements on them with
//! the schema spliced in.

use crate::db::Migration;

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "order read models",
        sql: r#"
        -- One row per order ever seen. A deleted order keeps its row as a tombstone
        -- (deleted = true, version kept, everything else NULL) so that a redelivered
        -- older event is recognised. Every query filters NOT deleted, which the partial
        -- indexes below match.
        CREATE TABLE {s}.orders (
            order_id uuid PRIMARY KEY,
            version bigint NOT NULL,
            deleted boolean NOT NULL,
            doc json,
            status text,
            customer_email text COLLATE "C",
            customer_name text,
            total_cents numeric,
            created_at timestamptz,
            search_text text,
            CHECK (deleted OR (doc IS NOT NULL AND status IS NOT NULL AND customer_email IS NOT NULL
                AND customer_name IS NOT NULL AND total_cents IS NOT NULL AND created_at IS NOT NULL
                AND search_text IS NOT NULL))
        );
        CREATE INDEX orders_created ON {s}.orders (created_at, order_id) WHERE NOT deleted;
        CREATE INDEX orders_total ON {s}.orders (total_cents, order_id) WHERE NOT deleted;
        CREATE INDEX orders_status ON {s}.orders (status, created_at, order_id) WHERE NOT deleted;
        CREATE INDEX orders_customer ON {s}.orders (customer_email, created_at, order_id) WHERE NOT deleted;
        -- fastupdate off: a pending list of unmerged entries makes the planner cost the
        -- index high (and scans slow) until a vacuum merges it; searches should not
        -- depend on autovacuum's timing.
        CREATE INDEX orders_search ON {s}.orders USING gin (search_text {trgm}.gin_trgm_ops)
            WITH (fastupdate = off) WHERE NOT deleted;

        -- The summary: one row of counters, moved by each batch's deltas.
        CREATE TABLE {s}.order_summary (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            pending bigint NOT NULL DEFAULT 0,
            confirmed bigint NOT NULL DEFAULT 0,
            processing bigint NOT NULL DEFAULT 0,
            shipped bigint NOT NULL DEFAULT 0,
            delivered bigint NOT NULL DEFAULT 0,
            cancelled bigint NOT NULL DEFAULT 0,
            revenue_cents numeric NOT NULL DEFAULT 0,
            last_updated timestamptz
        );
        INSERT INTO {s}.order_summary (id) VALUES (true);

        -- Recomputed per affected customer inside each commit.
        CREATE TABLE {s}.top_customers (
            customer_email text COLLATE "C" PRIMARY KEY,
            customer_name text NOT NULL,
            order_count bigint NOT NULL,
            total_spent_cents numeric NOT NULL
        );
        CREATE INDEX top_customers_rank ON {s}.top_customers (total_spent_cents DESC, customer_email);

        CREATE TABLE {s}.checkpoints (
            projection text PRIMARY KEY,
            checkpoint text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
    "#,
    },
    Migration {
        version: 2,
        description: "parked events",
        sql: r#"
        -- Events a projection could not apply, set aside (the checkpoint moved past them).
        -- seq breaks ties between events parked in the same microsecond.
        CREATE TABLE {s}.parked_events (
            projection text NOT NULL,
            event_id uuid NOT NULL,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            position text NOT NULL,
            stream_id text NOT NULL,
            version bigint NOT NULL,
            event_type text NOT NULL,
            error text NOT NULL,
            parked_at timestamptz NOT NULL,
            PRIMARY KEY (projection, event_id)
        );
        CREATE INDEX parked_events_order ON {s}.parked_events (projection, parked_at, seq);
    "#,
    },
    Migration {
        version: 3,
        description: "search text in a table of its own",
        sql: r#"
        -- An order's search text never changes, but as a column of orders it was indexed
        -- again (about a hundred trigram entries) by every status change, which cannot
        -- be a HOT update since status is indexed. In a table of its own it is written
        -- when the order is created and removed when it is deleted.
        CREATE TABLE {s}.order_search (
            order_id uuid PRIMARY KEY,
            search_text text NOT NULL
        );
        INSERT INTO {s}.order_search (order_id, search_text)
            SELECT order_id, search_text FROM {s}.orders WHERE NOT deleted;
        CREATE INDEX order_search_text ON {s}.order_search USING gin (search_text {trgm}.gin_trgm_ops)
            WITH (fastupdate = off);
        -- Dropping the column drops its index and the row check that named it.
        ALTER TABLE {s}.orders DROP COLUMN search_text;
        ALTER TABLE {s}.orders ADD CHECK (deleted OR (doc IS NOT NULL AND status IS NOT NULL
            AND customer_email IS NOT NULL AND customer_name IS NOT NULL
            AND total_cents IS NOT NULL AND created_at IS NOT NULL));
    "#,
    },
    Migration {
        version: 4,
        description: "orders and revenue per day",
        sql: r#"
        -- Per UTC day of createdAt: the orders not deleted, and the revenue of those
        -- neither cancelled nor deleted. Moved by each batch's deltas; a day left with no
        -- order has no row. Filled here from the orders already stored, so an upgraded
        -- store answers without a replay.
        CREATE TABLE {s}.daily_orders (
            day date PRIMARY KEY,
            orders bigint NOT NULL,
            revenue_cents numeric NOT NULL
        );
        INSERT INTO {s}.daily_orders (day, orders, revenue_cents)
            SELECT (created_at AT TIME ZONE 'UTC')::date, count(*),
                   coalesce(sum(total_cents) FILTER (WHERE status <> 'cancelled'), 0)
            FROM {s}.orders WHERE NOT deleted
            GROUP BY 1;
    "#,
    },
    Migration {
        version: 5,
        description: "orders whose personal data is erased",
        sql: r#"
        -- A live order whose customer's personal data was erased has no e-mail and no
        -- name: the row check no longer asks for them.
        DO $$
        DECLARE c text;
        BEGIN
            FOR c IN SELECT conname FROM pg_constraint
                     WHERE conrelid = '{s}.orders'::regclass AND contype = 'c' LOOP
                EXECUTE format('ALTER TABLE {s}.orders DROP CONSTRAINT %I', c);
            END LOOP;
        END $$;
        ALTER TABLE {s}.orders ADD CONSTRAINT orders_live_complete CHECK (deleted OR (doc IS NOT NULL
            AND status IS NOT NULL AND total_cents IS NOT NULL AND created_at IS NOT NULL));
    "#,
    },
];

#[derive(Debug)]
pub(super) struct Statements {
    pub(super) s: String,
    pub(super) load_checkpoint: String,
    pub(super) load_checkpoints: String,
    pub(super) cas_checkpoint: String,
    /// The fence of a write: the shard's lease row, `FOR KEY SHARE` (renewals and
    /// takeovers do not wait for it; see `leases.rs`), when the lease is current.
    pub(super) fence: String,
    pub(super) insert_checkpoint: String,
    pub(super) load_views: String,
    pub(super) upsert_orders: String,
    pub(super) upsert_search: String,
    pub(super) update_summary: String,
    pub(super) move_customers: String,
    pub(super) drop_customers: String,
    pub(super) name_customers: String,
    pub(super) move_days: String,
    pub(super) drop_days: String,
    pub(super) daily: String,
    pub(super) get: String,
    pub(super) summary: String,
    pub(super) top_customers: String,
    pub(super) reset: String,
    pub(super) park: String,
    pub(super) parked: String,
}

impl Statements {
    /// The statements of the read models in schema `s` (quoted), whose writes are fenced
    /// by the leases in schema `leases` (quoted; see `PgLeases`).
    pub(super) fn new(s: &str, leases: &str) -> Self {
        Self {
            s: s.to_string(),
            fence: format!(
                "SELECT 1 FROM {leases}.projection_leases \
                 WHERE projection = $1 AND shard = $2 AND token = $3 AND owner <> '' FOR KEY SHARE"
            ),
            load_checkpoint: format!("SELECT checkpoint FROM {s}.checkpoints WHERE projection = $1"),
            load_checkpoints: format!(
                "SELECT projection, checkpoint FROM {s}.checkpoints WHERE projection = ANY($1)"
            ),
            cas_checkpoint: format!(
                "UPDATE {s}.checkpoints SET checkpoint = $3, updated_at = now() \
                 WHERE projection = $1 AND checkpoint = $2 RETURNING 1"
            ),
            insert_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (projection, checkpoint) VALUES ($1, $2) \
                 ON CONFLICT (projection) DO NOTHING RETURNING 1"
            ),
            load_views: format!("SELECT order_id, version, deleted, doc::text FROM {s}.orders WHERE order_id = ANY($1)"),
            upsert_orders: format!(
                "INSERT INTO {s}.orders (order_id, version, deleted, doc, status, customer_email, customer_name,
                     total_cents, created_at)
                 SELECT u.order_id, u.version, u.deleted, u.doc::json, u.status, u.customer_email, u.customer_name,
                        u.total::numeric, u.created_at
                 FROM unnest($1::uuid[], $2::int8[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::timestamptz[])
                     AS u(order_id, version, deleted, doc, status, customer_email, customer_name, total, created_at)
                 ON CONFLICT (order_id) DO UPDATE SET
                     version = excluded.version, deleted = excluded.deleted, doc = excluded.doc,
                     status = excluded.status, customer_email = excluded.customer_email,
                     customer_name = excluded.customer_name, total_cents = excluded.total_cents,
                     created_at = excluded.created_at"
            ),
            // A live order's text is written once (rewritten only if it differs); a
            // deleted order's is removed.
            upsert_search: format!(
                "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS u(order_id, search_text)),
                 gone AS (DELETE FROM {s}.order_search t USING u
                          WHERE t.order_id = u.order_id AND u.search_text IS NULL)
                 INSERT INTO {s}.order_search (order_id, search_text)
                 SELECT order_id, search_text FROM u WHERE search_text IS NOT NULL
                 ON CONFLICT (order_id) DO UPDATE SET search_text = excluded.search_text
                 WHERE order_search.search_text IS DISTINCT FROM excluded.search_text"
            ),
            update_summary: format!(
                "UPDATE {s}.order_summary SET pending = pending + $1, confirmed = confirmed + $2,
                     processing = processing + $3, shipped = shipped + $4, delivered = delivered + $5,
                     cancelled = cancelled + $6, revenue_cents = revenue_cents + $7::text::numeric,
                     last_updated = greatest($8::timestamptz, last_updated)"
            ),
            // Each batch moves a customer's count and spend by its deltas (O(1), whatever
            // their number of orders), drops customers left with none, and refreshes the
            // name from their most recent counted order (an index seek).
            move_customers: format!(
                "INSERT INTO {s}.top_customers AS t (customer_email, customer_name, order_count, total_spent_cents)
                 SELECT d.email, '', d.n, d.spent::numeric
                 FROM unnest($1::text[], $2::int8[], $3::text[]) AS d(email, n, spent)
                 WHERE d.n <> 0 OR d.spent::numeric <> 0
                 ON CONFLICT (customer_email) DO UPDATE SET order_count = t.order_count + excluded.order_count,
                     total_spent_cents = t.total_spent_cents + excluded.total_spent_cents"
            ),
            drop_customers: format!(
                "DELETE FROM {s}.top_customers WHERE customer_email = ANY($1::text[]) AND order_count <= 0"
            ),
            name_customers: format!(
                "UPDATE {s}.top_customers t SET customer_name = (
                     SELECT o.customer_name FROM {s}.orders o
                     WHERE o.customer_email = t.customer_email AND NOT o.deleted AND o.status <> 'cancelled'
                     ORDER BY o.created_at DESC, o.order_id DESC LIMIT 1)
                 WHERE t.customer_email = ANY($1::text[])"
            ),
            move_days: format!(
                "INSERT INTO {s}.daily_orders AS t (day, orders, revenue_cents)
                 SELECT d.day, d.n, d.revenue::numeric
                 FROM unnest($1::date[], $2::int8[], $3::text[]) AS d(day, n, revenue)
                 ON CONFLICT (day) DO UPDATE SET orders = t.orders + excluded.orders,
                     revenue_cents = t.revenue_cents + excluded.revenue_cents"
            ),
            drop_days: format!(
                "DELETE FROM {s}.daily_orders
                 WHERE day = ANY($1::date[]) AND orders = 0 AND revenue_cents = 0"
            ),
            daily: format!(
                "SELECT day, orders, revenue_cents::text FROM {s}.daily_orders
                 WHERE day BETWEEN $1 AND $2 ORDER BY day"
            ),
            get: format!("SELECT doc::text FROM {s}.orders WHERE order_id = $1 AND NOT deleted"),
            summary: format!(
                "SELECT pending, confirmed, processing, shipped, delivered, cancelled, revenue_cents::text, last_updated
                 FROM {s}.order_summary"
            ),
            top_customers: format!(
                "SELECT customer_email, customer_name, order_count, total_spent_cents::text AS spent FROM {s}.top_customers
                 ORDER BY total_spent_cents DESC, customer_email LIMIT $1"
            ),
            reset: reset_sql(s),
            park: format!(
                "INSERT INTO {s}.parked_events
                     (projection, event_id, position, stream_id, version, event_type, error, parked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (projection, event_id) DO NOTHING"
            ),
            parked: format!(
                "SELECT position, event_id, stream_id, version, event_type, error, parked_at
                 FROM {s}.parked_events WHERE projection = $1 ORDER BY parked_at, seq"
            ),
        }
    }
}

/// Empties every read model of the (quoted) schema `s`: orders, summary, top customers,
/// orders per day, checkpoints and parked events.
pub(crate) fn reset_sql(s: &str) -> String {
    format!(
        "TRUNCATE {s}.orders, {s}.order_search, {s}.top_customers, {s}.daily_orders, {s}.checkpoints,
             {s}.parked_events;
         UPDATE {s}.order_summary SET pending = 0, confirmed = 0, processing = 0, shipped = 0,
             delivered = 0, cancelled = 0, revenue_cents = 0, last_updated = NULL;"
    )
}
