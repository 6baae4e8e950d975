//! The document as it is written (TOML on disk, the same shape as JSON over the API).
//! Every struct rejects unknown fields: a typo is an error, never a silently ignored setting.

use serde::{Deserialize, Serialize};

/// One fleet configuration document.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Monotonically increasing version number, assigned by whoever publishes the document.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub listen: ListenSection,
    #[serde(default)]
    pub limits: ConnectionLimits,
    #[serde(default)]
    pub access_log: AccessLogSection,
    /// The node's cache storage, shared by every zone (what each zone caches: [`ZoneCache`]).
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Files this document uses, pinned by content hash (see [`crate::artifact`]).
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
}

/// An artifact the document uses: a name the zones refer to, its kind, and the SHA-256 of its
/// exact bytes. A node under a control plane fetches it by hash; a stand-alone node reads
/// `file`. Either way the bytes are checked against the hash and decoded before use.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRef {
    pub name: String,
    pub kind: crate::artifact::ArtifactKind,
    pub sha256: String,
    /// Where a stand-alone node reads it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Name of this node, shown in `Via`, metrics and logs.
    pub name: String,
    /// Location label ("city").
    pub city: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self { name: "palisade".into(), city: "local".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// Cleartext HTTP listener (`ip:port`); HTTP/1.1 and HTTP/2 with prior knowledge.
    pub http: Option<String>,
    /// TLS listener (`ip:port`); certificates come from the zones, chosen by SNI; ALPN h2 and http/1.1.
    pub https: Option<String>,
    /// Admin listener: `/metrics`, `/healthz`, `/config`, `POST /reload`. Loopback by default.
    pub admin: Option<String>,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self { http: Some("127.0.0.1:8080".into()), https: None, admin: Some("127.0.0.1:9901".into()) }
    }
}

/// Connection guards. The defaults are safe for a public listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Time allowed to receive a complete request head (and the TLS handshake), from its first byte.
    pub header_timeout_ms: u64,
    /// Keep-alive: time a connection may sit with no request in flight and no bytes moving.
    pub idle_timeout_ms: u64,
    /// Time allowed between two reads of a request body.
    pub body_timeout_ms: u64,
    /// Time a response may wait for the client to accept more bytes (a client that stops reading).
    pub send_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes. Over it: 431.
    pub max_header_bytes: u64,
    /// Most header fields in one request. Over it: 431.
    pub max_headers: u64,
    /// Most open client connections on this node.
    pub max_connections: u64,
    /// Most open connections from one client IP address.
    pub max_connections_per_ip: u64,
    /// Most concurrent streams on one HTTP/2 connection.
    pub max_h2_streams: u64,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            send_timeout_ms: 60_000,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 20_000,
            max_connections_per_ip: 256,
            max_h2_streams: 128,
            drain_timeout_ms: 15_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSection {
    /// Where JSON lines go: a file path, "stdout", or "off".
    pub target: String,
    /// Records buffered between the request path and the writer; when full, records are dropped and counted.
    pub buffer: u64,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        Self { target: "off".into(), buffer: 8192 }
    }
}

/// The node's cache storage. Memory holds objects up to `max_object_bytes`, chosen for admission
/// and eviction by TinyLFU with S3-FIFO (the `TinyUFO` crate), within `memory_bytes` in all. The
/// disk tier (`disk_path`) keeps every stored object up to `disk_max_object_bytes`, within
/// `disk_bytes`, least recently used out first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    pub memory_bytes: u64,
    /// Larger responses are never held whole in memory: streamed to the disk tier when there
    /// is one (up to `disk_max_object_bytes`), else passed through.
    pub max_object_bytes: u64,
    /// A directory for the disk tier, which survives restarts; absent: memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_path: Option<String>,
    pub disk_bytes: u64,
    pub disk_max_object_bytes: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * 1024 * 1024,
            max_object_bytes: 8 * 1024 * 1024,
            disk_path: None,
            disk_bytes: 10 * 1024 * 1024 * 1024,
            disk_max_object_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// How a zone caches (RFC 9111, as a shared cache). On by default: only what the origin marks
