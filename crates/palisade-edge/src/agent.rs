//! The node's link to the control plane: register, long-poll for the assigned config version,
//! fetch it, check it against its hash, validate and compile it here, and answer ACK or NACK
//! with every reason.
//!
//! The control plane is never on the request path. When it is unreachable the node keeps
//! serving what it runs (and its last-known-good copy on disk), says so once in the log, and
//! retries with a capped back-off. This module speaks the control plane's HTTP API; it does not
//! link the control plane's code (DESIGN.md: data flows one way).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::server::EdgeShared;

/// The control plane this node takes its config from.
#[derive(Clone)]
pub struct ControlLink {
    /// Base URL of the control plane's API, e.g. `http://10.0.0.5:9800`; or several,
    /// comma-separated: replicas of one control plane, tried in turn when one stops answering.
    pub url: String,
    /// This node's token (its name on the control plane comes with it).
    pub token: String,
    /// Location label reported at registration.
    pub city: String,
    /// How often the node reports its counters (the control plane's health gates read them).
    pub report_every: Duration,
    /// How often the node sends its traffic analytics ([`crate::analytics`]).
    pub analytics_every: Duration,
    /// The CA to trust for an `https://` control plane.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The token stays out of logs.
impl fmt::Debug for ControlLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlLink").field("url", &self.url).field("city", &self.city).finish_non_exhaustive()
    }
}

/// How long the control plane may hold a poll; the client waits a little longer.
const POLL_WAIT: Duration = Duration::from_secs(25);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Most synthetic requests a node sends when asked once.
const MAX_PROBES: u64 = 100;
/// Largest answer read from the control plane: a document at its limit, plus framing.
const MAX_ANSWER_BYTES: usize = palisade_config::limits::MAX_DOCUMENT_BYTES + 64 * 1024;

struct Assigned {
    number: u64,
    hash: String,
}

/// The client nodes (and the CLI) use towards the control plane: `http://`, or `https://` with
/// the control plane's CA (`--control-ca`), and nothing else.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// A client for the control plane; `ca`: a PEM file of the CA(s) to trust for `https://` URLs.
pub fn control_client(ca: Option<&std::path::Path>) -> Result<HttpClient, String> {
    let tls = match ca {
        None => None,
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for c in certs {
                roots.add(c).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        }
    };
    Ok(Client::builder(TokioExecutor::new()).build(Connector { tls }))
}

/// Connects to the control plane: plain TCP for `http://`, TLS (verified against the given CA)
/// for `https://`; `https://` without a CA is refused rather than trusted blindly.
#[derive(Clone)]
pub struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
}

/// The connection a [`Connector`] makes.
pub struct Conn(hyper_util::rt::TokioIo<Stream>);

enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for Conn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {m}"));
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => return Err(bad("only http:// and https://")),
            };
            let host = uri.host().ok_or_else(|| bad("no host"))?.trim_matches(|c| c == '[' || c == ']').to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let stream = if https {
                let tls = tls.ok_or_else(|| bad("https needs the control plane's CA (--control-ca)"))?;
                let name =
                    rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| bad("not a server name"))?;
                Stream::Tls(Box::new(tls.connect(name, tcp).await?))
            } else {
                Stream::Plain(tcp)
            };
            Ok(Conn(hyper_util::rt::TokioIo::new(stream)))
        })
    }
}

/// What every conversation with the control plane needs: cheap to clone, one per loop.
#[derive(Clone)]
struct Channel {
    client: HttpClient,
    link: ControlLink,
    shared: Arc<EdgeShared>,
    /// Which of the link's URLs the loops use; moved on when it stops answering.
    current: Arc<std::sync::atomic::AtomicUsize>,
}

/// The assignment watch, and the state only it keeps.
struct Watch {
    ch: Channel,
    registered: bool,
    /// The control-plane version this node last answered for.
    known: Option<u64>,
}

