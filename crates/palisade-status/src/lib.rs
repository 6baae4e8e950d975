//! palisade-status: the public status page, in its own failure domain (DESIGN.md, principle 8).
//!
//! A separate process with its own config and its own storage. It probes every zone through
//! every city from outside, like a visitor, and derives components, automatic incidents and
//! uptime from what it sees; operators add updates and scheduled maintenance through an
//! authenticated API. It serves an HTML page (no JavaScript needed), a JSON API in the shape
//! status-page users know (`/api/v2/summary.json`), an Atom feed, and webhooks.
//!
//! It must never depend on the control plane or on the edge being up: it links neither, and
//! asks neither anything. When the whole fleet is down, this is the thing that says so.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod cert;
pub mod config;
pub mod model;
pub mod probe;
pub mod store;
mod web;
mod webhook;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::StatusConfig;
use crate::model::{plan_incident, Component, Tracker};
use crate::probe::{Outcome, Prober, Verdict};
use crate::store::{Round, Store};

/// What the page shows of the prober's latest round.
#[derive(Clone, Default)]
pub(crate) struct View {
    pub components: Vec<Component>,
    pub targets: Vec<TargetView>,
    /// Unix seconds of the last finished round (0: none yet).
    pub checked_at: u64,
    /// Per component, its days over the bars' range (read once per round).
    pub days: Arc<HashMap<String, BTreeMap<String, model::Day>>>,
}

/// Incidents kept in memory for the pages and the API, newest first (older ones are read from
/// the store when asked for by number).
pub(crate) const CACHED_INCIDENTS: u32 = 1000;

#[derive(Clone, serde::Serialize)]
pub(crate) struct TargetView {
    pub zone: String,
    pub city: String,
    pub health: &'static str,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub cert_expires: Option<String>,
    pub detail: String,
}

pub(crate) struct App {
    pub config: StatusConfig,
    pub store: Store,
    pub tokens: Option<palisade_tokens::Tokens>,
    pub view: RwLock<View>,
    /// `page` of the JSON API and of webhook bodies.
    pub page: serde_json::Value,
    pub hooks: Vec<String>,
    pub public_url: String,
    /// Wakes the webhook sender after a change is committed.
    pub outbox: tokio::sync::Notify,
    /// The newest incidents, as the store has them: the pages and the API read these, never the
    /// store, so a crowd at the page during an outage costs no disk reads.
    pub incidents: RwLock<Arc<Vec<store::Incident>>>,
}

