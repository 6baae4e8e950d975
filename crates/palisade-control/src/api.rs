//! The operator API: JSON over HTTP. Every `/v1` call carries `Authorization: Bearer TOKEN`; the
//! token's name is the actor in the audit log and the author of what it pushes.
//!
//! - `POST /v1/versions` `{"content": TOML, "message": "...", "parent": N | null}` (`kind` defaults
//!   to `config`): validated like a node would, then stored. 201 with the new version; 200 when the
//!   content equals the head (nothing stored); 409 when `parent` is given and is not the head;
//!   422 with every problem and its path; 413 over the document limit.
//! - `POST /v1/validate` (raw TOML): the same checks, nothing stored.
//! - `GET /v1/versions?kind=config&limit=N&before=N`, `GET /v1/versions/{n}` (metadata and
//!   content), `GET /v1/versions/{n}/content` (the exact bytes, hash in `X-Palisade-Hash`).
//! - `GET /v1/diff/{a}/{b}`: structured changes by zone and field.
//! - `GET /v1/audit?limit=N`: newest first.
//! - `GET /healthz` and `GET /openapi.json` (this API as OpenAPI 3.1): no token needed.
//!
//! Nodes use node tokens (`--node-tokens`), which can only do what a node does: register, watch
//! their assignment, fetch content, and answer. The token's name is the node's name.
//! - `POST /v1/nodes/register` `{"city", "software"}`.
//! - `GET /v1/nodes/self/assignment?known=N&wait_ms=M`: long poll; 200 `{"number", "hash"}` as
//!   soon as the assignment differs from `known`, 204 when `wait_ms` (at most 30 s) passes.
//! - `POST /v1/nodes/self/answer` `{"version", "ok", "problems"}`: ACK or NACK with reasons
//!   (`version` null: back on the node's boot config).
//! - `POST /v1/nodes/self/report` `{"requests", "errors"}`: cumulative counters, every few seconds.
//! - `POST /v1/nodes/self/analytics`: an interval of traffic analytics
//!   ([`palisade_config::analytics::Report`]); operators read them with `GET
//!   /v1/analytics?zone=&city=&from=&to=` (Unix seconds; counters per step, totals, heavy hitters).
//! - Operators: `GET /v1/nodes`, `PUT /v1/nodes/{name}/assignment` `{"version"}`.
//!
//! Kill switches (operators): `GET /v1/killswitches`, `POST /v1/killswitches` `{"name",
//! "reason"}` (switch off), `DELETE /v1/killswitches/{name}` (release). Nodes: `GET
//! /v1/nodes/self/killswitches?known=G&wait_ms=M` (long poll), `POST
//! /v1/nodes/self/killswitches/ack` `{"generation", "unknown"}`.
//!
//! Cache purges: `POST /v1/cache/purge` (operators; the node's purge body: `files`, `prefixes`,
//! `hosts`, `tags`, `purge_everything`, `zone`), `GET /v1/cache/purges` (the kept ones). Nodes:
//! `GET /v1/nodes/self/purges?after=S&wait_ms=M` (long poll), `POST /v1/nodes/self/purges/ack`
//! `{"seq"}`.
//!
//! Artifacts: `POST /v1/artifacts/{kind}/{name}?message=...&unchecked=&rollout=&bake_ms=&approved=` (raw
//! bytes; operators): decoded like a node would, stored, re-pinned in a new config version when the
//! head config lists it, and rolled out on request. `GET /v1/artifacts/{sha256}/content` (nodes
//! and operators), `GET /v1/artifacts/sources` (operators).
//!
//! Rollouts (operators): `POST /v1/rollouts` `{"version", "stages", "bake_ms"}`, `GET /v1/rollouts`,
//! `GET /v1/rollouts/{id}` (with its events: every decision and the figures behind it),
//! `POST /v1/rollouts/{id}/abort` (rolls back), `POST /v1/rollouts/{id}/pause` and `.../resume`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::store::{Pushed, Store, StoreError, KINDS};
use crate::tokens::Tokens;
use palisade_config::artifact::ArtifactKind;

/// Longest push message.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Largest request body: a document at its limit, escaped into JSON.
pub const MAX_BODY_BYTES: usize = 4 * palisade_config::limits::MAX_DOCUMENT_BYTES;
/// Largest artifact stored: twice the largest any node accepts, so that an artifact pushed
/// unchecked can still be refused by the nodes (with its size) rather than here.
pub const MAX_ARTIFACT_BODY_BYTES: usize = 2 * palisade_config::artifact::limits::MAX_IP_LIST_BYTES;
/// Most versions or audit records in one listing.
pub const MAX_LIST: u32 = 1000;

/// Most modules one report may carry.
pub const MAX_REPORTED_MODULES: usize = 64;

/// Longest long poll a node may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;

pub struct ControlOptions {
    pub listen: SocketAddr,
    /// Holds `control.db` (created when missing).
    pub data_dir: PathBuf,
    pub tokens: Tokens,
    /// Node tokens; none: no node can connect.
    pub node_tokens: Tokens,
    /// Serve HTTPS with this certificate chain and key (PEM files) instead of plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Share the state with other replicas through etcd (see [`crate::replica`]).
    pub etcd: Option<EtcdOptions>,
}

pub struct EtcdOptions {
    /// Client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// This replica's name (unique among the replicas).
    pub replica: String,
    /// Where peers reach this replica's API; default `http://` + the bound address.
    pub advertise: Option<String>,
    /// The key prefix every replica of one control plane shares.
    pub prefix: String,
}

