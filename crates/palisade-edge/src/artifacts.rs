//! Artifacts on the node: where their bytes come from, and what they compile into.
//!
//! A document pins each artifact by SHA-256. The bytes come from this node's artifact store
//! (`STATE_DIR/artifacts/<sha256>`, filled by the control-plane agent, which fetches by hash),
//! else from the entry's `file` (a stand-alone node). Either way they are checked against the
//! pinned hash, then decoded by the one decoder of their kind in `palisade_config::artifact`,
//! with its limits. Any failure is a problem of the document: the node answers NACK with it and
//! keeps serving what it runs.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use palisade_config::artifact::{self, Artifact, ArtifactKind, IpSet};
use palisade_config::{content_hash, ArtifactRef, Problem};
use rustls::sign::CertifiedKey;

/// An artifact ready for the data plane.
#[derive(Clone)]
pub enum Compiled {
    IpList(Arc<IpSet>),
    /// The bot model, compiled ([`crate::bot::Model`]).
    FeatureFile(Arc<crate::bot::Model>),
    Cert(Arc<CertifiedKey>),
}

/// One artifact of a snapshot: its pin and its compiled form.
#[derive(Clone)]
pub struct Loaded {
    pub sha256: String,
    pub kind: ArtifactKind,
    pub compiled: Compiled,
}

/// Where a node keeps the artifacts it fetched or read: on disk under its state directory (so
/// that booting from last-known-good needs nothing from above, nor the `file` it was read
/// from), else in memory.
#[derive(Debug, Default)]
pub struct Store {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<[u8]>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    pub fn new(state_dir: Option<&Path>) -> Self {
        Self { dir: state_dir.map(|d| d.join("artifacts")), memory: Mutex::default() }
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        // Only a well-formed hash names a file: the name cannot climb out of the directory.
        self.dir.as_ref().filter(|_| artifact::is_sha256(sha256)).map(|d| d.join(sha256))
    }

    /// Whether the bytes for `sha256` are here.
    pub fn has(&self, sha256: &str) -> bool {
        lock(&self.memory).contains_key(sha256) || self.path(sha256).is_some_and(|p| p.exists())
    }

    /// Keeps bytes that were checked against `sha256` by the caller.
    pub fn put(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        match self.path(sha256) {
            Some(path) => crate::lkg::write_atomic(&path, bytes),
            None => {
                lock(&self.memory).insert(sha256.to_string(), Arc::from(bytes));
                Ok(())
            }
        }
    }

    /// Forgets every artifact not in `keep` (the running snapshot's and the one before it:
    /// last-known-good and previous-known-good must be bootable).
    pub fn retain(&self, keep: &HashSet<&str>) {
        lock(&self.memory).retain(|h, _| keep.contains(h.as_str()));
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if artifact::is_sha256(&name) && !keep.contains(name.as_ref()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The bytes for `r`: from this store, else from `r.file`; checked against the pin and the
    /// kind's size limit.
    fn bytes(&self, r: &ArtifactRef) -> Result<Arc<[u8]>, String> {
        if let Some(b) = lock(&self.memory).get(&r.sha256) {
            return Ok(b.clone());
        }
        let limit = r.kind.max_bytes();
        let from_disk = self.path(&r.sha256).filter(|p| p.exists());
        let (path, from_store) = match (from_disk, &r.file) {
            (Some(p), _) => (p, true),
            (None, Some(f)) => (PathBuf::from(f), false),
            (None, None) => {
                return Err(format!(
                    "sha256 {} is not on this node (a managed node fetches it from the control plane; a stand-alone one needs `file`)",
                    r.sha256
                ))
            }
        };
        let mut buf = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut buf))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if buf.len() > limit {
            return Err(format!("{} is over the {} limit of {limit} bytes", path.display(), r.kind));
        }
        let got = content_hash(&buf);
        if got != r.sha256 {
            let what = if from_store { "stored copy (damaged; removed)" } else { "file" };
            if from_store {
                let _ = std::fs::remove_file(&path);
            }
            return Err(format!("{what} {} has sha256 {got}; the document pins {}", path.display(), r.sha256));
        }
        if !from_store && self.dir.is_some() {
            // Kept by hash, so last-known-good boots even after `file` is edited or gone.
            if let Err(e) = self.put(&r.sha256, &buf) {
                tracing::warn!(artifact = %r.name, error = %e, "cannot keep a copy in the state directory");
            }
        }
        Ok(Arc::from(buf))
    }
}

/// Every artifact of a document, fetched, checked and compiled; `previous` lends the ones it
/// already compiled (same hash, same bytes). Problems are at `artifacts[i]`.
pub fn load_all(
    refs: &[ArtifactRef],
    store: &Store,
    previous: Option<&HashMap<String, Loaded>>,
) -> Result<HashMap<String, Loaded>, Vec<Problem>> {
    let mut out = HashMap::with_capacity(refs.len());
    let mut problems = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let at = |m: String| Problem { path: format!("artifacts[{i}] ({} {})", r.kind, r.name), message: m };
        if let Some(l) = previous.and_then(|p| p.get(&r.name)).filter(|l| l.sha256 == r.sha256 && l.kind == r.kind) {
            out.insert(r.name.clone(), l.clone());
            continue;
        }
        let bytes = match store.bytes(r) {
            Ok(b) => b,
            Err(m) => {
                problems.push(at(m));
                continue;
            }
        };
        let compiled = match artifact::decode(r.kind, &bytes) {
            Ok(Artifact::IpList(set)) => Ok(Compiled::IpList(Arc::new(set))),
            Ok(Artifact::FeatureFile(f)) => crate::bot::Model::compile(&f).map(|m| Compiled::FeatureFile(Arc::new(m))),
            Ok(Artifact::CertBundle(b)) => {
                crate::tls::certified_key(b.chain, b.key).map(|k| Compiled::Cert(Arc::new(k)))
            }
            Err(ps) => Err(ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")),
        };
        match compiled {
            Ok(compiled) => {
                out.insert(r.name.clone(), Loaded { sha256: r.sha256.clone(), kind: r.kind, compiled });
            }
            Err(m) => problems.push(at(m)),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
