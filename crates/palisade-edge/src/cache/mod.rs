//! The edge's HTTP cache (RFC 9111, as a shared cache), in front of a zone's origins.
//!
//! A request for a cached object is answered here, before it takes an origin slot
//! ([`crate::fairq`]) or a connection. A miss goes to the origin as one request however many
//! clients ask at once (request coalescing: the first becomes the filler, the others wait for
//! its response up to the zone's `lock_timeout_ms`), and the response is stored as it streams to
//! the client ([`Recorder`]). Stale objects are served while they are revalidated in the
//! background (`stale-while-revalidate`) and when the origin fails (`stale-if-error`): a cached
//! site stays up through an origin outage.
//!
//! Storage: memory, with TinyLFU admission and S3-FIFO eviction (the `TinyUFO` crate) within
//! `cache.memory_bytes`; objects over `cache.max_object_bytes` are passed through, never held
//! whole. Purges (by URL, prefix, `Cache-Tag` or everything) are recorded as bans that every
//! lookup checks against the object's store time, so a purge of any size is instant.
//!
//! The cache module's failure policy is fail-open: anything it cannot read or decide sends the
//! request to the origin, as if there were no cache; the `cache` kill switch does the same.

pub mod disk;
pub mod policy;
mod tier;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::header::HeaderValue;
use hyper::StatusCode;
use palisade_config::{CacheAction, CacheKeySpec, CacheSection, ZoneCache};

use crate::codec::{RawHeaders, Special};
use crate::metrics::WorkerGauge;
use crate::modules::Headers;
use policy::{NotStored, RangeAnswer, ResponseFacts};

/// How long a response the cache may not store keeps later requests for its key from
/// waiting on one another (a "hit-for-pass", as Varnish calls it, with its default time: they
/// go to the origin side by side, as without a cache).
const PASS_FOR: Duration = Duration::from_secs(120);
/// Purges remembered one by one; older ones fold into "everything stored before then".
const MAX_BANS: usize = 10_000;
/// Memory a stored object costs beyond its header and body bytes (bookkeeping, map slot).
const OBJECT_OVERHEAD: u64 = 256;
/// Most `Vary` header names followed; a response varying on more is not stored.
const MAX_VARY: usize = 8;
/// Most `Cache-Tag` values kept per object.
const MAX_TAGS: usize = 64;

/// What a request got from the cache, counted per zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit = 0,
    Miss = 1,
    /// Stored, but stale: fetched again (or revalidated) before answering.
    Expired = 2,
    /// Served stale because the origin failed (`stale-if-error`).
    Stale = 3,
    /// Served stale while a background revalidation runs (`stale-while-revalidate`).
    Updating = 4,
    /// Revalidated with the origin (304) and served from the cache.
    Revalidated = 5,
    /// Not looked up: a rule, the method, an `Authorization` header or the kill switch.
    Bypass = 6,
}

pub const STATUS_NAMES: [&str; 7] = ["hit", "miss", "expired", "stale", "updating", "revalidated", "bypass"];

/// A zone's cache figures (per-worker shards, summed by `/metrics`).
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub by_status: [WorkerGauge; 7],
    /// Requests that waited for another's origin fetch and were then served from the cache.
    pub coalesced: WorkerGauge,
    pub stored: WorkerGauge,
    pub hit_bytes: WorkerGauge,
    pub stored_bytes: WorkerGauge,
}

impl CacheCounts {
    pub fn count(&self, s: CacheStatus) {
        if let Some(g) = self.by_status.get(s as usize) {
            g.add(1);
        }
    }
}

/// The node's cache: one store shared by every zone (keys start with the zone's name).
pub struct Cache {
    store: tinyufo::TinyUfo<u64, Arc<Object>>,
    hasher: std::collections::hash_map::RandomState,
    pub settings: CacheSection,
    /// Fills in progress (request coalescing), by key, in shards.
    fills: Vec<Mutex<HashMap<u64, Arc<Fill>>>>,
    bans: Mutex<Bans>,
    /// Orders stores and purges: a purge removes exactly the objects stored before it (a
    /// clock would leave stores and purges of the same tick unordered).
    sequence: AtomicU64,
    /// The sequence number of the newest ban: objects stored after it need no ban check.
    newest_ban: AtomicU64,
    epoch: Instant,
    /// Bytes held by stored objects (headers, bodies, overhead), including those evicted but
    /// still being sent.
    pub memory_bytes: Arc<AtomicU64>,
    pub objects: Arc<AtomicU64>,
    pub evictions: AtomicU64,
    pub purges: AtomicU64,
    /// The disk tier, when `cache.disk_path` is set and the directory could be opened.
    pub disk: Option<Arc<disk::Disk>>,
    /// Slots for disk writes in progress ([`tier::MAX_WRITES`]).
    disk_writes: Arc<tokio::sync::Semaphore>,
}

/// A purge, applied lazily: an object stored before `at` (a sequence number) that it matches
/// is a miss.
struct Ban {
    at: u64,
    zone: Option<Arc<str>>,
    what: Purge,
}

#[derive(Default)]
struct Bans {
    list: Vec<Ban>,
    /// Every object stored before this (sequence number) is gone: older bans folded in.
    floor: u64,
}

/// What a purge removes. URLs and prefixes are `host/path?query` (a scheme is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Url(String),
    Prefix(String),
    Tag(String),
    Everything,
}

impl Purge {
    fn matches(&self, o: &Object) -> bool {
        match self {
            Purge::Url(u) => *o.url == **u,
            Purge::Prefix(p) => o.url.starts_with(p.as_str()),
            Purge::Tag(t) => match &o.kind {
                Kind::Response(s) => s.tags.iter().any(|x| **x == **t),
                _ => false,
            },
            Purge::Everything => true,
        }
    }

    /// A URL as a purge names it: without `http://` or `https://`, host lowercase.
    pub fn url_form(url: &str) -> String {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or(url);
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        format!("{}{path}", crate::snapshot::normalize_host(host))
    }
}

