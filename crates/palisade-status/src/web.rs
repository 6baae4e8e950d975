//! What the status page serves: HTML for people (no JavaScript, works on a phone and with a
//! screen reader), the JSON API in Statuspage's shape, an Atom feed, and the operators' API.
//!
//! - `GET /`, `GET /incidents/{id}`, `GET /history`: the page, one incident, the archive.
//! - `GET /api/v2/summary.json`, `status.json`, `components.json`, `incidents.json`,
//!   `incidents/unresolved.json`, `scheduled-maintenances.json`; `GET /history.atom`.
//! - Operators (`Authorization: Bearer TOKEN`): `POST /api/v2/incidents` `{"name", "body",
//!   "status", "impact", "components", "scheduled_for", "scheduled_until"}` (times RFC 3339; with
//!   both it is scheduled maintenance), `POST /api/v2/incidents/{id}/updates` `{"status", "body"}`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{overall, uptime, Component, ComponentStatus, Day, GROUP_LOCATIONS, GROUP_SITES};
use crate::store::{Incident, NewIncident};
use crate::App;

type Shared = Arc<App>;

/// The page's ID in the JSON API (one page per process).
pub(crate) const PAGE_ID: &str = "palisade";

/// Days of history on the page.
pub(crate) const BAR_DAYS: u64 = 90;
/// Incidents in the JSON lists and the feed.
const LIST: u32 = 50;
const MAX_NAME: usize = 200;
const MAX_BODY: usize = 10_000;
const MAX_REQUEST: usize = 64 * 1024;

pub(crate) fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/history", get(history))
        .route("/incidents/{id}", get(incident_page))
        .route(
            "/style.css",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE)
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v2/summary.json", get(summary))
        .route("/api/v2/status.json", get(status))
        .route("/api/v2/components.json", get(components))
        .route("/api/v2/incidents.json", get(incidents).post(create_incident))
        .route("/api/v2/incidents", post(create_incident))
        .route("/api/v2/incidents/unresolved.json", get(unresolved))
        .route("/api/v2/scheduled-maintenances.json", get(maintenances))
        .route("/api/v2/incidents/{id}/updates", post(add_update))
        .route("/api/v2/targets.json", get(targets))
        .route("/history.atom", get(atom))
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(app)
}

struct Error(StatusCode, String);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "status store");
    Error(StatusCode::INTERNAL_SERVER_ERROR, "the status store failed".into())
}

async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&App) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app)).await.map_err(internal)?.map_err(internal)
}

fn view(app: &App) -> crate::View {
    app.view()
}

// ---- JSON -----------------------------------------------------------------------------------

fn time(secs: u64) -> String {
    palisade_config::time::rfc3339(secs)
}

fn component_json(c: &Component, position: usize) -> Value {
    json!({
        "id": c.id, "name": c.name, "status": c.status, "created_at": Value::Null,
        "updated_at": time(c.since), "position": position, "description": Value::Null,
        "group_id": group_id(c.group), "group": false, "page_id": PAGE_ID,
        "only_show_if_degraded": false, "showcase": true,
    })
}

fn group_id(group: &str) -> String {
    format!("group:{}", group.to_lowercase())
}

fn components_json(components: &[Component]) -> Vec<Value> {
    let mut out: Vec<Value> = components.iter().enumerate().map(|(i, c)| component_json(c, i + 1)).collect();
    for group in [GROUP_SITES, GROUP_LOCATIONS] {
        let members: Vec<&Component> = components.iter().filter(|c| c.group == group).collect();
        let worst = members.iter().map(|c| c.status).filter(|s| *s != ComponentStatus::UnderMaintenance).max();
        out.push(json!({
            "id": group_id(group), "name": group, "group": true, "group_id": Value::Null,
            "status": worst.unwrap_or(ComponentStatus::Operational),
            "components": members.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            "page_id": PAGE_ID,
        }));
    }
    out
}

