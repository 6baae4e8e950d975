//! The status page's own storage: one SQLite file (`DATA_DIR/status.db`, WAL, `synchronous =
//! FULL`). Each probe round commits in one transaction: target and component states, the day's
//! uptime counts, incident changes, and the webhook deliveries they cause. A restart (or a crash)
//! therefore loses nothing that was shown, and never delivers a change without its record.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use crate::model::{ComponentStatus, Day, IncidentPlan, Transition};
use crate::probe::Verdict;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS targets (key TEXT PRIMARY KEY, health TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS components (id TEXT PRIMARY KEY, status TEXT NOT NULL, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS days (
    component TEXT NOT NULL, day TEXT NOT NULL, samples INTEGER NOT NULL, degraded INTEGER NOT NULL,
    partial INTEGER NOT NULL, major INTEGER NOT NULL, maintenance INTEGER NOT NULL,
    PRIMARY KEY (component, day));
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, impact TEXT NOT NULL,
    automatic INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    resolved_at INTEGER, scheduled_for INTEGER, scheduled_until INTEGER, components TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY, incident INTEGER NOT NULL REFERENCES incidents(id), status TEXT NOT NULL,
    body TEXT NOT NULL, created_at INTEGER NOT NULL, affected TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, url TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_at INTEGER NOT NULL);
";

/// Days of uptime history kept (the page shows 90).
pub const KEEP_DAYS: u64 = 400;
/// A webhook that failed this many times is dropped (with a warning).
pub const MAX_ATTEMPTS: u32 = 20;

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Update {
    pub id: u64,
    pub status: String,
    pub body: String,
    pub created_at: u64,
    pub affected_components: Vec<Transition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: u64,
    pub name: String,
    /// investigating / identified / monitoring / resolved; for maintenance: scheduled /
    /// in_progress / verifying / completed.
    pub status: String,
    /// none / minor / major / critical / maintenance.
    pub impact: String,
    /// Opened by the prober rather than by an operator.
    pub automatic: bool,
    pub created_at: u64,
    pub updated_at: u64,
    pub resolved_at: Option<u64>,
    pub scheduled_for: Option<u64>,
    pub scheduled_until: Option<u64>,
    pub components: Vec<String>,
    /// Newest first.
    pub updates: Vec<Update>,
}

impl Incident {
    pub fn is_maintenance(&self) -> bool {
        self.scheduled_for.is_some()
    }
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }
}

/// An incident or maintenance an operator posts.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub name: String,
    pub status: String,
    pub impact: String,
    pub body: String,
    pub components: Vec<String>,
    pub scheduled: Option<(u64, u64)>,
}

/// One round, as committed.
pub struct Round<'a> {
    pub now: u64,
    pub targets: Vec<(String, Verdict)>,
    pub components: Vec<(String, ComponentStatus, u64)>,
    pub transitions: &'a [Transition],
    pub plan: IncidentPlan,
}

pub const CLOSED: [&str; 2] = ["resolved", "completed"];

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Degraded => "degraded",
        Verdict::Failed => "failed",
    }
}

type Sql<T> = rusqlite::Result<T>;