/// A TLS server config from PEM files: the chain, then the key.
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// HTTPS: each connection's handshake runs in its own task (a slow client holds nobody else up,
/// and gives up after 10 s), then the router serves it over HTTP/1.1.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) tokens: Tokens,
    node_tokens: Tokens,
    /// Bumped on every assignment change: wakes the long polls, which then read their own.
    assignments: tokio::sync::watch::Sender<u64>,
    /// The kill-switch generation: wakes the nodes' kill-switch polls.
    kills: tokio::sync::watch::Sender<u64>,
    /// The newest cache purge: wakes the nodes' purge polls.
    purges: tokio::sync::watch::Sender<u64>,
    /// Nodes to ask for synthetic requests in answer to their next report.
    probe: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Traffic analytics (their own file; see [`crate::analytics`]).
    pub(crate) analytics: Arc<crate::analytics::Analytics>,
    /// DDoS mitigations each node last said were active, by (zone, node): (count, city, when).
    /// Logged-in dashboard operators ([`crate::dashboard`]).
    pub(crate) sessions: crate::dashboard::Sessions,
    /// Served over TLS (the dashboard's cookie is then `Secure`).
    pub(crate) tls: bool,
    pub(crate) mitigations: std::sync::Mutex<Mitigations>,
}

pub(crate) type Shared = Arc<App>;

/// DDoS mitigations active per (zone, node), as last reported: (count, the node's city, when in ms).
pub(crate) type Mitigations = std::collections::BTreeMap<(String, String), (u64, String, u64)>;

/// An error as the API answers it: a status and `{"error": ...}` plus any details.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) Value);

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, json!({ "error": message.into() }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::NotFound(what) = e {
            return ApiError::new(StatusCode::NOT_FOUND, what);
        }
        if let StoreError::Replication(why) = &e {
            tracing::warn!(error = %why, "replication");
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        tracing::error!(error = %e, "store");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// Runs a store call off the async threads (SQLite blocks, and a commit waits for the disk).
pub(crate) async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app.store))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("store task: {e}")))?
        .map_err(ApiError::from)
}

