//! parsed -> validated: every limit, range, duplicate and cross-reference check, collecting all
//! problems (not just the first) with their path in the document.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use crate::artifact::{self, ArtifactKind};
use crate::limits::{self, range};
use crate::schema::*;

/// One thing wrong with a document, at a path such as `zones[2].origins[0].address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What a consistent-hash pool hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    Uri,
    Header(String),
    Cookie(String),
}

/// A document that passed every check, with the values the checks already parsed.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub doc: Document,
    /// Content hash of the bytes this document came from.
    pub hash: String,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Parallel to `doc.zones`.
    pub zones: Vec<ValidZone>,
}

/// What a rate limit counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Characteristic {
    /// The client address, masked to this prefix length (32/128: the address itself).
    /// `ip.src/N` with N <= 32 is an IPv4 prefix (IPv6 clients: /64); N > 32 an IPv6 one.
    Ip {
        v4_prefix: u8,
        v6_prefix: u8,
    },
    Header(String),
    Cookie(String),
    Path,
    QueryKey(String),
    /// The request's HTTP fingerprint: method, path shape, header names in order, user agent,
    /// HTTP version (the one automatic DDoS mitigation uses).
    HttpFingerprint,
    /// The TLS client fingerprint (JA4); requests without TLS share one counter.
    TlsJa4,
}

/// A rate limit's characteristic as written -> parsed.
pub fn parse_characteristic(s: &str) -> Result<Characteristic, String> {
    let name_ok = |n: &str| {
        !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    match s {
        "ip.src" => Ok(Characteristic::Ip { v4_prefix: 32, v6_prefix: 128 }),
        "path" => Ok(Characteristic::Path),
        "http.fingerprint" => Ok(Characteristic::HttpFingerprint),
        "tls.ja4" => Ok(Characteristic::TlsJa4),
        _ => {
            if let Some(len) = s.strip_prefix("ip.src/") {
                let n: u8 = len.parse().map_err(|_| format!("`{}`: a prefix length is a number", clip(s)))?;
                return match n {
                    // An IPv4 prefix; IPv6 clients count per /64 (one subscriber's usual block).
                    1..=32 => Ok(Characteristic::Ip { v4_prefix: n, v6_prefix: 64 }),
                    33..=128 => Ok(Characteristic::Ip { v4_prefix: 32, v6_prefix: n }),
                    _ => Err(format!("`{}`: a prefix length is 1..=128", clip(s))),
                };
            }
            for (prefix, make) in [
                ("header:", Characteristic::Header as fn(String) -> Characteristic),
                ("cookie:", Characteristic::Cookie),
                ("query:", Characteristic::QueryKey),
            ] {
                if let Some(n) = s.strip_prefix(prefix) {
                    if !name_ok(n) {
                        return Err(format!("`{}`: a name of 1..=128 characters of a-z, 0-9, `-`, `_`", clip(s)));
                    }
                    let n = if prefix == "header:" { n.to_ascii_lowercase() } else { n.to_string() };
                    return Ok(make(n));
                }
            }
            Err(format!(
                "`{}` is not one of ip.src, ip.src/N, header:NAME, cookie:NAME, path, query:KEY, http.fingerprint, tls.ja4",
                clip(s)
            ))
        }
    }
}

/// A rate limit, checked.
#[derive(Debug, Clone)]
pub struct ValidRateLimit {
    /// None: every request counts.
    pub expression: Option<crate::rules::Expr>,
    pub characteristics: Vec<Characteristic>,
}

#[derive(Debug, Clone)]
pub struct ValidZone {
    /// Parallel to the zone's `rate_limits`.
    pub rate_limits: Vec<ValidRateLimit>,
    /// Parallel to the zone's `rules`: each expression, parsed (`$lists` not yet resolved).
    pub rules: Vec<crate::rules::Expr>,
    /// Parallel to the zone's `origins`.
    pub origin_addrs: Vec<SocketAddr>,
    pub hash_key: HashKey,
    /// Lowercased hostnames.
    pub hostnames: Vec<String>,
    /// Parallel to the zone's `cache.rules`: each expression, parsed (None: every request).
    pub cache_rules: Vec<Option<crate::rules::Expr>>,
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    fn range(&mut self, path: impl fmt::Display, value: u64, (min, max): (u64, u64)) {
        if value < min || value > max {
            self.err(path.to_string(), format!("{value} is out of range; allowed {min}..={max}"));
        }
    }

    fn count<T>(&mut self, path: impl fmt::Display, items: &[T], min: usize, max: usize) {
        if items.len() < min {
            self.err(path.to_string(), format!("needs at least {min} entr{}", if min == 1 { "y" } else { "ies" }));
        } else if items.len() > max {
            self.err(path.to_string(), format!("has {} entries; the limit is {max}", items.len()));
        }
    }

    fn addr(&mut self, path: impl fmt::Display, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(path.to_string(), format!("`{}` is not an ip:port address", clip(value)));
                None
            }
        }
    }
}

