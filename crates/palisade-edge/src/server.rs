//! The node: listeners, connection admission, the connection per client (HTTP/1.1 by
//! [`crate::h1`], HTTP/2 by hyper), reload and graceful shutdown.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_config::{limits::MAX_DOCUMENT_BYTES, render_problems, Problem};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use bytes::Bytes;

use crate::access_log::AccessLog;
use crate::body::ClientBody;
use crate::codec::{Io, RawHeaders, Rewind};
use crate::guard::{ConnShared, Guarded};
use crate::metrics::Metrics;
use crate::proxy::{self, ConnCtx};
use crate::snapshot::{compile, Snapshot};
use crate::{admin, h1, health, lkg, tls};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no usable configuration:\n{}", render_problems(.0))]
    Config(Vec<Problem>),
    #[error("{0}")]
    Io(String),
}

/// How the node finds its configuration.
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    /// The config file; re-read on SIGHUP and `POST /reload`.
    pub config_path: Option<PathBuf>,
    /// Where the last-known-good copy is kept.
    pub state_dir: Option<PathBuf>,
    /// A last-known-good file to boot from when `config_path` is missing or bad.
    pub lkg_file: Option<PathBuf>,
    /// Data-plane worker threads; default: one per available core.
    pub workers: Option<usize>,
    /// The control plane to take config versions from (the file stays the boot config).
    pub control: Option<crate::agent::ControlLink>,
    /// This node's own listeners: they win over `[listen]` in every config it loads, so one
    /// fleet-wide document serves nodes that listen on different addresses.
    pub listen: ListenOverride,
}

/// Node-local listener addresses (`palisade edge --http/--https/--admin`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenOverride {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl EdgeOptions {
    /// bytes -> validated config, with this node's listeners in place of the document's.
    pub fn load(&self, bytes: &[u8]) -> Result<palisade_config::ValidConfig, palisade_config::ConfigError> {
        let mut valid = palisade_config::load(bytes)?;
        let o = &self.listen;
        valid.http = o.http.or(valid.http);
        valid.https = o.https.or(valid.https);
        valid.admin = o.admin.or(valid.admin);
        Ok(valid)
    }
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Index of the data-plane worker running the current request (0 off the workers).
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

/// State shared by every connection and the admin API.
pub struct EdgeShared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    pub options: EdgeOptions,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    active: AtomicUsize,
    drained: Notify,
    reload_lock: tokio::sync::Mutex<()>,
    pub shutdown: watch::Sender<bool>,
    /// Switched by the control plane's fast path; read by the data plane.
    pub kill: crate::kill::KillSwitches,
    /// Versions this node crashed on; the marker of a clean exit.
    pub crash_guard: crate::crashloop::Guard,
    /// The HTTP listener as bound (synthetic requests go through it).
    pub bound_http: std::sync::OnceLock<SocketAddr>,
    /// The artifacts this node has (fetched by hash, or read from `file`).
    pub artifacts: crate::artifacts::Store,
    /// Signs challenge tokens and clearance cookies ([`crate::challenge`]).
    pub challenge_keys: crate::challenge::Keys,
    /// Sources whose new connections are dropped at accept ([`crate::ddos::DropList`]).
    pub drops: crate::ddos::DropList,
    workers: usize,
}

/// Result of a successful reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub version: u64,
    pub hash: String,
    pub changed: bool,
}

/// Reads a config file with the document size limit applied before the bytes are in memory.
pub fn read_config_file(path: &std::path::Path) -> Result<Vec<u8>, Problem> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Problem { path: "(file)".into(), message: format!("cannot open {}: {e}", path.display()) })?;
    let mut buf = Vec::new();
    (&mut f)
        .take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Problem { path: "(file)".into(), message: format!("cannot read {}: {e}", path.display()) })?;
    Ok(buf)
}

impl EdgeShared {
    /// bytes -> parsed -> validated -> compiled -> swapped in. A refused document leaves the
    /// running snapshot untouched and returns every reason.
    pub fn apply(&self, bytes: &[u8], source: &str) -> Result<Applied, Vec<Problem>> {
        let result = self.apply_inner(bytes, source);
        match &result {
            Ok(a) if a.changed => {
                self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(version = a.version, hash = %a.hash, source, "config applied");
            }
            Ok(_) => {
                self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(problems) => {
                self.metrics.reloads_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source, problems = %render_problems(problems), "config rejected; still serving the running version");
            }
        }
        result
    }

