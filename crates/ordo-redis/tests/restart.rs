//! A Redis server killed with SIGKILL and restarted from its AOF (`appendfsync always`)
//! keeps every append the store acknowledged.

use std::sync::Arc;
use std::time::Duration;

use ordo_es::{Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use ordo_redis::RedisEventStore;
use ordo_testkit::{eventually, free_port, start_redis};

/// Waits (up to 10 s) until the redis-server on `port` answers PING: it accepts
/// connections before it has loaded its AOF, and answers LOADING until then.
async fn wait_ready(port: u16) {
    eventually(Duration::from_secs(10), || async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    .unwrap_or_else(|e| panic!("redis-server on port {port} did not start: {e}"));
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        aggregate_type: "Restart".into(),
        event_type: "Happened".into(),
        schema_version: 1,
        occurred_at: ordo_es::now_micros(),
        data: serde_json::json!({ "n": n }).into(),
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_a_kill_9_of_redis_with_aof_always() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut server = start_redis(dir.path(), port);
    wait_ready(port).await;
    let url = format!("redis://127.0.0.1:{port}?prefix=restart&partitions=4");
    let store = Arc::new(RedisEventStore::connect(&url).await.expect("connect"));
    assert!(
        store.durability_warnings().await.is_empty(),
        "AOF always must raise no warning"
    );

    // Writers append until the server dies under them; each keeps what was acknowledged.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..100_000u64 {
                let stream = StreamId::new(format!("w{w}-{i}"));
                match store
                    .append(
                        &stream,
                        ExpectedVersion::NoStream,
                        vec![event(i), event(i + 1)],
                    )
                    .await
                {
                    Ok(appended) => acknowledged.push((stream, appended.last_version)),
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill().expect("SIGKILL redis-server");
    let _ = server.wait();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        acknowledged.len() > 20,
        "the load did not get going: {}",
        acknowledged.len()
    );
    drop(store);

    let restarted = start_redis(dir.path(), port);
    wait_ready(port).await;
    let store = RedisEventStore::connect(&url).await.expect("reconnect");
    for (stream, version) in &acknowledged {
        let events = store.read_stream(stream, 1, 10).await.expect("read");
        assert_eq!(
            events.len() as u64,
            *version,
            "{stream}: acknowledged {version} events, found {}",
            events.len()
        );
    }
    // The log agrees with the streams: nothing half-written survived the crash.
    let mut checkpoint = Checkpoint::origin(store.partitions());
    let mut logged = 0u64;
    loop {
        let batch = store.read_all(&checkpoint, 1_000).await.expect("read log");
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            checkpoint.advance(&e.position);
        }
        logged += batch.len() as u64;
    }
    assert!(logged >= acknowledged.len() as u64 * 2);
    assert_eq!(
        logged % 2,
        0,
        "every append is two events: an odd count means a split append"
    );
    drop(restarted);
}
