//! Automatic L7 DDoS mitigation (`[zones.ddos]`, on by default).
//!
//! On the request path the `ddos` module only counts: each worker adds the request to its own
//! one-second window (a total, and for one request in eight two Space-Saving top-k tables, of
//! request fingerprints and of client sources), then checks the mitigations in force (one
//! relaxed load when there are none).
//! A request fingerprint is a hash of the method, the path's shape (runs of digits folded), the
//! header names in order, the user agent and the HTTP version: a flood made by one tool looks the
//! same however many addresses it comes from.
//!
//! Once a second, off the request path ([`run`]), the node merges the workers' windows per zone.
//! Outside a surge the rate teaches the baseline (an exponential moving average). A surge is a
//! rate of at least `min_rps` and `surge_factor` times the baseline; in a surge, a fingerprint or
//! a source that makes up `concentration_percent` of the second's requests gets a mitigation:
//! its requests are refused (`block`: 429 with `Retry-After`), held to `rate_limit_rps` per
//! source (`rate_limit`), or only counted (`log`). A mitigation stays while its traffic still
//! surges and ends `hold_s` after that stops. The node's admin API lists them (`GET /ddos`) and
//! `/metrics` counts them; the `ddos` kill switch turns the module off.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use palisade_config::{Ddos, DdosAction};
use serde::Serialize;

use crate::metrics::{WorkerGauge, ZoneStats};
use crate::modules::{Module, ModuleError, RequestView, Verdict};

/// Entries in each worker's top-k tables.
const TOP_K: usize = 16;
/// One request in this many is fingerprinted into the top-k tables (the total counts them all):
/// at the smallest surge that matters (`min_rps`, 200 by default) that is 25 a second, plenty to
/// find a fingerprint behind half of them, for an eighth of the work.
const SAMPLE: u64 = 8;
/// How fast the baseline follows the rate outside a surge: per second, after learning.
const BASELINE_ALPHA: f64 = 1.0 / 120.0;

/// Space-Saving heavy hitters: a key not in a full table replaces the smallest entry and
/// inherits its count (an overestimate by at most that count).
#[derive(Debug, Default, Clone)]
struct TopK {
    entries: Vec<(u64, u64)>,
}

impl TopK {
    fn add(&mut self, key: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == key) {
            e.1 += 1;
        } else if self.entries.len() < TOP_K {
            self.entries.push((key, 1));
        } else if let Some(min) = self.entries.iter_mut().min_by_key(|e| e.1) {
            *min = (key, min.1 + 1);
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    total: u64,
    /// Requests put in the tables (one in [`SAMPLE`]).
    sampled: u64,
    fingerprints: TopK,
    sources: TopK,
}

/// What a mitigation matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Fingerprint(u64),
    Source(u64),
}

pub struct Mitigation {
    pub target: Target,
    pub action: DdosAction,
    started_ms: u64,
    /// The last second in which its traffic still surged.
    last_surge_ms: AtomicU64,
    /// A readable account of the first request it matched (method, path, user agent...).
    sample: OnceLock<String>,
    /// Per worker: every refused request of a flood counts here, from both cores.
    pub refused: WorkerGauge,
    pub matched: WorkerGauge,
    /// `matched` at the last analysis: its traffic in the second since is exact.
    matched_before: AtomicU64,
}

/// The state of one zone's detector; kept across reloads (lent by zone name).
pub struct Detector {
    settings: Mutex<Ddos>,
    windows: Box<[Mutex<Window>]>,
    tick: Mutex<TickState>,
    active: ArcSwap<Vec<Arc<Mitigation>>>,
    /// `active` is not empty: a request that is not sampled reads this one flag, not `active`.
    any_active: std::sync::atomic::AtomicBool,
    limiter: ArcSwap<crate::ratelimit::Limit>,
    stats: Arc<ZoneStats>,
}

struct TickState {
    /// Seconds analysed so far: the first `learn_s` only teach the baseline (their mean).
    seconds: u64,
    last_ms: u64,
    baseline: f64,
}