/// One entry of the store.
pub struct Object {
    /// The full key, compared on every lookup (the store is addressed by its hash).
    key: Box<[u8]>,
    /// `host/path?query` as requested, for purges.
    url: Box<str>,
    zone: Arc<str>,
    /// Cache-clock milliseconds.
    stored: u64,
    /// Its place in the order of stores and purges ([`Cache::sequence`]).
    seq: u64,
    kind: Kind,
    _held: Held,
}

// Every object is behind an `Arc`, one allocation each: boxing the large variant would add one.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Response(Stored),
    /// The response varies on these request headers (lowercase, sorted): its variants are
    /// stored under the key extended with their values.
    Vary(Vec<Box<str>>),
    /// The last response was not storable: go to the origin without waiting on one another
    /// until this cache-clock time.
    Pass(u64),
}

/// A stored response.
pub struct Stored {
    status: StatusCode,
    /// Without hop-by-hop lines, `Content-Length`, `Age`, `Set-Cookie`, `Via`, `X-Request-Id`.
    headers: RawHeaders,
    body: BodyStore,
    body_len: u64,
    /// Its age when received, in seconds.
    initial_age: u64,
    /// Freshness lifetime, in seconds (0: revalidate on every use).
    fresh: u64,
    stale_while_revalidate: u64,
    stale_if_error: u64,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, `no-cache`).
    must_revalidate: bool,
    etag: Option<Bytes>,
    last_modified: Option<Bytes>,
    date: Option<u64>,
    tags: Vec<Box<str>>,
}

/// Where a stored body is: in memory, or only in the disk tier (too large for memory).
#[derive(Clone)]
pub enum BodyStore {
    Memory(Bytes),
    Disk(disk::Name),
}

/// Counts an object's bytes in the cache's memory gauge for as long as it lives.
struct Held {
    bytes: u64,
    memory: Arc<AtomicU64>,
    objects: Arc<AtomicU64>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.memory.fetch_sub(self.bytes, Ordering::Relaxed);
        self.objects.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One origin fetch that concurrent misses of a key wait for.
pub struct Fill {
    done: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Fill {
    /// Waits until the fill ends (stored, not storable, or failed) or `timeout` passes.
    pub async fn wait(&self, timeout: Duration) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
    }
}

/// The right to fill a key; dropping it (stored or not) wakes the waiters.
pub struct FillGuard {
    cache: Arc<Cache>,
    key: u64,
    fill: Arc<Fill>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if let Some(shard) = self.cache.fills.get(self.key as usize % self.cache.fills.len()) {
            let mut map = crate::lock(shard);
            if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.fill)) {
                map.remove(&self.key);
            }
        }
        self.fill.done.store(true, Ordering::Release);
        self.fill.notify.notify_waiters();
    }
}

enum Claim {
    Filler(FillGuard),
    Wait(Arc<Fill>),
}

