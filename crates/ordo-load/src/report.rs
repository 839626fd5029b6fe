//! The results as markdown tables, ready to paste into BENCHMARKS.md.

use std::fmt::Write as _;
use std::time::Duration;

use crate::driver::LoadResult;
use crate::floors::FloorResult;
use crate::rebuild::RebuildOutcome;
use crate::scaleout::{RunResult, Seeded};
use crate::stats::{fmt_ms, fmt_rate, fmt_ratio};
use crate::sustain::LAG_P99_LIMIT;

/// One load run against the real server.
#[derive(Debug)]
pub struct Row {
    pub store: String,
    pub load: String,
    pub concurrency: usize,
    pub result: LoadResult,
    /// VmHWM of the server after this row (bytes).
    pub peak_rss: Option<u64>,
    /// The HTTP floor's creates/s, for create-only rows.
    pub http_floor: Option<f64>,
    /// The backend floor, for create-only rows.
    pub backend_floor: Option<BackendFloor>,
}

/// What a create-only row is compared with on its store's side.
#[derive(Clone, Debug)]
pub enum BackendFloor {
    /// Single-writer write+fdatasync rounds per second: the row shows creates per fsync.
    Fsync(f64),
    /// The backend's own append at full speed (ops/s): the row shows a percentage.
    Append(f64),
}

impl BackendFloor {
    pub fn describe(&self, creates_per_sec: f64) -> String {
        match self {
            BackendFloor::Fsync(f) if *f > 0.0 => format!("{:.1}x fsync/s", creates_per_sec / f),
            BackendFloor::Fsync(_) => "-".into(),
            BackendFloor::Append(a) => fmt_ratio(creates_per_sec, Some(*a)),
        }
    }
}

/// One floor measurement.
#[derive(Debug)]
pub struct FloorRow {
    pub name: String,
    pub concurrency: usize,
    pub result: FloorResult,
}

/// A replay measurement.
#[derive(Debug)]
pub struct ReplayRow {
    pub store: String,
    pub read_store: String,
    pub events: u64,
    pub seed_time: Duration,
    /// Events applied and the time taken (fewer than `events`: the time limit hit).
    pub catch_up: (u64, Duration),
    pub rebuild: Option<Duration>,
    /// Peak RSS of a server on these stores after a full-speed mixed load (bytes), and
    /// its command rate.
    pub loaded_rss: Option<(u64, f64, u64)>,
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.0}", b as f64 / (1024.0 * 1024.0))
    })
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The cells of a load's result that every load table shows: commands/s, queries/s,
/// command and query latency p50 / p99 / p99.9, projection lag p50 / p99.
fn load_cells(r: &mut LoadResult) -> String {
    format!(
        "{} | {} | {} / {} / {} | {} / {} / {} | {} / {}",
        fmt_rate(r.commands_per_sec()),
        fmt_rate(r.queries_per_sec()),
        fmt_ms(r.command_latency.percentile(50.0)),
        fmt_ms(r.command_latency.percentile(99.0)),
        fmt_ms(r.command_latency.percentile(99.9)),
        fmt_ms(r.query_latency.percentile(50.0)),
        fmt_ms(r.query_latency.percentile(99.0)),
        fmt_ms(r.query_latency.percentile(99.9)),
        fmt_ms(r.lag.percentile(50.0)),
        fmt_ms(r.lag.percentile(99.0)),
    )
}

pub fn load_table(rows: &mut [Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| store | load | conc | commands/s | queries/s | cmd p50 / p99 / p99.9 ms | query p50 / p99 / p99.9 ms | lag p50 / p99 ms | peak RSS MB | errors | vs HTTP floor | vs backend floor |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows.iter_mut() {
        let r = &mut row.result;
        let cps = r.commands_per_sec();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.store,
            row.load,
            row.concurrency,
            load_cells(r),
            mb(row.peak_rss),
            r.errors,
            fmt_ratio(cps, row.http_floor),
            row.backend_floor
                .as_ref()
                .map_or("-".into(), |f| f.describe(cps)),
        );
    }
    out
}

