//! The operator dashboard, served by the control plane at `/dashboard`: the fleet, rollouts
//! with their stages and the figures behind each decision (pause, resume, abort, roll back),
//! kill switches and failure policies, and traffic charts from the nodes' analytics.
//!
//! - **Login** with an operator token (the API's): a session cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` over TLS, 12 h), kept in memory; a restart asks to log in again.
//! - **No change without authentication**, and every change is a POST carrying the session's
//!   CSRF token; a POST whose `Origin` is another site is refused. Changes go through the same
//!   functions as the API, so they are validated and audited the same way, under the operator's
//!   name. Rollbacks and rollouts ask for confirmation on a page of their own.
//! - **Pages are complete HTML** with charts as inline SVG; assets are embedded in the binary and
//!   the page makes no request elsewhere (its CSP says so). A small script refreshes the page's
//!   content every 3 s; without it, everything works on reload.

mod charts;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use palisade_config::analytics as a;

use crate::api::{blocking, ApiError, Shared};
use crate::store::now_ms;
use charts::{esc, Line};

const COOKIE: &str = "palisade_session";
/// How long a session lasts, and most sessions at once (the oldest goes first).
const SESSION_MS: u64 = 12 * 3600 * 1000;
const MAX_SESSIONS: usize = 1000;
/// A node not heard from for this long is stale.
const STALE_MS: u64 = 15_000;

#[derive(Clone)]
struct Session {
    operator: String,
    csrf: String,
    expires_ms: u64,
}

/// Logged-in operators, by session ID.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let now = now_ms();
        let mut m = crate::store::lock_or_recover(&self.0);
        m.retain(|_, s| s.expires_ms > now);
        m.get(id).cloned()
    }

    fn create(&self, operator: &str) -> Result<(String, Session), ApiError> {
        let random = || crate::tokens::random_token().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e));
        let (id, csrf) = (random()?, random()?);
        let s = Session { operator: operator.to_string(), csrf, expires_ms: now_ms() + SESSION_MS };
        let mut m = crate::store::lock_or_recover(&self.0);
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.expires_ms).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    fn end(&self, id: &str) {
        crate::store::lock_or_recover(&self.0).remove(id);
    }
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { redirect("/dashboard") }))
        .route("/dashboard", get(overview))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/rollouts", get(rollouts_page).post(start_rollout))
        .route("/dashboard/rollouts/{id}", get(rollout_page))
        .route("/dashboard/rollouts/{id}/{action}", post(rollout_action))
        .route("/dashboard/diff/{a}/{b}", get(diff_page))
        .route("/dashboard/killswitches", get(kill_page).post(kill_action))
        .route("/dashboard/traffic", get(traffic_page))
        .route("/dashboard/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (include_str!("style.css"), "text/css; charset=utf-8"),
        "live.js" => (include_str!("live.js"), "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn session(app: &Shared, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers, COOKIE)?;
    app.sessions.get(id).map(|s| (id.to_string(), s))
}

/// The session of a page view, or the way to the login page.
fn viewer(app: &Shared, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    session(app, headers).map(|(_, s)| s).ok_or_else(|| Box::new(redirect("/dashboard/login")))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// A POST from this site: no `Origin` (an older browser), or one naming this host.
fn same_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
}

/// A change: a live session, a POST from this site, and the session's CSRF token.
fn changer(app: &Shared, headers: &HeaderMap, fields: &HashMap<String, String>) -> Result<Session, Box<Response>> {
    let Some((_, s)) = session(app, headers) else { return Err(Box::new(redirect("/dashboard/login"))) };
    if !same_site(headers) {
        return Err(Box::new(message(StatusCode::FORBIDDEN, "Refused", "This change came from another site.")));
    }
    let presented = fields.get("csrf").map(String::as_bytes).unwrap_or_default();
    if !crate::tokens::constant_time_eq(presented, s.csrf.as_bytes()) {
        return Err(Box::new(message(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form is out of date: reload the page and try again.",
        )));
    }
    Ok(s)
}

fn security_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// A whole page: the navigation (with `here` marked), the operator, and `body` in `<main>`,
/// which refreshes itself.
fn page(title: &str, here: &str, who: Option<&Session>, body: &str) -> Response {
    render(title, here, who, body, true)
}

/// A page that stays as it is: a question (a confirmation), an answer, a form to fill in. The
/// refresh would ask for its URL again and replace it with what a GET there shows.
fn still(title: &str, here: &str, who: Option<&Session>, body: &str) -> Response {
    render(title, here, who, body, false)
}

fn render(title: &str, here: &str, who: Option<&Session>, body: &str, live: bool) -> Response {
    let mut nav = String::from("<nav><a class=\"brand\" href=\"/dashboard\">Palisade</a>");
    if who.is_some() {
        for (href, name) in [
            ("/dashboard", "Overview"),
            ("/dashboard/rollouts", "Rollouts"),
            ("/dashboard/killswitches", "Kill switches"),
            ("/dashboard/traffic", "Traffic"),
        ] {
            let class = if name == here { " class=\"here\"" } else { "" };
            let _ = write!(nav, "<a{class} href=\"{href}\">{name}</a>");
        }
    }
    nav.push_str("</nav>");
    let account = who
        .map(|s| {
            format!(
                "<form method=\"post\" action=\"/dashboard/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><span>{}</span><button>Log out</button></form>",
                esc(&s.csrf),
                esc(&s.operator)
            )
        })
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · Palisade</title><link rel=\"stylesheet\" href=\"/dashboard/assets/style.css\"><script src=\"/dashboard/assets/live.js\" defer></script></head>\
<body><header>{nav}{account}</header><main{}>{body}</main></body></html>\n",
        esc(title),
        if live { " data-live" } else { "" }
    );
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    security_headers(&mut r);
    r
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let mut r = still(title, "", None, &format!("<div class=\"panel confirm\"><h1>{}</h1><p>{}</p><p><a href=\"/dashboard\">Back to the dashboard</a></p></div>", esc(title), esc(text)));
    *r.status_mut() = status;
    r
}

