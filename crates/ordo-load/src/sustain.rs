//! The sustainable command rate: the highest paced (open-loop) create rate at which the
//! projection keeps up.
//!
//! The peak (closed-loop) row says how many commands a store takes when every client
//! sends as fast as it is answered; the read models may fall further behind all the
//! while. This search paces the clients to a target rate instead, and calls a rate
//! sustainable when the clients reach it and the projection lag p99 stays under
//! [`LAG_P99_LIMIT`]. It starts at the peak and bisects below it, a fixed number of steps;
//! before each step the read models catch up with what earlier runs wrote
//! ([`crate::driver::settle`]), so a step measures its own rate's lag.

use std::time::Duration;

/// The projection lag p99 under which the read models count as keeping up.
pub const LAG_P99_LIMIT: Duration = Duration::from_millis(100);

/// A paced run counts as reaching its target at this share of it or more.
const REACHED: f64 = 0.95;

/// Fewer lag samples than this cannot show a p99 (a run where the observer saw almost
/// nothing is not a run that kept up).
const MIN_LAG_SAMPLES: usize = 10;

/// Bisection stops once the bracket is narrower than this share of its upper end.
const PRECISION: f64 = 0.1;

/// Whether a paced run kept up: it reached `target` commands per second and the lag p99
/// (of `samples` samples) stayed under the limit.
pub fn keeps_up(target: f64, achieved: f64, lag_p99: Option<Duration>, samples: usize) -> bool {
    achieved >= REACHED * target
        && samples >= MIN_LAG_SAMPLES
        && lag_p99.is_some_and(|p| p < LAG_P99_LIMIT)
}

/// The search over target rates: the peak first, then bisection between the highest
/// rate that kept up (or nothing) and the lowest that did not.
#[derive(Clone, Debug)]
pub struct RateSearch {
    peak: f64,
    steps_left: u32,
    /// The highest rate that kept up so far.
    ok: Option<f64>,
    /// The lowest rate that did not.
    bad: Option<f64>,
}

impl RateSearch {
    pub fn new(peak: f64, steps: u32) -> RateSearch {
        RateSearch {
            peak,
            steps_left: steps,
            ok: None,
            bad: None,
        }
    }

    /// The next rate to try, or None when the budget is spent or the answer is known
    /// closely enough.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps_left == 0 || !(self.peak > 0.0 && self.peak.is_finite()) {
            return None;
        }
        match (self.ok, self.bad) {
            (None, None) => Some(self.peak),
            // The peak itself kept up: nothing above it was measured to search.
            (Some(_), None) => None,
            (None, Some(bad)) => Some(bad / 2.0),
            (Some(ok), Some(bad)) if (bad - ok) > PRECISION * bad => Some((ok + bad) / 2.0),
            (Some(_), Some(_)) => None,
        }
    }

    /// What a run at `rate` showed.
    pub fn record(&mut self, rate: f64, kept_up: bool) {
        self.steps_left = self.steps_left.saturating_sub(1);
        if kept_up {
            self.ok = Some(self.ok.map_or(rate, |o| o.max(rate)));
        } else {
            self.bad = Some(self.bad.map_or(rate, |b| b.min(rate)));
        }
    }

    /// The highest rate that kept up, if any did.
    pub fn sustainable(&self) -> Option<f64> {
        self.ok
    }

    /// The lowest rate that did not keep up, if any was tried.
    pub fn lowest_failed(&self) -> Option<f64> {
        self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a store that keeps up at or below `limit`.
    fn search(peak: f64, steps: u32, limit: f64) -> (RateSearch, Vec<f64>) {
        let mut s = RateSearch::new(peak, steps);
        let mut tried = Vec::new();
        while let Some(rate) = s.next_rate() {
            tried.push(rate);
            s.record(rate, rate <= limit);
        }
        (s, tried)
    }

    #[test]
    fn a_store_that_keeps_up_at_its_peak_is_tried_once() {
        let (s, tried) = search(5000.0, 4, 9000.0);
        assert_eq!(tried, vec![5000.0]);
        assert_eq!(s.sustainable(), Some(5000.0));
        assert_eq!(s.lowest_failed(), None);
    }

    #[test]
    fn the_search_bisects_below_the_peak_within_its_budget() {
        let (s, tried) = search(4000.0, 4, 2600.0);
        assert_eq!(tried, vec![4000.0, 2000.0, 3000.0, 2500.0]);
        assert_eq!(s.sustainable(), Some(2500.0));
        assert_eq!(s.lowest_failed(), Some(3000.0));
    }

    #[test]
    fn the_search_stops_once_the_bracket_is_narrow() {
        let (s, tried) = search(4000.0, 20, 2600.0);
        // 2500 kept up, 2750 did not: the bracket is within 10% of its top.
        assert_eq!(tried, vec![4000.0, 2000.0, 3000.0, 2500.0, 2750.0]);
        assert_eq!(s.sustainable(), Some(2500.0));
        assert_eq!(s.lowest_failed(), Some(2750.0));
    }

    #[test]
    fn a_store_that_never_keeps_up_halves_each_step() {
        let (s, tried) = search(1000.0, 3, 10.0);
        assert_eq!(tried, vec![1000.0, 500.0, 250.0]);
        assert_eq!(s.sustainable(), None);
        assert_eq!(s.lowest_failed(), Some(250.0));
    }

    #[test]
    fn no_budget_or_no_peak_tries_nothing() {
        assert_eq!(RateSearch::new(1000.0, 0).next_rate(), None);
        assert_eq!(RateSearch::new(0.0, 4).next_rate(), None);
        assert_eq!(RateSearch::new(f64::NAN, 4).next_rate(), None);
    }

    #[test]
    fn keeping_up_needs_the_rate_the_lag_and_enough_samples() {
        let ms = Duration::from_millis;
        assert!(keeps_up(1000.0, 990.0, Some(ms(40)), 500));
        assert!(keeps_up(1000.0, 950.0, Some(ms(99)), 10));
        // The clients fell behind the schedule.
        assert!(!keeps_up(1000.0, 900.0, Some(ms(40)), 500));
        // The read models did.
        assert!(!keeps_up(1000.0, 1000.0, Some(ms(100)), 500));
        // Too few samples to tell, or none.
        assert!(!keeps_up(1000.0, 1000.0, Some(ms(5)), 9));
        assert!(!keeps_up(1000.0, 1000.0, None, 0));
    }
}