/// Keeps error messages bounded even when the offending value is huge.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

/// parsed -> validated. Returns every problem found.
pub fn validate(doc: Document, hash: String) -> Result<ValidConfig, Vec<Problem>> {
    let mut c = Checker { problems: Vec::new() };

    let http = doc.listen.http.as_deref().and_then(|a| c.addr("listen.http", a));
    let https = doc.listen.https.as_deref().and_then(|a| c.addr("listen.https", a));
    let admin = doc.listen.admin.as_deref().and_then(|a| c.addr("listen.admin", a));
    if doc.listen.http.is_none() && doc.listen.https.is_none() {
        c.err("listen", "at least one of `http` or `https` is needed");
    }
    let mut seen_listen: HashMap<SocketAddr, &str> = HashMap::new();
    for (name, addr) in [("listen.http", http), ("listen.https", https), ("listen.admin", admin)] {
        // Port 0 asks the OS for a free port: never a clash.
        if let Some(a) = addr.filter(|a| a.port() != 0) {
            if let Some(prev) = seen_listen.insert(a, name) {
                c.err(name, format!("{a} is already used by {prev}"));
            }
        }
    }

    let artifacts = check_artifacts(&mut c, &doc.artifacts);

    c.range("cache.memory_bytes", doc.cache.memory_bytes, range::CACHE_MEMORY_BYTES);
    c.range("cache.max_object_bytes", doc.cache.max_object_bytes, range::CACHE_MAX_OBJECT_BYTES);
    c.range("cache.disk_bytes", doc.cache.disk_bytes, range::CACHE_DISK_BYTES);
    c.range("cache.disk_max_object_bytes", doc.cache.disk_max_object_bytes, range::CACHE_DISK_MAX_OBJECT_BYTES);
    if let Some(path) = &doc.cache.disk_path {
        if path.is_empty() || path.len() > limits::MAX_PATH_LEN {
            c.err("cache.disk_path", format!("must be a directory path of 1..={} bytes", limits::MAX_PATH_LEN));
        }
    }

    check_name(&mut c, "node.name", &doc.node.name);
    check_name(&mut c, "node.city", &doc.node.city);

    let l = &doc.limits;
    c.range("limits.header_timeout_ms", l.header_timeout_ms, range::HEADER_TIMEOUT_MS);
    c.range("limits.idle_timeout_ms", l.idle_timeout_ms, range::IDLE_TIMEOUT_MS);
    c.range("limits.body_timeout_ms", l.body_timeout_ms, range::BODY_TIMEOUT_MS);
    c.range("limits.send_timeout_ms", l.send_timeout_ms, range::SEND_TIMEOUT_MS);
    c.range("limits.max_header_bytes", l.max_header_bytes, range::MAX_HEADER_BYTES);
    c.range("limits.max_headers", l.max_headers, range::MAX_HEADERS);
    c.range("limits.max_connections", l.max_connections, range::MAX_CONNECTIONS);
    c.range("limits.max_connections_per_ip", l.max_connections_per_ip, range::MAX_CONNECTIONS_PER_IP);
    c.range("limits.max_h2_streams", l.max_h2_streams, range::MAX_H2_STREAMS);
    c.range("limits.drain_timeout_ms", l.drain_timeout_ms, range::DRAIN_TIMEOUT_MS);
    if l.max_connections_per_ip > l.max_connections {
        c.err("limits.max_connections_per_ip", "must not exceed limits.max_connections");
    }

    let t = &doc.access_log.target;
    if t.is_empty() || t.len() > limits::MAX_PATH_LEN {
        c.err(
            "access_log.target",
            format!("must be \"off\", \"stdout\" or a file path of 1..={} bytes", limits::MAX_PATH_LEN),
        );
    }
    c.range("access_log.buffer", doc.access_log.buffer, range::ACCESS_LOG_BUFFER);

    c.count("zones", &doc.zones, 0, limits::MAX_ZONES);
    let mut zone_names: HashMap<&str, usize> = HashMap::new();
    let mut hostnames: HashMap<String, String> = HashMap::new();
    let mut zones = Vec::with_capacity(doc.zones.len().min(limits::MAX_ZONES));
    for (zi, z) in doc.zones.iter().enumerate().take(limits::MAX_ZONES) {
        let p = format!("zones[{zi}]");
        check_name(&mut c, format!("{p}.name"), &z.name);
        if let Some(prev) = zone_names.insert(z.name.as_str(), zi) {
            c.err(format!("{p}.name"), format!("duplicate zone name `{}` (also zones[{prev}])", clip(&z.name)));
        }

        c.count(format!("{p}.hostnames"), &z.hostnames, 1, limits::MAX_HOSTNAMES_PER_ZONE);
        let mut zone_hosts = Vec::new();
        for (hi, h) in z.hostnames.iter().enumerate().take(limits::MAX_HOSTNAMES_PER_ZONE) {
            let hp = format!("{p}.hostnames[{hi}]");
            match check_hostname(h) {
                Ok(norm) => {
                    if let Some(prev) = hostnames.insert(norm.clone(), hp.clone()) {
                        c.err(hp, format!("duplicate hostname `{norm}` (also {prev})"));
                    }
                    zone_hosts.push(norm);
                }
                Err(why) => c.err(hp, why),
            }
        }

        c.count(format!("{p}.origins"), &z.origins, 1, limits::MAX_ORIGINS_PER_ZONE);
        let mut addrs = Vec::new();
        let mut seen_addr: HashMap<SocketAddr, usize> = HashMap::new();
        for (oi, o) in z.origins.iter().enumerate().take(limits::MAX_ORIGINS_PER_ZONE) {
            let op = format!("{p}.origins[{oi}]");
            if let Some(a) = c.addr(format!("{op}.address"), &o.address) {
                if let Some(prev) = seen_addr.insert(a, oi) {
                    c.err(format!("{op}.address"), format!("duplicate origin {a} (also {p}.origins[{prev}])"));
                }
                addrs.push(a);
            }
            c.range(format!("{op}.weight"), u64::from(o.weight), range::WEIGHT);
        }

        let hash_key = match (&z.balance, z.hash_key.as_deref()) {
            (Balance::ConsistentHash, Some(k)) => match parse_hash_key(k) {
                Ok(k) => k,
                Err(why) => {
                    c.err(format!("{p}.hash_key"), why);
                    HashKey::ClientIp
                }
            },
            (Balance::ConsistentHash, None) => HashKey::ClientIp,
            (_, Some(_)) => {
                c.err(format!("{p}.hash_key"), "only meaningful with balance = \"consistent_hash\"");
                HashKey::ClientIp
            }
            (_, None) => HashKey::ClientIp,
        };

        let t = &z.timeouts;
        c.range(format!("{p}.timeouts.connect_ms"), t.connect_ms, range::CONNECT_TIMEOUT_MS);
        c.range(format!("{p}.timeouts.response_header_ms"), t.response_header_ms, range::RESPONSE_HEADER_TIMEOUT_MS);
        c.range(format!("{p}.timeouts.idle_ms"), t.idle_ms, range::UPSTREAM_IDLE_TIMEOUT_MS);
        c.range(format!("{p}.timeouts.total_ms"), t.total_ms, range::TOTAL_TIMEOUT_MS);
        if t.total_ms < t.response_header_ms.min(range::TOTAL_TIMEOUT_MS.1) && t.total_ms >= range::TOTAL_TIMEOUT_MS.0 {
            c.err(format!("{p}.timeouts.total_ms"), "must be at least timeouts.response_header_ms");
        }

        let r = &z.retries;
        c.range(format!("{p}.retries.attempts"), u64::from(r.attempts), range::RETRIES);
        c.range(format!("{p}.retries.budget_percent"), r.budget_percent, range::RETRY_BUDGET_PERCENT);
        c.range(format!("{p}.retries.min_concurrent"), r.min_concurrent, range::RETRY_MIN_CONCURRENT);

        if let Some(h) = &z.health_check {
            let hp = format!("{p}.health_check");
            if !h.path.starts_with('/')
                || h.path.len() > limits::MAX_PATH_LEN
                || h.path.chars().any(|ch| ch.is_control() || ch == ' ')
            {
                c.err(
                    format!("{hp}.path"),
                    format!(
                        "must start with `/`, have no spaces or control characters, and be at most {} bytes",
                        limits::MAX_PATH_LEN
                    ),
                );
            }
            c.range(format!("{hp}.interval_ms"), h.interval_ms, range::HEALTH_INTERVAL_MS);
            c.range(format!("{hp}.timeout_ms"), h.timeout_ms, range::HEALTH_TIMEOUT_MS);
            c.range(format!("{hp}.expected_status"), u64::from(h.expected_status), range::HEALTH_STATUS);
            c.range(format!("{hp}.healthy_threshold"), u64::from(h.healthy_threshold), range::HEALTH_THRESHOLD);
            c.range(format!("{hp}.unhealthy_threshold"), u64::from(h.unhealthy_threshold), range::HEALTH_THRESHOLD);
        }

        let ph = &z.passive_health;
        c.range(
            format!("{p}.passive_health.consecutive_failures"),
            u64::from(ph.consecutive_failures),
            range::EJECT_CONSECUTIVE_FAILURES,
        );
        c.range(format!("{p}.passive_health.ejection_ms"), ph.ejection_ms, range::EJECT_BASE_MS);
        c.range(format!("{p}.passive_health.max_ejection_ms"), ph.max_ejection_ms, range::EJECT_MAX_MS);
        if ph.max_ejection_ms < ph.ejection_ms {
            c.err(format!("{p}.passive_health.max_ejection_ms"), "must be at least passive_health.ejection_ms");
        }

        c.range(format!("{p}.max_body_bytes"), z.max_body_bytes, range::MAX_BODY_BYTES);

        if let Some(tls) = &z.tls {
            match (&tls.cert_file, &tls.key_file, &tls.bundle) {
                (Some(cert), Some(key), None) => {
                    for (field, v) in [("cert_file", cert), ("key_file", key)] {
                        if v.is_empty() || v.len() > limits::MAX_PATH_LEN {
                            c.err(
                                format!("{p}.tls.{field}"),
                                format!("must be a file path of 1..={} bytes", limits::MAX_PATH_LEN),
                            );
                        }
                    }
                }
                (None, None, Some(bundle)) => {
                    artifact_use(&mut c, &artifacts, format!("{p}.tls.bundle"), bundle, ArtifactKind::CertBundle)
                }
                _ => c.err(format!("{p}.tls"), "give either cert_file and key_file, or bundle"),
            }
            if https.is_none() {
                c.err(format!("{p}.tls"), "a certificate is configured but listen.https is not set");
            }
        }
        for (name, m) in &z.modules {
            let mp = format!("{p}.modules.{name}");
            if !limits::MODULES.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = limits::MODULES.iter().map(|(n, _)| *n).collect();
                c.err(&mp, format!("no module named `{}`; the modules are {}", clip(name), known.join(", ")));
            }
            c.range(format!("{mp}.breaker_threshold"), u64::from(m.breaker_threshold), range::BREAKER_THRESHOLD);
            c.range(format!("{mp}.breaker_window_ms"), m.breaker_window_ms, range::BREAKER_WINDOW_MS);
            c.range(format!("{mp}.breaker_cooldown_ms"), m.breaker_cooldown_ms, range::BREAKER_COOLDOWN_MS);
        }
        if let Some(f) = &z.fault {
            c.range(format!("{p}.fault.error_percent"), u64::from(f.error_percent), range::FAULT_PERCENT);
            c.range(format!("{p}.fault.panic_percent"), u64::from(f.panic_percent), range::FAULT_PERCENT);
            if let Some(h) = &f.header {
                if h.is_empty() || h.len() > 128 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    c.err(format!("{p}.fault.header"), "must be a header name of 1..=128 characters of a-z, 0-9, `-`");
                }
            }
        }
        if let Some(q) = &z.concurrency {
            c.range(format!("{p}.concurrency.max_in_flight"), q.max_in_flight, range::MAX_IN_FLIGHT);
            c.range(format!("{p}.concurrency.max_queue"), q.max_queue, range::MAX_QUEUE);
            c.range(format!("{p}.concurrency.queue_timeout_ms"), q.queue_timeout_ms, range::QUEUE_TIMEOUT_MS);
        }
        let d = &z.ddos;
        c.range(format!("{p}.ddos.min_rps"), d.min_rps, range::DDOS_MIN_RPS);
        c.range(format!("{p}.ddos.surge_factor_tenths"), d.surge_factor_tenths, range::DDOS_SURGE_FACTOR_TENTHS);
        c.range(format!("{p}.ddos.concentration_percent"), d.concentration_percent, range::DDOS_CONCENTRATION_PERCENT);
        c.range(format!("{p}.ddos.hold_s"), d.hold_s, range::DDOS_HOLD_S);
        c.range(format!("{p}.ddos.rate_limit_rps"), d.rate_limit_rps, range::DDOS_RATE_LIMIT_RPS);
        c.range(format!("{p}.ddos.learn_s"), d.learn_s, range::DDOS_LEARN_S);
        let ch = &z.challenge;
        c.range(format!("{p}.challenge.clearance_ttl_s"), ch.clearance_ttl_s, range::CHALLENGE_CLEARANCE_TTL_S);
        c.range(format!("{p}.challenge.difficulty"), ch.difficulty, range::CHALLENGE_DIFFICULTY);
        c.range(format!("{p}.challenge.wait_s"), ch.wait_s, range::CHALLENGE_WAIT_S);
        c.count(format!("{p}.rate_limits"), &z.rate_limits, 0, limits::MAX_RATE_LIMITS_PER_ZONE);
        let mut rate_limits = Vec::new();
        let mut limit_names: HashMap<&str, usize> = HashMap::new();
        for (li, l) in z.rate_limits.iter().enumerate().take(limits::MAX_RATE_LIMITS_PER_ZONE) {
            let lp = format!("{p}.rate_limits[{li}]");
            check_name(&mut c, format!("{lp}.name"), &l.name);
            if let Some(first) = limit_names.insert(l.name.as_str(), li) {
                c.err(format!("{lp}.name"), format!("`{}` is also the name of rate_limits[{first}]", clip(&l.name)));
            }
            c.range(format!("{lp}.period_s"), l.period_s, range::RATE_PERIOD_S);
            c.range(format!("{lp}.requests"), l.requests, range::RATE_REQUESTS);
            c.range(format!("{lp}.mitigation_timeout_s"), l.mitigation_timeout_s, range::RATE_MITIGATION_S);
            check_difficulty(&mut c, &lp, l.difficulty, l.action == crate::LimitAction::Challenge);
            c.count(format!("{lp}.characteristics"), &l.characteristics, 1, 4);
            let mut characteristics = Vec::new();
            for (ci, ch) in l.characteristics.iter().enumerate() {
                match parse_characteristic(ch) {
                    Ok(x) => characteristics.push(x),
                    Err(m) => c.err(format!("{lp}.characteristics[{ci}]"), m),
                }
            }
            let expression = match l.expression.as_deref().map(crate::rules::parse) {
                None => None,
                Some(Ok(e)) => {
                    for list in e.lists() {
                        artifact_use(&mut c, &artifacts, format!("{lp}.expression"), &list, ArtifactKind::IpList);
                    }
                    Some(e)
                }
                Some(Err(e)) => {
                    c.err(format!("{lp}.expression"), e.to_string());
                    None
                }
            };
            rate_limits.push(ValidRateLimit { expression, characteristics });
        }
        c.count(format!("{p}.rules"), &z.rules, 0, limits::MAX_RULES_PER_ZONE);
        let mut rules = Vec::with_capacity(z.rules.len().min(limits::MAX_RULES_PER_ZONE));
        let mut rule_names: HashMap<&str, usize> = HashMap::new();
        for (ri, r) in z.rules.iter().enumerate().take(limits::MAX_RULES_PER_ZONE) {
            let rp = format!("{p}.rules[{ri}]");
            check_name(&mut c, format!("{rp}.name"), &r.name);
            if let Some(first) = rule_names.insert(r.name.as_str(), ri) {
                c.err(format!("{rp}.name"), format!("`{}` is also the name of rules[{first}]", clip(&r.name)));
            }
            check_difficulty(&mut c, &rp, r.difficulty, r.action == RuleAction::Challenge);
            match crate::rules::parse(&r.expression) {
                Ok(e) => {
                    for list in e.lists() {
                        artifact_use(&mut c, &artifacts, format!("{rp}.expression"), &list, ArtifactKind::IpList);
                    }
                    rules.push(e);
                }
                Err(e) => c.err(format!("{rp}.expression"), e.to_string()),
            }
        }
        if let Some(list) = &z.ip_deny {
            artifact_use(&mut c, &artifacts, format!("{p}.ip_deny"), list, ArtifactKind::IpList);
        }

        if let Some(bot) = &z.bot {
            check_bot(&mut c, &p, bot, &artifacts);
        }
        let cache_rules = check_zone_cache(&mut c, &p, &z.cache, &artifacts);
        zones.push(ValidZone { rate_limits, rules, origin_addrs: addrs, hash_key, hostnames: zone_hosts, cache_rules });
    }

    if c.problems.is_empty() {
        Ok(ValidConfig { doc, hash, http, https, admin, zones })
    } else {
        Err(c.problems)
    }
}

