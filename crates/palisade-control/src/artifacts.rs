//! Artifacts on the control plane: IP lists, feature files and certificate bundles, stored as
//! versions of their own (per kind and name), served to nodes by hash, and rolled out through a
//! config version that pins the new hash, so that a rollout, a rollback and a node's
//! last-known-good always name exactly the bytes they run.
//!
//! Generated artifacts arrive the same way as human ones. Each push is an outcome for its
//! source (author, kind, name): accepted, refused at push, or rolled back after reaching nodes.
//! A source whose outcomes alternate between good and bad is reported as flapping.

use rusqlite::params;
use serde::Serialize;

use crate::store::Version;
use crate::store::{
    checked, col_opt_u64, col_u64, insert_audit, now_ms, to_i64, version_and_content, Store, StoreError,
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS artifact_outcomes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    author         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    at_ms          INTEGER NOT NULL,
    ok             INTEGER NOT NULL,
    detail         TEXT    NOT NULL,
    -- The config version this push produced (a rollback of it is an outcome of the same source).
    config_version INTEGER
);
CREATE INDEX IF NOT EXISTS artifact_outcomes_source ON artifact_outcomes(author, kind, name, id);
CREATE INDEX IF NOT EXISTS artifact_outcomes_config ON artifact_outcomes(config_version);
";

/// A source's state is judged on its last this many outcomes.
pub const WINDOW: usize = 6;
/// Changes between good and bad within the window that make a source flapping.
pub const FLAP_CHANGES: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub at_ms: u64,
    pub ok: bool,
    pub detail: String,
    pub config_version: Option<u64>,
}

/// Where artifacts come from, and how their last pushes went.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub author: String,
    pub kind: String,
    pub name: String,
    /// `healthy`, `failing` (its last outcome was bad) or `flapping` (good and bad alternate).
    pub state: &'static str,
    /// Newest first, at most [`WINDOW`].
    pub recent: Vec<Outcome>,
}

fn judge(recent: &[Outcome]) -> &'static str {
    let changes = recent.windows(2).filter(|w| matches!(w, [a, b] if a.ok != b.ok)).count();
    if changes >= FLAP_CHANGES {
        "flapping"
    } else if recent.first().is_some_and(|o| !o.ok) {
        "failing"
    } else {
        "healthy"
    }
}

