//! The request path: route by host, build the upstream request, pick an origin, send with
//! timeouts and retries, stream the response back. Every response, local or proxied, leaves
//! through [`respond`], which attaches the request's [`Finish`] record to the body.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, COOKIE, EXPECT, FORWARDED, HOST, UPGRADE, VIA,
};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use palisade_config::HashKey;

use crate::body::{ClientBody, EdgeBody, RequestBody};
use crate::cache::{CacheStatus, Judged, Lookup, Plan, Served, ZonePolicy};
use crate::codec::{self, RawHeaders, Special};
use crate::finish::Finish;
use crate::guard::ConnShared;
use crate::pages::Page;
use crate::pool::{fast_random, stable_hash, OriginLease, Outcome};
use crate::server::EdgeShared;
use crate::snapshot::{normalize_host, Via};
use crate::upstream::Sent;
use hyper::http::uri::PathAndQuery;

/// What a request handler knows about its connection.
pub struct ConnCtx {
    pub edge: Arc<EdgeShared>,
    pub conn: Arc<ConnShared>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// SNI of a TLS connection; a request for a host of another zone gets 421.
    pub sni: Option<String>,
    /// The client address as written in `X-Forwarded-For` and `Forwarded` (computed once per connection).
    /// The client address as a header value (X-Forwarded-For when the client sent none).
    pub peer_value: HeaderValue,
    pub forwarded_for: String,
    /// The TLS client fingerprint, read from the ClientHello ([`crate::ja4`]).
    pub ja4: Option<Arc<str>>,
    /// The HTTP/2 client fingerprint, read from the connection's first frames ([`crate::h2fp`]).
    pub h2: std::sync::OnceLock<Arc<str>>,
}

impl ConnCtx {
    pub fn new(edge: Arc<EdgeShared>, conn: Arc<ConnShared>, peer: SocketAddr, tls: bool, sni: Option<String>) -> Self {
        let ip = peer.ip();
        let forwarded_for = match ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        let peer_value = HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        Self { edge, conn, peer, tls, sni, peer_value, forwarded_for, ja4: None, h2: std::sync::OnceLock::new() }
    }
}

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// RFC 8586: each CDN a request passes through appends its token, so loops can be seen.
static CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
const CDN_LOOP_TOKEN: &str = "palisade";
/// Passes through Palisade allowed before a request is refused with 508 (two stacked fleets are
/// legitimate; an origin pointing back at its own edge is not).
const MAX_LOOP_HOPS: usize = 3;
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// 16 lowercase hex digits, formatted without the fmt machinery (it is on every request).
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let r = fast_random();
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = HEX.get(((r >> (60 - 4 * i)) & 0xf) as usize).copied().unwrap_or(b'0');
    }
    arena_value(16, |out| out.extend_from_slice(&hex)).unwrap_or(HeaderValue::from_static("0000000000000000"))
}

/// A header value of at most `len` bytes written by `write`, carved out of this thread's arena.
fn arena_value(len: usize, write: impl FnOnce(&mut BytesMut)) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(codec::arena_bytes(len, write)).ok()
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// A response on its way to the client. The header map of `resp` holds what the edge made or
/// set; an HTTP/1.1 origin's own header lines travel beside it, as received and already
/// stripped of hop-by-hop headers (see [`RawHeaders`]). HTTP/1.1 writes both; anything that
/// needs one map takes [`Reply::into_response`].
pub struct Reply {
    pub resp: Response<EdgeBody>,
    pub origin_headers: RawHeaders,
}

impl Reply {
    /// The response with the origin's header lines moved into its header map.
    pub fn into_response(self) -> Response<EdgeBody> {
        let Reply { mut resp, origin_headers } = self;
        origin_headers.append_to(resp.headers_mut());
        resp
    }
}

impl From<Response<EdgeBody>> for Reply {
    fn from(resp: Response<EdgeBody>) -> Self {
        Reply { resp, origin_headers: RawHeaders::default() }
    }
}

fn respond(reply: impl Into<Reply>, finish: Box<Finish>) -> Reply {
    let mut reply = reply.into();
    attach(&mut reply, finish);
    reply
}

/// Hands the request's record to the reply's body, with the status it answers.
fn attach(reply: &mut Reply, mut finish: Box<Finish>) {
    finish.status = reply.resp.status().as_u16();
    reply.resp.body_mut().set_finish(finish);
}

/// A request: its head's parts, an HTTP/1.1 client's header lines as received, and its body;
/// then the host it is routed by. What the request's future needs only until the origin
/// request is built lives here, not in that future (see [`handle`]). It travels boxed, boxed
/// where it is parsed: an `async fn` keeps its arguments twice (as captured and as locals) for
/// its whole life, in the connection's task memory, which is cache-cold at hundreds of
/// connections, and every move of a head this size is a copy; a box this size comes back warm
/// from the allocator's cache.
pub struct Head {
    parts: hyper::http::request::Parts,
    lines: RawHeaders,
    body: ClientBody,
    host: Option<HeaderValue>,
    /// Set on a cache revalidation in the background (`stale-while-revalidate`): the request
    /// is the edge's own, so it skips the client's connection bookkeeping and the modules.
    revalidate: Option<Box<crate::cache::Plan>>,
}

impl Head {
    /// A request's head, boxed, with no body yet (see [`Head::set_body`]). `lines`: an
    /// HTTP/1.1 client's header lines, as received, with the header map of `parts` left empty;
    /// they are forwarded to an HTTP/1.1 origin as lines, as the origin's response lines are
    /// forwarded back (see [`RawHeaders`]), unless one of them needs what only the map path does
    /// (see [`lines_forwardable`]). An HTTP/2 client's headers are in the map, and `lines` is
    /// empty.
    pub fn boxed(parts: hyper::http::request::Parts, lines: RawHeaders) -> Box<Head> {
        Box::new(Head { parts, lines, body: ClientBody::Empty, host: None, revalidate: None })
    }

    pub fn set_body(&mut self, body: ClientBody) {
        self.body = body;
    }

    pub fn method(&self) -> &Method {
        &self.parts.method
    }