    fn apply_inner(&self, bytes: &[u8], source: &str) -> Result<Applied, Vec<Problem>> {
        let valid = self.options.load(bytes).map_err(|e| e.problems())?;
        // The content hash comes with the validated document: no second pass over the bytes.
        if self.crash_guard.is_quarantined(&valid.hash) {
            return Err(vec![Problem {
                path: "(document)".into(),
                message: format!(
                    "quarantined on this node: it crashed {} times within {} s of activating it",
                    crate::crashloop::CRASHES,
                    crate::crashloop::WINDOW_MS / 1000
                ),
            }]);
        }
        let current = self.snapshot.load_full();
        let mut problems = Vec::new();
        for (name, new, old) in [
            ("listen.http", valid.http, current.config.http),
            ("listen.https", valid.https, current.config.https),
            ("listen.admin", valid.admin, current.config.admin),
        ] {
            if new != old {
                problems.push(Problem {
                    path: name.into(),
                    message: format!("listeners change only on restart (running: {old:?}, new: {new:?})"),
                });
            }
        }
        if valid.doc.access_log != current.config.doc.access_log {
            problems.push(Problem {
                path: "access_log".into(),
                message: "the access log target changes only on restart".into(),
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if valid.hash == current.hash() {
            return Ok(Applied { version: current.version(), hash: valid.hash, changed: false });
        }
        let snapshot = Arc::new(compile(valid, Some(&current), &self.metrics, source, self.workers, &self.artifacts)?);
        let applied = Applied { version: snapshot.version(), hash: snapshot.hash().to_string(), changed: true };
        // What is kept: the artifacts of the new last-known-good and of the one it replaces
        // (now previous-known-good, where a crash loop sends the node).
        let keep = snapshot.artifacts.values().chain(current.artifacts.values()).map(|l| l.sha256.as_str()).collect();
        self.artifacts.retain(&keep);
        self.install(snapshot.clone(), bytes);
        Ok(applied)
    }

    fn install(&self, snapshot: Arc<Snapshot>, bytes: &[u8]) {
        for z in &snapshot.zones {
            health::spawn(z);
        }
        let version = snapshot.version();
        let hash = snapshot.hash().to_string();
        self.snapshot.store(snapshot);
        // After the swap: a refresh by the once-a-second task that started before it reads the new one too.
        self.drops.refresh(&self.snapshot.load());
        if let Some(dir) = &self.options.state_dir {
            // Before the file is replaced: the one it replaces becomes the previous known-good.
            self.crash_guard.activated(&hash, &lkg::path_in(dir));
            if let Err(e) = lkg::write(&lkg::path_in(dir), bytes, version) {
                tracing::error!(error = %e, "could not write the last-known-good file");
            }
        }
    }

    /// Whether heavy hitters are counted for the control plane's analytics: linked to one, and
    /// not switched off.
    pub fn analytics_on(&self) -> bool {
        self.options.control.is_some() && !self.kill.off(crate::kill::Switch::Analytics)
    }

    /// Whether requests are written to the access log: configured, and not switched off.
    pub fn access_log_on(&self) -> bool {
        self.access_log.enabled() && !self.kill.off(crate::kill::Switch::AccessLog)
    }

    /// [`Self::apply`], one change at a time with reloads from the file.
    pub async fn apply_exclusive(&self, bytes: &[u8], source: &str) -> Result<Applied, Vec<Problem>> {
        let _one_at_a_time = self.reload_lock.lock().await;
        self.apply(bytes, source)
    }

    /// Re-reads the config file (SIGHUP, `POST /reload`).
    pub async fn reload(&self) -> Result<Applied, Vec<Problem>> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let Some(path) = self.options.config_path.clone() else {
            return Err(vec![Problem {
                path: "(file)".into(),
                message: "this node was started without --config".into(),
            }]);
        };
        let bytes = match tokio::task::spawn_blocking(move || read_config_file(&path)).await {
            Ok(Ok(b)) => b,
            Ok(Err(p)) => {
                self.metrics.reloads_rejected.fetch_add(1, Ordering::Relaxed);
                return Err(vec![p]);
            }
            Err(e) => return Err(vec![Problem { path: "(file)".into(), message: e.to_string() }]),
        };
        let source = self.options.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        self.apply(&bytes, &source)
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, &'static str> {
        let limits = &self.snapshot.load().config.doc.limits;
        let (max_total, max_ip) = (limits.max_connections, limits.max_connections_per_ip);
        if self.active.load(Ordering::Relaxed) as u64 >= max_total {
            self.metrics.connections_rejected_total_limit.fetch_add(1, Ordering::Relaxed);
            return Err("max_connections");
        }
        {
            let mut map = crate::lock(&self.per_ip);
            let addresses = map.len() as u64;
            let n = map.entry(ip).or_insert(0);
            if u64::from(*n) >= max_ip {
                self.metrics.connections_rejected_ip_limit.fetch_add(1, Ordering::Relaxed);
                return Err("max_connections_per_ip");
            }
            // The last tenth of the node's connections is kept for addresses holding fewer than
            // the average: many connections from a few addresses (each under its own limit)
            // cannot take the last places from everyone else. A new address always gets in
            // while there is room.
            let active = self.active.load(Ordering::Relaxed) as u64;
            if active.saturating_mul(10) >= max_total.saturating_mul(9)
                && u64::from(*n) >= (active / addresses.max(1)).max(1)
            {
                self.metrics.connections_rejected_fair_share.fetch_add(1, Ordering::Relaxed);
                return Err("fair_share");
            }
            *n += 1;
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_active.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnPermit { edge: self.clone(), ip })
    }
}

/// One admitted connection; releases its slots when dropped.
struct ConnPermit {
    edge: Arc<EdgeShared>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        {
            let mut map = crate::lock(&self.edge.per_ip);
            if let Some(n) = map.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
        self.edge.metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
        if self.edge.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.edge.drained.notify_waiters();
        }
    }
}

/// Addresses actually bound (a config may ask for port 0).
#[derive(Debug, Clone)]
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A started node.
pub struct Edge {
    pub shared: Arc<EdgeShared>,
    pub bound: Bound,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where a node may boot from, in order of preference.
enum Source {
    File(PathBuf),
    LastKnownGood(PathBuf),
    Previous(PathBuf),
}

/// Finds the first usable configuration. A stand-alone node prefers its config file, then its
/// last-known-good copy, then the one before it. A node under a control plane prefers what the
/// fleet last gave it (last-known-good, then the one before it) to its bootstrap file. A version
/// this node quarantined is never booted.
fn initial_config(
    opts: &EdgeOptions,
    metrics: &Metrics,
    workers: usize,
    guard: &crate::crashloop::Guard,
    store: &crate::artifacts::Store,
) -> Result<(Snapshot, Vec<u8>), StartError> {
    let lkg_path = opts.lkg_file.clone().or_else(|| opts.state_dir.as_deref().map(lkg::path_in));
    let file = opts.config_path.clone().map(Source::File);
    let last = lkg_path.map(Source::LastKnownGood);
    let previous = opts.state_dir.as_deref().map(|d| Source::Previous(crate::crashloop::previous_path_in(d)));
    let sources: Vec<Source> = if opts.control.is_some() {
        last.into_iter().chain(previous).chain(file).collect()
    } else {
        file.into_iter().chain(last).chain(previous).collect()
    };
    let mut problems = Vec::new();
    for source in sources {
        // `label` names the source in /config and the logs (as before: the file's path, or
        // "last-known-good"); problems name the file.
        let (label, path, read) = match &source {
            Source::File(p) => (p.display().to_string(), p, read_config_file(p).map_err(|p| vec![p])),
            Source::LastKnownGood(p) | Source::Previous(p) => {
                let previous = matches!(source, Source::Previous(_));
                if previous && !p.exists() {
                    continue;
                }
                let read = lkg::read(p).map_err(|e| vec![Problem { path: p.display().to_string(), message: e }]);
                let label = if previous { "previous-known-good" } else { "last-known-good" };
                (label.to_string(), p, read)
            }
        };
        let bytes = match read {
            Ok(b) => b,
            Err(p) => {
                problems.extend(p);
                continue;
            }
        };
        if guard.is_quarantined(&palisade_config::content_hash(&bytes)) {
            problems.push(Problem {
                path: path.display().to_string(),
                message: "quarantined on this node (crash loop); skipped".into(),
            });
            continue;
        }
        let compiled = opts
            .load(&bytes)
            .map_err(|e| e.problems())
            .and_then(|valid| compile(valid, None, metrics, &label, workers, store));
        match compiled {
            Ok(s) => {
                if !matches!(source, Source::File(_)) {
                    tracing::warn!(file = %path.display(), version = s.version(), "serving from {label}");
                }
                return Ok((s, bytes));
            }
            Err(p) => {
                tracing::error!(source = %label, problems = %render_problems(&p), "unusable; trying the next source");
                problems.extend(p);
            }
        }
    }
    if problems.is_empty() {
        problems
            .push(Problem { path: "(options)".into(), message: "give --config FILE or a last-known-good file".into() });
    }
    Err(StartError::Config(problems))
}

impl Edge {
    /// Loads the configuration, binds the listeners and starts serving: the admin API, health
    /// checks and signals on the calling runtime; the data plane on one thread per core, each
    /// with a current-thread runtime, its own SO_REUSEPORT listeners and its own origin
    /// connection pools, so a request never hops threads (the nginx worker model).
    pub async fn start(options: EdgeOptions) -> Result<Edge, StartError> {
        let workers = options
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .clamp(1, 256);
        crate::modules::install_panic_hook();
        let metrics = Arc::new(Metrics::default());
        let crash_guard = crate::crashloop::Guard::open(options.state_dir.as_deref());
        let artifacts = crate::artifacts::Store::new(options.state_dir.as_deref());
        // A key that cannot be kept does not stop the node: clearances then last as long as the
        // process.
        let challenge_keys = match crate::challenge::Keys::open(options.state_dir.as_deref()) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "challenge key not kept; clearances end when this process does");
                crate::challenge::Keys::random().map_err(|e| StartError::Io(format!("challenge key: {e}")))?
            }
        };
        let (snapshot, bytes) = initial_config(&options, &metrics, workers, &crash_guard, &artifacts)?;
        let doc = snapshot.config.doc.clone();
        let (http, https, admin_addr) = (snapshot.config.http, snapshot.config.https, snapshot.config.admin);
        let access_log = AccessLog::start(
            &doc.access_log.target,
            usize::try_from(doc.access_log.buffer).unwrap_or(8192),
            metrics.clone(),
        )
        .map_err(|e| StartError::Io(format!("access log {}: {e}", doc.access_log.target)))?;
        let snapshot = Arc::new(snapshot);
        let snapshots = Arc::new(ArcSwap::new(snapshot.clone()));
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(EdgeShared {
            snapshot: snapshots.clone(),
            metrics: metrics.clone(),
            access_log,
            options: options.clone(),
            per_ip: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            drained: Notify::new(),
            reload_lock: tokio::sync::Mutex::new(()),
            shutdown,
            kill: crate::kill::KillSwitches::default(),
            crash_guard,
            bound_http: std::sync::OnceLock::new(),
            artifacts,
            challenge_keys,
            drops: crate::ddos::DropList::default(),
            workers,
        });
        shared.install(snapshot, &bytes);

