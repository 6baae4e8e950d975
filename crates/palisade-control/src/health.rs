//! What the dashboard shows of each node beyond its registration: its last two reports (so a
//! rate, not a total) and the kill-switch generation it last applied.

use std::collections::HashMap;

use serde::Serialize;

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeHealth {
    /// Requests and 5xx between its last two reports, and the time between them.
    pub requests: u64,
    pub errors: u64,
    pub over_ms: u64,
    /// Its security modules' errors and panics since it started.
    pub module_errors: u64,
    pub module_panics: u64,
    /// The kill-switch generation it last acknowledged.
    pub kill_generation: Option<u64>,
}

impl NodeHealth {
    /// Requests per second between its last two reports.
    pub fn rate(&self) -> f64 {
        if self.over_ms == 0 {
            0.0
        } else {
            self.requests as f64 * 1000.0 / self.over_ms as f64
        }
    }
}

impl Store {
    /// Per node, its recent health.
    pub fn node_health(&self) -> Result<HashMap<String, NodeHealth>, StoreError> {
        let conn = self.lock()?;
        let mut out: HashMap<String, NodeHealth> = HashMap::new();
        let mut q = conn.prepare_cached(
            "SELECT node, at_ms, requests, errors, module_errors, module_panics FROM (
               SELECT *, ROW_NUMBER() OVER (PARTITION BY node ORDER BY at_ms DESC) AS rank FROM reports
               WHERE at_ms > (SELECT COALESCE(MAX(at_ms), 0) - 600000 FROM reports))
             WHERE rank <= 2 ORDER BY node, at_ms DESC",
        )?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, u64>(2)?,
                r.get::<_, u64>(3)?,
                r.get::<_, u64>(4)?,
                r.get::<_, u64>(5)?,
            ))
        })?;
        let mut latest: HashMap<String, (u64, u64, u64)> = HashMap::new();
        for row in rows {
            let (node, at, requests, errors, module_errors, module_panics) = row?;
            match latest.get(&node).copied() {
                None => {
                    latest.insert(node.clone(), (at, requests, errors));
                    out.insert(node, NodeHealth { module_errors, module_panics, ..NodeHealth::default() });
                }
                Some((at2, req2, err2)) => {
                    if let Some(h) = out.get_mut(&node) {
                        h.requests = req2.saturating_sub(requests);
                        h.errors = err2.saturating_sub(errors);
                        h.over_ms = at2.saturating_sub(at);
                    }
                }
            }
        }
        let mut q = conn.prepare_cached(
            "SELECT actor, MAX(CAST(substr(target, 12) AS INTEGER)) FROM audit
             WHERE action = 'killswitch ack' GROUP BY actor",
        )?;
        for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<u64>>(1)?)))? {
            let (node, generation) = row?;
            out.entry(node).or_default().kill_generation = generation;
        }
        Ok(out)
    }
}