fn failed(e: ApiError) -> Response {
    let text = e.1.get("error").and_then(|v| v.as_str()).map(str::to_string).unwrap_or_else(|| e.1.to_string());
    message(e.0, "That did not work", &text)
}

/// `3 s ago`, `5 min ago`.
fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn when(ms: u64) -> String {
    let palisade_config::time::Civil(y, mo, d, h, mi, s, _) = palisade_config::time::civil(ms / 1000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

fn csrf_field(s: &Session) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(&s.csrf))
}

// ---- Login --------------------------------------------------------------------------------

async fn login_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if session(&app, &headers).is_some() {
        return redirect("/dashboard");
    }
    login_form("")
}

fn login_form(error: &str) -> Response {
    let error =
        if error.is_empty() { String::new() } else { format!("<p class=\"error\" role=\"alert\">{}</p>", esc(error)) };
    still(
        "Log in",
        "",
        None,
        &format!(
            "<div class=\"panel login\"><h1>Operator login</h1>{error}<form method=\"post\" action=\"/dashboard/login\">\
<label for=\"token\">Operator token</label><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<button type=\"submit\">Log in</button></form><p class=\"muted\">The token of <code>palisade control --tokens</code> \
(the demo prints where it is).</p></div>"
        ),
    )
}

async fn login(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_site(&headers) {
        return message(StatusCode::FORBIDDEN, "Refused", "A login from another site.");
    }
    let fields = form(&body);
    let token = fields.get("token").map(String::as_str).unwrap_or("");
    let Some(who) = app.tokens.who(token.trim().as_bytes()).map(str::to_string) else {
        tracing::warn!("dashboard login with an unknown token");
        let mut r = login_form("That token is not an operator's.");
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    };
    let (id, _) = match app.sessions.create(&who) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let audit = app.clone();
    let actor = who.clone();
    let _ = blocking(&audit, move |s| s.audit(&actor, "dashboard login", "dashboard", "ok", "")).await;
    let mut r = redirect("/dashboard");
    let secure = if app.tls { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_MS / 1000
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    if let Err(r) = changer(&app, &headers, &fields) {
        return *r;
    }
    if let Some(id) = cookie(&headers, COOKIE) {
        app.sessions.end(id);
    }
    let mut r = redirect("/dashboard/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static("palisade_session=; Path=/dashboard; Max-Age=0"));
    r
}

// ---- Overview -----------------------------------------------------------------------------

async fn overview(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match viewer(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let data = blocking(&app, |st| Ok((st.nodes()?, st.node_health()?, st.rollouts(10)?, st.kill_switches()?))).await;
    let (nodes, health, rollouts, (generation, engaged)) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let now = now_ms() / 1000;
    let series = crate::api::analytics_series(
        &app.analytics,
        crate::api::AnalyticsQuery { zone: None, city: None, from: Some(now.saturating_sub(900)), to: Some(now + 1) },
    )
    .await;
    let mut body = String::from("<h1>Overview</h1>");
    // Figures across the fleet.
    let live = nodes.iter().filter(|n| now_ms().saturating_sub(n.last_seen_ms) < STALE_MS).count();
    let rate: f64 = health.values().map(|h| h.rate()).sum();
    let errors: u64 = health.values().map(|h| h.errors).sum();
    let requests: u64 = health.values().map(|h| h.requests).sum();
    let _ = write!(
        body,
        "<div class=\"panel stat\"><div>Nodes reporting<b>{live} / {}</b></div><div>Requests/s<b>{rate:.1}</b></div>\
<div>5xx<b class=\"{}\">{:.2}%</b></div><div>Kill switches off<b class=\"{}\">{}</b></div></div>",
        nodes.len(),
        if errors > 0 { "bad" } else { "ok" },
        if requests > 0 { errors as f64 * 100.0 / requests as f64 } else { 0.0 },
        if engaged.is_empty() { "ok" } else { "warn" },
        engaged.len()
    );
    let active: Vec<&crate::rollout::Rollout> =
        rollouts.iter().filter(|r| r.state == "running" || r.state == "paused").collect();
    body.push_str("<div class=\"grid\"><section class=\"panel\"><h2>Rollouts</h2>");
    if active.is_empty() {
        body.push_str("<p class=\"muted\">No rollout in progress.</p>");
    }
    for r in &active {
        body.push_str(&rollout_card(r, &s, &nodes));
    }
    if let Some(last) = rollouts.iter().find(|r| r.state != "running" && r.state != "paused") {
        let _ = write!(
            body,
            "<p class=\"muted\">Last: <a href=\"/dashboard/rollouts/{}\">rollout {} of version {}</a>, {} {}.</p>",
            last.id,
            last.id,
            last.version,
            esc(&last.state.replace('_', " ")),
            ago(last.created_ms)
        );
    }
    body.push_str("</section><section class=\"panel\"><h2>Traffic, last 15 minutes</h2>");
    match &series {
        Ok(series) => body.push_str(&rate_chart(series)),
        Err(_) => body.push_str("<p class=\"muted\">No analytics.</p>"),
    }
    body.push_str("</section></div>");
    body.push_str(&fleet_table(&nodes, &health, generation));
    page("Overview", "Overview", Some(&s), &body)
}

fn fleet_table(
    nodes: &[crate::store::Node],
    health: &HashMap<String, crate::health::NodeHealth>,
    generation: u64,
) -> String {
    // The version most nodes run: any other is marked.
    let mut software: HashMap<&str, usize> = HashMap::new();
    for n in nodes {
        *software.entry(n.software.as_str()).or_default() += 1;
    }
    let common = software.iter().max_by_key(|(v, n)| (**n, *v)).map(|(v, _)| *v).unwrap_or("");
    let mut out = String::from(
        "<section class=\"panel\"><h2>Fleet</h2><table id=\"fleet\"><thead><tr><th>Node</th><th>City</th><th>Software</th>\
<th>Config</th><th>Health</th><th class=\"num\">Requests/s</th><th class=\"num\">5xx</th><th>Kill switches</th><th>Last report</th></tr></thead><tbody>",
    );
    for n in nodes {
        let h = health.get(&n.name).cloned().unwrap_or_default();
        let stale = now_ms().saturating_sub(n.last_seen_ms) > STALE_MS;
        let state = if stale {
            "<span class=\"badge bad\">stale</span>".to_string()
        } else if h.errors > 0 {
            "<span class=\"badge warn\">errors</span>".to_string()
        } else {
            "<span class=\"badge ok\">healthy</span>".to_string()
        };
        let other = if n.software != common { " <span class=\"badge warn\">other version</span>" } else { "" };
        let config = match (n.applied, n.assigned) {
            (None, None) => "boot config".to_string(),
            (Some(a), None) => format!("v{a}"),
            (Some(a), Some(b)) if a == b => format!("v{a}"),
            (a, Some(b)) => {
                format!("{} <span class=\"muted\">→ v{b}</span>", a.map_or("boot config".into(), |v| format!("v{v}")))
            }
        };
        let nack = n
            .nack_version
            .map(|v| {
                format!(
                    " <span class=\"badge bad\" title=\"{}\">refused v{v}</span>",
                    esc(n.nack_detail.as_deref().unwrap_or(""))
                )
            })
            .unwrap_or_default();
        let drift = if n.drift { " <span class=\"badge warn\">drift</span>" } else { "" };
        let kills = match h.kill_generation {
            _ if generation == 0 => "<span class=\"muted\">-</span>".to_string(),
            Some(g) if g >= generation => "<span class=\"ok\">applied</span>".to_string(),
            Some(g) => format!("<span class=\"warn\">generation {g} of {generation}</span>"),
            None => "<span class=\"warn\">not yet</span>".to_string(),
        };
        let _ = write!(
            out,
            "<tr data-node=\"{name}\" data-state=\"{}\"><td>{name}</td><td>{}</td><td>{}{other}</td><td>{config}{nack}{drift}</td><td>{state}</td>\
<td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td>{kills}</td><td>{}</td></tr>",
            if stale { "stale" } else { "live" },
            esc(&n.city),
            esc(&n.software),
            h.rate(),
            h.errors,
            ago(n.last_seen_ms),
            name = esc(&n.name),
        );
    }
    if nodes.is_empty() {
        out.push_str("<tr><td colspan=\"9\" class=\"muted\">No node has registered.</td></tr>");
    }
    out.push_str("</tbody></table></section>");
    out
}

fn rollout_card(r: &crate::rollout::Rollout, s: &Session, nodes: &[crate::store::Node]) -> String {
    let on = nodes.iter().filter(|n| n.applied == Some(r.version)).count();
    let pct = if nodes.is_empty() { 0 } else { on * 100 / nodes.len() };
    let mut out = format!(
        "<div class=\"rollout\" data-rollout=\"{}\" data-state=\"{}\"><p><a href=\"/dashboard/rollouts/{}\"><b>Rollout {}</b></a>: version {} by {} — <b>{}</b>, stage {} of {}, {on} of {} nodes on it</p>\
<div class=\"progress\" role=\"progressbar\" aria-valuenow=\"{pct}\" aria-valuemin=\"0\" aria-valuemax=\"100\"><span style=\"width:{pct}%\"></span></div>",
        r.id,
        esc(&r.state),
        r.id,
        r.id,
        r.version,
        esc(&r.actor),
        esc(&r.state.replace('_', " ")),
        (r.stage + 1).min(r.stages.len()),
        r.stages.len(),
        nodes.len()
    );
    out.push_str(&stage_steps(r));
    out.push_str(&rollout_buttons(r, s));
    out.push_str("</div>");
    out
}

fn stage_steps(r: &crate::rollout::Rollout) -> String {
    let mut out = String::from("<div class=\"stages\">");
    for (i, st) in r.stages.iter().enumerate() {
        let class = if r.state == "done" || i < r.stage {
            "stage done"
        } else if i == r.stage && (r.state == "running" || r.state == "paused") {
            "stage now"
        } else {
            "stage"
        };
        let _ = write!(out, "<span class=\"{class}\">{}</span>", esc(st));
    }
    out.push_str("</div>");
    out
}

fn rollout_buttons(r: &crate::rollout::Rollout, s: &Session) -> String {
    let button = |action: &str, label: &str, class: &str| {
        format!(
            "<form class=\"inline\" method=\"post\" action=\"/dashboard/rollouts/{}/{action}\">{}<button class=\"{class}\">{label}</button></form> ",
            r.id,
            csrf_field(s)
        )
    };
    match r.state.as_str() {
        "running" => button("pause", "Pause", "") + &button("abort", "Abort and roll back", "danger"),
        "paused" => button("resume", "Resume", "") + &button("abort", "Abort and roll back", "danger"),
        "done" => button("rollback", "Roll back to the previous version", "danger"),
        _ => String::new(),
    }
}

fn rate_chart(series: &crate::analytics::Series) -> String {
    let step = series.step.max(1) as f64;
    let times: Vec<u64> = series.points.iter().map(|p| p.t).collect();
    let class = |k: usize| -> Vec<f64> {
        series.points.iter().map(|p| p.counts.get(a::STATUS + k).copied().unwrap_or(0) as f64 / step).collect()
    };
    charts::time_chart(
        "Requests per second by status",
        "/s",
        &times,
        &[
            Line { name: "2xx", class: "c2", values: class(1) },
            Line { name: "3xx", class: "c1", values: class(2) },
            Line { name: "4xx", class: "c3", values: class(3) },
            Line { name: "5xx", class: "c4", values: class(4) },
        ],
        true,
    )
}

// ---- Rollouts -----------------------------------------------------------------------------

async fn rollouts_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match viewer(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let data = blocking(&app, |st| Ok((st.rollouts(50)?, st.list("config", None, 30, None)?, st.nodes()?))).await;
    let (rollouts, versions, nodes) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let mut body = String::from("<h1>Rollouts</h1><section class=\"panel\"><h2>Rollouts</h2><table><thead><tr><th>#</th><th>Version</th><th>State</th><th>Stage</th><th>By</th><th>Started</th><th></th></tr></thead><tbody>");
    for r in &rollouts {
        let _ = write!(
            body,
            "<tr data-rollout=\"{id}\" data-state=\"{state}\"><td><a href=\"/dashboard/rollouts/{id}\">{id}</a></td><td>v{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.version,
            esc(&r.state.replace('_', " ")),
            (r.stage + 1).min(r.stages.len()),
            r.stages.len(),
            esc(&r.actor),
            ago(r.created_ms),
            rollout_buttons(r, &s),
            id = r.id,
            state = esc(&r.state),
        );
    }
    if rollouts.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">None yet.</td></tr>");
    }
    body.push_str("</tbody></table></section><section class=\"panel\"><h2>Config versions</h2><table><thead><tr><th>Version</th><th>By</th><th>When</th><th>Message</th><th>Nodes on it</th><th></th></tr></thead><tbody>");
    for v in &versions {
        let on = nodes.iter().filter(|n| n.applied == Some(v.number)).count();
        let diff =
            v.parent.map(|p| format!("<a href=\"/dashboard/diff/{p}/{}\">changes</a> ", v.number)).unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td>v{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{on}</td><td>{diff}<form class=\"inline\" method=\"post\" action=\"/dashboard/rollouts\">{}<input type=\"hidden\" name=\"version\" value=\"{n}\"><button>Roll out…</button></form></td></tr>",
            esc(&v.author),
            ago(v.created_ms),
            esc(&v.message),
            csrf_field(&s),
            n = v.number,
        );
    }
    body.push_str("</tbody></table></section>");
    page("Rollouts", "Rollouts", Some(&s), &body)
}

async fn rollout_page(State(app): State<Shared>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    let s = match viewer(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let data = blocking(&app, move |st| Ok((st.rollout(id)?, st.nodes()?))).await;
    let (found, nodes) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let Some((r, events)) = found else {
        return message(StatusCode::NOT_FOUND, "No such rollout", &format!("There is no rollout {id}."));
    };
    let mut body = format!("<h1>Rollout {} — version {}</h1><section class=\"panel\">", r.id, r.version);
    body.push_str(&rollout_card(&r, &s, &nodes));
    if !r.reason.is_empty() {
        let _ = write!(body, "<p>Reason: {}</p>", esc(&r.reason));
    }
    let _ = write!(
        body,
        "<p class=\"muted\">Bake time {} s per stage; started {} by {}.</p></section>",
        r.bake_ms / 1000,
        when(r.created_ms),
        esc(&r.actor)
    );
    body.push_str("<section class=\"panel\"><h2>Nodes</h2><table><thead><tr><th>Node</th><th>City</th><th>Assigned</th><th>Running</th></tr></thead><tbody>");
    for n in &nodes {
        let mark = if n.applied == Some(r.version) { " class=\"ok\"" } else { "" };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td{mark}>{}</td></tr>",
            esc(&n.name),
            esc(&n.city),
            n.assigned.map_or("-".into(), |v| format!("v{v}")),
            n.applied.map_or("boot".into(), |v| format!("v{v}"))
        );
    }
    body.push_str("</tbody></table></section><section class=\"panel\"><h2>Decisions and the figures behind them</h2><ol class=\"events\" reversed>");
    for e in events.iter().rev() {
        let _ = write!(body, "<li><time>{}</time>{}</li>", when(e.at_ms), esc(&e.message));
    }
    body.push_str("</ol></section>");
    page(&format!("Rollout {}", r.id), "Rollouts", Some(&s), &body)
}

fn confirm(s: &Session, title: &str, text: &str, action: &str, fields: &[(&str, String)], label: &str) -> Response {
    let mut hidden = csrf_field(s);
    for (k, v) in fields {
        let _ = write!(hidden, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(k), esc(v));
    }
    still(
        title,
        "Rollouts",
        Some(s),
        &format!(
            "<div class=\"panel confirm\"><h1>{}</h1><p>{}</p><form method=\"post\" action=\"{}\">{hidden}<input type=\"hidden\" name=\"confirm\" value=\"yes\">\
<button class=\"danger\" type=\"submit\">{}</button> <a class=\"button\" href=\"/dashboard/rollouts\">Cancel</a></form></div>",
            esc(title),
            esc(text),
            esc(action),
            esc(label)
        ),
    )
}

async fn rollout_action(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((id, action)): Path<(u64, String)>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let s = match changer(&app, &headers, &fields) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let confirmed = fields.get("confirm").is_some_and(|v| v == "yes");
    let here = format!("/dashboard/rollouts/{id}/{action}");
    let done = match action.as_str() {
        "pause" => crate::api::pause_or_resume(&app, s.operator.clone(), id, true).await,
        "resume" => crate::api::pause_or_resume(&app, s.operator.clone(), id, false).await,
        "abort" if !confirmed => {
            return confirm(
                &s,
                &format!("Abort rollout {id}?"),
                "Every node it moved goes back to the version it ran before. The rollout cannot be resumed.",
                &here,
                &[],
                "Abort and roll back",
            )
        }
        "abort" => crate::api::abort(&app, s.operator.clone(), id).await,
        "rollback" => {
            // A finished rollout: start a new one of the version the fleet ran before it.
            let previous = blocking(&app, move |st| {
                let Some((r, _)) = st.rollout(id)? else { return Ok(None) };
                let before = st.list("config", None, 1, Some(r.version))?;
                Ok(before.first().map(|v| (r.version, v.number)))
            })
            .await;
            let (from, to) = match previous {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return message(
                        StatusCode::NOT_FOUND,
                        "Nothing to roll back to",
                        "There is no config version before this one.",
                    )
                }
                Err(e) => return failed(e),
            };
            if !confirmed {
                return confirm(
                    &s,
                    &format!("Roll back from version {from} to version {to}?"),
                    &format!("This starts an emergency rollout of version {to}: staged and health-gated like any other, with short bakes."),
                    &here,
                    &[],
                    &format!("Roll back to version {to}"),
                );
            }
            match crate::api::begin_rollout(&app, s.operator.clone(), to, None, None, true).await {
                Ok(r) => return redirect(&format!("/dashboard/rollouts/{}", r.id)),
                Err(e) => Err(e),
            }
        }
        _ => return message(StatusCode::NOT_FOUND, "No such action", "Pause, resume, abort or roll back."),
    };
    match done {
        Ok(()) => redirect(&format!("/dashboard/rollouts/{id}")),
        Err(e) => failed(e),
    }
}

