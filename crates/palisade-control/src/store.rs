//! The embedded store: every accepted version and every audit record, in one SQLite file.
//!
//! Durability rule: a version is acknowledged only after the transaction that holds it, and its
//! audit record, has committed with `synchronous = FULL` in WAL mode. A crash (kill -9, power loss)
//! can lose a push that was never acknowledged, never one that was. Versions are immutable: the
//! store has no update or delete for them. Content is checked against its hash on every read, so a
//! damaged row is reported, never served.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

/// What a version holds: the config document, or an artifact (`palisade_config::artifact`),
/// whose versions are kept per name.
pub const KINDS: &[&str] = &["config", "ip_list", "feature_file", "cert_bundle"];

/// A version's metadata (its content is fetched separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// Monotonically increasing across all kinds, never reused.
    pub number: u64,
    pub kind: String,
    /// An artifact's name (its versions form one line); empty for config.
    pub name: String,
    /// Hex SHA-256 of the content.
    pub hash: String,
    pub author: String,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The version of the same kind (and name) this one replaced as head, if any.
    pub parent: Option<u64>,
    pub size: u64,
}

/// One audit record: who did what, to what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub id: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: String,
}

/// An edge node as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// Location label.
    pub city: String,
    /// The node's software version.
    pub software: String,
    pub registered_ms: u64,
    pub last_seen_ms: u64,
    /// The config version it should run.
    pub assigned: Option<u64>,
    /// The config version it last reported running.
    pub applied: Option<u64>,
    /// The last version it refused, and why.
    pub nack_version: Option<u64>,
    pub nack_detail: Option<String>,
    /// The hash of the config it last reported running.
    pub running_hash: Option<String>,
    /// It runs something other than the version it answered for last (a local reload, say).
    pub drift: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "version {number}: content does not match its hash (stored {stored}, content {actual}); refusing damaged data"
    )]
    Damaged { number: u64, stored: String, actual: String },
    #[error("store: the lock was poisoned by a panic")]
    Poisoned,
    #[error("store: a number out of range: {0}")]
    Range(String),
    #[error("{0}")]
    NotFound(String),
    #[error("store layout {found} is newer than this program's ({known}); refusing to touch it")]
    Schema { found: u32, known: u32 },
    /// The shared log (etcd) could not take or give a change: nothing was stored.
    #[error("replication: {0}")]
    Replication(String),
}

/// How a push ended.
#[derive(Debug)]
pub enum Pushed {
    /// A new version (and its audit record) committed.
    Created(Version),
    /// The content equals the head's: nothing new was stored.
    Unchanged(Version),
    /// The caller based its change on `expected` but the head is `head`.
    Conflict { expected: Option<u64>, head: Option<u64> },
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Set when the state is shared through etcd (see [`crate::replica`]).
    repl: std::sync::OnceLock<std::sync::Arc<crate::replica::Replication>>,
}

/// The layout `SCHEMA` creates. A store written by a newer layout is refused, not misread; an
/// older one is migrated in [`Store::open`].
const SCHEMA_VERSION: u32 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    number     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    parent     INTEGER REFERENCES versions(number),
    content    BLOB    NOT NULL,
    name       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS versions_kind ON versions(kind, number);
