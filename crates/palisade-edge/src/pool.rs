//! Origin pools: load balancing, passive ejection and the state active health checks update.
//!
//! An [`OriginState`] outlives config reloads (a snapshot reuses the state of an origin with the
//! same zone and address), so a reload never forgets that an origin is down.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use palisade_config::{Balance, PassiveHealth};

use crate::metrics::{OriginStats, WorkerGauge};
use crate::upstream::OriginConns;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's first look at the clock (monotonic).
pub fn now_ms() -> u64 {
    u64::try_from(crate::clock::now().into_std().saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

/// A small, fast, non-cryptographic per-thread random source (xorshift64*), for p2c and ids.
pub fn fast_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_ms());
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Stable 64-bit hash (FNV-1a with a splitmix finaliser): the same key maps to the same origin on
/// every node and across restarts.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    std::hash::Hasher::write(&mut h, bytes);
    std::hash::Hasher::finish(&h)
}

/// [`stable_hash`] as a streaming [`std::hash::Hasher`], for keys made of several parts (the DDoS
/// detector's request fingerprints): the same on every node and after a restart.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// Live state of one origin.
#[derive(Debug)]
pub struct OriginState {
    pub addr: SocketAddr,
    pub label: String,
    /// Result of active health checks (true until checks say otherwise).
    pub active_healthy: AtomicBool,
    pub check_successes: AtomicU32,
    pub check_failures: AtomicU32,
    /// Passive ejection: out of rotation until this time (see [`now_ms`]).
    pub ejected_until_ms: AtomicU64,
    pub consecutive_failures: AtomicU32,
    pub ejections_in_a_row: AtomicU32,
    pub in_flight: WorkerGauge,
    pub stats: Arc<OriginStats>,
    /// Connections to this origin, pooled per worker.
    pub conns: OriginConns,
    authority: Option<hyper::http::uri::Authority>,
}

impl OriginState {
    pub fn new(addr: SocketAddr, stats: Arc<OriginStats>, workers: usize) -> Self {
        let label = addr.to_string();
        Self {
            addr,
            authority: label.parse().ok(),
            label,
            active_healthy: AtomicBool::new(true),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            in_flight: WorkerGauge::default(),
            stats,
            conns: OriginConns::new(addr, workers),
        }
    }

    /// `http://ip:port/path` for an HTTP/2 origin (which needs the scheme and authority).
    pub fn absolute_uri(&self, pq: Option<&hyper::http::uri::PathAndQuery>) -> hyper::Uri {
        let mut parts = hyper::http::uri::Parts::default();
        parts.scheme = Some(hyper::http::uri::Scheme::HTTP);
        parts.authority = self.authority.clone();
        parts.path_and_query = Some(pq.cloned().unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")));
        hyper::Uri::from_parts(parts).unwrap_or_default()
    }

    pub fn available(&self) -> bool {
        self.available_at(now_ms())
    }

    /// [`OriginState::available`] with the clock already read (one read per pick, not per origin).
    pub fn available_at(&self, now_ms: u64) -> bool {
        self.active_healthy.load(Ordering::Relaxed) && now_ms >= self.ejected_until_ms.load(Ordering::Relaxed)
    }
}

/// One request counted in an origin's `in_flight` (least-connections, p2c) for as long as the
/// lease lives: a cancelled request can never leave the count behind. [`OriginLease::keep`]
/// hands the count to the request's record ([`crate::finish::Finish`]), which ends it.
#[derive(Debug)]
pub struct OriginLease<'a>(&'a OriginState);

impl<'a> OriginLease<'a> {
    pub fn new(origin: &'a OriginState) -> Self {
        origin.in_flight.add(1);
        Self(origin)
    }

    /// Leaves the request counted; whoever keeps it calls [`OriginState::end_lease`].
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for OriginLease<'_> {
    fn drop(&mut self) {
        self.0.end_lease();
    }
}

impl OriginState {
    /// Ends the count of a lease that was kept.
    pub fn end_lease(&self) {
        self.in_flight.sub(1);
    }
}

/// What happened when we used an origin, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Debug)]
pub struct Pool {
    pub origins: Vec<Arc<OriginState>>,
    weights: Vec<u32>,
    balance: Balance,
    passive: PassiveHealth,
    schedule: Vec<u16>,
    ring: Vec<(u64, u16)>,
    cursor: AtomicU64,
}

