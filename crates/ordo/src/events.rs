//! `ordo events`: print stored events as JSON lines, oldest first.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use ordo_es::{Checkpoint, EventStore, RecordedEvent, StreamId};

fn print_one(out: &mut impl Write, event: &RecordedEvent) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &ordo_http::event_json(event))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Prints every event (or one aggregate's), then with `follow` keeps printing new ones
/// until Ctrl-C or SIGTERM.
pub async fn print(
    store: &dyn EventStore,
    aggregate: Option<&str>,
    follow: bool,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stream = aggregate.map(StreamId::new);
    if let (Some(stream), false) = (&stream, follow) {
        // One order, no follow: its own stream, without scanning the log.
        let mut from = 1;
        loop {
            let page = store
                .read_stream(stream, from, 1_000)
                .await
                .context("reading the stream")?;
            for event in &page {
                print_one(&mut out, event)?;
            }
            if page.len() < 1_000 {
                out.flush()?;
                return Ok(());
            }
            from += page.len() as u64;
        }
    }
    let mut checkpoint = Checkpoint::origin(store.partitions());
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let batch = store
            .read_all(&checkpoint, 1_000)
            .await
            .context("reading the event log")?;
        if batch.is_empty() {
            out.flush()?;
            if !follow {
                return Ok(());
            }
            tokio::select! {
                () = &mut stop => return Ok(()),
                waited = store.wait_for_events(&checkpoint, Duration::from_secs(1)) => waited?,
            }
            continue;
        }
        for event in &batch {
            checkpoint.advance(&event.position);
            if stream.as_ref().is_none_or(|s| *s == event.stream_id) {
                print_one(&mut out, event)?;
            }
        }
    }
}