fn incident_json(app: &App, i: &Incident, components: &[Component]) -> Value {
    let named = |id: &String| {
        let c = components.iter().find(|c| &c.id == id);
        json!({ "id": id, "name": c.map_or(id.as_str(), |c| c.name.as_str()), "status": c.map(|c| c.status) })
    };
    let mut v = json!({
        "id": i.id, "name": i.name, "status": i.status, "impact": i.impact,
        "created_at": time(i.created_at), "updated_at": time(i.updated_at), "started_at": time(i.created_at),
        "resolved_at": i.resolved_at.map(time), "monitoring_at": Value::Null,
        "shortlink": format!("{}/incidents/{}", app.public_url, i.id), "page_id": PAGE_ID,
        "automatic": i.automatic,
        "components": i.components.iter().map(named).collect::<Vec<_>>(),
        "incident_updates": i.updates.iter().map(|u| json!({
            "id": u.id, "incident_id": i.id, "status": u.status, "body": u.body,
            "created_at": time(u.created_at), "updated_at": time(u.created_at), "display_at": time(u.created_at),
            "affected_components": u.affected_components,
        })).collect::<Vec<_>>(),
    });
    if let (Some(from), Some(until), Some(o)) = (i.scheduled_for, i.scheduled_until, v.as_object_mut()) {
        o.insert("scheduled_for".into(), json!(time(from)));
        o.insert("scheduled_until".into(), json!(time(until)));
    }
    v
}

fn status_json(components: &[Component]) -> Value {
    let (indicator, description) = overall(components);
    json!({ "indicator": indicator, "description": description })
}

fn page_json(app: &App, v: &crate::View) -> Value {
    let mut page = app.page.clone();
    if let Some(o) = page.as_object_mut() {
        o.insert("updated_at".into(), if v.checked_at == 0 { Value::Null } else { json!(time(v.checked_at)) });
    }
    page
}

/// The newest [`LIST`] incidents (from memory).
fn all_incidents(app: &Shared) -> Vec<Incident> {
    app.incidents().iter().take(LIST as usize).cloned().collect()
}

async fn summary(State(app): State<Shared>) -> Result<Response, Error> {
    let v = view(&app);
    let list = all_incidents(&app);
    let open = |m: bool| -> Vec<Value> {
        list.iter()
            .filter(|i| i.is_open() && i.is_maintenance() == m)
            .map(|i| incident_json(&app, i, &v.components))
            .collect()
    };
    Ok(Json(json!({
        "page": page_json(&app, &v), "status": status_json(&v.components),
        "components": components_json(&v.components),
        "incidents": open(false), "scheduled_maintenances": open(true),
    }))
    .into_response())
}

async fn status(State(app): State<Shared>) -> Json<Value> {
    let v = view(&app);
    Json(json!({ "page": page_json(&app, &v), "status": status_json(&v.components) }))
}

async fn components(State(app): State<Shared>) -> Json<Value> {
    let v = view(&app);
    Json(json!({ "page": page_json(&app, &v), "components": components_json(&v.components) }))
}

async fn targets(State(app): State<Shared>) -> Json<Value> {
    let v = view(&app);
    Json(json!({ "page": page_json(&app, &v), "targets": v.targets }))
}

async fn incident_list(app: Shared, keep: impl Fn(&Incident) -> bool, key: &str) -> Result<Response, Error> {
    let v = view(&app);
    let list = all_incidents(&app);
    let items: Vec<Value> = list.iter().filter(|i| keep(i)).map(|i| incident_json(&app, i, &v.components)).collect();
    Ok(Json(json!({ "page": page_json(&app, &v), key: items })).into_response())
}

async fn incidents(State(app): State<Shared>) -> Result<Response, Error> {
    incident_list(app, |i| !i.is_maintenance(), "incidents").await
}

async fn unresolved(State(app): State<Shared>) -> Result<Response, Error> {
    incident_list(app, |i| !i.is_maintenance() && i.is_open(), "incidents").await
}

async fn maintenances(State(app): State<Shared>) -> Result<Response, Error> {
    incident_list(app, Incident::is_maintenance, "scheduled_maintenances").await
}

// ---- Operators ------------------------------------------------------------------------------

