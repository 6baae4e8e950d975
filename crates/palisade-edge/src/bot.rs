//! The `bot` module: a bot score for every request, 1 (automated) to 99 (human), or none.
//!
//! - **Signals**, read once per request from what is already parsed: the header names (which
//!   typical browser headers are there, how many headers), the user agent's family, the HTTP
//!   version, TLS and the TLS fingerprint's shape.
//! - **Verified bots** (`[[zones.bot.verified]]`): a user agent and the bot's address ranges,
//!   both required. They score 1 and set `bot.verified`, so a rule can let them in.
//! - **Signatures**: a user agent of a known automation tool (curl, python-requests, Go's
//!   client...) scores 1 whatever the model says.
//! - **The model**: a `feature_file` artifact, a logistic model: the score is
//!   `1 + 98 * sigmoid(bias + sum(weight * signal))`. A feature reads one of the signals above
//!   ([`Extractor::ALL`]), or probes the request: `header_present:NAME`, `ua_contains:TEXT`. The file is untrusted input: decoded and
//!   checked by [`palisade_config::artifact`] (size, feature count, duplicates, finite weights in
//!   range), then compiled here, where an extractor this node does not know refuses the file
//!   (with its name): the node keeps its previous version and the control plane gets the NACK.
//!   Memory is sized from the checked file; nothing is indexed without a check.
//!
//! A zone that names no model gets the built-in one ([`builtin`]). A request is left without a
//! score (absent: every comparison with it is false) only when the module is off or fails. Never
//! 0.

use std::sync::Arc;

use palisade_config::artifact::{FeatureFile, IpSet};

use crate::modules::{Module, ModuleError, RequestView, Verdict};

/// What the module found for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotResult {
    /// 1..=99.
    pub score: u8,
    pub verified: bool,
}

/// The signals a feature can read, each 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Extractor {
    /// `Accept-Language` is there.
    AcceptLanguage,
    /// `Accept-Encoding` is there.
    AcceptEncoding,
    /// `Accept` is there.
    Accept,
    /// A `Sec-Fetch-*` header is there (browsers send them).
    SecFetch,
    /// A `Sec-CH-UA*` client hint is there (Chromium-based browsers).
    ClientHints,
    /// A `Cookie` header is there.
    Cookie,
    /// `Upgrade-Insecure-Requests` is there (browsers, on navigations).
    UpgradeInsecure,
    /// Fewer than 5 headers.
    FewHeaders,
    /// The user agent looks like a browser's (`Mozilla/5.0` and an engine).
    UaBrowser,
    /// The user agent names a headless browser.
    UaHeadless,
    /// No user agent.
    UaMissing,
    /// HTTP/2 or later.
    Http2,
    /// Over TLS.
    Tls,
    /// The TLS fingerprint offers h2 and at least 10 cipher suites (as browsers do).
    Ja4Browser,
    /// Over TLS, a browser's user agent from a client whose TLS is not a browser's: a script
    /// borrowing a browser's name and headers.
    BrowserUaOtherTls,
    /// Behaviour: more than [`BUSY_REQUESTS`] requests from the client (its address, or IPv6
    /// /64) in the current [`WINDOW_S`]-second window.
    Busy,
    /// Behaviour: at least [`DIVERSE_PATHS`] different paths from the client in the window (a
    /// crawl; a person reads a few pages).
    ManyPaths,
}