        let mut tasks = Vec::new();
        let mut bound = Bound { http: None, https: None, admin: None };
        // listeners[w] = what worker w accepts on.
        let mut listeners: Vec<Vec<(std::net::TcpListener, Option<TlsAcceptor>)>> =
            (0..workers).map(|_| Vec::new()).collect();
        if let Some(addr) = http {
            let socks = bind_reuseport(addr, workers)?;
            bound.http = socks.first().and_then(|l| l.local_addr().ok());
            if let Some(a) = bound.http {
                let _ = shared.bound_http.set(a);
            }
            for (w, l) in socks.into_iter().enumerate() {
                if let Some(slot) = listeners.get_mut(w) {
                    slot.push((l, None));
                }
            }
        }
        if let Some(addr) = https {
            let socks = bind_reuseport(addr, workers)?;
            bound.https = socks.first().and_then(|l| l.local_addr().ok());
            let cfg = tls::server_config(snapshots.clone()).map_err(|e| StartError::Io(format!("TLS setup: {e}")))?;
            let acceptor = TlsAcceptor::from(Arc::new(cfg));
            for (w, l) in socks.into_iter().enumerate() {
                if let Some(slot) = listeners.get_mut(w) {
                    slot.push((l, Some(acceptor.clone())));
                }
            }
        }
        if let Some(addr) = admin_addr {
            let l =
                TcpListener::bind(addr).await.map_err(|e| StartError::Io(format!("cannot listen on {addr}: {e}")))?;
            bound.admin = l.local_addr().ok();
            tasks.push(tokio::spawn(admin::serve(shared.clone(), l)));
        }
        for (w, mine) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("palisade-worker-{w}"))
                .spawn(move || worker(w, shared, mine))
                .map_err(|e| StartError::Io(format!("cannot start worker thread: {e}")))?;
        }
        tasks.push(tokio::spawn(signals(shared.clone())));
        tasks.push(tokio::spawn(crate::ddos::run(shared.clone())));
        if let Some(link) = options.control.clone() {
            tasks.push(tokio::spawn(crate::agent::run(shared.clone(), link)));
        }
        Ok(Edge { shared, bound, tasks })
    }

    /// Waits for a shutdown request (SIGTERM, SIGINT or [`EdgeShared::shutdown`]), stops
    /// accepting, lets in-flight requests finish within the drain deadline, then returns.
    pub async fn run_until_shutdown(self) {
        let mut rx = self.shared.shutdown.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        let drain = Duration::from_millis(self.shared.snapshot.load().config.doc.limits.drain_timeout_ms);
        tracing::info!(
            active = self.shared.active.load(Ordering::Relaxed),
            drain_ms = drain.as_millis() as u64,
            "shutting down: draining connections"
        );
        let shared = self.shared.clone();
        let wait = async move {
            loop {
                let notified = shared.drained.notified();
                if shared.active.load(Ordering::Relaxed) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(drain, wait).await.is_err() {
            tracing::warn!(
                active = self.shared.active.load(Ordering::Relaxed),
                "drain deadline passed; closing the remaining connections"
            );
        }
        for t in self.tasks {
            t.abort();
        }
        self.shared.crash_guard.clean_exit();
    }
}

async fn signals(shared: Arc<EdgeShared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = shared.reload().await;
            }
            _ = term.recv() => { let _ = shared.shutdown.send(true); }
            _ = int.recv() => { let _ = shared.shutdown.send(true); }
        }
    }
}

