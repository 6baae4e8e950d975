//! The security module pipeline (DESIGN.md, principle 3).
//!
//! A module is a small type that looks at a request and says go on, or answer now. Every call
//! crosses one boundary, [`Slot::run`], which:
//! - skips the module when it is switched off (the fleet's kill switch of its name, the zone's
//!   `enabled = false`, or the node's admin API), silently: "off" means "as if not configured";
//! - catches an error *and a panic* inside the module (`catch_unwind`), so neither reaches the
//!   connection's task or the process, and turns it into the module's failure policy:
//!   `fail_open` / `fail_stale` skip the module and mark the request, `fail_closed` answers 503;
//! - counts calls, errors, panics and breaker trips per zone and module (`/metrics`, and the
//!   reports the control plane's rollout gates read);
//! - keeps the module's circuit breaker: after `breaker_threshold` failures within
//!   `breaker_window_ms` the module is not called for `breaker_cooldown_ms` (its policy applies
//!   meanwhile), then tried again; one more failure soon after opens the breaker at once;
//! - logs failures within a budget (a few lines a second per node, the rest counted), so a
//!   storm of failures cannot slow the request path with logging.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use palisade_config::artifact::IpSet;
use palisade_config::{FailurePolicy, Fault, ModuleSettings};

use crate::kill::{KillSwitches, Switch};
use crate::metrics::WorkerGauge;

/// What a module sees of a request.
pub struct RequestView<'a> {
    pub client_ip: IpAddr,
    pub method: &'a hyper::Method,
    pub uri: &'a hyper::Uri,
    pub version: hyper::Version,
    /// The Host (or :authority) as sent; [`RequestView::host`] normalises it when a rule asks.
    pub raw_host: Option<&'a hyper::header::HeaderValue>,
    pub host: std::cell::OnceCell<std::borrow::Cow<'a, str>>,
    pub tls: bool,
    /// The connection's TLS client fingerprint ([`crate::ja4`]).
    pub ja4: Option<&'a str>,
    /// The connection's HTTP/2 client fingerprint ([`crate::h2fp`]).
    pub h2: Option<&'a str>,
    pub headers: &'a dyn Headers,
    /// The node's challenge key and the zone's name: what a clearance cookie is checked
    /// against (see [`RequestView::cleared`]).
    pub clearance: Option<(&'a crate::challenge::Keys, &'a str)>,
    pub cleared: std::cell::OnceCell<bool>,
    /// Set by the `bot` module for the modules after it (the firewall's `bot.score`).
    pub bot: std::cell::Cell<Option<crate::bot::BotResult>>,
}

impl<'a> RequestView<'a> {
    /// A plain HTTP/1.1 request: no TLS, no Host, no clearance keys (tests, fuzzing).
    pub fn plain(client_ip: IpAddr, method: &'a hyper::Method, uri: &'a hyper::Uri, headers: &'a dyn Headers) -> Self {
        RequestView {
            client_ip,
            method,
            uri,
            version: hyper::Version::HTTP_11,
            raw_host: None,
            host: std::cell::OnceCell::new(),
            tls: false,
            ja4: None,
            h2: None,
            headers,
            clearance: None,
            cleared: std::cell::OnceCell::new(),
            bot: std::cell::Cell::new(None),
        }
    }

    /// Whether the client holds a valid clearance (a passed challenge) for this zone; checked
    /// once per request, and only when a `challenge` action asks.
    pub fn cleared(&self) -> bool {
        *self
            .cleared
            .get_or_init(|| self.clearance.is_some_and(|(keys, zone)| crate::challenge::cleared(keys, zone, self)))
    }
}

