//! A small Prometheus registry: counters and fixed-bucket histograms, rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (slot, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= *bound {
                *slot += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    commands: BTreeMap<(String, String), u64>,
    http: BTreeMap<(String, String, u16), u64>,
    append: Histogram,
    http_seconds: Histogram,
}

/// What `/metrics` shows of one projection.
#[derive(Debug, Clone)]
pub struct ProjectionGauges {
    pub name: String,
    pub position: u64,
    pub lag_seconds: f64,
    pub parked: u64,
}

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn command(&self, command: &str, outcome: &str, took: Duration) {
        let mut inner = self.lock();
        *inner
            .commands
            .entry((command.into(), outcome.into()))
            .or_default() += 1;
        if outcome == "ok" {
            inner.append.observe(took.as_secs_f64());
        }
    }

    pub fn http(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut inner = self.lock();
        *inner
            .http
            .entry((method.into(), route.into(), status))
            .or_default() += 1;
        inner.http_seconds.observe(took.as_secs_f64());
    }

    /// Renders everything, with the gauges the caller reads from the projections.
    pub fn render(&self, projections: &[ProjectionGauges], replayed: u64) -> String {
        let inner = self.lock().clone_for_render();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ordo_commands_total Commands handled, by command and outcome."
        );
        let _ = writeln!(out, "# TYPE ordo_commands_total counter");
        for ((command, outcome), n) in &inner.commands {
            let _ = writeln!(
                out,
                "ordo_commands_total{{command=\"{command}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        histogram(
            &mut out,
            "ordo_event_append_seconds",
            "Time to decide and durably append a command's events.",
            &inner.append,
        );
        let _ = writeln!(
            out,
            "# HELP ordo_projection_position Events the projection has applied, per projection (sum of partition cursors)."
        );
        let _ = writeln!(out, "# TYPE ordo_projection_position gauge");
        for p in projections {
            let _ = writeln!(
                out,
                "ordo_projection_position{{projection=\"{}\"}} {}",
                p.name, p.position
            );
        }
        let _ = writeln!(
            out,
            "# HELP ordo_projection_lag_seconds Age of the oldest event not yet projected (0 when caught up)."
        );
        let _ = writeln!(out, "# TYPE ordo_projection_lag_seconds gauge");
        for p in projections {
            let _ = writeln!(
                out,
                "ordo_projection_lag_seconds{{projection=\"{}\"}} {}",
                p.name, p.lag_seconds
            );
        }
        let _ = writeln!(
            out,
            "# HELP ordo_projection_parked_events Poison events parked by this process, per projection."
        );
        let _ = writeln!(out, "# TYPE ordo_projection_parked_events gauge");
        for p in projections {
            let _ = writeln!(
                out,
                "ordo_projection_parked_events{{projection=\"{}\"}} {}",
                p.name, p.parked
            );
        }
        let _ = writeln!(
            out,
            "# HELP ordo_replay_events_total Events applied by replays."
        );
        let _ = writeln!(out, "# TYPE ordo_replay_events_total counter");
        let _ = writeln!(out, "ordo_replay_events_total {replayed}");
        let _ = writeln!(
            out,
            "# HELP ordo_http_requests_total HTTP requests, by method, route and status."
        );
        let _ = writeln!(out, "# TYPE ordo_http_requests_total counter");
        for ((method, route, status), n) in &inner.http {
            let _ = writeln!(
                out,
                "ordo_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        histogram(
            &mut out,
            "ordo_http_request_seconds",
            "HTTP request duration.",
            &inner.http_seconds,
        );
        out
    }
}

impl Inner {
    fn clone_for_render(&self) -> Inner {
        Inner {
            commands: self.commands.clone(),
            http: self.http.clone(),
            append: self.append.clone(),
            http_seconds: self.http_seconds.clone(),
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (i, bound) in BUCKETS.iter().enumerate() {
        let n = h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}