/// Binds `n` listening sockets to one address with SO_REUSEPORT (the kernel spreads connections
/// across them). Port 0 is resolved by the first bind and reused by the others.
fn bind_reuseport(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let err = |e: std::io::Error| StartError::Io(format!("cannot listen on {addr}: {e}"));
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let sock = if at.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .map_err(err)?;
        sock.set_reuseaddr(true).map_err(err)?;
        sock.set_reuseport(true).map_err(err)?;
        sock.bind(at).map_err(err)?;
        let l = sock.listen(4096).map_err(err)?;
        at = l.local_addr().map_err(err)?;
        out.push(l.into_std().map_err(err)?);
    }
    Ok(out)
}

/// One data-plane worker thread.
fn worker(index: usize, shared: Arc<EdgeShared>, listeners: Vec<(std::net::TcpListener, Option<TlsAcceptor>)>) {
    WORKER.with(|w| w.set(index));
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, worker = index, "cannot start a worker runtime");
            let _ = shared.shutdown.send(true);
            return;
        }
    };
    rt.block_on(async move {
        // Connections wait for shutdown on this worker's own signal. The node-wide watch
        // channel keeps its waiters behind one mutex that every connection on every worker
        // would take once per request (to re-check its waker), bouncing between cores.
        let local_shutdown = Arc::new(Notify::new());
        let mut rx = shared.shutdown.subscribe();
        let fire = local_shutdown.clone();
        tokio::spawn(async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            fire.notify_waiters();
        });
        let mut loops = tokio::task::JoinSet::new();
        for (l, tls) in listeners {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    loops.spawn(accept_loop(shared.clone(), l, tls, local_shutdown.clone()));
                }
                Err(e) => tracing::error!(error = %e, "cannot register a listener"),
            }
        }
        while loops.join_next().await.is_some() {}
        // Accepting has stopped; connections in flight keep running on this thread until the
        // process exits after the drain deadline.
        std::future::pending::<()>().await;
    });
}