impl Extractor {
    pub const ALL: [(&'static str, Extractor); 17] = [
        ("accept_language", Extractor::AcceptLanguage),
        ("accept_encoding", Extractor::AcceptEncoding),
        ("accept", Extractor::Accept),
        ("sec_fetch", Extractor::SecFetch),
        ("client_hints", Extractor::ClientHints),
        ("cookie", Extractor::Cookie),
        ("upgrade_insecure", Extractor::UpgradeInsecure),
        ("few_headers", Extractor::FewHeaders),
        ("ua_browser", Extractor::UaBrowser),
        ("ua_headless", Extractor::UaHeadless),
        ("ua_missing", Extractor::UaMissing),
        ("http2", Extractor::Http2),
        ("tls", Extractor::Tls),
        ("ja4_browser", Extractor::Ja4Browser),
        ("browser_ua_other_tls", Extractor::BrowserUaOtherTls),
        ("busy", Extractor::Busy),
        ("many_paths", Extractor::ManyPaths),
    ];

    fn named(name: &str) -> Option<Extractor> {
        Extractor::ALL.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

/// A request's signals, one bit per [`Extractor`], and whether its user agent is a tool's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    bits: u32,
    tool: bool,
}

/// User agents of automation tools and HTTP libraries (lowercase, as a substring).
const TOOLS: [&str; 22] = [
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "okhttp",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "axios/",
    "node-fetch",
    "undici",
    "wrk",
    "reqwest",
    "hyper/",
    "scrapy",
    "httpie",
    "postmanruntime",
    "sqlmap",
    "nikto",
];

fn contains_lower(haystack: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    n.len() <= haystack.len() && haystack.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Browser engines' marks in a user agent.
const ENGINES: [&str; 5] = ["applewebkit", "gecko/", "chrome/", "firefox/", "safari/"];
const HEADLESS: [&str; 2] = ["headless", "phantomjs"];

/// What the user agent says, read in one pass over it (an Aho-Corasick automaton of every
/// pattern, any case): (a tool's, a browser engine's, a headless browser's).
fn user_agent_marks(ua: &[u8]) -> (bool, bool, bool) {
    static MARKS: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> = std::sync::OnceLock::new();
    let automaton = MARKS.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(TOOLS.iter().chain(&ENGINES).chain(&HEADLESS))
            .ok()
    });
    let Some(automaton) = automaton else { return (false, false, false) };
    let (mut tool, mut engine, mut headless) = (false, false, false);
    for m in automaton.find_overlapping_iter(ua) {
        let i = m.pattern().as_usize();
        if i < TOOLS.len() {
            tool = true;
        } else if i < TOOLS.len() + ENGINES.len() {
            engine = true;
        } else {
            headless = true;
        }
    }
    (tool, engine, headless)
}

impl Signals {
    pub fn of(req: &RequestView<'_>) -> Signals {
        let mut bits = 0;
        let mut count = 0usize;
        req.headers.names(&mut |name| {
            count += 1;
            let lower = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
            let prefix = |p: &str| {
                name.len() > p.len() && name.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
            };
            if lower("accept-language") {
                bits |= Extractor::AcceptLanguage.bit();
            } else if lower("accept-encoding") {
                bits |= Extractor::AcceptEncoding.bit();
            } else if lower("accept") {
                bits |= Extractor::Accept.bit();
            } else if lower("cookie") {
                bits |= Extractor::Cookie.bit();
            } else if lower("upgrade-insecure-requests") {
                bits |= Extractor::UpgradeInsecure.bit();
            } else if prefix("sec-fetch-") {
                bits |= Extractor::SecFetch.bit();
            } else if prefix("sec-ch-ua") || lower("sec-ch-ua") {
                bits |= Extractor::ClientHints.bit();
            }
        });
        if count < 5 {
            bits |= Extractor::FewHeaders.bit();
        }
        let mut tool = false;
        match req.headers.header("user-agent") {
            None => bits |= Extractor::UaMissing.bit(),
            Some(ua) => {
                let (is_tool, engine, headless) = user_agent_marks(ua);
                tool = is_tool;
                if engine && ua.starts_with(b"Mozilla/5.0") {
                    bits |= Extractor::UaBrowser.bit();
                }
                if headless {
                    bits |= Extractor::UaHeadless.bit();
                }
            }
        }
        if matches!(req.version, hyper::Version::HTTP_2 | hyper::Version::HTTP_3) {
            bits |= Extractor::Http2.bit();
        }
        if req.tls {
            bits |= Extractor::Tls.bit();
        }
        if req.ja4.is_some_and(ja4_browser_like) {
            bits |= Extractor::Ja4Browser.bit();
        }
        if req.tls && bits & Extractor::UaBrowser.bit() != 0 && bits & Extractor::Ja4Browser.bit() == 0 {
            bits |= Extractor::BrowserUaOtherTls.bit();
        }
        Signals { bits, tool }
    }