impl Cache {
    pub fn new(settings: &CacheSection) -> Arc<Self> {
        // A disk tier that cannot be opened leaves the node serving, from memory only.
        let disk = settings.disk_path.as_deref().and_then(|dir| {
            // An object larger than the whole tier could never be kept.
            let max_object = settings.disk_max_object_bytes.min(settings.disk_bytes);
            match disk::Disk::open(std::path::Path::new(dir), settings.disk_bytes, max_object) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    tracing::error!(dir, error = %e, "the cache's disk tier could not be opened; caching in memory only");
                    None
                }
            }
        });
        let kib = (settings.memory_bytes / 1024).max(1) as usize;
        // The ghost queue and estimator are sized for objects of about 16 KiB on average.
        let estimated = (kib / 16).clamp(1024, 4 << 20);
        Arc::new(Self {
            store: tinyufo::TinyUfo::new(kib, estimated),
            hasher: std::collections::hash_map::RandomState::new(),
            settings: settings.clone(),
            fills: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
            bans: Mutex::new(Bans::default()),
            sequence: AtomicU64::new(1),
            newest_ban: AtomicU64::new(0),
            epoch: Instant::now(),
            memory_bytes: Arc::new(AtomicU64::new(0)),
            objects: Arc::new(AtomicU64::new(0)),
            evictions: AtomicU64::new(0),
            purges: AtomicU64::new(0),
            disk,
            disk_writes: Arc::new(tokio::sync::Semaphore::new(tier::MAX_WRITES)),
        })
    }

    /// Cache-clock milliseconds (monotonic), never 0.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    fn on_disk(&self, name: &disk::Name) -> bool {
        self.disk.as_ref().is_some_and(|d| d.contains(name))
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The object stored under `key`, if it is the one (full key compared) and no purge
    /// since it was stored matches it.
    fn get(&self, hash: u64, key: &[u8]) -> Option<Arc<Object>> {
        let o = self.store.get(&hash)?;
        if *o.key != *key {
            return None;
        }
        if o.seq < self.newest_ban.load(Ordering::Acquire) && self.banned(&o) {
            self.store.remove(&hash);
            return None;
        }
        Some(o)
    }

    fn banned(&self, o: &Object) -> bool {
        let bans = crate::lock(&self.bans);
        if o.seq < bans.floor {
            return true;
        }
        bans.list
            .iter()
            .rev()
            .take_while(|b| b.at > o.seq)
            .any(|b| b.zone.as_ref().is_none_or(|z| **z == *o.zone) && b.what.matches(o))
    }

    fn put(&self, hash: u64, o: impl Into<Arc<Object>>) {
        let o = o.into();
        let weight = u16::try_from(o._held.bytes.div_ceil(1024)).unwrap_or(u16::MAX).max(1);
        let evicted = self.store.force_put(hash, o, weight);
        self.evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
    }

    fn object(&self, key: &[u8], url: &str, zone: &Arc<str>, kind: Kind, extra: u64) -> Object {
        let held = match &kind {
            Kind::Response(s) => s.memory_bytes(),
            Kind::Vary(names) => names.iter().map(|n| n.len() as u64 + 16).sum(),
            Kind::Pass(_) => 0,
        };
        let bytes = held + extra + key.len() as u64 + url.len() as u64 + OBJECT_OVERHEAD;
        self.memory_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.objects.fetch_add(1, Ordering::Relaxed);
        Object {
            key: key.into(),
            url: url.into(),
            zone: zone.clone(),
            stored: self.now_ms(),
            seq: self.sequence.fetch_add(1, Ordering::AcqRel),
            kind,
            _held: Held { bytes, memory: self.memory_bytes.clone(), objects: self.objects.clone() },
        }
    }

    fn claim(self: &Arc<Self>, hash: u64) -> Claim {
        let Some(shard) = self.fills.get(hash as usize % self.fills.len()) else {
            return Claim::Wait(Arc::new(Fill { done: AtomicBool::new(true), notify: Default::default() }));
        };
        let mut map = crate::lock(shard);
        if let Some(f) = map.get(&hash) {
            return Claim::Wait(f.clone());
        }
        let fill = Arc::new(Fill { done: AtomicBool::new(false), notify: Default::default() });
        map.insert(hash, fill.clone());
        Claim::Filler(FillGuard { cache: self.clone(), key: hash, fill })
    }

    /// Records a purge; `zone` None: every zone. Returns at once: objects it matches are
    /// misses from now on, and are dropped from memory as they are looked up or evicted. The
    /// disk tier's files it dropped are returned, for the caller to delete
    /// ([`disk::delete_files`]) before it answers.
    pub fn purge(&self, zone: Option<Arc<str>>, what: Purge) -> Vec<std::path::PathBuf> {
        let files = self.purge_disk(zone.as_deref(), &what);
        let mut bans = crate::lock(&self.bans);
        let at = self.sequence.fetch_add(1, Ordering::AcqRel);
        if zone.is_none() && what == Purge::Everything {
            bans.list.clear();
            bans.floor = at;
        } else {
            bans.list.push(Ban { at, zone, what });
            if bans.list.len() > MAX_BANS {
                // The oldest half becomes "everything before the newest of them": more is
                // purged than asked, never less.
                let cut = MAX_BANS / 2;
                let floor = bans.list.get(cut - 1).map_or(at, |b| b.at);
                bans.list.drain(..cut);
                bans.floor = bans.floor.max(floor);
            }
        }
        drop(bans);
        self.newest_ban.store(at, Ordering::Release);
        self.purges.fetch_add(1, Ordering::Relaxed);
        files
    }

    /// The disk tier's part of a purge: its matching objects are forgotten now; their files,
    /// returned, are to be deleted (so that a restart does not bring them back).
    fn purge_disk(&self, zone: Option<&str>, what: &Purge) -> Vec<std::path::PathBuf> {
        let Some(disk) = &self.disk else { return Vec::new() };
        disk.purge(|url, z, tags| {
            zone.is_none_or(|want| want == z)
                && match what {
                    Purge::Url(u) => url == u,
                    Purge::Prefix(p) => url.starts_with(p.as_str()),
                    Purge::Tag(t) => tags.iter().any(|x| **x == **t),
                    Purge::Everything => true,
                }
        })
    }
}

/// What tells two requests' objects apart, compiled from a [`CacheKeySpec`].
#[derive(Debug, Clone)]
pub struct KeySpec {
    host: bool,
    /// None: the whole query; else only these parameters, sorted.
    query: Option<Vec<String>>,
    headers: Vec<String>,
    cookies: Vec<String>,
}

impl From<&CacheKeySpec> for KeySpec {
    fn from(k: &CacheKeySpec) -> Self {
        let mut query = k.query.clone();
        if let Some(q) = &mut query {
            q.sort();
        }
        Self { host: k.host, query, headers: k.headers.clone(), cookies: k.cookies.clone() }
    }
}

/// A cache rule, compiled.
pub struct Rule {
    pub name: String,
    pub expression: Option<palisade_config::rules::Expr>,
    pub bypass: bool,
    pub edge_ttl: Option<u64>,
    pub browser_ttl: Option<u64>,
    pub key: Option<KeySpec>,
}

/// A zone's cache settings, compiled (in [`crate::snapshot::ZoneRuntime`]).
pub struct ZonePolicy {
    pub cache: Arc<Cache>,
    pub zone: Arc<str>,
    pub rules: Vec<Rule>,
    pub set_cookie: bool,
    pub lock_timeout: Duration,
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
    pub heuristic_percent: u64,
    pub key: KeySpec,
}

impl ZonePolicy {
    pub fn new(cache: Arc<Cache>, zone: Arc<str>, zc: &ZoneCache, rules: Vec<Rule>) -> Self {
        Self {
            cache,
            zone,
            rules,
            set_cookie: zc.set_cookie,
            lock_timeout: Duration::from_millis(zc.lock_timeout_ms),
            stale_while_revalidate: zc.stale_while_revalidate_s,
            stale_if_error: zc.stale_if_error_s,
            heuristic_percent: zc.heuristic_percent,
            key: KeySpec::from(&CacheKeySpec::default()),
        }
    }

    pub fn compile_rule(r: &palisade_config::CacheRule, expression: Option<palisade_config::rules::Expr>) -> Rule {
        Rule {
            name: r.name.clone(),
            expression,
            bypass: r.action == CacheAction::Bypass,
            edge_ttl: r.edge_ttl_s,
            browser_ttl: r.browser_ttl_s,
            key: r.key.as_ref().map(KeySpec::from),
        }
    }
}

/// What a request brings to the cache.
pub struct Ask<'a> {
    pub view: &'a crate::modules::RequestView<'a>,
    pub head: bool,
}

