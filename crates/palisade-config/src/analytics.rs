//! Traffic analytics as nodes send them to the control plane: compact per-interval aggregates,
//! never raw logs. For each zone, an interval carries a fixed vector of counters ([`Counts`]:
//! requests, status classes, actions, cache hits, a latency histogram and a bot score
//! histogram) and the heaviest hitters (client addresses, paths, fingerprints) from a
//! [`Frequent`] sketch. Aggregates of many nodes and intervals merge by adding.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

/// A node's interval, in seconds.
pub const INTERVAL_S: u64 = 10;
/// Latency buckets' upper bounds in milliseconds; one more bucket holds the rest.
pub const LATENCY_LE_MS: [f64; 14] =
    [0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
/// Bot score bands: 1-9, 10-19, ..., 90-99.
pub const BOT_BANDS: usize = 10;

/// The counters of one zone in one interval, by position.
pub const REQUESTS: usize = 0;
/// 1xx to 5xx: `STATUS + class - 1`.
pub const STATUS: usize = 1;
/// Refused by a module (403 and other answers of its own).
pub const BLOCKED: usize = 6;
/// 429 from a rate limit.
pub const RATE_LIMITED: usize = 7;
/// Challenge pages served.
pub const CHALLENGED: usize = 8;
pub const CACHE_HITS: usize = 9;
/// `LATENCY + i` counts requests in bucket i of [`LATENCY_LE_MS`] (and one past it).
pub const LATENCY: usize = 10;
pub const BOT: usize = LATENCY + LATENCY_LE_MS.len() + 1;
pub const COUNTS: usize = BOT + BOT_BANDS;

/// Names of the counters, in order (the dashboard's and the API's words).
pub fn count_name(i: usize) -> String {
    match i {
        REQUESTS => "requests".into(),
        STATUS..=5 => format!("status_{}xx", i - STATUS + 1),
        BLOCKED => "blocked".into(),
        RATE_LIMITED => "rate_limited".into(),
        CHALLENGED => "challenged".into(),
        CACHE_HITS => "cache_hits".into(),
        i if (LATENCY..BOT).contains(&i) => match LATENCY_LE_MS.get(i - LATENCY) {
            Some(le) => format!("latency_le_{le}ms"),
            None => "latency_over".into(),
        },
        i => format!("bot_{}x", i - BOT),
    }
}

pub type Counts = Vec<u64>;

/// Adds `b` into `a` (both [`COUNTS`] long; a shorter one counts as zeros).
pub fn add_counts(a: &mut Counts, b: &[u64]) {
    if a.len() < COUNTS {
        a.resize(COUNTS, 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// The latency below which `q` (0..1) of the requests were, in ms, from counts' histogram
/// (the bucket's upper bound; None: no requests).
pub fn latency_quantile(counts: &[u64], q: f64) -> Option<f64> {
    let buckets = counts.get(LATENCY..BOT)?;
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(LATENCY_LE_MS.get(i).copied().unwrap_or(f64::INFINITY));
        }
    }
    None
}

/// Most zones in one report, and heavy hitters per kind.
pub const MAX_ZONES: usize = 256;
pub const TOP_K: usize = 20;
pub const MAX_KEY_LEN: usize = 256;

/// One node's interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Unix seconds at which the interval started, and its length.
    pub start: u64,
    pub seconds: u64,
    pub zones: BTreeMap<String, ZoneReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneReport {
    pub counts: Counts,
    #[serde(default)]
    pub top: Top,
    /// DDoS mitigations active on the node at the interval's end.
    #[serde(default)]
    pub mitigations: u64,
}

/// The heaviest hitters of an interval: (key, requests), heaviest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Top {
    #[serde(default)]
    pub ips: Vec<(String, u64)>,
    #[serde(default)]
    pub paths: Vec<(String, u64)>,
    #[serde(default)]
    pub fingerprints: Vec<(String, u64)>,
}

impl Top {
    pub fn kinds(&self) -> [(&'static str, &Vec<(String, u64)>); 3] {
        [("ip", &self.ips), ("path", &self.paths), ("fingerprint", &self.fingerprints)]
    }
}

impl Report {
    /// A node's report, as untrusted input: sizes within the limits, counters in the layout.
    pub fn check(&self) -> Result<(), String> {
        if self.zones.len() > MAX_ZONES {
            return Err(format!("zones: {}; at most {MAX_ZONES}", self.zones.len()));
        }
        if self.seconds == 0 || self.seconds > 3600 {
            return Err(format!("seconds: 1 to 3600 (is {})", self.seconds));
        }
        for (zone, z) in &self.zones {
            if zone.is_empty() || zone.len() > MAX_KEY_LEN {
                return Err(format!("zones: a name of 1 to {MAX_KEY_LEN} bytes (is {})", zone.len()));
            }
            if z.counts.len() != COUNTS {
                return Err(format!("zones.{zone}.counts: {} counters; the layout has {COUNTS}", z.counts.len()));
            }
            for (kind, list) in z.top.kinds() {
                if list.len() > TOP_K {
                    return Err(format!("zones.{zone}.top.{kind}s: {}; at most {TOP_K}", list.len()));
                }
                if let Some((k, _)) = list.iter().find(|(k, _)| k.is_empty() || k.len() > MAX_KEY_LEN) {
                    return Err(format!("zones.{zone}.top.{kind}s: a key of {} bytes; 1 to {MAX_KEY_LEN}", k.len()));
                }
            }
        }
        Ok(())
    }
}

/// Merges heavy-hitter lists by adding; keeps the `k` heaviest.
pub fn merge_top<'a>(lists: impl IntoIterator<Item = &'a [(String, u64)]>, k: usize) -> Vec<(String, u64)> {
    let mut sum: HashMap<&str, u64> = HashMap::new();
    for list in lists {
        for (key, n) in list {
            let c = sum.entry(key.as_str()).or_default();
            *c = c.saturating_add(*n);
        }
    }
    let mut out: Vec<(String, u64)> = sum.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(k);
    out
}

/// The "Frequent" (Misra-Gries) sketch: at most `cap` counters, and any key seen more than
/// `total / (cap + 1)` times is kept, its count short by at most that much. Amortised O(1) per
/// key: a full sketch decrements every counter by one for a new key, which takes back at least
/// `cap` earlier increments.
#[derive(Debug, Clone)]
pub struct Frequent<K> {
    /// foldhash (randomly seeded per map): this map is on the request path, and it never holds
    /// more than `cap` keys, so even keys crafted to collide cost at most a scan of those.
    counts: HashMap<K, u64, foldhash::fast::RandomState>,
    cap: usize,
}

impl<K: Hash + Eq + Clone + Ord> Frequent<K> {
    pub fn new(cap: usize) -> Self {
        Self { counts: HashMap::with_capacity_and_hasher(cap, foldhash::fast::RandomState::default()), cap: cap.max(1) }
    }

    pub fn add<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(c) = self.counts.get_mut(key) {
            *c += 1;
        } else if self.counts.len() < self.cap {
            self.counts.insert(key.to_owned(), 1);
        } else {
            self.counts.retain(|_, c| {
                *c -= 1;
                *c > 0
            });
        }
    }

    /// The `k` heaviest, heaviest first; then empties the sketch.
    pub fn take(&mut self, k: usize) -> Vec<(K, u64)> {
        let mut all: Vec<(K, u64)> = self.counts.drain().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_quantiles() {
        assert_eq!(COUNTS, 35);
        assert_eq!(count_name(STATUS + 4), "status_5xx");
        assert_eq!(count_name(LATENCY), "latency_le_0.5ms");
        assert_eq!(count_name(BOT - 1), "latency_over");
        assert_eq!(count_name(BOT + 9), "bot_9x");
        let mut c = vec![0; COUNTS];
        c[LATENCY + 4] = 90; // <= 10 ms
        c[LATENCY + 8] = 10; // <= 250 ms
        assert_eq!(latency_quantile(&c, 0.5), Some(10.0));
        assert_eq!(latency_quantile(&c, 0.99), Some(250.0));
        assert_eq!(latency_quantile(&vec![0; COUNTS], 0.5), None);
        let mut sum = vec![1; COUNTS];
        add_counts(&mut sum, &c);
        assert_eq!(sum[LATENCY + 4], 91);
    }

    #[test]
    fn the_sketch_keeps_heavy_hitters_under_a_flood_of_new_keys() {
        let mut f: Frequent<String> = Frequent::new(16);
        for i in 0..10_000 {
            f.add(format!("/random/{i}").as_str());
            if i % 4 == 0 {
                f.add("/heavy");
            }
            if i % 10 == 0 {
                f.add("/medium");
            }
        }
        let top = f.take(3);
        assert_eq!(top[0].0, "/heavy");
        assert_eq!(top[1].0, "/medium");
        // Short by at most total / (cap + 1).
        let total = 10_000 + 2_500 + 1_000;
        assert!(top[0].1 >= 2_500 - total / 17, "{top:?}");
        assert!(f.take(1).is_empty(), "taken means emptied");
    }

    #[test]
    fn reports_are_checked() {
        let mut r = Report { start: 1, seconds: 10, zones: BTreeMap::new() };
        r.zones.insert("demo".into(), ZoneReport { counts: vec![0; COUNTS], top: Top::default(), mitigations: 0 });
        assert_eq!(r.check(), Ok(()));
        r.zones.insert("short".into(), ZoneReport { counts: vec![0; 3], top: Top::default(), mitigations: 0 });
        assert_eq!(r.check().unwrap_err(), "zones.short.counts: 3 counters; the layout has 35");
        let merged = merge_top([&[("a".to_string(), 2)][..], &[("b".into(), 5), ("a".into(), 4)][..]], 1);
        assert_eq!(merged, vec![("a".to_string(), 6)]);
    }
}