    /// The values of the headers named `name` in the map (lowercase), and of the lines of
    /// `kind`, the special header so named (found by the kind recorded when the head was read).
    fn special<'a>(&'a self, kind: Special, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.map_values(name).chain(self.lines.special(kind))
    }

    /// The values of the headers named `name` (lowercase), in the map and among the lines.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.map_values(name).chain(self.lines.get_all(name))
    }

    fn map_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        // An HTTP/1.1 request's map is empty: skip hashing the name for it.
        let map = (!self.parts.headers.is_empty()).then(|| self.parts.headers.get_all(name).iter());
        map.into_iter().flatten().map(HeaderValue::as_bytes)
    }

    fn first<'a>(&'a self, kind: Special, name: &'a str) -> Option<&'a [u8]> {
        self.special(kind, name).next()
    }
}

impl crate::modules::Headers for Head {
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
    fn cookie<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        cookie(self.values(COOKIE.as_str()), name)
    }
    fn names(&self, f: &mut dyn FnMut(&[u8])) {
        for n in self.parts.headers.keys() {
            f(n.as_str().as_bytes());
        }
        for (n, _) in self.lines.iter() {
            f(n);
        }
    }
}

/// What modules and cache rules see of a request.
fn view<'a>(ctx: &'a ConnCtx, head: &'a Head, zone: &'a str) -> crate::modules::RequestView<'a> {
    crate::modules::RequestView {
        client_ip: ctx.peer.ip(),
        method: &head.parts.method,
        uri: &head.parts.uri,
        version: head.parts.version,
        raw_host: head.host.as_ref(),
        host: std::cell::OnceCell::new(),
        tls: ctx.tls,
        ja4: ctx.ja4.as_deref(),
        h2: ctx.h2.get().map(|f| &**f),
        headers: head,
        clearance: Some((&ctx.edge.challenge_keys, zone)),
        cleared: std::cell::OnceCell::new(),
        bot: std::cell::Cell::new(None),
    }
}

/// How the security modules refused a request: with an error page (its status, and the
/// seconds for `Retry-After`), or another answer (a challenge, no answer at all).
enum Refused {
    Page(StatusCode, Option<u64>),
    Reply(Box<Reply>),
}

/// The zone's modules for this request; how to answer when one refuses it.
#[inline(never)]
fn run_modules(
    ctx: &ConnCtx,
    head: &Head,
    zone: &crate::snapshot::ZoneRuntime,
    finish: &mut Finish,
    request_id_value: &HeaderValue,
    answering: bool,
) -> Option<Refused> {
    let view = view(ctx, head, &zone.name);
    let (kill, name) = (&ctx.edge.kill, &zone.name);
    let outcome = crate::modules::run_all(&zone.modules, &view, kill, name, &mut finish.degraded, answering);
    finish.bot = view.bot.get();
    if let Some(bot) = finish.bot {
        zone.stats.bot_score(bot.score);
    }
    match outcome {
        crate::modules::Outcome::Continue => None,
        crate::modules::Outcome::Respond(status) => {
            zone.stats.blocked.add(1);
            Some(Refused::Page(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), None))
        }
        crate::modules::Outcome::TooMany(retry_after) => {
            zone.stats.rate_limited.add(1);
            Some(Refused::Page(StatusCode::TOO_MANY_REQUESTS, Some(retry_after)))
        }
        crate::modules::Outcome::Drop => {
            zone.stats.blocked.add(1);
            Some(Refused::Reply(Box::new(crate::pages::dropped())))
        }
        // The answer to a challenge is what a challenged client must be able to send.
        crate::modules::Outcome::Challenge(_) if answering => None,
        crate::modules::Outcome::Challenge(difficulty) => {
            zone.stats.challenges_issued.fetch_add(1, Ordering::Relaxed);
            let keys = &ctx.edge.challenge_keys;
            let request_id = request_id_value.to_str().unwrap_or_default();
            let page = crate::challenge::page(keys, &zone.name, &zone.challenge, &view, difficulty, request_id);
            Some(Refused::Reply(Box::new(page.into())))
        }
    }
}

/// A browser's answer to a challenge page ([`crate::challenge::PATH`]).
#[inline(never)]
fn answer_challenge(
    ctx: &ConnCtx,
    head: &Head,
    zone: &crate::snapshot::ZoneRuntime,
    request_id: &str,
) -> Response<EdgeBody> {
    let view = view(ctx, head, &zone.name);
    let (resp, how) =
        crate::challenge::answer(&ctx.edge.challenge_keys, &zone.name, &zone.challenge, &view, request_id);
    let counter = match how {
        crate::challenge::Answer::Work => &zone.stats.challenges_solved,
        crate::challenge::Answer::Waited => &zone.stats.challenges_waited,
        crate::challenge::Answer::Early | crate::challenge::Answer::Failed => &zone.stats.challenges_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    resp
}

static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// The request headers the cache answers itself: left out of its origin requests.
const CACHE_CONDITIONALS: [HeaderName; 4] =
    [hyper::header::RANGE, hyper::header::IF_RANGE, hyper::header::IF_NONE_MATCH, hyper::header::IF_MODIFIED_SINCE];

fn is_cache_conditional(name: &[u8]) -> bool {
    CACHE_CONDITIONALS.iter().any(|n| codec::eq_lowercase(name, n.as_str().as_bytes()))
}

/// A request without headers: what a stale answer for a failed origin is served to (its
/// conditionals and range are not looked at; the whole object is sent).
struct NoHeaders;

impl crate::modules::Headers for NoHeaders {
    fn header<'a>(&'a self, _: &'a str) -> Option<&'a [u8]> {
        None
    }
    fn names(&self, _: &mut dyn FnMut(&[u8])) {}
}

/// `Cache-Status` (RFC 9211) for a request the cache answered or forwarded.
fn cache_status_value(status: CacheStatus, stored: bool) -> HeaderValue {
    HeaderValue::from_static(match (status, stored) {
        (CacheStatus::Hit, _) => "palisade; hit",
        (CacheStatus::Updating, _) => "palisade; hit; detail=stale-while-revalidate",
        (CacheStatus::Stale, _) => "palisade; fwd=stale; detail=stale-if-error",
        (CacheStatus::Revalidated, _) => "palisade; fwd=stale; fwd-status=304",
        (CacheStatus::Expired, true) => "palisade; fwd=stale; stored",
        (CacheStatus::Expired, false) => "palisade; fwd=stale",
        (CacheStatus::Miss, true) => "palisade; fwd=uri-miss; stored",
        (CacheStatus::Miss, false) => "palisade; fwd=uri-miss",
        (CacheStatus::Bypass, _) => "palisade; fwd=bypass",
    })
}

fn max_age_value(ttl: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("max-age={ttl}")).unwrap_or(HeaderValue::from_static("max-age=0"))
}

