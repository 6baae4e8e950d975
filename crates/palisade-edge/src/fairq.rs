//! Origin protection: a cap on a zone's requests in flight to its origins, and a queue in front
//! of the cap that serves the quietest client source first (`[zones.concurrency]`).
//!
//! Why not first-come first-served: when many sources flood a zone, each below any per-source
//! limit, a FIFO queue fills with their requests and a legitimate client waits behind all of
//! them (and is refused when the queue is full). Here every source has a *demand*: the requests
//! it sent lately, decaying with a half-life of one second. A waiting request's place is its
//! source's demand when it arrived, so a client that sends one request a second goes ahead of
//! every source that sends many; and when the queue is full, a newcomer takes the place of the
//! waiter whose source asks most, or is refused at once (503) if that is its own source.
//!
//! A source never seen (or forgotten) starts as if it had sent two requests: a client known to
//! ask once a second goes ahead of a crowd of new addresses that appears all at once.
//!
//! A source is an IPv4 address or an IPv6 /64. Demand is kept for at most [`MAX_SOURCES`]
//! sources; past that, entries that have decayed to nothing are swept, and a source that still
//! finds no room is treated as a new source.
//!
//! The state sits behind one mutex per zone, taken once when a request arrives and once when it
//! ends; zones without `[zones.concurrency]` have no queue and pay nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::metrics::ZoneStats;

/// Sources whose demand is remembered.
pub const MAX_SOURCES: usize = 65_536;
/// Demand halves every this many milliseconds.
const HALF_LIFE_MS: f32 = 1_000.0;
/// Demand is compared in sixteenths of a request.
const SCALE: f32 = 16.0;
/// A source not seen lately starts as if it had sent this many requests: a known client that
/// sends one a second is not queued behind a sudden crowd of new addresses.
const NEW_SOURCE: f32 = 2.0;

/// Why a request did not get a slot: each is a 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full of requests from quieter sources.
    Full,
    /// A request from a quieter source took this one's place in the queue.
    PushedOut,
    /// It waited `queue_timeout_ms`.
    TimedOut,
}

pub struct FairQueue {
    max_in_flight: AtomicU64,
    max_queue: AtomicU64,
    timeout_ms: AtomicU64,
    inner: Mutex<Inner>,
    stats: Arc<ZoneStats>,
}

#[derive(Default)]
struct Inner {
    in_flight: u64,
    /// Waiters by (demand of their source when they arrived, arrival order).
    waiting: BTreeMap<(u32, u64), oneshot::Sender<bool>>,
    seq: u64,
    demand: HashMap<u64, (f32, u64)>,
}

impl Inner {
    /// Counts one request from `source` at `now`; its demand, scaled.
    fn charge(&mut self, source: u64, now: u64) -> u32 {
        let decay = |(d, at): (f32, u64)| d * (-(now.saturating_sub(at) as f32) / HALF_LIFE_MS).exp2();
        if self.demand.len() >= MAX_SOURCES && !self.demand.contains_key(&source) {
            self.demand.retain(|_, e| decay(*e) >= 0.05);
            if self.demand.len() >= MAX_SOURCES {
                return ((NEW_SOURCE + 1.0) * SCALE) as u32;
            }
        }
        let e = self.demand.entry(source).or_insert((NEW_SOURCE, now));
        let d = decay(*e) + 1.0;
        *e = (d, now);
        (d * SCALE).min(u32::MAX as f32) as u32
    }

    fn publish(&self, stats: &ZoneStats) {
        stats.queue_waiting.store(self.waiting.len() as u64, Ordering::Relaxed);
        stats.origin_in_flight.store(self.in_flight, Ordering::Relaxed);
    }
}

impl FairQueue {
    pub fn new(c: &palisade_config::Concurrency, stats: Arc<ZoneStats>) -> Self {
        let q = Self {
            max_in_flight: AtomicU64::new(0),
            max_queue: AtomicU64::new(0),
            timeout_ms: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
            stats,
        };
        q.configure(c);
        q
    }

    /// New limits for a queue in use (a reload): requests in flight keep their slots; a lower
    /// cap is reached as they end.
    pub fn configure(&self, c: &palisade_config::Concurrency) {
        self.max_in_flight.store(c.max_in_flight.max(1), Ordering::Relaxed);
        self.max_queue.store(c.max_queue, Ordering::Relaxed);
        self.timeout_ms.store(c.queue_timeout_ms, Ordering::Relaxed);
    }