CREATE TABLE IF NOT EXISTS nodes (
    name          TEXT    PRIMARY KEY,
    city          TEXT    NOT NULL,
    software      TEXT    NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    assigned      INTEGER REFERENCES versions(number),
    applied       INTEGER,
    nack_version  INTEGER,
    nack_detail   TEXT,
    -- What a rollout moved this node from: where a rollback sends it (NULL: its boot config).
    rollback_to   INTEGER,
    -- The hash of the config the node last reported running.
    running_hash  TEXT
);
CREATE TABLE IF NOT EXISTS reports (
    node     TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors   INTEGER NOT NULL,
    -- JSON: le (bucket bounds, ms) and n (count per bucket) since the node started; empty when not sent.
    latency  TEXT    NOT NULL DEFAULT '',
    -- Summed over the node's security modules, since it started.
    module_errors INTEGER NOT NULL DEFAULT 0,
    module_panics INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS reports_node ON reports(node, at_ms);
-- Each node's latest counts of labelled bot traffic (JSON, palisade_config::botlearn::Learning).
CREATE TABLE IF NOT EXISTS bot_learning (
    node     TEXT    PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    learning TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    version          INTEGER NOT NULL REFERENCES versions(number),
    actor            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    stages           TEXT    NOT NULL,
    stage            INTEGER NOT NULL,
    bake_ms          INTEGER NOT NULL,
    stage_started_ms INTEGER NOT NULL,
    baked_from_ms    INTEGER,
    reason           TEXT    NOT NULL DEFAULT '',
    created_ms       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    message TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    result TEXT    NOT NULL,
    detail TEXT    NOT NULL
);
";

/// Layout 4, created after the migrations that add the columns it indexes.
const SCHEMA_4: &str = "
CREATE INDEX IF NOT EXISTS versions_name ON versions(kind, name, number);
CREATE INDEX IF NOT EXISTS versions_hash ON versions(hash);
";

pub(crate) const VERSION_COLUMNS: &str =
    "number, kind, hash, author, message, created_ms, parent, length(content), name";

/// A lock whose holder panicked still guards plain data: take it.
pub(crate) fn lock_or_recover<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Range(n.to_string()))
}