impl Store {
    pub fn open(path: &Path) -> Result<Self, String> {
        let open = || -> Sql<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Target and component states as the last round left them.
    #[allow(clippy::type_complexity)]
    pub fn states(&self) -> Sql<(HashMap<String, Verdict>, HashMap<String, (ComponentStatus, u64)>)> {
        let conn = self.conn();
        let mut targets = HashMap::new();
        let mut q = conn.prepare("SELECT key, health FROM targets")?;
        for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (key, health) = row?;
            let v = match health.as_str() {
                "failed" => Verdict::Failed,
                "degraded" => Verdict::Degraded,
                _ => Verdict::Ok,
            };
            targets.insert(key, v);
        }
        let mut components = HashMap::new();
        let mut q = conn.prepare("SELECT id, status, since FROM components")?;
        for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, u64>(2)?)))? {
            let (id, status, since) = row?;
            if let Some(s) = ComponentStatus::parse(&status) {
                components.insert(id, (s, since));
            }
        }
        Ok((targets, components))
    }

    /// The open automatic incident, if any.
    pub fn open_automatic(&self) -> Sql<Option<u64>> {
        open_automatic(&self.conn())
    }

    /// Commits a round; returns the webhook bodies it queued (for the log and the tests).
    pub fn commit_round(&self, round: Round<'_>, hooks: &[String], page: &serde_json::Value) -> Sql<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (key, health) in &round.targets {
            tx.execute(
                "INSERT INTO targets (key, health) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET health = ?2",
                params![key, verdict_str(*health)],
            )?;
        }
        let day = palisade_config::time::day(round.now);
        for (id, status, since) in &round.components {
            tx.execute(
                "INSERT INTO components (id, status, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET status = ?2, since = ?3",
                params![id, status.as_str(), since],
            )?;
            let mut d = Day::default();
            d.add(*status);
            tx.execute(
                "INSERT INTO days VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6) ON CONFLICT(component, day) DO UPDATE SET
                 samples = samples + 1, degraded = degraded + ?3, partial = partial + ?4, major = major + ?5,
                 maintenance = maintenance + ?6",
                params![id, day, d.degraded, d.partial, d.major, d.maintenance],
            )?;
        }
        let mut events = Vec::new();
        for t in round.transitions {
            events.push(serde_json::json!({
                "page": page,
                "component_update": { "component_id": t.code, "old_status": t.old_status, "new_status": t.new_status, "created_at": palisade_config::time::rfc3339(round.now) },
                "component": { "id": t.code, "name": t.name, "status": t.new_status },
            }));
        }
        let touched = match round.plan {
            IncidentPlan::Nothing => None,
            IncidentPlan::Open { name, impact, body, components } => {
                let new = NewIncident {
                    name,
                    status: "investigating".into(),
                    impact: impact.into(),
                    body,
                    components,
                    scheduled: None,
                };
                Some(insert_incident(&tx, &new, true, round.transitions, round.now)?)
            }
            IncidentPlan::Update { impact, body, components } => match open_automatic(&tx)? {
                Some(id) => {
                    let (status, current, list): (String, String, String) =
                        tx.query_row("SELECT status, impact, components FROM incidents WHERE id = ?1", [id], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?;
                    insert_update(&tx, id, &status, &body, round.transitions, round.now)?;
                    // The impact only grows, and the incident keeps every component it touched:
                    // a partial recovery does not make it smaller.
                    let impact = if impact_rank(impact) > impact_rank(&current) { impact } else { current.as_str() };
                    let mut all: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
                    for c in components {
                        if !all.contains(&c) {
                            all.push(c);
                        }
                    }
                    let all = serde_json::to_string(&all).unwrap_or_default();
                    tx.execute(
                        "UPDATE incidents SET impact = ?2, components = ?3 WHERE id = ?1",
                        params![id, impact, all],
                    )?;
                    Some(id)
                }
                None => None,
            },
            IncidentPlan::Resolve { body } => match open_automatic(&tx)? {
                Some(id) => {
                    insert_update(&tx, id, "resolved", &body, round.transitions, round.now)?;
                    Some(id)
                }
                None => None,
            },
        };
        if let Some(id) = touched {
            if let Some(incident) = read_incident(&tx, id)? {
                events.push(serde_json::json!({ "page": page, "incident": incident }));
            }
        }
        let queued = enqueue(&tx, hooks, &events, round.now)?;
        if round.now % 3600 < 60 {
            let oldest = palisade_config::time::day(round.now.saturating_sub(KEEP_DAYS * 86_400));
            tx.execute("DELETE FROM days WHERE day < ?1", [oldest])?;
        }
        tx.commit()?;
        Ok(queued)
    }

    /// An operator's incident or maintenance; returns it, and queues its webhooks.
    pub fn create(&self, new: &NewIncident, now: u64, hooks: &[String], page: &serde_json::Value) -> Sql<Incident> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = insert_incident(&tx, new, false, &[], now)?;
        let incident = read_incident(&tx, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        enqueue(&tx, hooks, &[serde_json::json!({ "page": page, "incident": incident })], now)?;
        tx.commit()?;
        Ok(incident)
    }

    /// An operator's update to an incident; None when there is no such incident.
    pub fn update(
        &self,
        id: u64,
        status: &str,
        body: &str,
        now: u64,
        hooks: &[String],
        page: &serde_json::Value,
    ) -> Sql<Option<Incident>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if read_incident(&tx, id)?.is_none() {
            return Ok(None);
        }
        insert_update(&tx, id, status, body, &[], now)?;
        let incident = read_incident(&tx, id)?;
        if let Some(i) = &incident {
            enqueue(&tx, hooks, &[serde_json::json!({ "page": page, "incident": i })], now)?;
        }
        tx.commit()?;
        Ok(incident)
    }

    pub fn incident(&self, id: u64) -> Sql<Option<Incident>> {
        read_incident(&self.conn(), id)
    }

    /// Newest first: open ones, maintenance not yet completed, and at most `limit` others.
    pub fn incidents(&self, limit: u32) -> Sql<Vec<Incident>> {
        let conn = self.conn();
        // Two queries, whatever the number: the incidents, then every update of them.
        let mut q = conn.prepare(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY id DESC LIMIT ?1"))?;
        let mut list: Vec<Incident> = q.query_map([limit], incident_row)?.collect::<Sql<_>>()?;
        let Some(oldest) = list.last().map(|i| i.id) else { return Ok(list) };
        let mut q = conn.prepare(&format!(
            "SELECT incident, {UPDATE_COLUMNS} FROM updates WHERE incident >= ?1 ORDER BY id DESC"
        ))?;
        let mut by_incident: HashMap<u64, Vec<Update>> = HashMap::new();
        for row in q.query_map([oldest], |r| Ok((r.get::<_, u64>(0)?, update_row(r, 1)?)))? {
            let (incident, update) = row?;
            by_incident.entry(incident).or_default().push(update);
        }
        for i in &mut list {
            i.updates = by_incident.remove(&i.id).unwrap_or_default();
        }
        Ok(list)
    }

    /// Maintenance whose state should change at `now` (scheduled -> in_progress, or ->
    /// completed); applies it with an update each; returns the component IDs under
    /// maintenance now, and whether any maintenance changed.
    pub fn maintenance_tick(&self, now: u64, hooks: &[String], page: &serde_json::Value) -> Sql<(Vec<String>, bool)> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut q = tx.prepare(
            "SELECT id, status, scheduled_for, scheduled_until FROM incidents
             WHERE scheduled_for IS NOT NULL AND resolved_at IS NULL",
        )?;
        let open: Vec<(u64, String, u64, u64)> =
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Sql<_>>()?;
        drop(q);
        let mut active = Vec::new();
        let mut changed = false;
        for (id, status, from, until) in open {
            let next = if now >= until {
                Some(("completed", "The scheduled maintenance is completed."))
            } else if now >= from && status == "scheduled" {
                Some(("in_progress", "The scheduled maintenance is in progress."))
            } else {
                None
            };
            if let Some((status, body)) = next {
                changed = true;
                insert_update(&tx, id, status, body, &[], now)?;
                if let Some(i) = read_incident(&tx, id)? {
                    enqueue(&tx, hooks, &[serde_json::json!({ "page": page, "incident": i })], now)?;
                }
            }
            if now >= from && now < until {
                let list: String =
                    tx.query_row("SELECT components FROM incidents WHERE id = ?1", [id], |r| r.get(0))?;
                active.extend(serde_json::from_str::<Vec<String>>(&list).unwrap_or_default());
            }
        }
        tx.commit()?;
        Ok((active, changed))
    }

    /// Per component, its days from `from_day` on.
    pub fn days(&self, from_day: &str) -> Sql<HashMap<String, BTreeMap<String, Day>>> {
        let conn = self.conn();
        let mut q = conn.prepare(
            "SELECT component, day, samples, degraded, partial, major, maintenance FROM days WHERE day >= ?1",
        )?;
        let mut out: HashMap<String, BTreeMap<String, Day>> = HashMap::new();
        for row in q.query_map([from_day], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                Day {
                    samples: r.get(2)?,
                    degraded: r.get(3)?,
                    partial: r.get(4)?,
                    major: r.get(5)?,
                    maintenance: r.get(6)?,
                },
            ))
        })? {
            let (component, day, d) = row?;
            out.entry(component).or_default().insert(day, d);
        }
        Ok(out)
    }

    /// Webhook deliveries due at `now` (id, url, body), oldest first.
    pub fn due(&self, now: u64, limit: u32) -> Sql<Vec<(u64, String, String, u32)>> {
        let conn = self.conn();
        let mut q =
            conn.prepare("SELECT id, url, body, attempts FROM outbox WHERE next_at <= ?1 ORDER BY id LIMIT ?2")?;
        let rows = q.query_map(params![now, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect()
    }

    /// A delivery done (or given up): gone from the outbox.
    pub fn delivered(&self, id: u64) -> Sql<()> {
        self.conn().execute("DELETE FROM outbox WHERE id = ?1", [id]).map(|_| ())
    }

    pub fn retry_at(&self, id: u64, next_at: u64) -> Sql<()> {
        self.conn()
            .execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?2 WHERE id = ?1", params![id, next_at])
            .map(|_| ())
    }
}

fn impact_rank(impact: &str) -> u8 {
    match impact {
        "minor" => 1,
        "major" => 2,
        "critical" => 3,
        _ => 0,
    }
}

fn open_automatic(conn: &Connection) -> Sql<Option<u64>> {
    conn.query_row(
        "SELECT id FROM incidents WHERE automatic = 1 AND resolved_at IS NULL ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

fn insert_incident(
    tx: &Transaction<'_>,
    new: &NewIncident,
    automatic: bool,
    affected: &[Transition],
    now: u64,
) -> Sql<u64> {
    let components = serde_json::to_string(&new.components).unwrap_or_default();
    let (from, until) = new.scheduled.unzip();
    tx.execute(
        "INSERT INTO incidents (name, status, impact, automatic, created_at, updated_at, resolved_at,
         scheduled_for, scheduled_until, components) VALUES (?1, ?2, ?3, ?4, ?5, ?5, NULL, ?6, ?7, ?8)",
        params![new.name, new.status, new.impact, automatic, now, from, until, components],
    )?;
    let id = u64::try_from(tx.last_insert_rowid()).unwrap_or_default();
    insert_update(tx, id, &new.status, &new.body, affected, now)?;
    Ok(id)
}

fn insert_update(
    tx: &Transaction<'_>,
    id: u64,
    status: &str,
    body: &str,
    affected: &[Transition],
    now: u64,
) -> Sql<()> {
    let affected = serde_json::to_string(affected).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO updates (incident, status, body, created_at, affected) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, status, body, now, affected],
    )?;
    let resolved = CLOSED.contains(&status).then_some(now);
    tx.execute(
        "UPDATE incidents SET status = ?2, updated_at = ?3, resolved_at = COALESCE(resolved_at, ?4) WHERE id = ?1",
        params![id, status, now, resolved],
    )?;
    Ok(())
}