impl Pool {
    pub fn new(origins: Vec<(Arc<OriginState>, u32)>, balance: Balance, passive: PassiveHealth) -> Self {
        let weights: Vec<u32> = origins.iter().map(|(_, w)| (*w).max(1)).collect();
        let origins: Vec<Arc<OriginState>> = origins.into_iter().map(|(o, _)| o).collect();
        let schedule = smooth_wrr_schedule(&weights);
        let ring = if balance == Balance::ConsistentHash { build_ring(&origins, &weights) } else { Vec::new() };
        Self { origins, weights, balance, passive, schedule, ring, cursor: AtomicU64::new(fast_random() % 1024) }
    }

    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// True when picks depend on the request's hash key.
    pub fn is_hash(&self) -> bool {
        self.balance == Balance::ConsistentHash
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&Arc<OriginState>> {
        self.origins.get(i)
    }

    /// Chooses an origin. `hash` is the request's key for consistent hashing; `tried` marks
    /// origins already used by this request (retries go elsewhere). Origins out of rotation are
    /// skipped; when none is in rotation, every untried origin is a candidate again ("panic
    /// mode", as in Envoy): better to try a maybe-down origin than to refuse outright.
    pub fn pick(&self, hash: u64, tried: u64) -> Option<usize> {
        self.pick_among(hash, tried, true).or_else(|| self.pick_among(hash, tried, false))
    }

    fn candidate(&self, i: usize, tried: u64, need_available: bool, now: u64) -> bool {
        let untried = i >= 64 || tried & (1u64 << i) == 0;
        untried && (!need_available || self.origins.get(i).is_some_and(|o| o.available_at(now)))
    }

    fn pick_among(&self, hash: u64, tried: u64, need_available: bool) -> Option<usize> {
        let n = self.origins.len();
        if n == 0 {
            return None;
        }
        let now = now_ms();
        let ok = |i: usize| self.candidate(i, tried, need_available, now);
        match self.balance {
            Balance::RoundRobin => {
                let len = self.schedule.len();
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) as usize;
                (0..len)
                    .map(|k| (start + k) % len)
                    .filter_map(|k| self.schedule.get(k))
                    .map(|i| usize::from(*i))
                    .find(|i| ok(*i))
            }
            Balance::LeastConnections => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) as usize;
                let mut best: Option<(usize, u64, u64)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !ok(i) {
                        continue;
                    }
                    let load = self.origins.get(i).map(|o| o.in_flight.get()).unwrap_or(u64::MAX);
                    let w = u64::from(self.weights.get(i).copied().unwrap_or(1));
                    // Compare load/weight without division: a/wa < b/wb  <=>  a*wb < b*wa.
                    if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                        best = Some((i, load, w));
                    }
                }
                best.map(|(i, _, _)| i)
            }
            Balance::PowerOfTwoChoices => {
                // Two distinct random candidates, the less loaded wins. Random probes first (no
                // allocation); a sparse pool falls back to a scan from a random start.
                let load = |i: usize| self.origins.get(i).map(|o| o.in_flight.get()).unwrap_or(u64::MAX);
                let r = fast_random();
                let mut first = None;
                for k in 0..4u64 {
                    let i = ((r >> (k * 16)) % n as u64) as usize;
                    if ok(i) && first != Some(i) {
                        match first {
                            None => first = Some(i),
                            Some(a) => return Some(if load(a) <= load(i) { a } else { i }),
                        }
                    }
                }
                let start = (r % n as u64) as usize;
                let mut found = first.into_iter().chain((0..n).map(|k| (start + k) % n).filter(|i| ok(*i)));
                let a = found.next()?;
                match found.find(|i| *i != a) {
                    Some(b) => Some(if load(a) <= load(b) { a } else { b }),
                    None => Some(a),
                }
            }
            Balance::ConsistentHash => {
                let len = self.ring.len();
                if len == 0 {
                    return None;
                }
                let start = self.ring.partition_point(|(h, _)| *h < hash);
                (0..len).filter_map(|k| self.ring.get((start + k) % len)).map(|(_, i)| usize::from(*i)).find(|i| ok(*i))
            }
        }
    }

    /// Records the outcome of using origin `i` (passive health).
    pub fn record(&self, i: usize, outcome: Outcome) {
        let Some(o) = self.origins.get(i) else { return };
        match outcome {
            // Read before written: a success changes nothing in the usual case, and a line
            // that every worker reads stays in every core's cache while nobody writes it.
            Outcome::Success => {
                if o.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    o.consecutive_failures.store(0, Ordering::Relaxed);
                }
                if o.ejections_in_a_row.load(Ordering::Relaxed) != 0
                    && now_ms() >= o.ejected_until_ms.load(Ordering::Relaxed)
                {
                    o.ejections_in_a_row.store(0, Ordering::Relaxed);
                }
            }
            Outcome::Failure => {
                let threshold = self.passive.consecutive_failures;
                let n = o.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                // Failures while already ejected (every origin down, so ejected ones are still
                // tried) neither extend nor log the ejection again: one line per ejection, not
                // one per few requests.
                if threshold > 0 && n >= threshold && now_ms() < o.ejected_until_ms.load(Ordering::Relaxed) {
                    o.consecutive_failures.store(0, Ordering::Relaxed);
                } else if threshold > 0 && n >= threshold {
                    o.consecutive_failures.store(0, Ordering::Relaxed);
                    let k = o.ejections_in_a_row.fetch_add(1, Ordering::Relaxed).min(20);
                    let backoff = self.passive.ejection_ms.saturating_mul(1u64 << k).min(self.passive.max_ejection_ms);
                    o.ejected_until_ms.store(now_ms() + backoff, Ordering::Relaxed);
                    o.stats.ejections.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(origin = %o.label, backoff_ms = backoff, "origin ejected after {n} consecutive failures");
                }
            }
        }
    }
}