fn outcomes(conn: &rusqlite::Connection, author: &str, kind: &str, name: &str) -> Result<Vec<Outcome>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, ok, detail, config_version FROM artifact_outcomes
         WHERE author = ?1 AND kind = ?2 AND name = ?3 ORDER BY id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![author, kind, name, WINDOW as i64], |r| {
        Ok(Outcome {
            at_ms: col_u64(r, 0)?,
            ok: r.get::<_, i64>(1)? != 0,
            detail: r.get(2)?,
            config_version: col_opt_u64(r, 3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Runs `change` to a source's outcomes; returns its state after, and reports it when the
/// change made it flapping.
fn judged(
    conn: &rusqlite::Connection,
    author: &str,
    kind: &str,
    name: &str,
    change: impl FnOnce() -> Result<(), StoreError>,
) -> Result<&'static str, StoreError> {
    let before = judge(&outcomes(conn, author, kind, name)?);
    change()?;
    let after = judge(&outcomes(conn, author, kind, name)?);
    if after == "flapping" && before != "flapping" {
        tracing::warn!(author, kind, name, "artifact source is flapping: its pushes alternate between good and bad");
        insert_audit(
            conn,
            now_ms(),
            "control",
            "artifact-source",
            &format!("{kind} {name} from {author}"),
            "flapping",
            &format!("{FLAP_CHANGES} or more changes between good and bad in its last {WINDOW} pushes"),
        )?;
    }
    Ok(after)
}

/// A generated or pushed feature file whose feature count or size moves by more than this, in
/// percent of the one the fleet runs, waits for an operator's explicit approval (`approved=true`).
pub const MAX_UNAPPROVED_CHANGE_PERCENT: u64 = 50;

/// Why a new feature file needs an approval (its change from the one the fleet runs), if it does.
pub fn needs_approval(running: &[u8], new: &[u8]) -> Option<String> {
    use palisade_config::artifact::{decode, Artifact, ArtifactKind};
    let features = |b: &[u8]| match decode(ArtifactKind::FeatureFile, b) {
        Ok(Artifact::FeatureFile(f)) => Some(f.features.len() as u64),
        _ => None,
    };
    let change = |old: u64, new: u64| new.abs_diff(old).saturating_mul(100) / old.max(1);
    let mut why = Vec::new();
    if let (Some(old), Some(new)) = (features(running), features(new)) {
        if change(old, new) > MAX_UNAPPROVED_CHANGE_PERCENT {
            why.push(format!("features {old} -> {new}"));
        }
    }
    let (old, new) = (running.len() as u64, new.len() as u64);
    if change(old, new) > MAX_UNAPPROVED_CHANGE_PERCENT {
        why.push(format!("bytes {old} -> {new}"));
    }
    (!why.is_empty()).then(|| {
        format!(
            "{}: more than {MAX_UNAPPROVED_CHANGE_PERCENT}% from the file the fleet runs; an operator approves it by pushing it with approved=true",
            why.join(", ")
        )
    })
}

impl Store {
    /// The bytes of artifact `name` that the fleet runs: pinned by the config version most
    /// nodes last applied; without nodes, its newest version.
    pub fn running_artifact(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut applied: Vec<u64> = self.nodes()?.iter().filter_map(|n| n.applied).collect();
        applied.sort_unstable();
        let mut most = None;
        let mut best = 0;
        for chunk in applied.chunk_by(|a, b| a == b) {
            if chunk.len() > best {
                best = chunk.len();
                most = chunk.first().copied();
            }
        }
        if let Some((_, text)) = most.map(|v| self.get(v)).transpose()?.flatten() {
            if let Ok(valid) = palisade_config::load(&text) {
                let pin = valid.doc.artifacts.iter().find(|a| a.name == name && a.kind.as_str() == kind);
                if let Some(pin) = pin {
                    return Ok(self.artifact_by_hash(&pin.sha256)?.map(|(_, bytes)| bytes));
                }
            }
        }
        let Some(head) = self.head(kind, name)? else { return Ok(None) };
        Ok(self.get(head.number)?.map(|(_, bytes)| bytes))
    }

    /// An artifact's bytes by their hash, checked.
    pub fn artifact_by_hash(&self, hash: &str) -> Result<Option<(Version, Vec<u8>)>, StoreError> {
        use rusqlite::OptionalExtension;
        let conn = self.lock()?;
        let found = conn
            .query_row(
                &format!(
                    "SELECT {}, content FROM versions WHERE hash = ?1 AND kind != 'config' ORDER BY number LIMIT 1",
                    crate::store::VERSION_COLUMNS
                ),
                params![hash],
                version_and_content,
            )
            .optional()?;
        found.map(checked).transpose()
    }

    /// One outcome of a source; returns the source's state after it.
    pub fn artifact_outcome(
        &self,
        author: &str,
        kind: &str,
        name: &str,
        ok: bool,
        detail: &str,
        config_version: Option<u64>,
    ) -> Result<&'static str, StoreError> {
        self.write(|conn| {
            judged(conn, author, kind, name, || {
                conn.execute(
                    "INSERT INTO artifact_outcomes (author, kind, name, at_ms, ok, detail, config_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![author, kind, name, to_i64(now_ms())?, ok, detail, config_version.map(to_i64).transpose()?],
                )?;
                Ok(())
            })
        })
    }

    /// Every source, with its last outcomes and state.
    pub fn artifact_sources(&self) -> Result<Vec<Source>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT author, kind, name FROM artifact_outcomes ORDER BY kind, name, author")?;
        let keys = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for (author, kind, name) in keys {
            let recent = outcomes(&conn, &author, &kind, &name)?;
            out.push(Source { state: judge(&recent), author, kind, name, recent });
        }
        Ok(out)
    }
}

/// What an artifact push did, step by step.
#[derive(Debug, Serialize)]
pub struct ArtifactPushed {
    /// A new artifact version was stored (false: the content equals the head's).
    pub created: bool,
    pub version: Version,
    /// The config version that pins it, when the head config lists the artifact.
    pub config: Option<Version>,
    /// Why no config version was made, when none was.
    pub config_note: Option<String>,
    pub rollout: Option<crate::rollout::Rollout>,
    /// Why no rollout was started, when one was asked for and none was.
    pub rollout_note: Option<String>,
    /// The source's state after this push.
    pub source_state: &'static str,
}

/// How a pushed artifact should reach the fleet.
pub struct Plan {
    /// The artifact was not decoded here (the operator said so); the nodes still decode it.
    pub unchecked: bool,
    /// Start a rollout of the new config version: (stages, bake in ms, lane).
    pub rollout: Option<(Vec<String>, u64, &'static str)>,
}

impl Store {
    /// Stores an artifact version, re-pins it in a new config version when the head config
    /// lists it, and starts that version's rollout when asked. Each step commits on its own: a
    /// crash in between leaves a stored artifact that no config uses yet, never a half-made one.
    #[allow(clippy::too_many_arguments)]
    pub fn push_artifact(
        &self,
        author: &str,
        kind: palisade_config::artifact::ArtifactKind,
        name: &str,
        content: &[u8],
        message: &str,
        plan: Plan,
    ) -> Result<ArtifactPushed, StoreError> {
        use crate::store::Pushed;
        let hash = palisade_config::content_hash(content);
        let kind = kind.as_str();
        let message = if plan.unchecked { format!("{message} (pushed unchecked)") } else { message.to_string() };
        let (created, version) = match self.push(kind, name, content, &hash, author, &message, None)? {
            Pushed::Created(v) => (true, v),
            Pushed::Unchanged(v) => (false, v),
            Pushed::Conflict { .. } => return Err(StoreError::Range("conflict without a parent check".into())),
        };
        let mut out = ArtifactPushed {
            created,
            version,
            config: None,
            config_note: None,
            rollout: None,
            rollout_note: None,
            source_state: "healthy",
        };
        match self.repin_head(author, kind, name, &hash, &message)? {
            Ok(Some(config)) => out.config = Some(config),
            Ok(None) => out.config_note = Some("the head config already pins these bytes".into()),
            Err(why) => out.config_note = Some(why),
        }
        out.source_state = self.artifact_outcome(
            author,
            kind,
            name,
            true,
            &format!("v{} sha256 {hash}", out.version.number),
            out.config.as_ref().map(|c| c.number),
        )?;
        match (&out.config, plan.rollout) {
            (Some(config), Some((stages, bake_ms, lane))) => {
                match self.start_rollout(author, config.number, &stages, bake_ms, lane)? {
                    Ok(r) => out.rollout = Some(r),
                    Err(why) => out.rollout_note = Some(why),
                }
            }
            (None, Some(_)) => out.rollout_note = Some("no new config version to roll out".into()),
            (_, None) => {}
        }
        Ok(out)
    }

    /// A new config version from the head with `name` pinned to `hash`; `Ok(None)`: it already is.
    fn repin_head(
        &self,
        author: &str,
        kind: &str,
        name: &str,
        hash: &str,
        message: &str,
    ) -> Result<Result<Option<Version>, String>, StoreError> {
        use crate::store::Pushed;
        let Some(head) = self.head("config", "")? else {
            return Ok(Err("there is no config version yet".into()));
        };
        let Some((_, text)) = self.get(head.number)? else {
            return Ok(Err(format!("config v{} is gone", head.number)));
        };
        let text = String::from_utf8_lossy(&text);
        let new = match repin(&text, kind, name, hash) {
            Ok(new) => new,
            Err(why) => return Ok(Err(why)),
        };
        let valid = match palisade_config::load(new.as_bytes()) {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("the re-pinned config does not validate:\n{e}"))),
        };
        let short = hash.get(..12).unwrap_or(hash);
        let msg = format!("{kind} {name} -> sha256 {short}: {message}");
        Ok(match self.push("config", "", new.as_bytes(), &valid.hash, author, &msg, Some(Some(head.number)))? {
            Pushed::Created(v) => Ok(Some(v)),
            Pushed::Unchanged(_) => Ok(None),
            Pushed::Conflict { head, .. } => {
                Err(format!("the config head moved to {head:?} meanwhile; push the artifact again"))
            }
        })
    }
}

