//! Several control-plane replicas sharing one state through etcd.
//!
//! **The shared log.** Each replica keeps the whole state in its own SQLite file, as a single
//! control plane does, and etcd holds the ordered log of every change: key `PREFIX/log/{n}`
//! holds change `n`, the rows its transaction wrote (each as it stands after the write) and
//! deleted. Triggers on every replicated table capture those rows while a change runs. A replica commits a change only after it appended the change at the next free index,
//! with a create-if-absent transaction; when another replica got there first, it applies what it
//! missed and runs the change again on the new state. So changes are serialised cluster-wide,
//! an acknowledged change is on a quorum of etcd members, and every replica applies the same
//! changes in the same order (a watch on the log wakes it). A replica that was down, or is new,
//! applies the log from where its file left off.
//!
//! **Not in the log:** node reports (they go to `PREFIX/reports/{node}`, and every replica
//! applies the latest it sees) and "last seen" times: each replica records those itself.
//!
//! **Large changes** (over [`INLINE_MAX`], e.g. a big artifact) are not put in
//! etcd, whose values are limited to 1.5 MiB: the log entry holds the changeset's SHA-256, the
//! bytes go to every replica's blob directory (`DATA_DIR/blobs`), pushed to at least one other
//! live replica before the change is acknowledged, and fetched by hash from a peer by any
//! replica that lacks them.
//!
//! **One leader.** Replicas campaign for `PREFIX/leader`, a key bound to a short lease that the
//! leader keeps alive. Only the leader runs the rollout engine, and its engine's writes carry the
//! leader key as a fence (an appended change fails once another replica leads). When the leader
//! dies, its lease expires within [`LEADER_TTL_S`] seconds and another replica takes over; a
//! rollout carries on from its recorded state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::Value;

use crate::etcd::{Etcd, Kv};
use crate::store::{to_i64, StoreError};

/// The replica's own bookkeeping, never replicated: the last log index applied here, whether a
/// change is being captured, and the rows captured so far.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS replication (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    applied INTEGER NOT NULL,
    capture INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO replication (id, applied) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS captured (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT    NOT NULL,
    op  TEXT    NOT NULL,
    row TEXT    NOT NULL
);
";

/// Tables that stay local: the replica's bookkeeping, and node reports.
const LOCAL_TABLES: &[&str] = &["replication", "captured", "reports", "bot_learning", "sqlite_sequence"];

/// A replicated table: its columns (name, whether BLOB) and its one-column primary key.
struct Table {
    name: String,
    columns: Vec<(String, bool)>,
    pk: String,
}

fn tables(conn: &Connection) -> Result<Vec<Table>, StoreError> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| !LOCAL_TABLES.contains(&n.as_str())) {
        let cols: Vec<(String, String, i64)> = conn
            .prepare(&format!("SELECT name, type, pk FROM pragma_table_info('{name}')"))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let pks: Vec<&String> = cols.iter().filter(|c| c.2 > 0).map(|c| &c.0).collect();
        let [pk] = pks.as_slice() else {
            return Err(repl_err(format!("table {name} needs a one-column primary key to be replicated")));
        };
        out.push(Table {
            pk: (*pk).clone(),
            columns: cols.iter().map(|(c, t, _)| (c.clone(), t.eq_ignore_ascii_case("BLOB"))).collect(),
            name,
        });
    }
    Ok(out)
}

/// Triggers that record, while `replication.capture` is set, every row a change writes (as it
/// stands after the write; BLOBs in hex) and the key of every row it deletes.
pub fn install_triggers(conn: &Connection) -> Result<(), StoreError> {
    const WHEN: &str = "WHEN (SELECT capture FROM replication WHERE id = 1) = 1";
    let mut sql = String::new();
    for t in tables(conn)? {
        let row = t
            .columns
            .iter()
            .map(|(c, blob)| if *blob { format!("'{c}', hex(NEW.{c})") } else { format!("'{c}', NEW.{c}") })
            .collect::<Vec<_>>()
            .join(", ");
        let n = &t.name;
        for (event, op, values) in [
            ("INSERT", "upsert", format!("json_object({row})")),
            ("UPDATE", "upsert", format!("json_object({row})")),
            ("DELETE", "delete", format!("json_object('{}', OLD.{})", t.pk, t.pk)),
        ] {
            let trigger = format!("repl_{n}_{}", event.to_ascii_lowercase());
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {trigger};
                 CREATE TRIGGER {trigger} AFTER {event} ON {n} {WHEN}
                 BEGIN INSERT INTO captured (tbl, op, row) VALUES ('{n}', '{op}', {values}); END;\n"
            ));
        }
    }
    conn.execute_batch(&sql)?;
    Ok(())
}