/// nginx's smooth weighted round-robin, unrolled into a schedule of one full cycle, so that a pick
/// is one atomic increment and weights interleave (5:1:1 gives a a b a c a a, not a a a a a b c).
fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0usize;
        let mut best_val = i64::MIN;
        for (i, (c, w)) in current.iter_mut().zip(weights).enumerate() {
            *c += i64::from(*w);
            if *c > best_val {
                best_val = *c;
                best = i;
            }
        }
        if let Some(c) = current.get_mut(best) {
            *c -= total;
        }
        out.push(u16::try_from(best).unwrap_or(0));
    }
    out
}

const RING_POINTS_PER_WEIGHT: u32 = 40;

fn build_ring(origins: &[Arc<OriginState>], weights: &[u32]) -> Vec<(u64, u16)> {
    let mut ring = Vec::new();
    for (i, (o, w)) in origins.iter().zip(weights).enumerate() {
        for p in 0..(w * RING_POINTS_PER_WEIGHT) {
            let key = format!("{}-{p}", o.label);
            ring.push((stable_hash(key.as_bytes()), u16::try_from(i).unwrap_or(0)));
        }
    }
    ring.sort_unstable();
    ring
}

/// A retry budget shared by one zone: retries in flight may be at most `percent` of requests in
/// flight, but `min_concurrent` are always allowed. Stops retries from multiplying load when an
/// origin fleet is failing.
#[derive(Debug)]
pub struct RetryBudget {
    pub requests_in_flight: WorkerGauge,
    pub retries_in_flight: AtomicU64,
    percent: u64,
    min_concurrent: u64,
}

impl RetryBudget {
    pub fn new(percent: u64, min_concurrent: u64) -> Self {
        Self {
            requests_in_flight: WorkerGauge::default(),
            retries_in_flight: AtomicU64::new(0),
            percent,
            min_concurrent,
        }
    }