async fn start_rollout(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let s = match changer(&app, &headers, &fields) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(version) = fields.get("version").and_then(|v| v.parse::<u64>().ok()) else {
        return message(StatusCode::BAD_REQUEST, "Which version?", "The form did not say which version to roll out.");
    };
    if fields.get("confirm").is_none_or(|v| v != "yes") {
        let stages = crate::rollout::DEFAULT_STAGES.join(", ");
        let bake = crate::rollout::DEFAULT_BAKE_MS / 1000;
        return still(
            &format!("Roll out version {version}?"),
            "Rollouts",
            Some(&s),
            &format!(
                "<div class=\"panel confirm\"><h1>Roll out version {version}?</h1><p>It goes out in stages, each baked and judged by the \
nodes' error rate and latency against the fleet's; a bad stage rolls back by itself.</p>\
<form method=\"post\" action=\"/dashboard/rollouts\">{}<input type=\"hidden\" name=\"version\" value=\"{version}\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">\
<p><label>Stages <input name=\"stages\" value=\"{stages}\"></label> <label>Bake (s) <input name=\"bake_s\" type=\"number\" min=\"0\" value=\"{bake}\"></label></p>\
<button class=\"danger\" type=\"submit\">Roll out version {version}</button> <a class=\"button\" href=\"/dashboard/rollouts\">Cancel</a></form></div>",
                csrf_field(&s)
            ),
        );
    }
    let stages: Option<Vec<String>> =
        fields.get("stages").map(|v| v.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect());
    let bake_ms = match fields.get("bake_s").filter(|v| !v.is_empty()).map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(secs)) => Some(secs.saturating_mul(1000)),
        Some(Err(_)) => return message(StatusCode::BAD_REQUEST, "Bake time", "The bake time is a number of seconds."),
    };
    match crate::api::begin_rollout(&app, s.operator.clone(), version, stages, bake_ms, false).await {
        Ok(r) => redirect(&format!("/dashboard/rollouts/{}", r.id)),
        Err(e) => failed(e),
    }
}