pub fn floor_table(rows: &mut [FloorRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| floor | conc | ops/s | p50 / p99 / p99.9 ms | errors |\n|---|---:|---:|---:|---:|\n",
    );
    for row in rows.iter_mut() {
        let r = &mut row.result;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} / {} | {} |",
            row.name,
            row.concurrency,
            fmt_rate(r.per_sec()),
            fmt_ms(r.latency.percentile(50.0)),
            fmt_ms(r.latency.percentile(99.0)),
            fmt_ms(r.latency.percentile(99.9)),
            r.errors,
        );
    }
    out
}

/// ordo's store append measured in-process, with its ratio to the backend floor.
#[derive(Debug)]
pub struct AppendRow {
    pub store: String,
    pub concurrency: usize,
    pub result: FloorResult,
    pub floor: BackendFloor,
}

pub fn append_table(rows: &mut [AppendRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| store append (in-process, no HTTP) | conc | appends/s | p50 / p99 / p99.9 ms | errors | vs backend floor |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for row in rows.iter_mut() {
        let r = &mut row.result;
        let rate = r.per_sec();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} / {} | {} | {} |",
            row.store,
            row.concurrency,
            fmt_rate(rate),
            fmt_ms(r.latency.percentile(50.0)),
            fmt_ms(r.latency.percentile(99.0)),
            fmt_ms(r.latency.percentile(99.9)),
            r.errors,
            row.floor.describe(rate),
        );
    }
    out
}

/// The mixed load on a server over seeded stores, alone or while the server rebuilds its
/// read models.
#[derive(Debug)]
pub struct DuringRow {
    pub store: String,
    pub read_store: String,
    /// Events seeded before the loads (which add their own).
    pub events: u64,
    pub load: String,
    pub result: LoadResult,
    /// The rebuild, and when the measured window ended, counted from the rebuild's start.
    pub rebuild: Option<(RebuildOutcome, Duration)>,
}

pub fn during_rebuild_table(rows: &mut [DuringRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| events store | read store | events seeded | load | commands/s | queries/s | cmd p50 / p99 / p99.9 ms | query p50 / p99 / p99.9 ms | lag p50 / p99 ms | errors | rebuild in the server |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows.iter_mut() {
        let rebuild = row.rebuild.map_or("-".into(), |(outcome, window_end)| {
            let span = if outcome.took >= window_end {
                "through the measured window".to_string()
            } else {
                format!(
                    "ended {:.1} s before the measured window did",
                    (window_end - outcome.took).as_secs_f64()
                )
            };
            format!(
                "{:.1} s, {} events/s, {span}",
                outcome.took.as_secs_f64(),
                fmt_rate(outcome.events_per_sec())
            )
        });
        let r = &mut row.result;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.store,
            row.read_store,
            fmt_rate(row.events as f64),
            row.load,
            load_cells(r),
            r.errors,
            rebuild,
        );
    }
    out
}

pub fn replay_table(rows: &[ReplayRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| events store | read store | events | seeding events/s | catch-up events/s | rebuild events/s | server peak RSS MB after mixed load (cmd/s, errors) |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let loaded = r.loaded_rss.map_or("-".into(), |(rss, cps, errors)| {
            format!(
                "{} ({} cmd/s, {errors} errors)",
                mb(Some(rss)),
                fmt_rate(cps)
            )
        });
        let (applied, took) = r.catch_up;
        let catch_up = if applied >= r.events {
            fmt_rate(per_sec(applied, took))
        } else {
            format!(
                "{} (time limit: {} of {} applied in {:.0} s)",
                fmt_rate(per_sec(applied, took)),
                fmt_rate(applied as f64),
                fmt_rate(r.events as f64),
                took.as_secs_f64()
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.store,
            r.read_store,
            fmt_rate(r.events as f64),
            fmt_rate(per_sec(r.events, r.seed_time)),
            catch_up,
            r.rebuild
                .map_or("- (skipped)".into(), |d| fmt_rate(per_sec(r.events, d))),
            loaded,
        );
    }
    out
}

/// One paced run of the sustainable-rate search.
#[derive(Debug)]
pub struct SustainStep {
    pub target: f64,
    pub achieved: f64,
    pub lag_p50: Option<Duration>,
    pub lag_p99: Option<Duration>,
    pub lag_samples: usize,
    pub errors: u64,
    /// The 1-minute load average just before the run.
    pub load_average: String,
    pub kept_up: bool,
}

/// A store's peak (closed-loop) create rate beside its sustainable one.
#[derive(Debug)]
pub struct SustainRow {
    pub store: String,
    pub concurrency: usize,
    pub peak: f64,
    pub peak_lag_p99: Option<Duration>,
    pub sustainable: Option<f64>,
    pub lowest_failed: Option<f64>,
    pub steps: Vec<SustainStep>,
}

pub fn sustain_table(rows: &[SustainRow]) -> String {
    let limit = fmt_ms(Some(LAG_P99_LIMIT));
    let mut out = String::new();
    let _ = write!(
        out,
        "| store | conc | peak creates/s (closed loop) | lag p99 ms at peak | sustainable creates/s (lag p99 < {limit} ms) | sustainable / peak |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let sustainable = match (row.sustainable, row.lowest_failed) {
            (Some(s), _) => fmt_rate(s),
            (None, Some(bad)) => format!("below {}", fmt_rate(bad)),
            (None, None) => "- (not searched)".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.store,
            row.concurrency,
            fmt_rate(row.peak),
            fmt_ms(row.peak_lag_p99),
            sustainable,
            row.sustainable
                .map_or("-".into(), |s| fmt_ratio(s, Some(row.peak))),
        );
    }
    out
}

