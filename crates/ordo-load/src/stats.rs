//! Latency samples and their percentiles.
//!
//! Every sample is kept (microseconds, one `u64` each) and sorted once at the end: a
//! 20-second run at a few thousand requests per second is a few hundred thousand
//! samples, a few MB, and the percentiles are then exact (nearest rank), with no
//! histogram bucketing error to explain.

use std::time::Duration;

/// Latencies in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    micros: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub fn record(&mut self, d: Duration) {
        self.micros
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.micros.sort_unstable();
            self.sorted = true;
        }
    }

    /// The nearest-rank percentile `p` (0 < p <= 100): the smallest sample such that at
    /// least p% of the samples are at or below it. None without samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        self.sort();
        percentile_sorted(&self.micros, p).map(Duration::from_micros)
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile_sorted(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let p = p.clamp(0.0, 100.0);
    // rank = ceil(p/100 * n), at least 1.
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    Some(sorted[index])
}

/// Milliseconds with a precision that suits the value.
pub fn fmt_ms(d: Option<Duration>) -> String {
    match d {
        None => "-".to_string(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            if ms < 10.0 {
                format!("{ms:.2}")
            } else if ms < 100.0 {
                format!("{ms:.1}")
            } else {
                format!("{ms:.0}")
            }
        }
    }
}

/// A rate with no false precision: thousands separated, no decimals above 100.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        return "-".to_string();
    }
    if r < 100.0 {
        return format!("{r:.1}");
    }
    let n = r.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a / b` as a percentage, or "-" when either is missing.
pub fn fmt_ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 && a.is_finite() => format!("{:.0}%", a / b * 100.0),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 99.9), Some(100));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
    }

    #[test]
    fn percentiles_of_a_single_sample_and_of_none() {
        assert_eq!(percentile_sorted(&[7], 50.0), Some(7));
        assert_eq!(percentile_sorted(&[7], 99.9), Some(7));
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }

    #[test]
    fn the_tail_is_not_rounded_away() {
        // 1000 samples, the 2 slowest at 1 s: p99.9 must see one of them.
        let mut s = Samples::default();
        for _ in 0..998 {
            s.record(Duration::from_millis(1));
        }
        s.record(Duration::from_secs(1));
        s.record(Duration::from_secs(1));
        assert_eq!(s.percentile(99.0), Some(Duration::from_millis(1)));
        assert_eq!(s.percentile(99.9), Some(Duration::from_secs(1)));
    }

    #[test]
    fn merged_samples_are_sorted_again() {
        let mut a = Samples::default();
        a.record(Duration::from_micros(5));
        assert_eq!(a.percentile(50.0), Some(Duration::from_micros(5)));
        let mut b = Samples::default();
        b.record(Duration::from_micros(1));
        b.record(Duration::from_micros(3));
        a.merge(b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.percentile(50.0), Some(Duration::from_micros(3)));
        assert_eq!(a.percentile(1.0), Some(Duration::from_micros(1)));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(Some(Duration::from_micros(1234))), "1.23");
        assert_eq!(fmt_ms(Some(Duration::from_micros(12_345))), "12.3");
        assert_eq!(fmt_ms(Some(Duration::from_millis(250))), "250");
        assert_eq!(fmt_ms(None), "-");
        assert_eq!(fmt_rate(1_234_567.4), "1,234,567");
        assert_eq!(fmt_rate(999.6), "1,000");
        assert_eq!(fmt_rate(42.25), "42.2");
        assert_eq!(fmt_ratio(50.0, Some(200.0)), "25%");
        assert_eq!(fmt_ratio(50.0, None), "-");
        assert_eq!(fmt_ratio(50.0, Some(0.0)), "-");
    }
}