/// A cache rule's browser TTL replaces the origin's `Cache-Control`.
fn set_browser_ttl(map: &mut HeaderMap, lines: &mut RawHeaders, ttl: Option<u64>) {
    if let Some(ttl) = ttl {
        lines.retain(|_, name, _| !codec::eq_lowercase(name, b"cache-control"));
        map.insert(hyper::header::CACHE_CONTROL, max_age_value(ttl));
    }
}

enum CacheStep {
    Answer(Served, CacheStatus, Option<u64>),
    Fetch(Box<Plan>),
    Bypass,
}

/// The cache's answer to a request, waiting (once, up to the zone's lock timeout) for another
/// request's origin fetch of the same key.
async fn cache_lookup(
    ctx: &Arc<ConnCtx>,
    head: &Head,
    zone: &crate::snapshot::ZoneRuntime,
    policy: &ZonePolicy,
) -> CacheStep {
    let is_head = head.parts.method == Method::HEAD;
    let mut waited = false;
    // Loads from the disk tier: the object, and for a varying one its variant.
    let mut loads = 0;
    loop {
        let lookup = {
            let view = view(ctx, head, &zone.name);
            policy.lookup(&crate::cache::Ask { view: &view, head: is_head }, !waited, loads < 2)
        };
        match lookup {
            Lookup::Bypass => return CacheStep::Bypass,
            Lookup::Fetch(plan) => return CacheStep::Fetch(plan),
            Lookup::Load(name) => {
                // Boxed, as the wait below: rare, and this future lives inside every request's.
                let loaded = Box::pin(policy.cache.load(name)).await;
                loads = if loaded { loads + 1 } else { 2 };
            }
            Lookup::Wait(fill) => {
                // Boxed: the wait is rare, and this future lives inside every request's.
                Box::pin(async move { fill.wait(policy.lock_timeout).await }).await;
                waited = true;
            }
            Lookup::Hit { object, status, revalidate, browser_ttl } => {
                if let Some(plan) = revalidate {
                    revalidate_in_background(ctx.clone(), head, plan);
                }
                if waited {
                    zone.stats.cache.coalesced.add(1);
                }
                return match crate::cache::serve(policy, &object, head, is_head, browser_ttl) {
                    Some(served) => CacheStep::Answer(served, status, browser_ttl),
                    None => CacheStep::Bypass,
                };
            }
        }
    }
}

/// Fetches the object again for the cache, off the client's request (`stale-while-revalidate`):
/// the same request as a GET without a body, through the zone's origin queue and pool.
fn revalidate_in_background(ctx: Arc<ConnCtx>, head: &Head, plan: Box<Plan>) {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = head.parts.uri.clone();
    parts.version = head.parts.version;
    parts.headers = head.parts.headers.clone();
    let copy = Head {
        parts,
        lines: head.lines.clone(),
        body: ClientBody::Empty,
        host: head.host.clone(),
        revalidate: Some(plan),
    };
    let fetch: std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>> =
        Box::pin(handle(ctx, Box::new(copy)));
    tokio::spawn(async move {
        // Reading the body to its end stores it (crate::cache::Recorder).
        let mut body = fetch.await.resp.into_body();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
    });
}

/// A response from the cache, with the headers of this hit.
fn cache_reply(
    served: Served,
    status: CacheStatus,
    browser_ttl: Option<u64>,
    zone: &crate::snapshot::ZoneRuntime,
    request_id: &HeaderValue,
    mut finish: Box<Finish>,
) -> Reply {
    let stats = &zone.stats.cache;
    stats.count(status);
    finish.cache = Some(status);
    let body = match served.body {
        Some(b) => {
            stats.hit_bytes.add(b.len());
            match b {
                crate::cache::ServedBody::Bytes(b) => EdgeBody::full(b),
                crate::cache::ServedBody::Disk(d) => {
                    let len = d.len;
                    EdgeBody::channel(d.start(), len)
                }
            }
        }
        None => EdgeBody::empty(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = served.status;
    let mut map = codec::spare_map();
    map.insert(hyper::header::AGE, HeaderValue::from(served.age));
    map.insert(CACHE_STATUS.clone(), cache_status_value(status, false));
    if let Some(v) = served.content_range {
        map.insert(hyper::header::CONTENT_RANGE, v);
    }
    if let Some(n) = served.length {
        map.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(ttl) = browser_ttl {
        map.insert(hyper::header::CACHE_CONTROL, max_age_value(ttl));
    }
    append_via(&mut map, Version::HTTP_11, &zone.via);
    map.insert(X_REQUEST_ID.clone(), request_id.clone());
    *resp.headers_mut() = map;
    let mut reply = respond(resp, finish);
    reply.origin_headers = served.headers;
    reply
}

/// Judges an origin response for the cache: every header line it will be sent with.
fn judge(policy: &ZonePolicy, plan: Box<Plan>, parts: &hyper::http::response::Parts, lines: &RawHeaders) -> Judged {
    let says = |n: &[u8]| codec::eq_lowercase(n, b"cache-control") || codec::eq_lowercase(n, b"expires");
    let silent = !lines.iter().any(|(n, _)| says(n))
        && !parts.headers.contains_key(hyper::header::CACHE_CONTROL)
        && !parts.headers.contains_key(hyper::header::EXPIRES);
    if let Some(judged) = silent.then(|| policy.silent(&plan, parts.status)).flatten() {
        return judged;
    }
    let mut all: Vec<(&[u8], &[u8])> = lines.iter().collect();
    all.extend(parts.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())));
    let length = all
        .iter()
        .find(|(n, _)| codec::eq_lowercase(n, b"content-length"))
        .and_then(|(_, v)| codec::parse_content_length(v));
    policy.judge(plan, parts.status, all.iter().copied(), length)
}

/// Handles one request. Never fails: every problem becomes a response.
pub async fn handle(ctx: Arc<ConnCtx>, head: Box<Head>) -> Reply {
    match begin(&ctx, head) {
        Begun::Page(page) => page.into_reply(),
        Begun::Answered(reply) => *reply,
        Begun::Going(going) => forward(ctx, going).await.into_reply(),
    }
}

/// A request after its first steps: answered already, with a page of the edge's own (an error,
/// a refusal) or another answer (boxed: it travels through a few functions, and a challenge
/// page's is a few hundred bytes), or on its way to the cache and origins ([`forward`]).
pub enum Begun {
    Page(Page),
    Answered(Box<Reply>),
    Going(Going),
}

/// What [`forward`] answers: a page of the edge's own, or a response. The response is not
/// boxed: it is what nearly every forwarded request answers, and a box would cost each one an
/// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Page(Page),
    Reply(Reply),
}