/// Column `i` as a u64 (SQLite integers are i64; a negative one is an error, not a wrap).
pub(crate) fn col_u64(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

/// Column `i` as an optional u64 (NULL: None).
pub(crate) fn col_opt_u64(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(v) => u64::try_from(v).map(Some).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v)),
    }
}

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    let u = |i| col_u64(row, i);
    Ok(Version {
        number: u(0)?,
        kind: row.get(1)?,
        hash: row.get(2)?,
        author: row.get(3)?,
        message: row.get(4)?,
        created_ms: u(5)?,
        parent: col_opt_u64(row, 6)?,
        size: u(7)?,
        name: row.get(8)?,
    })
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers do not block the writer; FULL: a commit is on disk before it returns.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Schema { found, known: SCHEMA_VERSION });
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::killswitch::SCHEMA)?;
        conn.execute_batch(crate::purge::SCHEMA)?;
        // Layout 1 -> 2: reports carry the latency histogram. 2 -> 3: nodes, their running hash.
        if found == 1 {
            conn.execute_batch("ALTER TABLE reports ADD COLUMN latency TEXT NOT NULL DEFAULT ''")?;
        }
        if (1..=2).contains(&found) {
            conn.execute_batch("ALTER TABLE nodes ADD COLUMN running_hash TEXT")?;
        }
        // 3 -> 4: artifacts are versions with a name; reports carry module failures.
        for (table, column, ddl) in [
            ("versions", "name", "ALTER TABLE versions ADD COLUMN name TEXT NOT NULL DEFAULT ''"),
            ("reports", "module_errors", "ALTER TABLE reports ADD COLUMN module_errors INTEGER NOT NULL DEFAULT 0"),
            ("reports", "module_panics", "ALTER TABLE reports ADD COLUMN module_panics INTEGER NOT NULL DEFAULT 0"),
        ] {
            let present: bool = conn.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                params![table, column],
                |r| r.get(0),
            )?;
            if !present {
                conn.execute_batch(ddl)?;
            }
        }
        conn.execute_batch(SCHEMA_4)?;
        conn.execute_batch(crate::artifacts::SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute_batch(crate::replica::SCHEMA)?;
        crate::replica::install_triggers(&conn)?;
        Ok(Self { conn: Mutex::new(conn), repl: std::sync::OnceLock::new() })
    }

    /// From now on, every change is appended to the shared log in etcd before it commits here,
    /// and changes other replicas made are applied here (see [`crate::replica`]).
    pub fn replicate(&self, repl: std::sync::Arc<crate::replica::Replication>) {
        let _ = self.repl.set(repl);
    }

    /// Applies what other replicas appended to the shared log; how many changes (0 without etcd).
    pub fn catch_up(&self) -> Result<usize, StoreError> {
        match self.repl.get() {
            None => Ok(0),
            Some(repl) => repl.catch_up(&mut *self.lock()?),
        }
    }

    /// The last log index this store applied (0 without etcd).
    pub fn applied(&self) -> Result<u64, StoreError> {
        let n: i64 = self.lock()?.query_row("SELECT applied FROM replication WHERE id = 1", [], |r| r.get(0))?;
        u64::try_from(n).map_err(|_| StoreError::Range(n.to_string()))
    }

    pub(crate) fn replication(&self) -> Option<&std::sync::Arc<crate::replica::Replication>> {
        self.repl.get()
    }

    /// One change, in one transaction: `f` runs against it and everything it wrote commits
    /// together (nothing, when it returns an error). With etcd, the change is first appended to
    /// the shared log; if another replica appended first, this one catches up and `f` runs again.
    pub(crate) fn write<T>(&self, mut f: impl FnMut(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.lock()?;
        match self.repl.get() {
            None => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            }
            Some(repl) => repl.write(&mut conn, &mut f),
        }
    }

    pub(crate) fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Stores `content` as the new head of `kind` (and `name`: an artifact's; "" for config),
    /// with its audit record, in one transaction. `expected_parent`: `Some(x)` asks for the push
    /// to apply only if the head is `x` (`None` inside: no version yet); `None` pushes over
    /// whatever the head is.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &self,
        kind: &str,
        name: &str,
        content: &[u8],
        hash: &str,
        author: &str,
        message: &str,
        expected_parent: Option<Option<u64>>,
    ) -> Result<Pushed, StoreError> {
        self.write(|tx| {
            let head = head_of(tx, kind, name)?;
            let head_number = head.as_ref().map(|v| v.number);
            if let Some(expected) = expected_parent {
                if expected != head_number {
                    return Ok(Pushed::Conflict { expected, head: head_number });
                }
            }
            if let Some(head) = head.filter(|h| h.hash == hash) {
                return Ok(Pushed::Unchanged(head));
            }
            let at = now_ms();
            let parent = head_number.map(to_i64).transpose()?;
            tx.execute(
                "INSERT INTO versions (kind, name, hash, author, message, created_ms, parent, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![kind, name, hash, author, message, to_i64(at)?, parent, content],
            )?;
            let number = u64::try_from(tx.last_insert_rowid()).map_err(|_| StoreError::Range("rowid".into()))?;
            let target = if name.is_empty() { format!("{kind} v{number}") } else { format!("{kind} {name} v{number}") };
            insert_audit(tx, at, author, "push", &target, "created", &format!("sha256 {hash}: {message}"))?;
            Ok(Pushed::Created(Version {
                number,
                kind: kind.to_string(),
                name: name.to_string(),
                hash: hash.to_string(),
                author: author.to_string(),
                message: message.to_string(),
                created_ms: at,
                parent: head_number,
                size: content.len() as u64,
            }))
        })
    }

    /// Records an action that stored no version (a rejected push, a conflict, an auth failure).
    pub fn audit(&self, actor: &str, action: &str, target: &str, result: &str, detail: &str) -> Result<(), StoreError> {
        self.write(|conn| insert_audit(conn, now_ms(), actor, action, target, result, detail))
    }

    /// The newest version of `kind` (and `name`; "" for config).
    pub fn head(&self, kind: &str, name: &str) -> Result<Option<Version>, StoreError> {
        head_of(&*self.lock()?, kind, name)
    }

    /// Newest first, at most `limit`, numbers below `before` when given; `name`: one artifact's.
    pub fn list(
        &self,
        kind: &str,
        name: Option<&str>,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<Version>, StoreError> {
        let conn = self.lock()?;
        let before = to_i64(before.unwrap_or(i64::MAX as u64))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE kind = ?1 AND (?4 IS NULL OR name = ?4) AND number < ?2
             ORDER BY number DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![kind, before, limit, name], version_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A version and its content, checked against its hash.
    pub fn get(&self, number: u64) -> Result<Option<(Version, Vec<u8>)>, StoreError> {
        let conn = self.lock()?;
        let found = conn
            .query_row(
                &format!("SELECT {VERSION_COLUMNS}, content FROM versions WHERE number = ?1"),
                params![to_i64(number)?],
                version_and_content,
            )
            .optional()?;
        found.map(checked).transpose()
    }

    /// Newest first, at most `limit`.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, at_ms, actor, action, target, result, detail FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |row| {
            Ok(AuditRecord {
                id: col_u64(row, 0)?,
                at_ms: col_u64(row, 1)?,
                actor: row.get(2)?,
                action: row.get(3)?,
                target: row.get(4)?,
                result: row.get(5)?,
                detail: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const NODE_COLUMNS: &str =
    "name, city, software, registered_ms, last_seen_ms, assigned, applied, nack_version, nack_detail,
     running_hash, (SELECT hash FROM versions WHERE versions.number = nodes.applied)";

fn node_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let u = |i| col_u64(row, i);
    let opt = |i| col_opt_u64(row, i);
    Ok(Node {
        name: row.get(0)?,
        city: row.get(1)?,
        software: row.get(2)?,
        registered_ms: u(3)?,
        last_seen_ms: u(4)?,
        assigned: opt(5)?,
        applied: opt(6)?,
        nack_version: opt(7)?,
        nack_detail: row.get(8)?,
        drift: {
            let (running, applied): (Option<String>, Option<String>) = (row.get(9)?, row.get(10)?);
            matches!((&running, &applied), (Some(r), Some(a)) if r != a)
        },
        running_hash: row.get(9)?,
    })
}

impl Store {
    /// A node says hello (again): its city and software are updated, its assignment kept.
    pub fn register(&self, name: &str, city: &str, software: &str) -> Result<Node, StoreError> {
        self.write(|conn| {
            let at = to_i64(now_ms())?;
            conn.execute(
                "INSERT INTO nodes (name, city, software, registered_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(name) DO UPDATE SET city = ?2, software = ?3, last_seen_ms = ?4",
                params![name, city, software, at],
            )?;
            insert_audit(
                conn,
                now_ms(),
                name,
                "register",
                &format!("node {name}"),
                "ok",
                &format!("city {city}, software {software}"),
            )?;
            node_by_name(conn, name)?.ok_or_else(|| StoreError::NotFound(format!("no node {name}")))
        })
    }

    /// The node, marked as seen now.
    pub fn node_seen(&self, name: &str) -> Result<Option<(Node, Option<String>)>, StoreError> {
        let conn = self.lock()?;
        conn.execute("UPDATE nodes SET last_seen_ms = ?2 WHERE name = ?1", params![name, to_i64(now_ms())?])?;
        let Some(node) = node_by_name(&conn, name)? else { return Ok(None) };
        let hash = match node.assigned {
            Some(n) => conn
                .query_row("SELECT hash FROM versions WHERE number = ?1", params![to_i64(n)?], |r| r.get(0))
                .optional()?,
            None => None,
        };
        Ok(Some((node, hash)))
    }

    pub fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"))?;
        let rows = stmt.query_map([], node_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Points a node at a config version (the step a rollout takes per node).
    pub fn assign(&self, actor: &str, name: &str, number: u64) -> Result<Node, StoreError> {
        self.write(|tx| {
            if !is_config_version(tx, number)? {
                return Err(StoreError::NotFound(format!("no config version {number}")));
            }
            if tx.execute("UPDATE nodes SET assigned = ?2 WHERE name = ?1", params![name, to_i64(number)?])? == 0 {
                return Err(StoreError::NotFound(format!("no node {name}")));
            }
            insert_audit(tx, now_ms(), actor, "assign", &format!("node {name}"), "ok", &format!("config v{number}"))?;
            let node = node_by_name(tx, name)?.ok_or_else(|| StoreError::NotFound(format!("no node {name}")))?;
            Ok(node)
        })
    }

    /// A node's answer for a version: running it (ACK) or refusing it with reasons (NACK).
    /// `number` None: the node is back on its boot config.
    pub fn node_answer(&self, name: &str, number: Option<u64>, refused: Option<&str>) -> Result<(), StoreError> {
        self.write(|tx| {
            let n = number.map(to_i64).transpose()?;
            let changed = match refused {
                // It runs what it acknowledged: the running hash is that version's until a report says
                // otherwise (NULL for the boot config, until its next report).
                None => tx.execute(
                    "UPDATE nodes SET applied = ?2, last_seen_ms = ?3,
                       running_hash = (SELECT hash FROM versions WHERE number = ?2) WHERE name = ?1",
                    params![name, n, to_i64(now_ms())?],
                )?,
                Some(why) => tx.execute(
                    "UPDATE nodes SET nack_version = ?2, nack_detail = ?3, last_seen_ms = ?4 WHERE name = ?1",
                    params![name, n, why, to_i64(now_ms())?],
                )?,
            };
            if changed == 0 {
                return Err(StoreError::NotFound(format!("no node {name}")));
            }
            let (action, result) = if refused.is_some() { ("nack", "refused") } else { ("ack", "applied") };
            let target = number.map(|v| format!("config v{v}")).unwrap_or_else(|| "boot config".into());
            insert_audit(tx, now_ms(), name, action, &target, result, refused.unwrap_or(""))?;
            Ok(())
        })
    }
}

/// Whether `number` is a stored config version (what assignments and rollouts may point at).
pub(crate) fn is_config_version(conn: &Connection, number: u64) -> Result<bool, StoreError> {
    let kind: Option<String> = conn
        .query_row("SELECT kind FROM versions WHERE number = ?1", params![to_i64(number)?], |r| r.get(0))
        .optional()?;
    Ok(kind.as_deref() == Some("config"))
}

/// The newest version of `kind` and `name`.
pub(crate) fn head_of(conn: &Connection, kind: &str, name: &str) -> Result<Option<Version>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE kind = ?1 AND name = ?2 ORDER BY number DESC LIMIT 1"
            ),
            params![kind, name],
            version_row,
        )
        .optional()?)
}

