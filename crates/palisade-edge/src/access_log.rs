//! Access log: one JSON line per request, with field names in the style of edge log exports.
//! Records leave the request path through a bounded channel (a full channel drops the record and
//! counts it, never blocks); a writer task batches them to a file or stdout. Write failures are
//! counted and reported at most once every ten seconds.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessRecord {
    pub edge_start_timestamp: String,
    #[serde(rename = "RayID")]
    pub ray_id: String,
    pub zone_name: String,
    #[serde(rename = "ClientIP")]
    pub client_ip: String,
    pub client_request_method: String,
    pub client_request_host: String,
    pub client_request_path: String,
    pub client_request_protocol: &'static str,
    pub edge_response_status: u16,
    pub edge_response_bytes: u64,
    pub edge_time_ms: f64,
    #[serde(rename = "OriginIP")]
    pub origin_ip: Option<String>,
    pub origin_response_time_ms: Option<f64>,
    pub edge_response_completed: bool,
    /// A module failed and was skipped for this request (its fail_open / fail_stale policy).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub security_degraded: bool,
    /// What the cache did: hit, miss, expired, stale, updating, revalidated, bypass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_cache_status: Option<&'static str>,
    /// The TLS client fingerprint.
    #[serde(rename = "JA4", skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// The HTTP/2 client fingerprint (Akamai's form).
    #[serde(rename = "H2Fingerprint", skip_serializing_if = "Option::is_none")]
    pub h2_fingerprint: Option<String>,
    /// 1 (automated) to 99 (human), when the bot module scored the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_score: Option<u8>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bot_verified: bool,
}

pub struct AccessLog {
    tx: Option<mpsc::Sender<AccessRecord>>,
}

impl AccessLog {
    pub fn off() -> Self {
        Self { tx: None }
    }

    /// Starts the writer task. `target` is "off", "stdout" or a file path (appended to).
    pub fn start(target: &str, buffer: usize, metrics: std::sync::Arc<Metrics>) -> std::io::Result<Self> {
        if target == "off" {
            return Ok(Self::off());
        }
        let mut out: Box<dyn Write + Send> = if target == "stdout" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(target)?)
        };
        let (tx, mut rx) = mpsc::channel::<AccessRecord>(buffer.max(1));
        // Blocking writes belong on a blocking thread, not on the request path's workers.
        tokio::task::spawn_blocking(move || {
            let mut last_report: Option<Instant> = None;
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(first) = rx.blocking_recv() {
                buf.clear();
                let mut rec = Some(first);
                while let Some(r) = rec.take() {
                    if serde_json::to_writer(&mut buf, &r).is_ok() {
                        buf.push(b'\n');
                    }
                    if buf.len() < 60 * 1024 {
                        rec = rx.try_recv().ok();
                    }
                }
                if let Err(e) = out.write_all(&buf).and_then(|_| out.flush()) {
                    metrics.access_log_write_errors.fetch_add(1, Ordering::Relaxed);
                    if last_report.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        last_report = Some(Instant::now());
                        tracing::error!(error = %e, "access log write failed (further failures are counted, reported every 10 s)");
                    }
                }
            }
        });
        Ok(Self { tx: Some(tx) })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn send(&self, record: AccessRecord, metrics: &Metrics) {
        if let Some(tx) = &self.tx {
            if tx.try_send(record).is_err() {
                metrics.access_log_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