impl palisade_config::rules::Request for RequestView<'_> {
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn uri(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }
    fn path(&self) -> &str {
        self.uri.path()
    }
    fn query(&self) -> &str {
        self.uri.query().unwrap_or("")
    }
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.headers.header(name)
    }
    fn version(&self) -> &str {
        match self.version {
            hyper::Version::HTTP_10 => "HTTP/1.0",
            hyper::Version::HTTP_2 => "HTTP/2",
            hyper::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }
    }
    /// The host the request is routed by (lowercase, no port), worked out on first use.
    fn host(&self) -> &str {
        self.host
            .get_or_init(|| crate::snapshot::normalize_host(self.raw_host.and_then(|v| v.to_str().ok()).unwrap_or("")))
    }
    fn ip(&self) -> IpAddr {
        self.client_ip
    }
    fn ssl(&self) -> bool {
        self.tls
    }
    /// Absent unless the `bot` module computed one: never 0.
    fn bot_score(&self) -> Option<i64> {
        self.bot.get().map(|b| i64::from(b.score))
    }
    fn bot_verified(&self) -> bool {
        self.bot.get().is_some_and(|b| b.verified)
    }
    fn tls_ja4(&self) -> Option<&str> {
        self.ja4
    }
    fn http2_fingerprint(&self) -> Option<&str> {
        self.h2
    }
    fn http_fingerprint(&self) -> Option<String> {
        Some(format!("{:016x}", crate::ddos::fingerprint(self)))
    }
}

/// Header lookup over either form a request arrives in (HTTP/1.1 lines or an HTTP/2 map).
pub trait Headers {
    /// The first value of `name` (lowercase).
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]>;
    /// The value of cookie `name`, in whichever `Cookie` header it is.
    fn cookie<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.header("cookie").and_then(|c| crate::codec::cookie(c, name))
    }
    /// Every header name, in the order received (as received: case may vary).
    fn names(&self, f: &mut dyn FnMut(&[u8]));
}

/// A module's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Answer now with this status.
    Respond(u16),
    /// 429 Too Many Requests, retry after this many seconds.
    TooMany(u64),
    /// The challenge page, with a proof of work of this many bits.
    Challenge(u8),
    /// No answer: the connection is reset (`drop` DDoS mitigations).
    Drop,
}

/// A module failed this request (a panic is caught and counted apart).
#[derive(Debug)]
pub struct ModuleError(pub String);

pub trait Module: Send + Sync {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError>;
}

/// Counters of one module in one zone. They live in the node's metrics registry, so a reload
/// keeps them.
#[derive(Debug, Default)]
pub struct ModuleStats {
    /// Per worker, as the answers: every request counts here, from every core.
    pub calls: WorkerGauge,
    /// Requests the module answered itself (a block, say).
    pub answers: WorkerGauge,
    pub errors: AtomicU64,
    pub panics: AtomicU64,
    pub breaker_trips: AtomicU64,
    /// Requests the module was skipped for after a failure or with its breaker open (fail_open
    /// or fail_stale).
    pub skipped: AtomicU64,
    /// Requests refused with 503 because the module failed (fail_closed).
    pub refused: AtomicU64,
    pub breaker_open: AtomicBool,
}

/// A module's circuit breaker (state shared by every worker's copy of the zone).
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    /// Panics within the window that open it: `threshold`, but never more than
    /// [`MAX_PANICS_PER_WINDOW`]. An error may be a verdict a module cannot reach (and costs
    /// nothing to contain); a panic is a bug, and unwinding one costs microseconds.
    panic_threshold: u32,
    panics: AtomicU32,
    window_ms: u64,
    cooldown_ms: u64,
    failures: AtomicU32,
    window_start_ms: AtomicU64,
    open_until_ms: AtomicU64,
    /// Until then, one failure opens the breaker again (it was just closed after a cool-down).
    probation_until_ms: AtomicU64,
}

impl Breaker {
    pub fn new(s: &ModuleSettings) -> Self {
        Self {
            threshold: s.breaker_threshold.max(1),
            panic_threshold: s.breaker_threshold.clamp(1, MAX_PANICS_PER_WINDOW),
            panics: AtomicU32::new(0),
            window_ms: s.breaker_window_ms,
            cooldown_ms: s.breaker_cooldown_ms,
            failures: AtomicU32::new(0),
            window_start_ms: AtomicU64::new(0),
            open_until_ms: AtomicU64::new(0),
            probation_until_ms: AtomicU64::new(0),
        }
    }

    fn is_open(&self, now: u64) -> bool {
        now < self.open_until_ms.load(Ordering::Relaxed)
    }

