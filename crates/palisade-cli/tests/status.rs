//! The status page as its users see it: a real `palisade status` process probing a real fleet,
//! read through its JSON API, its Atom feed, its webhooks and a real Chromium. A node stops and
//! its component goes to outage with an automatic incident; it comes back and the incident
//! resolves; then every node and the control plane stop, and the page keeps telling the truth,
//! across its own restart too.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::browser::Browser;
use common::fleet::*;
use common::*;
use serde_json::{json, Value};

const OPERATOR: &str = "5a7e5a7e5a7e5a7e5a7e5a7e5a7e5a7e5a7e";

/// A webhook receiver: every JSON body POSTed to it.
async fn webhook_sink() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        if let Ok(v) = serde_json::from_slice(&body) {
                            sink.lock().unwrap().push(v);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, got)
}

fn status_config(
    dir: &std::path::Path,
    listen: &str,
    nodes: &[(String, EdgeProc)],
    hook: SocketAddr,
) -> std::path::PathBuf {
    std::fs::write(dir.join("tokens"), format!("oncall {OPERATOR}\n")).unwrap();
    let mut text = format!(
        "title = \"Site status\"\nlisten = \"{listen}\"\ndata_dir = \"data\"\ntokens_file = \"tokens\"\n\
interval_ms = 200\ntimeout_ms = 500\nfail_after = 2\nrecover_after = 2\n\
[[zones]]\nname = \"site\"\nhost = \"site.example\"\nbody_contains = \"Palisade demo\"\n\
[[webhooks]]\nurl = \"http://{hook}/hook\"\n"
    );
    for (name, e) in nodes {
        text.push_str(&format!("[[cities]]\nname = \"{name}\"\naddress = \"{}\"\n", e.http()));
    }
    let path = dir.join("status.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_status(config: &std::path::Path) -> (Proc, SocketAddr) {
    let p = Proc::spawn(&["status", "--config", config.to_str().unwrap()]);
    let line = p.wait_line("palisade status ready");
    let addr = field(&line, "http").unwrap();
    (p, addr)
}

async fn summary(status: SocketAddr) -> Value {
    let (s, body) = get(&format!("http://{status}/api/v2/summary.json")).await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn component<'a>(summary: &'a Value, id: &str) -> &'a str {
    summary["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("?")
}

async fn wait_component(status: SocketAddr, id: &'static str, want: &'static str) {
    eventually(&format!("{id} is {want}"), Duration::from_secs(15), || async move {
        component(&summary(status).await, id) == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_the_fleet_and_outlives_it() {
    let origin = origin("status-origin");
    let dir = temp_dir("status");
    let control = control(&dir);
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let mut nodes = fleet_of(control.addr, &[("berlin", BERLIN), ("paris", PARIS)], &boot).await;
    let (hook, hooks) = webhook_sink().await;
    let config = status_config(&dir, "127.0.0.1:0", &nodes, hook);
    let (mut status, s) = start_status(&config);

    // Everything up: the page says so, once it has probed.
    eventually("the first round", Duration::from_secs(10), || async move {
        get(&format!("http://{s}/api/v2/targets.json")).await.1.matches("\"health\":\"up\"").count() == 2
    })
    .await;
    let v = summary(s).await;
    assert_eq!(v["status"]["indicator"], "none", "{v}");
    assert_eq!(component(&v, "zone:site"), "operational");
    let (code, targets) = get(&format!("http://{s}/api/v2/targets.json")).await;
    assert_eq!(code, 200);
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
    // Without JavaScript (the page needs none), tall enough to show it whole.
    let browser = Browser::start_with(false, &["--window-size=1000,1300"]).await;
    browser.goto(&format!("http://{s}/")).await;
    browser.wait_for("All systems operational", Duration::from_secs(5)).await;
    let text = browser.text().await;
    assert!(text.contains("Sites") && text.contains("Locations") && text.contains("berlin"), "{text}");
    browser.screenshot("status-operational").await;

    // Paris stops answering (the process is stopped, its socket stays open: probes time out).
    let paris = nodes.iter().find(|(n, _)| n == "paris").map(|(_, e)| e.proc.pid()).unwrap();
    let frozen = std::process::Command::new("kill").args(["-STOP", &paris.to_string()]).status().unwrap();
    assert!(frozen.success());
    wait_component(s, "city:paris", "major_outage").await;
    let v = summary(s).await;
    assert_eq!(component(&v, "zone:site"), "partial_outage", "one of two cities down: {v}");
    assert_eq!(component(&v, "city:berlin"), "operational");
    assert_eq!(v["status"]["indicator"], "critical");
    let incident = &v["incidents"][0];
    assert_eq!(incident["status"], "investigating", "{v}");
    assert_eq!(incident["automatic"], true);
    let body = incident["incident_updates"][0]["body"].as_str().unwrap();
    assert!(body.contains("site in paris: no answer within 500 ms"), "{body}");
    let id = incident["id"].as_u64().unwrap();

    // An operator says what it is; without a token nobody can.
    let update = json!({ "status": "identified", "body": "The Paris node is frozen; we are on it." });
    let (code, _) = api(s, "POST", &format!("/api/v2/incidents/{id}/updates"), None, Some(update.clone())).await;
    assert_eq!(code, 401);
    let (code, v) = api(s, "POST", &format!("/api/v2/incidents/{id}/updates"), Some(OPERATOR), Some(update)).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = api(
        s,
        "POST",
        &format!("/api/v2/incidents/{id}/updates"),
        Some(OPERATOR),
        Some(json!({ "status": "fixed", "body": "x" })),
    )
    .await;
    assert_eq!(code, 422);
    assert!(v["error"].as_str().unwrap().starts_with("status: one of investigating"), "{v}");

    browser.goto(&format!("http://{s}/")).await;
    browser.wait_for("Partial outage", Duration::from_secs(5)).await;
    let text = browser.text().await;
    assert!(text.contains("Active incidents") && text.contains("The Paris node is frozen"), "{text}");
    assert!(text.contains("Major outage"), "paris's own state: {text}");
    browser.screenshot("status-incident").await;

    // Paris is back: the component recovers, the incident resolves by itself.
    let thawed = std::process::Command::new("kill").args(["-CONT", &paris.to_string()]).status().unwrap();
    assert!(thawed.success());
    wait_component(s, "city:paris", "operational").await;
    eventually("the incident resolves", Duration::from_secs(10), || async move {
        summary(s).await["incidents"].as_array().unwrap().is_empty()
    })
    .await;
    let (_, feed) = get(&format!("http://{s}/history.atom")).await;
    assert!(feed.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"), "{feed}");
    assert!(feed.contains("Major outage: site, paris") || feed.contains("Partial outage"), "{feed}");
    assert!(feed.contains("resolved"), "{feed}");
    eventually("the webhooks arrive", Duration::from_secs(10), || {
        let hooks = hooks.clone();
        async move {
            let got = hooks.lock().unwrap().clone();
            let outage =
                got.iter().any(|h| h["component"]["id"] == "city:paris" && h["component"]["status"] == "major_outage");
            let resolved = got.iter().any(|h| h["incident"]["status"] == "resolved");
            outage && resolved
        }
    })
    .await;

    // A maintenance window on berlin: under maintenance, and no incident for it.
    let (code, v) = api(
        s,
        "POST",
        "/api/v2/incidents",
        Some(OPERATOR),
        Some(json!({
            "name": "Berlin hardware swap", "body": "Berlin is taken out for new disks.",
            "components": ["city:berlin"], "scheduled_for": palisade_config::time::rfc3339(now() - 1),
            "scheduled_until": palisade_config::time::rfc3339(now() + 3600),
        })),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    wait_component(s, "city:berlin", "under_maintenance").await;
    let v = summary(s).await;
    assert_eq!(v["scheduled_maintenances"][0]["status"], "in_progress", "{v}");
    assert!(v["incidents"].as_array().unwrap().is_empty(), "{v}");
    let (code, v) = api(
        s,
        "POST",
        "/api/v2/incidents",
        Some(OPERATOR),
        Some(json!({ "name": "x", "body": "y", "components": ["city:nowhere"] })),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(v["error"], "components[0]: no component `city:nowhere`");

    // Every node and the control plane stop. The page keeps serving, and says what is true.
    for (_, node) in nodes.drain(..) {
        drop(node);
    }
    drop(control);
    wait_component(s, "city:paris", "major_outage").await;
    wait_component(s, "zone:site", "major_outage").await;
    let v = summary(s).await;
    assert_eq!(v["status"]["indicator"], "critical");
    assert_eq!(component(&v, "city:berlin"), "under_maintenance", "berlin is in its window");
    assert_eq!(v["incidents"][0]["impact"], "critical", "{v}");
    browser.goto(&format!("http://{s}/")).await;
    browser.wait_for("Major outage", Duration::from_secs(5)).await;
    browser.screenshot("status-fleet-down").await;

    // The status page restarts: nothing is lost, and the open incident is not opened twice.
    let incidents_before = summary(s).await["incidents"].as_array().unwrap().len();
    status.signal("TERM");
    status.wait_exit(Duration::from_secs(10));
    let port = s.port();
    let text = std::fs::read_to_string(&config).unwrap().replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let (_status, s) = start_status(&config);
    let v = summary(s).await;
    assert_eq!(component(&v, "city:paris"), "major_outage", "known before the first round: {v}");
    assert_eq!(v["incidents"].as_array().unwrap().len(), incidents_before);
    let (code, history) = get(&format!("http://{s}/history")).await;
    assert_eq!(code, 200);
    assert!(history.contains("Berlin hardware swap") && history.contains("paris"), "{history}");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_bad_status_config_names_the_field() {
    let dir = temp_dir("status-bad");
    let path = dir.join("status.toml");
    std::fs::write(&path, "interval_ms = 5\n[[cities]]\nname = \"a\"\naddress = \"nowhere\"\n").unwrap();
    let out = std::process::Command::new(bin()).args(["status", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interval_ms: 100 to 3600000 (is 5)"), "{err}");
    assert!(err.contains("cities[0].address: `nowhere` is not host:port"), "{err}");
    assert!(err.contains("zones: 1 to 128 (are 0)"), "{err}");
}
