//! The control plane and a fleet under it, for the tests: a real `palisade control` process with
//! operator and node tokens, edge nodes linked to it, steady traffic, and the API calls the tests
//! make.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

pub const ALICE: &str = "a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0";
pub const BOB: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
pub const BERLIN: &str = "be41140be41140be41140be41140be41140be";
pub const PARIS: &str = "9a41590a41590a41590a41590a41590a4159";
pub const TOKYO: &str = "70c1070c1070c1070c1070c1070c1070c107";

pub struct ControlProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

pub fn control(dir: &TempDir) -> ControlProc {
    control_at(dir, "127.0.0.1:0")
}

pub fn control_at(dir: &TempDir, listen: &str) -> ControlProc {
    control_with(dir, listen, &[])
}

pub fn control_with(dir: &TempDir, listen: &str, extra: &[&str]) -> ControlProc {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("# operators\nalice {ALICE}\nbob {BOB}\n")).unwrap();
    let node_tokens = dir.join("node-tokens");
    std::fs::write(&node_tokens, format!("berlin {BERLIN}\nparis {PARIS}\ntokyo {TOKYO}\n")).unwrap();
    let data = dir.join("data");
    let proc = Proc::spawn(
        &[
            "control",
            "--node-tokens",
            node_tokens.to_str().unwrap(),
            "--listen",
            listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    let line = proc.wait_line("palisade control ready");
    let addr = field(&line, "http").or_else(|| field(&line, "https")).unwrap();
    ControlProc { addr, proc }
}

pub async fn api(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let (status, _, text) = api_full(addr, method, path, token, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn api_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, hyper::HeaderMap, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
    request_full(&client(), method, &format!("http://{addr}{path}"), &headers, body).await
}

pub fn doc(origin: &str, comment: &str) -> String {
    format!(
        "# {comment}\n[listen]\nhttp = \"127.0.0.1:8080\"\n[[zones]]\nname = \"shop\"\nhostnames = [\"shop.example\"]\norigins = [{{ address = \"{origin}\" }}]\n"
    )
}

pub async fn push(addr: SocketAddr, token: &str, content: &str, message: &str, parent: Option<Value>) -> (u16, Value) {
    let mut body = json!({ "content": content, "message": message });
    if let Some(p) = parent {
        body["parent"] = p;
    }
    api(addr, "POST", "/v1/versions", Some(token), Some(body)).await
}

pub async fn nodes(a: SocketAddr) -> Vec<Value> {
    api(a, "GET", "/v1/nodes", Some(ALICE), None).await.1["nodes"].as_array().cloned().unwrap_or_default()
}

/// `palisade ARGS` as the operator Alice, against the control plane at `a`.
pub fn operator_cli(a: SocketAddr, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .args(["--control", &format!("http://{a}"), "--token", ALICE])
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap()
}

/// An edge node linked to the control plane at `a`, reporting every 200 ms.
pub fn fleet_node(a: SocketAddr, name: &str, token: &str, boot: &str) -> EdgeProc {
    fleet_node_at(&format!("http://{a}"), name, token, boot)
}

/// An edge node linked to the control plane at `url` (replicas comma-separated).
pub fn fleet_node_at(url: &str, name: &str, token: &str, boot: &str) -> EdgeProc {
    let dir = temp_dir(&format!("node-{name}"));
    let token_file = dir.join("node.token");
    std::fs::write(&token_file, token).unwrap();
    let config = dir.join("palisade.toml");
    std::fs::write(&config, boot).unwrap();
    let args = [
        "--control",
        url,
        "--node-token-file",
        token_file.to_str().unwrap(),
        "--city",
        name,
        "--report-interval-ms",
        "200",
        "--analytics-interval-ms",
        "500",
    ];
    edge_with(dir, config, &args)
}

/// Steady requests on every node until `stop`; each task ends with (node, ok, failed).
pub fn steady_traffic(
    fleet: &[(String, EdgeProc)],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(String, u64, u64)>> {
    let mut traffic = Vec::new();
    for (name, e) in fleet {
        let (addr, stop, name) = (e.http(), stop.clone(), name.clone());
        traffic.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if get_host(addr, "site.example", "/").await.0 == 200 {
                    ok += 1;
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (name, ok, failed)
        }));
    }
    traffic
}

/// Edge nodes linked to the control plane at `a`, all booted from `boot`, once all registered.
pub async fn fleet_of(a: SocketAddr, members: &[(&str, &str)], boot: &str) -> Vec<(String, EdgeProc)> {
    let fleet: Vec<(String, EdgeProc)> =
        members.iter().map(|(name, token)| (name.to_string(), fleet_node(a, name, token, boot))).collect();
    let n = fleet.len();
    eventually("the nodes register", Duration::from_secs(10), || async move { nodes(a).await.len() == n }).await;
    fleet
}

/// Polls a rollout until it leaves `running`; returns it with its events.
pub async fn rollout_outcome(a: SocketAddr, id: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let (s, v) = api(a, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
        assert_eq!(s, 200, "{v}");
        if v["rollout"]["state"] != "running" {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "rollout {id} still running: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn start_rollout(a: SocketAddr, version: u64) -> u64 {
    start_rollout_baking(a, version, 800).await
}

pub async fn start_rollout_baking(a: SocketAddr, version: u64, bake_ms: u64) -> u64 {
    let body = json!({ "version": version, "stages": ["1", "50%", "100%"], "bake_ms": bake_ms });
    let (s, v) = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v["rollout"]["id"].as_u64().unwrap()
}

/// A control plane, a demo origin and three nodes (berlin, paris, tokyo) booted on one zone
/// (`site.example`), under steady traffic.
pub struct Fleet {
    /// The control plane's API.
    pub a: SocketAddr,
    pub origin: SocketAddr,
    pub nodes: Vec<(String, EdgeProc)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    traffic: Vec<tokio::task::JoinHandle<(String, u64, u64)>>,
    _control: ControlProc,
    _origin: OriginProc,
    _dir: TempDir,
}

impl Fleet {
    pub async fn start(tag: &str) -> Fleet {
        let origin = origin(&format!("{tag}-origin"));
        let dir = temp_dir(tag);
        let c = control(&dir);
        let a = c.addr;
        let boot = zone_config(&["site.example"], &[origin.addr], "");
        let nodes = fleet_of(a, &[("berlin", BERLIN), ("paris", PARIS), ("tokyo", TOKYO)], &boot).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic = steady_traffic(&nodes, &stop);
        Fleet { a, origin: origin.addr, nodes, stop, traffic, _control: c, _origin: origin, _dir: dir }
    }

    /// A one-zone document for `site.example` in front of the fleet's origin, with extra zone lines.
    pub fn doc(&self, extra_zone: &str) -> String {
        zone_config(&["site.example"], &[self.origin], extra_zone)
    }

    /// Stops the traffic: (node, requests served, requests failed) for each node.
    pub async fn stop_traffic(&mut self) -> Vec<(String, u64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::new();
        for t in self.traffic.drain(..) {
            out.push(t.await.unwrap());
        }
        out
    }

    /// Stops the traffic: every node served, and none failed a request.
    pub async fn no_failed_requests(&mut self) {
        for (node, ok, failed) in self.stop_traffic().await {
            assert!(ok > 50, "{node} served {ok}");
            assert_eq!(failed, 0, "{node}: failed requests");
        }
    }
}
