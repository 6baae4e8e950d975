//! validated config -> compiled immutable [`Snapshot`]: routing tables, origin pools with their
//! upstream clients, certificates. A snapshot is swapped in whole (arc-swap); requests in flight
//! keep the one they started with.

use std::collections::HashMap;
use std::sync::Arc;

use palisade_config::{HashKey, HealthCheck, OriginProtocol, Problem, ValidConfig};
use rustls::sign::CertifiedKey;

use crate::artifacts::{Compiled, Loaded};
use crate::guard::GuardLimits;
use crate::metrics::{Metrics, ZoneStats};
use crate::pool::{ms, OriginState, Pool, RetryBudget};
use crate::upstream::ConnParams;

/// One zone, compiled. Each data-plane worker has its own copy (see
/// [`Snapshot::zone_for_worker`]), sharing the zone's live state (origins, budget, stats)
/// through the `Arc`s inside: the copy's reference count and its balancer's cursor, which every
/// request changes, stay on the worker's own cache lines.
#[repr(align(128))]
pub struct ZoneRuntime {
    pub name: Arc<str>,
    pub pool: Pool,
    pub hash_key: HashKey,
    pub conn_params: ConnParams,
    pub h2_origin: bool,
    pub response_header_timeout: std::time::Duration,
    pub total_timeout: std::time::Duration,
    pub retry_attempts: u32,
    pub budget: Arc<RetryBudget>,
    pub max_body_bytes: u64,
    pub stats: Arc<ZoneStats>,
    pub health_check: Option<HealthCheck>,
    /// Host header sent with health checks: the zone's first exact hostname.
    pub health_host: String,
    pub cert: Option<Arc<CertifiedKey>>,
    /// The zone's security modules, in order (see [`crate::modules`]); one set shared by every
    /// worker's copy, breakers included.
    pub modules: Arc<[crate::modules::Slot]>,
    /// The zone's DDoS detector (also in `modules`), for the once-a-second analysis.
    pub ddos: Option<Arc<crate::ddos::Detector>>,
    /// The bot module's behaviour table (also in `modules`), lent to the next snapshot.
    pub bot_behaviour: Option<Arc<crate::bot::Behaviour>>,
    /// `[zones.concurrency]`: the origin slots and their fair queue, shared by every worker.
    pub queue: Option<Arc<crate::fairq::FairQueue>>,
    /// The zone's cache settings and the node's cache; None when the zone does not cache.
    pub cache: Option<Arc<crate::cache::ZonePolicy>>,
    /// This node's `Via` entries.
    pub via: Via,
    /// `[zones.challenge]`: the challenge page's settings.
    pub challenge: palisade_config::ChallengeSettings,
}

/// Zones by hostname. The keys are the config's, so a fast hash serves (no request adds one).
type HostMap = HashMap<String, usize, foldhash::fast::RandomState>;

/// Everything a request needs, immutable once built.
pub struct Snapshot {
    pub config: ValidConfig,
    pub zones: Vec<Arc<ZoneRuntime>>,
    /// `zones` again for each data-plane worker, in the same order.
    worker_zones: Vec<Vec<Arc<ZoneRuntime>>>,
    exact: HostMap,
    wildcard: HostMap,
    pub guard_limits: GuardLimits,
    /// The document's artifacts by name, compiled.
    pub artifacts: HashMap<String, Loaded>,
    /// Where the bytes came from (a file path, "last-known-good", "admin API").
    pub source: String,
    /// The node's cache: kept across reloads while `[cache]` stays the same.
    pub cache: Arc<crate::cache::Cache>,
}

/// This node's `Via` entries (RFC 9110 7.6.3), built once per snapshot: `1.0 name`, `1.1 name`,
/// `2 name`. A message without a `Via` gets one of these as is.
pub struct Via {
    pub by_version: [hyper::header::HeaderValue; 3],
}

impl Via {
    fn new(node: &str) -> Self {
        let value = |v: &str| {
            hyper::header::HeaderValue::from_str(&format!("{v} {node}"))
                .unwrap_or(hyper::header::HeaderValue::from_static("1.1 palisade"))
        };
        Self { by_version: [value("1.0"), value("1.1"), value("2")] }
    }
}

