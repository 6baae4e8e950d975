//! palisade-control: the control plane. It stores every config version immutably with an audit
//! trail, and serves the operator API (JSON over HTTP).
//!
//! It never links the proxy (DESIGN.md): it knows the config document (`palisade-config`) and
//! nothing of how a node serves it. Rollouts, node registration and etcd come on top of this store.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod api;
pub mod artifacts;
pub mod bodies;
pub mod diff;
pub mod killswitch;
pub mod openapi;
pub mod rollout;
pub mod store;
pub mod tokens;

pub use api::{serve, ControlOptions};
