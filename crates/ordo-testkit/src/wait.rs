//! A bounded wait for a condition.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The first pause between two checks; each pause then doubles up to [`LONGEST_PAUSE`], so
/// that a condition met at once is seen at once and a slow one is not checked in a spin.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// Checks `check` until it gives `Ok`, for at most `within`, and returns that value; when
/// `within` has passed, the last `Err` (which says what was seen instead, for the test's
/// failure message). Checked at least once, and once more at the end of `within`.
///
/// On tokio's clock, so that it also works in tests with paused time.
///
/// ```
/// # async fn example(ready: impl Fn() -> bool) {
/// use std::time::Duration;
/// ordo_testkit::eventually(Duration::from_secs(10), || async {
///     if ready() { Ok(()) } else { Err("not ready yet") }
/// })
/// .await
/// .expect("ready within 10 s");
/// # }
/// ```
pub async fn eventually<T, E, F, Fut>(within: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let seen = check().await;
        let now = Instant::now();
        if seen.is_ok() || now >= deadline {
            return seen;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_condition_met_after_a_few_checks_gives_its_value() {
        let checks = AtomicU32::new(0);
        let value = eventually(Duration::from_secs(1), || async {
            match checks.fetch_add(1, Ordering::SeqCst) {
                n @ 3.. => Ok(n),
                n => Err(n),
            }
        })
        .await;
        assert_eq!(value, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_never_met_gives_the_last_thing_seen() {
        let checks = AtomicU32::new(0);
        let started = Instant::now();
        let seen: Result<(), u32> = eventually(Duration::from_secs(1), || async {
            Err(checks.fetch_add(1, Ordering::SeqCst))
        })
        .await;
        let last = seen.expect_err("never met");
        assert_eq!(last + 1, checks.load(Ordering::SeqCst));
        assert!(started.elapsed() >= Duration::from_secs(1), "gave up early");
    }
}