/// A row of `SELECT {VERSION_COLUMNS}, content`.
pub(crate) fn version_and_content(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Version, Vec<u8>)> {
    // Bytes whatever the stored type: a damaged row must reach the hash check.
    Ok((version_row(row)?, row.get_ref(9)?.as_bytes().map(<[u8]>::to_vec).unwrap_or_default()))
}

/// Content is served only when it matches its hash.
pub(crate) fn checked((version, content): (Version, Vec<u8>)) -> Result<(Version, Vec<u8>), StoreError> {
    let actual = palisade_config::content_hash(&content);
    if actual != version.hash {
        return Err(StoreError::Damaged { number: version.number, stored: version.hash, actual });
    }
    Ok((version, content))
}

fn node_by_name(conn: &Connection, name: &str) -> Result<Option<Node>, StoreError> {
    Ok(conn
        .query_row(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = ?1"), params![name], node_row)
        .optional()?)
}

pub(crate) fn insert_audit(
    conn: &Connection,
    at: u64,
    actor: &str,
    action: &str,
    target: &str,
    result: &str,
    detail: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit (at_ms, actor, action, target, result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![to_i64(at)?, actor, action, target, result, detail],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("palisade-store-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.db");
        (Store::open(&path).unwrap(), path)
    }

    fn push(s: &Store, content: &str, parent: Option<Option<u64>>) -> Pushed {
        let hash = palisade_config::content_hash(content.as_bytes());
        s.push("config", "", content.as_bytes(), &hash, "alice", "msg", parent).unwrap()
    }

    #[test]
    fn versions_are_numbered_chained_and_immutable() {
        let (s, path) = temp_store("chain");
        let Pushed::Created(v1) = push(&s, "a", None) else { panic!() };
        let Pushed::Created(v2) = push(&s, "b", Some(Some(v1.number))) else { panic!() };
        assert!(v2.number > v1.number);
        assert_eq!(v2.parent, Some(v1.number));
        assert!(matches!(push(&s, "b", None), Pushed::Unchanged(v) if v.number == v2.number));
        assert!(matches!(
            push(&s, "c", Some(Some(v1.number))),
            Pushed::Conflict { expected: Some(e), head: Some(h) } if e == v1.number && h == v2.number
        ));
        drop(s);
        // Reopened: everything is still there, content intact, audit has both pushes.
        let s = Store::open(&path).unwrap();
        let (v, content) = s.get(v1.number).unwrap().unwrap();
        assert_eq!((v.author.as_str(), content.as_slice()), ("alice", b"a".as_slice()));
        assert_eq!(s.list("config", None, 10, None).unwrap().len(), 2);
        assert_eq!(s.head("config", "").unwrap().unwrap().number, v2.number);
        let audit = s.audit_log(10).unwrap();
        assert_eq!(audit.iter().filter(|a| a.action == "push" && a.result == "created").count(), 2);
    }

    #[test]
    fn layout_1_is_migrated() {
        let dir = std::env::temp_dir().join(format!("palisade-store-{}-migrate", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE nodes (name TEXT PRIMARY KEY, city TEXT NOT NULL, software TEXT NOT NULL, registered_ms INTEGER NOT NULL,
                   last_seen_ms INTEGER NOT NULL, assigned INTEGER, applied INTEGER, nack_version INTEGER, nack_detail TEXT, rollback_to INTEGER);
                 CREATE TABLE reports (node TEXT NOT NULL, at_ms INTEGER NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL);
                 INSERT INTO reports VALUES ('berlin', 1, 10, 0);
                 CREATE TABLE versions (number INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, hash TEXT NOT NULL,
                   author TEXT NOT NULL, message TEXT NOT NULL, created_ms INTEGER NOT NULL, parent INTEGER, content BLOB NOT NULL);
                 INSERT INTO versions (kind, hash, author, message, created_ms, content)
                   VALUES ('config', 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb', 'alice', 'm', 1, 'a');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let r: crate::bodies::Report =
            serde_json::from_str(r#"{"requests": 20, "errors": 1, "latency_le_ms": [1.0], "latency": [5, 0]}"#)
                .unwrap();
        s.report("berlin", &r).unwrap();
        let n: i64 =
            s.lock().unwrap().query_row("SELECT count(*) FROM reports WHERE latency != ''", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let v: u32 = s.lock().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        // Versions of layout 1 are config versions with no name, and still intact.
        let (old, content) = s.get(1).unwrap().unwrap();
        assert_eq!((old.kind.as_str(), old.name.as_str(), content.as_slice()), ("config", "", b"a".as_slice()));
    }

    #[test]
    fn a_newer_layout_is_refused() {
        let (s, path) = temp_store("layout");
        s.lock().unwrap().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("layout 99 is newer"), "{err}");
    }

    #[test]
    fn damaged_content_is_refused() {
        let (s, _path) = temp_store("damaged");
        let Pushed::Created(v) = push(&s, "good", None) else { panic!() };
        s.lock()
            .unwrap()
            .execute("UPDATE versions SET content = 'evil' WHERE number = ?1", params![v.number as i64])
            .unwrap();
        let err = s.get(v.number).unwrap_err().to_string();
        assert!(err.contains("does not match its hash"), "{err}");
    }
}