/// `[zones.bot]`: the model is a feature_file artifact; verified bots have names, a user agent
/// and address ranges that parse.
fn check_bot(c: &mut Checker, p: &str, bot: &crate::BotSettings, artifacts: &HashMap<&str, ArtifactKind>) {
    if let Some(model) = &bot.model {
        artifact_use(c, artifacts, format!("{p}.bot.model"), model, ArtifactKind::FeatureFile);
    }
    c.count(format!("{p}.bot.verified"), &bot.verified, 0, limits::MAX_VERIFIED_BOTS);
    for (i, v) in bot.verified.iter().enumerate().take(limits::MAX_VERIFIED_BOTS) {
        let vp = format!("{p}.bot.verified[{i}]");
        check_name(c, format!("{vp}.name"), &v.name);
        if v.user_agent.trim().is_empty() || v.user_agent.len() > 128 {
            c.err(format!("{vp}.user_agent"), "1..=128 characters (a part of the bot's user agent)");
        }
        c.count(format!("{vp}.ip_ranges"), &v.ip_ranges, 1, limits::MAX_VERIFIED_BOT_RANGES);
        if let Err(problems) = crate::artifact::decode(ArtifactKind::IpList, v.ip_ranges.join("\n").as_bytes()) {
            for problem in problems.into_iter().take(5) {
                c.err(format!("{vp}.ip_ranges"), format!("{}: {}", problem.path, problem.message));
            }
        }
    }
}