/// Runs until the node shuts down.
pub async fn run(shared: Arc<EdgeShared>, link: ControlLink) {
    let mut shutdown = shared.shutdown.subscribe();
    let client = match control_client(link.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot reach the control plane: its CA is unusable; serving what this node has");
            return;
        }
    };
    let ch = Channel { client, link, shared, current: Arc::default() };
    tokio::spawn(ch.clone().report_loop());
    tokio::spawn(ch.clone().analytics_loop());
    tokio::spawn(ch.clone().kill_loop());
    tokio::spawn(ch.clone().purge_loop());
    let mut agent = Watch { ch, registered: false, known: None };
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        let result = tokio::select! {
            r = agent.step() => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(control = %agent.ch.link.url, "control plane reachable again");
                    failing = false;
                }
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(control = %agent.ch.link.url, error = %e, "control plane unreachable; serving the running config");
                    failing = true;
                }
                // It may have restarted with no memory of this process: say hello again.
                agent.registered = false;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Watch {
    /// One round: (register,) wait for an assignment, and act on it.
    async fn step(&mut self) -> Result<(), String> {
        if !self.registered {
            let hello = json!({ "city": self.ch.link.city, "software": env!("CARGO_PKG_VERSION") });
            let (s, b) = self.ch.call(Method::POST, "/v1/nodes/register", Some(hello), Duration::from_secs(10)).await?;
            if s != StatusCode::OK {
                return Err(format!("register: {s} {}", text(&b)));
            }
            tracing::info!(control = %self.ch.link.url, "registered with the control plane");
            self.registered = true;
        }
        let known = self.known.map(|n| format!("&known={n}")).unwrap_or_default();
        let path = format!("/v1/nodes/self/assignment?wait_ms={}{known}", POLL_WAIT.as_millis());
        let (s, b) = self.ch.call(Method::GET, &path, None, POLL_WAIT + Duration::from_secs(10)).await?;
        match s {
            StatusCode::NO_CONTENT => return Ok(()),
            StatusCode::OK => {}
            StatusCode::CONFLICT => {
                self.registered = false;
                return Ok(());
            }
            other => return Err(format!("assignment: {other} {}", text(&b))),
        }
        #[derive(serde::Deserialize)]
        struct Assignment {
            number: Option<u64>,
            #[serde(default)]
            hash: String,
        }
        let a: Assignment = serde_json::from_slice(&b).map_err(|e| format!("assignment: {e}"))?;
        let Some(number) = a.number else {
            // Rolled back to before any version: the boot config file again.
            let outcome = self.ch.shared.reload().await;
            match &outcome {
                Ok(applied) => tracing::info!(config_version = applied.version, "back on the boot config"),
                Err(problems) => {
                    tracing::error!(problems = ?problems, "cannot go back to the boot config; still serving the running one")
                }
            }
            self.ch.answer(None, outcome.map(|_| ())).await?;
            self.known = None;
            return Ok(());
        };
        let a = Assigned { number, hash: a.hash };
        let (s, content) = self
            .ch
            .call(Method::GET, &format!("/v1/versions/{}/content", a.number), None, Duration::from_secs(30))
            .await?;
        if s != StatusCode::OK {
            return Err(format!("version {}: {s} {}", a.number, text(&content)));
        }
        let hash_ok = palisade_config::content_hash(&content) == a.hash;
        let missing = if hash_ok { self.ch.fetch_artifacts(&content).await? } else { Vec::new() };
        let outcome = if !hash_ok {
            Err(vec![palisade_config::Problem {
                path: "(document)".into(),
                message: format!("content does not match the assigned hash {}", a.hash),
            }])
        } else if !missing.is_empty() {
            self.ch.shared.metrics.reloads_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(version = a.number, problems = %palisade_config::render_problems(&missing), "artifacts refused; still serving the running version");
            Err(missing)
        } else {
            let source = format!("control plane v{}", a.number);
            self.ch.shared.apply_exclusive(&content, &source).await
        };
        if let Ok(applied) = &outcome {
            tracing::info!(version = a.number, config_version = applied.version, "running the assigned version");
        }
        self.ch.answer(Some(a.number), outcome.map(|_| ())).await?;
        // Answered: a refused version is not fetched again until the assignment changes.
        self.known = Some(a.number);
        Ok(())
    }
}

/// Why a call to the control plane gave no answer.
enum CallError {
    /// The answer is longer than the caller's limit.
    TooLarge,
    Transport(String),
}

impl From<String> for CallError {
    fn from(e: String) -> Self {
        CallError::Transport(e)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::TooLarge => f.write_str("the answer is over the size limit"),
            CallError::Transport(e) => f.write_str(e),
        }
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b.get(..b.len().min(512)).unwrap_or(b)).into_owned()
}