impl Answer {
    pub fn into_reply(self) -> Reply {
        match self {
            Answer::Page(page) => page.into_reply(),
            Answer::Reply(reply) => reply,
        }
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Reply(reply)
    }
}

/// A request that passed its first steps, with what they found out.
pub struct Going {
    head: Box<Head>,
    zone: Arc<crate::snapshot::ZoneRuntime>,
    finish: Box<Finish>,
    request_id_value: HeaderValue,
    /// Its place in the connection's request order.
    index: u64,
    /// Whether the access log is on.
    log: bool,
}

/// Takes a request's first steps, which are all synchronous: its zone, the early checks and
/// the security modules. A request refused there (a flood's requests) is answered without the
/// future that takes a request to its origin ([`forward`]) ever being made.
pub fn begin(ctx: &Arc<ConnCtx>, mut head: Box<Head>) -> Begun {
    let background = head.revalidate.is_some();
    // A background revalidation takes no place in the connection's request order.
    let index = if background { u64::MAX } else { ctx.conn.next_request.fetch_add(1, Ordering::Relaxed) };
    ctx.conn.in_flight.fetch_add(1, Ordering::Relaxed);
    let request_id_value = new_request_id();
    let id = || request_id_value.to_str().unwrap_or_default();
    let log = ctx.edge.access_log_on();
    let mut finish = Box::new(Finish {
        ctx: ctx.clone(),
        started: crate::clock::now(),
        started_wall: log.then(SystemTime::now),
        request_id: if log { id().to_string() } else { String::new() },
        client_ip: ctx.peer.ip(),
        method: head.parts.method.clone(),
        host: String::new(),
        path: if log { head.parts.uri.path().to_string() } else { String::new() },
        protocol: protocol(head.parts.version),
        status: 0,
        zone: None,
        origin: None,
        origin_duration: None,
        bytes_sent: 0,
        spliced_bytes: 0,
        completed: false,
        total_timeout: false,
        degraded: false,
        slot: None,
        cache: None,
        bot: None,
    });

    if let Some(rejection) = ctx.conn.rejection_for(index).filter(|_| !background) {
        ctx.edge.metrics.reject(rejection);
        let status = StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::BAD_REQUEST);
        return Begun::Page(Page::new(status, request_id_value, true, None, finish));
    }

    if !lines_forwardable(&head.lines) {
        std::mem::take(&mut head.lines).append_to(&mut head.parts.headers);
    }
    // The host we route by: the absolute-form target or :authority, else the Host header.
    // Worked out in a block: nothing of it but the zone stays in this future.
    let zone = {
        head.host = match head.parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => match head.parts.headers.get(HOST) {
                Some(v) => Some(v.clone()),
                None => head.lines.get_shared(Special::Host).and_then(|v| HeaderValue::from_maybe_shared(v).ok()),
            },
        };
        let raw_host = head.host.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        let host = normalize_host(raw_host);
        if log {
            finish.host = host.to_string();
        }
        if host.is_empty() {
            return Begun::Page(Page::new(StatusCode::BAD_REQUEST, request_id_value, false, None, finish));
        }
        let snap = ctx.edge.snapshot.load();
        let Some(zone_index) = snap.zone_index(&host) else {
            ctx.edge.metrics.unknown_host.fetch_add(1, Ordering::Relaxed);
            return Begun::Page(Page::new(StatusCode::NOT_FOUND, request_id_value, false, None, finish));
        };
        if let Some(sni) = &ctx.sni {
            if snap.zone_index(&normalize_host(sni)) != Some(zone_index) {
                ctx.edge.metrics.misdirected.fetch_add(1, Ordering::Relaxed);
                return Begun::Page(Page::new(StatusCode::MISDIRECTED_REQUEST, request_id_value, false, None, finish));
            }
        }
        let Some(zone) = snap.zone_for_worker(zone_index).cloned() else {
            return Begun::Page(Page::new(StatusCode::NOT_FOUND, request_id_value, false, None, finish));
        };
        zone
    };
    zone.budget.requests_in_flight.add(1);
    // A background revalidation is the edge's own request, not a client's.
    if !background && ctx.edge.analytics_on() {
        let fingerprint = ctx.ja4.as_deref().or_else(|| ctx.h2.get().map(|f| &**f));
        zone.stats.top.observe(ctx.peer.ip(), head.parts.uri.path(), fingerprint);
    }
    finish.zone = Some(zone.clone());

    // A challenge's answer meets the early-drop modules only (a flood of answers is counted
    // and dropped like any other): the rate limit or rule that challenged a client must not
    // refuse the answer that clears it.
    let answering = !background && head.parts.uri.path() == crate::challenge::PATH;
    // The security modules (early drop first), each behind its failure policy. Out of line: a
    // zone without modules pays one check, and the request path's code stays together.
    if !zone.modules.is_empty() && !background {
        if let Some(refused) = run_modules(ctx, &head, &zone, &mut finish, &request_id_value, answering) {
            return match refused {
                Refused::Page(status, retry_after) => {
                    Begun::Page(Page::new(status, request_id_value, false, retry_after, finish))
                }
                Refused::Reply(mut reply) => {
                    attach(&mut reply, finish);
                    Begun::Answered(reply)
                }
            };
        }
    }
    if answering {
        return Begun::Answered(Box::new(respond(answer_challenge(ctx, &head, &zone, id()), finish)));
    }
    if head.parts.method == Method::CONNECT {
        return Begun::Page(Page::new(StatusCode::METHOD_NOT_ALLOWED, request_id_value, false, None, finish));
    }
    // An origin that points back at the fleet would multiply every request without end.
    if loop_hops(&head) >= MAX_LOOP_HOPS {
        ctx.edge.metrics.loops.fetch_add(1, Ordering::Relaxed);
        return Begun::Page(Page::new(StatusCode::LOOP_DETECTED, request_id_value, true, None, finish));
    }

    // Refuse an oversized body before reading any of it.
    let declared_len =
        head.first(Special::ContentLength, CONTENT_LENGTH.as_str()).and_then(codec::parse_content_length);
    if declared_len.is_some_and(|n| n > zone.max_body_bytes) {
        zone.stats.body_too_large.fetch_add(1, Ordering::Relaxed);
        return Begun::Page(Page::new(StatusCode::PAYLOAD_TOO_LARGE, request_id_value, true, None, finish));
    }

    Begun::Going(Going { head, zone, finish, request_id_value, index, log })
}