async fn accept_loop(
    shared: Arc<EdgeShared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    local_shutdown: Arc<Notify>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // A source under a `drop` DDoS mitigation: reset before anything is read.
        if shared.drops.drops(peer.ip(), &shared.kill) {
            let _ = stream.set_zero_linger();
            shared.metrics.connections_rejected_ddos.add(1);
            continue;
        }
        let Ok(permit) = shared.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let local_shutdown = local_shutdown.clone();
        // One clock reading per poll serves everything the connection does in it (crate::clock).
        tokio::spawn(crate::clock::clocked(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let limits = shared.snapshot.load().guard_limits;
            let conn = Arc::new(ConnShared::default());
            match tls {
                None => {
                    let ctx = Arc::new(ConnCtx::new(shared.clone(), conn.clone(), peer, false, None));
                    serve(shared, Guarded::new(stream, conn, limits), ctx, false, local_shutdown).await;
                }
                Some(acceptor) => {
                    // The ClientHello is read here first, for its fingerprint (crate::ja4),
                    // then put back in front of the stream for rustls; one deadline for both.
                    let deadline = tokio::time::Instant::now() + limits.header_timeout;
                    let mut stream = stream;
                    let Ok(Ok((hello, ja4))) =
                        tokio::time::timeout_at(deadline, crate::ja4::read_hello(&mut stream)).await
                    else {
                        shared.metrics.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let accepting = acceptor.accept(Rewind::new(hello, stream));
                    let Ok(Ok(tls_stream)) = tokio::time::timeout_at(deadline, accepting).await else {
                        shared.metrics.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let (_, session) = tls_stream.get_ref();
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let sni = session.server_name().map(str::to_string);
                    let mut ctx = ConnCtx::new(shared.clone(), conn.clone(), peer, true, sni);
                    ctx.ja4 = ja4.map(Arc::from);
                    let ctx = Arc::new(ctx);
                    let io = if h2 {
                        Guarded::passthrough(tls_stream, conn, limits)
                    } else {
                        Guarded::new(tls_stream, conn, limits)
                    };
                    serve(shared, io, ctx, h2, local_shutdown).await;
                }
            }
        }));
    }
}

