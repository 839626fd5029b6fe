//! `ordo replay`, `ordo snapshot`, `ordo erase` and `ordo rotate-master-key`: operator
//! tools that run on the stores directly.

use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_app::{JobState, ReplayJobs, ReplayRequest};

use crate::config::{EraseArgs, ReplayArgs, RotateArgs, SnapshotArgs};
use crate::{Stores, follow_read_side, start_read_side};

/// Runs one replay job in this process, drawing a progress bar on standard error.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let request = match (&args.from, &args.aggregate) {
        (Some(from), _) => ReplayRequest::From(
            OffsetDateTime::parse(from, &Rfc3339)
                .with_context(|| format!("--from {from:?} is not an RFC 3339 instant"))?,
        ),
        (None, Some(id)) => ReplayRequest::Order(
            uuid::Uuid::try_parse(id)
                .with_context(|| format!("--aggregate {id:?} is not an order id"))?,
        ),
        (None, None) => ReplayRequest::Full,
    };
    let stores = Stores::open(&args.stores).await?;
    // Where the projection is divided into shards, a repair (which writes only the
    // orders it repairs) does not project, so it takes no shards from the services while
    // it runs; a full replay builds a generation and takes part in the shards until it
    // exits.
    let read_side = if request != ReplayRequest::Full && stores.shards.is_some() {
        follow_read_side(&stores).await?
    } else {
        start_read_side(&stores).await?
    };
    let jobs = ReplayJobs::new(read_side.clone(), stores.service());
    let job = jobs.start(request)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events  {per_sec}  eta {eta}",
        )
        .context("progress template")?,
    );
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(status) = jobs.status(job) else {
            bail!("the replay job vanished")
        };
        bar.set_length(status.events_total);
        bar.set_position(status.events_done);
        match status.state {
            JobState::Running => {}
            JobState::Done => break Ok(status),
            JobState::Failed => break Err(status.error.unwrap_or_else(|| "unknown error".into())),
        }
    };
    bar.finish();
    read_side.shutdown().await;
    match outcome {
        Ok(status) => {
            eprintln!(
                "replayed {} events; read models: {}",
                status.events_done,
                read_side.generation()
            );
            Ok(())
        }
        Err(e) => bail!("replay failed: {e}"),
    }
}

/// Takes a snapshot of one order and prints `{"orderId", "version"}`.
pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let id = uuid::Uuid::try_parse(&args.id)
        .with_context(|| format!("{:?} is not an order id", args.id))?;
    let stores = Stores::open(&args.stores).await?;
    match stores.service().snapshot(id).await? {
        Some(version) => {
            println!(
                "{}",
                serde_json::json!({ "orderId": id, "version": version })
            );
            Ok(())
        }
        None => bail!("no order {id}"),
    }
}

/// Erases one customer's personal data and prints `{"customerEmail", "ordersAffected",
/// "erasedAt"}`, as the admin endpoint answers.
pub async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let email = ordo_domain::CustomerEmail::parse(&args.email)
        .map_err(|e| anyhow::anyhow!("the e-mail {e}"))?;
    let stores = Stores::open(&args.stores).await?;
    // The projection runs here too (taking part in the shards, where there are shards,
    // until it exits): the erasure waits for the read models to cover what is stored,
    // which needs a projection even when no service runs.
    let read_side = start_read_side(&stores).await?;
    let jobs = ReplayJobs::new(read_side.clone(), stores.service());
    let erasures = ordo_app::Erasures::new(
        std::sync::Arc::clone(&stores.keys),
        read_side.clone(),
        jobs,
        stores.key_caching.settle,
    );
    let outcome = erasures.erase(&email, "cli").await;
    read_side.shutdown().await;
    match outcome {
        Ok(report) => {
            println!(
                "{}",
                serde_json::json!({
                    "customerEmail": report.customer_email,
                    "ordersAffected": report.orders_affected,
                    "erasedAt": report.erased_at.format(&Rfc3339)?,
                })
            );
            Ok(())
        }
        Err(ordo_app::EraseError::NotFound) => {
            bail!("no order ever had the customer e-mail {}", email.as_str())
        }
        Err(e) => bail!("erasure failed: {e}"),
    }
}

/// Rewraps every data key under the configured master key.
pub async fn rotate_master_key(args: RotateArgs) -> anyhow::Result<()> {
    if args.stores.previous_master_key_file.is_none() {
        bail!(
            "give the master key being replaced with --previous-master-key-file (ORDO_PREVIOUS_MASTER_KEY_FILE), and the new one as the master key (docs/privacy.md)"
        );
    }
    let (ring, _) = crate::keys::open_ring(&args.stores).await?;
    let rewrapped = ring.rewrap_all().await?;
    eprintln!(
        "rewrapped {rewrapped} keys under the master key {}; restart every process without --previous-master-key-file",
        ring.master_fingerprint()
    );
    Ok(())
}