/// The lookup's answer.
pub enum Lookup {
    /// Answer from the cache; with a filler guard, also revalidate in the background.
    Hit {
        object: Arc<Object>,
        status: CacheStatus,
        revalidate: Option<Box<Plan>>,
        browser_ttl: Option<u64>,
    },
    /// Another request is fetching this key: wait for it, then look up again.
    Wait(Arc<Fill>),
    /// Not in memory, but in the disk tier: load it ([`Cache::load`]), then look up again.
    Load(disk::Name),
    /// Go to the origin with this plan.
    Fetch(Box<Plan>),
    Bypass,
}

/// A request on its way to the origin on the cache's behalf.
pub struct Plan {
    policy_key: Vec<u8>,
    hash: u64,
    /// `host/path?query`, when the key does not hold it as is (see [`Plan::url`]).
    url: Option<String>,
    /// A stale object: revalidated with its validators, served if the origin fails.
    pub stale: Option<Arc<Object>>,
    fill: Option<FillGuard>,
    /// Store what comes back (not for HEAD).
    pub store: bool,
    pub edge_ttl: Option<u64>,
    pub browser_ttl: Option<u64>,
    pub status: CacheStatus,
    /// Seconds since the epoch when the request left for the origin.
    request_time: u64,
    /// The stored object's `Vary` names and the request's values of them (the end of
    /// `policy_key`), when the key was known to vary.
    vary: Option<(Vec<Box<str>>, usize)>,
    /// The key was marked not storable: do not mark it again.
    passing: bool,
}

pub(crate) use crate::clock::unix_now;

impl ZonePolicy {
    /// Looks a request up. Never waits: a [`Lookup::Wait`] is awaited by the caller, who then
    /// looks up again with `coalesce` false (no more waiting: to the origin, still storing).
    /// `load`: look in the disk tier on a memory miss (not again after a load that failed).
    pub fn lookup(&self, ask: &Ask<'_>, coalesce: bool, load: bool) -> Lookup {
        use palisade_config::rules::Request as _;
        let view = ask.view;
        if *view.method != hyper::Method::GET && *view.method != hyper::Method::HEAD {
            return Lookup::Bypass;
        }
        // Credentials, preconditions a stored response cannot judge, upgrades: the origin
        // answers. One pass over the names, most ruled out by their length.
        let mut refused = false;
        view.headers.names(&mut |n| {
            refused |= match n.len() {
                7 => crate::codec::eq_lowercase(n, b"upgrade"),
                8 => crate::codec::eq_lowercase(n, b"if-match"),
                13 => crate::codec::eq_lowercase(n, b"authorization"),
                19 => crate::codec::eq_lowercase(n, b"if-unmodified-since"),
                _ => false,
            }
        });
        if refused {
            return Lookup::Bypass;
        }
        let rule = self.rules.iter().find(|r| r.expression.as_ref().is_none_or(|e| e.eval(view)));
        if rule.is_some_and(|r| r.bypass) {
            return Lookup::Bypass;
        }
        let spec = rule.and_then(|r| r.key.as_ref()).unwrap_or(&self.key);
        let mut key = Vec::with_capacity(128);
        build_key(&mut key, &self.zone, spec, view);
        let browser_ttl = rule.and_then(|r| r.browser_ttl);
        let cache = &self.cache;
        let now = cache.now_ms();

        let mut hash = cache.hash(&key);
        let mut found = cache.get(hash, &key);
        let mut vary = None;
        if let Some(Kind::Vary(names)) = found.as_ref().map(|o| &o.kind) {
            let base = key.len();
            vary_key(&mut key, names, view.headers);
            hash = cache.hash(&key);
            vary = Some((names.clone(), key.len() - base));
            found = cache.get(hash, &key);
        }
        if found.is_none() && load {
            if let Some(name) = cache.disk.as_ref().map(|_| disk::name_of(&key)).filter(|n| cache.on_disk(n)) {
                return Lookup::Load(name);
            }
        }
        // A fresh hit, the common case, needs no plan (no allocation, no clock read).
        if let Some(object) = &found {
            if let Kind::Response(s) = &object.kind {
                if s.age_at(object.stored, now) < s.fresh {
                    let object = object.clone();
                    return Lookup::Hit { object, status: CacheStatus::Hit, revalidate: None, browser_ttl };
                }
            }
        }
        let mut plan = Box::new(Plan {
            policy_key: key,
            hash,
            // The default key holds the URL; only another shape needs it written out.
            url: (!spec.host || spec.query.is_some()).then(|| format!("{}{}", view.host(), view.uri())),
            stale: None,
            fill: None,
            store: !ask.head,
            edge_ttl: rule.and_then(|r| r.edge_ttl),
            browser_ttl,
            status: CacheStatus::Miss,
            request_time: unix_now(),
            vary,
            passing: false,
        });
        if let Some(object) = found {
            match &object.kind {
                Kind::Response(s) => {
                    // Stale (a fresh one was answered above).
                    let age = s.age_at(object.stored, now);
                    let swr = s.stale_while_revalidate.max(self.stale_while_revalidate);
                    let serve_stale = !s.must_revalidate && age.saturating_sub(s.fresh) < swr && !ask.head;
                    plan.status = CacheStatus::Expired;
                    plan.stale = Some(object.clone());
                    if serve_stale {
                        // One background revalidation at a time; the others just serve stale.
                        let revalidate = match cache.claim(hash) {
                            Claim::Filler(g) => {
                                plan.fill = Some(g);
                                Some(plan)
                            }
                            Claim::Wait(_) => None,
                        };
                        return Lookup::Hit { object, status: CacheStatus::Updating, revalidate, browser_ttl };
                    }
                }
                Kind::Pass(until) if *until > now => {
                    plan.passing = true;
                    return Lookup::Fetch(plan);
                }
                _ => {}
            }
        }
        if ask.head || !coalesce {
            return Lookup::Fetch(plan);
        }
        match cache.claim(hash) {
            Claim::Filler(g) => {
                plan.fill = Some(g);
                Lookup::Fetch(plan)
            }
            Claim::Wait(f) => Lookup::Wait(f),
        }
    }
}

