//! Staged rollouts with health gates and automatic rollback.
//!
//! A rollout moves one config version through stages (default: 1 canary node, 10 %, 50 %,
//! 100 %). At each stage the nodes of the stage are assigned the version; the stage waits until
//! every one of them runs it (an ACK), then bakes for `bake_ms` and compares the 5xx rate of the
//! nodes on the new version with that of the nodes still on the old one over the same window.
//! - Any NACK, or no ACK within [`ACK_TIMEOUT`]: roll back.
//! - A 5xx rate on the new version above the old one's by more than [`MAX_ERROR_RATE_RISE`]
//!   (with at least [`MIN_ERRORS`] errors): roll back, as soon as it shows, bake or not.
//! - A p99 latency on the new version above twice the old one's and at least
//!   [`MIN_P99_RISE_MS`] slower (with [`MIN_LATENCY_SAMPLES`] samples): roll back, the same way.
//! - No traffic on the new version during the bake: hold, never pass, and ask the stage's nodes
//!   for synthetic requests ([`PROBES`] through their own listener, in answer to their next
//!   report), which are then judged like any traffic.
//! - Otherwise the next stage; after the last, done.
//!
//! Rollback sends every node on the new version back to where the rollout found it (its previous
//! version, or its boot config when it had none). All state is in the store: the engine is a
//! loop that reads it, so a restarted control plane carries on where it was.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::store::{col_opt_u64, col_u64, insert_audit, now_ms, to_i64, Node, Store, StoreError};

/// Synthetic requests a holding stage asks of each of its nodes.
pub const PROBES: u64 = 20;

pub const DEFAULT_STAGES: &[&str] = &["1", "10%", "50%", "100%"];
pub const DEFAULT_BAKE_MS: u64 = 30_000;
/// The emergency lane's defaults: still staged, still gated, just sooner.
pub const EMERGENCY_STAGES: &[&str] = &["1", "50%", "100%"];
pub const EMERGENCY_BAKE_MS: u64 = 5_000;
pub const MAX_BAKE_MS: u64 = 24 * 3600 * 1000;
pub const MAX_STAGES: usize = 10;
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How much higher (absolute) the new version's 5xx rate may be than the old one's.
pub const MAX_ERROR_RATE_RISE: f64 = 0.02;
/// Fewer 5xx than this in a bake never fail it (one error is not a regression).
pub const MIN_ERRORS: u64 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub id: u64,
    pub version: u64,
    pub actor: String,
    /// `running`, `done`, `rolled_back`.
    pub state: String,
    pub stages: Vec<String>,
    pub stage: usize,
    pub bake_ms: u64,
    pub stage_started_ms: u64,
    pub baked_from_ms: Option<u64>,
    pub reason: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_ms: u64,
    pub message: String,
}

/// A stage size: `N` nodes or `P%` of the fleet (at least one node).
pub fn parse_stage(s: &str) -> Result<(), String> {
    let ok = match s.strip_suffix('%') {
        Some(p) => p.parse::<u32>().is_ok_and(|p| (1..=100).contains(&p)),
        None => s.parse::<u32>().is_ok_and(|n| n >= 1),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("stage {s:?}: a node count (>= 1) or a percentage (1%..100%)"))
    }
}

fn stage_size(stage: &str, fleet: usize) -> usize {
    let n = match stage.strip_suffix('%') {
        Some(p) => (fleet * p.parse::<usize>().unwrap_or(100)).div_ceil(100),
        None => stage.parse::<usize>().unwrap_or(fleet),
    };
    n.clamp(1, fleet.max(1))
}

const ROLLOUT_COLUMNS: &str =
    "id, version, actor, state, stages, stage, bake_ms, stage_started_ms, baked_from_ms, reason, created_ms";

fn rollout_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Rollout> {
    let u = |i| col_u64(row, i);
    let stages: String = row.get(4)?;
    Ok(Rollout {
        id: u(0)?,
        version: u(1)?,
        actor: row.get(2)?,
        state: row.get(3)?,
        stages: stages.split(',').map(str::to_string).collect(),
        stage: usize::try_from(u(5)?).unwrap_or(0),
        bake_ms: u(6)?,
        stage_started_ms: u(7)?,
        baked_from_ms: col_opt_u64(row, 8)?,
        reason: row.get(9)?,
        created_ms: u(10)?,
    })
}

