//! Every limit the validator enforces, in one place so that the README table, the error messages and
//! the tests all read the same numbers.

/// Largest configuration document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Zones in one document.
pub const MAX_ZONES: usize = 1000;
/// Hostnames in one zone.
pub const MAX_HOSTNAMES_PER_ZONE: usize = 100;
/// Origins (backends) in one zone's pool.
pub const MAX_ORIGINS_PER_ZONE: usize = 64;
/// Length of a zone name.
pub const MAX_NAME_LEN: usize = 64;
/// Length of a hostname (RFC 1035).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Length of a path (health-check path, file path).
pub const MAX_PATH_LEN: usize = 1024;
/// Weight of one origin.
pub const MAX_WEIGHT: u32 = 100;
/// Retry attempts per request.
pub const MAX_RETRIES: u32 = 5;

/// (min, max) ranges for every number in the document. Durations are in milliseconds.
pub mod range {
    pub const HEADER_TIMEOUT_MS: (u64, u64) = (100, 300_000);
    pub const IDLE_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);
    pub const BODY_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);
    pub const SEND_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);
    pub const DRAIN_TIMEOUT_MS: (u64, u64) = (0, 600_000);
    pub const MAX_HEADER_BYTES: (u64, u64) = (1024, 1024 * 1024);
    pub const MAX_HEADERS: (u64, u64) = (8, 1000);
    pub const MAX_CONNECTIONS: (u64, u64) = (1, 1_000_000);
    pub const MAX_CONNECTIONS_PER_IP: (u64, u64) = (1, 1_000_000);
    pub const MAX_H2_STREAMS: (u64, u64) = (1, 1000);
    pub const CONNECT_TIMEOUT_MS: (u64, u64) = (10, 60_000);
    pub const RESPONSE_HEADER_TIMEOUT_MS: (u64, u64) = (10, 3_600_000);
    pub const UPSTREAM_IDLE_TIMEOUT_MS: (u64, u64) = (100, 3_600_000);
    pub const TOTAL_TIMEOUT_MS: (u64, u64) = (10, 86_400_000);
    pub const MAX_BODY_BYTES: (u64, u64) = (0, 64 * 1024 * 1024 * 1024);
    pub const RETRY_BUDGET_PERCENT: (u64, u64) = (0, 100);
    pub const RETRY_MIN_CONCURRENT: (u64, u64) = (0, 1000);
    pub const HEALTH_INTERVAL_MS: (u64, u64) = (50, 3_600_000);
    pub const HEALTH_TIMEOUT_MS: (u64, u64) = (10, 60_000);
    pub const HEALTH_STATUS: (u64, u64) = (100, 599);
    pub const HEALTH_THRESHOLD: (u64, u64) = (1, 100);
    pub const EJECT_CONSECUTIVE_FAILURES: (u64, u64) = (0, 1000);
    pub const EJECT_BASE_MS: (u64, u64) = (100, 3_600_000);
    pub const EJECT_MAX_MS: (u64, u64) = (100, 86_400_000);
    pub const WEIGHT: (u64, u64) = (1, super::MAX_WEIGHT as u64);
    pub const RETRIES: (u64, u64) = (0, super::MAX_RETRIES as u64);
    pub const ACCESS_LOG_BUFFER: (u64, u64) = (16, 1_000_000);
    pub const MAX_IN_FLIGHT: (u64, u64) = (1, 1_000_000);
    pub const MAX_QUEUE: (u64, u64) = (0, 1_000_000);
    pub const QUEUE_TIMEOUT_MS: (u64, u64) = (1, 600_000);
    pub const DDOS_MIN_RPS: (u64, u64) = (1, 100_000_000);
    pub const DDOS_SURGE_FACTOR_TENTHS: (u64, u64) = (11, 10_000);
    pub const DDOS_CONCENTRATION_PERCENT: (u64, u64) = (1, 100);
    pub const DDOS_HOLD_S: (u64, u64) = (1, 86_400);
    pub const DDOS_RATE_LIMIT_RPS: (u64, u64) = (1, 1_000_000);
    pub const DDOS_LEARN_S: (u64, u64) = (0, 3_600);
    pub const BREAKER_THRESHOLD: (u64, u64) = (1, 1_000_000);
    pub const BREAKER_WINDOW_MS: (u64, u64) = (100, 3_600_000);
    pub const BREAKER_COOLDOWN_MS: (u64, u64) = (100, 3_600_000);
    pub const FAULT_PERCENT: (u64, u64) = (0, 100);
    pub const RATE_PERIOD_S: (u64, u64) = (1, 3600);
    pub const RATE_REQUESTS: (u64, u64) = (1, 1_000_000);
    pub const RATE_MITIGATION_S: (u64, u64) = (0, 86_400);
    pub const CACHE_MEMORY_BYTES: (u64, u64) = (0, 1024 * 1024 * 1024 * 1024);
    /// The memory tier weighs objects in KiB, at most 65535 of them each.
    pub const CACHE_MAX_OBJECT_BYTES: (u64, u64) = (0, 64 * 1024 * 1024 - 1024);
    pub const CACHE_DISK_BYTES: (u64, u64) = (1024 * 1024, 1 << 50);
    pub const CACHE_DISK_MAX_OBJECT_BYTES: (u64, u64) = (0, 1 << 40);
    pub const CACHE_LOCK_TIMEOUT_MS: (u64, u64) = (0, 60_000);
    pub const CACHE_STALE_S: (u64, u64) = (0, 31_536_000);
    pub const CACHE_TTL_S: (u64, u64) = (0, 31_536_000);
    pub const CHALLENGE_CLEARANCE_TTL_S: (u64, u64) = (60, 604_800);
    /// 24 bits is about 16 million hashes: seconds on a phone.
    pub const CHALLENGE_DIFFICULTY: (u64, u64) = (1, 24);
    pub const CHALLENGE_WAIT_S: (u64, u64) = (1, 60);
}

