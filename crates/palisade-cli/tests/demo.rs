//! The README's first command, as a new user runs it: `palisade demo` serves the demo site
//! through a fleet of edge nodes with a control plane, rolls its config out to them, and stops
//! cleanly on Ctrl-C.
mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_site_through_the_edge() {
    let mut p = Proc::spawn(&["demo", "--port", "0", "--admin-port", "0", "--control-port", "0", "--status-port", "0"]);
    let line = p.wait_line("palisade edge ready");
    let addr = |key: &str| -> std::net::SocketAddr {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).unwrap().parse().unwrap()
    };
    let (http, admin) = (addr("http"), addr("admin"));
    let site = p.wait_line("Site through the edge");
    assert!(site.contains(&format!("http://127.0.0.1:{}/", http.port())), "{site}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let (s, h, body) = request_full(&client(), "GET", &format!("http://{http}/"), &[], Vec::new()).await;
        assert_eq!(s, 200);
        assert!(body.contains("Hello from the demo origin"), "{body}");
        assert_eq!(h.get("via").unwrap(), "1.1 demo-edge");
        seen.insert(origin_name(&h));
    }
    assert_eq!(seen.len(), 2, "both demo origins serve: {seen:?}");
    let (s, metrics) = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(s, 200);
    assert!(metrics.contains("palisade_requests_total{zone=\"demo\",status_class=\"2xx\""), "{metrics}");
    // The fleet: three nodes on the control plane, and version 1 rolled out to all of them.
    let control = p.wait_line("Control plane:");
    let words: Vec<&str> = control.split_whitespace().collect();
    let url = words.iter().find(|w| w.starts_with("http://")).unwrap().to_string();
    let token_file = words.iter().find(|w| w.ends_with("operator.token)")).unwrap().trim_end_matches(')').to_string();
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let auth = format!("Bearer {token}");
    eventually("version 1 runs on every node", Duration::from_secs(30), || {
        let (url, auth) = (url.clone(), auth.clone());
        async move {
            let (s, _, body) =
                request_full(&client(), "GET", &format!("{url}/v1/nodes"), &[("authorization", &auth)], Vec::new())
                    .await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            s == 200 && nodes.len() == 3 && nodes.iter().all(|n| n["applied"].as_u64() == Some(1))
        }
    })
    .await;
    eventually("the demo's rollout of version 1 passes both stages", Duration::from_secs(30), || {
        let (url, auth) = (url.clone(), auth.clone());
        async move {
            let (_, _, body) = request_full(
                &client(),
                "GET",
                &format!("{url}/v1/rollouts/1"),
                &[("authorization", &auth)],
                Vec::new(),
            )
            .await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            assert_ne!(v["rollout"]["state"], "rolled_back", "{v}");
            v["rollout"]["state"] == "done"
        }
    })
    .await;
    // The dashboard, on the control plane: log in with the operator token, see the three nodes.
    let form = format!("token={token}");
    let (s, h, _) = request_full(
        &client(),
        "POST",
        &format!("{url}/dashboard/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        form.into_bytes(),
    )
    .await;
    assert_eq!(s, 303);
    let cookie = h.get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_string();
    let (s, _, page) =
        request_full(&client(), "GET", &format!("{url}/dashboard"), &[("cookie", &cookie)], Vec::new()).await;
    assert_eq!(s, 200);
    for city in ["amsterdam", "singapore", "sao-paulo"] {
        assert!(page.contains(&format!("data-node=\"{city}\"")), "{page}");
    }
    // The status page, a process of its own, probes the demo zone through every node.
    let status = p.wait_line("Status page:");
    let status =
        status.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/').to_string();
    eventually("the status page has probed every node", Duration::from_secs(20), || {
        let status = status.clone();
        async move {
            let (s, body) = get(&format!("{status}/api/v2/summary.json")).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let cities = v["components"].as_array().map_or(0, |c| {
                c.iter().filter(|c| c["group_id"] == "group:locations" && c["status"] == "operational").count()
            });
            s == 200 && !v["page"]["updated_at"].is_null() && cities == 3 && v["status"]["indicator"] == "none"
        }
    })
    .await;
    let config = p.wait_line("Config file:");
    let file = config.split_whitespace().find(|w| w.ends_with("palisade.toml")).unwrap().to_string();
    assert!(std::path::Path::new(&file).exists(), "{config}");
    p.signal("INT");
    assert!(p.wait_exit(Duration::from_secs(20)).success());
    // Its status page, a process of its own, went with it.
    eventually("the status page stops with the demo", Duration::from_secs(5), || {
        let status = status.clone();
        async move { tokio::net::TcpStream::connect(status.trim_start_matches("http://")).await.is_err() }
    })
    .await;
    // Its scratch directory (config, last-known-good) goes with it.
    assert!(!std::path::Path::new(&file).parent().unwrap().exists(), "{file} left behind");
}

/// A demo killed outright (no Ctrl-C, nothing runs in it) still takes its status page along:
/// the child sees its parent gone, and the port is free for the next demo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_demo_leaves_no_status_page_behind() {
    let p = Proc::spawn(&["demo", "--port", "0", "--admin-port", "0", "--control-port", "0", "--status-port", "0"]);
    let line = p.wait_line("Status page:");
    let status = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches('/');
    let addr = status.trim_start_matches("http://").to_string();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_ok(), "serving at {addr}");
    p.signal("KILL");
    eventually("the status page ends with its demo", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.is_err() }
    })
    .await;
}