    /// Takes a retry token if the budget allows; give it back with [`RetryBudget::release`].
    pub fn try_acquire(&self) -> bool {
        let allowed = (self.requests_in_flight.get() * self.percent / 100).max(self.min_concurrent);
        let current = self.retries_in_flight.fetch_add(1, Ordering::Relaxed);
        if current < allowed {
            true
        } else {
            self.retries_in_flight.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    pub fn release(&self) {
        self.retries_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Converts a config duration in milliseconds.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_stable_hash_never_changes() {
        // Consistent hashing maps clients by it on every node and across versions: a change
        // would move every client to another origin on upgrade.
        assert_eq!(stable_hash(b"user42"), 0x7243_fb2f_9498_7c17);
        let mut h = StableHasher::default();
        std::hash::Hasher::write(&mut h, b"user");
        std::hash::Hasher::write(&mut h, b"42");
        assert_eq!(std::hash::Hasher::finish(&h), stable_hash(b"user42"));
    }

    fn pool(weights: &[u32], balance: Balance) -> Pool {
        let origins = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
                (Arc::new(OriginState::new(addr, Arc::default(), 1)), *w)
            })
            .collect();
        Pool::new(origins, balance, PassiveHealth { consecutive_failures: 3, ejection_ms: 1000, max_ejection_ms: 4000 })
    }

    fn counts(p: &Pool, n: usize, hash: impl Fn(usize) -> u64) -> HashMap<usize, usize> {
        let mut m = HashMap::new();
        for k in 0..n {
            *m.entry(p.pick(hash(k), 0).unwrap()).or_default() += 1;
        }
        m
    }

    #[test]
    fn weighted_round_robin_follows_weights_and_interleaves() {
        let p = pool(&[5, 1, 1], Balance::RoundRobin);
        let c = counts(&p, 700, |_| 0);
        assert_eq!((c[&0], c[&1], c[&2]), (500, 100, 100));
        assert_eq!(smooth_wrr_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn unavailable_origins_are_skipped_and_panic_mode_uses_all() {
        let p = pool(&[1, 1, 1], Balance::RoundRobin);
        p.origins[1].active_healthy.store(false, Ordering::Relaxed);
        let c = counts(&p, 300, |_| 0);
        assert!(!c.contains_key(&1));
        for o in &p.origins {
            o.active_healthy.store(false, Ordering::Relaxed);
        }
        assert!(p.pick(0, 0).is_some(), "panic mode still picks");
        // Retries never go back to a tried origin.
        assert_eq!(p.pick(0, 0b011), Some(2));
        assert_eq!(p.pick(0, 0b111), None);
    }

    #[test]
    fn least_connections_prefers_the_idle_origin() {
        let p = pool(&[1, 1, 1], Balance::LeastConnections);
        p.origins[0].in_flight.add(5);
        p.origins[2].in_flight.add(3);
        for _ in 0..10 {
            assert_eq!(p.pick(0, 0), Some(1));
        }
    }

    #[test]
    fn p2c_avoids_the_busiest_origin() {
        let p = pool(&[1, 1, 1, 1], Balance::PowerOfTwoChoices);
        p.origins[3].in_flight.add(100);
        let c = counts(&p, 1000, |_| 0);
        assert!(!c.contains_key(&3), "{c:?}");
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_little_when_an_origin_leaves() {
        let p = pool(&[1, 1, 1, 1], Balance::ConsistentHash);
        let before: Vec<usize> =
            (0..2000).map(|k| p.pick(stable_hash(format!("user{k}").as_bytes()), 0).unwrap()).collect();
        let again: Vec<usize> =
            (0..2000).map(|k| p.pick(stable_hash(format!("user{k}").as_bytes()), 0).unwrap()).collect();
        assert_eq!(before, again);
        let spread = before.iter().fold(HashMap::new(), |mut m, i| {
            *m.entry(*i).or_insert(0) += 1;
            m
        });
        assert!(spread.values().all(|v| *v > 300), "{spread:?}");
        p.origins[2].active_healthy.store(false, Ordering::Relaxed);
        let after: Vec<usize> =
            (0..2000).map(|k| p.pick(stable_hash(format!("user{k}").as_bytes()), 0).unwrap()).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(moved, before.iter().filter(|i| **i == 2).count(), "only the keys of the removed origin move");
    }

    #[test]
    fn passive_ejection_backs_off_exponentially() {
        let p = pool(&[1, 1], Balance::RoundRobin);
        for _ in 0..3 {
            p.record(0, Outcome::Failure);
        }
        assert!(!p.origins[0].available());
        let first = p.origins[0].ejected_until_ms.load(Ordering::Relaxed) - now_ms();
        assert!(first <= 1000 && first > 900, "{first}");
        p.origins[0].ejected_until_ms.store(0, Ordering::Relaxed);
        for _ in 0..3 {
            p.record(0, Outcome::Failure);
        }
        let second = p.origins[0].ejected_until_ms.load(Ordering::Relaxed) - now_ms();
        assert!(second > 1900 && second <= 2000, "{second}");
        assert_eq!(p.origins[0].stats.ejections.load(Ordering::Relaxed), 2);
        // More failures while ejected (all origins down, ejected ones tried anyway): no new
        // ejection, no longer back-off.
        for _ in 0..9 {
            p.record(0, Outcome::Failure);
        }
        let still = p.origins[0].ejected_until_ms.load(Ordering::Relaxed) - now_ms();
        assert!(still <= 2000, "{still}");
        assert_eq!(p.origins[0].stats.ejections.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn retry_budget_caps_concurrent_retries() {
        let b = RetryBudget::new(20, 2);
        assert!(b.try_acquire());
        assert!(b.try_acquire());
        assert!(!b.try_acquire());
        b.requests_in_flight.add(100);
        let granted = (0..50).filter(|_| b.try_acquire()).count();
        assert_eq!(granted, 18);
    }
}