async fn serve<IO>(shared: Arc<EdgeShared>, io: Guarded<IO>, ctx: Arc<ConnCtx>, h2: bool, local_shutdown: Arc<Notify>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Guarded<IO>: Io,
{
    let shutdown = shared.shutdown.subscribe();
    if *shutdown.borrow() {
        return;
    }
    if h2 {
        serve_h2(shared, Rewind::new(Bytes::new(), Box::new(io)), ctx, shutdown).await;
        return;
    }
    let limits = shared.snapshot.load().guard_limits;
    if let h1::Ended::H2(io) = h1::serve(Box::new(io), ctx.clone(), shutdown.clone(), local_shutdown, &limits).await {
        serve_h2(shared, io, ctx, shutdown).await;
    }
}

/// How long a client that has sent its SETTINGS gets to send its first request, before the
/// connection is served without a fingerprint (a client may wait for the server's SETTINGS).
const H2_FIRST_REQUEST_WAIT: Duration = Duration::from_millis(100);

/// Reads an HTTP/2 client's opening (preface, SETTINGS, ... the first HEADERS) for its
/// fingerprint, within `wait` and [`crate::h2fp::MAX_BYTES`]; returns the bytes read, to be
/// put back in front of the stream.
async fn h2_opening(io: &mut Rewind<Box<dyn Io>>, wait: Duration) -> (Bytes, Option<String>) {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let crate::h2fp::Read::Done(fp) = crate::h2fp::fingerprint(&buf) {
            return (buf.freeze(), fp);
        }
        // Past the preface, the first request is not waited for long.
        let until = if buf.len() > crate::h2fp::PREFACE.len() {
            deadline.min(tokio::time::Instant::now() + H2_FIRST_REQUEST_WAIT)
        } else {
            deadline
        };
        match tokio::time::timeout_at(until, io.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return (buf.freeze(), None),
        }
    }
}

/// HTTP/2 (ALPN h2, or h2c with prior knowledge) is served by hyper.
async fn serve_h2(
    shared: Arc<EdgeShared>,
    io: Rewind<Box<dyn Io>>,
    ctx: Arc<ConnCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = shared.snapshot.load().config.doc.limits.clone();
    // The client's opening frames first, for its fingerprint (crate::h2fp); then put back.
    let mut io = io;
    let (opening, fingerprint) = h2_opening(&mut io, Duration::from_millis(limits.header_timeout_ms)).await;
    if let Some(fp) = fingerprint {
        let _ = ctx.h2.set(Arc::from(fp));
    }
    let io = Rewind::new(opening, io);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        let (parts, body) = req.into_parts();
        let mut head = proxy::Head::boxed(parts, RawHeaders::default());
        head.set_body(ClientBody::H2(body));
        async move {
            let resp = proxy::handle(ctx, head).await.into_response();
            // A dropped request's stream is reset (hyper resets it on an error).
            if crate::pages::is_dropped(&resp) {
                return Err(std::io::Error::other("dropped"));
            }
            Ok(resp)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(limits.max_h2_streams).unwrap_or(128))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(16384));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}