async fn diff_page(State(app): State<Shared>, headers: HeaderMap, Path((va, vb)): Path<(u64, u64)>) -> Response {
    let s = match viewer(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let data = blocking(&app, move |st| Ok((st.get(va)?, st.get(vb)?))).await;
    let (Some((_, ca)), Some((_, cb))) = (match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    }) else {
        return message(StatusCode::NOT_FOUND, "No such version", "One of the two versions does not exist.");
    };
    let changes = match crate::diff::diff(&String::from_utf8_lossy(&ca), &String::from_utf8_lossy(&cb)) {
        Ok(c) => c,
        Err(e) => return message(StatusCode::UNPROCESSABLE_ENTITY, "Not a config", &e.to_string()),
    };
    let mut body = format!("<h1>Version {va} → {vb}</h1><section class=\"panel\"><table class=\"diff\"><thead><tr><th>Field</th><th>Change</th><th>Before</th><th>After</th></tr></thead><tbody>");
    for c in &changes {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.path),
            match c.change {
                "added" => "ok",
                "removed" => "bad",
                _ => "warn",
            },
            c.change,
            esc(c.old.as_deref().unwrap_or("")),
            esc(c.new.as_deref().unwrap_or(""))
        );
    }
    if changes.is_empty() {
        body.push_str("<tr><td colspan=\"4\" class=\"muted\">No change.</td></tr>");
    }
    body.push_str("</tbody></table></section>");
    page(&format!("Diff {va} → {vb}"), "Rollouts", Some(&s), &body)
}