/// A rule's or rate limit's own `difficulty`: in range, and only with the `challenge` action.
fn check_difficulty(c: &mut Checker, p: &str, difficulty: Option<u64>, challenge: bool) {
    let Some(d) = difficulty else { return };
    if challenge {
        c.range(format!("{p}.difficulty"), d, range::CHALLENGE_DIFFICULTY);
    } else {
        c.err(format!("{p}.difficulty"), "only a `challenge` action has a difficulty");
    }
}

/// `[zones.cache]`: ranges, rule names and expressions, key parts. Returns the rules' parsed
/// expressions.
fn check_zone_cache(
    c: &mut Checker,
    p: &str,
    zc: &crate::ZoneCache,
    artifacts: &HashMap<&str, ArtifactKind>,
) -> Vec<Option<crate::rules::Expr>> {
    c.range(format!("{p}.cache.lock_timeout_ms"), zc.lock_timeout_ms, range::CACHE_LOCK_TIMEOUT_MS);
    c.range(format!("{p}.cache.stale_while_revalidate_s"), zc.stale_while_revalidate_s, range::CACHE_STALE_S);
    c.range(format!("{p}.cache.stale_if_error_s"), zc.stale_if_error_s, range::CACHE_STALE_S);
    c.range(format!("{p}.cache.heuristic_percent"), zc.heuristic_percent, (0, 100));
    c.count(format!("{p}.cache.rules"), &zc.rules, 0, limits::MAX_CACHE_RULES_PER_ZONE);
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut parsed = Vec::new();
    for (ri, r) in zc.rules.iter().enumerate().take(limits::MAX_CACHE_RULES_PER_ZONE) {
        let rp = format!("{p}.cache.rules[{ri}]");
        check_name(c, format!("{rp}.name"), &r.name);
        if let Some(first) = names.insert(r.name.as_str(), ri) {
            c.err(format!("{rp}.name"), format!("`{}` is also the name of cache.rules[{first}]", clip(&r.name)));
        }
        if let Some(t) = r.edge_ttl_s {
            c.range(format!("{rp}.edge_ttl_s"), t, range::CACHE_TTL_S);
        }
        if let Some(t) = r.browser_ttl_s {
            c.range(format!("{rp}.browser_ttl_s"), t, range::CACHE_TTL_S);
        }
        if let Some(k) = &r.key {
            let kp = format!("{rp}.key");
            let parts: [(&str, &[String], bool); 3] = [
                ("query", k.query.as_deref().unwrap_or(&[]), false),
                ("headers", &k.headers, true),
                ("cookies", &k.cookies, false),
            ];
            for (field, list, lowercase) in parts {
                c.count(format!("{kp}.{field}"), list, 0, limits::MAX_CACHE_KEY_PARTS);
                for (i, name) in list.iter().enumerate() {
                    let ok = !name.is_empty()
                        && name.len() <= 128
                        && name.bytes().all(|b| {
                            b.is_ascii_graphic() && !b"=;,&\"".contains(&b) && !(lowercase && b.is_ascii_uppercase())
                        });
                    if !ok {
                        let case = if lowercase { ", lowercase" } else { "" };
                        c.err(
                            format!("{kp}.{field}[{i}]"),
                            format!("must be 1..=128 printable characters{case}, without `=`, `;`, `,`, `&` or `\"`"),
                        );
                    }
                }
            }
        }
        parsed.push(match r.expression.as_deref().map(crate::rules::parse) {
            None => None,
            Some(Ok(e)) => {
                for list in e.lists() {
                    artifact_use(c, artifacts, format!("{rp}.expression"), &list, ArtifactKind::IpList);
                }
                Some(e)
            }
            Some(Err(e)) => {
                c.err(format!("{rp}.expression"), e.to_string());
                None
            }
        });
    }
    parsed
}

