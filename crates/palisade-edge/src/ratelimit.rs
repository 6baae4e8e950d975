//! Rate limiting: GCRA (the generic cell rate algorithm) per key, in bounded memory.
//!
//! A limit of `requests` per `period` lets a burst of `requests` through at once and then one
//! every `period / requests`: exactly `requests` pass out of any burst that arrives together.
//! Each key's state is one number (its theoretical arrival time) and a mitigation deadline. Keys
//! are the request's characteristics hashed with a per-process random key (a client cannot aim
//! at one shard or one bucket). Each limit keeps at most `MAX_RATE_LIMIT_KEYS` keys, in shards:
//! a full shard first drops keys that are idle (fully replenished), then an eighth of the
//! others, so a flood of unique keys costs counters (the flood's own, mostly), never the node's
//! memory, and costs each request O(1) amortised.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use palisade_config::{Characteristic, LimitAction};

use crate::modules::{Module, ModuleError, RequestView, Verdict};

const SHARDS: usize = 16;

/// The shards' hasher: keys are already hashes under a per-process random key
/// ([`Limit::key`]), as uniform as any second hash would make them, so the map uses them as
/// they are instead of hashing them again.
#[derive(Default, Clone, Copy)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; anything else still spreads.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, State, std::hash::BuildHasherDefault<KeyIsHash>>;

#[derive(Debug, Clone, Copy)]
struct State {
    /// Theoretical arrival time, ns on the node's clock.
    tat: u64,
    /// Limited until then (mitigation timeout), ns.
    blocked_until: u64,
}

/// Counters of one rate limit, in the node's metrics registry.
#[derive(Debug, Default)]
pub struct LimitStats {
    /// Per worker: every request a rule looks at counts here, from every core.
    pub passed: crate::metrics::WorkerGauge,
    pub limited: crate::metrics::WorkerGauge,
    pub keys: AtomicU64,
    pub evicted: AtomicU64,
}

pub struct Limit {
    pub name: String,
    expression: Option<palisade_config::rules::Expr>,
    characteristics: Vec<Characteristic>,
    /// Emission interval and burst tolerance, ns.
    interval: u64,
    tolerance: u64,
    mitigation: u64,
    action: LimitAction,
    /// For `challenge`: the proof of work's bits.
    difficulty: u8,
    shard_cap: usize,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    pub stats: Arc<LimitStats>,
}

/// The verdict of one limit on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Pass,
    /// Over the limit: retry after this many seconds.
    Limited(u64),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn masked(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4.min(32))).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4addr) => masked(IpAddr::V4(v4addr), v4, v6),
            None => {
                let mask = u128::MAX.checked_shl(128 - u32::from(v6.min(128))).unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        },
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

impl Limit {
    pub fn new(
        cfg: &palisade_config::RateLimit,
        valid: &palisade_config::ValidRateLimit,
        expression: Option<palisade_config::rules::Expr>,
        difficulty: u8,
        stats: Arc<LimitStats>,
    ) -> Self {
        let period = cfg.period_s.max(1).saturating_mul(1_000_000_000);
        let interval = (period / cfg.requests.max(1)).max(1);
        Self {
            name: cfg.name.clone(),
            expression,
            characteristics: valid.characteristics.clone(),
            interval,
            tolerance: period.saturating_sub(interval),
            mitigation: cfg.mitigation_timeout_s.saturating_mul(1_000_000_000),
            action: cfg.action,
            difficulty,
            shard_cap: (palisade_config::limits::MAX_RATE_LIMIT_KEYS / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            stats,
        }
    }

    fn key(&self, req: &RequestView<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        for c in &self.characteristics {
            match c {
                Characteristic::Ip { v4_prefix, v6_prefix } => {
                    masked(req.client_ip, *v4_prefix, *v6_prefix).hash(&mut h)
                }
                Characteristic::Header(n) => req.headers.header(n).hash(&mut h),
                Characteristic::Cookie(n) => req.headers.cookie(n).hash(&mut h),
                Characteristic::Path => req.uri.path().hash(&mut h),
                Characteristic::QueryKey(k) => query_value(req.uri.query().unwrap_or(""), k).hash(&mut h),
                Characteristic::HttpFingerprint => crate::ddos::fingerprint(req).hash(&mut h),
                Characteristic::TlsJa4 => req.ja4.hash(&mut h),
            }
        }
        h.finish()
    }

    /// `raw` hashed under this limit's per-process random key, fit for [`Limit::check_key`]:
    /// keys an attacker chooses must not pick their own buckets.
    pub fn keyed(&self, raw: u64) -> u64 {
        self.hasher.hash_one(raw)
    }

    /// GCRA for `key` at `now` (ns). `key` must come from [`Limit::key`] or [`Limit::keyed`].
    pub fn check_key(&self, key: u64, now: u64) -> Check {
        // There are always SHARDS shards: the index is in range.
        // The shard from middle bits: the low ones pick the bucket in the shard's map, the top
        // ones its tag.
        let Some(shard) = self.shards.get((key >> 32) as usize % SHARDS) else { return Check::Pass };
        let mut map = lock(shard);
        if !map.contains_key(&key) && map.len() >= self.shard_cap {
            self.evict(&mut map, now);
        }
        let s = match map.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.stats.keys.fetch_add(1, Ordering::Relaxed);
                e.insert(State { tat: 0, blocked_until: 0 })
            }
        };
        if now < s.blocked_until {
            return Check::Limited((s.blocked_until - now).div_ceil(1_000_000_000).max(1));
        }
        let tat = s.tat.max(now);
        if tat - now > self.tolerance {
            if self.mitigation > 0 {
                s.blocked_until = now + self.mitigation;
                return Check::Limited(self.mitigation.div_ceil(1_000_000_000));
            }
            return Check::Limited((tat - now - self.tolerance).div_ceil(1_000_000_000).max(1));
        }
        s.tat = tat + self.interval;
        Check::Pass
    }

    /// Makes room in a full shard: idle keys first (their allowance is whole again); if that
    /// frees less than an eighth, an eighth more, in the map's order (random per process). One
    /// pass frees room for many inserts, so a flood of new keys costs O(1) each, amortised.
    fn evict(&self, map: &mut Shard, now: u64) {
        let before = map.len();
        map.retain(|_, s| s.tat > now || s.blocked_until > now);
        let room = self.shard_cap / 8 + 1;
        if map.len() + room > self.shard_cap {
            let drop: Vec<u64> = map.keys().take(room).copied().collect();
            for k in drop {
                map.remove(&k);
            }
        }
        let gone = (before - map.len()) as u64;
        self.stats.evicted.fetch_add(gone, Ordering::Relaxed);
        self.stats.keys.fetch_sub(gone, Ordering::Relaxed);
    }
}