fn operator(app: &App, headers: &HeaderMap) -> Result<String, Error> {
    let tokens = app
        .tokens
        .as_ref()
        .ok_or_else(|| Error(StatusCode::FORBIDDEN, "this status page has no operators (no tokens_file)".into()))?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or_else(|| Error(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN`".into()))?;
    tokens.who(presented).map(str::to_string).ok_or_else(|| Error(StatusCode::UNAUTHORIZED, "unknown token".into()))
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Error(StatusCode::UNPROCESSABLE_ENTITY, format!("{}: {}", e.path(), e.inner())))
}

const INCIDENT_STATUSES: &[&str] = &["investigating", "identified", "monitoring", "resolved"];
const MAINTENANCE_STATUSES: &[&str] = &["scheduled", "in_progress", "verifying", "completed"];
const IMPACTS: &[&str] = &["none", "minor", "major", "critical", "maintenance"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    body: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    impact: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    scheduled_for: Option<String>,
    #[serde(default)]
    scheduled_until: Option<String>,
}

fn text(field: &str, v: &str, max: usize) -> Result<(), Error> {
    if v.trim().is_empty() || v.len() > max {
        return Err(Error(StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: 1 to {max} bytes (is {})", v.len())));
    }
    Ok(())
}

fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<(), Error> {
    if !allowed.contains(&v) {
        return Err(Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: one of {} (is `{v}`)", allowed.join(", ")),
        ));
    }
    Ok(())
}

fn when(field: &str, v: &str) -> Result<u64, Error> {
    crate::cert::parse_rfc3339(v).ok_or_else(|| {
        Error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: an RFC 3339 UTC time like 2026-01-31T22:00:00Z (is `{v}`)"),
        )
    })
}

async fn create_incident(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    let who = operator(&app, &headers)?;
    let req: CreateBody = json_body(&body)?;
    text("name", &req.name, MAX_NAME)?;
    text("body", &req.body, MAX_BODY)?;
    let known = view(&app).components;
    for (i, c) in req.components.iter().enumerate() {
        if !known.iter().any(|k| &k.id == c) {
            return Err(Error(StatusCode::UNPROCESSABLE_ENTITY, format!("components[{i}]: no component `{c}`")));
        }
    }
    let scheduled = match (&req.scheduled_for, &req.scheduled_until) {
        (None, None) => None,
        (Some(from), Some(until)) => {
            let (from, until) = (when("scheduled_for", from)?, when("scheduled_until", until)?);
            if until <= from {
                return Err(Error(StatusCode::UNPROCESSABLE_ENTITY, "scheduled_until: after scheduled_for".into()));
            }
            Some((from, until))
        }
        _ => {
            return Err(Error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "scheduled_for and scheduled_until: both (maintenance) or neither (incident)".into(),
            ))
        }
    };
    let (statuses, default_status, default_impact) = match scheduled {
        Some(_) => (MAINTENANCE_STATUSES, "scheduled", "maintenance"),
        None => (INCIDENT_STATUSES, "investigating", "minor"),
    };
    let status = req.status.unwrap_or_else(|| default_status.into());
    one_of("status", &status, statuses)?;
    let impact = req.impact.unwrap_or_else(|| default_impact.into());
    one_of("impact", &impact, IMPACTS)?;
    let new = NewIncident { name: req.name, status, impact, body: req.body, components: req.components, scheduled };
    tracing::info!(operator = %who, name = %new.name, "incident posted");
    let incident = blocking(&app, move |a| {
        let created = a.store.create(&new, crate::now(), &a.hooks, &a.page)?;
        a.reload_incidents()?;
        Ok(created)
    })
    .await?;
    app.outbox.notify_one();
    Ok((StatusCode::CREATED, Json(json!({ "incident": incident_json(&app, &incident, &known) }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    status: String,
    body: String,
}

async fn add_update(
    State(app): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let who = operator(&app, &headers)?;
    let req: UpdateBody = json_body(&body)?;
    text("body", &req.body, MAX_BODY)?;
    let existing = blocking(&app, move |a| a.store.incident(id)).await?;
    let Some(existing) = existing else { return Err(Error(StatusCode::NOT_FOUND, format!("no incident {id}"))) };
    one_of("status", &req.status, if existing.is_maintenance() { MAINTENANCE_STATUSES } else { INCIDENT_STATUSES })?;
    tracing::info!(operator = %who, incident = id, status = %req.status, "incident update");
    let updated = blocking(&app, move |a| {
        let updated = a.store.update(id, &req.status, &req.body, crate::now(), &a.hooks, &a.page)?;
        a.reload_incidents()?;
        Ok(updated)
    })
    .await?
    .ok_or_else(|| Error(StatusCode::NOT_FOUND, format!("no incident {id}")))?;
    app.outbox.notify_one();
    Ok((StatusCode::CREATED, Json(json!({ "incident": incident_json(&app, &updated, &view(&app).components) })))
        .into_response())
}

// ---- HTML -----------------------------------------------------------------------------------

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2025-11-18 10:00 UTC`.
fn human(secs: u64) -> String {
    let palisade_config::time::Civil(y, mo, d, h, mi, ..) = palisade_config::time::civil(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

fn class(s: ComponentStatus) -> &'static str {
    match s {
        ComponentStatus::Operational => "ok",
        ComponentStatus::DegradedPerformance => "degraded",
        ComponentStatus::PartialOutage => "partial",
        ComponentStatus::MajorOutage => "major",
        ComponentStatus::UnderMaintenance => "maintenance",
    }
}

fn impact_class(impact: &str) -> &'static str {
    match impact {
        "critical" => "major",
        "major" => "partial",
        "minor" => "degraded",
        "maintenance" => "maintenance",
        _ => "ok",
    }
}

fn html(app: &App, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"30\">\
<title>{title}</title><link rel=\"stylesheet\" href=\"/style.css\">\
<link rel=\"alternate\" type=\"application/atom+xml\" title=\"Incidents\" href=\"/history.atom\"></head>\
<body><header><a class=\"brand\" href=\"/\">{name}</a></header><main>{body}</main>\
<footer><a href=\"/history\">Incident history</a> · <a href=\"/history.atom\">Atom feed</a> · \
<a href=\"/api/v2/summary.json\">JSON API</a></footer></body></html>\n",
        title = esc(title),
        name = esc(&app.config.title),
    );
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// The 90 day bars of one component: an SVG with a title per day (the tooltip, and what a
/// screen reader reads), colour and words for the worst state of that day.
fn bars(days: Option<&BTreeMap<String, Day>>, today: u64) -> String {
    let mut svg = String::new();
    let total = days.and_then(uptime);
    let label = match total {
        Some(u) => format!("{:.2}% uptime over the last {BAR_DAYS} days", u * 100.0),
        None => format!("no data for the last {BAR_DAYS} days"),
    };
    let _ = write!(
        svg,
        "<svg class=\"bars\" viewBox=\"0 0 {w} 34\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{label}\">",
        w = BAR_DAYS * 5
    );
    for i in 0..BAR_DAYS {
        let secs = today.saturating_sub((BAR_DAYS - 1 - i) * 86_400);
        let day = palisade_config::time::day(secs);
        let d = days.and_then(|m| m.get(&day));
        let (cls, what) = match d.and_then(|d| d.worst().map(|w| (w, d))) {
            None => ("none", "no data".to_string()),
            Some((w, d)) => {
                (class(w), format!("{:.2}% up, worst: {}", d.uptime().unwrap_or(1.0) * 100.0, w.words().to_lowercase()))
            }
        };
        let _ = write!(svg, "<rect class=\"{cls}\" x=\"{}\" y=\"0\" width=\"3\" height=\"34\" rx=\"1\"><title>{day}: {what}</title></rect>", i * 5);
    }
    svg.push_str("</svg>");
    let _ = write!(
        svg,
        "<div class=\"legend\"><span>{BAR_DAYS} days ago</span><span>{}</span><span>Today</span></div>",
        total.map_or("no data".into(), |u| format!("{:.2}% uptime", u * 100.0))
    );
    svg
}

fn incident_card(i: &Incident, full: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<article class=\"incident {}\"><h3><a href=\"/incidents/{}\">{}</a></h3>",
        impact_class(&i.impact),
        i.id,
        esc(&i.name)
    );
    if let (Some(from), Some(until)) = (i.scheduled_for, i.scheduled_until) {
        let _ = write!(out, "<p class=\"when\">Scheduled for {} to {}</p>", human(from), human(until));
    }
    let shown = if full { i.updates.len() } else { 1 };
    out.push_str("<ul class=\"timeline\">");
    for u in i.updates.iter().take(shown) {
        let _ = write!(
            out,
            "<li><strong>{}</strong> — {}<br><time datetime=\"{}\">{}</time></li>",
            esc(&u.status.replace('_', " ")),
            esc(&u.body),
            time(u.created_at),
            human(u.created_at)
        );
    }
    out.push_str("</ul>");
    if i.automatic {
        out.push_str("<p class=\"note\">Opened automatically by the prober.</p>");
    }
    out.push_str("</article>");
    out
}

async fn index(State(app): State<Shared>) -> Result<Response, Error> {
    let v = view(&app);
    let today = crate::now();
    let list = all_incidents(&app);
    let days = v.days.clone();
    let (indicator, description) = overall(&v.components);
    let mut body = String::new();
    let banner = match indicator {
        "none" => "ok",
        "minor" => "degraded",
        "major" => "partial",
        "maintenance" => "maintenance",
        _ => "major",
    };
    let checked =
        if v.checked_at == 0 { "not yet checked".to_string() } else { format!("checked {}", human(v.checked_at)) };
    let _ = write!(
        body,
        "<section class=\"banner {banner}\" role=\"status\"><h1>{description}</h1><p>{checked}</p></section>"
    );
    let open: Vec<&Incident> = list.iter().filter(|i| i.is_open() && !i.is_maintenance()).collect();
    if !open.is_empty() {
        body.push_str("<section><h2>Active incidents</h2>");
        for i in open {
            body.push_str(&incident_card(i, true));
        }
        body.push_str("</section>");
    }
    let maint: Vec<&Incident> = list.iter().filter(|i| i.is_open() && i.is_maintenance()).collect();
    if !maint.is_empty() {
        body.push_str("<section><h2>Scheduled maintenance</h2>");
        for i in maint {
            body.push_str(&incident_card(i, false));
        }
        body.push_str("</section>");
    }
    for group in [GROUP_SITES, GROUP_LOCATIONS] {
        let _ = write!(body, "<section class=\"group\"><h2>{group}</h2><ul class=\"components\">");
        for c in v.components.iter().filter(|c| c.group == group) {
            let _ = write!(
                body,
                "<li class=\"component\" id=\"{id}\" data-status=\"{status}\"><div class=\"row\"><span class=\"name\">{name}</span>\
<span class=\"state {cls}\">{words}</span></div>{bars}</li>",
                id = esc(&c.id),
                status = c.status.as_str(),
                name = esc(&c.name),
                cls = class(c.status),
                words = c.status.words(),
                bars = bars(days.get(&c.id), today),
            );
        }
        body.push_str("</ul></section>");
    }
    let past: Vec<&Incident> =
        list.iter().filter(|i| !i.is_open() && today.saturating_sub(i.created_at) < 14 * 86_400).collect();
    body.push_str("<section><h2>Past incidents (14 days)</h2>");
    if past.is_empty() {
        body.push_str("<p class=\"quiet\">No incidents in the last 14 days.</p>");
    }
    for i in past {
        body.push_str(&incident_card(i, false));
    }
    body.push_str("</section>");
    Ok(html(&app, &format!("{} — {description}", app.config.title), &body))
}

async fn history(State(app): State<Shared>) -> Result<Response, Error> {
    let list = app.incidents();
    let mut body = String::from("<h1>Incident history</h1>");
    if list.is_empty() {
        body.push_str("<p class=\"quiet\">No incidents yet.</p>");
    }
    let mut month = String::new();
    for i in list.iter() {
        let m = palisade_config::time::day(i.created_at).get(..7).unwrap_or_default().to_string();
        if m != month {
            let _ = write!(body, "<h2>{m}</h2>");
            month = m;
        }
        body.push_str(&incident_card(i, false));
    }
    Ok(html(&app, &format!("{} — incident history", app.config.title), &body))
}

async fn incident_page(State(app): State<Shared>, Path(id): Path<u64>) -> Result<Response, Error> {
    let cached = app.incidents().iter().find(|i| i.id == id).cloned();
    let found = match cached {
        Some(i) => Some(i),
        None => blocking(&app, move |a| a.store.incident(id)).await?,
    };
    let Some(i) = found else {
        let mut r = html(&app, "Not found", "<h1>No such incident</h1>");
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    };
    let v = view(&app);
    let names: Vec<String> = i
        .components
        .iter()
        .map(|id| v.components.iter().find(|c| &c.id == id).map_or(id.clone(), |c| c.name.clone()))
        .collect();
    let mut body = incident_card(&i, true);
    let _ = write!(
        body,
        "<p class=\"quiet\">Impact: {}. Affected: {}. Opened {}{}.</p>",
        esc(&i.impact),
        esc(&names.join(", ")),
        human(i.created_at),
        i.resolved_at.map(|r| format!(", closed {}", human(r))).unwrap_or_default()
    );
    Ok(html(&app, &format!("{} — {}", app.config.title, i.name), &body))
}

async fn atom(State(app): State<Shared>) -> Result<Response, Error> {
    let list = all_incidents(&app);
    let updated = list.iter().map(|i| i.updated_at).max().unwrap_or(0);
    let mut feed = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
<title>{} incidents</title><id>{url}/history.atom</id><link rel=\"self\" href=\"{url}/history.atom\"/>\
<link href=\"{url}/\"/><updated>{}</updated><author><name>{}</name></author>",
        esc(&app.config.title),
        time(updated),
        esc(&app.config.title),
        url = esc(&app.public_url),
    );
    for i in &list {
        let mut content = String::new();
        for u in &i.updates {
            let _ = write!(
                content,
                "<p><small>{}</small><br><strong>{}</strong> - {}</p>",
                human(u.created_at),
                esc(&u.status),
                esc(&u.body)
            );
        }
        let _ = write!(
            feed,
            "<entry><id>{url}/incidents/{id}</id><title>{}</title><link href=\"{url}/incidents/{id}\"/>\
<published>{}</published><updated>{}</updated><content type=\"html\">{}</content></entry>",
            esc(&i.name),
            time(i.created_at),
            time(i.updated_at),
            esc(&content),
            id = i.id,
            url = esc(&app.public_url),
        );
    }
    feed.push_str("</feed>\n");
    Ok(([(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")], feed).into_response())
}

const STYLE: &str = r#":root{--ok:#1f9d55;--degraded:#d69e2e;--partial:#dd6b20;--major:#c53030;--maint:#3182ce;--none:#d5d9de;--fg:#1a202c;--muted:#5a6472;--bg:#f7f8fa;--card:#fff}
@media (prefers-color-scheme:dark){:root{--fg:#e6e8eb;--muted:#a0a8b3;--bg:#14171c;--card:#1d2128;--none:#3a404a}}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:52rem;margin:0 auto;padding:1rem}header{padding-top:1.5rem}
.brand{font-weight:700;font-size:1.25rem;color:var(--fg);text-decoration:none}
a{color:inherit}h2{font-size:1.1rem;margin:2rem 0 .75rem}
.banner{border-radius:.5rem;padding:1rem 1.25rem;color:#fff}.banner h1{margin:0;font-size:1.4rem}.banner p{margin:.25rem 0 0;opacity:.9;font-size:.9rem}
.banner.ok{background:var(--ok)}.banner.degraded{background:var(--degraded)}.banner.partial{background:var(--partial)}.banner.major{background:var(--major)}.banner.maintenance{background:var(--maint)}
.components{list-style:none;margin:0;padding:0;background:var(--card);border-radius:.5rem;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.component{padding:.9rem 1.1rem;border-top:1px solid rgba(127,127,127,.15)}.component:first-child{border-top:0}
.row{display:flex;justify-content:space-between;gap:1rem;margin-bottom:.5rem}.name{font-weight:600}
.state{font-size:.9rem;font-weight:600}.state.ok{color:var(--ok)}.state.degraded{color:var(--degraded)}.state.partial{color:var(--partial)}.state.major{color:var(--major)}.state.maintenance{color:var(--maint)}
.bars{width:100%;height:34px;display:block}.bars rect.ok{fill:var(--ok)}.bars rect.degraded{fill:var(--degraded)}.bars rect.partial{fill:var(--partial)}.bars rect.major{fill:var(--major)}.bars rect.maintenance{fill:var(--maint)}.bars rect.none{fill:var(--none)}
.legend{display:flex;justify-content:space-between;font-size:.75rem;color:var(--muted);margin-top:.25rem}
.incident{background:var(--card);border-radius:.5rem;padding:.9rem 1.1rem;margin-bottom:.75rem;border-left:5px solid var(--none);box-shadow:0 1px 2px rgba(0,0,0,.08)}
.incident.major{border-left-color:var(--major)}.incident.partial{border-left-color:var(--partial)}.incident.degraded{border-left-color:var(--degraded)}.incident.maintenance{border-left-color:var(--maint)}
.incident h3{margin:0 0 .5rem;font-size:1rem}.timeline{margin:0;padding:0;list-style:none}.timeline li{margin-bottom:.5rem}
time,.note,.quiet,.when{color:var(--muted);font-size:.85rem}footer{color:var(--muted);font-size:.85rem;padding-bottom:2rem}
"#;