    /// Records a failure (`panicked`: a panic); true when it opened the breaker.
    fn failure(&self, now: u64, panicked: bool) -> bool {
        let on_probation = now < self.probation_until_ms.load(Ordering::Relaxed);
        if now.saturating_sub(self.window_start_ms.load(Ordering::Relaxed)) > self.window_ms {
            self.window_start_ms.store(now, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.panics.store(0, Ordering::Relaxed);
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let panics = if panicked { self.panics.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
        if n < self.threshold && panics < self.panic_threshold && !on_probation {
            return false;
        }
        let until = now + self.cooldown_ms;
        // One worker opens it; the others see it open.
        if self.open_until_ms.swap(until, Ordering::Relaxed) > now {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        self.panics.store(0, Ordering::Relaxed);
        self.window_start_ms.store(until, Ordering::Relaxed);
        self.probation_until_ms.store(until + self.window_ms, Ordering::Relaxed);
        true
    }
}

/// A module in a zone, with everything its boundary needs.
pub struct Slot {
    pub name: &'static str,
    module: Box<dyn Module>,
    policy: FailurePolicy,
    enabled: bool,
    kill: Switch,
    breaker: Breaker,
    pub stats: Arc<ModuleStats>,
    /// An early-drop module ([`EARLY`]): it also meets the answers to challenge pages.
    early: bool,
}

/// What the pipeline decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// Answer now (a module's verdict, or 503 from a failed fail_closed module).
    Respond(u16),
    /// 429 with `Retry-After` (seconds).
    TooMany(u64),
    /// The challenge page ([`crate::challenge`]), with a proof of work of this many bits.
    Challenge(u8),
    /// No answer: the connection is reset (an HTTP/2 stream is).
    Drop,
}

/// Milliseconds on a monotonic clock (the connection's per-poll time).
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    crate::clock::now().saturating_duration_since(start).as_millis() as u64
}

impl Slot {
    pub fn new(
        name: &'static str,
        module: Box<dyn Module>,
        settings: &ModuleSettings,
        kill: Switch,
        stats: Arc<ModuleStats>,
    ) -> Self {
        Self {
            name,
            module,
            policy: settings.failure_policy,
            enabled: settings.enabled,
            kill,
            breaker: Breaker::new(settings),
            stats,
            early: EARLY.contains(&name),
        }
    }

    /// Whether the zone's config has it on (its kill switch aside).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What the admin API shows of it.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "enabled": self.enabled,
            "failure_policy": self.policy,
            "breaker_open": self.breaker.is_open(now_ms()),
            "calls": self.stats.calls.get(),
            "errors": self.stats.errors.load(Ordering::Relaxed),
            "panics": self.stats.panics.load(Ordering::Relaxed),
            "breaker_trips": self.stats.breaker_trips.load(Ordering::Relaxed),
        })
    }

    /// The module's boundary: see the module docs. `degraded` is set when the module was
    /// skipped because it failed.
    pub fn run(&self, req: &RequestView<'_>, kill: &KillSwitches, zone: &str, degraded: &mut bool) -> Outcome {
        if !self.enabled || kill.off(self.kill) {
            return Outcome::Continue;
        }
        // A breaker that never opened needs no clock (the common case, on every request).
        let opened = self.breaker.open_until_ms.load(Ordering::Relaxed) != 0;
        let open = opened && self.breaker.is_open(now_ms());
        // Written when it changes only: a store per request would pass its line between cores.
        if self.stats.breaker_open.load(Ordering::Relaxed) != open {
            self.stats.breaker_open.store(open, Ordering::Relaxed);
        }
        if open {
            return self.fail(degraded);
        }
        self.stats.calls.add(1);
        let mut panicked = false;
        let failure = match catch_unwind(AssertUnwindSafe(|| self.module.on_request(req))) {
            Ok(Ok(Verdict::Continue)) => return Outcome::Continue,
            Ok(Ok(Verdict::Respond(status))) => {
                self.stats.answers.add(1);
                return Outcome::Respond(status);
            }
            Ok(Ok(Verdict::TooMany(retry_after))) => {
                self.stats.answers.add(1);
                return Outcome::TooMany(retry_after);
            }
            Ok(Ok(Verdict::Challenge(difficulty))) => {
                self.stats.answers.add(1);
                return Outcome::Challenge(difficulty);
            }
            Ok(Ok(Verdict::Drop)) => {
                self.stats.answers.add(1);
                return Outcome::Drop;
            }
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                e.0
            }
            Err(payload) => {
                panicked = true;
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                format!("panicked: {what}")
            }
        };
        if self.breaker.failure(now_ms(), panicked) {
            self.stats.breaker_trips.fetch_add(1, Ordering::Relaxed);
            self.stats.breaker_open.store(true, Ordering::Relaxed);
            if log_budget() {
                tracing::warn!(zone, module = self.name, "circuit breaker opened: the module is off for its cool-down");
            }
        }
        if log_budget() {
            tracing::warn!(zone, module = self.name, policy = ?self.policy, error = %failure, "module failed");
        }
        self.fail(degraded)
    }

    fn fail(&self, degraded: &mut bool) -> Outcome {
        match self.policy {
            FailurePolicy::FailClosed => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Outcome::Respond(503)
            }
            FailurePolicy::FailOpen | FailurePolicy::FailStale => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                *degraded = true;
                Outcome::Continue
            }
        }
    }
}