// ---- Kill switches ------------------------------------------------------------------------

async fn kill_page(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match viewer(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let data = blocking(&app, |st| {
        let head = st.head("config", "")?;
        let content = match &head {
            Some(v) => st.get(v.number)?.map(|(_, c)| c),
            None => None,
        };
        Ok((st.kill_switches()?, st.nodes()?, st.node_health()?, head.map(|v| v.number), content))
    })
    .await;
    let ((generation, engaged), nodes, health, head, content) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let applied =
        nodes.iter().filter(|n| health.get(&n.name).and_then(|h| h.kill_generation).unwrap_or(0) >= generation).count();
    let mut body = format!(
        "<h1>Kill switches</h1><p class=\"muted\">A switch turns one thing off on every node within a second, apart from config rollouts. Generation {generation}: applied by {applied} of {} nodes.</p>\
<section class=\"panel\"><table id=\"killswitches\"><thead><tr><th>Switch</th><th>What it stops</th><th>State</th><th></th></tr></thead><tbody>",
        nodes.len()
    );
    for (name, what) in palisade_config::limits::KILL_SWITCHES {
        let on = engaged.iter().find(|e| e.name == *name);
        let (state, action) = match on {
            Some(e) => (
                format!("<span class=\"badge bad\">off fleet-wide</span> <span class=\"muted\">by {} {}: {}</span>", esc(&e.actor), ago(e.engaged_ms), esc(&e.reason)),
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/dashboard/killswitches\">{}<input type=\"hidden\" name=\"name\" value=\"{name}\"><input type=\"hidden\" name=\"release\" value=\"yes\"><button>Switch back on</button></form>",
                    csrf_field(&s)
                ),
            ),
            None => (
                "<span class=\"badge ok\">on</span>".to_string(),
                format!(
                    "<form class=\"inline\" method=\"post\" action=\"/dashboard/killswitches\">{}<input type=\"hidden\" name=\"name\" value=\"{name}\"><input name=\"reason\" placeholder=\"why\" aria-label=\"reason for switching {name} off\" required><button class=\"danger\">Switch off</button></form>",
                    csrf_field(&s)
                ),
            ),
        };
        let _ = write!(body, "<tr data-switch=\"{name}\" data-off=\"{}\"><td><b>{name}</b></td><td>{}</td><td class=\"wrap\">{state}</td><td>{action}</td></tr>", on.is_some(), esc(what));
    }
    body.push_str("</tbody></table></section>");
    // Failure policies, from the newest config version.
    body.push_str("<section class=\"panel\"><h2>Module failure policies");
    if let Some(h) = head {
        let _ = write!(body, " (config v{h})");
    }
    body.push_str("</h2><table><thead><tr><th>Zone</th><th>Module</th><th>Enabled</th><th>On failure</th><th>Breaker</th></tr></thead><tbody>");
    let doc = content.as_deref().and_then(|c| palisade_config::parse(c).ok());
    for zone in doc.iter().flat_map(|d| d.zones.iter()) {
        if zone.modules.is_empty() {
            let _ = write!(body, "<tr><td>{}</td><td class=\"muted\">every module</td><td>yes</td><td>fail open (default)</td><td>50 failures / 10 s, off 30 s</td></tr>", esc(&zone.name));
        }
        for (module, m) in &zone.modules {
            let policy = serde_json::to_value(m.failure_policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} failures / {} s, off {} s</td></tr>",
                esc(&zone.name),
                esc(module),
                if m.enabled { "yes" } else { "<span class=\"warn\">no</span>" },
                esc(&policy.replace('_', " ")),
                m.breaker_threshold,
                m.breaker_window_ms / 1000,
                m.breaker_cooldown_ms / 1000
            );
        }
    }
    body.push_str("</tbody></table></section><section class=\"panel\"><h2>Module failures by node</h2><table><thead><tr><th>Node</th><th class=\"num\">Errors</th><th class=\"num\">Panics</th></tr></thead><tbody>");
    for n in &nodes {
        let h = health.get(&n.name).cloned().unwrap_or_default();
        let class = if h.module_panics > 0 {
            "bad"
        } else if h.module_errors > 0 {
            "warn"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num {class}\">{}</td><td class=\"num {class}\">{}</td></tr>",
            esc(&n.name),
            h.module_errors,
            h.module_panics
        );
    }
    body.push_str("</tbody></table></section>");
    page("Kill switches", "Kill switches", Some(&s), &body)
}

