//! Traffic analytics from the nodes' interval reports ([`palisade_config::analytics`]), kept in an
//! embedded store of their own (`DATA_DIR/analytics.db`, apart from the config store so that
//! this volume never slows a config commit), with retention and downsampling:
//!
//! - counters per (zone, city) every 10 s for a day, then per minute for 30 days;
//! - heavy hitters per zone every minute for a day (the 40 heaviest per minute and kind), then
//!   per hour for 30 days (the 20 heaviest).
//!
//! Reports of several nodes in one city and bucket add up. A range query picks the finest
//! resolution the range has, and a step that gives at most [`MAX_POINTS`] points.
//! Analytics are what this replica received: they are not replicated (they are not state).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use palisade_config::analytics::{add_counts, merge_top, Report, COUNTS, TOP_K};
use rusqlite::{params, Connection};
use serde::Serialize;

pub const FINE_S: u64 = 10;
pub const COARSE_S: u64 = 60;
pub const TOP_FINE_S: u64 = 60;
pub const TOP_COARSE_S: u64 = 3600;
/// How long each resolution is kept.
pub const FINE_KEEP_S: u64 = 86_400;
pub const COARSE_KEEP_S: u64 = 30 * 86_400;
/// Most points one query answers.
pub const MAX_POINTS: u64 = 360;
/// Heavy hitters kept per minute and kind once the minute is over.
const TOP_PER_MINUTE: usize = 2 * TOP_K;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (res INTEGER NOT NULL, ts INTEGER NOT NULL, zone TEXT NOT NULL,
    city TEXT NOT NULL, counts TEXT NOT NULL, PRIMARY KEY (res, ts, zone, city)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS top (res INTEGER NOT NULL, ts INTEGER NOT NULL, zone TEXT NOT NULL,
    kind TEXT NOT NULL, key TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (res, ts, zone, kind, key)) WITHOUT ROWID;
";

pub struct Analytics {
    conn: Mutex<Connection>,
}

type Sql<T> = rusqlite::Result<T>;

fn encode(counts: &[u64]) -> String {
    counts.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn decode(text: &str) -> Vec<u64> {
    let mut c: Vec<u64> = text.split(',').map(|n| n.parse().unwrap_or(0)).collect();
    c.resize(COUNTS, 0);
    c
}

fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One point of a series: the start of its step, and the counters summed over it.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: u64,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub from: u64,
    pub to: u64,
    /// Seconds per point.
    pub step: u64,
    pub points: Vec<Point>,
    /// Over the whole range.
    pub total: Vec<u64>,
    pub zones: Vec<String>,
    pub cities: Vec<String>,
    /// The heaviest over the range, by kind (`ip`, `path`, `fingerprint`).
    pub top: BTreeMap<String, Vec<(String, u64)>>,
}

impl Analytics {
    pub fn open(path: &Path) -> Result<Self, String> {
        let open = || -> Sql<Connection> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // Analytics are not state: a power cut may cost the last seconds of them.
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        Ok(Self { conn: Mutex::new(open().map_err(|e| format!("{}: {e}", path.display()))?) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A node's report (already checked), from a node in `city`.
    pub fn ingest(&self, city: &str, report: &Report) -> Sql<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ts = report.start - report.start % FINE_S;
        let minute = report.start - report.start % TOP_FINE_S;
        for (zone, z) in &report.zones {
            let old: Option<String> = tx
                .query_row(
                    "SELECT counts FROM series WHERE res = ?1 AND ts = ?2 AND zone = ?3 AND city = ?4",
                    params![i(FINE_S), i(ts), zone, city],
                    |r| r.get(0),
                )
                .ok();
            let mut counts = old.as_deref().map(decode).unwrap_or_else(|| vec![0; COUNTS]);
            add_counts(&mut counts, &z.counts);
            tx.execute(
                "INSERT OR REPLACE INTO series VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i(FINE_S), i(ts), zone, city, encode(&counts)],
            )?;
            for (kind, list) in z.top.kinds() {
                for (key, n) in list {
                    tx.execute(
                        "INSERT INTO top VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT DO UPDATE SET n = n + excluded.n",
                        params![i(TOP_FINE_S), i(minute), zone, kind, key, i(*n)],
                    )?;
                }
            }
        }
        tx.commit()
    }

    /// Downsampling and retention, as of `now`: run every minute or so.
    pub fn maintain(&self, now: u64) -> Sql<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // 10 s rows older than a day become minute rows.
        let cut = i(now.saturating_sub(FINE_KEEP_S));
        let mut merged: HashMap<(i64, String, String), Vec<u64>> = HashMap::new();
        {
            let mut q = tx.prepare("SELECT ts, zone, city, counts FROM series WHERE res = ?1 AND ts < ?2")?;
            let rows = q.query_map(params![i(FINE_S), cut], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })?;
            for row in rows {
                let (ts, zone, city, counts) = row?;
                let minute = ts - ts.rem_euclid(i(COARSE_S));
                add_counts(merged.entry((minute, zone, city)).or_default(), &decode(&counts));
            }
        }
        for ((ts, zone, city), counts) in merged {
            let old: Option<String> = tx
                .query_row(
                    "SELECT counts FROM series WHERE res = ?1 AND ts = ?2 AND zone = ?3 AND city = ?4",
                    params![i(COARSE_S), ts, zone, city],
                    |r| r.get(0),
                )
                .ok();
            let mut sum = old.as_deref().map(decode).unwrap_or_else(|| vec![0; COUNTS]);
            add_counts(&mut sum, &counts);
            tx.execute(
                "INSERT OR REPLACE INTO series VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i(COARSE_S), ts, zone, city, encode(&sum)],
            )?;
        }
        tx.execute("DELETE FROM series WHERE res = ?1 AND ts < ?2", params![i(FINE_S), cut])?;
        tx.execute(
            "DELETE FROM series WHERE res = ?1 AND ts < ?2",
            params![i(COARSE_S), i(now.saturating_sub(COARSE_KEEP_S))],
        )?;

        // Finished minutes keep their heaviest; minutes older than a day become hours.
        trim_top(&tx, TOP_FINE_S, i(now.saturating_sub(2 * TOP_FINE_S)), TOP_PER_MINUTE)?;
        let mut hours: HashMap<(i64, String, String), Vec<(String, u64)>> = HashMap::new();
        {
            let mut q = tx.prepare("SELECT ts, zone, kind, key, n FROM top WHERE res = ?1 AND ts < ?2")?;
            let rows = q.query_map(params![i(TOP_FINE_S), cut], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            for row in rows {
                let (ts, zone, kind, key, n) = row?;
                let hour = ts - ts.rem_euclid(i(TOP_COARSE_S));
                hours.entry((hour, zone, kind)).or_default().push((key, u64::try_from(n).unwrap_or(0)));
            }
        }
        for ((hour, zone, kind), list) in hours {
            for (key, n) in merge_top([list.as_slice()], usize::MAX) {
                tx.execute(
                    "INSERT INTO top VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                    params![i(TOP_COARSE_S), hour, zone, kind, key, i(n)],
                )?;
            }
        }
        tx.execute("DELETE FROM top WHERE res = ?1 AND ts < ?2", params![i(TOP_FINE_S), cut])?;
        trim_top(&tx, TOP_COARSE_S, cut, TOP_K)?;
        tx.execute(
            "DELETE FROM top WHERE res = ?1 AND ts < ?2",
            params![i(TOP_COARSE_S), i(now.saturating_sub(COARSE_KEEP_S))],
        )?;
        tx.commit()
    }

    /// The counters of `zone` and `city` (None: all) from `from` to `to` (Unix seconds).
    pub fn query(&self, zone: Option<&str>, city: Option<&str>, from: u64, to: u64, now: u64) -> Sql<Series> {
        let conn = self.conn();
        let res = if from >= now.saturating_sub(FINE_KEEP_S) { FINE_S } else { COARSE_S };
        let span = to.saturating_sub(from).max(1);
        let step = span.div_ceil(MAX_POINTS).div_ceil(res).max(1) * res;
        let mut points: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut total = vec![0; COUNTS];
        let (mut zones, mut cities) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        let mut q =
            conn.prepare("SELECT ts, zone, city, counts FROM series WHERE res = ?1 AND ts >= ?2 AND ts < ?3")?;
        let rows = q.query_map(params![i(res), i(from - from % res), i(to)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        for row in rows {
            let (ts, z, c, counts) = row?;
            zones.insert(z.clone());
            cities.insert(c.clone());
            if zone.is_some_and(|want| want != z) || city.is_some_and(|want| want != c) {
                continue;
            }
            let ts = u64::try_from(ts).unwrap_or(0);
            let counts = decode(&counts);
            add_counts(points.entry(ts - ts % step).or_default(), &counts);
            add_counts(&mut total, &counts);
        }
        // Heavy hitters: per zone only (a city filter does not apply to them).
        let top_res = if from >= now.saturating_sub(FINE_KEEP_S) { TOP_FINE_S } else { TOP_COARSE_S };
        let mut lists: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        let mut q = conn.prepare("SELECT zone, kind, key, n FROM top WHERE res = ?1 AND ts >= ?2 AND ts < ?3")?;
        let rows = q.query_map(params![i(top_res), i(from - from % top_res), i(to)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        for row in rows {
            let (z, kind, key, n) = row?;
            if zone.is_some_and(|want| want != z) {
                continue;
            }
            lists.entry(kind).or_default().push((key, u64::try_from(n).unwrap_or(0)));
        }
        let top = lists.into_iter().map(|(k, l)| (k, merge_top([l.as_slice()], TOP_K))).collect();
        // Every step in the range is a point, with zeros where nothing was reported. A step whose
        // reports may still be on their way (a node sends an interval when it ends) is left out
        // of the points, where it would show as a dip, not out of the totals.
        let first = from - from % step;
        let settled = now.saturating_sub(palisade_config::analytics::INTERVAL_S) + 1;
        let all: Vec<Point> = (0..)
            .map(|n| first + n * step)
            .take_while(|t| *t < to && t + step <= settled)
            .map(|t| Point { t, counts: points.remove(&t).unwrap_or_else(|| vec![0; COUNTS]) })
            .collect();
        Ok(Series {
            from,
            to,
            step,
            points: all,
            total,
            zones: zones.into_iter().collect(),
            cities: cities.into_iter().collect(),
            top,
        })
    }

    /// Rows, and bytes of the pages in use (for the figures in the README; downsampling leaves
    /// pages free for the next rows rather than shrinking the file).
    pub fn size(&self) -> Sql<(u64, u64, u64)> {
        let conn = self.conn();
        let series: u64 = conn.query_row("SELECT COUNT(*) FROM series", [], |r| r.get(0))?;
        let top: u64 = conn.query_row("SELECT COUNT(*) FROM top", [], |r| r.get(0))?;
        let pages: u64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: u64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok((series, top, pages.saturating_sub(free) * page_size))
    }
}

/// Keeps the `keep` heaviest keys per (ts, zone, kind) of resolution `res` before `before`.
fn trim_top(tx: &rusqlite::Transaction<'_>, res: u64, before: i64, keep: usize) -> Sql<()> {
    tx.execute(
        "DELETE FROM top WHERE res = ?1 AND ts < ?2 AND (ts, zone, kind, key) IN (
            SELECT ts, zone, kind, key FROM (
                SELECT ts, zone, kind, key, ROW_NUMBER() OVER (PARTITION BY ts, zone, kind ORDER BY n DESC, key) AS rank
                FROM top WHERE res = ?1 AND ts < ?2) WHERE rank > ?3)",
        params![i(res), before, i(keep as u64)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_config::analytics::{Top, ZoneReport, LATENCY, REQUESTS, STATUS};

    fn report(start: u64, requests: u64, ip: &str) -> Report {
        let mut counts = vec![0; COUNTS];
        counts[REQUESTS] = requests;
        counts[STATUS + 1] = requests;
        counts[LATENCY + 3] = requests;
        let top = Top { ips: vec![(ip.into(), requests)], paths: vec![("/".into(), requests)], fingerprints: vec![] };
        Report { start, seconds: 10, zones: [("demo".to_string(), ZoneReport { counts, top, mitigations: 0 })].into() }
    }

    #[test]
    fn ingest_query_downsample() {
        let dir = std::env::temp_dir().join(format!("palisade-analytics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Analytics::open(&dir.join("analytics.db")).unwrap();
        let now = 1_000_000_000;
        // Two nodes in one city, one in another, over two 10 s buckets.
        a.ingest("berlin", &report(now - 30, 5, "192.0.2.1")).unwrap();
        a.ingest("berlin", &report(now - 28, 7, "192.0.2.1")).unwrap();
        a.ingest("paris", &report(now - 20, 1, "192.0.2.9")).unwrap();
        let s = a.query(None, None, now - 60, now, now).unwrap();
        assert_eq!(s.step, 10);
        // The last step (now - 10) is left out: its reports may still be on their way.
        assert_eq!(s.points.len(), 5);
        assert_eq!(s.total[REQUESTS], 13);
        assert_eq!(s.cities, vec!["berlin", "paris"]);
        assert_eq!(s.top["ip"][0], ("192.0.2.1".to_string(), 12));
        let berlin = a.query(Some("demo"), Some("berlin"), now - 60, now, now).unwrap();
        assert_eq!(berlin.total[REQUESTS], 12);
        assert_eq!(a.query(Some("other"), None, now - 60, now, now).unwrap().total[REQUESTS], 0);
        // A day later, the same figures are there per minute (and the hour's heavy hitters).
        let later = now + FINE_KEEP_S + 120;
        a.maintain(later).unwrap();
        let s = a.query(None, None, now - 120, now + 60, later).unwrap();
        assert_eq!(s.step, 60);
        assert_eq!(s.total[REQUESTS], 13, "{s:?}");
        assert_eq!(s.top["ip"][0], ("192.0.2.1".to_string(), 12));
        let (series, _, _) = a.size().unwrap();
        assert_eq!(series, 2, "one minute row per city");
        // A month on, nothing is left.
        a.maintain(now + COARSE_KEEP_S + 7200).unwrap();
        assert_eq!(a.size().unwrap().0 + a.size().unwrap().1, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