fn bearer(headers: &HeaderMap) -> Result<&[u8], ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN`"))
}

/// The operator presenting the request's token.
fn actor(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    let presented = bearer(headers)?;
    if let Some(who) = app.tokens.who(presented) {
        return Ok(who.to_string());
    }
    Err(if app.node_tokens.who(presented).is_some() {
        ApiError::new(StatusCode::FORBIDDEN, "a node token cannot do this")
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "unknown token")
    })
}

/// The node presenting the request's token.
fn node_actor(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    let presented = bearer(headers)?;
    app.node_tokens
        .who(presented)
        .map(str::to_string)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown node token"))
}

/// Operators and nodes may both read version content.
fn reader(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    actor(app, headers).or_else(|_| node_actor(app, headers))
}

/// Opens the store, binds, calls `ready` with the bound address, and serves until `shutdown`.
pub async fn serve(
    opts: ControlOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| format!("{}: {e}", opts.data_dir.display()))?;
    let path = opts.data_dir.join("control.db");
    let store = tokio::task::spawn_blocking(move || Store::open(&path).map_err(|e| format!("{}: {e}", path.display())))
        .await
        .map_err(|e| e.to_string())??;
    let analytics_path = opts.data_dir.join("analytics.db");
    let analytics = tokio::task::spawn_blocking(move || crate::analytics::Analytics::open(&analytics_path))
        .await
        .map_err(|e| e.to_string())??;
    let (assignments, _) = tokio::sync::watch::channel(0);
    let (kills, _) = tokio::sync::watch::channel(0);
    let (purges, _) = tokio::sync::watch::channel(0);
    let app = Arc::new(App {
        store,
        tokens: opts.tokens.clone(),
        node_tokens: opts.node_tokens.clone(),
        assignments,
        kills,
        purges,
        probe: std::sync::Mutex::default(),
        analytics: Arc::new(analytics),
        mitigations: std::sync::Mutex::default(),
        sessions: crate::dashboard::Sessions::default(),
        tls: opts.tls.is_some(),
    });
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls_config(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| format!("{}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(etcd) = &opts.etcd {
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let advertise = etcd.advertise.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
        let client = crate::etcd::Etcd::new(etcd.endpoints.clone())?;
        let repl =
            crate::replica::Replication::connect(client, &etcd.prefix, &etcd.replica, &advertise, &opts.data_dir)
                .await?;
        app.store.replicate(repl.clone());
        // Serve only once this replica holds everything the log holds.
        let applied = blocking(&app, |s| s.catch_up()).await.map_err(|e| e.1.to_string())?;
        tracing::info!(replica = %repl.id, applied, "caught up with the shared log");
        tokio::spawn(repl.clone().campaign());
        tokio::spawn(repl.clone().announce());
        tokio::spawn(follow_log(app.clone(), repl));
    }
    tokio::spawn(rollout_engine(app.clone()));
    tokio::spawn(analytics_upkeep(app.analytics.clone()));
    ready(addr);
    match tls {
        Some(config) => serve_tls(listener, router(app), config, shutdown).await,
        None => axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string()),
    }
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/versions", post(push).get(list))
        .route("/v1/versions/{n}", get(show))
        .route("/v1/versions/{n}/content", get(content))
        .route("/v1/validate", post(validate))
        .route("/v1/diff/{a}/{b}", get(diff))
        .route("/v1/audit", get(audit))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/register", post(register))
        .route("/v1/nodes/self/assignment", get(assignment))
        .route("/v1/nodes/self/answer", post(answer))
        .route("/v1/nodes/{name}/assignment", axum::routing::put(assign))
        .route("/v1/nodes/self/report", post(report))
        .route("/v1/nodes/self/analytics", post(node_analytics))
        .route("/v1/analytics", get(analytics))
        .route("/v1/killswitches", post(engage).get(kill_switches))
        .route("/v1/killswitches/{name}", axum::routing::delete(release))
        .route("/v1/nodes/self/killswitches", get(node_kill_switches))
        .route("/v1/nodes/self/killswitches/ack", post(kill_ack))
        .route("/v1/cache/purge", post(purge))
        .route("/v1/cache/purges", get(purges))
        .route("/v1/nodes/self/purges", get(node_purges))
        .route("/v1/nodes/self/purges/ack", post(purge_ack))
        .route("/v1/rollouts", post(start_rollout).get(rollouts))
        .route("/v1/rollouts/{id}", get(rollout))
        .route("/v1/rollouts/{id}/abort", post(abort_rollout))
        .route("/v1/rollouts/{id}/pause", post(pause_rollout))
        .route("/v1/rollouts/{id}/resume", post(resume_rollout))
        .route("/v1/artifacts/sources", get(artifact_sources))
        .route("/v1/artifacts/{hash}/content", get(artifact_content))
        .route("/v1/artifacts/{kind}/{name}", post(push_artifact))
        .route("/v1/bot/learning", get(bot_learning))
        .route("/v1/bot/generate/{name}", post(bot_generate))
        .route("/v1/replication", get(replication))
        .route("/v1/internal/blobs/{hash}", get(get_blob).put(put_blob))
        .route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .merge(crate::dashboard::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// A config document checked as a node would check it (parse + validate, no I/O).
fn check(content: &[u8]) -> Result<String, ApiError> {
    match palisade_config::load(content) {
        Ok(valid) => Ok(valid.hash),
        Err(e) => {
            let status = if matches!(e, palisade_config::ConfigError::TooLarge { .. }) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let problems: Vec<Value> =
                e.problems().iter().map(|p| json!({ "path": p.path, "message": p.message })).collect();
            Err(ApiError(status, json!({ "error": "config rejected", "problems": problems })))
        }
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A push as decoded from its JSON body (fuzzed: `fuzz/fuzz_targets/control_push.rs`).
pub struct PushRequest {
    pub kind: String,
    pub content: String,
    pub message: String,
    /// `None`: no check; `Some(None)`: there must be no version yet; `Some(Some(n))`: head is n.
    pub parent: Option<Option<u64>>,
}

/// Decodes a push body; the error is the API's 400 answer.
pub fn parse_push(body: &[u8]) -> Result<PushRequest, (StatusCode, String)> {
    parse_push_inner(body).map_err(|e| (e.0, e.1.to_string()))
}

fn parse_push_inner(body: &[u8]) -> Result<PushRequest, ApiError> {
    let raw: crate::bodies::Push =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("request body: {e}")))?;
    let kind = raw.kind.unwrap_or_else(|| "config".into());
    if kind != "config" {
        return Err(bad_request(format!(
            "kind: {kind:?}: this endpoint stores config; artifacts go to POST /v1/artifacts/{{kind}}/{{name}}"
        )));
    }
    if raw.message.trim().is_empty() {
        return Err(bad_request("message: must say what the change is"));
    }
    if raw.message.len() > MAX_MESSAGE_BYTES {
        return Err(bad_request(format!("message: {} bytes; at most {MAX_MESSAGE_BYTES}", raw.message.len())));
    }
    let parent = match raw.parent {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(v.as_u64().ok_or_else(|| bad_request("parent: a version number or null"))?)),
    };
    Ok(PushRequest { kind, content: raw.content, message: raw.message, parent })
}

async fn push(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = actor(&app, &headers)?;
    let req = parse_push_inner(&body)?;
    let hash = match check(req.content.as_bytes()) {
        Ok(hash) => hash,
        Err(rejected) => {
            let detail = truncate(&rejected.1.to_string(), 4096);
            let (actor, message) = (who.clone(), req.message.clone());
            blocking(&app, move |s| s.audit(&actor, "push", "config", "rejected", &format!("{message}: {detail}")))
                .await?;
            return Err(rejected);
        }
    };
    let actor_name = who.clone();
    let pushed = blocking(&app, move |s| {
        let pushed = s.push(&req.kind, "", req.content.as_bytes(), &hash, &actor_name, &req.message, req.parent)?;
        match &pushed {
            Pushed::Created(_) => {}
            Pushed::Unchanged(v) => {
                s.audit(&actor_name, "push", &format!("{} v{}", v.kind, v.number), "unchanged", &req.message)?
            }
            Pushed::Conflict { expected, head } => s.audit(
                &actor_name,
                "push",
                &req.kind,
                "conflict",
                &format!("based on {}, head is {}: {}", show_n(*expected), show_n(*head), req.message),
            )?,
        }
        Ok(pushed)
    })
    .await?;
    Ok(match pushed {
        Pushed::Created(v) => {
            tracing::info!(version = v.number, author = %who, hash = %v.hash, "version stored");
            (StatusCode::CREATED, Json(json!({ "created": true, "version": v }))).into_response()
        }
        Pushed::Unchanged(v) => (StatusCode::OK, Json(json!({ "created": false, "version": v }))).into_response(),
        Pushed::Conflict { expected, head } => ApiError(
            StatusCode::CONFLICT,
            json!({
                "error": format!("the change is based on {} but the head is {}", show_n(expected), show_n(head)),
                "head": head,
            }),
        )
        .into_response(),
    })
}

fn show_n(n: Option<u64>) -> String {
    n.map(|n| format!("version {n}")).unwrap_or_else(|| "no version".into())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or(""))
}

async fn validate(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    actor(&app, &headers)?;
    let hash = check(&body)?;
    Ok(Json(json!({ "valid": true, "hash": hash })).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    name: Option<String>,
    limit: Option<u32>,
    before: Option<u64>,
}

async fn list(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<ListQuery>) -> ApiResult {
    actor(&app, &headers)?;
    let kind = q.kind.unwrap_or_else(|| "config".into());
    if !KINDS.contains(&kind.as_str()) {
        return Err(bad_request(format!("kind: {kind:?} is not one of {KINDS:?}")));
    }
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIST);
    let versions = blocking(&app, move |s| s.list(&kind, q.name.as_deref(), limit, q.before)).await?;
    Ok(Json(json!({ "versions": versions })).into_response())
}

async fn fetch(app: &Shared, n: u64) -> Result<(crate::store::Version, Vec<u8>), ApiError> {
    blocking(app, move |s| s.get(n))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no version {n}")))
}

async fn show(State(app): State<Shared>, headers: HeaderMap, Path(n): Path<u64>) -> ApiResult {
    actor(&app, &headers)?;
    let (version, content) = fetch(&app, n).await?;
    let content = String::from_utf8_lossy(&content).into_owned();
    Ok(Json(json!({ "version": version, "content": content })).into_response())
}

async fn content(State(app): State<Shared>, headers: HeaderMap, Path(n): Path<u64>) -> ApiResult {
    reader(&app, &headers)?;
    let (version, content) = fetch(&app, n).await?;
    let mut resp = content.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/toml"));
    if let Ok(h) = HeaderValue::from_str(&version.hash) {
        resp.headers_mut().insert("x-palisade-hash", h);
    }
    Ok(resp)
}

async fn diff(State(app): State<Shared>, headers: HeaderMap, Path((a, b)): Path<(u64, u64)>) -> ApiResult {
    actor(&app, &headers)?;
    let (va, ca) = fetch(&app, a).await?;
    let (vb, cb) = fetch(&app, b).await?;
    if va.kind != vb.kind {
        return Err(bad_request(format!(
            "version {a} is {} and version {b} is {}: nothing to compare",
            va.kind, vb.kind
        )));
    }
    let text = |c: &[u8]| String::from_utf8_lossy(c).into_owned();
    let changes = if va.kind == "config" {
        crate::diff::diff(&text(&ca), &text(&cb)).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("stored version does not parse: {e}"))
        })?
    } else {
        crate::diff::lines(&text(&ca), &text(&cb))
    };
    Ok(Json(json!({ "from": va, "to": vb, "changes": changes })).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<AuditQuery>) -> ApiResult {
    actor(&app, &headers)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let records = blocking(&app, move |s| s.audit_log(limit)).await?;
    Ok(Json(json!({ "records": records })).into_response())
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("request body: {e}")))
}

/// Longest city, software or problem text a node may send.
pub const MAX_NODE_TEXT: usize = 4096;

fn bounded(field: &str, text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_NODE_TEXT {
        return Err(bad_request(format!("{field}: {} bytes; at most {MAX_NODE_TEXT}", text.len())));
    }
    Ok(())
}

async fn register(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    let hello: crate::bodies::Hello = json_body(&body)?;
    bounded("city", &hello.city)?;
    bounded("software", &hello.software)?;
    let node = blocking(&app, move |s| s.register(&name, &hello.city, &hello.software)).await?;
    tracing::info!(node = %node.name, city = %node.city, "node registered");
    Ok(Json(json!({ "node": node })).into_response())
}

#[derive(Deserialize)]
struct AssignmentQuery {
    known: Option<u64>,
    wait_ms: Option<u64>,
}

async fn assignment(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<AssignmentQuery>) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    long_poll(&app.assignments, q.wait_ms, || {
        let (app, who) = (app.clone(), name.clone());
        async move {
            let (node, hash) = blocking(&app, move |s| s.node_seen(&who))
                .await?
                .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "register first"))?;
            Ok(match (node.assigned, hash) {
                (Some(number), Some(hash)) if Some(number) != q.known => {
                    Some(json!({ "number": number, "hash": hash }))
                }
                // Rolled back to before any version: back to the node's boot config.
                (None, _) if q.known.is_some() => Some(json!({ "number": null })),
                _ => None,
            })
        }
    })
    .await
}

/// A node's long poll: `check` answers at once when it has something (200 with its JSON); else
/// the poll waits for `changes` and checks again, until `wait_ms` (at most [`MAX_WAIT_MS`]) and
/// a 204. Subscribed before the first check, so a change between a check and the wait still wakes it.
async fn long_poll<F, Fut>(changes: &tokio::sync::watch::Sender<u64>, wait_ms: Option<u64>, mut check: F) -> ApiResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Value>, ApiError>>,
{
    let wait = std::time::Duration::from_millis(wait_ms.unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = changes.subscribe();
    loop {
        if let Some(v) = check().await? {
            return Ok(Json(v).into_response());
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

async fn answer(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    let a: crate::bodies::Answer = json_body(&body)?;
    let refused = (!a.ok).then(|| a.problems.join("; "));
    if let Some(r) = &refused {
        bounded("problems", r)?;
        tracing::warn!(node = %name, version = ?a.version, problems = %r, "node refused a version");
    }
    blocking(&app, move |s| s.node_answer(&name, a.version, refused.as_deref())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn nodes(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers)?;
    let nodes = blocking(&app, |s| s.nodes()).await?;
    Ok(Json(json!({ "nodes": nodes })).into_response())
}

async fn assign(State(app): State<Shared>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let who = actor(&app, &headers)?;
    let a: crate::bodies::Assign = json_body(&body)?;
    let node = blocking(&app, move |s| s.assign(&who, &name, a.version)).await?;
    app.assignments.send_modify(|g| *g = g.wrapping_add(1));
    Ok(Json(json!({ "node": node })).into_response())
}

/// How often the engine looks at the running rollout.
const ROLLOUT_TICK: std::time::Duration = std::time::Duration::from_millis(200);

async fn rollout_engine(app: Shared) {
    let mut every = tokio::time::interval(ROLLOUT_TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let repl = app.store.replication().cloned();
        // With replicas, only the leader runs rollouts, and its changes carry the leader fence.
        if repl.as_ref().is_some_and(|r| !r.is_leader()) {
            continue;
        }
        // A store error was logged when it was converted; the next tick tries again.
        let Ok(tick) = blocking(&app, |s| crate::replica::fenced(|| crate::rollout::tick(s))).await else { continue };
        if tick.changed {
            app.assignments.send_modify(|g| *g = g.wrapping_add(1));
        }
        match repl {
            // The node may report to any replica: the request to probe goes through etcd.
            Some(r) => {
                for node in tick.probe {
                    if let Err(e) = r.etcd.put(&r.probe_key(&node), b"", None).await {
                        tracing::warn!(node, error = %e, "cannot ask for synthetic requests");
                    }
                }
            }
            None if !tick.probe.is_empty() => crate::store::lock_or_recover(&app.probe).extend(tick.probe),
            None => {}
        }
    }
}

/// With replicas: applies what the others append to the log (and wakes this replica's long
/// polls), and every node report any replica received.
async fn follow_log(app: Shared, repl: Arc<crate::replica::Replication>) {
    let moved = Arc::new(tokio::sync::Notify::new());
    let applier = {
        let (app, moved) = (app.clone(), moved.clone());
        async move {
            loop {
                // Woken by the watch; once a second regardless, for an entry a broken watch missed.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), moved.notified()).await;
                match blocking(&app, |s| s.catch_up()).await {
                    Ok(0) => {}
                    Ok(_) => {
                        app.assignments.send_modify(|g| *g = g.wrapping_add(1));
                        app.kills.send_modify(|g| *g = g.wrapping_add(1));
                        app.purges.send_modify(|g| *g = g.wrapping_add(1));
                    }
                    // Logged; the next change (or the next report) tries again.
                    Err(_) => {}
                }
            }
        }
    };
    tokio::spawn(applier);
    let watcher = repl.clone();
    watcher
        .follow(move |kv| match repl.classify(&kv.key) {
            crate::replica::Changed::Log => moved.notify_one(),
            crate::replica::Changed::Report(node) => {
                let Ok(r) = serde_json::from_slice::<crate::bodies::Report>(&kv.value) else { return };
                let (app, node) = (app.clone(), node.to_string());
                tokio::spawn(async move {
                    let _ = blocking(&app, move |s| s.report(&node, &r)).await;
                });
            }
            crate::replica::Changed::Other => {}
        })
        .await;
}

async fn report(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    let r: crate::bodies::Report = json_body(&body)?;
    if r.latency.len() > crate::rollout::MAX_LATENCY_BUCKETS
        || r.latency_le_ms.len() > crate::rollout::MAX_LATENCY_BUCKETS
    {
        return Err(bad_request(format!("latency: at most {} buckets", crate::rollout::MAX_LATENCY_BUCKETS)));
    }
    let who = name.clone();
    if let Some(h) = &r.hash {
        bounded("hash", h)?;
    }
    if r.modules.len() > MAX_REPORTED_MODULES {
        return Err(bad_request(format!("modules: at most {MAX_REPORTED_MODULES}")));
    }
    for m in r.modules.keys() {
        bounded("modules", m)?;
    }
    if let Some(learning) = &r.bot {
        learning.check().map_err(bad_request)?;
    }
    if let Some(repl) = app.store.replication() {
        // Every replica applies it (and the leader judges by it), whichever received it.
        let unavailable = |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("replication: {e}"));
        repl.etcd.put(&repl.report_key(&name), &body, None).await.map_err(unavailable)?;
        if repl.etcd.delete(&repl.probe_key(&name)).await.map_err(unavailable)? {
            return Ok(Json(json!({ "probe": crate::rollout::PROBES })).into_response());
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    blocking(&app, move |s| s.report(&who, &r)).await?;
    if crate::store::lock_or_recover(&app.probe).remove(&name) {
        return Ok(Json(json!({ "probe": crate::rollout::PROBES })).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Downsampling and retention of the analytics, every minute.
async fn analytics_upkeep(analytics: Arc<crate::analytics::Analytics>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let a = analytics.clone();
        match tokio::task::spawn_blocking(move || a.maintain(crate::store::now_ms() / 1000)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "analytics upkeep"),
            Err(e) => tracing::warn!(error = %e, "analytics upkeep task"),
        }
    }
}

/// `POST /v1/nodes/self/analytics`: a node's interval ([`palisade_config::analytics::Report`]).
async fn node_analytics(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    let report: palisade_config::analytics::Report = json_body(&body)?;
    report.check().map_err(bad_request)?;
    let nodes = blocking(&app, |s| s.nodes()).await?;
    let city = nodes.into_iter().find(|n| n.name == name).map(|n| n.city).unwrap_or_else(|| "unknown".into());
    {
        let mut m = crate::store::lock_or_recover(&app.mitigations);
        for (zone, z) in &report.zones {
            m.insert((zone.clone(), name.clone()), (z.mitigations, city.clone(), crate::store::now_ms()));
        }
    }
    let analytics = app.analytics.clone();
    tokio::task::spawn_blocking(move || analytics.ingest(&city, &report))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("analytics: {e}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(crate) struct AnalyticsQuery {
    pub(crate) zone: Option<String>,
    pub city: Option<String>,
    /// Unix seconds; default the last hour.
    pub from: Option<u64>,
    pub to: Option<u64>,
}

/// The longest range one query may ask for.
pub const MAX_ANALYTICS_RANGE_S: u64 = 31 * 86_400;

/// Checks a range query and runs it (the API's and the dashboard's).
pub(crate) async fn analytics_series(
    analytics: &Arc<crate::analytics::Analytics>,
    q: AnalyticsQuery,
) -> Result<crate::analytics::Series, ApiError> {
    let now = crate::store::now_ms() / 1000;
    let to = q.to.unwrap_or(now + 1);
    let from = q.from.unwrap_or(to.saturating_sub(3600));
    if from >= to || to - from > MAX_ANALYTICS_RANGE_S {
        return Err(bad_request(format!("from, to: from before to, at most {MAX_ANALYTICS_RANGE_S} s apart")));
    }
    let a = analytics.clone();
    tokio::task::spawn_blocking(move || a.query(q.zone.as_deref(), q.city.as_deref(), from, to, now))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("analytics: {e}")))
}

/// `GET /v1/analytics?zone=&city=&from=&to=`: counters per step, totals, heavy hitters.
async fn analytics(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<AnalyticsQuery>) -> ApiResult {
    actor(&app, &headers)?;
    let series = analytics_series(&app.analytics, q).await?;
    let fields: Vec<String> =
        (0..palisade_config::analytics::COUNTS).map(palisade_config::analytics::count_name).collect();
    Ok(Json(json!({ "fields": fields, "series": series })).into_response())
}

/// Stages, bake time and lane of a rollout, from what the operator gave and the lane's defaults.
fn rollout_plan(
    stages: Option<Vec<String>>,
    bake_ms: Option<u64>,
    emergency: bool,
) -> Result<(Vec<String>, u64, &'static str), ApiError> {
    use crate::rollout::{
        parse_stage, DEFAULT_BAKE_MS, DEFAULT_STAGES, EMERGENCY_BAKE_MS, EMERGENCY_STAGES, MAX_BAKE_MS, MAX_STAGES,
    };
    let (default_stages, default_bake, lane) = if emergency {
        (EMERGENCY_STAGES, EMERGENCY_BAKE_MS, "emergency")
    } else {
        (DEFAULT_STAGES, DEFAULT_BAKE_MS, "normal")
    };
    let stages = stages.unwrap_or_else(|| default_stages.iter().map(|s| s.to_string()).collect());
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return Err(bad_request(format!("stages: 1 to {MAX_STAGES}")));
    }
    for s in &stages {
        parse_stage(s).map_err(bad_request)?;
    }
    let bake_ms = bake_ms.unwrap_or(default_bake);
    if bake_ms > MAX_BAKE_MS {
        return Err(bad_request(format!("bake_ms: at most {MAX_BAKE_MS}")));
    }
    Ok((stages, bake_ms, lane))
}

async fn start_rollout(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = actor(&app, &headers)?;
    let req: crate::bodies::Start = json_body(&body)?;
    let r = begin_rollout(&app, who, req.version, req.stages, req.bake_ms, req.emergency).await?;
    Ok((StatusCode::CREATED, Json(json!({ "rollout": r }))).into_response())
}

/// Starts a rollout of `version`, as `who` (the API's and the dashboard's).
pub(crate) async fn begin_rollout(
    app: &Shared,
    who: String,
    version: u64,
    stages: Option<Vec<String>>,
    bake_ms: Option<u64>,
    emergency: bool,
) -> Result<crate::rollout::Rollout, ApiError> {
    let (stages, bake_ms, lane) = rollout_plan(stages, bake_ms, emergency)?;
    let started = blocking(app, move |s| s.start_rollout(&who, version, &stages, bake_ms, lane)).await?;
    started.map_err(|why| ApiError::new(StatusCode::CONFLICT, why))
}

#[derive(Deserialize)]
struct ArtifactPushQuery {
    #[serde(default)]
    message: String,
    /// Store it without decoding it here (the nodes still decode it, and refuse it if bad).
    #[serde(default)]
    unchecked: bool,
    /// Start a rollout of the config version that pins it (default stages and bake).
    #[serde(default)]
    rollout: bool,
    bake_ms: Option<u64>,
    /// An operator's approval of a feature file that changes more than the gate allows.
    #[serde(default)]
    approved: bool,
}

async fn push_artifact(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
    Query(q): Query<ArtifactPushQuery>,
    body: axum::body::Body,
) -> ApiResult {
    let who = actor(&app, &headers)?;
    // Its own limit, larger than the other endpoints' (and read only after the token passed).
    let body = axum::body::to_bytes(body, MAX_ARTIFACT_BODY_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an artifact is stored up to {MAX_ARTIFACT_BODY_BYTES} bytes (twice the largest a node accepts)"),
        )
    })?;
    let Some(k) = ArtifactKind::parse(&kind) else {
        let kinds: Vec<&str> = ArtifactKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(bad_request(format!("kind: {kind:?} is not one of {kinds:?}")));
    };
    if !palisade_config::is_name(&name) {
        return Err(bad_request("name: 1 to 64 characters of a-z, A-Z, 0-9, `-`, `_`, `.`"));
    }
    if q.message.trim().is_empty() || q.message.len() > MAX_MESSAGE_BYTES {
        return Err(bad_request(format!("message: must say what the change is, in at most {MAX_MESSAGE_BYTES} bytes")));
    }
    store_artifact(&app, who, k, &kind, name, body, q).await
}

/// An artifact push, from a person or the model generator: decoded and checked (unless
/// unchecked), held for approval when a feature file moves too far, stored, re-pinned, and
/// rolled out when asked.
async fn store_artifact(
    app: &Shared,
    who: String,
    k: ArtifactKind,
    kind: &str,
    name: String,
    body: Bytes,
    q: ArtifactPushQuery,
) -> ApiResult {
    let kind = kind.to_string();
    let rollout = if q.rollout { Some(rollout_plan(None, q.bake_ms, false)?) } else { None };
    if !q.unchecked {
        if let Err(problems) = palisade_config::artifact::decode(k, &body) {
            let detail = truncate(&palisade_config::render_problems(&problems), 4096);
            let (actor, name, message) = (who.clone(), name.clone(), q.message.clone());
            let state = blocking(app, move |s| {
                s.audit(&actor, "push", &format!("{kind} {name}"), "rejected", &format!("{message}:\n{detail}"))?;
                s.artifact_outcome(&actor, &kind, &name, false, &format!("refused at push: {detail}"), None)
            })
            .await?;
            let problems: Vec<Value> =
                problems.iter().map(|p| json!({ "path": p.path, "message": p.message })).collect();
            let status = if body.len() > k.max_bytes() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            return Err(ApiError(
                status,
                json!({ "error": "artifact rejected", "problems": problems, "source_state": state }),
            ));
        }
    }
    // A model that grows or shrinks a lot (the outage's file doubled) waits for a person.
    let mut message = q.message.clone();
    if k == ArtifactKind::FeatureFile && !q.unchecked {
        let (kind_s, name_s) = (kind.clone(), name.clone());
        let running = blocking(app, move |s| s.running_artifact(&kind_s, &name_s)).await?;
        if let Some(why) = running.and_then(|r| crate::artifacts::needs_approval(&r, &body)) {
            if !q.approved {
                let (actor, target, detail) = (who.clone(), format!("{kind} {name}"), format!("{}: {why}", q.message));
                blocking(app, move |s| s.audit(&actor, "push", &target, "held for approval", &detail)).await?;
                return Err(ApiError(StatusCode::CONFLICT, json!({ "error": "needs approval", "detail": why })));
            }
            message = format!("{message} (approved: {})", why.split(':').next().unwrap_or(""));
        }
    }
    let plan = crate::artifacts::Plan { unchecked: q.unchecked, rollout };
    let pushed = blocking(app, move |s| s.push_artifact(&who, k, &name, &body, &message, plan)).await?;
    let status = if pushed.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!(pushed))).into_response())
}

/// The nodes' labelled bot traffic, summed.
async fn bot_learning(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    reader(&app, &headers)?;
    let (nodes, learning) = blocking(&app, |s| s.bot_learning()).await?;
    Ok(Json(json!({ "nodes": nodes, "learning": learning })).into_response())
}

/// Generates feature file `name` from the nodes' labelled traffic and the file the fleet runs,
/// then pushes it as the `generator` through the same checks as any push (query: message,
/// rollout, bake_ms, approved).
async fn bot_generate(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ArtifactPushQuery>,
) -> ApiResult {
    let who = actor(&app, &headers)?;
    if !palisade_config::is_name(&name) {
        return Err(bad_request("name: 1 to 64 characters of a-z, A-Z, 0-9, `-`, `_`, `.`"));
    }
    if q.message.len() > MAX_MESSAGE_BYTES {
        return Err(bad_request(format!("message: at most {MAX_MESSAGE_BYTES} bytes")));
    }
    let kind = ArtifactKind::FeatureFile;
    let n = name.clone();
    let (running, (nodes, learning)) =
        blocking(&app, move |s| Ok((s.running_artifact(kind.as_str(), &n)?, s.bot_learning()?))).await?;
    let running = running.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no feature_file `{name}`: push a first one (it is the base)"))
    })?;
    let base = match palisade_config::artifact::decode(kind, &running) {
        Ok(palisade_config::artifact::Artifact::FeatureFile(f)) => f,
        _ => return Err(ApiError::new(StatusCode::CONFLICT, format!("the running `{name}` does not decode"))),
    };
    let version = format!("gen-{}", crate::store::now_ms());
    let generated = palisade_config::botlearn::generate(&base, &learning, &version)
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    let body = Bytes::from(serde_json::to_vec(&generated).map_err(|e| bad_request(e.to_string()))?);
    let q = ArtifactPushQuery {
        message: format!(
            "{version}: generated from {nodes} node(s): {} requests of people, {} of scripts (asked by {who}){}",
            learning.human,
            learning.bot,
            if q.message.is_empty() { String::new() } else { format!(": {}", q.message) }
        ),
        unchecked: false,
        ..q
    };
    store_artifact(&app, "generator".into(), kind, kind.as_str(), name, body, q).await
}

async fn artifact_content(State(app): State<Shared>, headers: HeaderMap, Path(hash): Path<String>) -> ApiResult {
    reader(&app, &headers)?;
    if !palisade_config::artifact::is_sha256(&hash) {
        return Err(bad_request("a SHA-256 in lowercase hex"));
    }
    let found = blocking(&app, move |s| s.artifact_by_hash(&hash)).await?;
    let (_, content) = found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no artifact with this hash"))?;
    let mut resp = content.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(resp)
}

/// Where this control plane keeps its state, and (with replicas) who leads.
async fn replication(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers)?;
    let applied = blocking(&app, |s| s.applied()).await?;
    Ok(Json(match app.store.replication() {
        None => json!({ "mode": "embedded", "applied": applied }),
        Some(r) => json!({ "mode": "etcd", "replica": r.id, "leader": r.is_leader(), "applied": applied }),
    })
    .into_response())
}

/// The replica presenting the shared token, with the replication it belongs to.
fn peer(app: &App, headers: &HeaderMap) -> Result<Arc<crate::replica::Replication>, ApiError> {
    let repl = app.store.replication().ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no replicas here"))?;
    if !repl.is_peer(bearer(headers)?) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "not a replica of this control plane"));
    }
    Ok(repl.clone())
}

async fn get_blob(State(app): State<Shared>, headers: HeaderMap, Path(hash): Path<String>) -> ApiResult {
    let repl = peer(&app, &headers)?;
    let blob = tokio::task::spawn_blocking(move || repl.blob(&hash))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    blob.map(IntoResponse::into_response).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such blob here"))
}

async fn put_blob(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(hash): Path<String>,
    body: axum::body::Body,
) -> ApiResult {
    let repl = peer(&app, &headers)?;
    let bytes = axum::body::to_bytes(body, 2 * MAX_ARTIFACT_BODY_BYTES)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "blob too large"))?;
    tokio::task::spawn_blocking(move || repl.keep_blob(&hash, &bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn artifact_sources(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers)?;
    let sources = blocking(&app, |s| s.artifact_sources()).await?;
    Ok(Json(json!({ "sources": sources })).into_response())
}

async fn rollouts(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers)?;
    let list = blocking(&app, |s| s.rollouts(50)).await?;
    Ok(Json(json!({ "rollouts": list })).into_response())
}

async fn rollout(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> ApiResult {
    actor(&app, &headers)?;
    let (r, events) = blocking(&app, move |s| s.rollout(id))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    Ok(Json(json!({ "rollout": r, "events": events })).into_response())
}

async fn abort_rollout(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> ApiResult {
    let who = actor(&app, &headers)?;
    abort(&app, who, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Aborts a running rollout (it rolls back), as `who` (the API's and the dashboard's).
pub(crate) async fn abort(app: &Shared, who: String, id: u64) -> Result<(), ApiError> {
    let reason = format!("aborted by {who}");
    let done = blocking(app, move |s| s.roll_back(id, &who, &reason)).await?;
    if !done {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("rollout {id} is not running")));
    }
    app.assignments.send_modify(|g| *g = g.wrapping_add(1));
    Ok(())
}

async fn pause_rollout(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> ApiResult {
    let who = actor(&app, &headers)?;
    pause_or_resume(&app, who, id, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn resume_rollout(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> ApiResult {
    let who = actor(&app, &headers)?;
    pause_or_resume(&app, who, id, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn pause_or_resume(app: &Shared, who: String, id: u64, pause: bool) -> Result<(), ApiError> {
    if !blocking(app, move |s| s.pause(id, &who, pause)).await? {
        let state = if pause { "running" } else { "paused" };
        return Err(ApiError::new(StatusCode::CONFLICT, format!("rollout {id} is not {state}")));
    }
    Ok(())
}

async fn kill_switches(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers)?;
    let (generation, engaged) = blocking(&app, |s| s.kill_switches()).await?;
    let known: Vec<Value> = palisade_config::limits::KILL_SWITCHES
        .iter()
        .map(|(n, what)| json!({ "name": n, "switches_off": what }))
        .collect();
    Ok(Json(json!({ "generation": generation, "engaged": engaged, "known": known })).into_response())
}

fn known_switch(name: &str) -> Result<(), ApiError> {
    if palisade_config::limits::KILL_SWITCHES.iter().any(|(n, _)| *n == name) {
        return Ok(());
    }
    let names: Vec<&str> = palisade_config::limits::KILL_SWITCHES.iter().map(|(n, _)| *n).collect();
    Err(ApiError::new(StatusCode::NOT_FOUND, format!("no kill switch {name:?}; there are {names:?}")))
}

async fn engage(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = actor(&app, &headers)?;
    let e: crate::bodies::Engage = json_body(&body)?;
    let generation = switch(&app, who, e.name, Some(e.reason)).await?;
    Ok(Json(json!({ "generation": generation, "changed": generation.is_some() })).into_response())
}

async fn release(State(app): State<Shared>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let who = actor(&app, &headers)?;
    let generation = switch(&app, who, name, None).await?;
    Ok(Json(json!({ "generation": generation, "changed": generation.is_some() })).into_response())
}

/// Switches kill switch `name` off fleet-wide (`reason` given) or releases it, as `who`; the new
/// generation when something changed (the API's and the dashboard's).
pub(crate) async fn switch(
    app: &Shared,
    who: String,
    name: String,
    reason: Option<String>,
) -> Result<Option<u64>, ApiError> {
    known_switch(&name)?;
    if let Some(reason) = &reason {
        if reason.trim().is_empty() {
            return Err(bad_request("reason: say why"));
        }
        bounded("reason", reason)?;
    }
    let generation = blocking(app, move |s| s.set_kill_switch(&who, &name, reason.as_deref())).await?;
    if let Some(g) = generation {
        app.kills.send_replace(g);
    }
    Ok(generation)
}

async fn node_kill_switches(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<AssignmentQuery>,
) -> ApiResult {
    node_actor(&app, &headers)?;
    long_poll(&app.kills, q.wait_ms, || {
        let app = app.clone();
        async move {
            let (generation, engaged) = blocking(&app, |s| s.kill_switches()).await?;
            Ok((q.known != Some(generation)).then(|| {
                let off: Vec<String> = engaged.into_iter().map(|e| e.name).collect();
                json!({ "generation": generation, "off": off })
            }))
        }
    })
    .await
}

async fn purge(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let who = actor(&app, &headers)?;
    let request: palisade_config::purge::PurgeRequest = json_body(&body)?;
    request.check().map_err(bad_request)?;
    let summary = request.summary();
    let seq = blocking(&app, move |s| s.add_purge(&who, &request)).await?;
    app.purges.send_replace(seq);
    tracing::info!(seq, purge = %summary, "cache purge recorded for the fleet");
    Ok(Json(json!({ "seq": seq })).into_response())
}

async fn purges(State(app): State<Shared>, headers: HeaderMap) -> ApiResult {
    actor(&app, &headers)?;
    let feed = blocking(&app, |s| s.purges_after(Some(0))).await?;
    Ok(Json(json!(feed)).into_response())
}

#[derive(Deserialize)]
struct PurgeQuery {
    after: Option<u64>,
    wait_ms: Option<u64>,
}

async fn node_purges(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<PurgeQuery>) -> ApiResult {
    node_actor(&app, &headers)?;
    long_poll(&app.purges, q.wait_ms, || {
        let app = app.clone();
        async move {
            let feed = blocking(&app, move |s| s.purges_after(q.after)).await?;
            // A node that has just started learns where the feed is at once.
            Ok((q.after != Some(feed.latest)).then(|| json!(feed)))
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeAck {
    seq: u64,
}

async fn purge_ack(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    let a: PurgeAck = json_body(&body)?;
    blocking(&app, move |s| s.purge_ack(&name, a.seq)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kill_ack(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let name = node_actor(&app, &headers)?;
    let a: crate::bodies::Ack = json_body(&body)?;
    bounded("unknown", &a.unknown.join(","))?;
    blocking(&app, move |s| s.kill_switch_ack(&name, a.generation, &a.unknown)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