impl App {
    pub(crate) fn view(&self) -> View {
        self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn incidents(&self) -> Arc<Vec<store::Incident>> {
        self.incidents.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the incidents again after a change (on a blocking thread).
    pub(crate) fn reload_incidents(&self) -> rusqlite::Result<()> {
        let list = self.store.incidents(CACHED_INCIDENTS)?;
        *self.incidents.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(list);
        Ok(())
    }
}

/// The first day of the uptime bars as of `now`.
pub(crate) fn bars_from(now: u64) -> String {
    palisade_config::time::day(now.saturating_sub((web::BAR_DAYS - 1) * 86_400))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Reads and checks a config file; relative paths in it are relative to the file (an absolute
/// path stays as it is: `join` replaces the base with it).
pub fn load_config(path: &Path) -> Result<StatusConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut config = config::parse(&text).map_err(|p| format!("{}:\n  {}", path.display(), p.join("\n  ")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    config.data_dir = base.join(&config.data_dir);
    config.tokens_file = config.tokens_file.as_ref().map(|p| base.join(p));
    config.ca_file = config.ca_file.as_ref().map(|p| base.join(p));
    Ok(config)
}

/// Opens the store, binds, calls `ready` with the bound address, probes and serves until
/// `shutdown`.
pub async fn serve(
    config: StatusConfig,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let db = config.data_dir.join("status.db");
    let store = tokio::task::spawn_blocking(move || Store::open(&db)).await.map_err(|e| e.to_string())??;
    let tokens = match &config.tokens_file {
        Some(f) => Some(palisade_tokens::Tokens::load(f)?),
        None => None,
    };
    let tls = probe::tls_client(config.ca_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| format!("{}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let page =
        serde_json::json!({ "id": web::PAGE_ID, "name": config.title, "url": public_url, "time_zone": "Etc/UTC" });
    let (saved_targets, saved_components) = store.states().map_err(|e| e.to_string())?;
    let tracker = Tracker::new(&config, &saved_targets, &saved_components, now());
    let app = Arc::new(App {
        hooks: config.webhooks.iter().map(|w| w.url.clone()).collect(),
        view: RwLock::new(View { components: tracker.components.clone(), ..View::default() }),
        incidents: RwLock::default(),
        config,
        store,
        tokens,
        page,
        public_url,
        outbox: tokio::sync::Notify::new(),
    });
    let a = app.clone();
    let days = tokio::task::spawn_blocking(move || {
        a.reload_incidents()?;
        a.store.days(&bars_from(now()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    app.view.write().unwrap_or_else(std::sync::PoisonError::into_inner).days = Arc::new(days);
    let prober = Arc::new(Prober::new(tls, Duration::from_millis(app.config.timeout_ms)));
    let probing = tokio::spawn(probe_loop(app.clone(), tracker, prober.clone()));
    let sending = tokio::spawn(webhook::send_loop(app.clone(), prober));
    ready(addr);
    let served =
        axum::serve(listener, web::router(app)).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string());
    probing.abort();
    sending.abort();
    served
}

/// Most probes in flight at once.
const PARALLEL_PROBES: usize = 64;

async fn probe_loop(app: Arc<App>, mut tracker: Tracker, prober: Arc<Prober>) {
    let mut every = tokio::time::interval(Duration::from_millis(app.config.interval_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL_PROBES));
    loop {
        every.tick().await;
        let started = now();
        let a = app.clone();
        let maintenance = match tokio::task::spawn_blocking(move || {
            let (active, changed) = a.store.maintenance_tick(started, &a.hooks, &a.page)?;
            if changed {
                a.reload_incidents()?;
            }
            Ok::<_, rusqlite::Error>(active)
        })
        .await
        {
            Ok(Ok(m)) => m.into_iter().collect::<HashSet<String>>(),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "status store");
                HashSet::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "status store task");
                HashSet::new()
            }
        };
        let mut probes = tokio::task::JoinSet::new();
        for (i, t) in tracker.targets.iter().enumerate() {
            let city = app.config.cities.get(t.city_index).cloned();
            let zone = app.config.zones.get(t.zone_index).cloned();
            let (Some(city), Some(zone)) = (city, zone) else { continue };
            let (prober, limit) = (prober.clone(), limit.clone());
            probes.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (i, prober.probe(&city, &zone, started).await)
            });
        }
        while let Some(done) = probes.join_next().await {
            if let Ok((i, outcome)) = done {
                tracker.observe(i, outcome);
            }
        }
        let finished = now();
        let transitions = tracker.derive(finished, &maintenance);
        for t in &transitions {
            tracing::info!(component = %t.code, from = t.old_status.as_str(), to = t.new_status.as_str(), "component");
        }
        let a = app.clone();
        let open = match tokio::task::spawn_blocking(move || a.store.open_automatic()).await {
            Ok(Ok(open)) => open.is_some(),
            _ => false,
        };
        let plan = plan_incident(&tracker, &transitions, open);
        let round = (
            tracker.targets.iter().map(|t| (t.key(), t.health)).collect::<Vec<_>>(),
            tracker.components.iter().map(|c| (c.id.clone(), c.status, c.since)).collect::<Vec<_>>(),
        );
        let a = app.clone();
        let incidents_change = !matches!(plan, model::IncidentPlan::Nothing);
        let committed = tokio::task::spawn_blocking(move || {
            let round = Round { now: finished, targets: round.0, components: round.1, transitions: &transitions, plan };
            let queued = a.store.commit_round(round, &a.hooks, &a.page)?;
            if incidents_change {
                a.reload_incidents()?;
            }
            Ok::<_, rusqlite::Error>((queued, a.store.days(&bars_from(finished))?))
        })
        .await;
        let mut days = None;
        match committed {
            Ok(Ok((queued, d))) => {
                days = Some(Arc::new(d));
                if queued > 0 {
                    app.outbox.notify_one();
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "status store: round not saved"),
            Err(e) => tracing::error!(error = %e, "status store task"),
        }
        let targets =
            tracker.targets.iter().map(|t| target_view(&t.zone, &t.city, t.health, t.last.as_ref())).collect();
        let mut view = app.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let days = days.unwrap_or_else(|| view.days.clone());
        *view = View { components: tracker.components.clone(), targets, checked_at: finished, days };
    }
}

fn target_view(zone: &str, city: &str, health: Verdict, last: Option<&Outcome>) -> TargetView {
    TargetView {
        zone: zone.to_string(),
        city: city.to_string(),
        health: match health {
            Verdict::Ok => "up",
            Verdict::Degraded => "degraded",
            Verdict::Failed => "down",
        },
        status: last.and_then(|o| o.status),
        latency_ms: last.map(|o| o.latency_ms),
        cert_expires: last.and_then(|o| o.cert_expires).map(palisade_config::time::rfc3339),
        detail: last.map(|o| o.detail.clone()).unwrap_or_default(),
    }
}
