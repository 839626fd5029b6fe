//! A Redis server killed with SIGKILL and restarted from its AOF (`appendfsync always`)
//! keeps every append the store acknowledged.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ordo_es::{Checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use ordo_redis::RedisEventStore;

/// A private redis-server on a free loopback port, with AOF fsynced before every reply.
struct Server {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("addr").port()
}

impl Server {
    fn start(dir: &std::path::Path, port: u16) -> Server {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server); scripts/test.sh installs it");
        Server {
            port,
            dir: dir.to_path_buf(),
            child,
        }
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
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
    let mut server = Server::start(dir.path(), port);
    server.wait_ready().await;
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
    server.kill_9();
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

    let restarted = Server::start(dir.path(), port);
    restarted.wait_ready().await;
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