    pub fn has(self, e: Extractor) -> bool {
        self.bits & e.bit() != 0
    }
}

/// JA4's first part is `t13d1516h2`: protocol, version, SNI, cipher count, extension count, ALPN.
fn ja4_browser_like(ja4: &str) -> bool {
    let a = ja4.split('_').next().unwrap_or("");
    let ciphers = a.get(4..6).and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
    ciphers >= 10 && a.ends_with("h2")
}

/// A feature that reads the request itself, named with an argument.
#[derive(Debug)]
enum Probe {
    /// `header_present:NAME`: the request has header NAME.
    HeaderPresent(Box<str>),
    /// `ua_contains:TEXT`: the user agent contains TEXT (any case).
    UaContains(Box<str>),
}

impl Probe {
    fn parse(extractor: &str) -> Option<Probe> {
        let (kind, arg) = extractor.split_once(':')?;
        let arg = arg.to_ascii_lowercase().into_boxed_str();
        match kind {
            "header_present" if !arg.is_empty() => Some(Probe::HeaderPresent(arg)),
            "ua_contains" if !arg.is_empty() => Some(Probe::UaContains(arg)),
            _ => None,
        }
    }

    fn hit(&self, req: &RequestView<'_>) -> bool {
        match self {
            Probe::HeaderPresent(name) => req.headers.header(name).is_some(),
            Probe::UaContains(text) => req.headers.header("user-agent").is_some_and(|ua| contains_lower(ua, text)),
        }
    }
}

/// A compiled feature file: the signals' weights summed per signal, then the probes.
#[derive(Debug)]
pub struct Model {
    pub version: String,
    bias: f64,
    /// Weight of each [`Extractor`], by its number (features naming the same one add up).
    weights: [f64; Extractor::ALL.len()],
    probes: Box<[(Probe, f64)]>,
}

impl Model {
    /// The checked file, compiled; an extractor this node does not know refuses it.
    pub fn compile(file: &FeatureFile) -> Result<Model, String> {
        let mut weights = [0.0; Extractor::ALL.len()];
        let mut probes = Vec::new();
        for (i, f) in file.features.iter().enumerate() {
            if let Some(e) = Extractor::named(&f.extractor) {
                if let Some(w) = weights.get_mut(e as usize) {
                    *w += f.weight;
                }
            } else if let Some(p) = Probe::parse(&f.extractor) {
                probes.push((p, f.weight));
            } else {
                let known: Vec<&str> = Extractor::ALL.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "features[{i}].extractor: `{}` is not an extractor this node has ({}, header_present:NAME, ua_contains:TEXT)",
                    f.extractor,
                    known.join(", ")
                ));
            }
        }
        Ok(Model { version: file.model_version.clone(), bias: file.bias, weights, probes: probes.into() })
    }

    /// 1..=99.
    pub fn score(&self, req: &RequestView<'_>, s: Signals) -> u8 {
        let mut z = self.bias;
        for (i, w) in self.weights.iter().enumerate() {
            if s.bits & (1 << i) != 0 {
                z += w;
            }
        }
        for (p, w) in self.probes.iter() {
            if p.hit(req) {
                z += w;
            }
        }
        let p = 1.0 / (1.0 + (-z).exp());
        // p is in 0..=1 (a NaN cannot arise: weights are finite and bounded).
        (1.0 + (98.0 * p).round()).clamp(1.0, 99.0) as u8
    }
}