/// cacheable (`Cache-Control: max-age` / `s-maxage`, `Expires`) is stored, unless a rule says
/// otherwise; heuristic freshness is never used.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneCache {
    pub enabled: bool,
    /// Store responses that carry `Set-Cookie` (the stored copy leaves the cookie out).
    pub set_cookie: bool,
    /// Concurrent misses for one key wait this long for the first one's origin response
    /// (request coalescing), then go to the origin themselves.
    pub lock_timeout_ms: u64,
    /// Serve a stale object while it is revalidated in the background, this long past its
    /// freshness (when the origin's own `stale-while-revalidate` says less).
    pub stale_while_revalidate_s: u64,
    /// Serve a stale object when the origin fails (connection error, timeout, 5xx), this long
    /// past its freshness (when the origin's own `stale-if-error` says less). `must-revalidate`
    /// and `no-cache` objects are never served stale.
    pub stale_if_error_s: u64,
    /// Heuristic freshness (RFC 9111 4.2.2) for responses that give none but carry
    /// `Last-Modified`: this percent of the time since then, at most a day. 0: off (the default).
    pub heuristic_percent: u64,
    /// Evaluated in order; the first whose expression matches decides. None matching: the
    /// origin's headers decide, with the default key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<CacheRule>,
}

impl Default for ZoneCache {
    fn default() -> Self {
        Self {
            enabled: true,
            set_cookie: false,
            lock_timeout_ms: 5_000,
            stale_while_revalidate_s: 0,
            stale_if_error_s: 3_600,
            heuristic_percent: 0,
            rules: Vec::new(),
        }
    }
}

/// A cache rule: for requests its expression selects, bypass the cache or cache with settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    pub name: String,
    /// The firewall rule language; absent: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default)]
    pub action: CacheAction,
    /// Freshness at the edge, in place of what the origin says (a `no-store` or `private`
    /// response is still never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_ttl_s: Option<u64>,
    /// `Cache-Control: max-age` sent to browsers, in place of the origin's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_ttl_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<CacheKeySpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheAction {
    #[default]
    Cache,
    /// Neither look up nor store: straight to the origin.
    Bypass,
}

/// What tells two requests' objects apart. By default: host, path and the whole query.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKeySpec {
    pub host: bool,
    /// Absent: the whole query string; `[]`: ignored; names: only those parameters (in any order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<Vec<String>>,
    /// Request headers whose values are part of the key (lowercase names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Cookies whose values are part of the key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<String>,
}

impl Default for CacheKeySpec {
    fn default() -> Self {
        Self { host: true, query: None, headers: Vec::new(), cookies: Vec::new() }
    }
}

/// A set of hostnames served from one origin pool with one set of settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    /// Exact names (`www.example.com`) or one-label wildcards (`*.example.com`).
    pub hostnames: Vec<String>,
    pub origins: Vec<Origin>,
    #[serde(default)]
    pub balance: Balance,
    /// For `consistent_hash`: `client_ip`, `path`, `uri`, `header:NAME` or `cookie:NAME`.
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default)]
    pub origin_protocol: OriginProtocol,
    #[serde(default)]
    pub timeouts: PoolTimeouts,
    #[serde(default)]
    pub retries: RetryPolicy,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// Largest request body accepted, in bytes. Over it: 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default)]
    pub tls: Option<ZoneTls>,
    /// An `ip_list` artifact: requests from these client addresses are refused with 403
    /// before anything else is done for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_deny: Option<String>,
    /// Firewall rules, evaluated in order (see [`crate::rules`] for the language).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Rate limits, each checked for every request its expression selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// Fault injection, for drills and tests of failure policies: off unless configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Each security module's settings in this zone, by module name (`ip_lists`, `fault`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub modules: std::collections::BTreeMap<String, ModuleSettings>,
    /// A cap on requests in flight to the zone's origins, with a queue that serves the quietest
    /// client sources first; absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Automatic L7 DDoS mitigation (on unless switched off).
    #[serde(default)]
    pub ddos: Ddos,
    /// HTTP caching (on unless switched off; stores only what the origin marks cacheable).
    #[serde(default)]
    pub cache: ZoneCache,
    /// The challenge page that the `challenge` actions answer with.
    #[serde(default)]
    pub challenge: ChallengeSettings,
    /// Bot scoring (the `bot` module): off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<BotSettings>,
}

/// `[zones.bot]`: every request gets a bot score, 1 (automated) to 99 (human), for rules to read
/// as `bot.score`, or none when it cannot be computed. Known automation signatures score 1;
/// otherwise the model (a `feature_file` artifact, or the node's built-in one) decides. Verified bots (search engines,
/// monitors) are known by address and user agent together: `bot.verified`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BotSettings {
    /// The name of a `feature_file` artifact. Absent: the built-in model (`builtin-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<VerifiedBot>,
}