/// Every paced run of the searches, in the order they ran.
pub fn sustain_steps_table(rows: &[SustainRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| store | target creates/s | achieved creates/s | lag p50 / p99 ms | lag samples | errors | load average (1 min) | keeps up |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        for step in &row.steps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                row.store,
                fmt_rate(step.target),
                fmt_rate(step.achieved),
                fmt_ms(step.lag_p50),
                fmt_ms(step.lag_p99),
                step.lag_samples,
                step.errors,
                step.load_average,
                if step.kept_up { "yes" } else { "no" },
            );
        }
    }
    out
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 / whole as f64 * 100.0)
}

/// The seeded event logs of `ordo-load scale-out`.
pub fn scale_seed_table(rows: &[Seeded]) -> String {
    let mut out = String::from(
        "| events store | partitions | events | seeding s | seeding events/s | events per partition (min - max) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let min = r.per_partition.iter().min().copied().unwrap_or(0);
        let max = r.per_partition.iter().max().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} - {} |",
            r.store,
            r.partitions,
            fmt_rate(r.events as f64),
            r.seed_time.as_secs_f64(),
            fmt_rate(per_sec(r.events, r.seed_time)),
            fmt_rate(min as f64),
            fmt_rate(max as f64),
        );
    }
    out
}

/// One row per run of `ordo-load scale-out`.
pub fn scale_run_table(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| events store | projectors | run | events | time s | events/s | first commit s | shard counts last changed s | shards under lease at the end | every shard 0 behind (ordo status) | load average before / after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in runs {
        let time = match r.took {
            Some(t) => format!("{:.1}", t.as_secs_f64()),
            None => format!(
                "{:.1} (time limit: {} of {} committed)",
                r.elapsed.as_secs_f64(),
                fmt_rate(r.committed as f64),
                fmt_rate(r.events as f64)
            ),
        };
        let status = match &r.status {
            Ok(s) if *s < 0.5 => "yes".to_string(),
            Ok(s) => format!("yes, after {s:.0} s more"),
            Err(e) => format!("**no**: {e}"),
        };
        let _ = writeln!(
            out,
            "| {} ({} partitions) | {} | {} | {} | {time} | {} | {} | {} | {} of {} | {status} | {} / {} |",
            r.store,
            r.partitions,
            r.projectors,
            r.run,
            fmt_rate(r.events as f64),
            fmt_rate(r.events_per_sec()),
            secs(r.first_commit),
            secs(r.spread_settled),
            r.processes
                .iter()
                .map(|p| p.shards_held.len())
                .sum::<usize>(),
            r.partitions,
            r.load_before,
            r.load_after,
        );
    }
    out
}

