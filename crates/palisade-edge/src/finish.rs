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

/// A UTC calendar time: (year, month, day, hour, minute, second, weekday with Sunday = 0).
struct Civil(i64, u64, u64, u64, u64, u64, u64);

fn civil(secs: u64) -> Civil {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    Civil(year, month, day, h, m, s, (days + 4) % 7)
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a date crate.
pub fn humantime_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let Civil(year, month, day, h, m, s, _) = civil(d.as_secs());
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", d.subsec_millis())
}

/// An HTTP date (RFC 9110 5.6.7 IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let Civil(year, month, day, h, m, s, wd) = civil(secs);
    let wd = DAYS.get(wd as usize).copied().unwrap_or("Thu");
    let mon = MONTHS.get(month.saturating_sub(1) as usize).copied().unwrap_or("Jan");
    format!("{wd}, {day:02} {mon} {year:04} {h:02}:{m:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_763_460_000_123);
        assert_eq!(super::humantime_rfc3339(t), "2025-11-18T10:00:00.123Z");
        assert_eq!(super::http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(super::http_date(1_763_460_000), "Tue, 18 Nov 2025 10:00:00 GMT");
    }
}