/// A rollback of `config_version` turns the push that produced it into a bad outcome.
pub(crate) fn rolled_back(conn: &rusqlite::Connection, config_version: i64, reason: &str) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id, author, kind, name FROM artifact_outcomes WHERE config_version = ?1 AND ok = 1")?;
    let pushes = stmt
        .query_map(params![config_version], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, author, kind, name) in pushes {
        judged(conn, &author, &kind, &name, || {
            conn.execute(
                "UPDATE artifact_outcomes SET ok = 0, detail = ?2 WHERE id = ?1",
                params![id, format!("rolled back: {reason}")],
            )?;
            Ok(())
        })?;
    }
    Ok(())
}

/// The config document with the artifact `name` re-pinned to `sha256`, comments and layout
/// kept. The document must already list the artifact with this kind: a push can change what an
/// artifact's bytes are, never make the config use something new.
pub fn repin(config: &str, kind: &str, name: &str, sha256: &str) -> Result<String, String> {
    let mut doc: toml_edit::DocumentMut = config.parse().map_err(|e| format!("the head config does not parse: {e}"))?;
    let entries = doc
        .get_mut("artifacts")
        .and_then(|a| a.as_array_of_tables_mut())
        .ok_or_else(|| format!("the head config lists no artifacts; add [[artifacts]] name = \"{name}\" first"))?;
    let entry = entries
        .iter_mut()
        .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
        .ok_or_else(|| format!("the head config has no artifact named `{name}`; add it to [[artifacts]] first"))?;
    let listed = entry.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if listed != kind {
        return Err(format!("the head config lists `{name}` as a {listed}, not a {kind}"));
    }
    entry["sha256"] = toml_edit::value(sha256);
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(ok: bool) -> Outcome {
        Outcome { at_ms: 0, ok, detail: String::new(), config_version: None }
    }

    #[test]
    fn sources_are_judged_on_their_recent_outcomes() {
        assert_eq!(judge(&[o(true), o(true)]), "healthy");
        assert_eq!(judge(&[o(false), o(true)]), "failing");
        assert_eq!(judge(&[o(false), o(false), o(false)]), "failing");
        assert_eq!(judge(&[o(true), o(false), o(true), o(false)]), "flapping");
        assert_eq!(judge(&[o(true), o(true), o(false), o(true)]), "healthy");
    }

    #[test]
    fn repin_changes_only_the_hash() {
        let config = "# fleet\nversion = 3\n\n[[artifacts]]\nname = \"deny\" # the blocklist\nkind = \"ip_list\"\nsha256 = \"aa\"\n";
        let out = repin(config, "ip_list", "deny", "bb").unwrap();
        assert_eq!(out, config.replace("\"aa\"", "\"bb\""));
        assert!(repin(config, "feature_file", "deny", "bb").unwrap_err().contains("as a ip_list"));
        assert!(repin(config, "ip_list", "other", "bb").unwrap_err().contains("no artifact named `other`"));
        assert!(repin("version = 1\n", "ip_list", "deny", "bb").unwrap_err().contains("lists no artifacts"));
    }
}
