//! The admin listener (loopback by default): `/metrics`, `/healthz`, `/config`, `POST /reload`,
//! `POST /config` (apply a document sent in the body), `POST /shutdown`, `GET /modules` and
//! `GET /ddos` (automatic DDoS mitigations in force, per zone), `GET /cache` (storage figures) and
//! `POST /cache/purge` (by URL, prefix, host, `Cache-Tag` or everything). Answers use the
//! envelope users of edge-provider APIs know: `{success, errors:[{code,message}], messages, result}`.
//!
//! Changing endpoints (every POST) answer only a loopback peer, or a request carrying
//! `Authorization: Bearer $PALISADE_ADMIN_TOKEN` when that variable is set: an admin listener
//! moved off loopback must not let anyone who reaches it push a config.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use palisade_config::{limits::MAX_DOCUMENT_BYTES, Problem};
use serde_json::json;
use tokio::net::TcpListener;

use crate::server::{Applied, EdgeShared};

pub async fn serve(shared: Arc<EdgeShared>, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    if req.method() != Method::GET && !may_change(&req, peer.ip().is_loopback()) {
                        return Ok::<_, Infallible>(envelope_error(
                            StatusCode::FORBIDDEN,
                            1003,
                            "changes need a loopback peer or Authorization: Bearer $PALISADE_ADMIN_TOKEN",
                        ));
                    }
                    Ok::<_, Infallible>(route(shared, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Whether a changing request is allowed: a valid bearer token when one is configured, else
/// only from loopback.
fn may_change(req: &Request<Incoming>, loopback: bool) -> bool {
    match std::env::var("PALISADE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(token) => req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => loopback,
    }
}

/// Compares without an early exit, so response timing does not reveal a token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn envelope_ok(result: serde_json::Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, json!({"success": true, "errors": [], "messages": [], "result": result}))
}

fn envelope_error(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
    )
}

fn envelope_problems(status: StatusCode, problems: &[Problem]) -> Response<Full<Bytes>> {
    let errors: Vec<_> = problems
        .iter()
        .map(|p| json!({"code": 1001, "message": p.to_string(), "path": p.path, "detail": p.message}))
        .collect();
    json_response(
        status,
        json!({"success": false, "errors": errors, "messages": ["the running configuration was kept"], "result": null}),
    )
}

fn applied(a: Applied) -> Response<Full<Bytes>> {
    envelope_ok(serde_json::to_value(a).unwrap_or_default())
}

async fn route(shared: Arc<EdgeShared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut text = shared.metrics.render(&shared.snapshot.load());
            text.push_str("# HELP palisade_kill_switch 1 when the control plane has switched this module off.\n# TYPE palisade_kill_switch gauge\n");
            for (name, off) in shared.kill.states() {
                text.push_str(&format!("palisade_kill_switch{{name=\"{name}\"}} {}\n", u8::from(off)));
            }
            text.push_str("# HELP palisade_kill_switch_local 1 when this node's admin API has switched this module off.\n# TYPE palisade_kill_switch_local gauge\n");
            for (name, off) in shared.kill.local_states() {
                text.push_str(&format!("palisade_kill_switch_local{{name=\"{name}\"}} {}\n", u8::from(off)));
            }
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        (&Method::GET, "/healthz") => {
            let snap = shared.snapshot.load();
            envelope_ok(json!({"status": "ok", "version": snap.version(), "hash": snap.hash()}))
        }
        (&Method::GET, "/config") => {
            let snap = shared.snapshot.load();
            envelope_ok(json!({
                "version": snap.version(),
                "hash": snap.hash(),
                "source": snap.source,
                "node": snap.config.doc.node,
                "zones": snap.config.doc.zones.iter().map(|z| &z.name).collect::<Vec<_>>(),
            }))
        }
        (&Method::POST, "/reload") => match shared.reload().await {
            Ok(a) => applied(a),
            Err(p) => envelope_problems(StatusCode::UNPROCESSABLE_ENTITY, &p),
        },
        (&Method::POST, "/config") => {
            let body = match Limited::new(req.into_body(), MAX_DOCUMENT_BYTES).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return envelope_problems(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &[Problem {
                            path: "(document)".into(),
                            message: format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
                        }],
                    )
                }
            };
            match shared.apply(&body, "admin API") {
                Ok(a) => applied(a),
                Err(p) => envelope_problems(StatusCode::UNPROCESSABLE_ENTITY, &p),
            }
        }
        (&Method::GET, "/ddos") => {
            let snap = shared.snapshot.load();
            let now = crate::pool::now_ms();
            let zones: Vec<_> =
                snap.zones.iter().filter_map(|z| z.ddos.as_ref().map(|d| d.report(&z.name, now))).collect();
            // Node-wide: the sources whose new connections are reset at accept, and how many so far.
            let accept = json!({
                "sources": shared.drops.sources(),
                "dropped": shared.metrics.connections_rejected_ddos.get(),
            });
            envelope_ok(json!({ "zones": zones, "dropped_at_accept": accept }))
        }
        (&Method::GET, "/modules") => {
            let snap = shared.snapshot.load();
            let zones: Vec<_> = snap
                .zones
                .iter()
                .map(|z| {
                    let modules: Vec<_> = z.modules.iter().map(crate::modules::Slot::state).collect();
                    json!({ "zone": &*z.name, "modules": modules })
                })
                .collect();
            let local: Vec<&str> = shared.kill.local_states().filter(|(_, off)| *off).map(|(n, _)| n).collect();
            let fleet: Vec<&str> = shared.kill.states().filter(|(_, off)| *off).map(|(n, _)| n).collect();
            envelope_ok(json!({ "zones": zones, "switched_off": { "fleet": fleet, "node": local } }))
        }
        (&Method::POST, path) if path.starts_with("/killswitches/") => {
            let rest = path.trim_start_matches("/killswitches/");
            let (name, off) = match rest.rsplit_once('/') {
                Some((name, "off")) => (name, true),
                Some((name, "release")) => (name, false),
                _ => return envelope_error(StatusCode::NOT_FOUND, 1000, "POST /killswitches/NAME/off or /release"),
            };
            if !shared.kill.set_local(name, off) {
                return envelope_error(StatusCode::NOT_FOUND, 1004, "no kill switch of that name");
            }
            tracing::warn!(switch = name, off, "kill switch set on this node by the admin API");
            envelope_ok(json!({ "name": name, "off": off }))
        }
        (&Method::GET, "/cache") => envelope_ok(shared.snapshot.load().cache.report()),
        (&Method::POST, "/cache/purge") => {
            let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return envelope_error(StatusCode::PAYLOAD_TOO_LARGE, 1005, "a purge request is at most 1 MiB")
                }
            };
            let request: crate::cache::PurgeRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return envelope_error(StatusCode::BAD_REQUEST, 1005, &format!("purge request: {e}")),
            };
            let purged = shared.snapshot.load().cache.purge_request(&request);
            match purged {
                Ok((n, files)) => {
                    // Answered once the files are gone: a purge answered survives a crash.
                    crate::cache::disk::delete_files(files).await;
                    envelope_ok(json!({ "purges": n }))
                }
                Err(e) => envelope_error(StatusCode::BAD_REQUEST, 1005, &e),
            }
        }
        (&Method::POST, "/shutdown") => {
            let _ = shared.shutdown.send(true);
            envelope_ok(json!({"shutting_down": true}))
        }
        _ => envelope_error(StatusCode::NOT_FOUND, 1000, "no such admin endpoint"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
    }
}