/// A client source: an IPv4 address, or the /64 of an IPv6 address.
pub fn source_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) as u64 | (1 << 63),
        },
    }
}

fn source_text(key: u64) -> String {
    if key >> 32 == 0 {
        std::net::Ipv4Addr::from(key as u32).to_string()
    } else {
        let v6 = std::net::Ipv6Addr::from(u128::from(key & !(1 << 63)) << 64);
        format!("{v6}/64")
    }
}

/// The request's fingerprint (see the module docs).
pub fn fingerprint(req: &RequestView<'_>) -> u64 {
    let mut h = crate::pool::StableHasher::default();
    req.method.as_str().hash(&mut h);
    let mut digits = false;
    for b in req.uri.path().bytes() {
        let d = b.is_ascii_digit();
        if !(d && digits) {
            h.write_u8(if d { b'0' } else { b });
        }
        digits = d;
    }
    h.write_u8(0);
    req.headers.names(&mut |n: &[u8]| {
        for b in n {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.write_u8(b',');
    });
    req.headers.header("user-agent").hash(&mut h);
    (req.version == hyper::Version::HTTP_2).hash(&mut h);
    (req.version == hyper::Version::HTTP_10).hash(&mut h);
    // The TLS client behind it, where TLS is used: one tool's flood looks alike however it
    // varies its headers.
    req.ja4.hash(&mut h);
    req.h2.hash(&mut h);
    h.finish()
}

fn describe(req: &RequestView<'_>) -> String {
    let mut names = String::new();
    req.headers.names(&mut |n: &[u8]| {
        if names.len() < 256 {
            if !names.is_empty() {
                names.push(',');
            }
            names.push_str(&String::from_utf8_lossy(n).to_ascii_lowercase());
        }
    });
    let ua = req.headers.header("user-agent").map(String::from_utf8_lossy).unwrap_or_default();
    let path: String = req.uri.path().chars().take(128).collect();
    let ua: String = ua.chars().take(128).collect();
    format!("{} {} {:?} ua={ua:?} headers={names}", req.method, path, req.version)
}

fn rate_limiter(rps: u64) -> crate::ratelimit::Limit {
    let cfg = palisade_config::RateLimit {
        name: "ddos".into(),
        expression: None,
        characteristics: vec!["ip.src".into()],
        period_s: 1,
        requests: rps.max(1),
        action: palisade_config::LimitAction::Block,
        mitigation_timeout_s: 0,
        difficulty: None,
    };
    let valid = palisade_config::ValidRateLimit {
        expression: None,
        characteristics: vec![palisade_config::Characteristic::Ip { v4_prefix: 32, v6_prefix: 64 }],
    };
    crate::ratelimit::Limit::new(&cfg, &valid, None, 0, Arc::default())
}

impl Detector {
    pub fn new(settings: &Ddos, workers: usize, stats: Arc<ZoneStats>) -> Self {
        let now = crate::pool::now_ms();
        Self {
            limiter: ArcSwap::from_pointee(rate_limiter(settings.rate_limit_rps)),
            settings: Mutex::new(settings.clone()),
            windows: (0..workers.max(1)).map(|_| Mutex::new(Window::default())).collect(),
            tick: Mutex::new(TickState { seconds: 0, last_ms: now, baseline: 0.0 }),
            active: ArcSwap::from_pointee(Vec::new()),
            any_active: std::sync::atomic::AtomicBool::new(false),
            stats,
        }
    }

    /// New settings for a detector in use (a reload); what it learned stays.
    pub fn configure(&self, settings: &Ddos) {
        let mut s = crate::lock(&self.settings);
        if s.rate_limit_rps != settings.rate_limit_rps {
            self.limiter.store(Arc::new(rate_limiter(settings.rate_limit_rps)));
        }
        *s = settings.clone();
    }

    /// Counts the request, and applies the mitigations in force (`difficulty`: the zone's, for
    /// `challenge`).
    fn observe(&self, req: &RequestView<'_>, difficulty: u8) -> Verdict {
        let any_active = self.any_active.load(Ordering::Relaxed);
        let mut fp_source = None;
        let w = crate::server::worker_index() % self.windows.len().max(1);
        if let Some(window) = self.windows.get(w) {
            let mut window = crate::lock(window);
            window.total += 1;
            if window.total % SAMPLE == 0 {
                let (fp, source) = (fingerprint(req), source_key(req.client_ip));
                window.sampled += 1;
                window.fingerprints.add(fp);
                window.sources.add(source);
                fp_source = Some((fp, source));
            }
        }
        if !any_active {
            return Verdict::Continue;
        }
        // Sources are matched first (they are kept first): a flood from a mitigated address is
        // refused without hashing its fingerprint.
        let source = source_key(req.client_ip);
        let mut fp = fp_source.map(|(f, _)| f);
        let active = self.active.load();
        for m in active.iter() {
            let hit = match m.target {
                Target::Fingerprint(f) => *fp.get_or_insert_with(|| fingerprint(req)) == f,
                Target::Source(s) => s == source,
            };
            if !hit {
                continue;
            }
            m.matched.add(1);
            if m.sample.get().is_none() {
                let _ = m.sample.set(describe(req));
            }
            let refuse = match m.action {
                DdosAction::Log => None,
                DdosAction::Block => Some(Verdict::TooMany(1)),
                DdosAction::RateLimit => {
                    let limiter = self.limiter.load();
                    let key = limiter.keyed(source ^ fp.get_or_insert_with(|| fingerprint(req)).rotate_left(17));
                    match limiter.check_key(key, crate::ratelimit::now_ns()) {
                        crate::ratelimit::Check::Pass => None,
                        crate::ratelimit::Check::Limited(s) => Some(Verdict::TooMany(s)),
                    }
                }
                DdosAction::Challenge => (!req.cleared()).then_some(Verdict::Challenge(difficulty)),
                DdosAction::Drop => Some(Verdict::Drop),
            };
            if let Some(verdict) = refuse {
                m.refused.add(1);
                self.stats.ddos_refused.add(1);
                return verdict;
            }
        }
        Verdict::Continue
    }

    /// One second's analysis (see the module docs). `now_ms` on [`crate::pool::now_ms`]'s clock.
    pub fn tick(&self, zone: &str, now_ms: u64) {
        let settings = crate::lock(&self.settings).clone();
        let mut t = crate::lock(&self.tick);
        // A rate over a sliver of a second says little: wait for a real second.
        if now_ms.saturating_sub(t.last_ms) < 500 {
            return;
        }
        let mut total = 0u64;
        let mut sampled = 0u64;
        let mut fps: HashMap<u64, u64> = HashMap::new();
        let mut sources: HashMap<u64, u64> = HashMap::new();
        for w in self.windows.iter() {
            let window = std::mem::take(&mut *crate::lock(w));
            total += window.total;
            sampled += window.sampled;
            for (k, n) in window.fingerprints.entries {
                *fps.entry(k).or_default() += n;
            }
            for (k, n) in window.sources.entries {
                *sources.entry(k).or_default() += n;
            }
        }
        let elapsed = now_ms.saturating_sub(t.last_ms).max(1);
        t.last_ms = now_ms;
        let rate = total as f64 * 1000.0 / elapsed as f64;
        let learning = t.seconds < settings.learn_s;
        t.seconds += 1;
        let threshold = (t.baseline * settings.surge_factor_tenths as f64 / 10.0).max(settings.min_rps as f64);
        let surging = !learning && settings.enabled && rate >= threshold;
        // The share of a second's (sampled) requests that makes a fingerprint or a source "the" attack.
        let share = |n: u64| n.saturating_mul(100) >= sampled.saturating_mul(settings.concentration_percent);
        let active = self.active.load_full();
        let mut next: Vec<Arc<Mitigation>> = Vec::with_capacity(active.len() + 2);
        let hold_ms = settings.hold_s.saturating_mul(1000);
        for m in active.iter() {
            // Still surging: its own traffic alone is over the concentration share of the
            // threshold. Counted exactly when it matched, else estimated from the samples (a
            // request refused by an earlier mitigation is not matched against the later ones).
            let matched = m.matched.get();
            let since = matched.saturating_sub(m.matched_before.swap(matched, Ordering::Relaxed));
            let sampled_count = match m.target {
                Target::Fingerprint(f) => fps.get(&f),
                Target::Source(s) => sources.get(&s),
            };
            let estimated = sampled_count.copied().unwrap_or(0).saturating_mul(SAMPLE);
            let n = since.max(estimated) as f64 * 1000.0 / elapsed as f64;
            if n * 100.0 >= threshold * settings.concentration_percent as f64 {
                m.last_surge_ms.store(now_ms, Ordering::Relaxed);
            }
            if now_ms.saturating_sub(m.last_surge_ms.load(Ordering::Relaxed)) <= hold_ms && settings.enabled {
                next.push(m.clone());
            } else {
                tracing::info!(zone, target = %target_text(m.target), refused = m.refused.get(),
                    "automatic DDoS mitigation ended");
            }
        }
        let mut started = false;
        if surging {
            let top = |m: &HashMap<u64, u64>| m.iter().max_by_key(|(_, n)| **n).map(|(k, n)| (*k, *n));
            let candidates = [
                top(&fps).map(|(k, n)| (Target::Fingerprint(k), n)),
                top(&sources).map(|(k, n)| (Target::Source(k), n)),
            ];
            for (target, n) in candidates.into_iter().flatten() {
                if !share(n) || next.iter().any(|m| m.target == target) {
                    continue;
                }
                started = true;
                self.stats.ddos_mitigations.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(zone, target = %target_text(target), rps = rate as u64, baseline = t.baseline as u64,
                    share_percent = n * 100 / sampled.max(1), action = ?settings.action,
                    "automatic DDoS mitigation started");
                next.push(Arc::new(Mitigation {
                    target,
                    action: settings.action,
                    started_ms: now_ms,
                    last_surge_ms: AtomicU64::new(now_ms),
                    sample: OnceLock::new(),
                    refused: WorkerGauge::default(),
                    matched: WorkerGauge::default(),
                    matched_before: AtomicU64::new(0),
                }));
            }
        }
        // The baseline learns from seconds that started no mitigation (a diffuse flash crowd
        // moves it, slowly; an attack does not).
        if !started && next.is_empty() {
            let alpha = if learning { 1.0 / t.seconds as f64 } else { BASELINE_ALPHA };
            t.baseline += (rate - t.baseline) * alpha;
        }
        self.stats.ddos_rps.store(rate as u64, Ordering::Relaxed);
        self.stats.ddos_baseline_rps.store(t.baseline as u64, Ordering::Relaxed);
        self.stats.ddos_active.store(next.len() as u64, Ordering::Relaxed);
        if next.len() != active.len() || started {
            next.sort_by_key(|m| matches!(m.target, Target::Fingerprint(_)));
            self.any_active.store(!next.is_empty(), Ordering::Relaxed);
            self.active.store(Arc::new(next));
        }
    }

    /// What the admin API shows.
    pub fn report(&self, zone: &str, now_ms: u64) -> ZoneReport {
        let s = crate::lock(&self.settings).clone();
        let t = crate::lock(&self.tick);
        let hold_ms = s.hold_s.saturating_mul(1000);
        ZoneReport {
            zone: zone.to_string(),
            enabled: s.enabled,
            learning: t.seconds < s.learn_s,
            rps: self.stats.ddos_rps.load(Ordering::Relaxed),
            baseline_rps: t.baseline as u64,
            mitigations: self
                .active
                .load()
                .iter()
                .map(|m| MitigationReport {
                    kind: match m.target {
                        Target::Fingerprint(_) => "fingerprint",
                        Target::Source(_) => "source",
                    },
                    target: target_text(m.target),
                    action: m.action,
                    sample: m.sample.get().cloned(),
                    age_s: now_ms.saturating_sub(m.started_ms) / 1000,
                    ends_in_s: (m.last_surge_ms.load(Ordering::Relaxed) + hold_ms)
                        .saturating_sub(now_ms)
                        .div_ceil(1000),
                    matched: m.matched.get(),
                    refused: m.refused.get(),
                })
                .collect(),
        }
    }
}

fn target_text(t: Target) -> String {
    match t {
        Target::Fingerprint(f) => format!("{f:016x}"),
        Target::Source(s) => source_text(s),
    }
}

#[derive(Debug, Serialize)]
pub struct ZoneReport {
    pub zone: String,
    pub enabled: bool,
    pub learning: bool,
    pub rps: u64,
    pub baseline_rps: u64,
    pub mitigations: Vec<MitigationReport>,
}

#[derive(Debug, Serialize)]
pub struct MitigationReport {
    pub kind: &'static str,
    pub target: String,
    pub action: DdosAction,
    pub sample: Option<String>,
    pub age_s: u64,
    pub ends_in_s: u64,
    pub matched: u64,
    pub refused: u64,
}

/// The `ddos` module of a zone: counts, and applies the mitigations in force.
pub struct DdosModule {
    pub detector: Arc<Detector>,
    /// The zone's challenge difficulty.
    pub difficulty: u8,
}

impl Module for DdosModule {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError> {
        Ok(self.detector.observe(req, self.difficulty))
    }
}

/// The sources under a `drop` mitigation in any zone of the node. Their new connections are
/// closed (reset) as soon as they are accepted, before anything is read: a flood's attempt costs
/// an `accept` and a `close`. No zone is known at accept, so this is node-wide. The `ddos` kill
/// switch stops it on the next connection; a zone's `ddos` module switched off in its config
/// stops it with the new config.
#[derive(Default)]
pub struct DropList {
    /// `entries` is not empty: a connection from anywhere pays this one load.
    any: std::sync::atomic::AtomicBool,
    /// By source.
    entries: ArcSwap<Vec<Dropped>>,
}

/// A source on the [`DropList`]: its mitigation, and its zone's counters.
struct Dropped {
    source: u64,
    mitigation: Arc<Mitigation>,
    stats: Arc<ZoneStats>,
}

impl DropList {
    /// Rebuilds the list from the zones' mitigations in force (each second, and with each config).
    pub fn refresh(&self, snap: &crate::snapshot::Snapshot) {
        let mut entries = Vec::new();
        for z in &snap.zones {
            let Some(d) = &z.ddos else { continue };
            if !z.modules.iter().any(|m| m.name == "ddos" && m.enabled()) {
                continue;
            }
            for m in d.active.load().iter() {
                if let (Target::Source(s), DdosAction::Drop) = (m.target, m.action) {
                    entries.push(Dropped { source: s, mitigation: m.clone(), stats: d.stats.clone() });
                }
            }
        }
        entries.sort_by_key(|e| e.source);
        if entries.is_empty() && !self.any.load(Ordering::Relaxed) {
            return;
        }
        self.any.store(!entries.is_empty(), Ordering::Relaxed);
        self.entries.store(Arc::new(entries));
    }

    /// Whether a connection from `ip` is to be dropped now; if so, it is counted as its
    /// mitigation's traffic (which keeps the mitigation alive while the flood goes on).
    pub fn drops(&self, ip: IpAddr, kill: &crate::kill::KillSwitches) -> bool {
        if !self.any.load(Ordering::Relaxed) || kill.off(crate::kill::Switch::Ddos) {
            return false;
        }
        let key = source_key(ip);
        let entries = self.entries.load();
        let Ok(i) = entries.binary_search_by_key(&key, |e| e.source) else {
            return false;
        };
        if let Some(e) = entries.get(i) {
            e.mitigation.matched.add(1);
            e.mitigation.refused.add(1);
            e.stats.ddos_refused.add(1);
        }
        true
    }

    /// Sources on the list now.
    pub fn sources(&self) -> usize {
        self.entries.load().len()
    }
}

/// Once a second: every zone's detector of the active snapshot. Runs for the node's life.
pub async fn run(shared: Arc<crate::server::EdgeShared>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let snap = shared.snapshot.load_full();
        let now = crate::pool::now_ms();
        for z in &snap.zones {
            if let Some(d) = &z.ddos {
                d.tick(&z.name, now);
            }
        }
        // The snapshot in force now, not the one ticked: a config swapped in meanwhile counts.
        shared.drops.refresh(&shared.snapshot.load());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_saving_keeps_the_heavy_hitter() {
        let mut t = TopK::default();
        for i in 0..10_000u64 {
            t.add(if i % 2 == 0 { 7 } else { 1000 + i });
        }
        let top = t.entries.iter().max_by_key(|e| e.1).copied();
        assert_eq!(top.map(|e| e.0), Some(7));
        assert!(top.is_some_and(|e| e.1 >= 5_000));
        assert!(t.entries.len() <= TOP_K);
    }

    struct Plain;

    impl crate::modules::Headers for Plain {
        fn header<'a>(&'a self, _: &'a str) -> Option<&'a [u8]> {
            None
        }
        fn names(&self, _: &mut dyn FnMut(&[u8])) {}
    }

    /// A request from 127.0.0.9 for /item/7, with or without a clearance.
    fn with_view<T>(cleared: bool, f: impl FnOnce(&RequestView<'_>) -> T) -> T {
        let (method, uri) = (hyper::Method::GET, hyper::Uri::from_static("/item/7"));
        let mut req = RequestView::plain(IpAddr::from([127, 0, 0, 9]), &method, &uri, &Plain);
        req.cleared = std::cell::OnceCell::from(cleared);
        f(&req)
    }

    fn flood(d: &Detector, n: usize) -> usize {
        with_view(false, |req| (0..n).filter(|_| d.observe(req, 16) != Verdict::Continue).count())
    }

    #[test]
    fn a_challenge_mitigation_lets_cleared_clients_through() {
        let settings = Ddos { min_rps: 10, learn_s: 0, action: DdosAction::Challenge, ..Ddos::default() };
        let d = Detector::new(&settings, 1, Arc::default());
        let t0 = crate::pool::now_ms() + 1_000;
        d.tick("z", t0);
        flood(&d, 400);
        d.tick("z", t0 + 1_000);
        assert_eq!(with_view(false, |r| d.observe(r, 12)), Verdict::Challenge(12));
        assert_eq!(with_view(true, |r| d.observe(r, 12)), Verdict::Continue, "a cleared client passes");
    }

    #[test]
    fn a_surge_is_mitigated_held_while_it_lasts_and_released_after() {
        let settings = Ddos { min_rps: 10, learn_s: 0, hold_s: 2, ..Ddos::default() };
        let d = Detector::new(&settings, 1, Arc::default());
        let t0 = crate::pool::now_ms() + 1_000;
        d.tick("z", t0);
        assert_eq!(flood(&d, 400), 0, "nothing is refused before the analysis");
        d.tick("z", t0 + 1_000);
        // One address, one fingerprint: both are mitigated.
        assert_eq!(d.report("z", t0 + 1_000).mitigations.len(), 2);
        // The flood goes on past hold_s. The source mitigation refuses first; the fingerprint
        // one, which sees none of it, is kept alive by the samples (not ended and restarted).
        for s in 2..6 {
            assert_eq!(flood(&d, 400), 400);
            d.tick("z", t0 + s * 1_000);
            assert_eq!(d.report("z", t0 + s * 1_000).mitigations.len(), 2);
        }
        assert_eq!(d.stats.ddos_mitigations.load(Ordering::Relaxed), 2, "no restart of a held mitigation");
        // Quiet: held for hold_s, then gone.
        d.tick("z", t0 + 6_000);
        assert_eq!(d.report("z", t0 + 6_000).mitigations.len(), 2);
        d.tick("z", t0 + 8_000);
        assert!(d.report("z", t0 + 8_000).mitigations.is_empty());
        assert_eq!(flood(&d, 10), 0);
    }

    #[test]
    fn sources_print_as_addresses() {
        assert_eq!(source_text(source_key(IpAddr::from([127, 0, 0, 9]))), "127.0.0.9");
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(source_text(source_key(v6)), "2001:db8:1:2::/64");
    }
}
