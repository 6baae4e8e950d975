//! Counters and histograms for `/metrics`, kept as plain atomics so the request path pays one
//! relaxed increment per figure. Per-zone and per-origin figures live in structs that survive
//! config reloads (looked up by name when a snapshot is compiled).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::guard::Rejection;

/// Latency buckets, in seconds (upper bounds).
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Shards per counter: each data-plane worker adds to its own (worker index modulo this), on its
/// own cache line, so two workers counting the same zone never pass a line back and forth.
/// `/metrics` sums them.
const SHARDS: usize = 4;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

fn shard<T>(shards: &[Padded<T>; SHARDS]) -> Option<&T> {
    shards.get(crate::server::worker_index() % SHARDS).map(|p| &p.0)
}

/// A per-origin series to render: name, help text, and the figure read from the origin's `S`.
type OriginSeries<S> = (&'static str, &'static str, fn(&S) -> u64);

/// A gauge that each data-plane worker moves on its own cache line; a reader sums the shards.
/// For counts every request changes twice (requests in flight per zone and per origin): kept in
/// one atomic, the line holding it passed between the cores on every change.
#[derive(Debug, Default)]
pub struct WorkerGauge([Padded<AtomicU64>; SHARDS]);

impl WorkerGauge {
    pub fn add(&self, n: u64) {
        if let Some(s) = shard(&self.0) {
            s.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Takes `n` off (from this worker's shard: a shard can wrap, the sum cannot).
    pub fn sub(&self, n: u64) {
        if let Some(s) = shard(&self.0) {
            s.fetch_sub(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.iter().fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[derive(Debug, Default)]
struct HistogramShard {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Histogram {
    shards: [Padded<HistogramShard>; SHARDS],
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let Some(h) = shard(&self.shards) else { return };
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(b) = h.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn sum(&self, f: impl Fn(&HistogramShard) -> u64) -> u64 {
        self.shards.iter().map(|s| f(&s.0)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.sum(|s| s.buckets.get(i).map(|b| b.load(Ordering::Relaxed)).unwrap_or(0));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.sum(|s| s.count.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ =
            writeln!(out, "{name}_sum{{{labels}}} {}", self.sum(|s| s.sum_micros.load(Ordering::Relaxed)) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Responses by status class: index 0 = 1xx ... 4 = 5xx.
#[derive(Debug, Default)]
pub struct StatusCounts([Padded<[AtomicU64; 5]>; SHARDS]);

impl StatusCounts {
    pub fn add(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        if let Some(c) = shard(&self.0).and_then(|s| s.get(class)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, class: usize) -> u64 {
        self.0.iter().map(|s| s.0.get(class).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0)).sum()
    }
}

/// Figures for one zone.
#[derive(Debug, Default)]
pub struct ZoneStats {
    /// Responses produced without an origin (errors, rejections).
    pub local: StatusCounts,
    pub latency: Histogram,
    pub retries: AtomicU64,
    pub body_too_large: AtomicU64,
    /// `[zones.concurrency]` ([`crate::fairq`]): requests that waited, refused with a full
    /// queue, pushed out by a quieter source, timed out; waiting and at the origins now.
    pub queued: AtomicU64,
    pub queue_full: AtomicU64,
    pub queue_pushed_out: AtomicU64,
    pub queue_timeouts: AtomicU64,
    pub queue_waiting: AtomicU64,
    pub origin_in_flight: AtomicU64,
    /// Automatic DDoS mitigation ([`crate::ddos`]): mitigations started, requests they
    /// refused, mitigations active now, and the last second's rate beside the baseline.
    pub ddos_mitigations: AtomicU64,
    pub ddos_refused: WorkerGauge,
    pub ddos_active: AtomicU64,
    pub ddos_rps: AtomicU64,
    pub ddos_baseline_rps: AtomicU64,
    /// The zone's cache ([`crate::cache`]).
    pub cache: crate::cache::CacheCounts,
    /// Challenge pages ([`crate::challenge`]): served, answered with the work done, answered
    /// after the wait (no JavaScript), and answers refused.
    pub challenges_issued: AtomicU64,
    pub challenges_solved: AtomicU64,
    pub challenges_waited: AtomicU64,
    pub challenges_failed: AtomicU64,
    /// Bot scores given ([`crate::bot`]), in bands of ten: 1-9, 10-19, ..., 90-99.
    pub bot_scores: [AtomicU64; 10],
    /// Requests a module refused (its own status), and those a rate limit answered 429.
    pub blocked: WorkerGauge,
    pub rate_limited: WorkerGauge,
    /// Heaviest clients, paths and fingerprints since the last analytics interval.
    pub top: crate::analytics::TopTalkers,
}

impl ZoneStats {
    /// Counts a bot score in its band.
    pub fn bot_score(&self, score: u8) {
        if let Some(band) = self.bot_scores.get(usize::from(score / 10)) {
            band.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Figures for one origin of one zone.
#[derive(Debug, Default)]
pub struct OriginStats {
    pub responses: StatusCounts,
    pub connect_failures: AtomicU64,
    pub ejections: AtomicU64,
    pub timeouts: AtomicU64,
}

/// Node-wide figures.
#[derive(Debug, Default)]
pub struct Metrics {
    /// What the bot modules learn from labelled traffic ([`palisade_config::botlearn`]),
    /// reported to the control plane.
    pub bot_learning: Arc<std::sync::Mutex<palisade_config::botlearn::Learning>>,
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_rejected_total_limit: AtomicU64,
    pub connections_rejected_ip_limit: AtomicU64,
    /// Refused in the last tenth of `max_connections`: the address held its share or more.
    pub connections_rejected_fair_share: AtomicU64,
    /// Reset at accept: the source is under a `drop` DDoS mitigation ([`crate::ddos::DropList`]).
    pub connections_rejected_ddos: WorkerGauge,
    pub tls_handshake_failures: AtomicU64,
    pub guard_rejections: [AtomicU64; Rejection::ALL.len()],
    pub unknown_host: AtomicU64,
    pub misdirected: AtomicU64,
    pub loops: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_rejected: AtomicU64,
    pub access_log_dropped: AtomicU64,
    pub access_log_write_errors: AtomicU64,
    /// Response body bytes moved from origin to client in the kernel ([`crate::splice`]).
    pub spliced_bytes: AtomicU64,
    zones: Mutex<BTreeMap<String, Arc<ZoneStats>>>,
    origins: Mutex<BTreeMap<(String, String), Arc<OriginStats>>>,
    modules: Mutex<BTreeMap<(String, String), Arc<crate::modules::ModuleStats>>>,
    rules: Mutex<BTreeMap<(String, String), Arc<AtomicU64>>>,
    rate_limits: Mutex<BTreeMap<(String, String), Arc<crate::ratelimit::LimitStats>>>,
}

/// A module's failures so far, all zones: what a node reports upward.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ModuleTotals {
    pub calls: u64,
    pub errors: u64,
    pub panics: u64,
    pub breaker_trips: u64,
}

impl Metrics {
    pub fn zone(&self, name: &str) -> Arc<ZoneStats> {
        crate::lock(&self.zones).entry(name.to_string()).or_default().clone()
    }

    pub fn origin(&self, zone: &str, addr: &str) -> Arc<OriginStats> {
        crate::lock(&self.origins).entry((zone.to_string(), addr.to_string())).or_default().clone()
    }

    pub fn module(&self, zone: &str, name: &str) -> Arc<crate::modules::ModuleStats> {
        crate::lock(&self.modules).entry((zone.to_string(), name.to_string())).or_default().clone()
    }

    /// Matches of one firewall rule (by zone and rule name).
    pub fn rule(&self, zone: &str, name: &str) -> Arc<AtomicU64> {
        crate::lock(&self.rules).entry((zone.to_string(), name.to_string())).or_default().clone()
    }

    /// One rate limit's counters (by zone and limit name).
    pub fn rate_limit(&self, zone: &str, name: &str) -> Arc<crate::ratelimit::LimitStats> {
        crate::lock(&self.rate_limits).entry((zone.to_string(), name.to_string())).or_default().clone()
    }

    /// Per module, summed over zones.
    pub fn module_totals(&self) -> BTreeMap<String, ModuleTotals> {
        let mut out: BTreeMap<String, ModuleTotals> = BTreeMap::new();
        for ((_, name), m) in crate::lock(&self.modules).iter() {
            let t = out.entry(name.clone()).or_default();
            t.calls += m.calls.get();
            t.errors += m.errors.load(Ordering::Relaxed);
            t.panics += m.panics.load(Ordering::Relaxed);
            t.breaker_trips += m.breaker_trips.load(Ordering::Relaxed);
        }
        out
    }

    /// Request latency so far, all zones: (bucket upper bounds in ms, count per bucket), the last
    /// bucket for everything above the largest bound. What a node reports upward.
    pub fn latency_buckets(&self) -> (Vec<f64>, Vec<u64>) {
        let mut counts = vec![0u64; LATENCY_BUCKETS.len() + 1];
        for z in crate::lock(&self.zones).values() {
            let h = &z.latency;
            let mut counted = 0;
            for (i, c) in counts.iter_mut().enumerate().take(LATENCY_BUCKETS.len()) {
                let n = h.sum(|s| s.buckets.get(i).map(|b| b.load(Ordering::Relaxed)).unwrap_or(0));
                *c += n;
                counted += n;
            }
            let total = h.sum(|s| s.count.load(Ordering::Relaxed));
            if let Some(last) = counts.last_mut() {
                *last += total.saturating_sub(counted);
            }
        }
        (LATENCY_BUCKETS.iter().map(|s| s * 1000.0).collect(), counts)
    }

    /// Responses sent so far, all zones and origins: (all, 5xx). What a node reports upward.
    /// Per zone, the analytics counters ([`palisade_config::analytics`]) since the node started.
    pub fn zone_counts(&self) -> BTreeMap<String, Vec<u64>> {
        use palisade_config::analytics as a;
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (name, z) in crate::lock(&self.zones).iter() {
            let mut c = vec![0u64; a::COUNTS];
            let mut set = |i: usize, n: u64| {
                if let Some(x) = c.get_mut(i) {
                    *x = x.saturating_add(n);
                }
            };
            for class in 0..5 {
                set(a::STATUS + class, z.local.get(class));
            }
            set(a::BLOCKED, z.blocked.get());
            set(a::RATE_LIMITED, z.rate_limited.get());
            set(a::CHALLENGED, z.challenges_issued.load(Ordering::Relaxed));
            set(a::CACHE_HITS, z.cache.by_status.first().map(WorkerGauge::get).unwrap_or(0));
            let mut counted = 0;
            for i in 0..LATENCY_BUCKETS.len() {
                let n = z.latency.sum(|s| s.buckets.get(i).map(|b| b.load(Ordering::Relaxed)).unwrap_or(0));
                counted += n;
                set(a::LATENCY + i, n);
            }
            let total = z.latency.sum(|s| s.count.load(Ordering::Relaxed));
            set(a::LATENCY + LATENCY_BUCKETS.len(), total.saturating_sub(counted));
            for (i, band) in z.bot_scores.iter().enumerate() {
                set(a::BOT + i, band.load(Ordering::Relaxed));
            }
            out.insert(name.clone(), c);
        }
        for ((zone, _), o) in crate::lock(&self.origins).iter() {
            if let Some(c) = out.get_mut(zone) {
                for class in 0..5 {
                    if let Some(x) = c.get_mut(a::STATUS + class) {
                        *x = x.saturating_add(o.responses.get(class));
                    }
                }
            }
        }
        for c in out.values_mut() {
            let requests: u64 = c.get(a::STATUS..a::STATUS + 5).map(|s| s.iter().sum()).unwrap_or(0);
            if let Some(r) = c.get_mut(a::REQUESTS) {
                *r = requests;
            }
        }
        out
    }

    /// Per zone, the heavy hitters since the last call.
    pub fn take_top(&self) -> BTreeMap<String, palisade_config::analytics::Top> {
        crate::lock(&self.zones).iter().map(|(name, z)| (name.clone(), z.top.take())).collect()
    }

    pub fn response_totals(&self) -> (u64, u64) {
        let mut all = 0;
        let mut errors = 0;
        let mut add = |c: &StatusCounts| {
            all += (0..5).map(|k| c.get(k)).sum::<u64>();
            errors += c.get(4);
        };
        for z in crate::lock(&self.zones).values() {
            add(&z.local);
        }
        for o in crate::lock(&self.origins).values() {
            add(&o.responses);
        }
        (all, errors)
    }

    pub fn reject(&self, r: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|x| *x == r) {
            if let Some(c) = self.guard_rejections.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Prometheus text exposition. Config version, hash and origin health are read from the
    /// active snapshot, never copied here.
    pub fn render(&self, active: &crate::snapshot::Snapshot) -> String {
        let mut o = String::with_capacity(8192);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];

        o.push_str("# HELP palisade_requests_total Responses sent, by zone, status class and origin (\"none\" when no origin answered).\n# TYPE palisade_requests_total counter\n");
        let zones = crate::lock(&self.zones).clone();
        let origins = crate::lock(&self.origins).clone();
        for (zone, z) in &zones {
            for (i, class) in classes.iter().enumerate() {
                let v = z.local.get(i);
                if v > 0 {
                    let _ = writeln!(
                        o,
                        "palisade_requests_total{{zone=\"{}\",status_class=\"{class}\",origin=\"none\"}} {v}",
                        esc(zone)
                    );
                }
            }
        }
        for ((zone, addr), s) in &origins {
            for (i, class) in classes.iter().enumerate() {
                let v = s.responses.get(i);
                if v > 0 {
                    let _ = writeln!(
                        o,
                        "palisade_requests_total{{zone=\"{}\",status_class=\"{class}\",origin=\"{}\"}} {v}",
                        esc(zone),
                        esc(addr)
                    );
                }
            }
        }
        o.push_str("# HELP palisade_request_duration_seconds Time from request head to response end.\n# TYPE palisade_request_duration_seconds histogram\n");
        for (zone, z) in &zones {
            z.latency.render(&mut o, "palisade_request_duration_seconds", &format!("zone=\"{}\"", esc(zone)));
        }
        o.push_str("# HELP palisade_upstream_retries_total Retries to another origin after a connect failure.\n# TYPE palisade_upstream_retries_total counter\n");
        for (zone, z) in &zones {
            let _ = writeln!(o, "palisade_upstream_retries_total{{zone=\"{}\"}} {}", esc(zone), ld(&z.retries));
        }
        o.push_str("# HELP palisade_request_body_too_large_total Requests refused with 413.\n# TYPE palisade_request_body_too_large_total counter\n");
        for (zone, z) in &zones {
            let _ = writeln!(
                o,
                "palisade_request_body_too_large_total{{zone=\"{}\"}} {}",
                esc(zone),
                ld(&z.body_too_large)
            );
        }
        type ZoneSeries = (&'static str, &'static str, fn(&ZoneStats) -> u64);
        let zone_series: [ZoneSeries; 15] = [
            ("palisade_queue_waited_total", "Requests that waited for an origin slot.", |z| {
                z.queued.load(Ordering::Relaxed)
            }),
            ("palisade_queue_full_total", "Requests refused (503): the queue was full of quieter sources.", |z| {
                z.queue_full.load(Ordering::Relaxed)
            }),
            (
                "palisade_queue_pushed_out_total",
                "Waiting requests refused (503) to make room for a quieter source.",
                |z| z.queue_pushed_out.load(Ordering::Relaxed),
            ),
            ("palisade_queue_timeouts_total", "Requests refused (503) after queue_timeout_ms.", |z| {
                z.queue_timeouts.load(Ordering::Relaxed)
            }),
            ("palisade_queue_waiting", "Requests waiting for an origin slot now.", |z| {
                z.queue_waiting.load(Ordering::Relaxed)
            }),
            ("palisade_origin_in_flight", "Requests holding an origin slot now ([zones.concurrency]).", |z| {
                z.origin_in_flight.load(Ordering::Relaxed)
            }),
            ("palisade_ddos_mitigations_total", "Automatic DDoS mitigations started.", |z| {
                z.ddos_mitigations.load(Ordering::Relaxed)
            }),
            ("palisade_ddos_refused_total", "Requests refused by an automatic DDoS mitigation.", |z| {
                z.ddos_refused.get()
            }),
            ("palisade_ddos_active", "Automatic DDoS mitigations in force now.", |z| {
                z.ddos_active.load(Ordering::Relaxed)
            }),
            ("palisade_ddos_rps", "The zone's request rate in the last full second.", |z| {
                z.ddos_rps.load(Ordering::Relaxed)
            }),
            ("palisade_ddos_baseline_rps", "The request rate the DDoS detector has learned as normal.", |z| {
                z.ddos_baseline_rps.load(Ordering::Relaxed)
            }),
            ("palisade_challenges_issued_total", "Challenge pages served.", |z| {
                z.challenges_issued.load(Ordering::Relaxed)
            }),
            ("palisade_challenges_solved_total", "Challenges passed with the proof of work.", |z| {
                z.challenges_solved.load(Ordering::Relaxed)
            }),
            ("palisade_challenges_waited_total", "Challenges passed by waiting (no JavaScript).", |z| {
                z.challenges_waited.load(Ordering::Relaxed)
            }),
            ("palisade_challenges_failed_total", "Challenge answers refused (bad, stale or early).", |z| {
                z.challenges_failed.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, get) in zone_series {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (zone, z) in &zones {
                let _ = writeln!(o, "{name}{{zone=\"{}\"}} {}", esc(zone), get(z));
            }
        }
        o.push_str("# HELP palisade_bot_scores_total Requests scored by the bot module, by band of ten (band 0: 1-9, band 9: 90-99).\n# TYPE palisade_bot_scores_total counter\n");
        for (zone, z) in &zones {
            if z.bot_scores.iter().all(|b| ld(b) == 0) {
                continue;
            }
            for (band, n) in z.bot_scores.iter().enumerate() {
                let _ = writeln!(o, "palisade_bot_scores_total{{zone=\"{}\",band=\"{band}\"}} {}", esc(zone), ld(n));
            }
        }
        o.push_str("# HELP palisade_cache_requests_total Requests the cache looked at, by what it did (hit, miss, expired, stale, updating, revalidated, bypass).\n# TYPE palisade_cache_requests_total counter\n");
        for (zone, z) in &zones {
            for (i, status) in crate::cache::STATUS_NAMES.iter().enumerate() {
                let v = z.cache.by_status.get(i).map_or(0, WorkerGauge::get);
                let _ = writeln!(o, "palisade_cache_requests_total{{zone=\"{}\",status=\"{status}\"}} {v}", esc(zone));
            }
        }
        type CacheSeries = (&'static str, &'static str, fn(&crate::cache::CacheCounts) -> &WorkerGauge);
        let cache_series: [CacheSeries; 4] = [
            (
                "palisade_cache_coalesced_total",
                "Requests that waited for another's origin fetch of the same object.",
                |c| &c.coalesced,
            ),
            ("palisade_cache_stored_total", "Responses stored.", |c| &c.stored),
            ("palisade_cache_hit_bytes_total", "Body bytes served from the cache.", |c| &c.hit_bytes),
            ("palisade_cache_stored_bytes_total", "Body bytes stored.", |c| &c.stored_bytes),
        ];
        for (name, help, get) in cache_series {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (zone, z) in &zones {
                let _ = writeln!(o, "{name}{{zone=\"{}\"}} {}", esc(zone), get(&z.cache).get());
            }
        }
        let c = &active.cache;
        let mut single = |name: &str, help: &str, value: &AtomicU64| {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", ld(value));
        };
        for (name, help, value) in [
            ("palisade_cache_memory_bytes", "Bytes held by cached objects.", &*c.memory_bytes),
            ("palisade_cache_objects", "Objects in the cache.", &*c.objects),
            ("palisade_cache_evictions_total", "Objects evicted to stay within cache.memory_bytes.", &c.evictions),
            ("palisade_cache_purges_total", "Purges recorded.", &c.purges),
        ] {
            single(name, help, value);
        }
        if let Some(d) = &c.disk {
            let objects = AtomicU64::new(d.objects() as u64);
            for (name, help, value) in [
                ("palisade_cache_disk_bytes", "Bytes in the cache's disk tier.", &d.used_bytes),
                ("palisade_cache_disk_objects", "Objects in the cache's disk tier.", &objects),
                ("palisade_cache_disk_writes_total", "Objects written to the disk tier.", &d.writes),
                (
                    "palisade_cache_disk_corrupt_total",
                    "Damaged disk-tier files found, dropped and deleted.",
                    &d.corrupt,
                ),
                (
                    "palisade_cache_disk_evictions_total",
                    "Objects evicted to stay within cache.disk_bytes.",
                    &d.evictions,
                ),
            ] {
                single(name, help, value);
            }
        }
        let modules: Vec<((String, String), Arc<crate::modules::ModuleStats>)> =
            crate::lock(&self.modules).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        type ModuleSeries = (&'static str, &'static str, fn(&crate::modules::ModuleStats) -> u64);
        let series: [ModuleSeries; 8] = [
            ("palisade_module_calls_total", "Requests a security module was called for.", |m| m.calls.get()),
            ("palisade_module_answers_total", "Requests a module answered itself (a block).", |m| m.answers.get()),
            ("palisade_module_errors_total", "Errors a module returned.", |m| m.errors.load(Ordering::Relaxed)),
            ("palisade_module_panics_total", "Panics caught at a module's boundary.", |m| {
                m.panics.load(Ordering::Relaxed)
            }),
            ("palisade_module_breaker_trips_total", "Times a module's circuit breaker opened.", |m| {
                m.breaker_trips.load(Ordering::Relaxed)
            }),
            (
                "palisade_module_skipped_total",
                "Requests a failed module was skipped for (fail_open, fail_stale).",
                |m| m.skipped.load(Ordering::Relaxed),
            ),
            (
                "palisade_module_refused_total",
                "Requests refused with 503 because a module failed (fail_closed).",
                |m| m.refused.load(Ordering::Relaxed),
            ),
            ("palisade_module_breaker_open", "1 while the module's circuit breaker is open.", |m| {
                u64::from(m.breaker_open.load(Ordering::Relaxed))
            }),
        ];
        o.push_str("# HELP palisade_rule_matches_total Requests a firewall rule matched.\n# TYPE palisade_rule_matches_total counter\n");
        for ((zone, rule), n) in crate::lock(&self.rules).iter() {
            let _ =
                writeln!(o, "palisade_rule_matches_total{{zone=\"{}\",rule=\"{}\"}} {}", esc(zone), esc(rule), ld(n));
        }
        type LimitSeries = (&'static str, &'static str, fn(&crate::ratelimit::LimitStats) -> u64);
        let limit_series: [LimitSeries; 4] = [
            ("palisade_rate_limit_passed_total", "Requests a rate limit counted and let through.", |l| l.passed.get()),
            ("palisade_rate_limit_limited_total", "Requests over a rate limit.", |l| l.limited.get()),
            ("palisade_rate_limit_evicted_total", "Keys dropped to stay within the cap.", |l| {
                l.evicted.load(Ordering::Relaxed)
            }),
            ("palisade_rate_limit_keys", "Keys a rate limit tracks now.", |l| l.keys.load(Ordering::Relaxed)),
        ];
        let limits: Vec<((String, String), Arc<crate::ratelimit::LimitStats>)> =
            crate::lock(&self.rate_limits).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (name, help, get) in limit_series {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((zone, limit), l) in &limits {
                let _ = writeln!(o, "{name}{{zone=\"{}\",limit=\"{}\"}} {}", esc(zone), esc(limit), get(l));
            }
        }
        for (name, help, get) in series {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((zone, module), m) in &modules {
                let _ = writeln!(o, "{name}{{zone=\"{}\",module=\"{}\"}} {}", esc(zone), esc(module), get(m));
            }
        }
        let counters: [OriginSeries<OriginStats>; 3] = [
            ("palisade_origin_connect_failures_total", "Failed connections to an origin.", |s| {
                s.connect_failures.load(Ordering::Relaxed)
            }),
            ("palisade_origin_timeouts_total", "Origin response-header or total timeouts.", |s| {
                s.timeouts.load(Ordering::Relaxed)
            }),
            ("palisade_origin_ejections_total", "Passive ejections of an origin.", |s| {
                s.ejections.load(Ordering::Relaxed)
            }),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((zone, addr), s) in &origins {
                let _ = writeln!(o, "{name}{{zone=\"{}\",origin=\"{}\"}} {}", esc(zone), esc(addr), counter(s));
            }
        }
        let gauges: [OriginSeries<crate::pool::OriginState>; 2] = [
            ("palisade_origin_requests_in_flight", "Requests sent to an origin and not yet answered in full.", |s| {
                s.in_flight.get()
            }),
            (
                "palisade_origin_healthy",
                "1 when the origin is in rotation (active check passing and not ejected).",
                |s| u64::from(s.available()),
            ),
        ];
        for (name, help, gauge) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for zone in &active.zones {
                for s in &zone.pool.origins {
                    let _ =
                        writeln!(o, "{name}{{zone=\"{}\",origin=\"{}\"}} {}", esc(&zone.name), esc(&s.label), gauge(s));
                }
            }
        }
        let _ = write!(
            o,
            "# HELP palisade_connections_active Open client connections.\n# TYPE palisade_connections_active gauge\npalisade_connections_active {}\n\
             # HELP palisade_connections_total Client connections accepted.\n# TYPE palisade_connections_total counter\npalisade_connections_total {}\n\
             # HELP palisade_connections_rejected_total Connections closed at accept: by a limit, or reset because their source is under a drop DDoS mitigation (ddos_drop).\n# TYPE palisade_connections_rejected_total counter\n\
             palisade_connections_rejected_total{{reason=\"max_connections\"}} {}\npalisade_connections_rejected_total{{reason=\"max_connections_per_ip\"}} {}\n\
             palisade_connections_rejected_total{{reason=\"fair_share\"}} {}\npalisade_connections_rejected_total{{reason=\"ddos_drop\"}} {}\n\
             # HELP palisade_tls_handshake_failures_total Failed or timed-out TLS handshakes.\n# TYPE palisade_tls_handshake_failures_total counter\npalisade_tls_handshake_failures_total {}\n",
            ld(&self.connections_active),
            ld(&self.connections_total),
            ld(&self.connections_rejected_total_limit),
            ld(&self.connections_rejected_ip_limit),
            ld(&self.connections_rejected_fair_share),
            self.connections_rejected_ddos.get(),
            ld(&self.tls_handshake_failures),
        );
        o.push_str("# HELP palisade_guard_rejections_total Request heads refused by the connection guard.\n# TYPE palisade_guard_rejections_total counter\n");
        for (r, c) in Rejection::ALL.iter().zip(self.guard_rejections.iter()) {
            let _ = writeln!(o, "palisade_guard_rejections_total{{reason=\"{}\"}} {}", r.reason(), ld(c));
        }
        let _ = write!(
            o,
            "# HELP palisade_unknown_host_total Requests for a host no zone serves (404).\n# TYPE palisade_unknown_host_total counter\npalisade_unknown_host_total {}\n\
             # HELP palisade_loops_total Requests refused with 508 because they looped through the fleet.\n# TYPE palisade_loops_total counter\npalisade_loops_total {}\n\
             # HELP palisade_misdirected_total Requests whose Host is not served by the TLS connection's zone (421).\n# TYPE palisade_misdirected_total counter\npalisade_misdirected_total {}\n\
             # HELP palisade_config_reloads_total Config reload attempts by result.\n# TYPE palisade_config_reloads_total counter\n\
             palisade_config_reloads_total{{result=\"ok\"}} {}\npalisade_config_reloads_total{{result=\"rejected\"}} {}\n\
             # HELP palisade_config_version Version number of the active config.\n# TYPE palisade_config_version gauge\npalisade_config_version {}\n\
             # HELP palisade_config_info The active config's content hash.\n# TYPE palisade_config_info gauge\npalisade_config_info{{hash=\"{}\"}} 1\n\
             # HELP palisade_access_log_dropped_total Access-log records dropped because the writer was behind.\n# TYPE palisade_access_log_dropped_total counter\npalisade_access_log_dropped_total {}\n\
             # HELP palisade_access_log_write_errors_total Access-log write failures.\n# TYPE palisade_access_log_write_errors_total counter\npalisade_access_log_write_errors_total {}\n\
             # HELP palisade_spliced_bytes_total Response body bytes moved from origin to client inside the kernel (splice).\n# TYPE palisade_spliced_bytes_total counter\npalisade_spliced_bytes_total {}\n",
            ld(&self.unknown_host),
            ld(&self.loops),
            ld(&self.misdirected),
            ld(&self.reloads_ok),
            ld(&self.reloads_rejected),
            active.version(),
            esc(active.hash()),
            ld(&self.access_log_dropped),
            ld(&self.access_log_write_errors),
            ld(&self.spliced_bytes),
        );
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytics_buckets_are_the_histogram_buckets() {
        let ms: Vec<f64> = LATENCY_BUCKETS.iter().map(|s| s * 1000.0).collect();
        assert_eq!(ms, palisade_config::analytics::LATENCY_LE_MS.to_vec());
        let m = Metrics::default();
        let z = m.zone("demo");
        z.local.add(503);
        z.latency.observe(std::time::Duration::from_millis(7));
        z.blocked.add(1);
        let c = &m.zone_counts()["demo"];
        use palisade_config::analytics as a;
        assert_eq!((c[a::REQUESTS], c[a::STATUS + 4], c[a::BLOCKED], c[a::LATENCY + 4]), (1, 1, 1, 1));
    }

    #[test]
    fn a_worker_gauge_sums_its_shards_even_when_one_wraps() {
        let g = WorkerGauge::default();
        g.add(3);
        g.sub(1);
        assert_eq!(g.get(), 2);
        // A count ended on another worker than the one that began it: that shard wraps, the
        // sum does not.
        g.0[1].0.fetch_sub(2, Ordering::Relaxed);
        assert_eq!(g.get(), 0);
    }
}