/// One captured row change, as it travels in the log.
#[derive(serde::Serialize, serde::Deserialize)]
struct Change {
    t: String,
    op: String,
    row: serde_json::Map<String, Value>,
}

/// Runs `f` with capture on; returns its result and the changes it made (in order).
fn captured<T>(
    tx: &Connection,
    f: &mut dyn FnMut(&Connection) -> Result<T, StoreError>,
) -> Result<(T, Vec<Change>), StoreError> {
    tx.execute_batch("DELETE FROM captured; UPDATE replication SET capture = 1 WHERE id = 1;")?;
    let out = f(tx)?;
    tx.execute("UPDATE replication SET capture = 0 WHERE id = 1", [])?;
    let changes = tx
        .prepare("SELECT tbl, op, row FROM captured ORDER BY seq")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|(t, op, row)| {
            let row = serde_json::from_str(&row).map_err(repl_err)?;
            Ok(Change { t, op, row })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    tx.execute("DELETE FROM captured", [])?;
    Ok((out, changes))
}

/// Applies changes from the log (capture is off: nothing is recorded again).
fn apply(tx: &Connection, changes: &[Change]) -> Result<(), StoreError> {
    let tables = tables(tx)?;
    for c in changes {
        let t = tables.iter().find(|t| t.name == c.t).ok_or_else(|| repl_err(format!("unknown table {}", c.t)))?;
        let value = |col: &str, blob: bool| -> Result<rusqlite::types::Value, StoreError> {
            use rusqlite::types::Value as V;
            Ok(match c.row.get(col) {
                None | Some(Value::Null) => V::Null,
                Some(Value::String(s)) if blob => V::Blob(hex::decode(s).map_err(repl_err)?),
                Some(Value::String(s)) => V::Text(s.clone()),
                Some(Value::Bool(b)) => V::Integer(i64::from(*b)),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) => V::Integer(i),
                    None => V::Real(n.as_f64().unwrap_or(0.0)),
                },
                Some(other) => V::Text(other.to_string()),
            })
        };
        match c.op.as_str() {
            "delete" => {
                let pk = value(&t.pk, false)?;
                tx.execute(&format!("DELETE FROM {} WHERE {} = ?1", t.name, t.pk), [pk])?;
            }
            "upsert" => {
                let cols: Vec<&(String, bool)> =
                    t.columns.iter().filter(|(name, _)| c.row.contains_key(name)).collect();
                let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                let set: Vec<String> = names.iter().map(|n| format!("{n} = excluded.{n}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT({}) DO UPDATE SET {}",
                    t.name,
                    names.join(", "),
                    marks.join(", "),
                    t.pk,
                    set.join(", ")
                );
                let values = cols.iter().map(|(n, blob)| value(n, *blob)).collect::<Result<Vec<_>, _>>()?;
                tx.execute(&sql, rusqlite::params_from_iter(values))?;
            }
            other => return Err(repl_err(format!("unknown change {other}"))),
        }
    }
    Ok(())
}

/// Changesets up to this size travel in the log entry itself.
pub const INLINE_MAX: usize = 512 * 1024;
/// The leader's lease: how long a dead leader keeps the role.
pub const LEADER_TTL_S: i64 = 2;
/// How long a replica's registration (its address, for blob transfers) outlives it.
const PRESENCE_TTL_S: i64 = 5;
/// Log entries read per request while catching up.
const CATCH_UP_BATCH: i64 = 256;
/// Tries of one change against a moving log before giving up.
const MAX_TRIES: usize = 50;