impl Stored {
    /// A response to store, from what its headers say. `times`: when its request left and
    /// when it arrived (seconds since the epoch).
    fn new(
        status: StatusCode,
        headers: RawHeaders,
        (body, body_len): (BodyStore, u64),
        facts: &ResponseFacts<'_>,
        fresh: u64,
        (request_time, response_time): (u64, u64),
        tags: Vec<Box<str>>,
    ) -> Self {
        let d = &facts.directives;
        Stored {
            status,
            headers,
            body,
            body_len,
            initial_age: policy::initial_age(facts, request_time, response_time),
            fresh,
            stale_while_revalidate: d.stale_while_revalidate.unwrap_or(0),
            stale_if_error: d.stale_if_error.unwrap_or(0),
            must_revalidate: d.must_revalidate || d.no_cache,
            etag: facts.etag.map(Bytes::copy_from_slice),
            last_modified: facts.last_modified.map(Bytes::copy_from_slice),
            date: facts.date,
            tags,
        }
    }

    /// Bytes it holds in memory.
    fn memory_bytes(&self) -> u64 {
        let body = match &self.body {
            BodyStore::Memory(b) => b.len() as u64,
            BodyStore::Disk(_) => 0,
        };
        body + self.headers.byte_len() as u64
    }

    /// Its age in seconds at cache-clock `now` (stored at `stored`).
    fn age_at(&self, stored: u64, now: u64) -> u64 {
        self.initial_age.saturating_add(now.saturating_sub(stored) / 1000)
    }
}

/// The key: zone, host (unless left out), path, query as the spec says, headers, cookies.
fn build_key(out: &mut Vec<u8>, zone: &str, spec: &KeySpec, view: &crate::modules::RequestView<'_>) {
    use palisade_config::rules::Request as _;
    out.extend_from_slice(zone.as_bytes());
    out.push(0);
    if spec.host {
        out.extend_from_slice(view.host().as_bytes());
    }
    out.push(0);
    out.extend_from_slice(view.uri.path().as_bytes());
    let query = view.uri.query().unwrap_or("");
    match &spec.query {
        None => {
            if !query.is_empty() {
                out.push(b'?');
                out.extend_from_slice(query.as_bytes());
            }
        }
        Some(names) => {
            let mut kept: Vec<&str> = query
                .split('&')
                .filter(|p| names.binary_search_by(|n| n.as_str().cmp(p.split('=').next().unwrap_or(""))).is_ok())
                .collect();
            kept.sort_unstable();
            for (i, p) in kept.iter().enumerate() {
                out.push(if i == 0 { b'?' } else { b'&' });
                out.extend_from_slice(p.as_bytes());
            }
        }
    }
    for h in &spec.headers {
        out.push(0);
        out.extend_from_slice(h.as_bytes());
        out.push(b'=');
        out.extend_from_slice(view.headers.header(h).unwrap_or_default());
    }
    for c in &spec.cookies {
        out.push(0);
        out.extend_from_slice(c.as_bytes());
        out.push(b'=');
        out.extend_from_slice(view.headers.cookie(c).unwrap_or_default());
    }
}

/// The part of a variant's key that the request's values of the `Vary` headers make.
fn vary_key(out: &mut Vec<u8>, names: &[Box<str>], headers: &dyn Headers) {
    out.extend_from_slice(b"\0vary");
    for n in names {
        out.push(0);
        out.extend_from_slice(n.as_bytes());
        out.push(b'=');
        // Whitespace around commas does not make another variant.
        if let Some(v) = headers.header(n) {
            for (i, part) in v.split(|b| *b == b',').map(<[u8]>::trim_ascii).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(part);
            }
        }
    }
}

/// The `Vary` names of a response (lowercase, sorted, unique); Err for `*` or too many.
fn vary_names<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Box<str>>, NotStored> {
    let mut names: Vec<Box<str>> = Vec::new();
    for v in values {
        for n in v.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|n| !n.is_empty()) {
            if n == b"*" {
                return Err(NotStored::VaryStar);
            }
            let Ok(s) = std::str::from_utf8(n) else { return Err(NotStored::VaryStar) };
            names.push(s.to_ascii_lowercase().into());
        }
    }
    names.sort();
    names.dedup();
    if names.len() > MAX_VARY {
        return Err(NotStored::VaryStar);
    }
    Ok(names)
}

/// The headers of a response being stored, as lines of one block: what the cache sends on a
/// hit, before the per-hit headers.
fn stored_headers<'a>(lines: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<RawHeaders> {
    let mut block = BytesMut::with_capacity(512);
    for (name, value) in lines {
        let kind = Special::of(name);
        let drop = kind.is_hop_by_hop()
            || matches!(kind, Special::ContentLength | Special::Via | Special::XRequestId)
            || crate::codec::eq_lowercase(name, b"age")
            || crate::codec::eq_lowercase(name, b"set-cookie")
            || crate::codec::eq_lowercase(name, b"cache-status");
        if !drop {
            crate::codec::write_line(&mut block, name, value);
        }
    }
    RawHeaders::from_block(&block)
}

impl Plan {
    /// `host/path?query`: written out, or read from a default-shaped key
    /// (`zone \0 host \0 path?query [\0 ...]`).
    fn url(&self) -> std::borrow::Cow<'_, str> {
        if let Some(u) = &self.url {
            return u.as_str().into();
        }
        let mut parts = self.policy_key.split(|b| *b == 0).skip(1);
        let (host, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let mut url = String::from_utf8_lossy(host).into_owned();
        url.push_str(&String::from_utf8_lossy(target));
        url.into()
    }

    /// Conditional headers for the origin request: the stale object's validators.
    pub fn validators(&self) -> Option<(Option<HeaderValue>, Option<HeaderValue>)> {
        let Kind::Response(s) = &self.stale.as_ref()?.kind else { return None };
        let etag = s.etag.clone().and_then(|v| HeaderValue::from_maybe_shared(v).ok());
        let lm = s.last_modified.clone().and_then(|v| HeaderValue::from_maybe_shared(v).ok());
        (etag.is_some() || lm.is_some()).then_some((etag, lm))
    }