impl Channel {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        within: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        self.call_limited(method, path, body, within, MAX_ANSWER_BYTES).await.map_err(|e| e.to_string())
    }

    /// Every artifact `content` pins that this node lacks, fetched by hash into its artifact
    /// store. Each is read only up to its kind's size limit and checked against its hash; what
    /// fails is a problem for the NACK. `Err`: the control plane could not be reached.
    async fn fetch_artifacts(&self, content: &[u8]) -> Result<Vec<palisade_config::Problem>, String> {
        // A document that does not parse is refused by the apply that follows, with its reasons.
        let Ok(doc) = palisade_config::parse(content) else { return Ok(Vec::new()) };
        let mut problems = Vec::new();
        for (i, r) in doc.artifacts.iter().enumerate() {
            if !palisade_config::artifact::is_sha256(&r.sha256) || self.shared.artifacts.has(&r.sha256) {
                continue;
            }
            let at = |message: String| palisade_config::Problem {
                path: format!("artifacts[{i}] ({} {})", r.kind, r.name),
                message,
            };
            let limit = r.kind.max_bytes();
            let path = format!("/v1/artifacts/{}/content", r.sha256);
            let (status, bytes) =
                match self.call_limited(Method::GET, &path, None, Duration::from_secs(60), limit).await {
                    Ok(answer) => answer,
                    Err(CallError::TooLarge) => {
                        problems.push(at(format!("over the {} limit of {limit} bytes; not read further", r.kind)));
                        continue;
                    }
                    Err(CallError::Transport(e)) => return Err(e),
                };
            if status != StatusCode::OK {
                problems.push(at(format!("the control plane answered {status}: {}", text(&bytes))));
                continue;
            }
            let got = palisade_config::content_hash(&bytes);
            if got != r.sha256 {
                problems.push(at(format!("fetched bytes have sha256 {got}; the document pins {}", r.sha256)));
                continue;
            }
            if let Err(e) = self.shared.artifacts.put(&r.sha256, &bytes) {
                problems.push(at(format!("cannot keep it on this node: {e}")));
            }
        }
        Ok(problems)
    }

    async fn call_limited(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        within: Duration,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let urls: Vec<&str> = self.link.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let at = self.current.load(std::sync::atomic::Ordering::Relaxed) % urls.len().max(1);
        let base = urls.get(at).copied().unwrap_or_default();
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let result = self.call_url(&url, method, body, within, limit).await;
        if let Err(CallError::Transport(_)) = &result {
            // This replica is not answering: the next call goes to the next one.
            self.current.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn call_url(
        &self,
        url: &str,
        method: Method,
        body: Option<Value>,
        within: Duration,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let body = match body {
            Some(v) => Full::new(Bytes::from(serde_json::to_vec(&v).map_err(|e| e.to_string())?)),
            None => Full::new(Bytes::new()),
        };
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {}", self.link.token))
            .header("content-type", "application/json")
            .body(body)
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = tokio::time::timeout(within, self.client.request(req))
            .await
            .map_err(|_| format!("{url}: no answer within {within:?}"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = tokio::time::timeout(within, Limited::new(resp.into_body(), limit).collect())
            .await
            .map_err(|_| format!("{url}: body not complete within {within:?}"))?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    CallError::TooLarge
                } else {
                    CallError::Transport(format!("{url}: {e}"))
                }
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// A long poll of its own (`path` with `param=KNOWN` once something is known), apart from
    /// config so that what it carries never waits behind a fetch or a compile. Each answer
    /// goes to `apply`, which says what is now known and what to acknowledge (posted to
    /// `ack_path`). Unreachable or confused: nothing changes; ask again shortly.
    async fn poll_loop<T: serde::de::DeserializeOwned>(
        self,
        path: &str,
        param: &str,
        ack_path: &str,
        mut apply: impl FnMut(T, Option<u64>) -> (u64, Option<Value>) + Send,
    ) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut known: Option<u64> = None;
        loop {
            let since = known.map(|g| format!("&{param}={g}")).unwrap_or_default();
            let url = format!("{path}?wait_ms={}{since}", POLL_WAIT.as_millis());
            let polled = tokio::select! {
                r = self.call(Method::GET, &url, None, POLL_WAIT + Duration::from_secs(10)) => r,
                _ = shutdown.changed() => return,
            };
            match polled.map(|(s, b)| (s, serde_json::from_slice::<T>(&b))) {
                Ok((StatusCode::OK, Ok(answer))) => {
                    let (now, ack) = apply(answer, known);
                    known = Some(now);
                    if let Some(ack) = ack {
                        let _ = self.call(Method::POST, ack_path, Some(ack), Duration::from_secs(5)).await;
                    }
                }
                Ok((StatusCode::NO_CONTENT, _)) => {}
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// The kill switches: applied as soon as they arrive, then acknowledged.
    async fn kill_loop(self) {
        #[derive(serde::Deserialize)]
        struct Switches {
            generation: u64,
            off: Vec<String>,
        }
        let kill = self.shared.clone();
        self.poll_loop(
            "/v1/nodes/self/killswitches",
            "known",
            "/v1/nodes/self/killswitches/ack",
            move |sw: Switches, _| {
                let unknown = kill.kill.set(&sw.off);
                if sw.off.is_empty() {
                    tracing::info!(generation = sw.generation, "kill switches: none off");
                } else {
                    tracing::warn!(off = ?sw.off, generation = sw.generation, "kill switches applied");
                }
                (sw.generation, Some(json!({ "generation": sw.generation, "unknown": unknown })))
            },
        )
        .await
    }

    /// Fleet-wide cache purges: applied as they arrive, then acknowledged. A node that has
    /// just started has nothing in memory to purge: it asks only where the feed is. Told that
    /// purges it missed are no longer kept, it purges everything.
    async fn purge_loop(self) {
        #[derive(serde::Deserialize)]
        struct Entry {
            seq: u64,
            request: crate::cache::PurgeRequest,
        }
        #[derive(serde::Deserialize)]
        struct Feed {
            latest: u64,
            purges: Vec<Entry>,
            complete: bool,
        }
        let shared = self.shared.clone();
        self.poll_loop("/v1/nodes/self/purges", "after", "/v1/nodes/self/purges/ack", move |feed: Feed, after| {
            let cache = shared.snapshot.load().cache.clone();
            if !feed.complete {
                tracing::warn!("cache purges were missed and are no longer kept: purging everything");
                let everything = crate::cache::PurgeRequest { purge_everything: true, ..Default::default() };
                if let Ok((_, files)) = cache.purge_request(&everything) {
                    tokio::spawn(crate::cache::disk::delete_files(files));
                }
            }
            for p in &feed.purges {
                match cache.purge_request(&p.request) {
                    Ok((_, files)) => {
                        // Off this loop; the acknowledgement may go before the files do.
                        tokio::spawn(crate::cache::disk::delete_files(files));
                        tracing::info!(seq = p.seq, purge = %p.request.summary(), "cache purge applied")
                    }
                    Err(e) => tracing::warn!(seq = p.seq, error = %e, "cache purge refused"),
                }
            }
            // A long backlog comes in parts: go on from the last one applied.
            let upto = feed.purges.last().map_or(feed.latest, |p| p.seq);
            let applied = after.is_some() && (!feed.purges.is_empty() || !feed.complete);
            (upto, applied.then(|| json!({ "seq": upto })))
        })
        .await
    }

    /// Synthetic requests through this node's own listener, spread over its zones (the first
    /// exact hostname of each, path `/`): a rollout stage with no traffic asks for them, and they
    /// are counted and judged like any request.
    async fn probe(&self, n: u64) {
        let Some(addr) = self.shared.bound_http.get().copied() else { return };
        let hosts: Vec<String> = self
            .shared
            .snapshot
            .load()
            .config
            .doc
            .zones
            .iter()
            .filter_map(|z| z.hostnames.iter().find(|h| !h.starts_with('*')).cloned())
            .collect();
        if hosts.is_empty() {
            return;
        }
        tracing::info!(requests = n, "synthetic requests for the control plane's health gate");
        for i in 0..n {
            let Some(host) = hosts.get(usize::try_from(i).unwrap_or(0) % hosts.len()) else { return };
            let Ok(req) = Request::get(format!("http://{addr}/"))
                .header("host", host.as_str())
                .header("user-agent", "palisade-probe")
                .body(Full::new(Bytes::new()))
            else {
                return;
            };
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), self.client.request(req)).await {
                let _ = resp.into_body().collect().await;
            }
        }
    }

    /// ACK (`Ok`) or NACK with every problem, for a version (`None`: the boot config).
    async fn answer(
        &self,
        version: Option<u64>,
        outcome: Result<(), Vec<palisade_config::Problem>>,
    ) -> Result<(), String> {
        let body = match outcome {
            Ok(()) => json!({ "version": version, "ok": true }),
            Err(problems) => {
                let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                json!({ "version": version, "ok": false, "problems": problems })
            }
        };
        let (s, b) = self.call(Method::POST, "/v1/nodes/self/answer", Some(body), Duration::from_secs(10)).await?;
        if !s.is_success() {
            return Err(format!("answer: {s} {}", text(&b)));
        }
        Ok(())
    }

    /// Traffic analytics every `analytics_every`, until shutdown. An interval the control plane
    /// did not take is added to the next (up to an hour of them), so a short outage of the
    /// control plane leaves no hole in the charts.
    async fn analytics_loop(self) {
        use palisade_config::analytics::{add_counts, merge_top, Report, TOP_K};
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut every = tokio::time::interval(self.link.analytics_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut before = self.shared.metrics.zone_counts();
        let mut start = crate::clock::unix_now();
        let mut pending: Option<Report> = None;
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = crate::clock::unix_now();
            let counts = self.shared.metrics.zone_counts();
            let top = self.shared.metrics.take_top();
            let mut report =
                crate::analytics::interval(start, now.saturating_sub(start).max(1), &mut before, counts, top);
            start = now;
            if let Some(old) = pending.take().filter(|old| now.saturating_sub(old.start) < 3600) {
                for (zone, z) in old.zones {
                    let into = report.zones.entry(zone).or_default();
                    add_counts(&mut into.counts, &z.counts);
                    into.top.ips = merge_top([into.top.ips.as_slice(), z.top.ips.as_slice()], TOP_K);
                    into.top.paths = merge_top([into.top.paths.as_slice(), z.top.paths.as_slice()], TOP_K);
                    into.top.fingerprints =
                        merge_top([into.top.fingerprints.as_slice(), z.top.fingerprints.as_slice()], TOP_K);
                }
                report.seconds = now.saturating_sub(old.start).max(1);
                report.start = old.start;
            }
            for (zone, z) in report.zones.iter_mut() {
                z.mitigations = self.shared.metrics.zone(zone).ddos_active.load(std::sync::atomic::Ordering::Relaxed);
            }
            if report.zones.is_empty() {
                continue;
            }
            let body = match serde_json::to_value(&report) {
                Ok(b) => b,
                Err(_) => continue,
            };
            match self.call(Method::POST, "/v1/nodes/self/analytics", Some(body), Duration::from_secs(5)).await {
                Ok((s, _)) if s.is_success() => {}
                Ok((s, b)) => {
                    tracing::debug!(status = %s, body = %text(&b), "analytics refused");
                    if s.is_server_error() {
                        pending = Some(report);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "analytics not delivered");
                    pending = Some(report);
                }
            }
        }
    }

    /// Cumulative responses and 5xx every `report_every`, until shutdown. Failures are quiet:
    /// the watch loop already says when the control plane is gone.
    async fn report_loop(self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut every = tokio::time::interval(self.link.report_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            let (requests, errors) = self.shared.metrics.response_totals();
            let (le_ms, latency) = self.shared.metrics.latency_buckets();
            let hash = self.shared.snapshot.load().hash().to_string();
            let modules = self.shared.metrics.module_totals();
            let learning = crate::lock(&self.shared.metrics.bot_learning).clone();
            let bot = (learning.human + learning.bot > 0).then_some(learning);
            let body = json!({ "requests": requests, "errors": errors, "latency_le_ms": le_ms, "latency": latency, "hash": hash, "modules": modules, "bot": bot });
            match self.call(Method::POST, "/v1/nodes/self/report", Some(body), Duration::from_secs(5)).await {
                Ok((StatusCode::OK, b)) => {
                    let asked = serde_json::from_slice::<Value>(&b).ok().and_then(|v| v.get("probe")?.as_u64());
                    if let Some(n) = asked {
                        self.probe(n.min(MAX_PROBES)).await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "report not delivered"),
            }
        }
    }
}