/// The document's artifact list: names unique, hashes well-formed. Returns name -> kind.
fn check_artifacts<'a>(c: &mut Checker, list: &'a [ArtifactRef]) -> HashMap<&'a str, ArtifactKind> {
    c.count("artifacts", list, 0, artifact::limits::MAX_ARTIFACTS);
    let mut by_name = HashMap::new();
    for (i, a) in list.iter().enumerate() {
        let p = format!("artifacts[{i}]");
        check_name(c, format!("{p}.name"), &a.name);
        if by_name.insert(a.name.as_str(), a.kind).is_some() {
            c.err(format!("{p}.name"), format!("`{}` is listed twice", clip(&a.name)));
        }
        if !artifact::is_sha256(&a.sha256) {
            c.err(format!("{p}.sha256"), "must be 64 lowercase hex digits (the SHA-256 of the file)");
        }
        if let Some(f) = &a.file {
            if f.is_empty() || f.len() > limits::MAX_PATH_LEN {
                c.err(format!("{p}.file"), format!("must be a file path of 1..={} bytes", limits::MAX_PATH_LEN));
            }
        }
    }
    by_name
}

/// A zone's use of an artifact: it must be listed, with the kind the use needs.
fn artifact_use(c: &mut Checker, listed: &HashMap<&str, ArtifactKind>, path: String, name: &str, want: ArtifactKind) {
    match listed.get(name) {
        None => c.err(path, format!("no artifact named `{}` in [[artifacts]]", clip(name))),
        Some(k) if *k != want => c.err(path, format!("`{}` is a {k}; this needs a {want}", clip(name))),
        Some(_) => {}
    }
}