    /// The zone's `stale-if-error` object, if the origin's failure lets it be served.
    pub fn stale_if_error(&self, policy: &ZonePolicy) -> Option<Arc<Object>> {
        let o = self.stale.as_ref()?;
        let Kind::Response(s) = &o.kind else { return None };
        if s.must_revalidate {
            return None;
        }
        let age = s.age_at(o.stored, policy.cache.now_ms());
        let window = s.stale_if_error.max(policy.stale_if_error);
        (age.saturating_sub(s.fresh) < window).then(|| o.clone())
    }
}

/// A response from the origin, judged for storing.
pub enum Judged {
    /// Store it as it streams: hand this to the response body. With the request's cache
    /// status and the browser TTL to send.
    Record(Box<Recorder>, CacheStatus, Option<u64>),
    /// A 304 to our validators: the stale object, refreshed and stored again.
    Refreshed(Arc<Object>),
    NotStored(NotStored, CacheStatus, Option<u64>),
}

impl ZonePolicy {
    /// Judges an origin response for the plan. `lines`: every header line of the response
    /// (name, value), as the edge forwards them. `length`: its declared body length.
    pub fn judge<'a>(
        &self,
        mut plan: Box<Plan>,
        status: StatusCode,
        lines: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
        length: Option<u64>,
    ) -> Judged {
        let response_time = unix_now();
        let (status_seen, browser_ttl) = (plan.status, plan.browser_ttl);
        let not_stored = |why| Judged::NotStored(why, status_seen, browser_ttl);
        let value =
            |name: &str| lines.clone().find(|(n, _)| crate::codec::eq_lowercase(n, name.as_bytes())).map(|(_, v)| v);
        let facts = ResponseFacts {
            status: status.as_u16(),
            directives: policy::cache_control(
                lines.clone().filter(|(n, _)| crate::codec::eq_lowercase(n, b"cache-control")).map(|(_, v)| v),
            ),
            date: value("date").and_then(policy::http_date),
            expires: value("expires"),
            age: value("age").map(policy::delta_seconds),
            etag: value("etag"),
            last_modified: value("last-modified"),
            set_cookie: value("set-cookie").is_some(),
            vary_star: false,
        };
        let cache = &self.cache;
        if status == StatusCode::NOT_MODIFIED {
            if let Some(stale) = plan.stale.take() {
                if let Kind::Response(old) = &stale.kind {
                    return match self.refresh(&plan, &stale, old, &facts, lines, response_time) {
                        Some(o) => Judged::Refreshed(o),
                        None => not_stored(NotStored::NoFreshness),
                    };
                }
            }
            return not_stored(NotStored::Status);
        }
        let fresh = match policy::storable(&facts, response_time, &self.allow(&plan)) {
            Ok(f) => f,
            Err(why) => {
                // An error status may be gone next time: keep coalescing for it.
                if why != NotStored::Status && !plan.passing {
                    self.pass(&plan);
                }
                return not_stored(why);
            }
        };
        let vary =
            match vary_names(lines.clone().filter(|(n, _)| crate::codec::eq_lowercase(n, b"vary")).map(|(_, v)| v)) {
                Ok(v) => v,
                Err(why) => {
                    if !plan.passing {
                        self.pass(&plan);
                    }
                    return not_stored(why);
                }
            };
        // Larger than memory takes: the disk tier's own limit, when there is one.
        let max = cache.disk.as_ref().map_or(0, |d| d.max_object).max(cache.settings.max_object_bytes);
        if length.is_some_and(|n| n > max) || !plan.store {
            return not_stored(NotStored::TooLarge);
        }
        let Some(headers) = stored_headers(lines.clone()) else { return not_stored(NotStored::Status) };
        let tags = lines
            .clone()
            .filter(|(n, _)| crate::codec::eq_lowercase(n, b"cache-tag"))
            .flat_map(|(_, v)| v.split(|b| *b == b','))
            .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok())
            .filter(|t| !t.is_empty())
            .take(MAX_TAGS)
            .map(Box::from)
            .collect();
        let stored = Stored::new(
            status,
            headers,
            (BodyStore::Memory(Bytes::new()), 0),
            &facts,
            fresh,
            (plan.request_time, response_time),
            tags,
        );
        // A response that varies is stored under the key extended with the request's values of
        // the `Vary` headers. Those are known when the lookup found the names stored; the first
        // time, only the names are stored, and the next request stores its variant.
        let known: &[Box<str>] = plan.vary.as_ref().map_or(&[], |(names, _)| names.as_slice());
        if known != vary.as_slice() {
            let base_len = plan.policy_key.len() - plan.vary.as_ref().map_or(0, |(_, n)| *n);
            let base = plan.policy_key.get(..base_len).unwrap_or_default();
            if !vary.is_empty() {
                let marker = cache.object(base, &plan.url(), &self.zone, Kind::Vary(vary.clone()), 0);
                tier::write_vary(cache, base, &plan.url(), &self.zone, &vary);
                cache.put(cache.hash(base), marker);
                return not_stored(NotStored::VaryUnknown);
            }
            // It no longer varies: store under the base key.
            plan.policy_key.truncate(base_len);
            plan.hash = cache.hash(&plan.policy_key);
        }
        let recorder = Recorder {
            cache: cache.clone(),
            zone: self.zone.clone(),
            plan,
            stored: Some(stored),
            chunks: Vec::new(),
            len: 0,
            limit: self.cache.settings.max_object_bytes,
            counts: None,
            spill: None,
        };
        Judged::Record(Box::new(recorder), status_seen, browser_ttl)
    }

    /// What this zone lets in for a plan, beyond the origin's explicit freshness.
    fn allow(&self, plan: &Plan) -> policy::Allow {
        policy::Allow {
            ttl_override: plan.edge_ttl,
            set_cookie: self.set_cookie,
            heuristic_percent: self.heuristic_percent,
        }
    }

    /// Judges a response whose headers say nothing about caching (no `Cache-Control`, no
    /// `Expires`), found by one scan of the names: most responses of a site that does not
    /// cache. Not stored unless a rule gives a TTL, or it answers our validators (304).
    pub fn silent(&self, plan: &Plan, status: StatusCode) -> Option<Judged> {
        // Heuristic freshness reads Last-Modified: such a zone judges every response in full.
        if plan.edge_ttl.is_some() || status == StatusCode::NOT_MODIFIED || self.heuristic_percent > 0 {
            return None;
        }
        if !plan.passing {
            self.pass(plan);
        }
        Some(Judged::NotStored(NotStored::NoFreshness, plan.status, plan.browser_ttl))
    }

    /// Marks the key as not storable for a while, so requests for it stop waiting on each other.
    fn pass(&self, plan: &Plan) {
        let until = self.cache.now_ms() + PASS_FOR.as_millis() as u64;
        let o = self.cache.object(&plan.policy_key, &plan.url(), &self.zone, Kind::Pass(until), 0);
        self.cache.put(plan.hash, o);
    }

    /// A stored response refreshed by a 304 (RFC 9111 4.3.4): the 304's headers replace the
    /// stored ones of the same names; freshness starts again.
    fn refresh<'a>(
        &self,
        plan: &Plan,
        stale: &Object,
        old: &Stored,
        facts: &ResponseFacts<'_>,
        lines: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
        response_time: u64,
    ) -> Option<Arc<Object>> {
        let replaced = |name: &[u8]| lines.clone().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut merged: Vec<(&[u8], &[u8])> = old.headers.iter().filter(|(n, _)| !replaced(n)).collect();
        for (n, v) in lines.clone() {
            merged.push((n, v));
        }
        let headers = stored_headers(merged.iter().copied())?;
        let value = |name: &[u8]| merged.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
        let merged_facts = ResponseFacts {
            status: old.status.as_u16(),
            directives: policy::cache_control(
                merged.iter().filter(|(n, _)| n.eq_ignore_ascii_case(b"cache-control")).map(|(_, v)| *v),
            ),
            date: value(b"date").and_then(policy::http_date),
            expires: value(b"expires"),
            age: facts.age,
            etag: value(b"etag"),
            last_modified: value(b"last-modified"),
            set_cookie: false,
            vary_star: false,
        };
        let allow = policy::Allow { set_cookie: true, ..self.allow(plan) };
        let fresh = policy::storable(&merged_facts, response_time, &allow).ok()?;
        let stored = Stored::new(
            old.status,
            headers,
            (old.body.clone(), old.body_len),
            &merged_facts,
            fresh,
            (plan.request_time, response_time),
            old.tags.clone(),
        );
        let o = Arc::new(self.cache.object(&stale.key, &stale.url, &self.zone, Kind::Response(stored), 0));
        self.cache.put(plan.hash, o.clone());
        Some(o)
    }
}

