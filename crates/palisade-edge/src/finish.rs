//! The end of a request: one place that updates metrics, writes the access-log record and
//! releases in-flight counters, run when the response body is dropped (completed, failed, or the
//! client went away), so that no exit path is counted twice or forgotten.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::access_log::AccessRecord;
use crate::proxy::ConnCtx;
use crate::snapshot::ZoneRuntime;

pub struct Finish {
    /// The connection (its own counters, and the node's shared state). Held rather than the node
    /// state itself: this reference count is only touched by the connection's own worker.
    pub ctx: Arc<ConnCtx>,
    pub started: Instant,
    /// Wall-clock start, read only when the access log is on.
    pub started_wall: Option<SystemTime>,
    pub request_id: String,
    pub client_ip: IpAddr,
    pub method: hyper::Method,
    pub host: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    pub zone: Option<Arc<ZoneRuntime>>,
    /// The origin that answered, in `zone`'s pool; its in-flight count is this record's to end
    /// (see [`crate::pool::OriginLease::keep`]).
    pub origin: Option<usize>,
    pub origin_duration: Option<Duration>,
    pub bytes_sent: u64,
    /// Of `bytes_sent`, those moved in the kernel ([`crate::splice`]).
    pub spliced_bytes: u64,
    pub completed: bool,
    pub total_timeout: bool,
    /// A module failed and was skipped (see [`crate::modules`]).
    pub degraded: bool,
    /// The request's origin slot (`[zones.concurrency]`), given up when the response ends.
    pub slot: Option<crate::fairq::Permit>,
    /// What the cache did for the request, when it looked.
    pub cache: Option<crate::cache::CacheStatus>,
    /// The bot module's finding, when it ran.
    pub bot: Option<crate::bot::BotResult>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.ctx.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        let elapsed = crate::clock::now().saturating_duration_since(self.started);
        let origin = self.origin.and_then(|i| self.zone.as_ref()?.pool.get(i));
        if let Some(zone) = &self.zone {
            zone.budget.requests_in_flight.sub(1);
            zone.stats.latency.observe(elapsed);
            if origin.is_none() {
                zone.stats.local.add(self.status);
            }
        }
        if self.spliced_bytes > 0 {
            self.ctx.edge.metrics.spliced_bytes.fetch_add(self.spliced_bytes, Ordering::Relaxed);
        }
        if let Some(o) = origin {
            o.end_lease();
            o.stats.responses.add(self.status);
            if self.total_timeout {
                o.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.ctx.edge.access_log_on() {
            let record = AccessRecord {
                edge_start_timestamp: humantime_rfc3339(self.started_wall.unwrap_or_else(SystemTime::now)),
                ray_id: std::mem::take(&mut self.request_id),
                zone_name: self.zone.as_ref().map(|z| z.name.to_string()).unwrap_or_default(),
                client_ip: self.client_ip.to_string(),
                client_request_method: self.method.to_string(),
                client_request_host: std::mem::take(&mut self.host),
                client_request_path: std::mem::take(&mut self.path),
                client_request_protocol: self.protocol,
                edge_response_status: self.status,
                edge_response_bytes: self.bytes_sent,
                edge_time_ms: elapsed.as_secs_f64() * 1000.0,
                origin_ip: origin.map(|o| o.label.clone()),
                origin_response_time_ms: self.origin_duration.map(|d| d.as_secs_f64() * 1000.0),
                edge_response_completed: self.completed,
                security_degraded: self.degraded,
                cache_cache_status: self.cache.and_then(|c| crate::cache::STATUS_NAMES.get(c as usize).copied()),
                ja4: self.ctx.ja4.as_deref().map(String::from),
                h2_fingerprint: self.ctx.h2.get().map(|f| f.to_string()),
                bot_score: self.bot.map(|b| b.score),
                bot_verified: self.bot.is_some_and(|b| b.verified),
            };
            self.ctx.edge.access_log.send(record, &self.ctx.edge.metrics);
        }
    }
}

pub use palisade_config::time::{http_date, humantime_rfc3339};