/// The model a zone gets when `[zones.bot]` names none (`builtin-1`): browsers' typical
/// headers count for a human, a missing user agent and a bare request against. Shipped as a
/// feature file and loaded through the same checks as any other.
pub fn builtin() -> Option<Arc<Model>> {
    static BUILTIN: std::sync::OnceLock<Option<Arc<Model>>> = std::sync::OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            let bytes = include_bytes!("bot-model.json");
            match palisade_config::artifact::decode(palisade_config::artifact::ArtifactKind::FeatureFile, bytes) {
                Ok(palisade_config::artifact::Artifact::FeatureFile(f)) => Model::compile(&f).ok().map(Arc::new),
                _ => None,
            }
        })
        .clone()
}

/// The behaviour window, in seconds.
pub const WINDOW_S: u64 = 10;
/// Requests in a window over which a client is [`Extractor::Busy`] (5 a second).
pub const BUSY_REQUESTS: u32 = 50;
/// Different paths in a window from which a client makes [`Extractor::ManyPaths`].
pub const DIVERSE_PATHS: u32 = 16;
/// Clients tracked per shard; [`SHARDS`] shards: 65 536 clients, about 2 MiB at most.
const SHARD_CAP: usize = 4096;
const SHARDS: usize = 16;

/// One client's current window.
#[derive(Debug, Clone, Copy)]
struct Seen {
    window: u64,
    requests: u32,
    /// One bit per path hash (mod 64): distinct paths, estimated by counting bits.
    paths: u64,
}