/// Stores a response as its body streams to the client: the body's frames are kept (shared,
/// not copied) until the end, then joined and stored in memory (and written to the disk tier in
/// the background). A body that grows past `max_object_bytes` goes on to the disk tier as it
/// streams, when there is one and it fits there; else it is not stored. A body that fails or is
/// dropped early is not stored. The fill ends either way.
pub struct Recorder {
    cache: Arc<Cache>,
    zone: Arc<str>,
    plan: Box<Plan>,
    stored: Option<Stored>,
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    counts: Option<Arc<crate::metrics::ZoneStats>>,
    /// Streaming to the disk tier: the writer's queue.
    spill: Option<tokio::sync::mpsc::Sender<tier::Spill>>,
}

impl Recorder {
    pub fn count_in(&mut self, stats: Arc<crate::metrics::ZoneStats>) {
        self.counts = Some(stats);
    }

    pub fn push(&mut self, data: &Bytes) {
        self.len += data.len() as u64;
        if let Some(tx) = &self.spill {
            // A disk slower than the client: the object is not stored, the client not slowed.
            if tx.try_send(tier::Spill::Data(data.clone())).is_err() {
                self.spill = None;
            }
            return;
        }
        if self.stored.is_none() {
            return;
        }
        self.chunks.push(data.clone());
        if self.len > self.limit {
            self.spill = self.stored.take().and_then(|stored| self.start_spill(stored));
            self.chunks = Vec::new();
        }
    }

    /// Moves a body too large for memory to the disk tier, from what has come so far.
    fn start_spill(&mut self, stored: Stored) -> Option<tokio::sync::mpsc::Sender<tier::Spill>> {
        let disk = self.cache.disk.clone()?;
        if self.len > disk.max_object {
            return None;
        }
        let chunks = std::mem::take(&mut self.chunks);
        let job = tier::SpillJob {
            cache: self.cache.clone(),
            zone: self.zone.clone(),
            key: self.plan.policy_key.clone(),
            url: self.plan.url().into_owned(),
            hash: self.plan.hash,
            fill: self.plan.fill.take(),
            stored,
            counts: self.counts.clone(),
        };
        tier::spill(disk, job, chunks)
    }

    /// The body is complete: store it.
    pub fn finish(&mut self) {
        if let Some(tx) = self.spill.take() {
            tier::end_spill(tx);
            return;
        }
        let Some(mut stored) = self.stored.take() else { return };
        let mut body = BytesMut::with_capacity(self.len as usize);
        for c in self.chunks.drain(..) {
            body.extend_from_slice(&c);
        }
        let body = body.freeze();
        stored.body_len = body.len() as u64;
        stored.body = BodyStore::Memory(body);
        if let Some(z) = &self.counts {
            z.cache.stored.add(1);
            z.cache.stored_bytes.add(stored.body_len);
        }
        let url = self.plan.url();
        tier::write_behind(&self.cache, &self.plan.policy_key, &url, &self.zone, &stored);
        let o = self.cache.object(&self.plan.policy_key, &url, &self.zone, Kind::Response(stored), 0);
        self.cache.put(self.plan.hash, o);
        // The fill ends: waiters look up again and find it.
        self.plan.fill = None;
    }
}

