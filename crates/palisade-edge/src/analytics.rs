//! What a node tells the control plane about its traffic, every interval: per zone, the
//! counters of [`palisade_config::analytics`] (the differences of the node's cumulative metrics
//! since the last interval, so the request path pays nothing for them) and the heaviest
//! hitters, which are the one thing counted per request: a [`Frequent`] sketch per worker
//! shard, for client addresses, paths and fingerprints. Only nodes linked to a control plane
//! count them, and the `analytics` kill switch stops it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use palisade_config::analytics::{Frequent, Report, Top, ZoneReport, COUNTS, TOP_K};

/// Counters per sketch and shard: any key above 1/257th of a shard's requests is kept.
const SKETCH_CAP: usize = 256;
/// Longest path kept (longer ones are cut).
const MAX_PATH: usize = 128;
const SHARDS: usize = 4;

struct Sketches {
    ips: Frequent<IpAddr>,
    paths: Frequent<String>,
    fingerprints: Frequent<String>,
}

impl Default for Sketches {
    fn default() -> Self {
        Self {
            ips: Frequent::new(SKETCH_CAP),
            paths: Frequent::new(SKETCH_CAP),
            fingerprints: Frequent::new(SKETCH_CAP),
        }
    }
}

/// A zone's heavy hitters since the last interval.
#[derive(Default)]
pub struct TopTalkers {
    shards: [Mutex<Option<Sketches>>; SHARDS],
}

impl std::fmt::Debug for TopTalkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopTalkers")
    }
}

/// The path without its query, cut at [`MAX_PATH`] bytes (on a character boundary).
fn short_path(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or(path);
    if path.len() <= MAX_PATH {
        return path;
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path.get(..end).unwrap_or_default()
}

impl TopTalkers {
    /// One request. A busy shard (another worker holds it) skips it rather than wait: the
    /// request path never blocks on analytics, and a heavy hitter is heavy in every sample.
    pub fn observe(&self, ip: IpAddr, path: &str, fingerprint: Option<&str>) {
        let Some(shard) = self.shards.get(crate::server::worker_index() % SHARDS) else { return };
        let Ok(mut guard) = shard.try_lock() else { return };
        let s = guard.get_or_insert_with(Sketches::default);
        s.ips.add(&ip);
        s.paths.add(short_path(path));
        if let Some(fp) = fingerprint {
            s.fingerprints.add(fp);
        }
    }

    /// The heaviest since the last call, over all shards; the sketches start again empty.
    pub fn take(&self) -> Top {
        let (mut ips, mut paths, mut fps) = (Vec::new(), Vec::new(), Vec::new());
        for shard in &self.shards {
            let taken = crate::lock(shard).take();
            if let Some(mut s) = taken {
                ips.push(s.ips.take(TOP_K).into_iter().map(|(k, n)| (k.to_string(), n)).collect::<Vec<_>>());
                paths.push(s.paths.take(TOP_K));
                fps.push(s.fingerprints.take(TOP_K));
            }
        }
        let merge = |lists: &[Vec<(String, u64)>]| {
            palisade_config::analytics::merge_top(lists.iter().map(Vec::as_slice), TOP_K)
        };
        Top { ips: merge(&ips), paths: merge(&paths), fingerprints: merge(&fps) }
    }
}

/// Counters since the last interval: `now` minus `before` per zone (zones without requests are
/// left out); `before` becomes `now`.
pub fn interval(
    start: u64,
    seconds: u64,
    before: &mut BTreeMap<String, Vec<u64>>,
    now: BTreeMap<String, Vec<u64>>,
    mut top: BTreeMap<String, Top>,
) -> Report {
    let mut zones = BTreeMap::new();
    for (zone, counts) in &now {
        let prev = before.get(zone);
        let delta: Vec<u64> = (0..COUNTS)
            .map(|i| {
                counts.get(i).copied().unwrap_or(0).saturating_sub(prev.and_then(|p| p.get(i)).copied().unwrap_or(0))
            })
            .collect();
        let top = top.remove(zone).unwrap_or_default();
        if delta.first().copied().unwrap_or(0) > 0 || !top.ips.is_empty() {
            zones.insert(zone.clone(), ZoneReport { counts: delta, top, mitigations: 0 });
        }
    }
    *before = now;
    Report { start, seconds, zones }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_and_deltas() {
        let t = TopTalkers::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..100 {
            t.observe(a, "/login?user=x", Some("t13d_x"));
            t.observe(format!("198.51.100.{}", i % 50).parse().unwrap(), "/", None);
        }
        let top = t.take();
        assert_eq!(top.ips[0], ("192.0.2.1".to_string(), 100));
        assert_eq!(top.paths[0], ("/".to_string(), 100));
        assert!(top.paths.iter().any(|(p, n)| p == "/login" && *n == 100), "{top:?}");
        assert_eq!(top.fingerprints, vec![("t13d_x".to_string(), 100)]);
        assert!(t.take().ips.is_empty());
        assert_eq!(short_path(&"é".repeat(100)).len(), 128);

        let mut before = BTreeMap::new();
        let mut now = BTreeMap::new();
        now.insert("demo".to_string(), vec![5; COUNTS]);
        now.insert("idle".to_string(), vec![0; COUNTS]);
        let r = interval(10, 10, &mut before, now.clone(), BTreeMap::new());
        assert_eq!(r.zones.len(), 1, "idle zones are left out");
        now.insert("demo".to_string(), vec![7; COUNTS]);
        let r = interval(20, 10, &mut before, now, BTreeMap::new());
        assert_eq!(r.zones["demo"].counts, vec![2; COUNTS]);
        assert_eq!(r.check(), Ok(()));
    }
}