/// Per-client request rate and path diversity over short windows, in bounded memory: a full
/// shard drops the clients of past windows, then an eighth of the rest (a flood of new
/// addresses costs O(1) per request and never grows the table).
pub struct Behaviour {
    shards: Box<[std::sync::Mutex<std::collections::HashMap<u64, Seen>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            shards: (0..SHARDS).map(|_| std::sync::Mutex::new(std::collections::HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Behaviour {
    /// Counts the request; the behaviour signals of its client, this window.
    pub fn observe(&self, req: &RequestView<'_>, now_s: u64) -> u32 {
        use std::hash::BuildHasher;
        let client = crate::ddos::source_key(req.client_ip);
        let h = self.hasher.hash_one(client);
        let path_bit = 1u64 << (self.hasher.hash_one(req.uri.path()) % 64);
        let Some(shard) = self.shards.get(h as usize % SHARDS) else { return 0 };
        let mut shard = crate::lock(shard);
        let window = now_s / WINDOW_S;
        if shard.len() >= SHARD_CAP && !shard.contains_key(&client) {
            shard.retain(|_, s| s.window == window);
            if shard.len() >= SHARD_CAP {
                let mut n = 0usize;
                shard.retain(|_, _| {
                    n += 1;
                    !n.is_multiple_of(8)
                });
            }
        }
        let seen = shard.entry(client).or_insert(Seen { window, requests: 0, paths: 0 });
        if seen.window != window {
            *seen = Seen { window, requests: 0, paths: 0 };
        }
        seen.requests = seen.requests.saturating_add(1);
        seen.paths |= path_bit;
        let mut bits = 0;
        if seen.requests > BUSY_REQUESTS {
            bits |= Extractor::Busy.bit();
        }
        if seen.paths.count_ones() >= DIVERSE_PATHS {
            bits |= Extractor::ManyPaths.bit();
        }
        bits
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.shards.iter().map(|s| crate::lock(s).len()).sum()
    }
}

/// One verified bot, compiled.
pub struct Verified {
    pub name: String,
    user_agent: String,
    ranges: IpSet,
}

impl Verified {
    pub fn compile(v: &palisade_config::VerifiedBot) -> Result<Verified, String> {
        let bytes = v.ip_ranges.join("\n");
        match palisade_config::artifact::decode(palisade_config::artifact::ArtifactKind::IpList, bytes.as_bytes()) {
            Ok(palisade_config::artifact::Artifact::IpList(ranges)) => {
                Ok(Verified { name: v.name.clone(), user_agent: v.user_agent.clone(), ranges })
            }
            _ => Err(format!("verified bot `{}`: its ip_ranges do not parse", v.name)),
        }
    }
}

/// The `bot` module of a zone.
pub struct BotModule {
    pub model: Option<Arc<Model>>,
    pub verified: Vec<Verified>,
    /// The zone's behaviour table, kept across reloads.
    pub behaviour: Arc<Behaviour>,
    /// The node's counts of labelled traffic, for the control plane's model generator.
    pub learning: Arc<std::sync::Mutex<palisade_config::botlearn::Learning>>,
}

impl BotModule {
    /// What the module finds for a request (None: no score can be computed).
    pub fn judge(&self, req: &RequestView<'_>) -> Option<BotResult> {
        let ua = req.headers.header("user-agent");
        if let Some(ua) = ua {
            if self.verified.iter().any(|v| contains_lower(ua, &v.user_agent) && v.ranges.contains(req.client_ip)) {
                return Some(BotResult { score: 1, verified: true });
            }
        }
        let mut signals = Signals::of(req);
        signals.bits |= self.behaviour.observe(req, crate::clock::unix_now());
        if signals.tool {
            self.learn(req, false);
            return Some(BotResult { score: 1, verified: false });
        }
        if req.cleared() {
            self.learn(req, true);
        }
        self.model.as_ref().map(|m| BotResult { score: m.score(req, signals), verified: false })
    }

    /// A module with fresh behaviour and learning tables (benches, tests).
    pub fn new(model: Option<Arc<Model>>, verified: Vec<Verified>) -> Self {
        BotModule { model, verified, behaviour: Arc::default(), learning: Arc::default() }
    }

    /// Counts a request whose kind is sure: a script (a signature) or a person (a clearance).
    /// Skipped when another worker holds the counts: a sample is enough, and a flood of
    /// scripts must not queue every worker on one lock.
    fn learn(&self, req: &RequestView<'_>, human: bool) {
        let mut learning = match self.learning.try_lock() {
            Ok(l) => l,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        learning.count_request(human);
        let mut lower = [0u8; palisade_config::botlearn::MAX_HEADER_NAME_LEN];
        req.headers.names(&mut |name| {
            if let Some(buf) = lower.get_mut(..name.len()) {
                for (l, c) in buf.iter_mut().zip(name) {
                    *l = c.to_ascii_lowercase();
                }
                if let Ok(name) = std::str::from_utf8(buf) {
                    learning.count_name(human, name);
                }
            }
        });
    }
}

impl Module for BotModule {
    fn on_request(&self, req: &RequestView<'_>) -> Result<Verdict, ModuleError> {
        req.bot.set(self.judge(req));
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_config::artifact::Feature;

    struct Hs(Vec<(&'static str, &'static str)>);

    impl crate::modules::Headers for Hs {
        fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
            self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes())
        }
        fn names(&self, f: &mut dyn FnMut(&[u8])) {
            for (k, _) in &self.0 {
                f(k.as_bytes());
            }
        }
    }

    fn judge(m: &BotModule, ip: [u8; 4], headers: Vec<(&'static str, &'static str)>) -> Option<BotResult> {
        let (method, uri) = (hyper::Method::GET, hyper::Uri::from_static("/"));
        let h = Hs(headers);
        let req = RequestView::plain(std::net::IpAddr::from(ip), &method, &uri, &h);
        m.judge(&req)
    }

    fn model(features: &[(&str, f64)], bias: f64) -> FeatureFile {
        FeatureFile {
            model_version: "t1".into(),
            bias,
            features: features
                .iter()
                .map(|(e, w)| Feature { name: format!("f-{e}"), extractor: (*e).into(), weight: *w })
                .collect(),
        }
    }

    const BROWSER: [(&str, &str); 6] = [
        ("host", "site.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
        ),
        ("accept", "text/html"),
        ("accept-language", "en-US"),
        ("accept-encoding", "gzip"),
        ("sec-fetch-mode", "navigate"),
    ];

    #[test]
    fn signatures_verified_bots_and_the_model_score_in_that_order() {
        let file =
            model(&[("accept_language", 2.0), ("sec_fetch", 2.0), ("ua_browser", 1.0), ("few_headers", -3.0)], -2.0);
        let google = palisade_config::VerifiedBot {
            name: "googlebot".into(),
            user_agent: "Googlebot".into(),
            ip_ranges: vec!["66.249.64.0/19".into()],
        };
        let m =
            BotModule::new(Some(Arc::new(Model::compile(&file).unwrap())), vec![Verified::compile(&google).unwrap()]);
        let browser = judge(&m, [192, 0, 2, 1], BROWSER.to_vec()).unwrap();
        assert!(browser.score >= 90 && !browser.verified, "{browser:?}");
        let curl = judge(&m, [192, 0, 2, 1], vec![("host", "a"), ("user-agent", "curl/8.5.0"), ("accept", "*/*")]);
        assert_eq!(curl, Some(BotResult { score: 1, verified: false }), "a signature");
        let bare = judge(&m, [192, 0, 2, 1], vec![("host", "a"), ("user-agent", "Mozilla/5.0 Chrome/1")]).unwrap();
        assert!(bare.score < 30, "browser user agent, no browser headers: {bare:?}");
        let gb = vec![("host", "a"), ("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")];
        assert_eq!(judge(&m, [66, 249, 66, 1], gb.clone()), Some(BotResult { score: 1, verified: true }));
        assert!(!judge(&m, [192, 0, 2, 1], gb).unwrap().verified, "the user agent alone is not enough");
        // Without a model, only signatures and verified bots score: never 0.
        let plain = BotModule::new(None, Vec::new());
        assert_eq!(judge(&plain, [192, 0, 2, 1], BROWSER.to_vec()), None);
        assert_eq!(
            judge(&plain, [192, 0, 2, 1], vec![("user-agent", "python-requests/2.31")]).map(|r| r.score),
            Some(1)
        );
    }

    #[test]
    fn scores_stay_within_1_and_99_at_the_weight_limits() {
        let max = palisade_config::artifact::limits::MAX_WEIGHT;
        let (method, uri) = (hyper::Method::GET, hyper::Uri::from_static("/"));
        let h = Hs(vec![("x-a", "1"), ("user-agent", "Bot")]);
        let req = RequestView::plain(std::net::IpAddr::from([192, 0, 2, 1]), &method, &uri, &h);
        for (w, bias) in [(max, max), (-max, -max), (0.0, 0.0)] {
            let features = [("accept", w), ("ua_missing", w), ("header_present:X-A", w), ("ua_contains:bot", w)];
            let m = Model::compile(&model(&features, bias)).unwrap();
            for s in [Signals::default(), Signals { bits: u32::MAX, tool: false }] {
                assert!((1..=99).contains(&m.score(&req, s)));
            }
        }
    }

    #[test]
    fn probes_read_the_request() {
        let m = BotModule::new(
            Some(Arc::new(
                Model::compile(&model(&[("header_present:X-Requested-With", 6.0), ("ua_contains:MyApp", 6.0)], -6.0))
                    .unwrap(),
            )),
            Vec::new(),
        );
        let score = |h: Vec<(&'static str, &'static str)>| judge(&m, [192, 0, 2, 1], h).unwrap().score;
        assert_eq!(score(vec![("user-agent", "other")]), 1, "sigmoid(-6) rounds to the bottom");
        assert_eq!(score(vec![("x-requested-with", "x"), ("user-agent", "other")]), 50);
        assert!(score(vec![("x-requested-with", "x"), ("user-agent", "myapp/2")]) >= 98);
    }

    #[test]
    fn an_unknown_extractor_refuses_the_file_by_name() {
        let e = Model::compile(&model(&[("accept", 1.0), ("mouse_moves", 1.0)], 0.0)).unwrap_err();
        assert!(e.contains("features[1].extractor: `mouse_moves`"), "{e}");
        for bad in ["header_present:", "ua_contains", "cookie_value:x"] {
            assert!(Model::compile(&model(&[(bad, 1.0)], 0.0)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_builtin_model_loads_and_tells_a_browser_from_a_bare_client() {
        let m = BotModule::new(builtin(), Vec::new());
        assert_eq!(m.model.as_ref().map(|m| m.version.as_str()), Some("builtin-1"));
        assert!(judge(&m, [192, 0, 2, 1], BROWSER.to_vec()).unwrap().score >= 90);
        // wrk and HTTP libraries by default: a host and nothing else.
        assert!(judge(&m, [192, 0, 2, 1], vec![("host", "a")]).unwrap().score < 10);
        // A browser's name and a library's headers (python-requests with a borrowed user agent).
        let spoof = vec![
            ("host", "a"),
            ("user-agent", "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"),
            ("accept-encoding", "gzip, deflate"),
            ("accept", "*/*"),
            ("connection", "keep-alive"),
        ];
        assert!(judge(&m, [192, 0, 2, 1], spoof).unwrap().score < 30);
    }

    #[test]
    fn behaviour_counts_rate_and_paths_per_client_in_bounded_memory() {
        let b = Behaviour::default();
        let h = Hs(vec![]);
        let method = hyper::Method::GET;
        let ask = |ip: [u8; 4], path: &str, now: u64| {
            let uri: hyper::Uri = path.parse().unwrap();
            b.observe(&RequestView::plain(std::net::IpAddr::from(ip), &method, &uri, &h), now)
        };
        let t = 1_000_000 * WINDOW_S;
        for i in 0..BUSY_REQUESTS {
            assert_eq!(ask([192, 0, 2, 1], "/", t), 0, "request {i}");
        }
        assert_eq!(ask([192, 0, 2, 1], "/", t), Extractor::Busy.bit(), "over the rate");
        assert_eq!(ask([192, 0, 2, 2], "/", t), 0, "another client");
        assert_eq!(ask([192, 0, 2, 1], "/", t + WINDOW_S), 0, "a new window");
        // A crawl: many paths in a window (bits of a 64-bit hash set; a few may collide).
        let hits =
            (0..40).filter(|i| ask([192, 0, 2, 3], &format!("/page/{i}"), t) & Extractor::ManyPaths.bit() != 0).count();
        assert!(hits >= 10, "{hits}");
        // A flood of new addresses never grows the table past its cap.
        for i in 0..200_000u32 {
            ask([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], "/", t);
        }
        assert!(b.clients() <= SHARD_CAP * SHARDS, "{}", b.clients());
    }

    #[test]
    fn a_browser_name_over_a_script_tls_stack_is_told_apart() {
        let (method, uri) = (hyper::Method::GET, hyper::Uri::from_static("/"));
        let h = Hs(BROWSER.to_vec());
        let mut req = RequestView::plain(std::net::IpAddr::from([192, 0, 2, 1]), &method, &uri, &h);
        req.tls = true;
        req.ja4 = Some("t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert!(!Signals::of(&req).has(Extractor::BrowserUaOtherTls));
        req.ja4 = Some("t13d0510h1_2b729b4bf6f3_97f6f5f2cd3a");
        assert!(Signals::of(&req).has(Extractor::BrowserUaOtherTls));
    }

    #[test]
    fn ja4_shapes() {
        assert!(ja4_browser_like("t13d1516h2_8daaf6152771_e5627efa2ab1"));
        assert!(!ja4_browser_like("t13d0312h1_aaaaaaaaaaaa_bbbbbbbbbbbb"));
        assert!(!ja4_browser_like("junk"));
    }
}
