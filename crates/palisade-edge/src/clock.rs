//! The time, read once per poll of a connection's task. A proxied request looks at the clock
//! about ten times (its start and deadlines, the guard's timers, the origin pool's idle stamps
//! and back-offs), and one read costs 30-50 ns on a virtual machine (`clock_gettime` was 1 % of
//! the node's CPU samples at 256 connections). Within one poll of a [`clocked`] task the time is
//! that poll's start, microseconds old at most, as nginx reads its clock once per turn of its
//! event loop. Anywhere else (health checks, the admin API, tests) it is the clock itself.

use std::cell::Cell;
use std::future::Future;

use tokio::time::Instant;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The start of the current poll of a [`clocked`] task, or the clock.
pub fn now() -> Instant {
    NOW.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Seconds since the Unix epoch on the wall clock (what other machines and browsers agree on:
/// cookie expiries, HTTP dates).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Puts back what [`NOW`] held before a poll, also when the poll panics.
struct Restore(Option<Instant>);

impl Drop for Restore {
    fn drop(&mut self) {
        NOW.with(|n| n.set(self.0));
    }
}

pin_project_lite::pin_project! {
    /// A future with [`now`] read once at the start of each of its polls (see [`clocked`]).
    pub struct Clocked<F> {
        #[pin]
        fut: F,
    }
}

/// `fut`, with [`now`] read once at the start of each of its polls. A plain wrapper, not an
/// `async fn`: a connection's whole future is kept once, not twice.
pub fn clocked<F: Future>(fut: F) -> Clocked<F> {
    Clocked { fut }
}

impl<F: Future> Future for Clocked<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let _restore = Restore(NOW.with(|n| n.replace(Some(Instant::now()))));
        self.project().fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_reading_per_poll_and_the_clock_outside() {
        let start = now();
        tokio::time::advance(Duration::from_secs(1)).await;
        // Outside a clocked task: the clock itself.
        assert_eq!(now(), start + Duration::from_secs(1));
        let inside = clocked(async {
            let first = now();
            tokio::time::advance(Duration::from_secs(1)).await;
            // `advance` yields: this is a new poll, with a new reading.
            let second = now();
            (first, second)
        })
        .await;
        assert_eq!(inside, (start + Duration::from_secs(1), start + Duration::from_secs(2)));
        // The reading does not outlive the task's poll.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(now(), start + Duration::from_secs(3));
        let within_one_poll = clocked(async {
            let a = now();
            std::thread::sleep(Duration::from_millis(5));
            (a, now())
        })
        .await;
        assert_eq!(within_one_poll.0, within_one_poll.1);
    }
}