/// A response from the cache: status, stored headers and the headers of this hit, body.
pub struct Served {
    pub status: StatusCode,
    pub headers: RawHeaders,
    pub age: u64,
    pub content_range: Option<HeaderValue>,
    pub body: Option<ServedBody>,
    /// The body's length when the body is left out (HEAD, 304).
    pub length: Option<u64>,
}

/// A body from the cache: bytes in memory, or a part of a file of the disk tier.
pub enum ServedBody {
    Bytes(Bytes),
    Disk(tier::DiskRead),
}

impl ServedBody {
    pub fn len(&self) -> u64 {
        match self {
            ServedBody::Bytes(b) => b.len() as u64,
            ServedBody::Disk(d) => d.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a cached object answers to a request: 304 to a matching conditional, 206 or 416 to
/// a range, else the stored response. `browser_ttl` replaces the stored `Cache-Control`.
pub fn serve(
    policy: &ZonePolicy,
    object: &Arc<Object>,
    headers: &dyn Headers,
    head: bool,
    browser_ttl: Option<u64>,
) -> Option<Served> {
    let Kind::Response(s) = &object.kind else { return None };
    let age = s.age_at(object.stored, policy.cache.now_ms());
    let mut out_headers = s.headers.clone();
    if browser_ttl.is_some() {
        out_headers.retain(|_, n, _| !crate::codec::eq_lowercase(n, b"cache-control"));
    }
    let len = s.body_len;
    let not_modified = match headers.header("if-none-match") {
        Some(inm) => policy::none_match(inm, s.etag.as_deref()),
        None => headers
            .header("if-modified-since")
            .is_some_and(|ims| policy::not_modified_since(ims, s.last_modified.as_deref(), s.date)),
    };
    let range = match headers.header("range") {
        Some(r)
            if s.status == StatusCode::OK
                && headers
                    .header("if-range")
                    .is_none_or(|ir| policy::if_range_holds(ir, s.etag.as_deref(), s.last_modified.as_deref())) =>
        {
            policy::range(r, len)
        }
        _ => RangeAnswer::Whole,
    };
    // The status, the part of the body to send (start, end), and `Content-Range`.
    let (status, (start, end), content_range) = if not_modified && s.status == StatusCode::OK {
        (StatusCode::NOT_MODIFIED, (0, 0), None)
    } else {
        match range {
            RangeAnswer::Whole => (s.status, (0, len), None),
            RangeAnswer::Part { start, end } => (
                StatusCode::PARTIAL_CONTENT,
                (start, end + 1),
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).ok(),
            ),
            RangeAnswer::Unsatisfiable => {
                (StatusCode::RANGE_NOT_SATISFIABLE, (0, 0), HeaderValue::from_str(&format!("bytes */{len}")).ok())
            }
        }
    };
    let body = match &s.body {
        _ if head || status == StatusCode::NOT_MODIFIED => None,
        _ if start == end => Some(ServedBody::Bytes(Bytes::new())),
        BodyStore::Memory(b) => Some(ServedBody::Bytes(b.slice(start as usize..(end as usize).min(b.len())))),
        BodyStore::Disk(name) => {
            Some(ServedBody::Disk(tier::DiskRead::new(&policy.cache, object, *name, start, end - start)))
        }
    };
    Some(Served {
        status,
        headers: out_headers,
        age,
        content_range,
        body,
        length: (head && status != StatusCode::NOT_MODIFIED).then_some(end - start),
    })
}

pub use palisade_config::purge::PurgeRequest;

/// The purges a checked request asks for.
fn purges_of(req: &PurgeRequest) -> Result<Vec<Purge>, String> {
    req.check()?;
    let mut out = Vec::new();
    if req.purge_everything {
        out.push(Purge::Everything);
    }
    out.extend(req.files.iter().map(|f| Purge::Url(Purge::url_form(f))));
    out.extend(req.prefixes.iter().map(|p| Purge::Prefix(Purge::url_form(p))));
    out.extend(req.hosts.iter().map(|h| Purge::Prefix(format!("{}/", crate::snapshot::normalize_host(h)))));
    out.extend(req.tags.iter().map(|t| Purge::Tag(t.clone())));
    Ok(out)
}

impl Cache {
    /// Applies a purge request; returns how many purges it recorded, and the disk tier's files
    /// to delete ([`disk::delete_files`]) before the purge is answered.
    pub fn purge_request(&self, req: &PurgeRequest) -> Result<(usize, Vec<std::path::PathBuf>), String> {
        let purges = purges_of(req)?;
        let zone: Option<Arc<str>> = req.zone.as_deref().map(Arc::from);
        let n = purges.len();
        let mut files = Vec::new();
        for p in purges {
            files.extend(self.purge(zone.clone(), p));
        }
        Ok((n, files))
    }

    /// Storage figures for the admin API and metrics.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "memory_bytes": self.memory_bytes.load(Ordering::Relaxed),
            "memory_limit_bytes": self.settings.memory_bytes,
            "max_object_bytes": self.settings.max_object_bytes,
            "objects": self.objects.load(Ordering::Relaxed),
            "evictions": self.evictions.load(Ordering::Relaxed),
            "purges": self.purges.load(Ordering::Relaxed),
            "disk": self.disk.as_ref().map(|d| serde_json::json!({
                "bytes": d.used_bytes.load(Ordering::Relaxed),
                "limit_bytes": self.settings.disk_bytes,
                "objects": d.objects(),
                "writes": d.writes.load(Ordering::Relaxed),
                "corrupt": d.corrupt.load(Ordering::Relaxed),
                "evictions": d.evictions.load(Ordering::Relaxed),
            })),
        })
    }
}