async fn kill_action(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let s = match changer(&app, &headers, &fields) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let name = fields.get("name").cloned().unwrap_or_default();
    let reason = if fields.get("release").is_some_and(|v| v == "yes") {
        None
    } else {
        Some(fields.get("reason").cloned().unwrap_or_default())
    };
    match crate::api::switch(&app, s.operator.clone(), name, reason).await {
        Ok(_) => redirect("/dashboard/killswitches"),
        Err(e) => failed(e),
    }
}

// ---- Traffic ------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct TrafficQuery {
    zone: Option<String>,
    city: Option<String>,
    range: Option<String>,
}

const RANGES: [(&str, u64); 5] = [("15m", 900), ("1h", 3600), ("6h", 6 * 3600), ("24h", 86_400), ("30d", 30 * 86_400)];

async fn traffic_page(State(app): State<Shared>, headers: HeaderMap, Query(q): Query<TrafficQuery>) -> Response {
    let s = match viewer(&app, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let range = RANGES.iter().find(|(n, _)| Some(*n) == q.range.as_deref()).copied().unwrap_or(("1h", 3600));
    let zone = q.zone.filter(|z| !z.is_empty());
    let city = q.city.filter(|c| !c.is_empty());
    let now = now_ms() / 1000;
    let query = crate::api::AnalyticsQuery {
        zone: zone.clone(),
        city: city.clone(),
        from: Some(now.saturating_sub(range.1)),
        to: Some(now + 1),
    };
    let series = match crate::api::analytics_series(&app.analytics, query).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let mut body =
        String::from("<h1>Traffic</h1><form class=\"panel inline\" method=\"get\" action=\"/dashboard/traffic\">");
    let select = |name: &str, all: &str, options: &[String], chosen: Option<&str>| -> String {
        let mut out =
            format!("<label>{name} <select name=\"{}\"><option value=\"\">{all}</option>", name.to_lowercase());
        for o in options {
            let sel = if Some(o.as_str()) == chosen { " selected" } else { "" };
            let _ = write!(out, "<option{sel}>{}</option>", esc(o));
        }
        out.push_str("</select></label>");
        out
    };
    body.push_str(&select("Zone", "all zones", &series.zones, zone.as_deref()));
    body.push_str(&select("City", "all cities", &series.cities, city.as_deref()));
    let ranges: Vec<String> = RANGES.iter().map(|(n, _)| n.to_string()).collect();
    let mut r = select("Range", "1h", &ranges, Some(range.0));
    r = r.replace("<option value=\"\">1h</option>", "");
    body.push_str(&r);
    body.push_str("<button>Show</button></form>");

    let step = series.step.max(1) as f64;
    let times: Vec<u64> = series.points.iter().map(|p| p.t).collect();
    let per_s = |i: usize| -> Vec<f64> {
        series.points.iter().map(|p| p.counts.get(i).copied().unwrap_or(0) as f64 / step).collect()
    };
    let total = |i: usize| series.total.get(i).copied().unwrap_or(0);
    let requests = total(a::REQUESTS);
    let _ = write!(
        body,
        "<div class=\"panel stat\"><div>Requests<b>{requests}</b></div><div>Per second now<b>{:.1}</b></div><div>5xx<b>{}</b></div><div>Blocked<b>{}</b></div><div>Rate limited<b>{}</b></div><div>Challenged<b>{}</b></div><div>Cache hits<b>{}</b></div><div>p50 / p99<b>{} / {} ms</b></div></div>",
        series.points.last().and_then(|p| p.counts.get(a::REQUESTS)).copied().unwrap_or(0) as f64 / step,
        total(a::STATUS + 4),
        total(a::BLOCKED),
        total(a::RATE_LIMITED),
        total(a::CHALLENGED),
        total(a::CACHE_HITS),
        a::latency_quantile(&series.total, 0.5).map_or("-".into(), |v| v.to_string()),
        a::latency_quantile(&series.total, 0.99).map_or("-".into(), |v| v.to_string()),
    );
    body.push_str("<div class=\"grid\"><section class=\"panel\">");
    body.push_str(&rate_chart(&series));
    body.push_str("</section><section class=\"panel\">");
    let quantile = |q: f64| -> Vec<f64> {
        series.points.iter().map(|p| a::latency_quantile(&p.counts, q).unwrap_or(0.0)).collect()
    };
    body.push_str(&charts::time_chart(
        "Latency (ms)",
        "ms",
        &times,
        &[
            Line { name: "p50", class: "c1", values: quantile(0.5) },
            Line { name: "p99", class: "c5", values: quantile(0.99) },
        ],
        false,
    ));
    body.push_str("</section><section class=\"panel\">");
    body.push_str(&charts::time_chart(
        "Security actions per second",
        "/s",
        &times,
        &[
            Line { name: "blocked", class: "c4", values: per_s(a::BLOCKED) },
            Line { name: "rate limited", class: "c3", values: per_s(a::RATE_LIMITED) },
            Line { name: "challenged", class: "c5", values: per_s(a::CHALLENGED) },
        ],
        false,
    ));
    body.push_str("</section><section class=\"panel\">");
    let labels: Vec<String> =
        (0..a::BOT_BANDS).map(|i| if i == 0 { "1-9".into() } else { format!("{}0s", i) }).collect();
    let bot: Vec<u64> = (0..a::BOT_BANDS).map(|i| total(a::BOT + i)).collect();
    body.push_str(&charts::bars("Bot scores (1 automated … 99 human)", &labels, &bot, "c1"));
    body.push_str("</section></div>");
    // Active mitigations, as the nodes last said.
    let fresh = now_ms().saturating_sub(30_000);
    let mitigations: Vec<(String, String, u64)> = crate::store::lock_or_recover(&app.mitigations)
        .iter()
        .filter(|((z, _), (n, _, at))| *n > 0 && *at > fresh && zone.as_ref().is_none_or(|w| w == z))
        .map(|((z, node), (n, city, _))| (z.clone(), format!("{node} ({city})"), *n))
        .collect();
    body.push_str("<section class=\"panel\"><h2>Active DDoS mitigations</h2>");
    if mitigations.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Zone</th><th>Node</th><th class=\"num\">Mitigations</th></tr></thead><tbody>",
        );
        for (z, node, n) in mitigations {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td><td class=\"num bad\">{n}</td></tr>", esc(&z), esc(&node));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section><div class=\"grid\">");
    for (kind, title) in [("ip", "Top client addresses"), ("path", "Top paths"), ("fingerprint", "Top fingerprints")] {
        let _ = write!(body, "<section class=\"panel\"><h2>{title}</h2><table><tbody>");
        let list = series.top.get(kind).cloned().unwrap_or_default();
        if list.is_empty() {
            body.push_str("<tr><td class=\"muted\">Nothing yet.</td></tr>");
        }
        for (key, n) in list.iter().take(10) {
            let _ = write!(body, "<tr><td>{}</td><td class=\"num\">{n}</td></tr>", esc(key));
        }
        body.push_str("</tbody></table></section>");
    }
    body.push_str("</div>");
    page("Traffic", "Traffic", Some(&s), &body)
}