/// A request on its way to the cache and the origins, after [`begin`].
pub async fn forward(ctx: Arc<ConnCtx>, going: Going) -> Answer {
    let Going { mut head, zone, mut finish, request_id_value, index, log } = going;
    let via = &zone.via;

    // The cache answers before the origins' capacity is asked for (crate::cache).
    let mut plan = head.revalidate.take();
    if let (Some(policy), None) = (zone.cache.as_ref(), &plan) {
        if ctx.edge.kill.off(crate::kill::Switch::Cache) {
            zone.stats.cache.count(CacheStatus::Bypass);
            finish.cache = Some(CacheStatus::Bypass);
        } else {
            match cache_lookup(&ctx, &head, &zone, policy).await {
                CacheStep::Answer(served, status, browser_ttl) => {
                    return cache_reply(served, status, browser_ttl, &zone, &request_id_value, finish).into();
                }
                CacheStep::Fetch(p) => plan = Some(p),
                CacheStep::Bypass => {
                    zone.stats.cache.count(CacheStatus::Bypass);
                    finish.cache = Some(CacheStatus::Bypass);
                }
            }
        }
    }

    // The origins' capacity: a slot, now or after waiting behind quieter sources (crate::fairq).
    if let Some(queue) = &zone.queue {
        match queue.acquire(ctx.peer.ip()).await {
            Ok(permit) => finish.slot = Some(permit),
            Err(_) => {
                return Answer::Page(Page::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    request_id_value,
                    false,
                    Some(1),
                    finish,
                ));
            }
        }
    }

    let is_upgrade = head.parts.version == Version::HTTP_11
        && connection_has(&head, "upgrade")
        && head.first(Special::Upgrade, UPGRADE.as_str()).is_some();
    let version = head.parts.version;
    let is_head = head.parts.method == Method::HEAD;
    let hash = if zone.pool.is_hash() {
        match &zone.hash_key {
            HashKey::ClientIp => hash_ip(ctx.peer.ip()),
            HashKey::Path => stable_hash(head.parts.uri.path().as_bytes()),
            HashKey::Uri => stable_hash(head.parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").as_bytes()),
            HashKey::Header(name) => stable_hash(head.values(name).next().unwrap_or(b"")),
            HashKey::Cookie(name) => stable_hash(cookie(head.values(COOKIE.as_str()), name).unwrap_or(b"")),
        }
    } else {
        0
    };

    // A connect failure means nothing was sent, so the body is still whole: idempotent requests
    // are retried on another origin with or without a body.
    let retryable = zone.retry_attempts > 0 && !is_upgrade && is_idempotent(&head.parts.method);
    // Built in a block: what moves into the request is not kept beside it while it is out.
    let forwarding_lines;
    let too_large;
    let mut pending = Some({
        let Head { parts, lines: mut client_lines, body, host, .. } = *head;
        let hyper::http::request::Parts { method, uri, mut headers, .. } = parts;
        if zone.h2_origin {
            std::mem::take(&mut client_lines).append_to(&mut headers);
        }
        strip_hop_by_hop(&mut headers, is_upgrade);
        headers.remove(EXPECT);
        let mut lines = forwarding(&mut headers, &ctx, host.as_ref(), version, via, &request_id_value);
        strip_request_lines(&mut client_lines, lines.host());
        if let Some(plan) = &plan {
            // The cache asks for the whole object, with its own validators if it has one.
            client_lines.retain(|_, name, _| !is_cache_conditional(name));
            for name in CACHE_CONDITIONALS {
                headers.remove(name);
            }
            if let Some((etag, last_modified)) = plan.validators() {
                if let Some(v) = etag {
                    headers.insert(hyper::header::IF_NONE_MATCH, v);
                }
                if let Some(v) = last_modified {
                    headers.insert(hyper::header::IF_MODIFIED_SINCE, v);
                }
            }
        }
        lines.client = client_lines;
        if zone.h2_origin {
            std::mem::take(&mut lines).into_map(&mut headers);
        }
        forwarding_lines = lines;
        let body_empty = http_body::Body::is_end_stream(&body);
        let request_body = if body_empty { RequestBody::empty() } else { RequestBody::new(body, zone.max_body_bytes) };
        too_large = request_body.too_large.clone();
        // Boxed: it waits here between attempts and rides in the sending future, in 8 bytes.
        let mut up = Box::new(Request::new(request_body));
        *up.method_mut() = method;
        // The client's target, until an origin is picked (its path and query go on).
        *up.uri_mut() = uri;
        *up.version_mut() = if zone.h2_origin { Version::HTTP_2 } else { Version::HTTP_11 };
        *up.headers_mut() = headers;
        up
    });

    let mut tried: u64 = 0;
    let mut attempt: u32 = 0;
    // Stale pooled connections that closed before our request was written: resent, bounded.
    let mut resends = 0u32;
    // What to answer if a retry finds no other origin to try.
    let mut last_error = StatusCode::BAD_GATEWAY;
    let result = loop {
        let Some(i) = zone.pool.pick(hash, tried) else {
            break Err(last_error);
        };
        let Some(origin) = zone.pool.get(i) else {
            break Err(StatusCode::BAD_GATEWAY);
        };
        if i < 64 {
            tried |= 1 << i;
        }
        let conn = match origin.conns.pooled(zone.conn_params) {
            Some(c) => c,
            None => match origin.conns.connect(zone.conn_params).await {
                Ok(c) => c,
                Err(e) => {
                    origin.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    zone.pool.record(i, Outcome::Failure);
                    tracing::debug!(origin = %origin.label, error = %e, "connect to origin failed");
                    last_error = if matches!(e, crate::upstream::ConnectError::Timeout) {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    if retryable
                        && attempt < zone.retry_attempts
                        && !ctx.edge.kill.off(crate::kill::Switch::Retries)
                        && zone.budget.try_acquire()
                    {
                        // The retry token is held only while deciding: a connect attempt is short.
                        zone.budget.release();
                        attempt += 1;
                        zone.stats.retries.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    break Err(last_error);
                }
            },
        };
        // Counted in flight until the response ends, or until this future is dropped.
        let lease = OriginLease::new(origin);
        // The origin's share of the time is only reported in the access log.
        let sent_at = log.then(crate::clock::now);
        // The request is taken out of `pending` only here, once a connection is in hand, and
        // moves straight into the sending future (it comes back in `Sent::NotSent`).
        let send = {
            let Some(mut up) = pending.take() else { break Err(StatusCode::BAD_GATEWAY) };
            let path_and_query = up.uri().path_and_query().cloned();
            *up.uri_mut() = if zone.h2_origin {
                origin.absolute_uri(path_and_query.as_ref())
            } else {
                origin_form(path_and_query.as_ref())
            };
            let deadline = crate::clock::now() + zone.response_header_timeout;
            tokio::time::timeout_at(deadline, origin.conns.send(conn, up, &forwarding_lines))
        };
        let outcome = send.await;
        match outcome {
            Ok(Sent::Response(resp, lines)) => {
                zone.pool.record(i, if resp.status().is_server_error() { Outcome::Failure } else { Outcome::Success });
                finish.origin = Some(i);
                lease.keep();
                finish.origin_duration = sent_at.map(|t| t.elapsed());
                break Ok((resp, lines));
            }
            Ok(Sent::NotSent(req, e)) if resends < 3 => {
                drop(lease);
                tracing::debug!(origin = %origin.label, error = %e, "pooled connection closed before the request was written; resending");
                resends += 1;
                if i < 64 {
                    tried &= !(1 << i);
                }
                pending = Some(req);
                continue;
            }
            Ok(Sent::NotSent(_, e)) | Ok(Sent::Failed(e)) => {
                drop(lease);
                if too_large.as_ref().is_some_and(|t| t.load(Ordering::Relaxed)) {
                    zone.stats.body_too_large.fetch_add(1, Ordering::Relaxed);
                    break Err(StatusCode::PAYLOAD_TOO_LARGE);
                }
                if let Some(rejection) = ctx.conn.body_error_for(index) {
                    ctx.edge.metrics.reject(rejection);
                    break Err(StatusCode::BAD_REQUEST);
                }
                zone.pool.record(i, Outcome::Failure);
                tracing::debug!(origin = %origin.label, error = %e, "origin request failed");
                break Err(StatusCode::BAD_GATEWAY);
            }
            Err(_) => {
                drop(lease);
                origin.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                zone.pool.record(i, Outcome::Failure);
                break Err(StatusCode::GATEWAY_TIMEOUT);
            }
        }
    };

    let (resp, mut origin_headers) = match result {
        Ok(r) if !r.0.status().is_server_error() || plan.is_none() => r,
        failed => {
            // stale-if-error: a stored copy answers for a failing origin.
            let stale = zone.cache.as_ref().and_then(|c| Some((c, plan.as_ref()?.stale_if_error(c)?)));
            if let Some((policy, object)) = stale {
                let browser_ttl = plan.as_ref().and_then(|p| p.browser_ttl);
                if let Some(served) = crate::cache::serve(policy, &object, &NoHeaders, is_head, browser_ttl) {
                    drop(failed);
                    return cache_reply(served, CacheStatus::Stale, browser_ttl, &zone, &request_id_value, finish)
                        .into();
                }
            }
            match failed {
                Ok(r) => r,
                Err(status) => {
                    if plan.is_some() {
                        zone.stats.cache.count(CacheStatus::Miss);
                        finish.cache = Some(CacheStatus::Miss);
                    }
                    let close = matches!(status, StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE);
                    return Answer::Page(Page::new(status, request_id_value, close, None, finish));
                }
            }
        }
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    // An upgrade the origin refused: close after this response. The guard stopped checking
    // this connection's bytes when it saw the upgrade request, so nothing else may follow.
    let refused_upgrade = is_upgrade && !switching;
    if switching {
        // The client connection's task takes the origin connection out of the body and
        // becomes the tunnel once this 101 is written.
        if !is_upgrade {
            return Answer::Page(Page::new(StatusCode::BAD_GATEWAY, request_id_value, true, None, finish));
        }
        ctx.conn.upgraded.store(true, Ordering::Relaxed);
    }

    let (mut parts, body) = resp.into_parts();
    if parts.headers.is_empty() {
        // The edge adds a few headers; the map goes back to the spares once the head is written.
        parts.headers = codec::spare_map();
    }
    let no_length = parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED;
    // An HTTP/1.1 origin's lines are edited where they are; an upgrade, or a `Connection`
    // header naming other headers, takes the map path below with every line.
    if switching || strip_origin_lines(&mut origin_headers, &mut parts.headers, no_length).is_none() {
        std::mem::take(&mut origin_headers).append_to(&mut parts.headers);
    }
    strip_hop_by_hop(&mut parts.headers, switching);
    if refused_upgrade {
        parts.headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if no_length {
        parts.headers.remove(CONTENT_LENGTH);
    }
    let mut recorder = None;
    if let (Some(plan), Some(policy)) = (plan, zone.cache.as_ref()) {
        match judge(policy, plan, &parts, &origin_headers) {
            Judged::Refreshed(object) => {
                let browser_ttl = None;
                drop(body);
                return match crate::cache::serve(policy, &object, &NoHeaders, is_head, browser_ttl) {
                    Some(served) => {
                        cache_reply(served, CacheStatus::Revalidated, browser_ttl, &zone, &request_id_value, finish)
                            .into()
                    }
                    None => Answer::Page(Page::new(StatusCode::BAD_GATEWAY, request_id_value, false, None, finish)),
                };
            }
            Judged::Record(mut r, status, browser_ttl) => {
                zone.stats.cache.count(status);
                finish.cache = Some(status);
                r.count_in(zone.stats.clone());
                recorder = Some(r);
                set_browser_ttl(&mut parts.headers, &mut origin_headers, browser_ttl);
                parts.headers.insert(CACHE_STATUS.clone(), cache_status_value(status, true));
            }
            Judged::NotStored(_, status, browser_ttl) => {
                zone.stats.cache.count(status);
                finish.cache = Some(status);
                set_browser_ttl(&mut parts.headers, &mut origin_headers, browser_ttl);
                parts.headers.insert(CACHE_STATUS.clone(), cache_status_value(status, false));
            }
        }
    }
    append_via(&mut parts.headers, parts.version, via);
    parts.headers.insert(X_REQUEST_ID.clone(), request_id_value.clone());
    parts.version = Version::HTTP_11;
    let mut body = EdgeBody::upstream(body, Some(finish.started + zone.total_timeout));
    if let Some(r) = recorder {
        body.record(r);
    }
    let resp = Response::from_parts(parts, body);
    let mut reply = respond(resp, finish);
    reply.origin_headers = origin_headers;
    Answer::Reply(reply)
}

/// Whether the values of a `Connection` header name no header to remove.
fn connection_plain<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values
        .all(|v| v.split(|b| *b == b',').map(<[u8]>::trim_ascii).all(|t| t.is_empty() || is_plain_connection_token(t)))
}

/// [`strip_hop_by_hop`] on an origin's header lines, which also drops the lines the edge sets
/// itself (`X-Request-Id`, and `Content-Length` with `no_length`) and moves `Via` lines into
/// `map`, where the edge's own entry joins them. None, with nothing changed, when a
/// `Connection` header names other headers to remove: the map path does that.
fn strip_origin_lines(lines: &mut RawHeaders, map: &mut HeaderMap, no_length: bool) -> Option<()> {
    if !connection_plain(lines.special(Special::Connection)) {
        return None;
    }
    lines.retain(|kind, _, value| match kind {
        Special::Via => {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                map.append(VIA, v);
            }
            false
        }
        Special::XRequestId => false,
        Special::ContentLength => !no_length,
        kind => !kind.is_hop_by_hop(),
    });
    Some(())
}

/// Whether a client's header lines can be forwarded as lines: none of them is a header the edge
/// replaces or merges (see [`forwarding`]), an upgrade, or a hop-by-hop header other than those
/// [`strip_request_lines`] drops, and no `Connection` header names other headers to remove. One
/// scan: most requests carry none of these.
pub fn lines_forwardable(lines: &RawHeaders) -> bool {
    lines.kinds().all(|(kind, _, value)| match kind {
        Special::Connection => connection_plain(std::iter::once(value)),
        Special::KeepAlive | Special::TransferEncoding => true,
        Special::Via
        | Special::XRequestId
        | Special::CdnLoop
        | Special::XForwardedFor
        | Special::XForwardedProto
        | Special::XForwardedHost
        | Special::Forwarded => false,
        kind => !kind.is_hop_by_hop(),
    })
}

/// [`strip_hop_by_hop`] and the removal of `Expect` on lines that passed [`lines_forwardable`]:
/// `Connection`, `Keep-Alive` and `Transfer-Encoding` (the writer frames the body itself) are
/// dropped, and `Host` with `drop_host` (the edge writes the host it routed by).
pub fn strip_request_lines(lines: &mut RawHeaders, drop_host: bool) {
    lines.retain(|kind, _, _| match kind {
        Special::Host => !drop_host,
        Special::Expect => false,
        kind => !kind.is_hop_by_hop(),
    });
}

fn origin_form(pq: Option<&PathAndQuery>) -> Uri {
    let mut parts = hyper::http::uri::Parts::default();
    parts.path_and_query = Some(pq.cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).unwrap_or_default()
}

/// How many times this request already passed through Palisade (`CDN-Loop` entries).
fn loop_hops(head: &Head) -> usize {
    head.special(Special::CdnLoop, CDN_LOOP.as_str())
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .filter(|entry| entry.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(CDN_LOOP_TOKEN)))
        .count()
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => stable_hash(&v4.octets()),
        IpAddr::V6(v6) => stable_hash(&v6.octets()),
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

fn connection_has(head: &Head, token: &str) -> bool {
    head.special(Special::Connection, CONNECTION.as_str())
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The value of cookie `name` in `values`, the values of a request's `Cookie` headers (an
/// HTTP/2 client may send each cookie in a header of its own).
fn cookie<'a>(mut values: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    values.find_map(|v| codec::cookie(v, name))
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1): the fixed set and any named in `Connection`.
/// With `upgrade` (an upgrade request, or the 101 answering it) the `Upgrade` header is the
/// point of the message: it is kept and `Connection: upgrade` is set for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names first: most messages carry none of these, and a scan is cheaper
    // than a hashed removal per name.
    let hop = |n: &HeaderName| Special::of(n.as_str().as_bytes()).is_hop_by_hop();
    if !headers.keys().any(hop) {
        return;
    }
    // The usual tokens (keep-alive, close, upgrade) name no header to remove: skipping them
    // keeps the common response free of an allocation.
    let mut named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !is_plain_connection_token(t))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        // Never let a client strip the headers that identify it to the origin.
        .filter(|n| *n != X_FORWARDED_FOR && *n != FORWARDED && *n != X_REQUEST_ID && *n != HOST)
        .collect();
    named.extend(headers.keys().filter(|n| hop(n) && *n != UPGRADE).cloned());
    for n in named {
        headers.remove(n);
    }
    if upgrade && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// `Connection` tokens that name no header to remove.
fn is_plain_connection_token(t: &[u8]) -> bool {
    [&b"keep-alive"[..], b"close", b"upgrade"].iter().any(|k| codec::eq_lowercase(t, k))
}

/// The headers the edge adds to a request for its origin: `Host` (the host routed by),
/// `X-Forwarded-For` / `-Proto` / `-Host`, `Forwarded` (RFC 7239), `Via`, `CDN-Loop` (RFC 8586)
/// and the request ID. Those the client sent under these names are taken out of `headers` (its
/// `Host` is left for the writer to skip: see [`Forwarding::host`]), and what it sent is carried
/// over where the header is a list. Rendered once per request as header lines (in the worker's
/// arena) and written after the client's headers, as nginx writes its `proxy_set_header`s:
/// no header map, and no value to count references of per header.
#[derive(Default)]
pub struct Forwarding {
    /// `host: ...` first (when there is a host), then the rest, each line ended by CRLF.
    text: bytes::Bytes,
    /// Where the `host` line ends in `text` (0: there is none).
    host_end: usize,
    /// The client's own header lines, when they are forwarded as lines (see [`handle`]):
    /// written after `Host`, before the request's header map.
    pub client: RawHeaders,
}

impl Forwarding {
    /// Whether the first line replaces the client's `Host`.
    pub fn host(&self) -> bool {
        self.host_end > 0
    }

    /// The `Host` line (empty without one), and the other lines.
    pub fn lines(&self) -> (&[u8], &[u8]) {
        self.text.split_at_checked(self.host_end).unwrap_or((&[], &self.text))
    }

    /// Puts the lines into `headers`, for an origin spoken to through a header map (HTTP/2).
    pub fn into_map(self, headers: &mut HeaderMap) {
        self.client.append_to(headers);
        let mut at = 0;
        for line in self.text.split(|b| *b == b'\n') {
            let start = at;
            at += line.len() + 1;
            let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
            let (Some(name), Some(value)) = (line.get(..colon), line.get(colon + 2..).map(<[u8]>::trim_ascii_end))
            else {
                continue;
            };
            let Ok(name) = HeaderName::from_bytes(name) else { continue };
            let value_at = start + colon + 2;
            let Ok(value) = HeaderValue::from_maybe_shared(self.text.slice(value_at..value_at + value.len())) else {
                continue;
            };
            if name == HOST {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
    }
}

fn forwarding(
    headers: &mut HeaderMap,
    ctx: &ConnCtx,
    host: Option<&HeaderValue>,
    version: Version,
    via: &Via,
    request_id: &HeaderValue,
) -> Forwarding {
    let proto = if ctx.tls { "https" } else { "http" };
    // One scan for the client's own: most requests carry none of them.
    let replaced = [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST, &FORWARDED, &VIA, &X_REQUEST_ID];
    let sent_any = headers.keys().any(|n| replaced.contains(&n));
    let earlier = |name: &HeaderName| {
        let values = sent_any.then(|| headers.get_all(name).iter());
        values.into_iter().flatten().map(HeaderValue::as_bytes)
    };
    let host = host.map_or(&b""[..], HeaderValue::as_bytes);
    let host_end = if host.is_empty() { 0 } else { "host: ".len() + host.len() + 2 };
    let earlier_len: usize = replaced.iter().map(|n| earlier(n).map(|v| v.len() + 2).sum::<usize>()).sum();
    let len = 400 + 3 * host.len() + earlier_len;
    let text = codec::arena_bytes(len, |out| {
        // The host we routed by is the host the origin sees (RFC 9112 3.2.2: an absolute-form
        // target or :authority wins over a received Host), so no request reaches one zone's
        // origin claiming to be for another.
        if !host.is_empty() {
            codec::write_line(out, b"host", host);
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        for v in earlier(&X_FORWARDED_FOR) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(ctx.peer_value.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(proto.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !host.is_empty() {
            codec::write_line(out, b"x-forwarded-host", host);
        }
        // RFC 7239: appended to what earlier proxies wrote; the host is quoted unless it is a token.
        out.extend_from_slice(b"forwarded: ");
        for v in earlier(&FORWARDED).take(1).filter(|v| v.is_ascii()) {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(ctx.forwarded_for.as_bytes());
        if !host.is_empty() {
            out.extend_from_slice(b";host=");
            if host.iter().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(b)) {
                out.extend_from_slice(host);
            } else {
                out.extend_from_slice(b"\"");
                out.extend(host.iter().filter(|b| **b != b'"' && **b != b'\\'));
                out.extend_from_slice(b"\"");
            }
        }
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(proto.as_bytes());
        out.extend_from_slice(b"\r\nvia: ");
        write_via(out, earlier(&VIA), version, via);
        out.extend_from_slice(b"\r\ncdn-loop: ");
        out.extend_from_slice(CDN_LOOP_TOKEN.as_bytes());
        out.extend_from_slice(b"\r\n");
        codec::write_line(out, b"x-request-id", request_id.as_bytes());
    });
    if sent_any {
        for name in replaced {
            headers.remove(name);
        }
    }
    Forwarding { text, host_end, client: RawHeaders::default() }
}

/// Our `Via` entry for a message received over `version`, after the `earlier` ones.
fn write_via<'a>(out: &mut BytesMut, earlier: impl Iterator<Item = &'a [u8]>, version: Version, via: &Via) {
    for v in earlier {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    let ours = match version {
        Version::HTTP_10 => 0,
        Version::HTTP_2 => 2,
        _ => 1,
    };
    if let Some(own) = via.by_version.get(ours) {
        out.extend_from_slice(own.as_bytes());
    }
}

fn append_via(headers: &mut HeaderMap, version: Version, via: &Via) {
    let earlier: Vec<&[u8]> = headers.get_all(VIA).iter().map(HeaderValue::as_bytes).collect();
    let len = 32 + earlier.iter().map(|v| v.len() + 2).sum::<usize>();
    if let Some(v) = arena_value(len, |out| write_via(out, earlier.into_iter(), version, via)) {
        headers.insert(VIA, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_including_connection_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret, x-forwarded-for"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(hyper::header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none() && h.get("te").is_none());
        assert!(h.get(CONNECTION).is_none());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4");
        assert_eq!(h.get("x-kept").unwrap(), "yes");
    }

    #[test]
    fn client_lines_are_forwarded_as_lines_unless_one_needs_the_map() {
        let plain = b"Host: a.test\r\nConnection: Keep-Alive, close\r\nKeep-Alive: 5\r\nExpect: 100-continue\r\n\
                      Transfer-Encoding: chunked\r\nX-Proxy: 1\r\nCookie: a=b\r\n";
        let mut lines = RawHeaders::parse_for_test(plain);
        assert!(lines_forwardable(&lines));
        strip_request_lines(&mut lines, true);
        assert_eq!(lines.iter().map(|(n, _)| n).collect::<Vec<_>>(), [&b"X-Proxy"[..], b"Cookie"]);
        let mut lines = RawHeaders::parse_for_test(plain);
        strip_request_lines(&mut lines, false);
        assert_eq!(lines.get("host"), Some(&b"a.test"[..]));
        // Each of these needs the map path: a header the edge replaces or merges, an upgrade, or
        // a Connection header naming another header.
        for line in [
            "X-Forwarded-For: 1.2.3.4",
            "x-forwarded-proto: https",
            "X-Forwarded-Host: b",
            "Forwarded: for=x",
            "Via: 1.1 p",
            "X-Request-Id: 7",
            "CDN-Loop: c",
            "Upgrade: websocket",
            "TE: trailers",
            "Trailer: x",
            "Proxy-Connection: keep-alive",
            "Proxy-Authorization: Basic x",
            "Proxy-Authenticate: Basic",
            "Connection: keep-alive, X-Secret",
        ] {
            let lines = RawHeaders::parse_for_test(format!("Host: a\r\n{line}\r\n").as_bytes());
            assert!(!lines_forwardable(&lines), "{line}");
        }
    }

    #[test]
    fn cookie_lookup() {
        let values = || [&b"x=0"[..], b"a=1; session=abc; b=2"].into_iter();
        assert_eq!(cookie(values(), "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(values(), "sess"), None);
    }
}