/// One row per projector process of each run of `ordo-load scale-out`.
pub fn scale_process_table(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| events store | projectors | run | process | events committed | share of all | its shards' share of the log | shards owned (metric) | shards held (leases) | shards owned over time (first seen at s) | CPU s | CPU µs / event committed | peak RSS MB | WARN / ERROR log lines |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|\n",
    );
    for r in runs {
        for (i, p) in r.processes.iter().enumerate() {
            let held = p
                .shards_held
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let over_time = p
                .owned_changes
                .iter()
                .map(|(t, n)| format!("{n} ({:.1})", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ");
            let committed = p.applied + p.parked;
            let cpu_per_event = match p.cpu {
                Some(c) if committed > 0 => {
                    format!("{:.0}", c.as_secs_f64() * 1e6 / committed as f64)
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({held}) | {} | {} | {cpu_per_event} | {} | {} |",
                r.store,
                r.projectors,
                r.run,
                i + 1,
                fmt_rate(committed as f64),
                percent(committed, r.events),
                percent(p.held_events, r.events),
                p.shards_owned.map_or("-".into(), |n| n.to_string()),
                p.shards_held.len(),
                if over_time.is_empty() {
                    "-".into()
                } else {
                    over_time
                },
                p.cpu
                    .map_or("-".into(), |c| format!("{:.1}", c.as_secs_f64())),
                mb(p.peak_rss),
                p.log_problems,
            );
        }
    }
    out
}

/// Per event store and projector count, over the runs: the medians.
pub fn scale_summary_table(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| events store | projectors | runs | events/s (each run) | events/s median | vs 1 projector | largest share of one process (median) | CPU s of the busiest process (median) | CPU s of all projectors (median) |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    let mut keys: Vec<(&str, usize)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.store, r.projectors)) {
            keys.push((r.store, r.projectors));
        }
    }
    for (store, projectors) in keys {
        let of: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.store == store && r.projectors == projectors)
            .collect();
        let rates: Vec<f64> = of.iter().map(|r| r.events_per_sec()).collect();
        let rate = median(rates.clone());
        let single = median(
            runs.iter()
                .filter(|r| r.store == store && r.projectors == 1)
                .map(RunResult::events_per_sec)
                .collect(),
        );
        let largest_share = median(
            of.iter()
                .map(|r| {
                    let top = r
                        .processes
                        .iter()
                        .map(|p| p.applied + p.parked)
                        .max()
                        .unwrap_or(0);
                    top as f64 / r.events.max(1) as f64 * 100.0
                })
                .collect(),
        );
        let cpu = |f: fn(&RunResult) -> Option<f64>| {
            median(of.iter().filter_map(|r| f(r)).collect())
                .map_or("-".into(), |c| format!("{c:.1}"))
        };
        let busiest = cpu(|r| {
            r.processes
                .iter()
                .filter_map(|p| p.cpu.map(|c| c.as_secs_f64()))
                .reduce(f64::max)
        });
        let total = cpu(|r| {
            r.processes
                .iter()
                .map(|p| p.cpu.map(|c| c.as_secs_f64()))
                .sum()
        });
        let _ = writeln!(
            out,
            "| {store} | {projectors} | {} | {} | {} | {} | {} | {busiest} | {total} |",
            of.len(),
            rates
                .iter()
                .map(|r| fmt_rate(*r))
                .collect::<Vec<_>>()
                .join(" / "),
            rate.map_or("-".into(), fmt_rate),
            match (rate, single) {
                (Some(r), Some(s)) if s > 0.0 => format!("{:.2}x", r / s),
                _ => "-".into(),
            },
            largest_share.map_or("-".into(), |s| format!("{s:.1}%")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(commands: u64, queries: u64, secs: u64) -> LoadResult {
        let mut r = LoadResult {
            elapsed: Duration::from_secs(secs),
            commands,
            queries,
            ..LoadResult::default()
        };
        for ms in 1..=100 {
            r.command_latency.record(Duration::from_millis(ms));
            r.lag.record(Duration::from_micros(ms * 100));
        }
        r
    }

    #[test]
    fn a_create_row_shows_rates_percentiles_and_both_ratios() {
        let mut rows = vec![Row {
            store: "sqlite".into(),
            load: "create".into(),
            concurrency: 16,
            result: result(20_000, 0, 10),
            peak_rss: Some(50 * 1024 * 1024),
            http_floor: Some(8000.0),
            backend_floor: Some(BackendFloor::Fsync(400.0)),
        }];
        let table = load_table(&mut rows);
        let line = table.lines().nth(2).expect("one row");
        assert_eq!(
            line,
            "| sqlite | create | 16 | 2,000 | 0.0 | 50.0 / 99.0 / 100 | - / - / - | 5.00 / 9.90 | 50 | 0 | 25% | 5.0x fsync/s |"
        );
        // Header and separator have as many columns as the row.
        let cols = |l: &str| l.matches('|').count();
        for l in table.lines() {
            assert_eq!(cols(l), cols(line), "{l}");
        }
    }

    #[test]
    fn a_load_during_a_rebuild_says_whether_the_rebuild_covered_it() {
        let outcome = |secs| RebuildOutcome {
            took: Duration::from_secs(secs),
            events: 400_000,
        };
        let row = |load: &str, rebuild| DuringRow {
            store: "sqlite".into(),
            read_store: "sqlite".into(),
            events: 400_000,
            load: load.into(),
            result: result(2_000, 1_000, 10),
            rebuild,
        };
        let mut rows = vec![
            row("mixed", None),
            row(
                "mixed during a rebuild",
                Some((outcome(20), Duration::from_secs(12))),
            ),
            row(
                "mixed during a rebuild",
                Some((outcome(8), Duration::from_secs(12))),
            ),
        ];
        let table = during_rebuild_table(&mut rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[2],
            "| sqlite | sqlite | 400,000 | mixed | 200 | 100 | 50.0 / 99.0 / 100 | - / - / - | 5.00 / 9.90 | 0 | - |"
        );
        assert!(
            lines[3].ends_with("| 20.0 s, 20,000 events/s, through the measured window |"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].ends_with(
                "| 8.0 s, 50,000 events/s, ended 4.0 s before the measured window did |"
            ),
            "{}",
            lines[4]
        );
        let cols = |l: &str| l.matches('|').count();
        for l in &lines {
            assert_eq!(cols(l), cols(lines[2]), "{l}");
        }
    }

    #[test]
    fn the_sustainable_rate_sits_beside_the_peak() {
        let step = |target: f64, achieved: f64, p99: u64, kept_up| SustainStep {
            target,
            achieved,
            lag_p50: Some(Duration::from_millis(p99 / 2)),
            lag_p99: Some(Duration::from_millis(p99)),
            lag_samples: 400,
            errors: 0,
            load_average: "1.95".into(),
            kept_up,
        };
        let rows = vec![
            SustainRow {
                store: "postgres (reads: postgres)".into(),
                concurrency: 16,
                peak: 4000.0,
                peak_lag_p99: Some(Duration::from_millis(900)),
                sustainable: Some(2000.0),
                lowest_failed: Some(4000.0),
                steps: vec![
                    step(4000.0, 3900.0, 900, false),
                    step(2000.0, 1990.0, 40, true),
                ],
            },
            SustainRow {
                store: "redis (reads: sqlite)".into(),
                concurrency: 16,
                peak: 1000.0,
                peak_lag_p99: None,
                sustainable: None,
                lowest_failed: Some(500.0),
                steps: vec![
                    step(1000.0, 700.0, 300, false),
                    step(500.0, 480.0, 200, false),
                ],
            },
        ];
        let t = sustain_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("(lag p99 < 100 ms)"), "{}", lines[0]);
        assert_eq!(
            lines[2],
            "| postgres (reads: postgres) | 16 | 4,000 | 900 | 2,000 | 50% |"
        );
        assert_eq!(
            lines[3],
            "| redis (reads: sqlite) | 16 | 1,000 | - | below 500 | - |"
        );
        let steps = sustain_steps_table(&rows);
        let lines: Vec<&str> = steps.lines().collect();
        assert_eq!(lines.len(), 2 + 4);
        assert_eq!(
            lines[3],
            "| postgres (reads: postgres) | 2,000 | 1,990 | 20.0 / 40.0 | 400 | 0 | 1.95 | yes |"
        );
        for table in [&t, &steps] {
            let cols = |l: &str| l.matches('|').count();
            let first = table.lines().next().unwrap_or_default();
            for l in table.lines() {
                assert_eq!(cols(l), cols(first), "{l}");
            }
        }
    }

    #[test]
    fn an_append_floor_is_a_percentage() {
        assert_eq!(BackendFloor::Append(1000.0).describe(700.0), "70%");
        assert_eq!(BackendFloor::Fsync(0.0).describe(700.0), "-");
    }

    #[test]
    fn floor_and_replay_tables() {
        let mut f = FloorResult {
            ops: 1000,
            elapsed: Duration::from_secs(2),
            ..FloorResult::default()
        };
        f.latency.record(Duration::from_millis(2));
        let mut rows = vec![FloorRow {
            name: "http parse-only".into(),
            concurrency: 16,
            result: f,
        }];
        let t = floor_table(&mut rows);
        assert!(
            t.contains("| http parse-only | 16 | 500 | 2.00 / 2.00 / 2.00 | 0 |"),
            "{t}"
        );

        let t = replay_table(&[ReplayRow {
            store: "sqlite".into(),
            read_store: "sqlite".into(),
            events: 1_000_000,
            seed_time: Duration::from_secs(50),
            catch_up: (1_000_000, Duration::from_secs(5)),
            rebuild: Some(Duration::from_secs(4)),
            loaded_rss: Some((60 * 1024 * 1024, 1234.0, 0)),
        }]);
        assert!(
            t.contains("| sqlite | sqlite | 1,000,000 | 20,000 | 200,000 | 250,000 | 60 (1,234 cmd/s, 0 errors) |"),
            "{t}"
        );

        let t = replay_table(&[ReplayRow {
            store: "postgres".into(),
            read_store: "postgres".into(),
            events: 1_000_000,
            seed_time: Duration::from_secs(50),
            catch_up: (300_000, Duration::from_secs(100)),
            rebuild: None,
            loaded_rss: None,
        }]);
        assert!(
            t.contains(
                "| 3,000 (time limit: 300,000 of 1,000,000 applied in 100 s) | - (skipped) | - |"
            ),
            "{t}"
        );
    }

    #[test]
    fn scale_out_tables_give_every_run_and_process() {
        use crate::scaleout::ProcessResult;
        let process = |applied, shards: Vec<u32>, cpu| ProcessResult {
            pid: 1,
            applied,
            shards_owned: Some(shards.len() as u64),
            held_events: 250 * shards.len() as u64,
            shards_held: shards,
            owned_changes: vec![(Duration::from_millis(300), 8), (Duration::from_secs(2), 4)],
            cpu: Some(Duration::from_secs(cpu)),
            ..ProcessResult::default()
        };
        let run = |projectors, run, secs, processes| RunResult {
            store: "postgres",
            partitions: 8,
            projectors,
            run,
            events: 2000,
            took: Some(Duration::from_secs(secs)),
            elapsed: Duration::from_secs(secs),
            committed: 2000,
            first_commit: Some(Duration::from_millis(400)),
            spread_settled: Some(Duration::from_secs(2)),
            status: Ok(0.0),
            processes,
            load_before: "0.50".into(),
            load_after: "2.00".into(),
        };
        let runs = vec![
            run(1, 1, 10, vec![process(2000, (0..8).collect(), 8)]),
            run(
                2,
                1,
                8,
                vec![
                    process(1000, vec![0, 1, 2, 3], 4),
                    process(1000, vec![4, 5, 6, 7], 5),
                ],
            ),
            run(
                2,
                2,
                12,
                vec![
                    process(1200, vec![0, 1, 2, 3], 5),
                    process(800, vec![4, 5, 6, 7], 4),
                ],
            ),
        ];
        let cols = |l: &str| l.matches('|').count();
        for table in [
            scale_run_table(&runs),
            scale_process_table(&runs),
            scale_summary_table(&runs),
        ] {
            let first = table.lines().next().expect("a header");
            for l in table.lines() {
                assert_eq!(cols(l), cols(first), "{l}");
            }
        }
        let summary = scale_summary_table(&runs);
        let two = summary.lines().nth(3).expect("the row of 2 projectors");
        assert_eq!(
            two,
            "| postgres | 2 | 2 | 250 / 167 | 208 | 1.04x | 55.0% | 5.0 | 9.0 |"
        );
        let processes = scale_process_table(&runs);
        assert!(
            processes.contains("| postgres | 2 | 1 | 2 | 1,000 | 50.0% | 50.0% | 4 | 4 (4, 5, 6, 7) | 8 (0.3), 4 (2.0) | 5.0 | 5000 | - | 0 |"),
            "{processes}"
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(Vec::new()), None);
    }
}
