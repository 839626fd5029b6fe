//! A migration's rewrite leaves no old payload in the server's own files once
//! `purge_old_versions` has run: the AOF (with `appendfsync always`, so the old bytes were
//! on disk), and the RDB snapshot. Each test runs a private redis-server in a temporary
//! directory, with RDB compression off so that a string in the files is plain to see.

use std::path::Path;
use std::time::Duration;

use ordo_es::{
    Checkpoint, EventRewriter, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent,
    Rewrite, StreamId,
};
use ordo_redis::RedisEventStore;
use ordo_testkit::{KillOnDrop, eventually, free_port};

const MARKER: &[u8] = b"Plain Ada Lovelace";

fn redis_server(dir: &Path, port: u16, persistence: &[&str]) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--rdbcompression", "no"])
            .args(persistence)
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)"),
    )
}

/// Waits (up to 10 s) until the server answers PING (it answers LOADING before).
async fn wait_ready(port: u16) {
    eventually(Duration::from_secs(10), || async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    .unwrap_or_else(|e| panic!("redis-server on port {port} did not start: {e}"));
}

/// Whether any file under `dir` holds `MARKER`.
fn files_hold_the_marker(dir: &Path) -> bool {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("list the directory") {
                pending.push(entry.expect("a directory entry").path());
            }
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(MARKER.len()).any(|w| w == MARKER) {
                return true;
            }
        }
    }
    false
}

fn event(n: u64, legacy: bool) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        aggregate_type: "Order".into(),
        event_type: if legacy { "OrderCreated" } else { "Other" }.into(),
        schema_version: 1,
        occurred_at: ordo_es::now_micros(),
        data: serde_json::json!({ "n": n, "customerName": format!("Plain Ada Lovelace {n}") })
            .into(),
        metadata: Metadata::default(),
    }
}

/// Appends legacy events (and others, whose payloads never held the marker: they are
/// left as they are), then migrates them: pages of legacy events, each rewritten.
async fn store_and_migrate(store: &RedisEventStore) -> Vec<StreamId> {
    let streams: Vec<StreamId> = (0..20)
        .map(|s| StreamId::new(format!("order-{s}")))
        .collect();
    for (s, stream) in streams.iter().enumerate() {
        let mut other = event(s as u64, false);
        other.data = serde_json::json!({ "n": s }).into();
        store
            .append(
                stream,
                ExpectedVersion::NoStream,
                vec![event(s as u64, true), other],
            )
            .await
            .expect("append");
    }
    let mut after = None;
    let mut rewritten = 0;
    loop {
        let (page, next) = store
            .legacy_events("OrderCreated", 3, after, 8)
            .await
            .expect("legacy events");
        let changes: Vec<Rewrite> = page
            .iter()
            .map(|e: &RecordedEvent| {
                Rewrite::of(e, 3, serde_json::json!({ "personalData": "sealed" }).into())
            })
            .collect();
        rewritten += store.rewrite(&changes).await.expect("rewrite");
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(rewritten, 20);
    streams
}

async fn assert_migrated(store: &RedisEventStore, streams: &[StreamId]) {
    for stream in streams {
        let events = store.read_stream(stream, 1, 10).await.expect("read");
        assert_eq!(events.len(), 2, "{stream}");
        assert_eq!(events[0].schema_version, 3);
        assert_eq!(
            events[0].data,
            serde_json::json!({ "personalData": "sealed" })
        );
    }
    let logged = store
        .read_all(&Checkpoint::origin(store.partitions()), 1_000)
        .await
        .expect("read the log");
    assert_eq!(logged.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_old_payload_is_left_in_the_aof_after_a_rewrite_and_a_purge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let aof = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ];
    let server = redis_server(dir.path(), port, &aof);
    wait_ready(port).await;
    let url = format!("redis://127.0.0.1:{port}?prefix=purge&partitions=4");
    let store = RedisEventStore::connect(&url).await.expect("connect");
    let streams = store_and_migrate(&store).await;
    assert!(
        files_hold_the_marker(dir.path()),
        "the check cannot see the plain text in the AOF"
    );
    store.purge_old_versions().await.expect("purge");
    assert!(
        !files_hold_the_marker(dir.path()),
        "plain text left in the server's files"
    );
    assert_migrated(&store, &streams).await;

    // The files written afresh are the data: a restart from them has it all.
    drop((store, server));
    let _restarted = redis_server(dir.path(), port, &aof);
    wait_ready(port).await;
    let store = RedisEventStore::connect(&url).await.expect("reconnect");
    assert_migrated(&store, &streams).await;
    store
        .append(
            &streams[0],
            ExpectedVersion::Exact(2),
            vec![event(99, false)],
        )
        .await
        .expect("append after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_old_payload_is_left_in_the_rdb_snapshot_after_a_rewrite_and_a_purge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let rdb = ["--appendonly", "no", "--save", "3600 1"];
    let server = redis_server(dir.path(), port, &rdb);
    wait_ready(port).await;
    let url = format!("redis://127.0.0.1:{port}?prefix=purge&partitions=4");
    let store = RedisEventStore::connect(&url).await.expect("connect");
    let streams: Vec<StreamId> = (0..20)
        .map(|s| StreamId::new(format!("order-{s}")))
        .collect();
    for (s, stream) in streams.iter().enumerate() {
        store
            .append(
                stream,
                ExpectedVersion::NoStream,
                vec![event(s as u64, true)],
            )
            .await
            .expect("append");
    }
    // A snapshot with the plain text in it, as the server would have taken by itself.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("SAVE")
        .query_async::<String>(&mut conn)
        .await
        .expect("SAVE");
    assert!(
        files_hold_the_marker(dir.path()),
        "the check cannot see the plain text in the snapshot"
    );

    let mut after = None;
    loop {
        let (page, next) = store
            .legacy_events("OrderCreated", 3, after, 8)
            .await
            .expect("legacy events");
        let changes: Vec<Rewrite> = page
            .iter()
            .map(|e| Rewrite::of(e, 3, serde_json::json!({ "personalData": "sealed" }).into()))
            .collect();
        store.rewrite(&changes).await.expect("rewrite");
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    store.purge_old_versions().await.expect("purge");
    assert!(
        !files_hold_the_marker(dir.path()),
        "plain text left in the server's files"
    );
    drop(server);
}
