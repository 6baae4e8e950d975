//! palisade-control: the control plane. It stores every config version immutably with an audit
//! trail, and serves the operator API (JSON over HTTP).
//!
//! It never links the proxy (DESIGN.md): it knows the config document (`palisade-config`) and
//! nothing of how a node serves it. One process keeps its state in one SQLite file; several
//! replicas share theirs through etcd ([`replica`]).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod analytics;
pub mod api;
pub mod artifacts;
pub mod bodies;
pub mod dashboard;
pub mod diff;
pub mod etcd;
pub mod health;
pub mod killswitch;
pub mod openapi;
pub mod purge;
pub mod replica;
pub mod rollout;
pub mod store;

pub use api::{serve, ControlOptions, EtcdOptions};
/// The tokens file (shared with the status page, hence its own crate).
pub use palisade_tokens as tokens;
