//! The crash-loop guard. A node that crashes twice within a minute of activating a config
//! version quarantines that version: on the next start it boots from the previous last-known-good
//! instead, refuses the version if it is assigned again, and says why (a NACK the control plane
//! turns into a rollback).
//!
//! State, all in the node's state directory:
//! - `running`: written at start, removed on a clean exit. Found at start: the last run crashed.
//! - `activation`: `HASH MILLIS CRASHES`, the version activated last, when, and crashes since.
//! - `quarantine`: one hash per line, versions this node will not run again.
//! - `previous-known-good.toml`: the last-known-good before the current one (same format).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Crashes this soon after an activation count against it.
pub const WINDOW_MS: u64 = 60_000;
/// This many of them quarantine the version.
pub const CRASHES: u32 = 2;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn previous_path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("previous-known-good.toml")
}

#[derive(Debug, Default)]
pub struct Guard {
    dir: Option<PathBuf>,
    quarantined: HashSet<String>,
    /// Quarantined at this start: (hash, why), to be reported.
    pub tripped: Option<(String, String)>,
}

struct Activation {
    hash: String,
    at_ms: u64,
    crashes: u32,
}

fn read_activation(dir: &Path) -> Option<Activation> {
    let text = fs::read_to_string(dir.join("activation")).ok()?;
    let mut w = text.split_whitespace();
    Some(Activation { hash: w.next()?.to_string(), at_ms: w.next()?.parse().ok()?, crashes: w.next()?.parse().ok()? })
}

fn write_activation(dir: &Path, a: &Activation) {
    let _ = fs::write(dir.join("activation"), format!("{} {} {}\n", a.hash, a.at_ms, a.crashes));
}

impl Guard {
    /// Reads the state at start: counts a crash of the last run against the version it had just
    /// activated, quarantines it at [`CRASHES`], and marks this run as running.
    pub fn open(state_dir: Option<&Path>) -> Self {
        let Some(dir) = state_dir else { return Self::default() };
        let _ = fs::create_dir_all(dir);
        let mut quarantined: HashSet<String> = fs::read_to_string(dir.join("quarantine"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let crashed = dir.join("running").exists();
        let mut tripped = None;
        if let Some(mut a) = read_activation(dir) {
            if crashed && now_ms().saturating_sub(a.at_ms) < WINDOW_MS {
                a.crashes += 1;
                tracing::error!(hash = %a.hash, crashes = a.crashes, "the last run crashed within a minute of activating this version");
                if a.crashes >= CRASHES && quarantined.insert(a.hash.clone()) {
                    let why = format!(
                        "quarantined: the node crashed {} times within {} s of activating it",
                        a.crashes,
                        WINDOW_MS / 1000
                    );
                    tracing::error!(hash = %a.hash, "{why}; booting from the previous last-known-good");
                    let _ = fs::write(
                        dir.join("quarantine"),
                        quarantined.iter().map(|h| format!("{h}\n")).collect::<String>(),
                    );
                    tripped = Some((a.hash.clone(), why));
                }
                write_activation(dir, &a);
            }
        }
        let _ = fs::write(dir.join("running"), format!("{}\n", std::process::id()));
        Self { dir: Some(dir.to_path_buf()), quarantined, tripped }
    }

    pub fn is_quarantined(&self, hash: &str) -> bool {
        self.quarantined.contains(hash)
    }

    /// A version became active: the one before it becomes the previous known-good, and the
    /// crash count starts again for the new one (not on a restart into the same version).
    pub fn activated(&self, hash: &str, lkg: &Path) {
        let Some(dir) = &self.dir else { return };
        if read_activation(dir).is_some_and(|a| a.hash == hash) {
            return;
        }
        if lkg.exists() {
            let _ = fs::copy(lkg, previous_path_in(dir));
        }
        write_activation(dir, &Activation { hash: hash.to_string(), at_ms: now_ms(), crashes: 0 });
    }

    /// A clean exit: the next start is not a crash.
    pub fn clean_exit(&self) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(dir.join("running"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_quick_crashes_quarantine_the_version() {
        let dir = std::env::temp_dir().join(format!("palisade-crashloop-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let lkg = dir.join("lkg");
        let g = Guard::open(Some(&dir));
        g.activated("aaa", &lkg);
        g.clean_exit();
        // A clean restart is not a crash.
        let g = Guard::open(Some(&dir));
        assert!(g.tripped.is_none());
        fs::write(&lkg, "v1").unwrap();
        g.activated("bbb", &lkg);
        assert_eq!(fs::read_to_string(previous_path_in(&dir)).unwrap(), "v1");
        // Crash, restart into the same version: one crash, no quarantine, count kept.
        let g = Guard::open(Some(&dir));
        assert!(g.tripped.is_none() && !g.is_quarantined("bbb"));
        g.activated("bbb", &lkg);
        // Second crash within the minute: quarantined, and it stays so.
        let g = Guard::open(Some(&dir));
        assert_eq!(g.tripped.as_ref().map(|t| t.0.as_str()), Some("bbb"));
        assert!(g.is_quarantined("bbb") && !g.is_quarantined("aaa"));
        g.clean_exit();
        let g = Guard::open(Some(&dir));
        assert!(g.is_quarantined("bbb") && g.tripped.is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
