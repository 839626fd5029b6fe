//! A small Prometheus registry: counters and fixed-bucket histograms, rendered as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// What this process's runner reports; `None` where no runner of the projection
    /// runs (`--role api`): the position and lag are then the stored checkpoint's.
    pub runner: Option<RunnerGauges>,
}

/// What `/metrics` shows of a projection's runner in this process.
#[derive(Debug, Clone)]
pub struct RunnerGauges {
    /// Events whose read-model change this process committed (parked ones not counted).
    pub applied: u64,
    pub parked: u64,
    /// Times the projection's runner was restarted after it panicked or got stuck.
    pub restarts: u64,
    /// The projection halted because the event log went backwards under it.
    pub halted: bool,
    /// The shards (log partitions) this process projects now: those it holds the lease
    /// of, or every partition where the projection is not divided between processes.
    pub shards_owned: u64,
}

/// The methods that get a label of their own; any other method name (clients may send
/// any token) is counted as `other`, so that made-up methods cannot add series.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// The `method` label of a request: a standard method, or `other`.
pub(crate) fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The service's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Clients of the event stream connected now.
    event_stream_clients: AtomicU64,
    /// Times a stream client fell behind the live feed and read from the store instead.
    event_stream_resyncs: AtomicU64,
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

    /// Counts one request. The labels must come from bounded sets (every series lives
    /// as long as the process): `method` from `method_label`, `route` a route template
    /// or `unmatched`, `status` the answer's status.
    pub fn http(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut inner = self.lock();
        *inner
            .http
            .entry((method.into(), route.into(), status))
            .or_default() += 1;
        inner.http_seconds.observe(took.as_secs_f64());
    }

    pub fn event_stream_client_joined(&self) {
        self.event_stream_clients.fetch_add(1, Ordering::Relaxed);
    }

    pub fn event_stream_client_left(&self) {
        self.event_stream_clients.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn event_stream_resynced(&self) {
        self.event_stream_resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders everything, with the gauges the caller reads from the projections.
    pub fn render(&self, projections: &[ProjectionGauges], replayed: u64) -> String {
        let inner = self.lock().clone_for_render();
        let mut out = String::new();
        let commands = inner.commands.iter().map(|((command, outcome), n)| {
            (
                format!("command=\"{command}\",outcome=\"{outcome}\""),
                n.to_string(),
            )
        });
        family(
            &mut out,
            "ordo_commands_total",
            "counter",
            "Commands handled, by command and outcome.",
            commands,
        );
        histogram(
            &mut out,
            "ordo_event_append_seconds",
            "Time to decide and durably append a command's events.",
            &inner.append,
        );
        let per_projection = |value: fn(&ProjectionGauges) -> String| {
            projections
                .iter()
                .map(move |p| (format!("projection=\"{}\"", p.name), value(p)))
        };
        let per_runner = |value: fn(&RunnerGauges) -> String| {
            projections.iter().filter_map(move |p| {
                let runner = p.runner.as_ref()?;
                Some((format!("projection=\"{}\"", p.name), value(runner)))
            })
        };
        family(
            &mut out,
            "ordo_projection_position",
            "gauge",
            "Events the projection has applied, per projection (sum of partition cursors).",
            per_projection(|p| p.position.to_string()),
        );
        family(
            &mut out,
            "ordo_projection_events_applied_total",
            "counter",
            "Events whose read-model change this process's projection committed (parked events not counted), per projection.",
            per_runner(|r| r.applied.to_string()),
        );
        family(
            &mut out,
            "ordo_projection_shards_owned",
            "gauge",
            "Shards (event-log partitions) of the projection this process projects now, per projection.",
            per_runner(|r| r.shards_owned.to_string()),
        );
        family(
            &mut out,
            "ordo_projection_lag_seconds",
            "gauge",
            "Age of the oldest event not yet projected (0 when caught up).",
            per_projection(|p| p.lag_seconds.to_string()),
        );
        family(
            &mut out,
            "ordo_projection_parked_events",
            "gauge",
            "Poison events parked by this process, per projection.",
            per_runner(|r| r.parked.to_string()),
        );
        family(
            &mut out,
            "ordo_projection_restarts_total",
            "counter",
            "Times the projection runner was restarted after it panicked or got stuck, per projection.",
            per_runner(|r| r.restarts.to_string()),
        );
        family(
            &mut out,
            "ordo_projection_halted",
            "gauge",
            "1 while the projection has halted because the event log went backwards under it (it lost events the read models hold); a rebuild (ordo replay) clears it.",
            per_runner(|r| u8::from(r.halted).to_string()),
        );
        family(
            &mut out,
            "ordo_replay_events_total",
            "counter",
            "Events applied by replays.",
            std::iter::once((String::new(), replayed.to_string())),
        );
        let http = inner.http.iter().map(|((method, route, status), n)| {
            (
                format!("method=\"{method}\",route=\"{route}\",status=\"{status}\""),
                n.to_string(),
            )
        });
        family(
            &mut out,
            "ordo_http_requests_total",
            "counter",
            "HTTP requests, by method, route and status.",
            http,
        );
        histogram(
            &mut out,
            "ordo_http_request_seconds",
            "HTTP request duration.",
            &inner.http_seconds,
        );
        family(
            &mut out,
            "ordo_event_stream_clients",
            "gauge",
            "Clients of the event stream connected now.",
            std::iter::once((
                String::new(),
                self.event_stream_clients
                    .load(Ordering::Relaxed)
                    .to_string(),
            )),
        );
        family(
            &mut out,
            "ordo_event_stream_resyncs_total",
            "counter",
            "Times an event stream client fell behind the live feed and read from the store instead.",
            std::iter::once((
                String::new(),
                self.event_stream_resyncs
                    .load(Ordering::Relaxed)
                    .to_string(),
            )),
        );
        out
    }
}

/// Appends the bounded queues' gauges and counters (see `ordo_es::admission`): what each
/// lets in at most, how many are inside now and at most so far, and how many callers it
/// turned away (each answered 503). Queue names are fixed words, so the labels are
/// bounded.
pub(crate) fn render_queues(out: &mut String, queues: &[ordo_es::AdmissionStats]) {
    let per_queue = |value: fn(&ordo_es::AdmissionStats) -> String| {
        queues
            .iter()
            .map(move |q| (format!("queue=\"{}\"", q.name), value(q)))
    };
    family(
        out,
        "ordo_queue_limit",
        "gauge",
        "Operations a bounded queue lets in at once (in flight or waiting); the next is answered 503.",
        per_queue(|q| q.limit.to_string()),
    );
    family(
        out,
        "ordo_queue_inside",
        "gauge",
        "Operations inside a bounded queue now (in flight or waiting).",
        per_queue(|q| q.inside.to_string()),
    );
    family(
        out,
        "ordo_queue_peak",
        "gauge",
        "The most operations ever inside a bounded queue at once since start.",
        per_queue(|q| q.peak.to_string()),
    );
    family(
        out,
        "ordo_queue_rejected_total",
        "counter",
        "Operations turned away (503) because a bounded queue was full.",
        per_queue(|q| q.turned_away.to_string()),
    );
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

/// One metric family: its HELP and TYPE lines, then a sample per (labels, value).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn http_series(rendered: &str) -> usize {
        rendered
            .lines()
            .filter(|l| l.starts_with("ordo_http_requests_total{"))
            .count()
    }

    #[test]
    fn standard_methods_keep_their_name_and_any_other_is_other() {
        for m in METHODS {
            assert_eq!(method_label(m), *m);
        }
        for m in ["get", "PROPFIND", "BREW", "", "GET "] {
            assert_eq!(method_label(m), "other", "{m:?}");
        }
    }

    #[test]
    fn each_queue_has_its_limit_occupancy_peak_and_rejections() {
        let queue = ordo_es::Admission::new("events", 2);
        let _held = queue.enter().expect("room");
        let _also = queue.enter().expect("room");
        assert!(queue.enter().is_err());
        let mut out = String::new();
        render_queues(&mut out, &[queue.stats()]);
        for line in [
            "ordo_queue_limit{queue=\"events\"} 2",
            "ordo_queue_inside{queue=\"events\"} 2",
            "ordo_queue_peak{queue=\"events\"} 2",
            "ordo_queue_rejected_total{queue=\"events\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in {out}");
        }
    }

    #[test]
    fn a_process_that_runs_no_projection_shows_its_position_and_lag_and_no_runner() {
        let metrics = Metrics::default();
        let gauges = |runner| ProjectionGauges {
            name: "orders".into(),
            position: 7,
            lag_seconds: 0.5,
            runner,
        };
        let projecting = metrics.render(
            &[gauges(Some(RunnerGauges {
                applied: 3,
                parked: 1,
                restarts: 0,
                halted: false,
                shards_owned: 4,
            }))],
            0,
        );
        for line in [
            "ordo_projection_position{projection=\"orders\"} 7",
            "ordo_projection_events_applied_total{projection=\"orders\"} 3",
            "ordo_projection_parked_events{projection=\"orders\"} 1",
            "ordo_projection_halted{projection=\"orders\"} 0",
            "ordo_projection_shards_owned{projection=\"orders\"} 4",
        ] {
            assert!(
                projecting.lines().any(|l| l == line),
                "{line} in {projecting}"
            );
        }
        let following = metrics.render(&[gauges(None)], 0);
        assert!(following.contains("ordo_projection_lag_seconds{projection=\"orders\"} 0.5"));
        for runner_only in [
            "ordo_projection_events_applied_total{",
            "ordo_projection_parked_events{",
            "ordo_projection_restarts_total{",
            "ordo_projection_halted{",
            "ordo_projection_shards_owned{",
        ] {
            assert!(
                !following.contains(runner_only),
                "{runner_only} in {following}"
            );
        }
    }

    #[test]
    fn made_up_methods_add_no_series() {
        let metrics = Metrics::default();
        for _ in 0..100 {
            let made_up = format!("X{}", uuid::Uuid::now_v7().simple()).to_uppercase();
            metrics.http(
                method_label(&made_up),
                "unmatched",
                404,
                Duration::from_millis(1),
            );
        }
        let rendered = metrics.render(&[], 0);
        assert_eq!(http_series(&rendered), 1, "{rendered}");
        assert!(
            rendered.contains(
                "ordo_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 100"
            ),
            "{rendered}"
        );
    }
}