/// A name (zone, node, artifact): 1..=64 characters of a-z, A-Z, 0-9, `-`, `_`, `.`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_name(c: &mut Checker, path: impl Into<String>, name: &str) {
    if !is_name(name) {
        c.err(
            path,
            format!("`{}` must be 1..={} characters of a-z, A-Z, 0-9, `-`, `_`, `.`", clip(name), limits::MAX_NAME_LEN),
        );
    }
}

/// Checks one hostname (exact, or `*.` followed by an exact name) and returns it lowercased.
pub(crate) fn check_hostname(h: &str) -> Result<String, String> {
    let norm = h.to_ascii_lowercase();
    let bare = norm.strip_prefix("*.").unwrap_or(&norm);
    if norm.len() > limits::MAX_HOSTNAME_LEN {
        return Err(format!("hostname is {} bytes; the limit is {}", norm.len(), limits::MAX_HOSTNAME_LEN));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if bare.is_empty() || !bare.split('.').all(label_ok) {
        return Err(format!(
            "`{}` is not a hostname (labels of a-z, 0-9, `-`; a wildcard is `*.` followed by a name)",
            clip(h)
        ));
    }
    Ok(norm)
}

fn parse_hash_key(k: &str) -> Result<HashKey, String> {
    let header_ok = |n: &str| {
        !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match k {
        "client_ip" => Ok(HashKey::ClientIp),
        "path" => Ok(HashKey::Path),
        "uri" => Ok(HashKey::Uri),
        _ => {
            if let Some(n) = k.strip_prefix("header:").filter(|n| header_ok(n)) {
                Ok(HashKey::Header(n.to_ascii_lowercase()))
            } else if let Some(n) = k.strip_prefix("cookie:").filter(|n| header_ok(n)) {
                Ok(HashKey::Cookie(n.to_string()))
            } else {
                Err(format!("`{}` is not one of client_ip, path, uri, header:NAME, cookie:NAME", clip(k)))
            }
        }
    }
}
