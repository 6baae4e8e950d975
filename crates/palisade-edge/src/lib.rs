//! palisade-edge: the data plane. One node ("a city") that terminates client connections,
//! guards them, routes requests by host to a zone and proxies them to the zone's origins.
//!
//! Config flows one way: bytes -> [`palisade_config::load`] -> [`snapshot::compile`] ->
//! atomic swap ([`server::EdgeShared::apply`]). This crate must never depend on the control plane:
//! a node serves from what it has (last-known-good on disk) when everything above it is gone.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod access_log;
mod admin;
pub mod agent;
pub mod analytics;
pub mod artifacts;
pub mod body;
pub mod bot;
pub mod cache;
pub mod challenge;
pub mod clock;
pub mod codec;
pub mod crashloop;
pub mod ddos;
pub mod fairq;
pub mod finish;
pub mod guard;
pub mod h1;
pub mod h2fp;
mod health;
pub mod ja4;
pub mod kill;
pub mod lkg;
pub mod metrics;
pub mod modules;
pub mod pages;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod snapshot;
pub mod splice;
pub mod tls;
pub mod upstream;

pub use server::{Edge, EdgeOptions, EdgeShared, ListenOverride, StartError};

/// Locks a mutex whether or not a previous holder panicked: every mutex here guards plain
/// counters or slots that stay valid, and a panic contained elsewhere must not poison the node.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