/// Panics within a breaker's window that open it, whatever its `breaker_threshold`: a
/// configuration can tolerate a module's errors at any rate, never a panicking module for
/// long. 50 is the shipped threshold.
pub const MAX_PANICS_PER_WINDOW: u32 = 50;

/// Lines of module-failure logging allowed per second on this node; the rest are counted only.
const LOG_PER_SECOND: u64 = 5;

/// Whether one more failure line may be written now (a per-second budget shared by the node).
fn log_budget() -> bool {
    static SECOND: AtomicU64 = AtomicU64::new(0);
    static USED: AtomicU64 = AtomicU64::new(0);
    let second = now_ms() / 1000;
    if SECOND.swap(second, Ordering::Relaxed) != second {
        USED.store(0, Ordering::Relaxed);
    }
    USED.fetch_add(1, Ordering::Relaxed) < LOG_PER_SECOND
}

/// Replaces the default panic report (message and, with RUST_BACKTRACE, a backtrace, for every
/// panic) with one within the same per-second budget as module failures: a module panicking on
/// every request must not make every request write a backtrace. Panics past the budget are still
/// counted where they are caught.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if log_budget() {
                let backtrace = std::backtrace::Backtrace::capture();
                tracing::error!(panic = %info, backtrace = %backtrace, "panic");
            }
        }));
    });
}

/// Runs a zone's modules in order; the first answer wins. With `early_only`, only the early-drop
/// modules run (the answer to a challenge page meets those, not the ones that challenge).
pub fn run_all(
    slots: &[Slot],
    req: &RequestView<'_>,
    kill: &KillSwitches,
    zone: &str,
    degraded: &mut bool,
    early_only: bool,
) -> Outcome {
    for slot in slots {
        if early_only && !slot.early {
            continue;
        }
        match slot.run(req, kill, zone, degraded) {
            Outcome::Continue => {}
            answer => return answer,
        }
    }
    Outcome::Continue
}

/// The modules that drop a request early, before anything looks at what it asks.
const EARLY: [&str; 3] = ["fault", "ip_lists", "ddos"];

/// Early drop: 403 for a client address on the zone's `ip_deny` list.
pub struct IpLists(pub Arc<IpSet>);

impl Module for IpLists {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError> {
        Ok(if self.0.contains(req.client_ip) { Verdict::Respond(403) } else { Verdict::Continue })
    }
}

/// The zone's firewall rules, in order: the first `allow` or `block` decides; `log` counts and
/// goes on; `challenge` answers with the challenge page, unless the client holds a clearance:
/// then it goes on.
pub struct Firewall {
    pub rules: Vec<FirewallRule>,
}

pub struct FirewallRule {
    pub expr: palisade_config::rules::Expr,
    pub action: palisade_config::RuleAction,
    /// For `challenge`: the proof of work's bits.
    pub difficulty: u8,
    /// Requests this rule matched.
    pub matches: Arc<AtomicU64>,
}

