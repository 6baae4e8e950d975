//! Kill switches on the control plane: engaged and released by operators, fanned out to every
//! node on a long poll of their own (not a staged rollout: a switch can only turn something off,
//! and it is the tool for when a staged change is too slow). Every change bumps one generation
//! number; nodes ask for "anything after generation G".

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::store::{col_u64, insert_audit, now_ms, to_i64, Store, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS killswitches (
    name       TEXT    PRIMARY KEY,
    engaged_ms INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    reason     TEXT    NOT NULL
);
";

#[derive(Debug, Clone, Serialize)]
pub struct Engaged {
    pub name: String,
    pub engaged_ms: u64,
    pub actor: String,
    pub reason: String,
}

impl Store {
    /// (generation, switches engaged).
    pub fn kill_switches(&self) -> Result<(u64, Vec<Engaged>), StoreError> {
        let conn = self.lock()?;
        let generation: Option<i64> =
            conn.query_row("SELECT value FROM meta WHERE key = 'kill_generation'", [], |r| r.get(0)).optional()?;
        let mut stmt = conn.prepare_cached("SELECT name, engaged_ms, actor, reason FROM killswitches ORDER BY name")?;
        let rows = stmt.query_map([], |row| {
            Ok(Engaged { name: row.get(0)?, engaged_ms: col_u64(row, 1)?, actor: row.get(2)?, reason: row.get(3)? })
        })?;
        Ok((generation.and_then(|g| u64::try_from(g).ok()).unwrap_or(0), rows.collect::<Result<_, _>>()?))
    }

    /// Engages (`reason` Some) or releases (None) a switch; returns the new generation, or None
    /// when nothing changed.
    pub fn set_kill_switch(&self, actor: &str, name: &str, reason: Option<&str>) -> Result<Option<u64>, StoreError> {
        self.write(|tx| {
            let changed = match reason {
                Some(why) => tx.execute(
                    "INSERT INTO killswitches (name, engaged_ms, actor, reason) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
                    params![name, to_i64(now_ms())?, actor, why],
                )?,
                None => tx.execute("DELETE FROM killswitches WHERE name = ?1", params![name])?,
            };
            if changed == 0 {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('kill_generation', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1",
                [],
            )?;
            let generation: i64 = tx.query_row("SELECT value FROM meta WHERE key = 'kill_generation'", [], |r| r.get(0))?;
            let (action, result) = if reason.is_some() { ("killswitch", "engaged") } else { ("killswitch", "released") };
            insert_audit(tx, now_ms(), actor, action, &format!("switch {name}"), result, reason.unwrap_or(""))?;
            Ok(u64::try_from(generation).ok())
        })
    }

    /// A node has applied a generation.
    pub fn kill_switch_ack(&self, node: &str, generation: u64, unknown: &[String]) -> Result<(), StoreError> {
        if generation == 0 {
            // No switch was ever set: nothing to record (every node says so when it connects).
            return Ok(());
        }
        self.write(|conn| {
            let detail = if unknown.is_empty() {
                String::new()
            } else {
                format!("unknown to this node: {}", unknown.join(", "))
            };
            insert_audit(
                conn,
                now_ms(),
                node,
                "killswitch ack",
                &format!("generation {generation}"),
                "applied",
                &detail,
            )
        })
    }
}