/// A verified bot: its user agent contains `user_agent` and it comes from one of `ip_ranges`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedBot {
    pub name: String,
    pub user_agent: String,
    /// Addresses or prefixes (`66.249.64.0/19`, `2001:4860:4801::/48`).
    pub ip_ranges: Vec<String>,
}

/// The challenge page (the `challenge` action of rules, rate limits and DDoS mitigations): a
/// browser proves work (SHA-256, `difficulty` leading zero bits) in a few lines of JavaScript,
/// or, without JavaScript, waits `wait_s` seconds; either way it gets a clearance cookie, signed
/// by the node and bound to the client's address prefix (/24 or /64), its user agent and the
/// zone, valid `clearance_ttl_s` seconds. A challenge never asks a person to solve a puzzle.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeSettings {
    pub clearance_ttl_s: u64,
    /// Leading zero bits of the proof of work, unless the rule sets its own (each bit doubles
    /// the browser's work: 16 is about 65 000 hashes, a fraction of a second).
    pub difficulty: u64,
    /// How long the no-JavaScript path (a meta refresh, or the page's plain link) waits.
    pub wait_s: u64,
}

impl Default for ChallengeSettings {
    fn default() -> Self {
        Self { clearance_ttl_s: 1800, difficulty: 16, wait_s: 5 }
    }
}

/// The origin's capacity, protected: at most `max_in_flight` requests at the origins at once;
/// the rest wait in a queue of `max_queue`, where the request whose client source (an IPv4
/// address or an IPv6 /64) has asked least lately goes first. When the queue is full a new
/// request takes the place of the waiter from the busiest source, or is refused (503) if its
/// own source is the busiest; a request that waits `queue_timeout_ms` gets 503.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    pub max_in_flight: u64,
    #[serde(default = "default_max_queue")]
    pub max_queue: u64,
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
}

fn default_max_queue() -> u64 {
    1024
}

fn default_queue_timeout_ms() -> u64 {
    2_000
}

/// What an automatic DDoS mitigation does to the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DdosAction {
    /// Refuse them (429 with `Retry-After`).
    #[default]
    Block,
    /// Let each client source send at most `rate_limit_rps` of them per second; 429 beyond.
    RateLimit,
    /// Only count them (metrics and the admin API).
    Log,
    /// The challenge page for clients without a clearance (browsers pass; scripts do not).
    Challenge,
    /// Close the connection without an answer (a reset). A *source* under a `drop` mitigation
    /// also has its new connections closed as soon as the node accepts them, before anything is
    /// read: no zone is known then, so that is node-wide, for every zone on the node.
    Drop,
}

/// The node watches each zone's request rate against a baseline it learns, and which request
/// fingerprints (method, path shape, header names in order, user agent, HTTP version) and
/// client sources make it up. When the rate is over `surge_factor` times the baseline and at
/// least `min_rps`, and one fingerprint or one source makes up `concentration` of it, a
/// mitigation for that fingerprint or source starts; it ends `hold_s` after its traffic stops
/// surging.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ddos {
    pub enabled: bool,
    pub action: DdosAction,
    pub min_rps: u64,
    /// In tenths: 40 means four times the baseline.
    pub surge_factor_tenths: u64,
    /// In percent of the zone's requests in a second.
    pub concentration_percent: u64,
    pub hold_s: u64,
    pub rate_limit_rps: u64,
    /// Seconds after a node starts (or the zone appears) spent learning the baseline only.
    pub learn_s: u64,
}

impl Default for Ddos {
    fn default() -> Self {
        Self {
            enabled: true,
            action: DdosAction::Block,
            min_rps: 200,
            surge_factor_tenths: 40,
            concentration_percent: 50,
            hold_s: 15,
            rate_limit_rps: 5,
            learn_s: 10,
        }
    }
}

/// One firewall rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in metrics and logs; unique in the zone.
    pub name: String,
    pub expression: String,
    pub action: RuleAction,
    /// For `challenge`: the proof of work's difficulty (default: the zone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<u64>,
}