impl Snapshot {
    /// The zone serving `host` (already lowercased, without port): exact match first, then a
    /// one-label wildcard (`*.example.com` matches `a.example.com`, not `a.b.example.com`, the
    /// same rule TLS certificates follow).
    pub fn zone_index(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent).copied()
    }

    /// Zone `i` as the current data-plane worker's copy (the shared one off the workers).
    pub fn zone_for_worker(&self, i: usize) -> Option<&Arc<ZoneRuntime>> {
        match self.worker_zones.get(crate::server::worker_index()) {
            Some(zones) => zones.get(i),
            None => self.zones.get(i),
        }
    }

    pub fn zone_for(&self, host: &str) -> Option<&Arc<ZoneRuntime>> {
        self.zone_index(host).and_then(|i| self.zones.get(i))
    }

    pub fn version(&self) -> u64 {
        self.config.doc.version
    }

    pub fn hash(&self) -> &str {
        &self.config.hash
    }
}

/// Lowercases a Host value and strips the port and a trailing dot.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    // Every request has a host, of a few bytes: whether it has capitals is one pass without
    // branches, and a port (digits after the last colon) is looked for among the last bytes only.
    let upper = raw.bytes().fold(false, |u, b| u | b.is_ascii_uppercase());
    let no_port = if raw.starts_with('[') {
        raw.split_once(']').map(|(h, _)| h.trim_start_matches('[')).unwrap_or(raw)
    } else {
        let bytes = raw.as_bytes();
        let digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        match bytes.len().checked_sub(digits + 1) {
            Some(colon) if bytes.get(colon) == Some(&b':') => raw.get(..colon).unwrap_or(raw),
            _ => raw,
        }
    };
    let trimmed = no_port.strip_suffix('.').unwrap_or(no_port);
    if upper {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

/// validated config -> snapshot. `previous` lends origin state (health, ejections) to origins
/// that are still configured, so a reload does not forget what it knew, and the artifacts it
/// already compiled; the others come from `store` (see [`crate::artifacts`]).
pub fn compile(
    config: ValidConfig,
    previous: Option<&Snapshot>,
    metrics: &Metrics,
    source: &str,
    workers: usize,
    store: &crate::artifacts::Store,
) -> Result<Snapshot, Vec<Problem>> {
    let artifacts = crate::artifacts::load_all(&config.doc.artifacts, store, previous.map(|p| &p.artifacts))?;
    let mut problems = Vec::new();
    let mut old_states: HashMap<(String, std::net::SocketAddr), Arc<OriginState>> = HashMap::new();
    // What a zone's detector learned and who holds its origin slots outlive a reload.
    let mut old_ddos: HashMap<&str, Arc<crate::ddos::Detector>> = HashMap::new();
    let mut old_queues: HashMap<&str, Arc<crate::fairq::FairQueue>> = HashMap::new();
    let mut old_behaviour: HashMap<&str, Arc<crate::bot::Behaviour>> = HashMap::new();
    if let Some(prev) = previous {
        for z in &prev.zones {
            if let Some(b) = &z.bot_behaviour {
                old_behaviour.insert(&z.name, b.clone());
            }
            if let Some(d) = &z.ddos {
                old_ddos.insert(&z.name, d.clone());
            }
            if let Some(q) = &z.queue {
                old_queues.insert(&z.name, q.clone());
            }
            for o in &z.pool.origins {
                old_states.insert((z.name.to_string(), o.addr), o.clone());
            }
        }
    }

    let cache = match previous.map(|p| &p.cache) {
        Some(c) if c.settings == config.doc.cache => c.clone(),
        _ => crate::cache::Cache::new(&config.doc.cache),
    };
    let mut zones = Vec::with_capacity(config.doc.zones.len());
    let mut worker_zones: Vec<Vec<Arc<ZoneRuntime>>> = vec![Vec::with_capacity(config.doc.zones.len()); workers];
    let mut exact = HostMap::default();
    let mut wildcard = HostMap::default();
    for (zi, (z, vz)) in config.doc.zones.iter().zip(&config.zones).enumerate() {
        let origins = z
            .origins
            .iter()
            .zip(&vz.origin_addrs)
            .map(|(o, addr)| {
                let state = old_states.get(&(z.name.clone(), *addr)).cloned().unwrap_or_else(|| {
                    Arc::new(OriginState::new(*addr, metrics.origin(&z.name, &addr.to_string()), workers))
                });
                (state, o.weight)
            })
            .collect::<Vec<_>>();

        let h2 = z.origin_protocol == OriginProtocol::H2;
        let conn_params =
            ConnParams { connect_timeout: ms(z.timeouts.connect_ms), idle_timeout: ms(z.timeouts.idle_ms), h2 };

        let cert = match &z.tls {
            Some(tls) => {
                let loaded = match (&tls.cert_file, &tls.key_file, &tls.bundle) {
                    (Some(c), Some(k), _) => crate::tls::load_certified_key(c, k).map(Arc::new),
                    (_, _, Some(b)) => match artifacts.get(b).map(|l| &l.compiled) {
                        Some(Compiled::Cert(c)) => Ok(c.clone()),
                        _ => Err(format!("`{b}` is not a loaded cert_bundle")),
                    },
                    _ => Err("no certificate".into()),
                };
                match loaded {
                    Ok(c) => Some(c),
                    Err(e) => {
                        problems.push(Problem { path: format!("zones[{zi}].tls"), message: e });
                        None
                    }
                }
            }
            None => None,
        };
        let mut slots = Vec::new();
        let settings = |name: &str| z.modules.get(name).cloned().unwrap_or_default();
        let mut slot = |name: &'static str, module: Box<dyn crate::modules::Module>, kill| {
            let stats = metrics.module(&z.name, name);
            slots.push(crate::modules::Slot::new(name, module, &settings(name), kill, stats));
        };
        if let Some(f) = &z.fault {
            slot("fault", Box::new(crate::modules::FaultModule::new(f)), crate::kill::Switch::Fault);
        }
        let lists = |name: &str| match artifacts.get(name).map(|l| &l.compiled) {
            Some(Compiled::IpList(set)) => Some(set.clone()),
            _ => None,
        };
        // Early drop first: the deny list, then automatic DDoS mitigation (which counts every
        // request the deny list lets through).
        match z.ip_deny.as_ref().map(|n| (n, artifacts.get(n).map(|l| &l.compiled))) {
            None => {}
            Some((_, Some(Compiled::IpList(set)))) => {
                slot("ip_lists", Box::new(crate::modules::IpLists(set.clone())), crate::kill::Switch::IpLists)
            }
            Some((n, _)) => problems.push(Problem {
                path: format!("zones[{zi}].ip_deny"),
                message: format!("`{n}` is not a loaded ip_list"),
            }),
        }
        let ddos = z.ddos.enabled.then(|| {
            let d = old_ddos
                .get(z.name.as_str())
                .cloned()
                .unwrap_or_else(|| Arc::new(crate::ddos::Detector::new(&z.ddos, workers, metrics.zone(&z.name))));
            d.configure(&z.ddos);
            d
        });
        if let Some(d) = &ddos {
            let module = crate::ddos::DdosModule {
                detector: d.clone(),
                difficulty: crate::challenge::difficulty(None, &z.challenge),
            };
            slot("ddos", Box::new(module), crate::kill::Switch::Ddos);
        }
        let queue = z.concurrency.as_ref().map(|c| {
            let q = old_queues
                .get(z.name.as_str())
                .cloned()
                .unwrap_or_else(|| Arc::new(crate::fairq::FairQueue::new(c, metrics.zone(&z.name))));
            q.configure(c);
            q
        });
        if !vz.rate_limits.is_empty() {
            let mut limits = Vec::with_capacity(vz.rate_limits.len());
            for (li, (cfg, valid)) in z.rate_limits.iter().zip(&vz.rate_limits).enumerate() {
                let mut expression = valid.expression.clone();
                for missing in expression.as_mut().map(|e| e.resolve(&lists)).unwrap_or_default() {
                    problems.push(Problem {
                        path: format!("zones[{zi}].rate_limits[{li}].expression"),
                        message: format!("`${missing}` is not a loaded ip_list"),
                    });
                }
                let stats = metrics.rate_limit(&z.name, &cfg.name);
                let difficulty = crate::challenge::difficulty(cfg.difficulty, &z.challenge);
                limits.push(crate::ratelimit::Limit::new(cfg, valid, expression, difficulty, stats));
            }
            slot("rate_limits", Box::new(crate::ratelimit::RateLimits { limits }), crate::kill::Switch::RateLimits);
        }
        let mut bot_behaviour = None;
        if let Some(bot) = &z.bot {
            let model = match bot.model.as_ref().map(|n| (n, artifacts.get(n).map(|l| &l.compiled))) {
                None => crate::bot::builtin(),
                Some((_, Some(Compiled::FeatureFile(m)))) => Some(m.clone()),
                Some((n, _)) => {
                    problems.push(Problem {
                        path: format!("zones[{zi}].bot.model"),
                        message: format!("`{n}` is not a loaded feature_file"),
                    });
                    None
                }
            };
            let mut verified = Vec::with_capacity(bot.verified.len());
            for (vi, v) in bot.verified.iter().enumerate() {
                match crate::bot::Verified::compile(v) {
                    Ok(v) => verified.push(v),
                    Err(message) => problems.push(Problem { path: format!("zones[{zi}].bot.verified[{vi}]"), message }),
                }
            }
            let behaviour = old_behaviour.get(z.name.as_str()).cloned().unwrap_or_default();
            bot_behaviour = Some(behaviour.clone());
            let learning = metrics.bot_learning.clone();
            let module = crate::bot::BotModule { model, verified, behaviour, learning };
            slot("bot", Box::new(module), crate::kill::Switch::Bot);
        }
        if !vz.rules.is_empty() {
            let mut rules = Vec::with_capacity(vz.rules.len());
            for (ri, (rule, expr)) in z.rules.iter().zip(&vz.rules).enumerate() {
                let mut expr = expr.clone();
                for missing in expr.resolve(&lists) {
                    problems.push(Problem {
                        path: format!("zones[{zi}].rules[{ri}].expression"),
                        message: format!("`${missing}` is not a loaded ip_list"),
                    });
                }
                let matches = metrics.rule(&z.name, &rule.name);
                let difficulty = crate::challenge::difficulty(rule.difficulty, &z.challenge);
                rules.push(crate::modules::FirewallRule { expr, action: rule.action, difficulty, matches });
            }
            slot("firewall", Box::new(crate::modules::Firewall { rules }), crate::kill::Switch::Firewall);
        }
        let modules: Arc<[crate::modules::Slot]> = slots.into();
        let zone_cache = z.cache.enabled.then(|| {
            let rules = z
                .cache
                .rules
                .iter()
                .zip(&vz.cache_rules)
                .enumerate()
                .map(|(ri, (rule, expr))| {
                    let mut expr = expr.clone();
                    for missing in expr.as_mut().map(|e| e.resolve(&lists)).unwrap_or_default() {
                        problems.push(Problem {
                            path: format!("zones[{zi}].cache.rules[{ri}].expression"),
                            message: format!("`${missing}` is not a loaded ip_list"),
                        });
                    }
                    crate::cache::ZonePolicy::compile_rule(rule, expr)
                })
                .collect();
            Arc::new(crate::cache::ZonePolicy::new(cache.clone(), Arc::from(z.name.as_str()), &z.cache, rules))
        });

        for h in &vz.hostnames {
            match h.strip_prefix("*.") {
                Some(suffix) => wildcard.insert(suffix.to_string(), zi),
                None => exact.insert(h.clone(), zi),
            };
        }
        let health_host = vz.hostnames.iter().find(|h| !h.starts_with("*.")).cloned().unwrap_or_else(|| {
            vz.hostnames.first().map(|h| h.trim_start_matches("*.").to_string()).unwrap_or_default()
        });
        let name: Arc<str> = Arc::from(z.name.as_str());
        let budget = Arc::new(RetryBudget::new(z.retries.budget_percent, z.retries.min_concurrent));
        let stats = metrics.zone(&z.name);
        let runtime = || {
            Arc::new(ZoneRuntime {
                name: name.clone(),
                pool: Pool::new(origins.clone(), z.balance, z.passive_health.clone()),
                hash_key: vz.hash_key.clone(),
                conn_params,
                h2_origin: h2,
                response_header_timeout: ms(z.timeouts.response_header_ms),
                total_timeout: ms(z.timeouts.total_ms),
                retry_attempts: z.retries.attempts,
                budget: budget.clone(),
                max_body_bytes: z.max_body_bytes,
                stats: stats.clone(),
                health_check: z.health_check.clone(),
                health_host: health_host.clone(),
                cert: cert.clone(),
                modules: modules.clone(),
                ddos: ddos.clone(),
                bot_behaviour: bot_behaviour.clone(),
                queue: queue.clone(),
                cache: zone_cache.clone(),
                // Its own values per copy: a request clones them, and a value's reference
                // count shared by every worker would pass its line between the cores.
                via: Via::new(&config.doc.node.name),
                challenge: z.challenge.clone(),
            })
        };
        zones.push(runtime());
        for w in &mut worker_zones {
            w.push(runtime());
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let l = &config.doc.limits;
    let guard_limits = GuardLimits {
        max_header_bytes: usize::try_from(l.max_header_bytes).unwrap_or(usize::MAX),
        max_headers: usize::try_from(l.max_headers).unwrap_or(100),
        header_timeout: ms(l.header_timeout_ms),
        idle_timeout: ms(l.idle_timeout_ms),
        body_timeout: ms(l.body_timeout_ms),
        send_timeout: ms(l.send_timeout_ms),
    };
    Ok(Snapshot {
        config,
        zones,
        worker_zones,
        exact,
        wildcard,
        guard_limits,
        artifacts,
        source: source.to_string(),
        cache,
    })
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("plain"), "plain");
        assert_eq!(normalize_host("site.example:"), "site.example");
        assert_eq!(normalize_host("odd:port"), "odd:port");
    }
}