/// Nanoseconds on the node's (per-poll) clock.
pub(crate) fn now_ns() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    crate::clock::now().saturating_duration_since(start).as_nanos() as u64
}

/// The zone's rate limits: every limit whose expression selects the request counts it; the
/// first that is over answers: 429 with `block`, the challenge page with `challenge` (a client
/// with a clearance passes).
pub struct RateLimits {
    pub limits: Vec<Limit>,
}

impl Module for RateLimits {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError> {
        let now = now_ns();
        for l in &self.limits {
            if l.expression.as_ref().is_some_and(|e| !e.eval(req)) {
                continue;
            }
            match l.check_key(l.key(req), now) {
                Check::Pass => {
                    l.stats.passed.add(1);
                }
                Check::Limited(retry_after) => {
                    l.stats.limited.add(1);
                    match l.action {
                        LimitAction::Block => return Ok(Verdict::TooMany(retry_after)),
                        LimitAction::Challenge if !req.cleared() => return Ok(Verdict::Challenge(l.difficulty)),
                        LimitAction::Challenge | LimitAction::Log => {}
                    }
                }
            }
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u64, period_s: u64, mitigation_s: u64) -> Limit {
        let cfg = palisade_config::RateLimit {
            name: "t".into(),
            expression: None,
            characteristics: vec!["ip.src".into()],
            period_s,
            requests,
            action: LimitAction::Block,
            mitigation_timeout_s: mitigation_s,
            difficulty: None,
        };
        let valid = palisade_config::ValidRateLimit {
            expression: None,
            characteristics: vec![Characteristic::Ip { v4_prefix: 32, v6_prefix: 128 }],
        };
        Limit::new(&cfg, &valid, None, 16, Arc::default())
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_gets_exactly_the_limit_then_the_steady_rate() {
        let l = limit(10, 2, 0);
        let t0 = 100 * S;
        let passed = (0..30).filter(|_| l.check_key(1, t0) == Check::Pass).count();
        assert_eq!(passed, 10);
        assert_eq!(l.check_key(1, t0), Check::Limited(1));
        // One more every 200 ms.
        assert_eq!(l.check_key(1, t0 + S / 5), Check::Pass);
        assert_eq!(l.check_key(1, t0 + S / 5), Check::Limited(1));
        // Another key is not affected.
        assert_eq!(l.check_key(2, t0), Check::Pass);
        // A sender at exactly the rate (one per 200 ms) always passes.
        let l = limit(10, 2, 0);
        assert!((0..100).all(|i| l.check_key(7, t0 + i * S / 5) == Check::Pass));
    }

    #[test]
    fn the_mitigation_timeout_holds_a_client_down() {
        let l = limit(2, 1, 60);
        let t0 = 10 * S;
        assert_eq!((l.check_key(1, t0), l.check_key(1, t0)), (Check::Pass, Check::Pass));
        assert_eq!(l.check_key(1, t0), Check::Limited(60));
        // Well past the period, still limited: the timeout runs.
        assert_eq!(l.check_key(1, t0 + 30 * S), Check::Limited(30));
        assert_eq!(l.check_key(1, t0 + 61 * S), Check::Pass);
    }

    #[test]
    fn a_flood_of_unique_keys_stays_within_the_cap() {
        let l = limit(5, 60, 0);
        let cap = palisade_config::limits::MAX_RATE_LIMIT_KEYS as u64;
        for k in 0..(cap * 3) {
            l.check_key(l.keyed(k), 5 * S);
        }
        let held: usize = l.shards.iter().map(|s| lock(s).len()).sum();
        assert!(held as u64 <= cap, "{held} keys held; cap {cap}");
        assert_eq!(l.stats.keys.load(Ordering::Relaxed), held as u64);
        assert!(l.stats.evicted.load(Ordering::Relaxed) >= cap * 2);
    }

    #[test]
    fn characteristics_read_the_request() {
        assert_eq!(crate::codec::cookie(b"a=1; session=xyz; b=2", "session"), Some(b"xyz".as_slice()));
        assert_eq!(crate::codec::cookie(b"a=1", "session"), None);
        assert_eq!(query_value("x=1&key=abc", "key"), Some("abc"));
        assert_eq!(masked("192.0.2.77".parse().unwrap(), 24, 64), "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(masked("2001:db8:1:2:3::9".parse().unwrap(), 32, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
