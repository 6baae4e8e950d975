//! Cache purges for the whole fleet: an operator's purge is recorded (with its audit record) and
//! handed to every node on a long poll of its own, like kill switches, so a purge never waits
//! behind a rollout. Each purge has a sequence number; nodes ask for "the purges after S". The
//! last [`KEPT`] are kept: a node that missed older ones (down for a long time) is told so, and
//! purges everything.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::store::{col_u64, insert_audit, now_ms, to_i64, Store, StoreError};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS purges (
    seq     INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    request TEXT    NOT NULL
);
";

/// Purges kept for nodes that are behind.
pub const KEPT: u64 = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct Purge {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub request: serde_json::Value,
}

/// What a node behind `after` is to apply.
#[derive(Debug, Clone, Serialize)]
pub struct Feed {
    /// The newest purge's sequence number (0: none yet).
    pub latest: u64,
    pub purges: Vec<Purge>,
    /// False when purges after `after` are no longer kept: purge everything.
    pub complete: bool,
}

impl Store {
    /// Records a purge (already checked); returns its sequence number.
    pub fn add_purge(&self, actor: &str, request: &palisade_config::purge::PurgeRequest) -> Result<u64, StoreError> {
        let text = serde_json::to_string(request).unwrap_or_default();
        let summary = request.summary();
        self.write(|tx| {
            let last: Option<i64> = tx.query_row("SELECT max(seq) FROM purges", [], |r| r.get(0)).optional()?.flatten();
            let seq = last.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO purges (seq, at_ms, actor, request) VALUES (?1, ?2, ?3, ?4)",
                params![seq, to_i64(now_ms())?, actor, text],
            )?;
            tx.execute("DELETE FROM purges WHERE seq <= ?1", params![seq - to_i64(KEPT)?])?;
            insert_audit(tx, now_ms(), actor, "cache purge", &format!("purge {seq}"), "recorded", &summary)?;
            Ok(u64::try_from(seq).unwrap_or(0))
        })
    }

    /// The purges after `after` (None: a node that has just started asks only for the latest).
    pub fn purges_after(&self, after: Option<u64>) -> Result<Feed, StoreError> {
        let conn = self.lock()?;
        let (oldest, latest): (Option<i64>, Option<i64>) =
            conn.query_row("SELECT min(seq), max(seq) FROM purges", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let latest = latest.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
        let Some(after) = after else { return Ok(Feed { latest, purges: Vec::new(), complete: true }) };
        let oldest = oldest.and_then(|o| u64::try_from(o).ok()).unwrap_or(0);
        let mut stmt = conn
            .prepare_cached("SELECT seq, at_ms, actor, request FROM purges WHERE seq > ?1 ORDER BY seq LIMIT 1000")?;
        let rows = stmt.query_map(params![to_i64(after)?], |row| {
            let text: String = row.get(3)?;
            Ok(Purge {
                seq: col_u64(row, 0)?,
                at_ms: col_u64(row, 1)?,
                actor: row.get(2)?,
                request: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            })
        })?;
        let purges: Vec<Purge> = rows.collect::<Result<_, _>>()?;
        Ok(Feed { latest, complete: oldest == 0 || after + 1 >= oldest, purges })
    }

    /// A node has applied the purges up to `seq`.
    pub fn purge_ack(&self, node: &str, seq: u64) -> Result<(), StoreError> {
        self.write(|conn| insert_audit(conn, now_ms(), node, "cache purge ack", &format!("purge {seq}"), "applied", ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_config::purge::PurgeRequest;

    #[test]
    fn purges_are_kept_in_order_and_a_node_too_far_behind_is_told() {
        let dir = std::env::temp_dir().join(format!("palisade-purge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("state.db")).unwrap();
        assert_eq!(store.purges_after(None).unwrap().latest, 0);
        let tag = |t: &str| PurgeRequest { tags: vec![t.into()], ..Default::default() };
        assert_eq!(store.add_purge("alice", &tag("a")).unwrap(), 1);
        assert_eq!(store.add_purge("alice", &tag("b")).unwrap(), 2);
        let feed = store.purges_after(Some(0)).unwrap();
        assert_eq!((feed.latest, feed.purges.len(), feed.complete), (2, 2, true));
        assert_eq!(feed.purges[1].request["tags"][0], "b");
        let feed = store.purges_after(Some(2)).unwrap();
        assert!(feed.purges.is_empty() && feed.complete);
        // A node that has just started learns where the feed is, and nothing to apply.
        let feed = store.purges_after(None).unwrap();
        assert_eq!((feed.latest, feed.purges.len()), (2, 0));
        for i in 0..KEPT {
            store.add_purge("alice", &tag(&format!("t{i}"))).unwrap();
        }
        let feed = store.purges_after(Some(1)).unwrap();
        assert!(!feed.complete, "purge 2 is no longer kept");
        assert!(store.purges_after(Some(2)).unwrap().complete);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
