//! Active health checks: one task per zone with a `health_check`, probing every origin with a
//! plain HTTP/1.1 GET on a fresh connection. The task holds only a weak reference to its zone, so
//! it ends by itself when a reload retires the snapshot that started it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::pool::{ms, OriginState};
use crate::snapshot::ZoneRuntime;

pub fn spawn(zone: &Arc<ZoneRuntime>) {
    let Some(hc) = zone.health_check.clone() else { return };
    let weak: Weak<ZoneRuntime> = Arc::downgrade(zone);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ms(hc.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(zone) = weak.upgrade() else { return };
            let mut probes = tokio::task::JoinSet::new();
            for o in &zone.pool.origins {
                let o = o.clone();
                let host = zone.health_host.clone();
                let hc = hc.clone();
                probes.spawn(async move {
                    let ok = tokio::time::timeout(ms(hc.timeout_ms), probe(&o, &host, &hc.path))
                        .await
                        .map(|r| r == Some(hc.expected_status))
                        .unwrap_or(false);
                    record(&o, ok, hc.healthy_threshold, hc.unhealthy_threshold);
                });
            }
            drop(zone);
            while probes.join_next().await.is_some() {}
        }
    });
}

async fn probe(o: &OriginState, host: &str, path: &str) -> Option<u16> {
    let stream = TcpStream::connect(o.addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header("host", host)
        .header("user-agent", "palisade-health-check")
        .header("connection", "close")
        .body(Empty::<bytes::Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().as_u16())
}

fn record(o: &OriginState, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) {
    if ok {
        o.check_failures.store(0, Ordering::Relaxed);
        let n = o.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
        if !o.active_healthy.load(Ordering::Relaxed) && n >= healthy_threshold {
            o.active_healthy.store(true, Ordering::Relaxed);
            tracing::info!(origin = %o.label, "origin healthy again after {n} passing checks");
        }
    } else {
        o.check_successes.store(0, Ordering::Relaxed);
        let n = o.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if o.active_healthy.load(Ordering::Relaxed) && n >= unhealthy_threshold {
            o.active_healthy.store(false, Ordering::Relaxed);
            tracing::warn!(origin = %o.label, "origin unhealthy after {n} failed checks");
        }
    }
}