/// Cache rules in one zone.
pub const MAX_CACHE_RULES_PER_ZONE: usize = 50;
/// Query parameters, headers or cookies named in one cache key.
pub const MAX_CACHE_KEY_PARTS: usize = 16;

/// The security modules, in the order a request meets them. Each has a failure policy, a
/// circuit breaker and a kill switch of the same name.
pub const MODULES: &[(&str, &str)] = &[
    ("fault", "fault injection for drills (off unless [zones.fault] is set)"),
    ("ip_lists", "early drop: 403 for client addresses on the zone's ip_deny list"),
    ("rate_limits", "the zone's rate limits: 429 with Retry-After"),
    ("bot", "bot scoring: signatures, verified bots and the feature-file model set bot.score"),
    ("firewall", "the zone's firewall rules"),
    ("ddos", "automatic L7 DDoS mitigation: counts fingerprints and sources, refuses a concentrated surge"),
];

/// Rate limits in one zone.
pub const MAX_RATE_LIMITS_PER_ZONE: usize = 50;
/// Counters one rate limit keeps at most: a flood of new keys evicts, never grows memory.
pub const MAX_RATE_LIMIT_KEYS: usize = 100_000;

/// Verified bots in one zone, and address ranges of one.
pub const MAX_VERIFIED_BOTS: usize = 50;
pub const MAX_VERIFIED_BOT_RANGES: usize = 200;

/// Firewall rules in one zone.
pub const MAX_RULES_PER_ZONE: usize = 200;

/// Kill switches: what an operator can switch off on every node at once, on a path of its own
/// (not a staged config change). A switch can only turn something off. Name, what it does.
pub const KILL_SWITCHES: &[(&str, &str)] = &[
    ("access_log", "stop writing access-log records"),
    ("retries", "never retry a request on another origin"),
    ("splice", "move response bodies in user space instead of splice(2)"),
    ("ip_lists", "stop refusing requests from addresses on a zone's ip_deny list"),
    ("fault", "stop injecting faults (the fault module)"),
    ("firewall", "stop evaluating firewall rules (no rule blocks)"),
    ("rate_limits", "stop rate limiting (every request passes)"),
    ("ddos", "stop automatic DDoS mitigation (nothing is counted or refused)"),
    ("cache", "stop caching: every request goes to the origin, nothing is stored"),
    ("bot", "stop bot scoring (bot.score is absent, bot.verified false)"),
    ("analytics", "stop counting heavy hitters (top addresses, paths, fingerprints) for the dashboard"),
];