thread_local! {
    /// Set while the rollout engine runs on the leader: its changes carry the leader fence.
    static FENCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the leader fence on this thread's writes.
pub fn fenced<T>(f: impl FnOnce() -> T) -> T {
    FENCED.with(|c| c.set(true));
    let out = f();
    FENCED.with(|c| c.set(false));
    out
}

pub struct Replication {
    pub etcd: Etcd,
    /// This replica's name.
    pub id: String,
    prefix: String,
    blob_dir: PathBuf,
    /// This replica's API address, for peers fetching blobs.
    advertise: String,
    /// Replica-to-replica bearer token, shared through etcd.
    secret: String,
    leader: AtomicBool,
    peers: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    runtime: tokio::runtime::Handle,
}

fn repl_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Replication(e.to_string())
}

fn applied_index(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT applied FROM replication WHERE id = 1", [], |r| r.get(0))?;
    u64::try_from(n).map_err(|_| StoreError::Range(n.to_string()))
}

fn set_applied(conn: &Connection, n: u64) -> Result<(), StoreError> {
    conn.execute("UPDATE replication SET applied = ?1 WHERE id = 1", params![to_i64(n)?])?;
    Ok(())
}

impl Replication {
    /// Connects to etcd under `prefix` (e.g. `/palisade/`), with the shared secret.
    pub async fn connect(
        etcd: Etcd,
        prefix: &str,
        id: &str,
        advertise: &str,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Self>, String> {
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let secret_key = format!("{prefix}secret");
        let fresh = crate::tokens::random_token()?;
        etcd.create(&secret_key, fresh.as_bytes(), None, None).await?;
        let secret = etcd.get(&secret_key).await?.ok_or("etcd: the shared secret vanished")?.value;
        let blob_dir = data_dir.join("blobs");
        std::fs::create_dir_all(&blob_dir).map_err(|e| format!("{}: {e}", blob_dir.display()))?;
        Ok(Arc::new(Self {
            etcd,
            id: id.to_string(),
            prefix,
            blob_dir,
            advertise: advertise.trim_end_matches('/').to_string(),
            secret: String::from_utf8_lossy(&secret).into_owned(),
            leader: AtomicBool::new(false),
            peers: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Whether `presented` is the replicas' shared token.
    pub fn is_peer(&self, presented: &[u8]) -> bool {
        crate::tokens::constant_time_eq(presented, self.secret.as_bytes())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn log_key(&self, n: u64) -> String {
        self.key(&format!("log/{n:020}"))
    }

    pub fn report_key(&self, node: &str) -> String {
        self.key(&format!("reports/{node}"))
    }

    pub fn probe_key(&self, node: &str) -> String {
        self.key(&format!("probe/{node}"))
    }

    /// Store calls run on blocking threads; etcd calls are async.
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// [`crate::store::Store::write`] with the shared log.
    pub(crate) fn write<T>(
        &self,
        conn: &mut Connection,
        f: &mut dyn FnMut(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fence = FENCED.with(|c| c.get());
        for _ in 0..MAX_TRIES {
            self.catch_up(conn)?;
            if fence && !self.is_leader() {
                return Err(repl_err("this replica is no longer the leader"));
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let next = applied_index(&tx)? + 1;
            let (out, changes) = captured(&tx, f)?;
            if changes.is_empty() {
                tx.commit()?;
                return Ok(out);
            }
            let changeset = serde_json::to_vec(&changes).map_err(repl_err)?;
            let entry = self.entry_for(&changeset)?;
            let leader_key = self.key("leader");
            let fence = fence.then_some((leader_key.as_str(), self.id.as_bytes()));
            if self.block_on(self.etcd.create(&self.log_key(next), &entry, None, fence)).map_err(repl_err)? {
                set_applied(&tx, next)?;
                tx.commit()?;
                return Ok(out);
            }
            // Another replica appended `next` first (or the fence failed): roll back, catch up, retry.
            drop(tx);
            if fence.is_some() && !self.still_leader()? {
                self.leader.store(false, Ordering::Relaxed);
                return Err(repl_err("this replica is no longer the leader"));
            }
        }
        Err(repl_err(format!("the log kept moving; gave up after {MAX_TRIES} tries")))
    }

    fn still_leader(&self) -> Result<bool, StoreError> {
        let holder = self.block_on(self.etcd.get(&self.key("leader"))).map_err(repl_err)?;
        Ok(holder.is_some_and(|kv| kv.value == self.id.as_bytes()))
    }

    /// The log entry for a changeset: inline (tag 0), or the SHA-256 of a blob (tag 1) placed on
    /// this replica and at least one other live one.
    fn entry_for(&self, changeset: &[u8]) -> Result<Vec<u8>, StoreError> {
        if changeset.len() <= INLINE_MAX {
            let mut e = Vec::with_capacity(changeset.len() + 1);
            e.push(0);
            e.extend_from_slice(changeset);
            return Ok(e);
        }
        let hash = palisade_config::content_hash(changeset);
        self.keep_blob(&hash, changeset)?;
        self.block_on(self.push_blob_to_peers(&hash, changeset)).map_err(repl_err)?;
        let mut e = vec![1];
        e.extend_from_slice(hash.as_bytes());
        Ok(e)
    }

    fn blob_path(&self, hash: &str) -> Option<PathBuf> {
        palisade_config::artifact::is_sha256(hash).then(|| self.blob_dir.join(hash))
    }

    /// Keeps bytes checked against `hash` in the blob directory (temp file, fsync, rename).
    pub fn keep_blob(&self, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let path = self.blob_path(hash).ok_or_else(|| repl_err("not a blob hash"))?;
        if palisade_config::content_hash(bytes) != hash {
            return Err(repl_err(format!("blob {hash}: content does not match its hash")));
        }
        let tmp = self.blob_dir.join(format!(".{hash}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(repl_err)?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(repl_err)?;
        std::fs::rename(&tmp, &path).map_err(repl_err)?;
        std::fs::File::open(&self.blob_dir).and_then(|d| d.sync_all()).map_err(repl_err)?;
        Ok(())
    }

    /// A blob from this replica's directory, checked.
    pub fn blob(&self, hash: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(hash)?).ok()?;
        (palisade_config::content_hash(&bytes) == hash).then_some(bytes)
    }

    /// Live replicas other than this one: their advertised addresses.
    async fn peer_urls(&self) -> Result<Vec<String>, String> {
        let prefix = self.key("replicas/");
        let mine = self.key(&format!("replicas/{}", self.id));
        Ok(self
            .etcd
            .range_from(&prefix, &prefix, 100)
            .await?
            .into_iter()
            .filter(|kv| kv.key != mine)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .collect())
    }

    async fn peer_call(&self, method: &str, url: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
        use http_body_util::BodyExt;
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {}", self.secret))
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let call = async {
            let resp = self.peers.request(req).await.map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
            if !status.is_success() {
                return Err(format!("{url}: {status}"));
            }
            Ok(bytes.to_vec())
        };
        tokio::time::timeout(Duration::from_secs(30), call).await.map_err(|_| format!("{url}: no answer in time"))?
    }

    /// Puts a blob on every live peer; at least one must take it when there is one.
    async fn push_blob_to_peers(&self, hash: &str, bytes: &[u8]) -> Result<(), String> {
        let peers = self.peer_urls().await?;
        if peers.is_empty() {
            return Ok(());
        }
        let mut stored = 0;
        let mut errors = Vec::new();
        for p in &peers {
            match self.peer_call("PUT", &format!("{p}/v1/internal/blobs/{hash}"), bytes.to_vec()).await {
                Ok(_) => stored += 1,
                Err(e) => errors.push(e),
            }
        }
        if stored == 0 {
            return Err(format!("no other replica took blob {hash}: {}", errors.join("; ")));
        }
        Ok(())
    }

    /// A blob this replica lacks, from the first peer that has it.
    async fn fetch_blob(&self, hash: &str) -> Result<Vec<u8>, String> {
        let mut errors = Vec::new();
        for p in self.peer_urls().await? {
            match self.peer_call("GET", &format!("{p}/v1/internal/blobs/{hash}"), Vec::new()).await {
                Ok(b) if palisade_config::content_hash(&b) == hash => return Ok(b),
                Ok(_) => errors.push(format!("{p}: damaged copy")),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("blob {hash} is on no live replica: {}", errors.join("; ")))
    }

    fn changeset_of(&self, entry: &[u8]) -> Result<Vec<u8>, StoreError> {
        match entry.split_first() {
            Some((0, cs)) => Ok(cs.to_vec()),
            Some((1, hash)) => {
                let hash = String::from_utf8_lossy(hash).into_owned();
                if let Some(b) = self.blob(&hash) {
                    return Ok(b);
                }
                let b = self.block_on(self.fetch_blob(&hash)).map_err(repl_err)?;
                self.keep_blob(&hash, &b)?;
                Ok(b)
            }
            _ => Err(repl_err("a log entry of an unknown kind")),
        }
    }

    /// Applies every log entry after this replica's position; returns how many.
    pub(crate) fn catch_up(&self, conn: &mut Connection) -> Result<usize, StoreError> {
        let mut count = 0;
        loop {
            let from = applied_index(conn)? + 1;
            let prefix = self.key("log/");
            let batch =
                self.block_on(self.etcd.range_from(&self.log_key(from), &prefix, CATCH_UP_BATCH)).map_err(repl_err)?;
            let n = batch.len();
            for (i, kv) in batch.into_iter().enumerate() {
                let want = from + i as u64;
                if kv.key != self.log_key(want) {
                    return Err(repl_err(format!("log entry {want} is missing (found {})", kv.key)));
                }
                let changeset = self.changeset_of(&kv.value)?;
                let changes: Vec<Change> = serde_json::from_slice(&changeset).map_err(repl_err)?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                apply(&tx, &changes)?;
                set_applied(&tx, want)?;
                tx.commit()?;
                count += 1;
            }
            if n < CATCH_UP_BATCH as usize {
                return Ok(count);
            }
        }
    }

    /// Campaigns for leadership for as long as the process runs.
    pub async fn campaign(self: Arc<Self>) {
        let key = self.key("leader");
        loop {
            let lease = match self.etcd.grant(LEADER_TTL_S).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd unreachable; not leading");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            match self.etcd.create(&key, self.id.as_bytes(), Some(lease), None).await {
                Ok(true) => {
                    self.leader.store(true, Ordering::Relaxed);
                    tracing::info!(replica = %self.id, "leading: this replica runs the rollouts");
                    let mut renewed = std::time::Instant::now();
                    loop {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        match self.etcd.keep_alive(lease).await {
                            Ok(true) => renewed = std::time::Instant::now(),
                            Ok(false) => break,
                            // Unreachable: lead only while the lease surely still holds.
                            Err(_) if renewed.elapsed() < Duration::from_millis(LEADER_TTL_S as u64 * 1000 / 2) => {}
                            Err(_) => break,
                        }
                    }
                    self.leader.store(false, Ordering::Relaxed);
                    tracing::warn!(replica = %self.id, "no longer leading");
                }
                Ok(false) => {
                    let _ = self.etcd.revoke(lease).await;
                    // Someone leads: wait until the key is gone (its lease expired or was revoked).
                    while let Ok(Some(_)) = self.etcd.get(&key).await {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "etcd unreachable; not leading");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Keeps this replica's address registered for its peers.
    pub async fn announce(self: Arc<Self>) {
        let key = self.key(&format!("replicas/{}", self.id));
        loop {
            let Ok(lease) = self.etcd.grant(PRESENCE_TTL_S).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if self.etcd.put(&key, self.advertise.as_bytes(), Some(lease)).await.is_err() {
                continue;
            }
            while let Ok(true) = self.etcd.keep_alive(lease).await {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Watches the prefix and calls `on_change` for each written key, resuming where it left off.
    pub async fn follow(self: Arc<Self>, on_change: impl Fn(Kv) + Send + Sync + 'static) {
        let mut revision = loop {
            match self.etcd.revision().await {
                Ok(r) => break r,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        loop {
            match self.etcd.watch(&self.prefix, revision, &on_change).await {
                Ok(r) => revision = r,
                Err(e) => {
                    tracing::debug!(error = %e, "etcd watch broke; watching again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // Whatever happened meanwhile is read by the next catch-up; reports resume.
                    if let Ok(r) = self.etcd.revision().await {
                        revision = revision.max(r);
                    }
                }
            }
        }
    }

    /// Whether `key` is a log entry, a report (and whose), or neither.
    pub fn classify<'k>(&self, key: &'k str) -> Changed<'k> {
        match key.strip_prefix(self.prefix.as_str()) {
            Some(rest) if rest.starts_with("log/") => Changed::Log,
            Some(rest) => match rest.strip_prefix("reports/") {
                Some(node) => Changed::Report(node),
                None => Changed::Other,
            },
            None => Changed::Other,
        }
    }
}

pub enum Changed<'k> {
    Log,
    Report(&'k str),
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn temp(tag: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("palisade-replica-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("control.db")).unwrap(), dir)
    }

    /// Rows written by a change, captured on one store and applied on another, give the same
    /// state: inserts (a BLOB among them), updates, deletes; local writes are not captured.
    #[test]
    fn captured_changes_replay_on_another_store() {
        let (a, _da) = temp("a");
        let (b, _db) = temp("b");
        let mut log: Vec<Vec<Change>> = Vec::new();
        let mut change = |f: &mut dyn FnMut(&Connection) -> Result<(), StoreError>| {
            let mut conn = a.lock().unwrap();
            let tx = conn.transaction().unwrap();
            let ((), changes) = captured(&tx, f).unwrap();
            tx.commit().unwrap();
            log.push(changes);
        };
        let content = b"\x00\xffbinary".to_vec();
        let hash = palisade_config::content_hash(&content);
        change(&mut |c| {
            c.execute(
                "INSERT INTO versions (kind, hash, author, message, created_ms, content) VALUES ('ip_list', ?1, 'alice', 'm', 1, ?2)",
                params![hash, content],
            )?;
            c.execute("INSERT INTO nodes (name, city, software, registered_ms, last_seen_ms) VALUES ('berlin', 'berlin', '1', 1, 1)", [])?;
            Ok(())
        });
        change(&mut |c| {
            c.execute(
                "INSERT INTO killswitches (name, engaged_ms, actor, reason) VALUES ('retries', 1, 'alice', 'storm')",
                [],
            )?;
            c.execute("UPDATE nodes SET assigned = 1 WHERE name = 'berlin'", [])?;
            Ok(())
        });
        change(&mut |c| {
            c.execute("DELETE FROM killswitches WHERE name = 'retries'", [])?;
            Ok(())
        });
        // A local write (a report's "last seen") is not captured.
        a.report("berlin", &serde_json::from_str(r#"{"requests": 10, "errors": 0}"#).unwrap()).unwrap();
        assert_eq!(log.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);

        for changes in &log {
            let mut conn = b.lock().unwrap();
            let tx = conn.transaction().unwrap();
            apply(&tx, changes).unwrap();
            tx.commit().unwrap();
        }
        let (v, got) = b.get(1).unwrap().unwrap();
        assert_eq!((v.kind.as_str(), got), ("ip_list", content));
        let node = b.nodes().unwrap().remove(0);
        assert_eq!((node.name.as_str(), node.assigned), ("berlin", Some(1)));
        assert!(b.kill_switches().unwrap().1.is_empty());
        // Numbering moves on from the replicated rows.
        let pushed = b.push("config", "", b"x", &palisade_config::content_hash(b"x"), "bob", "next", None).unwrap();
        assert!(matches!(pushed, crate::store::Pushed::Created(v) if v.number == 2));
    }
}