const INCIDENT_COLUMNS: &str =
    "id, name, status, impact, automatic, created_at, updated_at, resolved_at, scheduled_for, \
    scheduled_until, components";
const UPDATE_COLUMNS: &str = "id, status, body, created_at, affected";

fn incident_row(r: &rusqlite::Row<'_>) -> Sql<Incident> {
    Ok(Incident {
        id: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        impact: r.get(3)?,
        automatic: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        resolved_at: r.get(7)?,
        scheduled_for: r.get(8)?,
        scheduled_until: r.get(9)?,
        components: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
        updates: Vec::new(),
    })
}

/// An update from its [`UPDATE_COLUMNS`], starting at column `at`.
fn update_row(r: &rusqlite::Row<'_>, at: usize) -> Sql<Update> {
    Ok(Update {
        id: r.get(at)?,
        status: r.get(at + 1)?,
        body: r.get(at + 2)?,
        created_at: r.get(at + 3)?,
        affected_components: serde_json::from_str(&r.get::<_, String>(at + 4)?).unwrap_or_default(),
    })
}

fn read_incident(conn: &Connection, id: u64) -> Sql<Option<Incident>> {
    let found = conn
        .query_row(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"), [id], incident_row)
        .optional()?;
    let Some(mut incident) = found else { return Ok(None) };
    let mut q = conn.prepare(&format!("SELECT {UPDATE_COLUMNS} FROM updates WHERE incident = ?1 ORDER BY id DESC"))?;
    incident.updates = q.query_map([id], |r| update_row(r, 0))?.collect::<Sql<_>>()?;
    Ok(Some(incident))
}

fn enqueue(tx: &Transaction<'_>, hooks: &[String], events: &[serde_json::Value], now: u64) -> Sql<usize> {
    let mut n = 0;
    for event in events {
        let body = event.to_string();
        for url in hooks {
            tx.execute(
                "INSERT INTO outbox (url, body, attempts, next_at) VALUES (?1, ?2, 0, ?3)",
                params![url, body, now],
            )?;
            n += 1;
        }
    }
    Ok(n)
}