/// A rate limit: requests that `expression` selects, counted per value of `characteristics`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: String,
    /// Which requests count (the firewall rule language); absent: every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// What a counter is kept per: `ip.src`, `ip.src/24` (any prefix length), `header:NAME`,
    /// `cookie:NAME`, `path`, `query:KEY`. Several: one counter per combination.
    pub characteristics: Vec<String>,
    pub period_s: u64,
    /// Requests allowed per period (a burst of this many passes at once).
    pub requests: u64,
    #[serde(default = "default_limit_action")]
    pub action: LimitAction,
    /// Once over the limit, a client stays limited this long (0: only while over).
    #[serde(default)]
    pub mitigation_timeout_s: u64,
    /// For `challenge`: the proof of work's difficulty (default: the zone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<u64>,
}

fn default_limit_action() -> LimitAction {
    LimitAction::Block
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAction {
    /// 429 with `Retry-After`.
    Block,
    /// Count it and let it through.
    Log,
    /// The challenge page for a client without a clearance; a client with one passes.
    Challenge,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Let the request through: no later rule is evaluated.
    Allow,
    /// Refuse it with 403.
    Block,
    /// Count the match and go on to the next rule.
    Log,
    /// The challenge page, unless the client holds a clearance: then it goes on to the next
    /// rule.
    Challenge,
}

/// What a module does when it fails (an error, a panic, or its circuit breaker open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Skip the module for this request, mark the request (access log) and count it.
    FailOpen,
    /// Refuse the request: 503 with a clear page.
    FailClosed,
    /// Keep using the module's last good data; at request time, skip as `fail_open` does.
    FailStale,
}

/// One module's settings in one zone.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleSettings {
    /// `false` switches the module off in this zone (a config-level kill switch).
    pub enabled: bool,
    /// Default: fail_open for every module today (scoring and rules must not take a site down).
    pub failure_policy: FailurePolicy,
    /// Failures within `breaker_window_ms` that open the module's circuit breaker. Panics open
    /// it at 50 whatever this says (a panicking module is never kept running).
    pub breaker_threshold: u32,
    pub breaker_window_ms: u64,
    /// How long an open breaker keeps the module off; then it is tried again, and one more
    /// failure soon after opens it again at once.
    pub breaker_cooldown_ms: u64,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_policy: FailurePolicy::FailOpen,
            breaker_threshold: 50,
            breaker_window_ms: 10_000,
            breaker_cooldown_ms: 30_000,
        }
    }
}

/// The `fault` module: makes itself fail on purpose, to drill failure policies, breakers and
/// rollout gates. A request carrying `header` fails with an error (value `error`) or a panic
/// (value `panic`); `error_percent` / `panic_percent` of all requests fail without it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fault {
    /// Choose a name nobody would guess: whoever sends it can make the module fail.
    pub header: Option<String>,
    pub error_percent: u32,
    pub panic_percent: u32,
}

fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// `ip:port` of the origin server.
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConnections,
    ConsistentHash,
    PowerOfTwoChoices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginProtocol {
    #[default]
    Http1,
    H2,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolTimeouts {
    pub connect_ms: u64,
    /// From sending the request to receiving the response head. Over it: 504.
    pub response_header_ms: u64,
    /// How long an unused pooled connection to the origin is kept.
    pub idle_ms: u64,
    /// The whole exchange, body streaming included.
    pub total_ms: u64,
}

impl Default for PoolTimeouts {
    fn default() -> Self {
        Self { connect_ms: 3_000, response_header_ms: 60_000, idle_ms: 60_000, total_ms: 600_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Extra attempts on another origin after a connect failure (idempotent requests without a body).
    pub attempts: u32,
    /// Retries in flight may be at most this share of requests in flight...
    pub budget_percent: u64,
    /// ...but this many are always allowed.
    pub min_concurrent: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 2, budget_percent: 20, min_concurrent: 3 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub expected_status: u16,
    /// Consecutive successes that bring an unhealthy origin back.
    pub healthy_threshold: u32,
    /// Consecutive failures that mark an origin unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/".into(),
            interval_ms: 5_000,
            timeout_ms: 2_000,
            expected_status: 200,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Passive ejection: an origin that fails this many times in a row (connect failure or 5xx) is
/// taken out of rotation for a back-off period that doubles on each ejection, up to a maximum.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// 0 switches passive ejection off.
    pub consecutive_failures: u32,
    pub ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self { consecutive_failures: 5, ejection_ms: 10_000, max_ejection_ms: 300_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneTls {
    /// PEM certificate chain, read by the node when the snapshot is compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Instead of the two files: a `cert_bundle` artifact (chain and key in one PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
}