impl Module for Firewall {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError> {
        use palisade_config::RuleAction;
        for r in &self.rules {
            if !r.expr.eval(req) {
                continue;
            }
            r.matches.fetch_add(1, Ordering::Relaxed);
            match r.action {
                RuleAction::Allow => return Ok(Verdict::Continue),
                RuleAction::Block => return Ok(Verdict::Respond(403)),
                RuleAction::Log => {}
                RuleAction::Challenge if req.cleared() => {}
                RuleAction::Challenge => return Ok(Verdict::Challenge(r.difficulty)),
            }
        }
        Ok(Verdict::Continue)
    }
}

/// Fails on purpose (see [`palisade_config::Fault`]).
pub struct FaultModule {
    header: Option<String>,
    error_percent: u32,
    panic_percent: u32,
    counter: AtomicU64,
}

impl FaultModule {
    pub fn new(f: &Fault) -> Self {
        Self {
            header: f.header.as_ref().map(|h| h.to_ascii_lowercase()),
            error_percent: f.error_percent,
            panic_percent: f.panic_percent,
            counter: AtomicU64::new(0),
        }
    }
}

/// A real panic, to drill containment: only in builds with the `fault-panics` feature (the test
/// and bench builds). A shipped node never panics on purpose; there a requested panic is an error.
#[cfg(feature = "fault-panics")]
#[allow(clippy::panic)]
fn injected_panic() -> Result<Verdict, ModuleError> {
    panic!("fault injected: panic");
}

#[cfg(not(feature = "fault-panics"))]
fn injected_panic() -> Result<Verdict, ModuleError> {
    Err(ModuleError("fault injected: panic requested; this build has no panic injection".into()))
}

impl Module for FaultModule {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError> {
        let asked = self.header.as_deref().and_then(|h| req.headers.header(h));
        // Spread evenly: of every 100 requests, the first panic_percent panic, the next
        // error_percent fail.
        let slot = (self.counter.fetch_add(1, Ordering::Relaxed) % 100) as u32;
        if asked == Some(b"panic") || slot < self.panic_percent {
            return injected_panic();
        }
        if asked == Some(b"error") || slot < self.panic_percent + self.error_percent {
            return Err(ModuleError("fault injected: error".into()));
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(threshold: u32) -> ModuleSettings {
        ModuleSettings {
            breaker_threshold: threshold,
            breaker_window_ms: 1000,
            breaker_cooldown_ms: 5000,
            ..Default::default()
        }
    }

    #[test]
    fn the_breaker_opens_cools_down_and_reopens_on_probation() {
        let b = Breaker::new(&settings(3));
        assert!(!b.failure(100, false) && !b.failure(200, false));
        assert!(b.failure(300, false), "the third failure within the window opens it");
        assert!(b.is_open(300) && b.is_open(5299) && !b.is_open(5300));
        assert!(b.failure(5400, false), "one failure right after the cool-down opens it again");
        assert!(b.is_open(5400));
        // Long after, failures count from zero again.
        assert!(!b.failure(20_000, false) && !b.failure(20_001, false));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let b = Breaker::new(&settings(3));
        assert!(!b.failure(100, false) && !b.failure(200, false));
        assert!(!b.failure(2000, false), "a new window");
        assert!(!b.failure(2100, false));
        assert!(b.failure(2200, false));
    }

    #[test]
    fn a_panicking_module_is_switched_off_whatever_the_threshold_says() {
        // A threshold no error rate reaches: errors never open it.
        let b = Breaker::new(&settings(1_000_000));
        for t in 0..500 {
            assert!(!b.failure(t, false));
        }
        // Panics do, at the ceiling.
        let b = Breaker::new(&settings(1_000_000));
        for t in 0..u64::from(MAX_PANICS_PER_WINDOW) - 1 {
            assert!(!b.failure(t, true), "panic {t}");
        }
        assert!(b.failure(100, true), "the 50th panic in the window opens it");
        assert!(b.is_open(101));
        // A lower threshold still counts panics as failures.
        let b = Breaker::new(&settings(3));
        assert!(!b.failure(1, true) && !b.failure(2, false) && b.failure(3, true));
    }
}