    /// A slot for a request from `client`, now or after waiting its turn.
    pub async fn acquire(self: &Arc<Self>, client: IpAddr) -> Result<Permit, Refused> {
        let (key, rx) = {
            let mut g = crate::lock(&self.inner);
            let demand = g.charge(crate::ddos::source_key(client), crate::pool::now_ms());
            if g.in_flight < self.max_in_flight.load(Ordering::Relaxed) {
                g.in_flight += 1;
                g.publish(&self.stats);
                return Ok(Permit(self.clone()));
            }
            if g.waiting.len() as u64 >= self.max_queue.load(Ordering::Relaxed) {
                // Full: the waiter from the busiest source gives way to a quieter newcomer.
                let busiest = g.waiting.last_key_value().map(|(k, _)| k.0);
                match busiest {
                    Some(d) if d > demand => {
                        if let Some((_, w)) = g.waiting.pop_last() {
                            let _ = w.send(false);
                        }
                    }
                    _ => {
                        self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                        return Err(Refused::Full);
                    }
                }
            }
            let (tx, rx) = oneshot::channel();
            g.seq += 1;
            let key = (demand, g.seq);
            g.waiting.insert(key, tx);
            g.publish(&self.stats);
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            (key, rx)
        };
        let mut ticket = Ticket { queue: self, key, rx, settled: false };
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let outcome = match tokio::time::timeout(timeout, &mut ticket.rx).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(Refused::PushedOut),
            Err(_) => {
                let removed = {
                    let mut g = crate::lock(&self.inner);
                    let removed = g.waiting.remove(&key).is_some();
                    g.publish(&self.stats);
                    removed
                };
                // Not there: granted (or pushed out) just as the time ran out.
                if removed {
                    Err(Refused::TimedOut)
                } else if ticket.rx.try_recv() == Ok(true) {
                    Ok(())
                } else {
                    Err(Refused::PushedOut)
                }
            }
        };
        ticket.settled = true;
        match outcome {
            Ok(()) => Ok(Permit(self.clone())),
            Err(r) => {
                let counter = match r {
                    Refused::TimedOut => &self.stats.queue_timeouts,
                    _ => &self.stats.queue_pushed_out,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(r)
            }
        }
    }

    /// A slot is free: it goes to the waiter from the quietest source, or back to the pool.
    fn release(&self) {
        let mut g = crate::lock(&self.inner);
        if g.in_flight <= self.max_in_flight.load(Ordering::Relaxed) {
            while let Some((_, w)) = g.waiting.pop_first() {
                if w.send(true).is_ok() {
                    g.publish(&self.stats);
                    return;
                }
            }
        }
        g.in_flight = g.in_flight.saturating_sub(1);
        g.publish(&self.stats);
    }
}

/// A request's slot; released (handed to the next waiter) when dropped.
pub struct Permit(Arc<FairQueue>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A place in the queue. Dropped unsettled (the client went away while waiting), it leaves the
/// queue, and passes on a slot it was granted in the meantime.
struct Ticket<'a> {
    queue: &'a FairQueue,
    key: (u32, u64),
    rx: oneshot::Receiver<bool>,
    settled: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let removed = {
            let mut g = crate::lock(&self.queue.inner);
            let removed = g.waiting.remove(&self.key).is_some();
            g.publish(&self.queue.stats);
            removed
        };
        if !removed && self.rx.try_recv() == Ok(true) {
            self.queue.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max_in_flight: u64, max_queue: u64, timeout_ms: u64) -> Arc<FairQueue> {
        let c = palisade_config::Concurrency { max_in_flight, max_queue, queue_timeout_ms: timeout_ms };
        Arc::new(FairQueue::new(&c, Arc::default()))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn the_quietest_source_goes_first_and_a_full_queue_pushes_out_the_busiest() {
        let q = queue(1, 3, 10_000);
        let held = q.acquire(ip(1)).await.unwrap();
        // The flooder queues three requests (its demand grows with each).
        let mut flood = Vec::new();
        for _ in 0..3 {
            let q = q.clone();
            flood.push(tokio::spawn(async move { q.acquire(ip(2)).await.map(|_| ()) }));
            tokio::task::yield_now().await;
        }
        // The queue is full; a quiet source takes the busiest waiter's place.
        let quiet = {
            let q = q.clone();
            tokio::spawn(async move { q.acquire(ip(3)).await.map(|_| "quiet") })
        };
        tokio::task::yield_now().await;
        assert_eq!(q.stats.queue_waiting.load(Ordering::Relaxed), 3);
        // The flooder's fourth is refused at once: its source is the busiest.
        assert_eq!(q.acquire(ip(2)).await.err(), Some(Refused::Full));
        drop(held);
        assert_eq!(quiet.await.unwrap(), Ok("quiet"));
        let mut results = Vec::new();
        for f in flood {
            results.push(f.await.unwrap());
        }
        assert_eq!(results.iter().filter(|r| **r == Err(Refused::PushedOut)).count(), 1, "{results:?}");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2, "{results:?}");
        assert_eq!(q.stats.origin_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(q.stats.queue_waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_waiter_times_out_and_a_cancelled_waiter_leaves_no_slot_behind() {
        let q = queue(1, 10, 50);
        let held = q.acquire(ip(1)).await.unwrap();
        assert_eq!(q.acquire(ip(2)).await.err(), Some(Refused::TimedOut));
        // A waiter whose client goes away.
        let gone = {
            let q = q.clone();
            tokio::spawn(async move { q.acquire(ip(3)).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(q.stats.queue_waiting.load(Ordering::Relaxed), 0);
        drop(held);
        // The slot is free again.
        let again = q.acquire(ip(4)).await;
        assert!(again.is_ok());
        assert_eq!(q.stats.origin_in_flight.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn demand_decays_and_memory_stays_bounded() {
        let mut inner = Inner::default();
        // A new source starts at 2.
        assert_eq!(inner.charge(1, 0), 48);
        assert_eq!(inner.charge(1, 0), 64);
        // Two half-lives later: 4 / 4 + 1.
        assert_eq!(inner.charge(1, 2_000), 32);
        for s in 0..(MAX_SOURCES as u64 + 10) {
            inner.charge(s + 10, 5_000);
        }
        assert!(inner.demand.len() <= MAX_SOURCES);
        // An hour later every entry has decayed: the sweep makes room.
        inner.charge(u64::MAX, 3_600_000);
        assert_eq!(inner.demand.len(), 1);
    }
}
