//! A rebuild of the read models inside the running server, asked for over the admin API
//! (`POST /api/v1/admin/replay`) while the load tool drives traffic: what a rebuild costs
//! the requests served meanwhile, and how long it takes under load.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The admin token the load tool gives the servers it starts (loopback only, a child
/// process of this tool: not a secret).
pub const ADMIN_TOKEN: &str = "ordo-load-admin";

/// A rebuild job running in a server.
#[derive(Debug)]
pub struct Rebuild {
    client: reqwest::Client,
    status_url: String,
    started: Instant,
}

/// How a rebuild ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebuildOutcome {
    /// From the request that started it to the first status poll that saw it done.
    pub took: Duration,
    /// Events it applied (the job's `eventsTotal`).
    pub events: u64,
}

impl RebuildOutcome {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

impl Rebuild {
    /// Starts a full rebuild in the server at `base`.
    pub async fn start(base: &str) -> anyhow::Result<Rebuild> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let started = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/admin/replay"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .context("POST /api/v1/admin/replay")?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the answer to POST /api/v1/admin/replay")?;
        if status != reqwest::StatusCode::ACCEPTED {
            bail!("POST /api/v1/admin/replay answered {status}: {body}");
        }
        let job = body["jobId"]
            .as_str()
            .with_context(|| format!("no jobId in {body}"))?;
        Ok(Rebuild {
            client,
            status_url: format!("{base}/api/v1/admin/replay/{job}"),
            started,
        })
    }

    /// When the rebuild was asked for.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Polls the job every 100 ms until it is done (an error if it failed, or is still
    /// running after `timeout` from its start). Run it beside the load: the time is that
    /// of the first poll that sees the job done.
    pub async fn wait(self, timeout: Duration) -> anyhow::Result<RebuildOutcome> {
        loop {
            let body: Value = self
                .client
                .get(&self.status_url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .context("GET the replay job")?
                .error_for_status()
                .context("GET the replay job")?
                .json()
                .await
                .context("the replay job's status")?;
            let took = self.started.elapsed();
            if let Some(outcome) = finished(&body, took)? {
                return Ok(outcome);
            }
            if took >= timeout {
                bail!("the rebuild was still running after {timeout:?}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `Some` once a job status says done; an error when it says failed.
fn finished(status: &Value, took: Duration) -> anyhow::Result<Option<RebuildOutcome>> {
    match status["state"].as_str() {
        Some("done") => Ok(Some(RebuildOutcome {
            took,
            events: status["eventsTotal"].as_u64().unwrap_or(0),
        })),
        Some("running") => Ok(None),
        Some("failed") => bail!("the rebuild failed: {}", status["error"]),
        _ => bail!("unexpected replay job status: {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_states_are_read_as_the_api_gives_them() {
        let took = Duration::from_secs(4);
        assert_eq!(
            finished(
                &json!({"state": "done", "eventsDone": 400, "eventsTotal": 400}),
                took
            )
            .expect("done"),
            Some(RebuildOutcome { took, events: 400 })
        );
        assert_eq!(
            finished(&json!({"state": "running", "eventsDone": 1}), took).expect("running"),
            None
        );
        let failed = finished(&json!({"state": "failed", "error": "disk full"}), took)
            .expect_err("a failed job is an error");
        assert!(failed.to_string().contains("disk full"), "{failed}");
        assert!(finished(&json!({"state": "lost"}), took).is_err());
        assert_eq!(RebuildOutcome { took, events: 400 }.events_per_sec(), 100.0);
    }
}