/// Requests, 5xx, module failures and latency a node served in a window, from its cumulative
/// reports.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    /// Errors returned by security modules, and panics caught at their boundaries.
    pub module_errors: u64,
    pub module_panics: u64,
    /// Bucket upper bounds (ms) and counts in the window (one more count: above every bound).
    pub le_ms: Vec<f64>,
    pub latency: Vec<u64>,
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.module_errors += other.module_errors;
        self.module_panics += other.module_panics;
        if self.le_ms.is_empty() {
            self.le_ms = other.le_ms.clone();
        }
        if other.le_ms == self.le_ms {
            self.latency.resize(other.latency.len().max(self.latency.len()), 0);
            for (a, b) in self.latency.iter_mut().zip(&other.latency) {
                *a += b;
            }
        }
    }

    /// The 99th percentile's bucket bound in ms (infinite: above every bound); None without samples.
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let want = total - total / 100;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(self.le_ms.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// Fewer samples than this on the new version never fail a latency gate.
pub const MIN_LATENCY_SAMPLES: u64 = 50;
/// A p99 regression: above twice the old p99 and at least this much slower.
pub const MIN_P99_RISE_MS: f64 = 100.0;

/// Longest histogram a node may report.
pub const MAX_LATENCY_BUCKETS: usize = 64;

impl Store {
    /// A node's cumulative counters, as it reports them every few seconds. Written here only
    /// (with replicas, each applies every report itself).
    pub fn report(&self, node: &str, r: &crate::bodies::Report) -> Result<(), StoreError> {
        let conn = self.lock()?;
        let at = now_ms();
        let histogram = if r.latency.is_empty() {
            String::new()
        } else {
            serde_json::json!({ "le": r.latency_le_ms, "n": r.latency }).to_string()
        };
        let module_errors: u64 = r.modules.values().map(|m| m.errors).sum();
        let module_panics: u64 = r.modules.values().map(|m| m.panics).sum();
        let running_hash = r.hash.as_deref();
        conn.execute(
            "INSERT INTO reports (node, at_ms, requests, errors, latency, module_errors, module_panics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                node,
                to_i64(at)?,
                to_i64(r.requests)?,
                to_i64(r.errors)?,
                histogram,
                to_i64(module_errors)?,
                to_i64(module_panics)?
            ],
        )?;
        conn.execute(
            "UPDATE nodes SET last_seen_ms = ?2, running_hash = coalesce(?3, running_hash) WHERE name = ?1",
            params![node, to_i64(at)?, running_hash],
        )?;
        if let Some(learning) = &r.bot {
            let json = serde_json::to_string(learning).map_err(|e| StoreError::Range(e.to_string()))?;
            conn.execute(
                "INSERT INTO bot_learning (node, at_ms, learning) VALUES (?1, ?2, ?3)
                 ON CONFLICT(node) DO UPDATE SET at_ms = excluded.at_ms, learning = excluded.learning",
                params![node, to_i64(at)?, json],
            )?;
        }
        // Ten minutes of reports are enough for any bake window kept here.
        conn.execute(
            "DELETE FROM reports WHERE node = ?1 AND at_ms < ?2",
            params![node, to_i64(at.saturating_sub(600_000))?],
        )?;
        Ok(())
    }

    /// Every node's latest counts of labelled bot traffic, summed: (nodes, counts).
    pub fn bot_learning(&self) -> Result<(usize, palisade_config::botlearn::Learning), StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached("SELECT learning FROM bot_learning")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        let mut sum = palisade_config::botlearn::Learning::default();
        let mut nodes = 0;
        for row in rows {
            if let Ok(l) = serde_json::from_str::<palisade_config::botlearn::Learning>(&row) {
                sum.add(&l);
                nodes += 1;
            }
        }
        Ok((nodes, sum))
    }

    /// What `node` served between `from` and now (a counter that went down means a restart).
    pub fn traffic(&self, node: &str, from_ms: u64) -> Result<Traffic, StoreError> {
        let conn = self.lock()?;
        type Row = (i64, i64, String, i64, i64);
        let row = |order: &str| -> Result<Option<Row>, StoreError> {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT requests, errors, latency, module_errors, module_panics FROM reports
                              WHERE node = ?1 AND at_ms >= ?2 ORDER BY at_ms {order} LIMIT 1"
                    ),
                    params![node, to_i64(from_ms)?],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?)
        };
        let (Some(first), Some(last)) = (row("ASC")?, row("DESC")?) else { return Ok(Traffic::default()) };
        let restarted = last.0 < first.0;
        let delta = |a: i64, b: i64| u64::try_from(if restarted { b } else { b - a }).unwrap_or(0);
        let histogram = |text: &str| -> (Vec<f64>, Vec<u64>) {
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            let le = v
                .get("le")
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default();
            let n = v
                .get("n")
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default();
            (le, n)
        };
        let (le_ms, n_last) = histogram(&last.2);
        let (le_first, n_first) = histogram(&first.2);
        let latency = if restarted || le_first != le_ms {
            n_last
        } else {
            n_last.iter().enumerate().map(|(i, b)| b.saturating_sub(n_first.get(i).copied().unwrap_or(0))).collect()
        };
        Ok(Traffic {
            requests: delta(first.0, last.0),
            errors: delta(first.1, last.1),
            module_errors: delta(first.3, last.3),
            module_panics: delta(first.4, last.4),
            le_ms,
            latency,
        })
    }

    /// Starts a rollout of `version`; one at a time.
    pub fn start_rollout(
        &self,
        actor: &str,
        version: u64,
        stages: &[String],
        bake_ms: u64,
        lane: &str,
    ) -> Result<Result<Rollout, String>, StoreError> {
        self.write(|tx| {
            if !crate::store::is_config_version(tx, version)? {
                return Ok(Err(format!("no config version {version}")));
            }
            let active: Option<i64> =
                tx.query_row("SELECT id FROM rollouts WHERE state IN ('running', 'paused')", [], |r| r.get(0)).optional()?;
            if let Some(id) = active {
                return Ok(Err(format!("rollout {id} is running or paused; abort it or wait")));
            }
            let at = to_i64(now_ms())?;
            tx.execute(
                "INSERT INTO rollouts (version, actor, state, stages, stage, bake_ms, stage_started_ms, created_ms) VALUES (?1, ?2, 'running', ?3, 0, ?4, ?5, ?5)",
                params![to_i64(version)?, actor, stages.join(","), to_i64(bake_ms)?, at],
            )?;
            let id = tx.last_insert_rowid();
            insert_audit(
                tx,
                now_ms(),
                actor,
                "rollout",
                &format!("rollout {id}"),
                "started",
                &format!("config v{version}, stages {}", stages.join(" ")),
            )?;
            tx.execute(
                "INSERT INTO rollout_events (rollout, at_ms, message) VALUES (?1, ?2, ?3)",
                params![
                    id,
                    at,
                    format!(
                        "started by {actor} ({lane} lane): config v{version}, stages {}, bake {bake_ms} ms",
                        stages.join(" ")
                    )
                ],
            )?;
            let r =
                tx.query_row(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"), params![id], rollout_row)?;
            Ok(Ok(r))
        })
    }

    pub fn rollouts(&self, limit: u32) -> Result<Vec<Rollout>, StoreError> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map(params![limit], rollout_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn rollout(&self, id: u64) -> Result<Option<(Rollout, Vec<Event>)>, StoreError> {
        let conn = self.lock()?;
        let Some(r) = conn
            .query_row(
                &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"),
                params![to_i64(id)?],
                rollout_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt =
            conn.prepare_cached("SELECT at_ms, message FROM rollout_events WHERE rollout = ?1 ORDER BY id")?;
        let events = stmt
            .query_map(params![to_i64(id)?], |row| Ok(Event { at_ms: col_u64(row, 0)?, message: row.get(1)? }))?
            .collect::<Result<_, _>>()?;
        Ok(Some((r, events)))
    }

    fn running(&self) -> Result<Option<Rollout>, StoreError> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE state = 'running'"), [], rollout_row)
            .optional()?)
    }

    fn last_event(&self, id: u64) -> Result<String, StoreError> {
        let conn = self.lock()?;
        Ok(conn
            .query_row(
                "SELECT message FROM rollout_events WHERE rollout = ?1 ORDER BY id DESC LIMIT 1",
                params![to_i64(id)?],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// One step of a rollout, in one commit (a leader that dies mid-step leaves all of it or
    /// none for the next one): `assign` the version to these nodes (remembering where each came
    /// from), move to `stage` (index, bake start, state), and record `events`.
    fn step(
        &self,
        r: &Rollout,
        assign: &[&str],
        stage: Option<(usize, Option<u64>, &str)>,
        events: &[String],
    ) -> Result<(), StoreError> {
        for e in events {
            tracing::info!(rollout = r.id, "{e}");
        }
        self.write(|tx| {
            let (id, at) = (to_i64(r.id)?, to_i64(now_ms())?);
            for node in assign {
                tx.execute(
                    "UPDATE nodes SET rollback_to = assigned, assigned = ?2 WHERE name = ?1 AND (assigned IS NULL OR assigned != ?2)",
                    params![node, to_i64(r.version)?],
                )?;
            }
            if let Some((stage, baked_from, state)) = stage {
                let (stage_i, baked) = (to_i64(stage as u64)?, baked_from.map(to_i64).transpose()?);
                tx.execute(
                    "UPDATE rollouts SET stage = ?2, baked_from_ms = ?3, state = ?4,
                       stage_started_ms = CASE WHEN stage = ?2 THEN stage_started_ms ELSE ?5 END WHERE id = ?1",
                    params![id, stage_i, baked, state, at],
                )?;
            }
            for e in events {
                tx.execute(
                    "INSERT INTO rollout_events (rollout, at_ms, message) VALUES (?1, ?2, ?3)",
                    params![id, at, e],
                )?;
            }
            Ok(())
        })
    }

    /// Pauses a running rollout (`pause`) or resumes a paused one: nodes stay where they are
    /// while it is paused, and a resumed stage bakes again from the start. False when the
    /// rollout is not in the state to do so.
    pub fn pause(&self, id: u64, actor: &str, pause: bool) -> Result<bool, StoreError> {
        let (from, to, what) = if pause { ("running", "paused", "paused") } else { ("paused", "running", "resumed") };
        self.write(|tx| {
            let (id, at) = (to_i64(id)?, to_i64(now_ms())?);
            let changed = tx.execute(
                "UPDATE rollouts SET state = ?3, baked_from_ms = NULL, stage_started_ms = ?4 WHERE id = ?1 AND state = ?2",
                params![id, from, to, at],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO rollout_events (rollout, at_ms, message) VALUES (?1, ?2, ?3)",
                params![id, at, format!("{what} by {actor}")],
            )?;
            insert_audit(tx, now_ms(), actor, "rollout", &format!("rollout {id}"), what, "")?;
            Ok(true)
        })
    }

    /// Every node on the rollout's version goes back where the rollout found it.
    pub fn roll_back(&self, id: u64, actor: &str, reason: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            let version: Option<i64> = tx
                .query_row(
                    "SELECT version FROM rollouts WHERE id = ?1 AND state IN ('running', 'paused')",
                    params![to_i64(id)?],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(version) = version else { return Ok(false) };
            let moved = tx.execute("UPDATE nodes SET assigned = rollback_to WHERE assigned = ?1", params![version])?;
            tx.execute(
                "UPDATE rollouts SET state = 'rolled_back', reason = ?2 WHERE id = ?1",
                params![to_i64(id)?, reason],
            )?;
            let at = to_i64(now_ms())?;
            tx.execute(
                "INSERT INTO rollout_events (rollout, at_ms, message) VALUES (?1, ?2, ?3)",
                params![to_i64(id)?, at, format!("rolled back ({moved} node(s)): {reason}")],
            )?;
            insert_audit(tx, now_ms(), actor, "rollback", &format!("rollout {id}"), "rolled_back", reason)?;
            crate::artifacts::rolled_back(tx, version, reason)?;
            tracing::warn!(rollout = id, reason, "rolled back");
            Ok(true)
        })
    }
}

/// What a look at the running rollout did.
#[derive(Debug, Default)]
pub struct Tick {
    /// Assignments changed: wake the nodes' polls.
    pub changed: bool,
    /// Nodes to ask for synthetic requests: the stage holds for want of traffic.
    pub probe: Vec<String>,
}

const CHANGED: Tick = Tick { changed: true, probe: Vec::new() };

/// One look at the running rollout, if any.
pub fn tick(store: &Store) -> Result<Tick, StoreError> {
    let Some(r) = store.running()? else { return Ok(Tick::default()) };
    let mut nodes: Vec<Node> = store.nodes()?;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    if nodes.is_empty() {
        let msg = "holding: no nodes registered";
        if store.last_event(r.id)? != msg {
            store.step(&r, &[], None, &[msg.to_string()])?;
        }
        return Ok(Tick::default());
    }
    let Some(stage) = r.stages.get(r.stage) else {
        store.step(&r, &[], Some((r.stage, None, "done")), &[])?;
        return Ok(Tick::default());
    };
    let count = stage_size(stage, nodes.len());
    let (target, rest) = nodes.split_at(count.min(nodes.len()));
    let moving: Vec<&str> = target.iter().filter(|n| n.assigned != Some(r.version)).map(|n| n.name.as_str()).collect();
    if !moving.is_empty() {
        let names: Vec<&str> = target.iter().map(|n| n.name.as_str()).collect();
        let msg = format!("stage {} ({stage}): assigned to {}", r.stage + 1, names.join(", "));
        store.step(&r, &moving, None, &[msg])?;
        return Ok(CHANGED);
    }
    if let Some(n) = target.iter().find(|n| n.nack_version == Some(r.version) && n.applied != Some(r.version)) {
        let why = n.nack_detail.clone().unwrap_or_default();
        store.roll_back(r.id, "control", &format!("node {} refused v{}: {why}", n.name, r.version))?;
        return Ok(CHANGED);
    }
    let now = now_ms();
    if let Some(n) = target.iter().find(|n| n.applied != Some(r.version)) {
        if now.saturating_sub(r.stage_started_ms) > ACK_TIMEOUT.as_millis() as u64 {
            store.roll_back(
                r.id,
                "control",
                &format!("node {} did not run v{} within {ACK_TIMEOUT:?}", n.name, r.version),
            )?;
            return Ok(CHANGED);
        }
        return Ok(Tick::default());
    }
    let Some(baked_from) = r.baked_from_ms else {
        let msg =
            format!("stage {}: {} node(s) run v{}; baking {} ms", r.stage + 1, target.len(), r.version, r.bake_ms);
        store.step(&r, &[], Some((r.stage, Some(now), "running")), &[msg])?;
        return Ok(Tick::default());
    };
    // Judged on every tick: a regression rolls back as soon as it shows (fail fast); a pass
    // needs the whole bake (pass slow).
    let baking = now.saturating_sub(baked_from) < r.bake_ms;
    let sum = |list: &[Node]| -> Result<Traffic, StoreError> {
        let mut t = Traffic::default();
        for n in list {
            t.add(&store.traffic(&n.name, baked_from)?);
        }
        Ok(t)
    };
    let (new, old) = (sum(target)?, sum(rest)?);
    let rate = |t: &Traffic| if t.requests == 0 { 0.0 } else { t.errors as f64 / t.requests as f64 };
    let p99 = |t: &Traffic| match t.p99_ms() {
        None => "-".to_string(),
        Some(ms) if ms.is_infinite() => "over the largest bucket".to_string(),
        Some(ms) => format!("<= {ms} ms"),
    };
    let measured = format!(
        "new v{}: {} req, {} 5xx ({:.2} %), p99 {}; old: {} req, {} 5xx ({:.2} %), p99 {}",
        r.version,
        new.requests,
        new.errors,
        rate(&new) * 100.0,
        p99(&new),
        old.requests,
        old.errors,
        rate(&old) * 100.0,
        p99(&old)
    );
    let when = if baking { "during the bake" } else { "after the bake" };
    if new.errors >= MIN_ERRORS && rate(&new) > rate(&old) + MAX_ERROR_RATE_RISE {
        store.roll_back(r.id, "control", &format!("stage {}: 5xx regression {when}: {measured}", r.stage + 1))?;
        return Ok(CHANGED);
    }
    // A panic caught in a module on the new version, where the old one had none.
    if new.module_panics > 0 && old.module_panics == 0 {
        let why = format!(
            "stage {}: {} panic(s) caught in modules on v{} {when} (old version: none); {measured}",
            r.stage + 1,
            new.module_panics,
            r.version
        );
        store.roll_back(r.id, "control", &why)?;
        return Ok(CHANGED);
    }
    let module_rate = |t: &Traffic| if t.requests == 0 { 0.0 } else { t.module_errors as f64 / t.requests as f64 };
    if new.module_errors >= MIN_ERRORS && module_rate(&new) > module_rate(&old) + MAX_ERROR_RATE_RISE {
        let why = format!(
            "stage {}: module error regression {when}: new v{}: {} module errors in {} req ({:.2} %); old: {} in {} req ({:.2} %)",
            r.stage + 1,
            r.version,
            new.module_errors,
            new.requests,
            module_rate(&new) * 100.0,
            old.module_errors,
            old.requests,
            module_rate(&old) * 100.0
        );
        store.roll_back(r.id, "control", &why)?;
        return Ok(CHANGED);
    }
    let samples: u64 = new.latency.iter().sum();
    if let (Some(n), Some(o)) = (new.p99_ms(), old.p99_ms()) {
        if samples >= MIN_LATENCY_SAMPLES && n > 2.0 * o && n - o >= MIN_P99_RISE_MS {
            store.roll_back(
                r.id,
                "control",
                &format!("stage {}: p99 latency regression {when}: {measured}", r.stage + 1),
            )?;
            return Ok(CHANGED);
        }
    }
    if baking {
        return Ok(Tick::default());
    }
    if new.requests == 0 {
        let msg = format!(
            "stage {}: holding, no traffic on the new version to judge it by; asking its nodes for synthetic requests",
            r.stage + 1
        );
        if store.last_event(r.id)? != msg {
            store.step(&r, &[], None, &[msg])?;
        }
        return Ok(Tick { changed: false, probe: target.iter().map(|n| n.name.clone()).collect() });
    }
    let next = r.stage + 1;
    let passed = format!("stage {} passed: {measured}", r.stage + 1);
    if next >= r.stages.len() {
        store.step(&r, &[], Some((next, None, "done")), &[passed, format!("done: every node runs v{}", r.version)])?;
    } else {
        store.step(&r, &[], Some((next, None, "running")), &[passed])?;
    }
    Ok(Tick::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_from_buckets() {
        let t = |n: Vec<u64>| Traffic { le_ms: vec![1.0, 10.0, 100.0], latency: n, ..Traffic::default() };
        assert_eq!(t(vec![0, 0, 0, 0]).p99_ms(), None);
        assert_eq!(t(vec![100, 0, 0, 0]).p99_ms(), Some(1.0));
        assert_eq!(t(vec![98, 2, 0, 0]).p99_ms(), Some(10.0));
        assert_eq!(t(vec![99, 0, 0, 1]).p99_ms(), Some(1.0));
        assert_eq!(t(vec![50, 0, 0, 50]).p99_ms(), Some(f64::INFINITY));
        let mut sum = t(vec![1, 2, 3, 4]);
        sum.add(&t(vec![1, 1, 1, 1]));
        assert_eq!(sum.latency, vec![2, 3, 4, 5]);
    }

    #[test]
    fn stage_sizes() {
        assert_eq!(stage_size("1", 10), 1);
        assert_eq!(stage_size("10%", 10), 1);
        assert_eq!(stage_size("10%", 11), 2);
        assert_eq!(stage_size("50%", 3), 2);
        assert_eq!(stage_size("100%", 3), 3);
        assert_eq!(stage_size("5", 3), 3);
        assert!(parse_stage("0").is_err() && parse_stage("101%").is_err() && parse_stage("x").is_err());
        assert!(parse_stage("1").is_ok() && parse_stage("25%").is_ok());
    }
}
